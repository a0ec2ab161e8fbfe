/* textconn.c - memcached text protocol: parse, dispatch and reply formatting (the
 * connection machinery is frontconn.c). */
#include "gateway/textconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/frontconn.h"
#include "gateway/memtext.h"
#include "gateway/metaconn.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"

#define TXT_VERSION_REPLY "VERSION " GWSTATS_VERSION "\r\n"


/* What a pending slot will print when its operation completes. */
enum txt_slot_kind {
    SLOT_GET1, SLOT_GETN, SLOT_SET, SLOT_DELETE,
    SLOT_STORE,    /* add/replace/append/prepend: STORED / NOT_STORED */
    SLOT_CAS,      /* STORED / EXISTS / NOT_FOUND */
    SLOT_INCR,     /* the number / NOT_FOUND / CLIENT_ERROR non-numeric */
    SLOT_DECR,
    SLOT_TOUCH,    /* TOUCHED / NOT_FOUND */
    SLOT_GAT1,     /* gat/gats: touch first, then get (SLOT_GET1/GETN afterwards) */
    SLOT_GATN,
    SLOT_FLUSH,    /* OK */
    SLOT_TOOBIG,   /* set refused as too large: its key deleted, then the error */
};

/* A pending reply (frontconn.h); it is also the ud of its gateway request. */
typedef struct txt_slot {
    frontconn_slot base;       /* first: frontconn hands it back as frontconn_slot */
    uint8_t kind;              /* enum txt_slot_kind */
    bool gets;                 /* print the CAS unique */
    bool gat;                  /* a gat/gats key: counted as a touch, not as a get */
} txt_slot;

/* A get/gets/gat/gats line whose keys are read as they arrive (memtext MEMTEXT_STREAM):
 * no key count or line length limit, memory bounded by the replies in flight. */
typedef struct txt_conn {
    bool streaming;
    uint8_t cmd;               /* enum memtext_cmd */
    int64_t exptime;           /* gat/gats */
} txt_conn;

#define TXT_STREAM_BUDGET 64    /* keys per parse call: back-pressure is checked between */

struct textconn_listener {
    metaconn_env env;          /* first: the meta commands read it from the ud */
    frontconn_listener *fl;
    gateway *gw;
    textconn_config cfg;
    memtext_request req;       /* parser output; large, so one per listener */
};

