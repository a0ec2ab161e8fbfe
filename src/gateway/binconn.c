/* binconn.c - memcached binary protocol: framing, dispatch and reply formatting (the
 * connection machinery is frontconn.c). */
#include "gateway/binconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/frontconn.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"

#define BC_HEADER_LEN 24
#define BC_BODY_OVERHEAD (MC_KEY_MAX + 32)  /* key + the largest extras (20) + slack */

#define BC_MAGIC_REQ 0x80
#define BC_MAGIC_RES 0x81
#define BC_NO_CREATE 0xffffffffu      /* incr/decr expiration: do not create a missing key */

/* Opcodes of the memcached binary protocol. */
enum {
    OP_GET = 0x00, OP_SET = 0x01, OP_ADD = 0x02, OP_REPLACE = 0x03, OP_DELETE = 0x04,
    OP_INCR = 0x05, OP_DECR = 0x06, OP_QUIT = 0x07, OP_FLUSH = 0x08, OP_GETQ = 0x09,
    OP_NOOP = 0x0a, OP_VERSION = 0x0b, OP_GETK = 0x0c, OP_GETKQ = 0x0d, OP_APPEND = 0x0e,
    OP_PREPEND = 0x0f, OP_STAT = 0x10, OP_SETQ = 0x11, OP_ADDQ = 0x12, OP_REPLACEQ = 0x13,
    OP_DELETEQ = 0x14, OP_INCRQ = 0x15, OP_DECRQ = 0x16, OP_QUITQ = 0x17, OP_FLUSHQ = 0x18,
    OP_APPENDQ = 0x19, OP_PREPENDQ = 0x1a, OP_VERBOSITY = 0x1b, OP_TOUCH = 0x1c,
    OP_GAT = 0x1d, OP_GATQ = 0x1e, OP_GATK = 0x23, OP_GATKQ = 0x24,
    OP_COUNT = 0x25,
};

/* Response statuses. */
enum {
    ST_OK = 0x0000, ST_NOT_FOUND = 0x0001, ST_EXISTS = 0x0002, ST_TOO_LARGE = 0x0003,
    ST_EINVAL = 0x0004, ST_NOT_STORED = 0x0005, ST_NON_NUMERIC = 0x0006,
    ST_UNKNOWN = 0x0081, ST_ENOMEM = 0x0082, ST_INTERNAL = 0x0084,
};

/* A pending reply (frontconn.h); it is also the ud of its gateway request. */
typedef struct bc_slot {
    frontconn_slot base;       /* first: frontconn hands it back as frontconn_slot */
    bool quiet;                /* suppress success (and, for gets, miss) replies */
    bool withkey;              /* GETK/GATK: the key goes back in the reply */
    bool cas;                  /* a storage opcode with a CAS unique: counted as cas */
    uint8_t opcode;            /* echoed in the reply */
    uint8_t step;              /* incr/decr: 0 incr, 1 creating, 2 incr after a lost add */
    uint32_t opaque;           /* echoed in the reply */
    uint64_t delta, initial;   /* incr/decr */
    uint32_t exptime;          /* incr/decr creation, gat */
    nbuf key;         /* incr/decr and gat need the key for a second request;
                                * kept with the pooled slot, freed by slot_destroy */
} bc_slot;

struct binconn_listener {
    frontconn_listener *fl;
    gateway *gw;
    binconn_config cfg;
};

/* A framed request; every pointer borrowed from the input buffer. */
typedef struct bc_req {
    uint8_t opcode;
    uint32_t opaque;
    uint64_t cas;
    const uint8_t *extras;
    size_t extlen;
    const char *key;
    size_t keylen;
    const uint8_t *value;
    size_t valuelen;
} bc_req;

/* The 24-byte response header; body length is 32-bit, so large values are never
 * truncated (the original kept it in 16 bits, memcached.md §3.2). */
static void put_header(nbuf *b, uint8_t op, uint16_t status, size_t keylen,
                       size_t extlen, size_t bodylen, uint32_t opaque, uint64_t cas)
{
    uint8_t h[BC_HEADER_LEN];
    h[0] = BC_MAGIC_RES;
    h[1] = op;
    h[2] = (uint8_t)(keylen >> 8);
    h[3] = (uint8_t)keylen;
    h[4] = (uint8_t)extlen;
    h[5] = 0;                       /* data type: raw bytes */
    h[6] = (uint8_t)(status >> 8);
    h[7] = (uint8_t)status;
    be32_put(h + 8, (uint32_t)bodylen);
    be32_put(h + 12, opaque);
    be64_put(h + 16, cas);
    nbuf_append(b, h, sizeof h);
}

