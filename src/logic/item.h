/* item.h - the memcached item inside a record's payload (doc/storage-format.md) and the
 * memcached read-modify-write rules, shared by kumo-gateway and kumo-server. */
#ifndef KUMO_ITEM_H
#define KUMO_ITEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/clocktime.h"

/* The record's meta field (storage.md §2.3).  An original kumo-server coordinating a
 * write zeroes it on the replicas' copies, so the tagged form is recognised by the magic
 * at the start of its payload, whatever the meta says. */
#define ITEM_META_RAW 0x0000      /* the original's layout: [exptime if -E][flags if -F] data */
#define ITEM_META_V1 0x0001       /* kumofs-c's first form, read only: flags ‖ exptime ‖ data */
#define ITEM_META_TAGGED 0x0002   /* magic ‖ flags BE32 ‖ exptime BE32 ‖ data */
#define ITEM_META_TOUCHED 0x0003  /* magic2 ‖ flags BE32 ‖ exptime BE32 ‖ cas BE64 ‖ data */

#define ITEM_MAGIC "\xc1kcI"      /* 0xc1 never starts UTF-8 text nor a msgpack object */
#define ITEM_MAGIC_TOUCHED "\xc1kcT"
#define ITEM_MAGIC_LEN 4
#define ITEM_V1_HEADER_LEN 8
#define ITEM_TAGGED_HEADER_LEN 12
#define ITEM_TOUCHED_HEADER_LEN 20
#define ITEM_HEADER_MAX 20

/* Layout bits: how raw (meta 0) payloads are laid out -- a gateway's -E / -F, as the
 * original gateways of the cluster use them -- and whether the raw form may be written. */
#define ITEM_RAW_EXPTIME 0x01     /* -E: exptime BE32 first */
#define ITEM_RAW_FLAGS 0x02       /* -F: flags BE16 next */
#define ITEM_RAW_NEVER 0x04       /* encoding: always write the tagged form */

/* A memcached item; data borrows the buffer it was decoded from. */
typedef struct item {
    uint32_t flags;
    uint32_t exptime;             /* absolute unix seconds, 0 = never */
    uint64_t cas;                 /* the CAS a touch kept (touched form), else 0: the
                                   * record's version is the CAS */
    const uint8_t *data;
    size_t len;
} item;

/* Decode a record payload (the bytes after the 10-byte value header) with its meta.
 * False when the payload is too short for its layout (read as a miss).  Expiry is not
 * checked here: see item_expired. */
bool item_decode(uint16_t meta, const uint8_t *payload, size_t len, unsigned layout, item *it);

/* memcached: an item is gone once its time has come. */
static inline bool item_expired(const item *it, uint32_t now)
{
    return it->exptime != 0 && it->exptime <= now;
}

/* The CAS unique memcached clients see for an item stored at version ct. */
static inline uint64_t item_cas(const item *it, uint64_t ct)
{
    return it->cas != 0 ? it->cas : ct;
}

/* The payload header for an item of these flags/exptime/cas whose data starts with head
 * (the first min(4, datalen) bytes; NULL when empty).  cas non-zero (a touched item that
 * keeps its CAS) always takes the touched form.  Else the raw form is chosen when the
 * original's layout can hold the item -- flags 0 (or <= 0xffff with ITEM_RAW_FLAGS),
 * exptime 0 (or any with ITEM_RAW_EXPTIME) -- and the payload would not start with a
 * magic; else the tagged form.  Writes the header to hdr and the meta to *meta; returns
 * the header length (0 .. ITEM_HEADER_MAX). */
size_t item_encode_header(uint32_t flags, uint32_t exptime, uint64_t cas,
                          const uint8_t *head, size_t headlen, unsigned layout,
                          uint16_t *meta, uint8_t hdr[ITEM_HEADER_MAX]);

/* A whole DBValue (10-byte header with clocktime 0, then the payload) for the item whose
 * data is a ‖ b (cas as item_encode_header).  Returns a malloc'd buffer (release with
 * free); *len gets its size. */
uint8_t *item_value_new(uint32_t flags, uint32_t exptime, uint64_t cas, const void *a,
                        size_t alen, const void *b, size_t blen, unsigned layout, size_t *len);

/* memcached's read-modify-write rules (doc/protocol-additions.md §1.1).  op: UPDATE_OP_*;
 * uflags: the request's UPDATE_FLAG_CREATE / UPDATE_FLAG_TTL (incr/decr); cur: the live
 * stored item, NULL when absent or expired; cur_ct its version; req: the request's item
 * (flags/exptime/data; only exptime for touch; for incr/decr the initial number with
 * CREATE and the exptime with TTL); arg: cas unique or delta.  CAS compares with the
 * item's CAS (item_cas); a touch keeps it.  Returns an UPDATE_* status; on UPDATE_STORED
 * or UPDATE_CREATED *out is the new DBValue (item_value_new, clocktime 0) in layout. */
uint32_t item_apply(uint32_t op, uint32_t uflags, uint64_t arg, const item *cur,
                    clocktime_t cur_ct, const item *req, unsigned layout, uint8_t **out,
                    size_t *outlen);

#endif
