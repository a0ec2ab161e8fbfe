/* textconn.c - memcached text protocol connections: parse, dispatch, in-order replies. */
#include "gateway/textconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/memtext.h"
#include "logic/daemon.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"

/* What `version` answers: memcached-shaped so libmemcached can parse it (DECISIONS.md §3),
 * naming the kumofs release we are compatible with. */
#define TC_VERSION "1.6.21-kumofs-0.4.13"
#define TC_VERSION_REPLY "VERSION " TC_VERSION "\r\n"
#define TC_RELATIVE_TIME_MAX 2592000  /* memcached: times up to 30 days are relative */

#define TC_IN_INITIAL (16 * 1024)     /* input buffer start size (memcached.md §1.1) */
#define TC_IN_MIN_FREE 4096           /* free space reserved before each read */
#define TC_BUF_SHRINK (1024 * 1024)   /* idle buffers above this go back to the start size */
#define TC_MAX_SLOTS 8192             /* replies outstanding before we stop reading */
#define TC_OUT_HIGH (8 * 1024 * 1024) /* unsent output before we stop reading */
#define TC_SLOT_POOL_MAX 65536
#define TC_SLOT_DATA_KEEP (16 * 1024)
#define TC_ACCEPT_BUDGET 64           /* accepts per listener event */

typedef struct tc_buf {
    char *p;
    size_t len, cap;
} tc_buf;

/* Connection states (one place changes them: conn_set_state). */
enum tc_state {
    TC_READ,       /* parsing requests */
    TC_SWALLOW,    /* discarding the data block of an oversize set */
    TC_SKIPLINE,   /* discarding the rest of an over-long command line */
    TC_DRAIN,      /* quit or EOF: no more input; close once every reply is sent */
};

/* What a pending slot will print when its operation completes. */
enum tc_slot_kind {
    SLOT_READY, SLOT_GET1, SLOT_GETN, SLOT_SET, SLOT_DELETE,
    SLOT_STORE,    /* add/replace/append/prepend: STORED / NOT_STORED */
    SLOT_CAS,      /* STORED / EXISTS / NOT_FOUND */
    SLOT_INCR,     /* the number / NOT_FOUND / CLIENT_ERROR non-numeric */
    SLOT_DECR,
    SLOT_TOUCH,    /* TOUCHED / NOT_FOUND */
    SLOT_GAT1,     /* gat/gats: touch first, then get (SLOT_GET1/GETN afterwards) */
    SLOT_GATN,
    SLOT_FLUSH,    /* OK */
};

/* memcached's general-purpose counters ("stats"), per listener.  Counted when the
 * outcome is known, noreply requests included. */
typedef struct tc_stats {
    uint64_t total_connections, curr_connections;
    uint64_t cmd_get, cmd_set, cmd_flush, cmd_touch;
    uint64_t get_hits, get_misses, get_expired, get_flushed;
    uint64_t delete_misses, delete_hits;
    uint64_t incr_misses, incr_hits, decr_misses, decr_hits;
    uint64_t cas_misses, cas_hits, cas_badval;
    uint64_t touch_hits, touch_misses;
    uint64_t total_items;
    uint64_t bytes_read, bytes_written;
} tc_stats;

typedef struct textconn textconn;

/* One reply position in a connection's FIFO.  A pending slot is also the ud of a gateway
 * request, so it lives until that request completes even if the connection dies. */
typedef struct tc_slot {
    struct tc_slot *next;
    textconn *conn;
    uint8_t kind;              /* enum tc_slot_kind */
    bool done;
    bool gets;                 /* print the CAS unique */
    bool gat;                  /* a gat/gats key: counted as a touch, not as a get */
    tc_buf data;               /* the reply, when completed before its turn */
} tc_slot;

struct textconn {
    textconn_listener *l;
    textconn *prev, *next;     /* live connections of the listener */
    textconn *dirty_next;      /* listener's flush list */
    int fd;
    ev_io rio, wio;
    enum tc_state state;
    bool reading, writing;     /* watchers active */
    bool paused;               /* too much outstanding: reading stopped until drained */
    bool in_dirty;
    bool dead;                 /* closed; freed when refs and in_dirty drop */
    unsigned refs;             /* pending slots (gateway requests in flight) */
    unsigned nslots;
    tc_buf in;                 /* unparsed input from offset 0 */
    size_t need;               /* bytes the parser asked for (0 unknown) */
    size_t swallow;            /* TC_SWALLOW: bytes still to discard */
    tc_buf out;                /* replies ready to write */
    size_t outpos;
    tc_slot *head, *tail;      /* reply FIFO */
};