/* memcached 1.6's error texts (write_bin_error), so clients print the familiar words. */
static const char *status_text(uint16_t status)
{
    switch (status) {
    case ST_NOT_FOUND: return "Not found";
    case ST_EXISTS: return "Data exists for key.";
    case ST_TOO_LARGE: return "Too large.";
    case ST_EINVAL: return "Invalid arguments";
    case ST_NOT_STORED: return "Not stored.";
    case ST_NON_NUMERIC: return "Non-numeric server-side value for incr or decr";
    case ST_UNKNOWN: return "Unknown command";
    case ST_ENOMEM: return "Out of memory";
    default: return "Internal error";
    }
}

static void put_error(nbuf *b, uint8_t op, uint16_t status, uint32_t opaque)
{
    const char *t = status_text(status);
    size_t n = strlen(t);
    put_header(b, op, status, 0, 0, n, opaque, 0);
    nbuf_append(b, t, n);
}

/* ------------------------------------------------------------------ slots */

static binconn_listener *conn_listener(frontconn *c)
{
    return frontconn_ud(c);
}

static gateway *slot_gateway(bc_slot *s)
{
    return conn_listener(s->base.conn)->gw;   /* the listener outlives every request */
}

static gwstats *slot_stats(bc_slot *s)
{
    return frontconn_stats(s->base.conn);
}

static void slot_destroy(frontconn_slot *fs)
{
    nbuf_destroy(&((bc_slot *)fs)->key);
}

#define slot_alive(s) frontconn_slot_alive(&(s)->base)
#define slot_target(s) frontconn_slot_target(&(s)->base)
#define slot_complete(s) frontconn_slot_complete(&(s)->base)

static void conn_error(frontconn *c, const bc_req *r, uint16_t status)
{
    put_error(frontconn_reply_buf(c), r->opcode, status, r->opaque);
}

/* An empty success reply (noop, quit, verbosity), unless quiet. */
static void conn_ok(frontconn *c, const bc_req *r, bool quiet)
{
    if (!quiet)
        put_header(frontconn_reply_buf(c), r->opcode, ST_OK, 0, 0, 0, r->opaque, 0);
}

/* ------------------------------------------------------------------ completions */

static void slot_error(bc_slot *s, uint16_t status)
{
    put_error(slot_target(s), s->opcode, status, s->opaque);
}

static bool op_gat(uint8_t op)
{
    return op == OP_GAT || op == OP_GATQ || op == OP_GATK || op == OP_GATKQ;
}

/* A found item: flags extras, the key for GETK/GATK, the data; the CAS is the item's. */
static void put_item(bc_slot *s, nbuf *b, const char *key, size_t klen,
                     const gateway_item *it)
{
    size_t kl = s->withkey ? klen : 0;
    uint8_t flags[4];
    be32_put(flags, it->flags);
    nbuf_reserve(b, BC_HEADER_LEN + 4 + kl + it->len);
    put_header(b, s->opcode, ST_OK, kl, 4, 4 + kl + it->len, s->opaque, it->cas);
    nbuf_append(b, flags, 4);
    nbuf_append(b, key, kl);
    nbuf_append(b, it->data, it->len);
}

static void get_done(void *ud, int status, const gateway_value *v, const char *key, size_t klen)
{
    bc_slot *s = ud;
    gateway_item it;
    bool hit = status == GATEWAY_OK && gateway_item_decode(slot_gateway(s), v, &it);
    if (!op_gat(s->opcode)) {         /* a gat counts as a touch (touch_done) */
        gwstats *st = slot_stats(s);
        st->get_hits += hit;
        st->get_misses += !hit;
    }
    if (!slot_alive(s))
        return;
    nbuf *b = slot_target(s);
    if (hit) {
        put_item(s, b, key, klen, &it);
    } else if (status == GATEWAY_FAILED) {
        slot_error(s, ST_INTERNAL);          /* errors are reported even when quiet */
    } else if (!s->quiet) {
        if (s->withkey) {                    /* memcached: GETK misses carry the key */
            put_header(b, s->opcode, ST_NOT_FOUND, klen, 0, klen, s->opaque, 0);
            nbuf_append(b, key, klen);
        } else {
            slot_error(s, ST_NOT_FOUND);
        }
    }
    slot_complete(s);
}

/* The status a failed storage opcode reports, as memcached 1.6 maps NOT_STORED. */
static uint16_t store_status(uint8_t op, int status)
{
    switch (status) {
    case GATEWAY_MISS:
    case GATEWAY_NOT_FOUND: return ST_NOT_FOUND;
    case GATEWAY_EXISTS: return ST_EXISTS;
    case GATEWAY_NON_NUMERIC: return ST_NON_NUMERIC;
    case GATEWAY_NOT_STORED:
        if (op == OP_ADD || op == OP_ADDQ)
            return ST_EXISTS;
        if (op == OP_REPLACE || op == OP_REPLACEQ)
            return ST_NOT_FOUND;
        return ST_NOT_STORED;
    default: return ST_INTERNAL;
    }
}

