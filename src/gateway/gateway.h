/* gateway.h - kumo-gateway's cluster side: hash spaces from the managers (algorithms.md
 * §4), routing to servers (hashing.md §2.4), Get/Set/Delete with the retries of
 * algorithms.md §5.1, and the memcached item payload layout (doc/storage-format.md).
 * Implemented by gateway.c (life cycle, managers, hash spaces, sessions), gwop.c (the
 * data operations below, their retries and relays) and gwrmw.c (read-modify-write for
 * original servers); gateway_internal.h is what those three share. */
#ifndef KUMO_GATEWAY_H
#define KUMO_GATEWAY_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/addr.h"
#include "logic/clocktime.h"

typedef struct gateway gateway;

typedef struct gateway_config {
    kaddr manager1;                /* -m */
    kaddr manager2;                /* -p; len 0 or port 0 = none */
    const char *key_prefix;        /* -k (borrowed for the gateway's lifetime); may be NULL */
    unsigned get_retry;            /* -G: a get makes at most 3*G attempts */
    unsigned set_retry;            /* -S */
    unsigned delete_retry;         /* -D */
    unsigned renew_threshold;      /* -rn */
    bool async_delete;             /* -Ad */
    bool save_flag;                /* -F: how meta-0 payloads are read */
    bool save_expire;              /* -E */
    double connect_timeout;        /* -Ys */
    unsigned connect_retry_limit;  /* -Yn */
    double clock_interval;         /* -Ci */
    struct gwcache *cache;         /* -lc: the local read cache (borrowed), or NULL */
    double request_timeout;        /* -Rt: a client request is answered (an error at worst)
                                    * within this many seconds; 0 = the original's retries */
    double attempt_min;            /* -At: floor of a get attempt's adaptive deadline */
    double attempt_max;            /* -Ax: its ceiling */
} gateway_config;

/* Create the gateway on loop (cfg copied; key_prefix borrowed).  Nothing is sent until
 * gateway_start.  Release with gateway_free. */
gateway *gateway_new(struct ev_loop *loop, const gateway_config *cfg);

/* Ask both managers for the hash spaces (algorithms.md §4). */
void gateway_start(gateway *gw);

/* The 0.5 s tick: refresh the cached clock used for expiry. */
void gateway_tick(gateway *gw);

/* The 2 s keepalive: HashSpaceRequest to every manager without a live connection. */
void gateway_keepalive(gateway *gw);

/* Close every session and free gw.  Requests in flight complete now with GATEWAY_FAILED
 * (their callbacks must not start new requests); tear the front ends down afterwards. */
void gateway_free(gateway *gw);

/* Cached unix time (refreshed by gateway_tick). */
uint32_t gateway_now(const gateway *gw);

/* ---- data operations (gwop.c).  Callbacks always run later from the event loop, exactly once.
 * Keys are the client's keys; the gateway adds -k itself and hands the client's key back
 * (borrowed until the callback returns). */

enum gateway_status {
    GATEWAY_OK = 0,        /* get: hit; set: stored; delete: deleted */
    GATEWAY_MISS,          /* get: no value */
    GATEWAY_EXISTS,        /* set/cas: compare failed (server answered false) */
    GATEWAY_NOT_FOUND,     /* delete: nothing live to delete (server answered false) */
    GATEWAY_FAILED,        /* every retry failed */
    GATEWAY_NOT_STORED,    /* update: add on a live item, replace/append/prepend on none */
    GATEWAY_NON_NUMERIC,   /* update: incr/decr on a value that is not a decimal number */
    GATEWAY_CREATED,       /* update with GATEWAY_UPD_CREATE: the item was made */
};

/* A stored value as the server returned it (wire.md §7.6), borrowed until the callback
 * returns. */
typedef struct gateway_value {
    clocktime_t ct;          /* version = CAS unique */
    uint16_t meta;           /* payload form, see GATEWAY_META_* */
    const uint8_t *payload;
    size_t len;
} gateway_value;

typedef void (*gateway_get_cb)(void *ud, int status, const gateway_value *v,
                               const char *key, size_t keylen);
typedef void (*gateway_store_cb)(void *ud, int status, clocktime_t ct);

/* Get: server_for(rhs, r mod 3) with 3*G-1 retries.  v is non-NULL only for GATEWAY_OK. */
void gateway_get(gateway *gw, const char *key, size_t keylen, gateway_get_cb cb, void *ud);

/* Set (op = SET_OP_SET / SET_OP_SET_ASYNC / SET_OP_CAS with compare = the client's CAS
 * unique) of the payload hdr ‖ data with this meta; -S retries.  ct of a stored value is
 * its new version.  cb may be NULL (fire and forget). */
void gateway_set(gateway *gw, const char *key, size_t keylen, unsigned op, uint64_t compare,
                 uint16_t meta, const void *hdr, size_t hdrlen, const void *data,
                 size_t datalen, gateway_store_cb cb, void *ud);

/* Delete with -D retries; async when -Ad or `async` (memcached noreply).  cb may be NULL. */
void gateway_delete(gateway *gw, const char *key, size_t keylen, bool async,
                    gateway_store_cb cb, void *ud);