struct textconn_listener {
    struct ev_loop *loop;
    gateway *gw;
    textconn_config cfg;
    int fd;
    ev_io aio;
    ev_timer accept_pause;     /* after EMFILE and friends */
    ev_prepare flush;          /* write every dirty connection once per loop iteration */
    textconn *conns;
    textconn *dirty;
    tc_slot *pool;
    size_t npool;
    memtext_request req;       /* parser output; large, so one per listener */
    tc_stats st;
    time_t started;
};

/* ------------------------------------------------------------------ buffers */

static void buf_reserve(tc_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void buf_append(tc_buf *b, const void *d, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void buf_shrink(tc_buf *b, size_t to)
{
    if (b->cap > TC_BUF_SHRINK && b->len <= to) {
        b->p = xrealloc(b->p, to);
        b->cap = to;
    }
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n" */
static void put_value(tc_buf *b, const char *key, size_t klen, const gateway_item *it,
                      bool with_cas, clocktime_t cas)
{
    buf_reserve(b, 6 + klen + 1 + 10 + 1 + 20 + 1 + 20 + 2 + it->len + 2);
    char *p = b->p + b->len;
    memcpy(p, "VALUE ", 6);
    p += 6;
    memcpy(p, key, klen);
    p += klen;
    *p++ = ' ';
    p = put_u64(p, it->flags);
    *p++ = ' ';
    p = put_u64(p, it->len);
    if (with_cas) {
        *p++ = ' ';
        p = put_u64(p, cas);
    }
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, it->data, it->len);
    p += it->len;
    *p++ = '\r';
    *p++ = '\n';
    b->len = (size_t)(p - b->p);
}

/* ------------------------------------------------------------------ slots */

static tc_slot *slot_new(textconn *c, int kind)
{
    textconn_listener *l = c->l;
    tc_slot *s = l->pool;
    if (s) {
        l->pool = s->next;
        l->npool--;
    } else {
        s = xcalloc(1, sizeof *s);
    }
    s->next = NULL;
    s->conn = c;
    s->kind = (uint8_t)kind;
    s->done = kind == SLOT_READY;
    s->gets = false;
    s->gat = false;
    s->data.len = 0;
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->nslots++;
    if (!s->done)
        c->refs++;
    return s;
}

static void slot_release(textconn_listener *l, tc_slot *s)
{
    if (l->npool >= TC_SLOT_POOL_MAX) {
        free(s->data.p);
        free(s);
        return;
    }
    if (s->data.cap > TC_SLOT_DATA_KEEP) {
        free(s->data.p);
        s->data.p = NULL;
        s->data.cap = 0;
    }
    s->next = l->pool;
    l->pool = s;
    l->npool++;
}

static void conn_mark_dirty(textconn *c)
{
    if (!c->in_dirty) {
        c->in_dirty = true;
        c->dirty_next = c->l->dirty;
        c->l->dirty = c;
    }
}

/* Where a completing slot writes: straight into the output when it is first in line
 * (the common case, saves a copy), else into its own buffer until its turn. */
static tc_buf *slot_target(tc_slot *s)
{
    return s == s->conn->head ? &s->conn->out : &s->data;
}

/* Move every completed slot at the head of the FIFO into the output. */
static void conn_advance(textconn *c)
{
    while (c->head && c->head->done) {
        tc_slot *h = c->head;
        c->head = h->next;
        if (!c->head)
            c->tail = NULL;
        if (h->data.len)
            buf_append(&c->out, h->data.p, h->data.len);
        c->nslots--;
        slot_release(c->l, h);
    }
    conn_mark_dirty(c);
}

static void conn_maybe_free(textconn *c)
{
    if (c->dead && c->refs == 0 && !c->in_dirty)
        free(c);
}

/* Start of a gateway callback: false (and the slot released) if the client is gone. */
static bool slot_alive(tc_slot *s)
{
    textconn *c = s->conn;
    if (!c->dead)
        return true;
    c->refs--;
    slot_release(c->l, s);
    conn_maybe_free(c);
    return false;
}

static void slot_complete(tc_slot *s)
{
    textconn *c = s->conn;
    s->done = true;
    c->refs--;
    if (s == c->head)
        conn_advance(c);
}

/* A reply that is known now: appended directly when nothing is pending before it. */
static void conn_reply(textconn *c, const char *str, size_t len)
{
    if (!c->head)
        buf_append(&c->out, str, len);
    else
        buf_append(&slot_new(c, SLOT_READY)->data, str, len);
    conn_mark_dirty(c);
}

#define conn_reply_lit(c, s) conn_reply((c), s, sizeof(s) - 1)

/* ------------------------------------------------------------------ completions */

static void get_done(void *ud, int status, const gateway_value *v, const char *key, size_t klen)
{
    tc_slot *s = ud;
    textconn_listener *l = s->conn->l;   /* outlives every request (textconn.h) */
    gateway_item it;
    bool hit = status == GATEWAY_OK && gateway_item_decode(l->gw, v, &it);
    if (!s->gat) {
        if (hit)
            l->st.get_hits++;
        else
            l->st.get_misses++;
    }
    if (!slot_alive(s))
        return;
    tc_buf *b = slot_target(s);
    if (hit)
        put_value(b, key, klen, &it, s->gets, v->ct);
    if (s->kind == SLOT_GET1) {
        /* a multi-key get omits failures; a single key says so (memcached.md §2.3) */
        if (status == GATEWAY_FAILED)
            buf_append(b, "SERVER_ERROR get failed\r\n", 25);
        else
            buf_append(b, "END\r\n", 5);
    }
    slot_complete(s);
}

static void store_done(void *ud, int status, clocktime_t ct)
{
    tc_slot *s = ud;
    textconn_listener *l = s->conn->l;
    if (s->kind == SLOT_DELETE) {
        if (status == GATEWAY_OK)
            l->st.delete_hits++;
        else
            l->st.delete_misses++;
    } else if (status == GATEWAY_OK) {
        l->st.total_items++;
    }
    if (!slot_alive(s))
        return;
    static const char *const set_reply[] = {
        [GATEWAY_OK] = "STORED\r\n", [GATEWAY_MISS] = "NOT_FOUND\r\n",
        [GATEWAY_EXISTS] = "EXISTS\r\n", [GATEWAY_NOT_FOUND] = "NOT_FOUND\r\n",
        [GATEWAY_FAILED] = "SERVER_ERROR store failed\r\n",
    };
    static const char *const delete_reply[] = {
        [GATEWAY_OK] = "DELETED\r\n", [GATEWAY_MISS] = "NOT_FOUND\r\n",
        [GATEWAY_EXISTS] = "NOT_FOUND\r\n", [GATEWAY_NOT_FOUND] = "NOT_FOUND\r\n",
        [GATEWAY_FAILED] = "SERVER_ERROR delete failed\r\n",
    };
    const char *r = (s->kind == SLOT_DELETE ? delete_reply : set_reply)[status];
    buf_append(slot_target(s), r, strlen(r));
    slot_complete(s);
}

/* Count an update's outcome in the stats (also for noreply requests). */
static void count_update(textconn_listener *l, int kind, int status)
{
    tc_stats *st = &l->st;
    bool ok = status == GATEWAY_OK, nf = status == GATEWAY_NOT_FOUND;
    switch (kind) {
    case SLOT_STORE:
        st->total_items += ok;
        break;
    case SLOT_CAS:
        st->total_items += ok;
        st->cas_hits += ok;
        st->cas_misses += nf;
        st->cas_badval += status == GATEWAY_EXISTS;
        break;
    case SLOT_INCR:
        st->incr_hits += ok;
        st->incr_misses += nf;
        break;
    case SLOT_DECR:
        st->decr_hits += ok;
        st->decr_misses += nf;
        break;
    case SLOT_TOUCH: case SLOT_GAT1: case SLOT_GATN:
        st->touch_hits += ok;
        st->touch_misses += !ok;
        break;
    }
}

/* noreply updates: the listener is the ud, only the stats learn the outcome */
#define TC_NOREPLY_CB(name, kind)                                                       \
    static void name(void *ud, int status, clocktime_t ct, const char *v, size_t n)     \
    {                                                                                   \
        count_update(ud, kind, status);                                                 \
    }
TC_NOREPLY_CB(noreply_store_done, SLOT_STORE)
TC_NOREPLY_CB(noreply_cas_done, SLOT_CAS)
TC_NOREPLY_CB(noreply_incr_done, SLOT_INCR)
TC_NOREPLY_CB(noreply_decr_done, SLOT_DECR)
TC_NOREPLY_CB(noreply_touch_done, SLOT_TOUCH)

static void update_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    tc_slot *s = ud;
    textconn_listener *l = s->conn->l;
    count_update(l, s->kind, status);
    if (!slot_alive(s))
        return;
    const char *r = NULL;
    switch (s->kind) {
    case SLOT_STORE:   /* memcached: add/replace/append/prepend answer only these two */
        r = status == GATEWAY_OK ? "STORED\r\n"
            : status == GATEWAY_FAILED ? "SERVER_ERROR store failed\r\n" : "NOT_STORED\r\n";
        break;
    case SLOT_CAS:
        r = status == GATEWAY_OK ? "STORED\r\n" : status == GATEWAY_EXISTS ? "EXISTS\r\n"
            : status == GATEWAY_NOT_FOUND ? "NOT_FOUND\r\n"
            : status == GATEWAY_NOT_STORED ? "NOT_STORED\r\n" : "SERVER_ERROR store failed\r\n";
        break;
    case SLOT_INCR: case SLOT_DECR:
        if (status == GATEWAY_OK) {
            tc_buf *b = slot_target(s);
            buf_append(b, value, vlen);
            buf_append(b, "\r\n", 2);
        } else {
            r = status == GATEWAY_NOT_FOUND ? "NOT_FOUND\r\n"
                : status == GATEWAY_NON_NUMERIC
                ? "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
                : "SERVER_ERROR incr/decr failed\r\n";
        }
        break;
    case SLOT_TOUCH:
        r = status == GATEWAY_OK ? "TOUCHED\r\n" : status == GATEWAY_NOT_FOUND ? "NOT_FOUND\r\n"
            : "SERVER_ERROR touch failed\r\n";
        break;
    case SLOT_GAT1: case SLOT_GATN:
        if (status == GATEWAY_OK) {
            /* touched: now fetch it like get/gets; the key waits in s->data (the get
             * copies it before returning, and its completion is always later) */
            s->kind = s->kind == SLOT_GAT1 ? SLOT_GET1 : SLOT_GETN;
            gateway_get(l->gw, s->data.p, s->data.len, get_done, s);
            s->data.len = 0;
            return;
        }
        s->data.len = 0;
        if (s->kind == SLOT_GAT1)
            r = status == GATEWAY_FAILED ? "SERVER_ERROR get failed\r\n" : "END\r\n";
        break;
    }
    if (r)
        buf_append(slot_target(s), r, strlen(r));
    slot_complete(s);
}

static void flush_done(void *ud, int status, clocktime_t ct)
{
    tc_slot *s = ud;
    if (!slot_alive(s))
        return;
    const char *r = status == GATEWAY_OK ? "OK\r\n" : "SERVER_ERROR flush failed\r\n";
    buf_append(slot_target(s), r, strlen(r));
    slot_complete(s);
}

/* ------------------------------------------------------------------ commands */

typedef void (*tc_handler)(textconn *c, const memtext_request *req);

static void cmd_get(textconn *c, const memtext_request *req)
{
    gateway *gw = c->l->gw;
    bool gets = req->cmd == MEMTEXT_GETS;
    c->l->st.cmd_get += req->nkeys;
    if (req->nkeys == 1) {
        tc_slot *s = slot_new(c, SLOT_GET1);
        s->gets = gets;
        gateway_get(gw, req->keys[0].ptr, req->keys[0].len, get_done, s);
        return;
    }
    /* one slot per key keeps the VALUE blocks in request order whatever order the
     * servers answer in; END follows them */
    for (unsigned i = 0; i < req->nkeys; i++) {
        tc_slot *s = slot_new(c, SLOT_GETN);
        s->gets = gets;
        gateway_get(gw, req->keys[i].ptr, req->keys[i].len, get_done, s);
    }
    conn_reply_lit(c, "END\r\n");
}

static void cmd_set(textconn *c, const memtext_request *req)
{
    gateway *gw = c->l->gw;
    uint8_t hdr[GATEWAY_ITEM_HEADER_LEN];
    gateway_item_header(gw, req->flags, req->exptime, hdr);
    c->l->st.cmd_set++;
    unsigned op = req->noreply ? SET_OP_SET_ASYNC : SET_OP_SET;
    tc_slot *s = req->noreply ? NULL : slot_new(c, SLOT_SET);
    gateway_set(gw, req->keys[0].ptr, req->keys[0].len, op, req->cas, GATEWAY_META_ITEM, hdr,
                sizeof hdr, req->data, req->datalen, s ? store_done : NULL, s);
}

/* add/replace/append/prepend/cas/incr/decr/touch: read-modify-write on the key's
 * coordinator (DECISIONS.md §3), so cas on a missing key is NOT_FOUND and concurrent
 * incr never lose an update. */
static void cmd_update(textconn *c, const memtext_request *req)
{
    textconn_listener *l = c->l;
    unsigned op;
    int kind;
    gateway_update_cb nrcb;
    const void *data = req->data;
    size_t datalen = req->datalen;
    uint64_t arg = 0;
    switch (req->cmd) {
    case MEMTEXT_ADD:     op = GATEWAY_ADD; kind = SLOT_STORE; nrcb = noreply_store_done; break;
    case MEMTEXT_REPLACE: op = GATEWAY_REPLACE; kind = SLOT_STORE; nrcb = noreply_store_done; break;
    case MEMTEXT_APPEND:  op = GATEWAY_APPEND; kind = SLOT_STORE; nrcb = noreply_store_done; break;
    case MEMTEXT_PREPEND: op = GATEWAY_PREPEND; kind = SLOT_STORE; nrcb = noreply_store_done; break;
    case MEMTEXT_CAS:
        op = GATEWAY_CAS; kind = SLOT_CAS; nrcb = noreply_cas_done; arg = req->cas;
        break;
    case MEMTEXT_INCR: case MEMTEXT_DECR:
        op = req->cmd == MEMTEXT_INCR ? GATEWAY_INCR : GATEWAY_DECR;
        kind = req->cmd == MEMTEXT_INCR ? SLOT_INCR : SLOT_DECR;
        nrcb = req->cmd == MEMTEXT_INCR ? noreply_incr_done : noreply_decr_done;
        arg = req->delta;
        data = NULL;
        datalen = 0;
        break;
    default:              /* touch */
        op = GATEWAY_TOUCH; kind = SLOT_TOUCH; nrcb = noreply_touch_done;
        data = NULL;
        datalen = 0;
        break;
    }
    if (kind == SLOT_STORE || kind == SLOT_CAS)
        l->st.cmd_set++;
    else if (kind == SLOT_TOUCH)
        l->st.cmd_touch++;
    /* the parser leaves flags 0 for incr/decr/touch; append/prepend send theirs but the
     * server keeps the item's own (memcached ignores them) */
    uint32_t flags = kind == SLOT_TOUCH || kind == SLOT_INCR || kind == SLOT_DECR ? 0 : req->flags;
    int64_t exptime = kind == SLOT_INCR || kind == SLOT_DECR ? 0 : req->exptime;
    if (req->noreply) {
        gateway_update(l->gw, op, req->keys[0].ptr, req->keys[0].len, flags, exptime, data,
                       datalen, arg, true, nrcb, l);
        return;
    }
    tc_slot *s = slot_new(c, kind);
    gateway_update(l->gw, op, req->keys[0].ptr, req->keys[0].len, flags, exptime, data,
                   datalen, arg, false, update_done, s);
}

/* gat/gats <exptime> <key>*: touch each key, then return it like get/gets (a touch that
 * finds nothing is a miss). */
static void cmd_gat(textconn *c, const memtext_request *req)
{
    textconn_listener *l = c->l;
    l->st.cmd_get += req->nkeys;
    l->st.cmd_touch += req->nkeys;
    for (unsigned i = 0; i < req->nkeys; i++) {
        tc_slot *s = slot_new(c, req->nkeys == 1 ? SLOT_GAT1 : SLOT_GATN);
        s->gets = req->cmd == MEMTEXT_GATS;
        s->gat = true;
        buf_append(&s->data, req->keys[i].ptr, req->keys[i].len);
        gateway_update(l->gw, GATEWAY_TOUCH, req->keys[i].ptr, req->keys[i].len, 0,
                       req->exptime, NULL, 0, 0, false, update_done, s);
    }
    if (req->nkeys != 1)
        conn_reply_lit(c, "END\r\n");
}

/* flush_all [delay] [noreply]: every server invalidates what it holds (now or later). */
static void cmd_flush_all(textconn *c, const memtext_request *req)
{
    textconn_listener *l = c->l;
    l->st.cmd_flush++;
    int64_t d = req->has_delay ? req->exptime : 0;
    if (d > TC_RELATIVE_TIME_MAX) {         /* memcached: an absolute unix time */
        int64_t now = gateway_now(l->gw);
        d = d > now ? d - now : 0;
    }
    if (d < 0)
        d = 0;
    tc_slot *s = req->noreply ? NULL : slot_new(c, SLOT_FLUSH);
    gateway_flush_all(l->gw, (uint32_t)d, s ? flush_done : NULL, s);
}

static void cmd_verbosity(textconn *c, const memtext_request *req)
{
    /* accepted and ignored: the log level is the -v flag */
    if (!req->noreply)
        conn_reply_lit(c, "OK\r\n");
}

static void stat_u64(tc_buf *b, const char *name, uint64_t v)
{
    char line[96];
    int n = snprintf(line, sizeof line, "STAT %s %llu\r\n", name, (unsigned long long)v);
    buf_append(b, line, (size_t)n);
}

static void stat_str(tc_buf *b, const char *name, const char *v)
{
    char line[128];
    int n = snprintf(line, sizeof line, "STAT %s %s\r\n", name, v);
    buf_append(b, line, (size_t)n);
}

/* memcached's general stats, the field names and order of memcached 1.6 (the parts a
 * gateway can know; curr_items is not collected from the servers and reads 0). */
static void stats_general(textconn_listener *l, tc_buf *b)
{
    const tc_stats *st = &l->st;
    time_t now = time(NULL);
    char tmp[64];
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    getrusage(RUSAGE_SELF, &ru);
    stat_u64(b, "pid", (uint64_t)getpid());
    stat_u64(b, "uptime", (uint64_t)(now - l->started));
    stat_u64(b, "time", (uint64_t)now);
    stat_str(b, "version", TC_VERSION);
    stat_u64(b, "pointer_size", sizeof(void *) * 8);
    snprintf(tmp, sizeof tmp, "%ld.%06ld", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
    stat_str(b, "rusage_user", tmp);
    snprintf(tmp, sizeof tmp, "%ld.%06ld", (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
    stat_str(b, "rusage_system", tmp);
    stat_u64(b, "max_connections", 0);
    stat_u64(b, "curr_connections", st->curr_connections);
    stat_u64(b, "total_connections", st->total_connections);
    stat_u64(b, "connection_structures", st->curr_connections);
    stat_u64(b, "cmd_get", st->cmd_get);
    stat_u64(b, "cmd_set", st->cmd_set);
    stat_u64(b, "cmd_flush", st->cmd_flush);
    stat_u64(b, "cmd_touch", st->cmd_touch);
    stat_u64(b, "get_hits", st->get_hits);
    stat_u64(b, "get_misses", st->get_misses);
    stat_u64(b, "get_expired", st->get_expired);
    stat_u64(b, "get_flushed", st->get_flushed);
    stat_u64(b, "delete_misses", st->delete_misses);
    stat_u64(b, "delete_hits", st->delete_hits);
    stat_u64(b, "incr_misses", st->incr_misses);
    stat_u64(b, "incr_hits", st->incr_hits);
    stat_u64(b, "decr_misses", st->decr_misses);
    stat_u64(b, "decr_hits", st->decr_hits);
    stat_u64(b, "cas_misses", st->cas_misses);
    stat_u64(b, "cas_hits", st->cas_hits);
    stat_u64(b, "cas_badval", st->cas_badval);
    stat_u64(b, "touch_hits", st->touch_hits);
    stat_u64(b, "touch_misses", st->touch_misses);
    stat_u64(b, "auth_cmds", 0);
    stat_u64(b, "auth_errors", 0);
    stat_u64(b, "bytes_read", st->bytes_read);
    stat_u64(b, "bytes_written", st->bytes_written);
    stat_u64(b, "limit_maxbytes", 0);
    stat_u64(b, "threads", 1);
    stat_u64(b, "curr_items", 0);
    stat_u64(b, "total_items", st->total_items);
    stat_u64(b, "evictions", 0);
    buf_append(b, "END\r\n", 5);
}

static bool args_is(const memtext_request *req, const char *w)
{
    size_t n = strlen(w);
    return req->argslen == n && memcmp(req->args, w, n) == 0;
}

/* stats [reset|settings|items|slabs|sizes|conns]; other sub-stats are ERROR as in
 * memcached 1.6. */
static void cmd_stats(textconn *c, const memtext_request *req)
{
    textconn_listener *l = c->l;
    if (req->argslen == 0) {
        tc_buf b = {0};
        stats_general(l, &b);
        conn_reply(c, b.p, b.len);
        free(b.p);
    } else if (args_is(req, "reset")) {
        uint64_t cur = l->st.curr_connections, tot = l->st.total_connections;
        memset(&l->st, 0, sizeof l->st);
        l->st.curr_connections = cur;
        l->st.total_connections = tot;
        conn_reply_lit(c, "RESET\r\n");
    } else if (args_is(req, "settings") || args_is(req, "items") || args_is(req, "slabs") ||
               args_is(req, "sizes") || args_is(req, "conns")) {
        conn_reply_lit(c, "END\r\n");
    } else {
        conn_reply_lit(c, "ERROR\r\n");
    }
}

static void cmd_delete(textconn *c, const memtext_request *req)
{
    tc_slot *s = req->noreply ? NULL : slot_new(c, SLOT_DELETE);
    gateway_delete(c->l->gw, req->keys[0].ptr, req->keys[0].len, req->noreply,
                   s ? store_done : NULL, s);
}

static void cmd_version(textconn *c, const memtext_request *req)
{
    conn_reply_lit(c, TC_VERSION_REPLY);
}

static void conn_set_state(textconn *c, enum tc_state st);

static void cmd_quit(textconn *c, const memtext_request *req)
{
    conn_set_state(c, TC_DRAIN);
}

/* A command without a handler (none today): memcached's answer to an unknown command. */
static void cmd_unsupported(textconn *c, const memtext_request *req)
{
    if (!req->noreply)
        conn_reply_lit(c, "ERROR\r\n");
}

static const tc_handler tc_handlers[] = {
    [MEMTEXT_GET] = cmd_get,
    [MEMTEXT_GETS] = cmd_get,
    [MEMTEXT_GAT] = cmd_gat,
    [MEMTEXT_GATS] = cmd_gat,
    [MEMTEXT_SET] = cmd_set,
    [MEMTEXT_ADD] = cmd_update,
    [MEMTEXT_REPLACE] = cmd_update,
    [MEMTEXT_APPEND] = cmd_update,
    [MEMTEXT_PREPEND] = cmd_update,
    [MEMTEXT_CAS] = cmd_update,
    [MEMTEXT_DELETE] = cmd_delete,
    [MEMTEXT_INCR] = cmd_update,
    [MEMTEXT_DECR] = cmd_update,
    [MEMTEXT_TOUCH] = cmd_update,
    [MEMTEXT_FLUSH_ALL] = cmd_flush_all,
    [MEMTEXT_STATS] = cmd_stats,
    [MEMTEXT_VERSION] = cmd_version,
    [MEMTEXT_VERBOSITY] = cmd_verbosity,
    [MEMTEXT_QUIT] = cmd_quit,
};

/* ------------------------------------------------------------------ connection */

static void conn_close(textconn *c)
{
    if (c->dead)
        return;
    textconn_listener *l = c->l;
    c->dead = true;
    l->st.curr_connections--;
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
    for (tc_slot *s = c->head, *n; s; s = n) {
        n = s->next;
        s->next = NULL;
        if (s->done)
            slot_release(l, s);
    }
    c->head = c->tail = NULL;
    free(c->in.p);
    free(c->out.p);
    c->in = (tc_buf){0};
    c->out = (tc_buf){0};
    conn_maybe_free(c);
}

static void conn_set_state(textconn *c, enum tc_state st)
{
    c->state = st;
    if (st == TC_DRAIN) {
        /* nothing more is read; conn_flush closes once the FIFO and output are empty */
        if (c->reading) {
            ev_io_stop(c->l->loop, &c->rio);
            c->reading = false;
        }
        conn_mark_dirty(c);
    }
}

static bool conn_overloaded(const textconn *c)
{
    return c->nslots >= TC_MAX_SLOTS || c->out.len - c->outpos >= TC_OUT_HIGH;
}

/* Parse and dispatch every complete request in the input buffer. */
static void conn_process(textconn *c)
{
    textconn_listener *l = c->l;
    size_t pos = 0;
    while (!c->dead && pos < c->in.len) {
        const char *p = c->in.p + pos;
        size_t avail = c->in.len - pos;
        if (c->state == TC_SWALLOW) {
            size_t d = avail < c->swallow ? avail : c->swallow;
            pos += d;
            c->swallow -= d;
            if (c->swallow == 0)
                conn_set_state(c, TC_READ);
            continue;
        }
        if (c->state == TC_SKIPLINE) {
            size_t n = memtext_skip_line(p, avail);
            pos += n ? n : avail;
            if (n)
                conn_set_state(c, TC_READ);
            continue;
        }
        if (c->state != TC_READ)
            break;
        if (conn_overloaded(c)) {
            c->paused = true;   /* resumed by conn_flush once replies drain */
            break;
        }
        size_t consumed = 0, need = 0;
        const char *errmsg = NULL;
        enum memtext_status st = memtext_parse(p, avail, l->cfg.item_size_max, &l->req,
                                               &consumed, &need, &errmsg);
        if (st == MEMTEXT_NEED_MORE) {
            c->need = need;
            break;
        }
        c->need = 0;
        if (st == MEMTEXT_OK) {
            enum memtext_cmd cmd = l->req.cmd;
            tc_handler h = (size_t)cmd < sizeof tc_handlers / sizeof tc_handlers[0]
                           ? tc_handlers[cmd] : NULL;
            (h ? h : cmd_unsupported)(c, &l->req);
            pos += consumed;
            continue;
        }
        /* MEMTEXT_ERROR: answer and carry on after the bad input.  As memcached's
         * out_string: once the line was understood as noreply, errors stay silent too
         * (memtext.h; memccapable's "verbosity noreply" expects exactly that). */
        if (!l->req.noreply) {
            conn_reply(c, errmsg, strlen(errmsg));
            conn_reply_lit(c, "\r\n");
        }
        if (consumed == 0) {          /* a parser that cannot skip: give up on the client */
            conn_set_state(c, TC_DRAIN);
            break;
        }
        if (need > 0) {
            c->swallow = need;        /* oversize value: drop its data block as it comes */
            conn_set_state(c, TC_SWALLOW);
        } else if (!memchr(p, '\n', consumed)) {
            conn_set_state(c, TC_SKIPLINE);
        }
        pos += consumed;
    }
    if (c->dead)
        return;
    if (c->state == TC_DRAIN)
        pos = c->in.len;              /* input after quit / EOF is ignored */
    if (pos) {
        memmove(c->in.p, c->in.p + pos, c->in.len - pos);
        c->in.len -= pos;
    }
    if (c->need == 0)
        buf_shrink(&c->in, TC_IN_INITIAL);
}

/* Write what is ready; decide on the write watcher, draining close and resume. */
static void conn_flush(textconn *c)
{
    textconn_listener *l = c->l;
    while (c->outpos < c->out.len) {
        ssize_t n = write(c->fd, c->out.p + c->outpos, c->out.len - c->outpos);
        if (n > 0) {
            c->outpos += (size_t)n;
            l->st.bytes_written += (size_t)n;
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
        buf_shrink(&c->out, TC_IN_INITIAL);
        if (c->writing) {
            ev_io_stop(l->loop, &c->wio);
            c->writing = false;
        }
        if (c->state == TC_DRAIN && !c->head) {
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
            (c->state == TC_READ || c->state == TC_SWALLOW || c->state == TC_SKIPLINE)) {
            ev_io_start(l->loop, &c->rio);
            c->reading = true;
        }
    }
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    textconn *c = w->data;
    size_t want = c->need > c->in.len ? c->need - c->in.len : 0;
    buf_reserve(&c->in, want > TC_IN_MIN_FREE ? want : TC_IN_MIN_FREE);
    ssize_t n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c);
        return;
    }
    if (n == 0) {
        /* half-close: still answer what was asked (unlike the original, memcached.md §2.4) */
        conn_process(c);
        if (!c->dead)
            conn_set_state(c, TC_DRAIN);
        return;
    }
    c->in.len += (size_t)n;
    c->l->st.bytes_read += (size_t)n;
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
    textconn_listener *l = w->data;
    textconn *c;
    while ((c = l->dirty)) {
        l->dirty = c->dirty_next;
        c->in_dirty = false;
        if (c->dead)
            conn_maybe_free(c);
        else
            conn_flush(c);
    }
}

static void conn_open(textconn_listener *l, int fd)
{
    textconn *c = xcalloc(1, sizeof *c);
    c->l = l;
    c->fd = fd;
    c->state = TC_READ;
    c->in.p = xmalloc(TC_IN_INITIAL);
    c->in.cap = TC_IN_INITIAL;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->st.curr_connections++;
    l->st.total_connections++;
    ev_io_start(l->loop, &c->rio);
    c->reading = true;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    textconn_listener *l = w->data;
    for (int i = 0; i < TC_ACCEPT_BUDGET; i++) {
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
    textconn_listener *l = w->data;
    ev_io_start(loop, &l->aio);
}

textconn_listener *textconn_listen(struct ev_loop *loop, int fd, gateway *gw,
                                   const textconn_config *cfg)
{
    textconn_listener *l = xcalloc(1, sizeof *l);
    l->loop = loop;
    l->gw = gw;
    l->cfg = *cfg;
    l->fd = fd;
    l->started = time(NULL);
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

void textconn_listener_free(textconn_listener *l)
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
        textconn *c = l->dirty;
        l->dirty = c->dirty_next;
        c->in_dirty = false;
        conn_maybe_free(c);
    }
    while (l->pool) {
        tc_slot *s = l->pool;
        l->pool = s->next;
        free(s->data.p);
        free(s);
    }
    free(l);
}