static void store_finish(bc_slot *s, int status, clocktime_t ct)
{
    if (status != GATEWAY_OK)
        slot_error(s, store_status(s->opcode, status));
    else if (!s->quiet)
        put_header(slot_target(s), s->opcode, ST_OK, 0, 0, 0, s->opaque, ct);
    slot_complete(s);
}

/* Count a storage opcode's outcome (as the text front end does, quiet ones included). */
static void count_store(bc_slot *s, int status)
{
    gwstats *st = slot_stats(s);
    bool ok = status == GATEWAY_OK;
    st->total_items += ok;
    if (s->cas) {
        st->cas_hits += ok;
        st->cas_misses += status == GATEWAY_NOT_FOUND;
        st->cas_badval += status == GATEWAY_EXISTS;
    }
}

static void set_done(void *ud, int status, clocktime_t ct)
{
    bc_slot *s = ud;
    count_store(s, status);
    if (slot_alive(s))
        store_finish(s, status, ct);
}

static void update_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    bc_slot *s = ud;
    count_store(s, status);
    if (slot_alive(s))
        store_finish(s, status, ct);
}

static void delete_done(void *ud, int status, clocktime_t ct)
{
    bc_slot *s = ud;
    gwstats *st = slot_stats(s);
    st->delete_hits += status == GATEWAY_OK;
    st->delete_misses += status != GATEWAY_OK;
    if (!slot_alive(s))
        return;
    if (status == GATEWAY_OK) {
        if (!s->quiet)
            put_header(slot_target(s), s->opcode, ST_OK, 0, 0, 0, s->opaque, 0);
    } else {
        slot_error(s, status == GATEWAY_FAILED ? ST_INTERNAL : ST_NOT_FOUND);
    }
    slot_complete(s);
}

static void flush_done(void *ud, int status, clocktime_t ct)
{
    bc_slot *s = ud;
    if (!slot_alive(s))
        return;
    if (status != GATEWAY_OK)
        slot_error(s, ST_INTERNAL);
    else if (!s->quiet)
        put_header(slot_target(s), s->opcode, ST_OK, 0, 0, 0, s->opaque, 0);
    slot_complete(s);
}

static void incr_reply(bc_slot *s, uint64_t n, clocktime_t ct)
{
    if (!s->quiet) {
        nbuf *b = slot_target(s);
        uint8_t v[8];
        be64_put(v, n);
        put_header(b, s->opcode, ST_OK, 0, 0, 8, s->opaque, ct);
        nbuf_append(b, v, 8);
    }
    slot_complete(s);
}

static void incr_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen);

/* A creating incr/decr makes a missing item with the initial value in the same server
 * step, so a request pipelined behind it sees it (a server that cannot answers NOT_FOUND
 * and incr_done creates it with a second request). */
static void incr_send(bc_slot *s)
{
    bool decr = s->opcode == OP_DECR || s->opcode == OP_DECRQ;
    if (s->step == 0 && s->exptime != BC_NO_CREATE) {
        char num[24];
        int n = snprintf(num, sizeof num, "%llu", (unsigned long long)s->initial);
        gateway_update(slot_gateway(s), decr ? GATEWAY_DECR_CREATE : GATEWAY_INCR_CREATE,
                       s->key.data, s->key.len, 0, s->exptime, num, (size_t)n, s->delta, false,
                       incr_done, s);
        return;
    }
    gateway_update(slot_gateway(s), decr ? GATEWAY_DECR : GATEWAY_INCR, s->key.data, s->key.len,
                   0, 0, NULL, 0, s->delta, false, incr_done, s);
}

static void incr_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    bc_slot *s = ud;
    if (status == GATEWAY_CREATED)
        status = GATEWAY_OK;
    if (s->step == 0) {               /* the client's own incr/decr, not our retries */
        gwstats *st = slot_stats(s);
        bool decr = s->opcode == OP_DECR || s->opcode == OP_DECRQ;
        *(decr ? &st->decr_hits : &st->incr_hits) += status == GATEWAY_OK;
        *(decr ? &st->decr_misses : &st->incr_misses) += status == GATEWAY_NOT_FOUND;
    }
    if (!slot_alive(s))
        return;
    if (s->step == 1) {               /* the add of the initial value came back */
        if (status == GATEWAY_OK) {
            incr_reply(s, s->initial, ct);
            return;
        }
        if (status == GATEWAY_NOT_STORED) {   /* someone created it meanwhile: count on it */
            s->step = 2;
            incr_send(s);
            return;
        }
        store_finish(s, status, ct);
        return;
    }
    if (status == GATEWAY_OK) {
        uint64_t n = 0;
        for (size_t i = 0; i < vlen && value[i] >= '0' && value[i] <= '9'; i++)
            n = n * 10 + (uint64_t)(value[i] - '0');
        incr_reply(s, n, ct);
        return;
    }
    if (status == GATEWAY_NOT_FOUND && s->step == 0 && s->exptime != BC_NO_CREATE) {
        char num[24];
        int n = snprintf(num, sizeof num, "%llu", (unsigned long long)s->initial);
        s->step = 1;
        gateway_update(slot_gateway(s), GATEWAY_ADD, s->key.data, s->key.len, 0, s->exptime, num,
                       (size_t)n, 0, false, incr_done, s);
        return;
    }
    store_finish(s, status, ct);
}