/* ---- read-modify-write on the key's coordinator (server method SRV_UPDATE = 48,
 * doc/protocol-additions.md).  Not retried once sent to a live coordinator, because the
 * operations are not idempotent; a server error is GATEWAY_FAILED. */
enum gateway_update_op {
    GATEWAY_ADD = 1, GATEWAY_REPLACE = 2, GATEWAY_APPEND = 3, GATEWAY_PREPEND = 4,
    GATEWAY_CAS = 5, GATEWAY_INCR = 6, GATEWAY_DECR = 7, GATEWAY_TOUCH = 8,
};

/* Modifiers or'ed into the op (server Update flags, doc/protocol-additions.md §1.1):
 * VALUE (touch, incr/decr): the callback's value is the whole new DBValue (wire.md §7.6:
 *   header ‖ payload; decode with gateway_value_parse) -- nil, or the bare number, from a
 *   server that predates it;
 * CREATE (incr/decr): a missing item is created from data (the initial number), flags
 *   and exptime in the same step, status GATEWAY_CREATED (a server that predates it
 *   answers GATEWAY_NOT_FOUND);
 * TTL (incr/decr): exptime replaces the item's. */
#define GATEWAY_UPD_VALUE 0x100
#define GATEWAY_UPD_CREATE 0x200
#define GATEWAY_UPD_TTL 0x400
#define GATEWAY_GAT (GATEWAY_TOUCH | GATEWAY_UPD_VALUE)
#define GATEWAY_INCR_CREATE (GATEWAY_INCR | GATEWAY_UPD_CREATE)
#define GATEWAY_DECR_CREATE (GATEWAY_DECR | GATEWAY_UPD_CREATE)

/* status: GATEWAY_OK (stored / touched / incremented), GATEWAY_NOT_STORED,
 * GATEWAY_EXISTS, GATEWAY_NOT_FOUND, GATEWAY_NON_NUMERIC, GATEWAY_FAILED.  ct: the new
 * version.  value: INCR/DECR only, the new number in ASCII (borrowed until return). */
typedef void (*gateway_update_cb)(void *ud, int status, clocktime_t ct, const char *value,
                                  size_t valuelen);

/* flags/exptime/data as the memcached command gives them (data: append/prepend bytes,
 * or the value for add/replace/cas); arg: CAS unique for CAS, delta for INCR/DECR.
 * async: memcached noreply (cb may then be NULL). */
void gateway_update(gateway *gw, unsigned op, const char *key, size_t keylen, uint32_t flags,
                    int64_t exptime, const void *data, size_t datalen, uint64_t arg,
                    bool async, gateway_update_cb cb, void *ud);

/* memcached's time argument (exptime of an item, flush_all's delay) as an absolute unix
 * time: 0 stays 0 (never / now), 1 .. 30 days is relative to the current second, larger
 * is already absolute, negative is long past (1).  The one home of this rule. */
uint32_t gateway_abs_time(int64_t t);

/* flush_all [when]: server method SRV_FLUSH = 49 to every active server of whs and rhs,
 * with the delay until when (a memcached time, gateway_abs_time; past = now); status
 * GATEWAY_OK when all answered, else GATEWAY_FAILED. */
void gateway_flush_all(gateway *gw, int64_t when, gateway_store_cb cb, void *ud);

/* curr_items estimate: GetStatus items (method 97, code 7) of every active rhs node,
 * summed and divided by the replica count (3, or the node count if fewer).  ok is false
 * when no server answered.  cb runs once, later from the loop -- or at once when the
 * read hash space has no active node. */
typedef void (*gateway_items_cb)(void *ud, bool ok, uint64_t items);
void gateway_count_items(gateway *gw, gateway_items_cb cb, void *ud);

/* ---- memcached item payload (doc/storage-format.md) ---- */

#define GATEWAY_META_ORIGINAL 0x0000   /* kumofs 0.4.13: [exptime BE32 if -E][flags BE16 if -F] data */
#define GATEWAY_META_ITEM 0x0001       /* ours: flags BE32 ‖ exptime BE32 (absolute, 0 never) ‖ data */
#define GATEWAY_ITEM_HEADER_LEN 8

typedef struct gateway_item {
    uint32_t flags;
    uint32_t exptime;        /* absolute unix time, 0 = never */
    uint64_t cas;            /* CAS unique: the version, or what a touch kept */
    const uint8_t *data;     /* borrowed from the gateway_value */
    size_t len;
} gateway_item;

/* Decode a value into an item.  False if it must be reported as a miss (expired, or too
 * short for its layout). */
bool gateway_item_decode(const gateway *gw, const gateway_value *v, gateway_item *it);

/* As gateway_item_decode, but an expired item is still decoded (gat with a past exptime
 * returns the value once, as memcached does). */
bool gateway_item_decode_any(const gateway *gw, const gateway_value *v, gateway_item *it);

/* Read a whole DBValue (a GATEWAY_GAT result) into v; false if too short. */
bool gateway_value_parse(const void *dbvalue, size_t len, gateway_value *v);

/* The 8-byte GATEWAY_META_ITEM header for a memcached exptime (0 never, <= 30 days
 * relative, larger absolute, negative already expired). */
void gateway_item_header(const gateway *gw, uint32_t flags, int64_t exptime,
                         uint8_t hdr[GATEWAY_ITEM_HEADER_LEN]);

#endif
