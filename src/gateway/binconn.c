/* binconn.c - memcached binary protocol connections: frame, dispatch, in-order replies. */
#include "gateway/binconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logic/daemon.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"

/* The same version string the text front end answers (memcached-shaped, DECISIONS.md §3). */
#define BC_VERSION "1.6.21-kumofs-0.4.13"

#define BC_HEADER_LEN 24
#define BC_KEY_MAX 250                /* memcached's key length limit */
#define BC_BODY_OVERHEAD (BC_KEY_MAX + 32)  /* key + the largest extras (20) + slack */
#define BC_IN_INITIAL (16 * 1024)
#define BC_IN_MIN_FREE 4096
#define BC_BUF_SHRINK (1024 * 1024)
#define BC_MAX_SLOTS 8192             /* replies outstanding before we stop reading */
#define BC_OUT_HIGH (8 * 1024 * 1024) /* unsent output before we stop reading */
#define BC_SLOT_POOL_MAX 65536
#define BC_SLOT_DATA_KEEP (16 * 1024)
#define BC_ACCEPT_BUDGET 64

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

typedef struct bc_buf {
    char *p;
    size_t len, cap;
} bc_buf;

/* Connection states (one place changes them: conn_set_state). */
enum bc_state {
    BC_READ,       /* framing requests */
    BC_SWALLOW,    /* discarding the body of an oversize request */
    BC_DRAIN,      /* quit, EOF or bad magic: no more input; close once replies are sent */
};

typedef struct binconn binconn;

/* One reply position in a connection's FIFO.  A pending slot is the ud of a gateway
 * request, so it lives until that request completes even if the connection dies. */
typedef struct bc_slot {
    struct bc_slot *next;
    binconn *conn;
    bool done;
    bool quiet;                /* suppress success (and, for gets, miss) replies */
    bool withkey;              /* GETK/GATK: the key goes back in the reply */
    uint8_t opcode;            /* echoed in the reply */
    uint8_t step;              /* incr/decr: 0 incr, 1 creating, 2 incr after a lost add */
    uint32_t opaque;           /* echoed in the reply */
    uint64_t delta, initial;   /* incr/decr */
    uint32_t exptime;          /* incr/decr creation, gat */
    bc_buf key;                /* incr/decr and gat need the key for a second request */
    bc_buf data;               /* the reply, when completed before its turn */
} bc_slot;

struct binconn {
    binconn_listener *l;
    binconn *prev, *next;      /* live connections of the listener */
    binconn *dirty_next;       /* listener's flush list */
    int fd;
    ev_io rio, wio;
    enum bc_state state;
    bool reading, writing;     /* watchers active */
    bool paused;               /* too much outstanding: reading stopped until drained */
    bool in_dirty;
    bool dead;                 /* closed; freed when refs and in_dirty drop */
    unsigned refs;             /* pending slots (gateway requests in flight) */
    unsigned nslots;
    bc_buf in;                 /* unparsed input from offset 0 */
    size_t need;               /* bytes the framer waits for (0 unknown) */
    size_t swallow;            /* BC_SWALLOW: bytes still to discard */
    bc_buf out;                /* replies ready to write */
    size_t outpos;
    bc_slot *head, *tail;      /* reply FIFO */
};