static void touch_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    bc_slot *s = ud;
    gwstats *st = slot_stats(s);
    st->touch_hits += status == GATEWAY_OK;
    st->touch_misses += status != GATEWAY_OK;
    if (!slot_alive(s))
        return;
    bool gat = s->opcode != OP_TOUCH;
    gateway_value gv;
    gateway_item it;
    if (status == GATEWAY_OK && !gat && value && gateway_value_parse(value, vlen, &gv) &&
        gateway_item_decode_any(slot_gateway(s), &gv, &it)) {
        /* memcached answers a touch with the item's flags and its unchanged CAS */
        uint8_t flags[4];
        be32_put(flags, it.flags);
        put_header(slot_target(s), s->opcode, ST_OK, 0, 4, 4, s->opaque, it.cas);
        nbuf_append(slot_target(s), flags, 4);
        slot_complete(s);
        return;
    }
    if (status == GATEWAY_OK && gat && value) {
        /* the touched item came with the touch: returned even when the new exptime has
         * passed already (memcached returns it, then it is gone) */
        if (gateway_value_parse(value, vlen, &gv) &&
            gateway_item_decode_any(slot_gateway(s), &gv, &it))
            put_item(s, slot_target(s), s->key.data, s->key.len, &it);
        else
            slot_error(s, ST_NOT_FOUND);
        slot_complete(s);
        return;
    }
    if (status == GATEWAY_OK && gat) {
        /* the touched item's value: a get, still holding this slot */
        gateway_get(slot_gateway(s), s->key.data, s->key.len, get_done, s);
        return;
    }
    if (status == GATEWAY_OK)
        put_header(slot_target(s), s->opcode, ST_OK, 0, 0, 0, s->opaque, ct);
    else if (status == GATEWAY_FAILED)
        slot_error(s, ST_INTERNAL);
    else if (!s->quiet)
        slot_error(s, ST_NOT_FOUND);
    slot_complete(s);
}

/* ------------------------------------------------------------------ commands */

typedef void (*bc_handler)(frontconn *c, const bc_req *r);

static bool op_quiet(uint8_t op)
{
    switch (op) {
    case OP_GETQ: case OP_GETKQ: case OP_SETQ: case OP_ADDQ: case OP_REPLACEQ:
    case OP_DELETEQ: case OP_INCRQ: case OP_DECRQ: case OP_QUITQ: case OP_FLUSHQ:
    case OP_APPENDQ: case OP_PREPENDQ: case OP_GATQ: case OP_GATKQ:
        return true;
    default:
        return false;
    }
}

static bc_slot *pending_slot(frontconn *c, const bc_req *r)
{
    bc_slot *s = (bc_slot *)frontconn_slot_new(c);
    s->opcode = r->opcode;
    s->opaque = r->opaque;
    s->withkey = false;
    s->cas = false;
    s->step = 0;
    nbuf_clear(&s->key);
    s->quiet = op_quiet(r->opcode);
    return s;
}

static void cmd_get(frontconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    s->withkey = r->opcode == OP_GETK || r->opcode == OP_GETKQ;
    frontconn_stats(c)->cmd_get++;
    gateway_get(conn_listener(c)->gw, r->key, r->keylen, get_done, s);
}

static void toobig_done(void *ud, int status, clocktime_t ct)
{
    bc_slot *s = ud;
    if (!slot_alive(s))
        return;
    slot_error(s, ST_TOO_LARGE);
    slot_complete(s);
}

/* A storage request refused as too large.  memcached unlinks the key of a refused set,
 * so the old value is not read back as if the set had not happened: the error follows
 * that delete. */
static void store_too_large(frontconn *c, const bc_req *r)
{
    if ((r->opcode == OP_SET || r->opcode == OP_SETQ) && r->keylen > 0 &&
        r->keylen <= MC_KEY_MAX) {
        bc_slot *s = pending_slot(c, r);
        gateway_delete(conn_listener(c)->gw, r->key, r->keylen, false, toobig_done, s);
        return;
    }
    conn_error(c, r, ST_TOO_LARGE);
}

