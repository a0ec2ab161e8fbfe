/* record.h - DBKey / DBValue layout, tombstones and the version rules of storage.md. */
#ifndef KUMO_RECORD_H
#define KUMO_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/clocktime.h"

#define DBKEY_HASH_LEN 8        /* key = BE64 hash ‖ key bytes (storage.md §2.1) */
#define DBVALUE_HEADER_LEN 10   /* value = BE64 clocktime ‖ BE16 meta ‖ payload (§2.2) */
#define TOMBSTONE_LEN 8         /* a deleted key: exactly BE64 delete clocktime (§2.5) */

static inline void be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline uint64_t be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}
static inline void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline uint32_t be32_get(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void be16_put(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline uint16_t be16_get(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* Write the DBKey of a user key into out (8 + keylen bytes): hs_hash(key) big-endian,
 * then the key.  The caller includes any --key-prefix in key. */
void dbkey_make(uint8_t *out, const void *key, size_t keylen);

/* The same when the key is already in place at dbkey + 8: write only its hash. */
void dbkey_stamp(uint8_t *dbkey, size_t keylen);

/* The hash carried in a DBKey (first 8 bytes, big-endian); dbkey must be >= 8 bytes. */
static inline uint64_t dbkey_hash(const void *dbkey) { return be64_get(dbkey); }

/* Value header access; val must be >= 8 (clocktime) or >= 10 (meta) bytes. */
static inline clocktime_t dbvalue_clocktime(const void *val) { return be64_get(val); }
static inline void dbvalue_set_clocktime(void *val, clocktime_t ct) { be64_put(val, ct); }
static inline uint16_t dbvalue_meta(const void *val) { return be16_get((const uint8_t *)val + 8); }

/* A stored value is live (readable) iff it holds the full 10-byte header. */
static inline bool dbvalue_is_live(size_t len) { return len >= DBVALUE_HEADER_LEN; }

/* Store-if-newer (storage.md §4.1): should an existing stored value (old, oldlen; old
 * NULL = absent) be replaced by an incoming record whose clocktime is `incoming`? */
bool record_should_replace(const void *old, size_t oldlen, clocktime_t incoming);

/* CAS decision (storage.md §4.4): may the existing value be replaced when the client
 * compares against `compare`?  Absent → true. */
bool record_cas_matches(const void *old, size_t oldlen, clocktime_t compare);

/* Purge rule of storage.md §5.1/§5.2: may the record (old, oldlen) be physically removed
 * by a garbage entry for a tombstone of clocktime `ct`?  (stored ct <= entry ct, or <8 bytes) */
bool record_tombstone_collectable(const void *old, size_t oldlen, clocktime_t ct);

#endif