struct binconn_listener {
    struct ev_loop *loop;
    gateway *gw;
    binconn_config cfg;
    int fd;
    ev_io aio;
    ev_timer accept_pause;     /* after EMFILE and friends */
    ev_prepare flush;          /* write every dirty connection once per loop iteration */
    binconn *conns;
    unsigned nconns;
    binconn *dirty;
    bc_slot *pool;
    size_t npool;
    ev_tstamp started;
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

/* ------------------------------------------------------------------ buffers */

static void buf_reserve(bc_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void buf_append(bc_buf *b, const void *d, size_t n)
{
    if (n == 0)
        return;
    buf_reserve(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void buf_shrink(bc_buf *b, size_t to)
{
    if (b->cap > BC_BUF_SHRINK && b->len <= to) {
        b->p = xrealloc(b->p, to);
        b->cap = to;
    }
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/* The 24-byte response header; body length is 32-bit, so large values are never
 * truncated (the original kept it in 16 bits, memcached.md §3.2). */
static void put_header(bc_buf *b, uint8_t op, uint16_t status, size_t keylen, size_t extlen,
                       size_t bodylen, uint32_t opaque, uint64_t cas)
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
    put_be32(h + 8, (uint32_t)bodylen);
    put_be32(h + 12, opaque);
    put_be64(h + 16, cas);
    buf_append(b, h, sizeof h);
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

static void put_error(bc_buf *b, uint8_t op, uint16_t status, uint32_t opaque)
{
    const char *t = status_text(status);
    size_t n = strlen(t);
    put_header(b, op, status, 0, 0, n, opaque, 0);
    buf_append(b, t, n);
}

/* ------------------------------------------------------------------ slots */

static bc_slot *slot_new(binconn *c, const bc_req *r, bool pending)
{
    binconn_listener *l = c->l;
    bc_slot *s = l->pool;
    if (s) {
        l->pool = s->next;
        l->npool--;
    } else {
        s = xcalloc(1, sizeof *s);
    }
    s->next = NULL;
    s->conn = c;
    s->done = !pending;
    s->quiet = false;
    s->withkey = false;
    s->opcode = r->opcode;
    s->opaque = r->opaque;
    s->step = 0;
    s->data.len = 0;
    s->key.len = 0;
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->nslots++;
    if (pending)
        c->refs++;
    return s;
}

static void slot_release(binconn_listener *l, bc_slot *s)
{
    if (l->npool >= BC_SLOT_POOL_MAX) {
        free(s->data.p);
        free(s->key.p);
        free(s);
        return;
    }
    if (s->data.cap > BC_SLOT_DATA_KEEP) {
        free(s->data.p);
        s->data.p = NULL;
        s->data.cap = 0;
    }
    s->next = l->pool;
    l->pool = s;
    l->npool++;
}

static void conn_mark_dirty(binconn *c)
{
    if (!c->in_dirty) {
        c->in_dirty = true;
        c->dirty_next = c->l->dirty;
        c->l->dirty = c;
    }
}

/* Where a completing slot writes: straight into the output when it is first in line,
 * else into its own buffer until its turn. */
static bc_buf *slot_target(bc_slot *s)
{
    return s == s->conn->head ? &s->conn->out : &s->data;
}

/* Move every completed slot at the head of the FIFO into the output. */
static void conn_advance(binconn *c)
{
    while (c->head && c->head->done) {
        bc_slot *h = c->head;
        c->head = h->next;
        if (!c->head)
            c->tail = NULL;
        buf_append(&c->out, h->data.p, h->data.len);
        c->nslots--;
        slot_release(c->l, h);
    }
    conn_mark_dirty(c);
}

static void conn_maybe_free(binconn *c)
{
    if (c->dead && c->refs == 0 && !c->in_dirty)
        free(c);
}

/* Start of a gateway callback: false (and the slot released) if the client is gone. */
static bool slot_alive(bc_slot *s)
{
    binconn *c = s->conn;
    if (!c->dead)
        return true;
    c->refs--;
    slot_release(c->l, s);
    conn_maybe_free(c);
    return false;
}

static void slot_complete(bc_slot *s)
{
    binconn *c = s->conn;
    s->done = true;
    c->refs--;
    if (s == c->head)
        conn_advance(c);
}

/* The buffer for a reply known now: the output when nothing is pending before it. */
static bc_buf *conn_reply_buf(binconn *c, const bc_req *r)
{
    conn_mark_dirty(c);
    return c->head ? &slot_new(c, r, false)->data : &c->out;
}

static void conn_error(binconn *c, const bc_req *r, uint16_t status)
{
    put_error(conn_reply_buf(c, r), r->opcode, status, r->opaque);
}

/* An empty success reply (noop, quit, verbosity), unless quiet. */
static void conn_ok(binconn *c, const bc_req *r, bool quiet)
{
    if (!quiet)
        put_header(conn_reply_buf(c, r), r->opcode, ST_OK, 0, 0, 0, r->opaque, 0);
}

/* ------------------------------------------------------------------ completions */

static void slot_error(bc_slot *s, uint16_t status)
{
    put_error(slot_target(s), s->opcode, status, s->opaque);
}

static void get_done(void *ud, int status, const gateway_value *v, const char *key, size_t klen)
{
    bc_slot *s = ud;
    if (!slot_alive(s))
        return;
    bc_buf *b = slot_target(s);
    gateway_item it;
    if (status == GATEWAY_OK && gateway_item_decode(s->conn->l->gw, v, &it)) {
        size_t kl = s->withkey ? klen : 0;
        uint8_t flags[4];
        put_be32(flags, it.flags);
        buf_reserve(b, BC_HEADER_LEN + 4 + kl + it.len);
        put_header(b, s->opcode, ST_OK, kl, 4, 4 + kl + it.len, s->opaque, v->ct);
        buf_append(b, flags, 4);
        buf_append(b, key, kl);
        buf_append(b, it.data, it.len);
    } else if (status == GATEWAY_FAILED) {
        slot_error(s, ST_INTERNAL);          /* errors are reported even when quiet */
    } else if (!s->quiet) {
        if (s->withkey) {                    /* memcached: GETK misses carry the key */
            put_header(b, s->opcode, ST_NOT_FOUND, klen, 0, klen, s->opaque, 0);
            buf_append(b, key, klen);
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

static void set_done(void *ud, int status, clocktime_t ct)
{
    bc_slot *s = ud;
    if (slot_alive(s))
        store_finish(s, status, ct);
}

static void update_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    bc_slot *s = ud;
    if (slot_alive(s))
        store_finish(s, status, ct);
}

static void delete_done(void *ud, int status, clocktime_t ct)
{
    bc_slot *s = ud;
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
        bc_buf *b = slot_target(s);
        uint8_t v[8];
        put_be64(v, n);
        put_header(b, s->opcode, ST_OK, 0, 0, 8, s->opaque, ct);
        buf_append(b, v, 8);
    }
    slot_complete(s);
}

static void incr_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen);

static void incr_send(bc_slot *s)
{
    bool decr = s->opcode == OP_DECR || s->opcode == OP_DECRQ;
    gateway_update(s->conn->l->gw, decr ? GATEWAY_DECR : GATEWAY_INCR, s->key.p, s->key.len,
                   0, 0, NULL, 0, s->delta, false, incr_done, s);
}

static void incr_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    bc_slot *s = ud;
    if (!slot_alive(s))
        return;
    binconn *c = s->conn;
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
        gateway_update(c->l->gw, GATEWAY_ADD, s->key.p, s->key.len, 0, s->exptime, num,
                       (size_t)n, 0, false, incr_done, s);
        return;
    }
    store_finish(s, status, ct);
}

static void touch_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    bc_slot *s = ud;
    if (!slot_alive(s))
        return;
    bool gat = s->opcode != OP_TOUCH;
    if (status == GATEWAY_OK && gat) {
        /* the touched item's value: a get, still holding this slot */
        gateway_get(s->conn->l->gw, s->key.p, s->key.len, get_done, s);
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

typedef void (*bc_handler)(binconn *c, const bc_req *r);

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

static bc_slot *pending_slot(binconn *c, const bc_req *r)
{
    bc_slot *s = slot_new(c, r, true);
    s->quiet = op_quiet(r->opcode);
    return s;
}

static void cmd_get(binconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    s->withkey = r->opcode == OP_GETK || r->opcode == OP_GETKQ;
    gateway_get(c->l->gw, r->key, r->keylen, get_done, s);
}

static void cmd_store(binconn *c, const bc_req *r)
{
    gateway *gw = c->l->gw;
    uint32_t flags = 0, exptime = 0;
    if (r->extlen == 8) {
        flags = get_be32(r->extras);
        exptime = get_be32(r->extras + 4);
    }
    if (r->valuelen > c->l->cfg.item_size_max) {
        conn_error(c, r, ST_TOO_LARGE);
        return;
    }
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
    gateway_update(gw, uop, r->key, r->keylen, flags, exptime, r->value, r->valuelen,
                   r->cas, false, update_done, s);
}

static void cmd_delete(binconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    gateway_delete(c->l->gw, r->key, r->keylen, false, delete_done, s);
}

static void cmd_incr(binconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    s->delta = get_be64(r->extras);
    s->initial = get_be64(r->extras + 8);
    s->exptime = get_be32(r->extras + 16);
    s->key.len = 0;
    buf_append(&s->key, r->key, r->keylen);
    incr_send(s);
}

static void cmd_touch(binconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    s->withkey = r->opcode == OP_GATK || r->opcode == OP_GATKQ;
    s->exptime = get_be32(r->extras);
    s->key.len = 0;
    buf_append(&s->key, r->key, r->keylen);
    gateway_update(c->l->gw, GATEWAY_TOUCH, r->key, r->keylen, 0, s->exptime, NULL, 0, 0,
                   false, touch_done, s);
}

static void cmd_flush(binconn *c, const bc_req *r)
{
    bc_slot *s = pending_slot(c, r);
    gateway_flush_all(c->l->gw, r->extlen == 4 ? get_be32(r->extras) : 0, flush_done, s);
}

static void cmd_noop(binconn *c, const bc_req *r)
{
    conn_ok(c, r, false);
}

static void conn_set_state(binconn *c, enum bc_state st);

static void cmd_quit(binconn *c, const bc_req *r)
{
    conn_ok(c, r, r->opcode == OP_QUITQ);
    conn_set_state(c, BC_DRAIN);
}

static void cmd_version(binconn *c, const bc_req *r)
{
    bc_buf *b = conn_reply_buf(c, r);
    put_header(b, r->opcode, ST_OK, 0, 0, sizeof BC_VERSION - 1, r->opaque, 0);
    buf_append(b, BC_VERSION, sizeof BC_VERSION - 1);
}

static void put_stat(bc_buf *b, const bc_req *r, const char *k, const char *v)
{
    size_t kl = strlen(k), vl = strlen(v);
    put_header(b, r->opcode, ST_OK, kl, 0, kl + vl, r->opaque, 0);
    buf_append(b, k, kl);
    buf_append(b, v, vl);
}

/* General statistics of this gateway, then the empty terminating packet; the cluster's
 * item counts are kumostat's business. */
static void cmd_stat(binconn *c, const bc_req *r)
{
    bc_buf *b = conn_reply_buf(c, r);
    if (r->keylen) {
        put_error(b, r->opcode, ST_NOT_FOUND, r->opaque);
        return;
    }
    binconn_listener *l = c->l;
    char v[32];
    snprintf(v, sizeof v, "%ld", (long)getpid());
    put_stat(b, r, "pid", v);
    snprintf(v, sizeof v, "%ld", (long)(ev_now(l->loop) - l->started));
    put_stat(b, r, "uptime", v);
    snprintf(v, sizeof v, "%lu", (unsigned long)gateway_now(l->gw));
    put_stat(b, r, "time", v);
    put_stat(b, r, "version", BC_VERSION);
    snprintf(v, sizeof v, "%u", l->nconns);
    put_stat(b, r, "curr_connections", v);
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
static void conn_dispatch(binconn *c, const uint8_t *p, size_t bodylen)
{
    bc_req r = {
        .opcode = p[1],
        .opaque = get_be32(p + 12),
        .cas = get_be64(p + 16),
        .extlen = p[4],
        .keylen = get_be16(p + 2),
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
    if (!ext_ok || !key_ok || r.keylen > BC_KEY_MAX || (!op->value && r.valuelen)) {
        conn_error(c, &r, ST_EINVAL);
        return;
    }
    op->h(c, &r);
}

/* ------------------------------------------------------------------ connection */

static void conn_close(binconn *c)
{
    if (c->dead)
        return;
    binconn_listener *l = c->l;
    c->dead = true;
    l->nconns--;
    ev_io_stop(l->loop, &c->rio);
    ev_io_stop(l->loop, &c->wio);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    /* completed replies go; pending slots stay with their requests (slot_alive) */
    for (bc_slot *s = c->head, *n; s; s = n) {
        n = s->next;
        s->next = NULL;
        if (s->done)
            slot_release(l, s);
    }
    c->head = c->tail = NULL;
    free(c->in.p);
    free(c->out.p);
    c->in = (bc_buf){0};
    c->out = (bc_buf){0};
    conn_maybe_free(c);
}

static void conn_set_state(binconn *c, enum bc_state st)
{
    c->state = st;
    if (st == BC_DRAIN) {
        /* nothing more is read; conn_flush closes once the FIFO and output are empty */
        if (c->reading) {
            ev_io_stop(c->l->loop, &c->rio);
            c->reading = false;
        }
        conn_mark_dirty(c);
    }
}

static bool conn_overloaded(const binconn *c)
{
    return c->nslots >= BC_MAX_SLOTS || c->out.len - c->outpos >= BC_OUT_HIGH;
}

/* Frame and dispatch every complete request in the input buffer. */
static void conn_process(binconn *c)
{
    binconn_listener *l = c->l;
    size_t pos = 0;
    size_t body_max = l->cfg.item_size_max + BC_BODY_OVERHEAD;
    while (!c->dead && pos < c->in.len) {
        const uint8_t *p = (const uint8_t *)c->in.p + pos;
        size_t avail = c->in.len - pos;
        if (c->state == BC_SWALLOW) {
            size_t d = avail < c->swallow ? avail : c->swallow;
            pos += d;
            c->swallow -= d;
            if (c->swallow == 0)
                conn_set_state(c, BC_READ);
            continue;
        }
        if (c->state != BC_READ)
            break;
        if (conn_overloaded(c)) {
            c->paused = true;   /* resumed by conn_flush once replies drain */
            break;
        }
        if (avail < BC_HEADER_LEN) {
            c->need = BC_HEADER_LEN;
            break;
        }
        if (p[0] != BC_MAGIC_REQ) {
            /* not a binary request: nothing after it can be framed, so stop reading
             * and close once earlier replies are out */
            log_debug("binary: bad magic 0x%02x, closing", p[0]);
            conn_set_state(c, BC_DRAIN);
            break;
        }
        size_t bodylen = get_be32(p + 8);
        if (bodylen > body_max) {
            /* never buffer it: answer now and drop the body as it arrives */
            bc_req r = {.opcode = p[1], .opaque = get_be32(p + 12)};
            conn_error(c, &r, is_store_op(p[1]) ? ST_TOO_LARGE : ST_EINVAL);
            pos += BC_HEADER_LEN;
            c->swallow = bodylen;
            c->need = 0;
            if (bodylen)
                conn_set_state(c, BC_SWALLOW);
            continue;
        }
        if (avail < BC_HEADER_LEN + bodylen) {
            c->need = BC_HEADER_LEN + bodylen;
            break;
        }
        c->need = 0;
        conn_dispatch(c, p, bodylen);
        pos += BC_HEADER_LEN + bodylen;
    }
    if (c->dead)
        return;
    if (c->state == BC_DRAIN)
        pos = c->in.len;              /* input after quit / EOF / garbage is ignored */
    if (pos) {
        memmove(c->in.p, c->in.p + pos, c->in.len - pos);
        c->in.len -= pos;
    }
    if (c->need == 0)
        buf_shrink(&c->in, BC_IN_INITIAL);
}

/* Write what is ready; decide on the write watcher, draining close and resume. */
static void conn_flush(binconn *c)
{
    binconn_listener *l = c->l;
    while (c->outpos < c->out.len) {
        ssize_t n = write(c->fd, c->out.p + c->outpos, c->out.len - c->outpos);
        if (n > 0) {
            c->outpos += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            conn_close(c);            /* peer gone: its pending replies are dropped */
            return;
        }
    }
    if (c->outpos == c->out.len) {
        c->outpos = c->out.len = 0;
        buf_shrink(&c->out, BC_IN_INITIAL);
        if (c->writing) {
            ev_io_stop(l->loop, &c->wio);
            c->writing = false;
        }
        if (c->state == BC_DRAIN && !c->head) {
            conn_close(c);
            return;
        }
    } else if (!c->writing) {
        ev_io_start(l->loop, &c->wio);
        c->writing = true;
    }
    if (c->paused && !conn_overloaded(c)) {
        c->paused = false;
        conn_process(c);
        if (!c->dead && !c->paused && !c->reading &&
            (c->state == BC_READ || c->state == BC_SWALLOW)) {
            ev_io_start(l->loop, &c->rio);
            c->reading = true;
        }
    }
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    binconn *c = w->data;
    size_t want = c->need > c->in.len ? c->need - c->in.len : 0;
    buf_reserve(&c->in, want > BC_IN_MIN_FREE ? want : BC_IN_MIN_FREE);
    ssize_t n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c);
        return;
    }
    if (n == 0) {
        /* half-close: still answer what was asked */
        conn_process(c);
        if (!c->dead)
            conn_set_state(c, BC_DRAIN);
        return;
    }
    c->in.len += (size_t)n;
    conn_process(c);
    if (!c->dead && c->paused && c->reading) {
        ev_io_stop(loop, &c->rio);
        c->reading = false;
    }
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_flush(w->data);
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    binconn_listener *l = w->data;
    binconn *c;
    while ((c = l->dirty)) {
        l->dirty = c->dirty_next;
        c->in_dirty = false;
        if (c->dead)
            conn_maybe_free(c);
        else
            conn_flush(c);
    }
}

static void conn_open(binconn_listener *l, int fd)
{
    binconn *c = xcalloc(1, sizeof *c);
    c->l = l;
    c->fd = fd;
    c->state = BC_READ;
    c->in.p = xmalloc(BC_IN_INITIAL);
    c->in.cap = BC_IN_INITIAL;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->nconns++;
    ev_io_start(l->loop, &c->rio);
    c->reading = true;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    binconn_listener *l = w->data;
    for (int i = 0; i < BC_ACCEPT_BUDGET; i++) {
        int fd = accept(l->fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED)
                return;
            /* EMFILE etc.: a runtime fault, not a reason to die; wait a second */
            log_error("accept failed: %s", strerror(errno));
            ev_io_stop(loop, &l->aio);
            ev_timer_start(loop, &l->accept_pause);
            return;
        }
        if (daemon_socket_setup(fd) < 0) {
            close(fd);
            continue;
        }
        conn_open(l, fd);
    }
}

static void accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    binconn_listener *l = w->data;
    ev_io_start(loop, &l->aio);
}

binconn_listener *binconn_listen(struct ev_loop *loop, int fd, gateway *gw,
                                 const binconn_config *cfg)
{
    binconn_listener *l = xcalloc(1, sizeof *l);
    l->loop = loop;
    l->gw = gw;
    l->cfg = *cfg;
    l->fd = fd;
    l->started = ev_now(loop);
    ev_io_init(&l->aio, accept_cb, fd, EV_READ);
    l->aio.data = l;
    ev_timer_init(&l->accept_pause, accept_resume_cb, 1.0, 0.0);
    l->accept_pause.data = l;
    ev_prepare_init(&l->flush, flush_cb);
    l->flush.data = l;
    ev_prepare_start(loop, &l->flush);
    ev_io_start(loop, &l->aio);
    return l;
}

void binconn_listener_free(binconn_listener *l)
{
    if (!l)
        return;
    ev_io_stop(l->loop, &l->aio);
    ev_timer_stop(l->loop, &l->accept_pause);
    ev_prepare_stop(l->loop, &l->flush);
    close(l->fd);
    while (l->conns)
        conn_close(l->conns);
    /* connections still referenced by requests are freed when those complete, which
     * gateway_free (called first) guarantees; the flush list holds only dead ones now */
    while (l->dirty) {
        binconn *c = l->dirty;
        l->dirty = c->dirty_next;
        c->in_dirty = false;
        conn_maybe_free(c);
    }
    while (l->pool) {
        bc_slot *s = l->pool;
        l->pool = s->next;
        free(s->data.p);
        free(s->key.p);
        free(s);
    }
    free(l);
}