static void cmd_store(frontconn *c, const bc_req *r)
{
    gateway *gw = conn_listener(c)->gw;
    uint32_t flags = 0, exptime = 0;
    if (r->extlen == 8) {
        flags = be32_get(r->extras);
        exptime = be32_get(r->extras + 4);
    }
    if (r->valuelen > conn_listener(c)->cfg.item_size_max) {
        store_too_large(c, r);
        return;
    }
    frontconn_stats(c)->cmd_set++;
    bc_slot *s = pending_slot(c, r);
    unsigned uop;
    switch (r->opcode) {
    case OP_SET: case OP_SETQ:
        if (r->cas == 0) {
            uint8_t hdr[GATEWAY_ITEM_HEADER_LEN];
            gateway_item_header(gw, flags, exptime, hdr);
            gateway_set(gw, r->key, r->keylen, SET_OP_SET, 0, GATEWAY_META_ITEM, hdr,
                        sizeof hdr, r->value, r->valuelen, set_done, s);
            return;
        }
        uop = GATEWAY_CAS;
        break;
    case OP_ADD: case OP_ADDQ: uop = GATEWAY_ADD; break;
    case OP_REPLACE: case OP_REPLACEQ: uop = r->cas ? GATEWAY_CAS : GATEWAY_REPLACE; break;
    case OP_APPEND: case OP_APPENDQ: uop = GATEWAY_APPEND; break;
    default: uop = GATEWAY_PREPEND; break;
    }
    s->cas = uop == GATEWAY_CAS;
    gateway_update(gw, uop, r->key, r->keylen, flags, exptime, r->value, r->valuelen,
                   r->cas, false, update_done, s);
}

static void cmd_delete(frontconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    gateway_delete(conn_listener(c)->gw, r->key, r->keylen, false, delete_done, s);
}

static void cmd_incr(frontconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    s->delta = be64_get(r->extras);
    s->initial = be64_get(r->extras + 8);
    s->exptime = be32_get(r->extras + 16);
    nbuf_append(&s->key, r->key, r->keylen);
    incr_send(s);
}

static void cmd_touch(frontconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    s->withkey = r->opcode == OP_GATK || r->opcode == OP_GATKQ;
    s->exptime = be32_get(r->extras);
    nbuf_append(&s->key, r->key, r->keylen);
    gwstats *st = frontconn_stats(c);
    st->cmd_touch++;
    st->cmd_get += op_gat(r->opcode);
    /* touch too asks for the item back: its reply carries the flags and the CAS */
    gateway_update(conn_listener(c)->gw, GATEWAY_GAT, r->key, r->keylen, 0, s->exptime,
                   NULL, 0, 0, false, touch_done, s);
}

static void cmd_flush(frontconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    frontconn_stats(c)->cmd_flush++;
    gateway_flush_all(conn_listener(c)->gw, r->extlen == 4 ? be32_get(r->extras) : 0,
                      flush_done, s);
}

static void cmd_noop(frontconn *c, const bc_req *r)
{
    conn_ok(c, r, false);
}

static void cmd_quit(frontconn *c, const bc_req *r)
{
    conn_ok(c, r, r->opcode == OP_QUITQ);
    frontconn_set_state(c, FRONTCONN_DRAIN);
}

static void cmd_version(frontconn *c, const bc_req *r)
{
    nbuf *b = frontconn_reply_buf(c);
    put_header(b, r->opcode, ST_OK, 0, 0, sizeof GWSTATS_VERSION - 1, r->opaque, 0);
    nbuf_append(b, GWSTATS_VERSION, sizeof GWSTATS_VERSION - 1);
}

/* One stat packet per statistic (gwstats_emit_fn; ud is the stat_ctx). */
typedef struct stat_ctx {
    nbuf *b;
    const bc_req *r;
} stat_ctx;

static void put_stat(void *ud, const char *k, const char *v)
{
    stat_ctx *x = ud;
    size_t kl = strlen(k), vl = strlen(v);
    put_header(x->b, x->r->opcode, ST_OK, kl, 0, kl + vl, x->r->opaque, 0);
    nbuf_append(x->b, k, kl);
    nbuf_append(x->b, v, vl);
}

/* The gateway's general statistics (the same counters as the text `stats`), then the
 * empty terminating packet.  "reset" zeroes them (a lone terminator, as memcached);
 * other groups are NOT_FOUND. */