static textconn_listener *conn_listener(frontconn *c)
{
    return frontconn_ud(c);
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
static void put_value(nbuf *b, const char *key, size_t klen, const gateway_item *it,
                      bool with_cas, clocktime_t cas)
{
    nbuf_reserve(b, 6 + klen + 1 + 10 + 1 + 20 + 1 + 20 + 2 + it->len + 2);
    char *p = b->data + b->len;
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
    b->len = (size_t)(p - b->data);
}

/* ------------------------------------------------------------------ slots */

static txt_slot *slot_new(frontconn *c, int kind)
{
    txt_slot *s = (txt_slot *)frontconn_slot_new(c);
    s->kind = (uint8_t)kind;
    s->gets = false;
    s->gat = false;
    return s;
}

static textconn_listener *slot_listener(txt_slot *s)
{
    return frontconn_ud(s->base.conn);   /* outlives every request (textconn.h) */
}

#define slot_alive(s) frontconn_slot_alive(&(s)->base)
#define slot_target(s) frontconn_slot_target(&(s)->base)
#define slot_complete(s) frontconn_slot_complete(&(s)->base)

/* A reply that is known now: straight to the output when nothing is pending before it. */
static void conn_reply(frontconn *c, const char *str, size_t len)
{
    nbuf_append(frontconn_reply_buf(c), str, len);
}

#define conn_reply_lit(c, s) conn_reply((c), s, sizeof(s) - 1)

/* ------------------------------------------------------------------ completions */

static void get_done(void *ud, int status, const gateway_value *v, const char *key, size_t klen)
{
    txt_slot *s = ud;
    textconn_listener *l = slot_listener(s);
    gwstats *st = frontconn_stats(s->base.conn);
    gateway_item it;
    bool hit = status == GATEWAY_OK && gateway_item_decode(l->gw, v, &it);
    if (!s->gat) {
        if (hit)
            st->get_hits++;
        else
            st->get_misses++;
    }
    if (!slot_alive(s))
        return;
    nbuf *b = slot_target(s);
    if (hit)
        put_value(b, key, klen, &it, s->gets, it.cas);
    if (s->kind == SLOT_GET1) {
        /* a multi-key get omits failures; a single key says so (memcached.md §2.3) */
        if (status == GATEWAY_FAILED)
            nbuf_append(b, "SERVER_ERROR get failed\r\n", 25);
        else
            nbuf_append(b, "END\r\n", 5);
    }
    slot_complete(s);
}

static void store_done(void *ud, int status, clocktime_t ct)
{
    txt_slot *s = ud;
    gwstats *st = frontconn_stats(s->base.conn);
    if (s->kind == SLOT_TOOBIG) {
        if (!slot_alive(s))
            return;
        nbuf_append(slot_target(s), "SERVER_ERROR object too large for cache\r\n", 41);
        slot_complete(s);
        return;
    }
    if (s->kind == SLOT_DELETE) {
        if (status == GATEWAY_OK)
            st->delete_hits++;
        else
            st->delete_misses++;
    } else if (status == GATEWAY_OK) {
        st->total_items++;
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
    nbuf_append(slot_target(s), r, strlen(r));
    slot_complete(s);
}

/* Count an update's outcome in the stats (also for noreply requests). */
static void count_update(gwstats *st, int kind, int status)
{
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

/* noreply updates: the gwstats is the ud, only the stats learn the outcome */
#define TXT_NOREPLY_CB(name, kind)                                                       \
    static void name(void *ud, int status, clocktime_t ct, const char *v, size_t n)     \
    {                                                                                   \
        count_update(ud, kind, status);                                                 \
    }
TXT_NOREPLY_CB(noreply_store_done, SLOT_STORE)
TXT_NOREPLY_CB(noreply_cas_done, SLOT_CAS)
TXT_NOREPLY_CB(noreply_incr_done, SLOT_INCR)
TXT_NOREPLY_CB(noreply_decr_done, SLOT_DECR)
TXT_NOREPLY_CB(noreply_touch_done, SLOT_TOUCH)

static void update_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    txt_slot *s = ud;
    textconn_listener *l = slot_listener(s);
    count_update(frontconn_stats(s->base.conn), s->kind, status);
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
            nbuf *b = slot_target(s);
            nbuf_append(b, value, vlen);
            nbuf_append(b, "\r\n", 2);
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
        if (status == GATEWAY_OK && value) {
            /* the touched item came back with the touch: printed even when the new
             * exptime has already passed (memcached returns it, then it is gone) */
            char key[MC_KEY_MAX];
            size_t have = nbuf_pending(&s->base.reply);
            size_t klen = have < sizeof key ? have : sizeof key;
            memcpy(key, nbuf_head(&s->base.reply), klen);
            nbuf_clear(&s->base.reply);
            nbuf *b = slot_target(s);
            gateway_value gv;
            gateway_item it;
            if (gateway_value_parse(value, vlen, &gv) && gateway_item_decode_any(l->gw, &gv, &it))
                put_value(b, key, klen, &it, s->gets, it.cas);
            if (s->kind == SLOT_GAT1)
                nbuf_append(b, "END\r\n", 5);
            slot_complete(s);
            return;
        }
        if (status == GATEWAY_OK) {
            /* touched by a server that does not return the value: fetch it like
             * get/gets; the key waits in s->data (the get copies it before returning,
             * and its completion is always later) */
            s->kind = s->kind == SLOT_GAT1 ? SLOT_GET1 : SLOT_GETN;
            gateway_get(l->gw, nbuf_head(&s->base.reply), nbuf_pending(&s->base.reply),
                        get_done, s);
            nbuf_clear(&s->base.reply);
            return;
        }
        nbuf_clear(&s->base.reply);
        if (s->kind == SLOT_GAT1)
            r = status == GATEWAY_FAILED ? "SERVER_ERROR get failed\r\n" : "END\r\n";
        break;
    }
    if (r)
        nbuf_append(slot_target(s), r, strlen(r));
    slot_complete(s);
}

static void flush_done(void *ud, int status, clocktime_t ct)
{
    txt_slot *s = ud;
    if (!slot_alive(s))
        return;
    const char *r = status == GATEWAY_OK ? "OK\r\n" : "SERVER_ERROR flush failed\r\n";
    nbuf_append(slot_target(s), r, strlen(r));
    slot_complete(s);
}

/* ------------------------------------------------------------------ commands */

typedef void (*txt_handler)(frontconn *c, const memtext_request *req);

/* One key of a multi-key get/gets: its VALUE block, or nothing on a miss. */
static void get_one(frontconn *c, bool gets, const char *key, size_t klen)
{
    txt_slot *s = slot_new(c, SLOT_GETN);
    s->gets = gets;
    gateway_get(conn_listener(c)->gw, key, klen, get_done, s);
}

/* One key of gat/gats: touch it, the touched item comes back with the touch. */
static void gat_one(frontconn *c, bool gats, bool single, int64_t exptime, const char *key,
                    size_t klen)
{
    txt_slot *s = slot_new(c, single ? SLOT_GAT1 : SLOT_GATN);
    s->gets = gats;
    s->gat = true;
    nbuf_append(&s->base.reply, key, klen);
    gateway_update(conn_listener(c)->gw, GATEWAY_GAT, key, klen, 0, exptime, NULL, 0, 0,
                   false, update_done, s);
}

static void cmd_get(frontconn *c, const memtext_request *req)
{
    gateway *gw = conn_listener(c)->gw;
    bool gets = req->cmd == MEMTEXT_GETS;
    frontconn_stats(c)->cmd_get += req->nkeys;
    if (req->nkeys == 1) {
        txt_slot *s = slot_new(c, SLOT_GET1);
        s->gets = gets;
        gateway_get(gw, req->keys[0].ptr, req->keys[0].len, get_done, s);
        return;
    }
    /* one slot per key keeps the VALUE blocks in request order whatever order the
     * servers answer in; END follows them */
    for (unsigned i = 0; i < req->nkeys; i++)
        get_one(c, gets, req->keys[i].ptr, req->keys[i].len);
    conn_reply_lit(c, "END\r\n");
}

static void cmd_set(frontconn *c, const memtext_request *req)
{
    gateway *gw = conn_listener(c)->gw;
    uint8_t hdr[GATEWAY_ITEM_HEADER_LEN];
    gateway_item_header(gw, req->flags, req->exptime, hdr);
    frontconn_stats(c)->cmd_set++;
    unsigned op = req->noreply ? SET_OP_SET_ASYNC : SET_OP_SET;
    txt_slot *s = req->noreply ? NULL : slot_new(c, SLOT_SET);
    gateway_set(gw, req->keys[0].ptr, req->keys[0].len, op, req->cas, GATEWAY_META_ITEM, hdr,
                sizeof hdr, req->data, req->datalen, s ? store_done : NULL, s);
}

/* add/replace/append/prepend/cas/incr/decr/touch: read-modify-write on the key's
 * coordinator (DECISIONS.md §3), so cas on a missing key is NOT_FOUND and concurrent
 * incr never lose an update. */
static void cmd_update(frontconn *c, const memtext_request *req)
{
    textconn_listener *l = conn_listener(c);
    gwstats *st = frontconn_stats(c);
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
        st->cmd_set++;
    else if (kind == SLOT_TOUCH)
        st->cmd_touch++;
    /* the parser leaves flags 0 for incr/decr/touch; append/prepend send theirs but the
     * server keeps the item's own (memcached ignores them) */
    uint32_t flags = kind == SLOT_TOUCH || kind == SLOT_INCR || kind == SLOT_DECR ? 0 : req->flags;
    int64_t exptime = kind == SLOT_INCR || kind == SLOT_DECR ? 0 : req->exptime;
    if (req->noreply) {
        gateway_update(l->gw, op, req->keys[0].ptr, req->keys[0].len, flags, exptime, data,
                       datalen, arg, true, nrcb, st);
        return;
    }
    txt_slot *s = slot_new(c, kind);
    gateway_update(l->gw, op, req->keys[0].ptr, req->keys[0].len, flags, exptime, data,
                   datalen, arg, false, update_done, s);
}

/* gat/gats <exptime> <key>*: touch each key, then return it like get/gets (a touch that
 * finds nothing is a miss). */
static void cmd_gat(frontconn *c, const memtext_request *req)
{
    gwstats *st = frontconn_stats(c);
    st->cmd_get += req->nkeys;
    st->cmd_touch += req->nkeys;
    for (unsigned i = 0; i < req->nkeys; i++)
        gat_one(c, req->cmd == MEMTEXT_GATS, req->nkeys == 1, req->exptime, req->keys[i].ptr,
                req->keys[i].len);
    if (req->nkeys != 1)
        conn_reply_lit(c, "END\r\n");
}

/* flush_all [delay] [noreply]: every server invalidates what it holds (now or later). */
static void cmd_flush_all(frontconn *c, const memtext_request *req)
{
    textconn_listener *l = conn_listener(c);
    frontconn_stats(c)->cmd_flush++;
    txt_slot *s = req->noreply ? NULL : slot_new(c, SLOT_FLUSH);
    gateway_flush_all(l->gw, req->has_delay ? req->exptime : 0, s ? flush_done : NULL, s);
}

static void cmd_verbosity(frontconn *c, const memtext_request *req)
{
    /* accepted and ignored: the log level is the -v flag */
    if (!req->noreply)
        conn_reply_lit(c, "OK\r\n");
}

/* "STAT <name> <value>\r\n" (gwstats_emit_fn; ud is the reply buffer) */
static void stat_line(void *ud, const char *name, const char *value)
{
    nbuf *b = ud;
    size_t nl = strlen(name), vl = strlen(value);
    nbuf_reserve(b, 5 + nl + 1 + vl + 2);
    nbuf_append(b, "STAT ", 5);
    nbuf_append(b, name, nl);
    nbuf_append(b, " ", 1);
    nbuf_append(b, value, vl);
    nbuf_append(b, "\r\n", 2);
}

static bool args_is(const memtext_request *req, const char *w)
{
    size_t n = strlen(w);
    return req->argslen == n && memcmp(req->args, w, n) == 0;
}

/* stats [reset|settings|items|slabs|sizes|conns]; other sub-stats are ERROR as in
 * memcached 1.6. */
static void cmd_stats(frontconn *c, const memtext_request *req)
{
    if (req->argslen == 0) {
        nbuf *b = frontconn_reply_buf(c);
        gwstats_report(frontconn_stats(c), stat_line, b);
        nbuf_append(b, "END\r\n", 5);
    } else if (args_is(req, "reset")) {
        gwstats_reset(frontconn_stats(c));
        conn_reply_lit(c, "RESET\r\n");
    } else if (args_is(req, "settings") || args_is(req, "items") || args_is(req, "slabs") ||
               args_is(req, "sizes") || args_is(req, "conns")) {
        conn_reply_lit(c, "END\r\n");
    } else {
        conn_reply_lit(c, "ERROR\r\n");
    }
}

static void cmd_delete(frontconn *c, const memtext_request *req)
{
    txt_slot *s = req->noreply ? NULL : slot_new(c, SLOT_DELETE);
    gateway_delete(conn_listener(c)->gw, req->keys[0].ptr, req->keys[0].len, req->noreply,
                   s ? store_done : NULL, s);
}

static void cmd_version(frontconn *c, const memtext_request *req)
{
    conn_reply_lit(c, TXT_VERSION_REPLY);
}

static void cmd_quit(frontconn *c, const memtext_request *req)
{
    frontconn_set_state(c, FRONTCONN_DRAIN);
}

/* A command without a handler (none today): memcached's answer to an unknown command. */
static void cmd_unsupported(frontconn *c, const memtext_request *req)
{
    if (!req->noreply)
        conn_reply_lit(c, "ERROR\r\n");
}

static const txt_handler txt_handlers[] = {
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


/* ------------------------------------------------------------------ protocol */

/* memcached's key rule, as memtext checks it: 1..250 bytes, no control bytes. */
static bool stream_key_ok(const char *k, size_t n)
{
    if (n == 0 || n > MC_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)k[i];
        if (ch < 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

/* The keys of a streamed retrieval line, as many as have arrived (at most
 * TXT_STREAM_BUDGET per call), then END at the line end.  A bad key answers CLIENT_ERROR
 * and drops the rest of the line; the values of the keys before it have been sent by
 * then (memcached, which buffers the whole line, sends none of them). */
static size_t txt_stream(frontconn *c, txt_conn *cs, const char *buf, size_t len)
{
    gwstats *st = frontconn_stats(c);
    bool gat = cs->cmd == MEMTEXT_GAT || cs->cmd == MEMTEXT_GATS;
    bool gets = cs->cmd == MEMTEXT_GETS || cs->cmd == MEMTEXT_GATS;
    size_t pos = 0;
    for (unsigned n = 0; n < TXT_STREAM_BUDGET && pos < len;) {
        if (buf[pos] == ' ') {
            pos++;
            continue;
        }
        if (buf[pos] == '\n' || (buf[pos] == '\r' && pos + 1 < len && buf[pos + 1] == '\n')) {
            cs->streaming = false;
            conn_reply_lit(c, "END\r\n");
            return pos + (buf[pos] == '\n' ? 1 : 2);
        }
        size_t end = pos;
        while (end < len && buf[end] != ' ' && buf[end] != '\n')
            end++;
        if (end == len && end - pos <= MC_KEY_MAX + 1)
            return pos;                        /* the key is not whole yet */
        size_t klen = end - pos;
        if (end < len && buf[end] == '\n' && klen > 0 && buf[end - 1] == '\r')
            klen--;                            /* the key before "\r\n" */
        if (klen == 0) {                       /* a lone "\r" before the newline */
            pos = end;
            continue;
        }
        if (!stream_key_ok(buf + pos, klen)) {
            cs->streaming = false;
            conn_reply_lit(c, "CLIENT_ERROR bad command line format\r\n");
            const char *nl = memchr(buf + pos, '\n', len - pos);
            if (nl)
                return (size_t)(nl - buf) + 1;
            frontconn_set_state(c, FRONTCONN_SKIPLINE);
            return len;
        }
        st->cmd_get++;
        if (gat) {
            st->cmd_touch++;
            gat_one(c, gets, false, cs->exptime, buf + pos, klen);
        } else {
            get_one(c, gets, buf + pos, klen);
        }
        pos = end;
        n++;
    }
    return pos;
}

/* frontconn_proto.parse: one request line (and data block) out of buf. */
static size_t txt_parse(frontconn *c, const char *buf, size_t len, size_t *need)
{
    textconn_listener *l = conn_listener(c);
    size_t consumed = 0;
    const char *errmsg = NULL;
    txt_conn *cs = frontconn_pstate(c);
    if (cs->streaming)
        return txt_stream(c, cs, buf, len);
    if (metaconn_is_meta(buf, len))
        return metaconn_parse(c, &l->env, buf, len, need);
    enum memtext_status st = memtext_parse(buf, len, l->cfg.item_size_max, &l->req,
                                           &consumed, need, &errmsg);
    if (st == MEMTEXT_NEED_MORE)
        return 0;
    if (st == MEMTEXT_STREAM) {
        cs->streaming = true;
        cs->cmd = (uint8_t)l->req.cmd;
        cs->exptime = l->req.exptime;
        return consumed;
    }
    if (st == MEMTEXT_OK) {
        *need = 0;
        enum memtext_cmd cmd = l->req.cmd;
        txt_handler h = (size_t)cmd < sizeof txt_handlers / sizeof txt_handlers[0]
                       ? txt_handlers[cmd] : NULL;
        (h ? h : cmd_unsupported)(c, &l->req);
        return consumed;
    }
    /* MEMTEXT_ERROR: answer and carry on after the bad input.  As memcached's out_string:
     * once the line was understood as noreply, errors stay silent too (memtext.h;
     * memccapable's "verbosity noreply" expects exactly that). */
    size_t swallow = *need;
    *need = 0;
    if (st == MEMTEXT_CLOSE) {        /* looks like HTTP: memcached hangs up */
        frontconn_set_state(c, FRONTCONN_DRAIN);
        return 0;
    }
    if (swallow > 0 && l->req.cmd == MEMTEXT_SET && l->req.nkeys == 1) {
        /* memcached unlinks the key of a set it refuses as too large, so the old value
         * is not read back as if the set had not happened; the error follows the delete */
        txt_slot *s = l->req.noreply ? NULL : slot_new(c, SLOT_TOOBIG);
        gateway_delete(l->gw, l->req.keys[0].ptr, l->req.keys[0].len, false,
                       s ? store_done : NULL, s);
    } else if (!l->req.noreply) {
        nbuf *b = frontconn_reply_buf(c);
        nbuf_append(b, errmsg, strlen(errmsg));
        nbuf_append(b, "\r\n", 2);
    }
    if (consumed == 0) {              /* a parser that cannot skip: give up on the client */
        frontconn_set_state(c, FRONTCONN_DRAIN);
        return 0;
    }
    bool storage = l->req.cmd == MEMTEXT_SET || l->req.cmd == MEMTEXT_ADD ||
                   l->req.cmd == MEMTEXT_REPLACE || l->req.cmd == MEMTEXT_APPEND ||
                   l->req.cmd == MEMTEXT_PREPEND || l->req.cmd == MEMTEXT_CAS;
    if (storage && !memchr(buf, '\n', consumed)) {
        /* an unended storage line: where its data block starts is unknown, so nothing
         * after it can be trusted not to be data (memcached closes too) */
        frontconn_set_state(c, FRONTCONN_DRAIN);
        return 0;
    }
    if (swallow > 0)
        frontconn_swallow(c, swallow);   /* oversize value: drop its block as it comes */
    else if (!memchr(buf, '\n', consumed))
        frontconn_set_state(c, FRONTCONN_SKIPLINE);
    return consumed;
}

static frontconn_proto txt_proto = {
    .name = "text",
    .slot_size = sizeof(txt_slot),    /* or the meta commands' slot, if larger */
    .parse = txt_parse,
    .conn_size = sizeof(txt_conn),
};

textconn_listener *textconn_listen(struct ev_loop *loop, int fd, gateway *gw, gwstats *stats,
                                   const textconn_config *cfg)
{
    textconn_listener *l = xcalloc(1, sizeof *l);
    l->gw = gw;
    l->cfg = *cfg;
    l->env.gw = gw;
    l->env.item_size_max = cfg->item_size_max;
    if (metaconn_slot_size() > txt_proto.slot_size)
        txt_proto.slot_size = metaconn_slot_size();
    l->fl = frontconn_listen(loop, fd, &txt_proto, stats, l);
    return l;
}

void textconn_listener_free(textconn_listener *l)
{
    if (!l)
        return;
    frontconn_listener_free(l->fl);
    free(l);
}