static void cmd_stat(frontconn *c, const bc_req *r)
{
    nbuf *b = frontconn_reply_buf(c);
    if (r->keylen == 5 && memcmp(r->key, "reset", 5) == 0) {
        gwstats_reset(frontconn_stats(c));
    } else if (r->keylen) {
        put_error(b, r->opcode, ST_NOT_FOUND, r->opaque);
        return;
    } else {
        stat_ctx x = {b, r};
        gwstats_report(frontconn_stats(c), put_stat, &x);
    }
    put_header(b, r->opcode, ST_OK, 0, 0, 0, r->opaque, 0);
}

/* What each opcode accepts: exact extras length (BC_EXT_0_OR_4 for flush and delete),
 * whether a key is required/forbidden/optional, whether a value may follow. */
enum { KEY_NO = 0, KEY_YES = 1, KEY_ANY = 2 };
#define BC_EXT_0_OR_4 0xff

typedef struct bc_op {
    bc_handler h;
    uint8_t extlen;
    uint8_t key;
    bool value;
} bc_op;

static const bc_op bc_ops[OP_COUNT] = {
    [OP_GET] = {cmd_get, 0, KEY_YES, false},
    [OP_GETQ] = {cmd_get, 0, KEY_YES, false},
    [OP_GETK] = {cmd_get, 0, KEY_YES, false},
    [OP_GETKQ] = {cmd_get, 0, KEY_YES, false},
    [OP_SET] = {cmd_store, 8, KEY_YES, true},
    [OP_SETQ] = {cmd_store, 8, KEY_YES, true},
    [OP_ADD] = {cmd_store, 8, KEY_YES, true},
    [OP_ADDQ] = {cmd_store, 8, KEY_YES, true},
    [OP_REPLACE] = {cmd_store, 8, KEY_YES, true},
    [OP_REPLACEQ] = {cmd_store, 8, KEY_YES, true},
    [OP_APPEND] = {cmd_store, 0, KEY_YES, true},
    [OP_APPENDQ] = {cmd_store, 0, KEY_YES, true},
    [OP_PREPEND] = {cmd_store, 0, KEY_YES, true},
    [OP_PREPENDQ] = {cmd_store, 0, KEY_YES, true},
    /* kumofs clients sent a 4-byte zero expiration with delete (memcached.md §3.1) */
    [OP_DELETE] = {cmd_delete, BC_EXT_0_OR_4, KEY_YES, false},
    [OP_DELETEQ] = {cmd_delete, BC_EXT_0_OR_4, KEY_YES, false},
    [OP_INCR] = {cmd_incr, 20, KEY_YES, false},
    [OP_INCRQ] = {cmd_incr, 20, KEY_YES, false},
    [OP_DECR] = {cmd_incr, 20, KEY_YES, false},
    [OP_DECRQ] = {cmd_incr, 20, KEY_YES, false},
    [OP_QUIT] = {cmd_quit, 0, KEY_NO, false},
    [OP_QUITQ] = {cmd_quit, 0, KEY_NO, false},
    [OP_FLUSH] = {cmd_flush, BC_EXT_0_OR_4, KEY_NO, false},
    [OP_FLUSHQ] = {cmd_flush, BC_EXT_0_OR_4, KEY_NO, false},
    [OP_NOOP] = {cmd_noop, 0, KEY_NO, false},
    [OP_VERSION] = {cmd_version, 0, KEY_NO, false},
    [OP_STAT] = {cmd_stat, 0, KEY_ANY, false},
    [OP_VERBOSITY] = {cmd_noop, 4, KEY_NO, false},
    [OP_TOUCH] = {cmd_touch, 4, KEY_YES, false},
    [OP_GAT] = {cmd_touch, 4, KEY_YES, false},
    [OP_GATQ] = {cmd_touch, 4, KEY_YES, false},
    [OP_GATK] = {cmd_touch, 4, KEY_YES, false},
    [OP_GATKQ] = {cmd_touch, 4, KEY_YES, false},
};

static bool is_store_op(uint8_t op)
{
    return op < OP_COUNT && bc_ops[op].h == cmd_store;
}

/* Validate one whole request (header + body at p) and run it. */
static void conn_dispatch(frontconn *c, const uint8_t *p, size_t bodylen)
{
    bc_req r = {
        .opcode = p[1],
        .opaque = be32_get(p + 12),
        .cas = be64_get(p + 16),
        .extlen = p[4],
        .keylen = be16_get(p + 2),
    };
    if (r.keylen + r.extlen > bodylen) {
        conn_error(c, &r, ST_EINVAL);
        return;
    }
    r.extras = p + BC_HEADER_LEN;
    r.key = (const char *)r.extras + r.extlen;
    r.value = (const uint8_t *)r.key + r.keylen;
    r.valuelen = bodylen - r.extlen - r.keylen;
    const bc_op *op = r.opcode < OP_COUNT && bc_ops[r.opcode].h ? &bc_ops[r.opcode] : NULL;
    if (!op) {
        conn_error(c, &r, ST_UNKNOWN);
        return;
    }
    bool ext_ok = op->extlen == BC_EXT_0_OR_4 ? (r.extlen == 0 || r.extlen == 4)
                                              : r.extlen == op->extlen;
    bool key_ok = op->key == KEY_ANY || (op->key == KEY_YES) == (r.keylen > 0);
    if (!ext_ok || !key_ok || r.keylen > MC_KEY_MAX || (!op->value && r.valuelen)) {
        conn_error(c, &r, ST_EINVAL);
        return;
    }
    op->h(c, &r);
}

/* ------------------------------------------------------------------ cloudy (-c) */

/* kumofs 0.4.13's "cloudy" port (memcached.md §4): a binary subset whose replies go out
 * as operations complete, values stored and returned raw (meta 0, no flags or exptime,
 * whatever -F/-E say), CAS 0, and any request outside the subset closes the connection
 * without a reply. */
#define CL_ST_FAILED 0x0004
#define CL_ST_NOT_STORED 0x0082

static void cloudy_get_done(void *ud, int status, const gateway_value *v, const char *key,
                            size_t klen)
{
    bc_slot *s = ud;
    gwstats *st = slot_stats(s);
    st->get_hits += status == GATEWAY_OK;
    st->get_misses += status != GATEWAY_OK;
    if (!slot_alive(s))
        return;
    nbuf *b = slot_target(s);
    if (status == GATEWAY_OK) {
        static const uint8_t zero_flags[4];
        size_t kl = s->withkey ? klen : 0;
        nbuf_reserve(b, BC_HEADER_LEN + 4 + kl + v->len);
        put_header(b, s->opcode, ST_OK, kl, 4, 4 + kl + v->len, s->opaque, 0);
        nbuf_append(b, zero_flags, 4);
        nbuf_append(b, key, kl);
        nbuf_append(b, v->payload, v->len);
    } else if (!s->quiet) {
        put_header(b, s->opcode, status == GATEWAY_FAILED ? CL_ST_FAILED : ST_NOT_FOUND, 0, 0,
                   0, s->opaque, 0);
    }
    slot_complete(s);
}

static void cloudy_store_done(void *ud, int status, clocktime_t ct)
{
    bc_slot *s = ud;
    if (s->opcode == OP_DELETE) {
        slot_stats(s)->delete_hits += status == GATEWAY_OK;
        slot_stats(s)->delete_misses += status != GATEWAY_OK;
    } else {
        slot_stats(s)->total_items += status == GATEWAY_OK;
    }
    if (!slot_alive(s))
        return;
    uint16_t st;
    if (s->opcode == OP_DELETE)   /* the original: deleting a missing key succeeds */
        st = status == GATEWAY_OK || status == GATEWAY_NOT_FOUND ? ST_OK : CL_ST_FAILED;
    else
        st = status == GATEWAY_OK ? ST_OK : CL_ST_NOT_STORED;
    put_header(slot_target(s), s->opcode, st, 0, 0, 0, s->opaque, 0);
    slot_complete(s);
}

/* Validate one cloudy request and run it; false: protocol error, close. */
static bool cloudy_dispatch(frontconn *c, const uint8_t *p, size_t bodylen)
{
    uint8_t op = p[1];
    size_t extlen = p[4], keylen = be16_get(p + 2);
    if (keylen == 0 || extlen + keylen > bodylen)
        return false;
    const uint8_t *extras = p + BC_HEADER_LEN;
    const char *key = (const char *)extras + extlen;
    const uint8_t *value = (const uint8_t *)key + keylen;
    size_t valuelen = bodylen - extlen - keylen;
    gateway *gw = conn_listener(c)->gw;
    bc_slot *s;
    switch (op) {
    case OP_GET: case OP_GETQ: case OP_GETK: case OP_GETKQ:
        if (extlen != 0 || valuelen != 0)
            return false;
        s = (bc_slot *)frontconn_slot_new_unordered(c);
        s->opcode = op;
        s->opaque = be32_get(p + 12);
        s->quiet = op == OP_GETQ || op == OP_GETKQ;
        s->withkey = op == OP_GETK || op == OP_GETKQ;
        frontconn_stats(c)->cmd_get++;
        gateway_get(gw, key, keylen, cloudy_get_done, s);
        return true;
    case OP_SET:
        /* only plain sets: flags, expiration and CAS must be 0 */
        if (extlen != 8 || be32_get(extras) != 0 || be32_get(extras + 4) != 0 ||
            be64_get(p + 16) != 0 || valuelen > conn_listener(c)->cfg.item_size_max)
            return false;
        s = (bc_slot *)frontconn_slot_new_unordered(c);
        s->opcode = op;
        s->opaque = be32_get(p + 12);
        frontconn_stats(c)->cmd_set++;
        gateway_set(gw, key, keylen, SET_OP_SET, 0, GATEWAY_META_ORIGINAL, NULL, 0, value,
                    valuelen, cloudy_store_done, s);
        return true;
    case OP_DELETE:
        if ((extlen != 0 && extlen != 4) || (extlen == 4 && be32_get(extras) != 0) ||
            valuelen != 0)
            return false;
        s = (bc_slot *)frontconn_slot_new_unordered(c);
        s->opcode = op;
        s->opaque = be32_get(p + 12);
        gateway_delete(gw, key, keylen, false, cloudy_store_done, s);
        return true;
    default:
        return false;
    }
}

static size_t cloudy_parse(frontconn *c, const char *buf, size_t len, size_t *need)
{
    const uint8_t *p = (const uint8_t *)buf;
    if (len < BC_HEADER_LEN) {
        *need = BC_HEADER_LEN;
        return 0;
    }
    size_t bodylen = be32_get(p + 8);
    if (p[0] != BC_MAGIC_REQ ||
        bodylen > conn_listener(c)->cfg.item_size_max + BC_HEADER_LEN + 65535 + 255) {
        log_debug("cloudy: bad request, closing");
        frontconn_abort(c);
        return 0;
    }
    if (len < BC_HEADER_LEN + bodylen) {
        *need = BC_HEADER_LEN + bodylen;
        return 0;
    }
    if (!cloudy_dispatch(c, p, bodylen)) {
        log_debug("cloudy: unsupported or malformed request (opcode 0x%02x), closing", p[1]);
        frontconn_abort(c);
        return 0;
    }
    return BC_HEADER_LEN + bodylen;
}

/* ------------------------------------------------------------------ protocol */

/* frontconn_proto.parse: frame one request (24-byte header + body) out of buf. */
static size_t bc_parse(frontconn *c, const char *buf, size_t len, size_t *need)
{
    if (conn_listener(c)->cfg.cloudy)
        return cloudy_parse(c, buf, len, need);
    const uint8_t *p = (const uint8_t *)buf;
    if (len < BC_HEADER_LEN) {
        *need = BC_HEADER_LEN;
        return 0;
    }
    if (p[0] != BC_MAGIC_REQ) {
        /* not a binary request: nothing after it can be framed, so stop reading and
         * close once earlier replies are out */
        log_debug("binary: bad magic 0x%02x, closing", p[0]);
        frontconn_set_state(c, FRONTCONN_DRAIN);
        return 0;
    }
    size_t bodylen = be32_get(p + 8);
    if (bodylen > conn_listener(c)->cfg.item_size_max + BC_BODY_OVERHEAD) {
        /* never buffer it: answer now and drop the body as it arrives; a store waits
         * for its extras and key first (at most 64 KiB + 255) to unlink the key */
        bc_req r = {.opcode = p[1], .opaque = be32_get(p + 12), .extlen = p[4],
                    .keylen = be16_get(p + 2)};
        size_t head = BC_HEADER_LEN + r.extlen + r.keylen;
        if (!is_store_op(p[1]) || r.extlen + r.keylen > bodylen) {
            conn_error(c, &r, is_store_op(p[1]) ? ST_TOO_LARGE : ST_EINVAL);
        } else if (len < head) {
            *need = head;
            return 0;
        } else {
            r.extras = p + BC_HEADER_LEN;
            r.key = (const char *)r.extras + r.extlen;
            store_too_large(c, &r);
            frontconn_swallow(c, bodylen - r.extlen - r.keylen);
            return head;
        }
        frontconn_swallow(c, bodylen);
        return BC_HEADER_LEN;
    }
    if (len < BC_HEADER_LEN + bodylen) {
        *need = BC_HEADER_LEN + bodylen;
        return 0;
    }
    conn_dispatch(c, p, bodylen);
    return BC_HEADER_LEN + bodylen;
}

static const frontconn_proto bc_proto = {
    .name = "binary",
    .slot_size = sizeof(bc_slot),
    .parse = bc_parse,
    .slot_destroy = slot_destroy,
};

binconn_listener *binconn_listen(struct ev_loop *loop, int fd, gateway *gw, gwstats *stats,
                                 const binconn_config *cfg)
{
    binconn_listener *l = xcalloc(1, sizeof *l);
    l->gw = gw;
    l->cfg = *cfg;
    l->fl = frontconn_listen(loop, fd, &bc_proto, stats, l);
    return l;
}

void binconn_listener_free(binconn_listener *l)
{
    if (!l)
        return;
    frontconn_listener_free(l->fl);
    free(l);
}
