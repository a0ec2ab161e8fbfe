/* rmwop.c - memcached read-modify-write (Update) and flush_all (Flush) on kumo-server. */
#include "server/rmwop.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"
#include "server/dataop.h"

/* The payload form written by kumofs-c gateways (doc/storage-format.md, meta 0x0001):
 * flags BE32 ‖ exptime BE32 ‖ data.  The server mirrors the gateway's GATEWAY_META_ITEM
 * here rather than including the gateway's header. */
#define RMW_META_ITEM 0x0001
#define ITEM_HEADER_LEN 8                          /* flags + exptime */
#define ITEM_DATA_OFF (DBVALUE_HEADER_LEN + ITEM_HEADER_LEN)
/* meta 0x0002, a touched item: flags ‖ exptime ‖ CAS BE64 ‖ data.  A touch needs a new
 * version to replicate, but memcached keeps the CAS unique across touch, so the CAS of
 * the last real write travels in the item (doc/storage-format.md). */
#define RMW_META_TOUCHED 0x0002
#define TOUCHED_DATA_OFF (ITEM_DATA_OFF + 8)
#define U64_DIGITS_MAX 20                          /* "18446744073709551615" */

/* ---- the memcached item inside a stored value ---- */

/* A stored value read as a memcached item; pointers borrow the stored buffer. */
typedef struct rmw_item {
    bool live;                   /* present and not expired */
    uint32_t flags;
    uint32_t exptime;            /* absolute unix seconds, 0 = never */
    uint64_t cas;                /* meta 2: the CAS it keeps; else 0 (= the version) */
    const uint8_t *data;
    size_t len;
} rmw_item;

/* The contract's "live item": >= 10 bytes and not expired.  meta 1 needs its 8-byte
 * item header (shorter is a miss, like the gateway); any other meta is an original
 * record: flags 0, never expires, the whole payload is the data. */
static void item_read(const uint8_t *v, size_t vlen, uint32_t now, rmw_item *it)
{
    memset(it, 0, sizeof(*it));
    if (v == NULL || !dbvalue_is_live(vlen))
        return;
    uint16_t meta = dbvalue_meta(v);
    if (meta == RMW_META_ITEM || meta == RMW_META_TOUCHED) {
        size_t off = meta == RMW_META_ITEM ? ITEM_DATA_OFF : TOUCHED_DATA_OFF;
        if (vlen < off)
            return;
        it->flags = be32_get(v + DBVALUE_HEADER_LEN);
        it->exptime = be32_get(v + DBVALUE_HEADER_LEN + 4);
        if (it->exptime != 0 && it->exptime <= now)
            return;                                /* expired = absent */
        if (meta == RMW_META_TOUCHED)
            it->cas = be64_get(v + ITEM_DATA_OFF);
        it->data = v + off;
        it->len = vlen - off;
    } else {
        it->data = v + DBVALUE_HEADER_LEN;
        it->len = vlen - DBVALUE_HEADER_LEN;
    }
    it->live = true;
}

bool rmwop_item_live(const void *v, size_t vlen)
{
    rmw_item it;
    item_read(v, vlen, (uint32_t)time(NULL), &it);
    return it.live;
}

/* A new value: header (clocktime stamped later) ‖ flags ‖ exptime [‖ cas] ‖ a ‖ b, meta 1,
 * or meta 2 when cas is non-zero.  Returns a malloc'd buffer the caller frees; *len gets
 * its size. */
static uint8_t *item_build(uint32_t flags, uint32_t exptime, uint64_t cas, const void *a,
                           size_t alen, const void *b, size_t blen, size_t *len)
{
    size_t off = cas ? TOUCHED_DATA_OFF : ITEM_DATA_OFF;
    *len = off + alen + blen;
    uint8_t *v = xmalloc(*len);
    be64_put(v, 0);
    be16_put(v + 8, cas ? RMW_META_TOUCHED : RMW_META_ITEM);
    be32_put(v + DBVALUE_HEADER_LEN, flags);
    be32_put(v + DBVALUE_HEADER_LEN + 4, exptime);
    if (cas)
        be64_put(v + ITEM_DATA_OFF, cas);
    if (alen > 0)
        memcpy(v + off, a, alen);
    if (blen > 0)
        memcpy(v + off + alen, b, blen);
    return v;
}

/* memcached's incr/decr operand: 1..20 decimal digits that fit in 64 bits. */
static bool parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > U64_DIGITS_MAX)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* ---- answers: [status, clocktime, value|nil] ---- */

static void reply_result(rpc_session *s, uint32_t msgid, uint32_t status, clocktime_t ct,
                         const void *value, size_t vlen)
{
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint32(pk, status);
    msgpack_pack_uint64(pk, ct);
    if (value != NULL)
        kwire_pack_raw(pk, value, vlen);
    else
        msgpack_pack_nil(pk);
    rpc_reply_end(s);
}

/* dataop_answer_fn for stored results without a value.  A failed W replica answers
 * error 4 (UNKNOWN_ERROR): the op ran here, so the outcome is indefinite.  Error 6 is kept
 * for "not the coordinator / not ready", which the gateway may safely retry because
 * nothing was executed; the op is not idempotent, so the two must stay apart. */
static void answer_stored(rpc_session *client, uint32_t msgid, bool ok, clocktime_t ct,
                          const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    if (!ok)
        rpc_reply_error(client, msgid, RPC_UNKNOWN_ERROR);
    else
        reply_result(client, msgid, UPDATE_STORED, ct, NULL, 0);
}

/* dataop_answer_fn for incr/decr: the value is the stored item's data (the number). */
static void answer_number(rpc_session *client, uint32_t msgid, bool ok, clocktime_t ct,
                          const void *val, size_t vlen)
{
    if (!ok)
        rpc_reply_error(client, msgid, RPC_UNKNOWN_ERROR);
    else
        reply_result(client, msgid, UPDATE_STORED, ct, (const uint8_t *)val + ITEM_DATA_OFF,
                     vlen - ITEM_DATA_OFF);
}

/* dataop_answer_fn for an incr/decr that created the item. */
static void answer_created(rpc_session *client, uint32_t msgid, bool ok, clocktime_t ct,
                           const void *val, size_t vlen)
{
    if (!ok)
        rpc_reply_error(client, msgid, RPC_UNKNOWN_ERROR);
    else
        reply_result(client, msgid, UPDATE_CREATED, ct, (const uint8_t *)val + ITEM_DATA_OFF,
                     vlen - ITEM_DATA_OFF);
}

/* dataop_answer_fn for an incr/decr with UPDATE_FLAG_VALUE that created the item. */
static void answer_created_value(rpc_session *client, uint32_t msgid, bool ok, clocktime_t ct,
                                 const void *val, size_t vlen)
{
    if (!ok)
        rpc_reply_error(client, msgid, RPC_UNKNOWN_ERROR);
    else
        reply_result(client, msgid, UPDATE_CREATED, ct, val, vlen);
}

/* dataop_answer_fn for a touch with UPDATE_FLAG_VALUE (gat): the whole new DBValue. */
static void answer_value(rpc_session *client, uint32_t msgid, bool ok, clocktime_t ct,
                         const void *val, size_t vlen)
{
    if (!ok)
        rpc_reply_error(client, msgid, RPC_UNKNOWN_ERROR);
    else
        reply_result(client, msgid, UPDATE_STORED, ct, val, vlen);
}

/* ---- Update ---- */

/* Apply op to the current item.  Returns the status; on UPDATE_STORED *out is the new
 * value (malloc'd, clocktime not yet stamped).  req_val is the request's DBValue. */
static uint32_t apply_op(uint32_t op, uint32_t flags, uint64_t arg, const rmw_item *cur,
                         bool have, clocktime_t stored, const uint8_t *req_val,
                         size_t req_len, uint8_t **out, size_t *outlen)
{
    const uint8_t *req_data = req_val + ITEM_DATA_OFF;
    size_t req_dlen = req_len >= ITEM_DATA_OFF ? req_len - ITEM_DATA_OFF : 0;
    *out = NULL;
    switch (op) {
    case UPDATE_OP_ADD:
        if (cur->live)
            return UPDATE_NOT_STORED;
        break;
    case UPDATE_OP_REPLACE:
        if (!cur->live)
            return UPDATE_NOT_STORED;
        break;
    case UPDATE_OP_CAS:
        if (!cur->live)
            return UPDATE_NOT_FOUND;
        /* exact compare, like Set's CAS; a touched item keeps its earlier CAS */
        if (!have || (cur->cas ? cur->cas : stored) != arg)
            return UPDATE_EXISTS;
        break;
    case UPDATE_OP_APPEND:
    case UPDATE_OP_PREPEND:
        if (!cur->live)
            return UPDATE_NOT_STORED;
        /* memcached: the existing item keeps its flags and exptime */
        if (op == UPDATE_OP_APPEND)
            *out = item_build(cur->flags, cur->exptime, 0, cur->data, cur->len,
                              req_data, req_dlen, outlen);
        else
            *out = item_build(cur->flags, cur->exptime, 0, req_data, req_dlen,
                              cur->data, cur->len, outlen);
        return UPDATE_STORED;
    case UPDATE_OP_INCR:
    case UPDATE_OP_DECR: {
        if (!cur->live && (flags & UPDATE_FLAG_CREATE) && req_len >= ITEM_DATA_OFF) {
            *out = xmalloc(req_len);               /* created with the initial number */
            memcpy(*out, req_val, req_len);
            *outlen = req_len;
            return UPDATE_CREATED;
        }
        if (!cur->live)
            return UPDATE_NOT_FOUND;
        uint64_t n;
        if (!parse_u64(cur->data, cur->len, &n))
            return UPDATE_NON_NUMERIC;
        if (op == UPDATE_OP_INCR)
            n += arg;                              /* wraps at 2^64 as memcached */
        else
            n = n > arg ? n - arg : 0;             /* decr floors at 0 */
        char digits[U64_DIGITS_MAX + 1];
        int dlen = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)n);
        uint32_t exptime = (flags & UPDATE_FLAG_TTL) && req_len >= ITEM_DATA_OFF
                           ? be32_get(req_val + DBVALUE_HEADER_LEN + 4) : cur->exptime;
        *out = item_build(cur->flags, exptime, 0, digits, (size_t)dlen, NULL, 0, outlen);
        return UPDATE_STORED;
    }
    case UPDATE_OP_TOUCH:
        if (!cur->live)
            return UPDATE_NOT_FOUND;
        /* memcached keeps the CAS unique across touch */
        *out = item_build(cur->flags, be32_get(req_val + DBVALUE_HEADER_LEN + 4),
                          cur->cas ? cur->cas : stored, cur->data, cur->len, NULL, 0, outlen);
        return UPDATE_STORED;
    default:
        return UPDATE_NOT_STORED;                  /* not reached: op checked by caller */
    }
    /* ADD/REPLACE/CAS, and INCR/DECR creating, store the request's value as given (meta
     * included). */
    *out = xmalloc(req_len);
    memcpy(*out, req_val, req_len);
    *outlen = req_len;
    return UPDATE_STORED;
}

void rmwop_update(server *srv, const rpc_request *req)
{
    uint32_t op, flags;
    uint64_t arg;
    const char *key = NULL, *cval;
    size_t klen, vlen;
    const msgpack_object *ko = kwire_array_at(req->params, 2);
    const msgpack_object *vo = kwire_array_at(req->params, 3);
    bool params_ok = !req->cluster
        && server_arg_u32(req, 0, &op) && server_arg_u32(req, 1, &flags)
        && ko != NULL && kwire_get_raw(ko, &key, &klen) && klen >= DBKEY_HASH_LEN
        && vo != NULL && kwire_get_raw(vo, &cval, &vlen) && vlen >= DBVALUE_HEADER_LEN
        && server_arg_u64(req, 4, &arg)
        && op >= UPDATE_OP_ADD && op <= UPDATE_OP_TOUCH
        /* every op but incr/decr reads the request's flags/exptime or data */
        && (op == UPDATE_OP_INCR || op == UPDATE_OP_DECR || vlen >= ITEM_DATA_OFF);
    dataop_plan plan;
    if (!dataop_begin_write(srv, req, params_ok, key, &plan))
        return;
    /* The server is single threaded and this is the key's coordinator, so nothing can
     * write the key between this read and the store below: the op is atomic. */
    size_t oldlen;
    bool have;
    clocktime_t stored;
    uint8_t *old = dataop_read(srv, key, klen, &oldlen, &have, &stored);
    rmw_item cur;
    item_read(old, oldlen, (uint32_t)time(NULL), &cur);

    uint8_t *nv;
    size_t nlen = 0;
    uint32_t status = apply_op(op, flags, arg, &cur, have, stored, (const uint8_t *)cval,
                               vlen, &nv, &nlen);
    free(old);                                     /* cur borrowed it; nv is a copy */
    if (status != UPDATE_STORED && status != UPDATE_CREATED) {
        reply_result(req->session, req->msgid, status, 0, NULL, 0);
        return;
    }
    /* A new version strictly newer than the stored one, as Set (DECISIONS.md §2). */
    clocktime_t ct = dataop_next_version(srv, have, stored);
    dbvalue_set_clocktime(nv, ct);
    if (!store_put(srv->st, key, klen, nv, nlen)) {
        free(nv);
        rpc_reply_error(req->session, req->msgid, RPC_SERVER_ERROR);
        return;
    }
    srv->cmd_set++;
    bool number = op == UPDATE_OP_INCR || op == UPDATE_OP_DECR;
    bool value = (op == UPDATE_OP_TOUCH || number) && (flags & UPDATE_FLAG_VALUE);
    dataop_replicate_value(srv, req, ct, &plan, key, klen, nv, nlen,
                           (flags & UPDATE_FLAG_ASYNC) != 0,
                           status == UPDATE_CREATED ? (value ? answer_created_value
                                                             : answer_created)
                           : value ? answer_value : number ? answer_number : answer_stored);
    free(nv);
}

/* ---- Flush ---- */

/* A delayed flush waiting for its timer. */
typedef struct flush_job {
    ev_timer timer;              /* first: the watcher pointer is the job pointer */
    server *srv;
    struct flush_job *next;
} flush_job;

static flush_job *pending_flushes;
static uint64_t flushes_done;

/* Records to tombstone, collected during the iteration and written afterwards (writing
 * other keys inside store_iterate is not allowed, store.h).  Each entry: BE64 version,
 * BE32 key length, key bytes. */
typedef struct flush_list {
    uint8_t *buf;
    size_t len, cap;
    size_t count;
    clocktime_t limit;           /* the flush moment */
} flush_list;

static bool flush_collect(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    flush_list *fl = ud;
    if (vlen < DBVALUE_HEADER_LEN || klen > UINT32_MAX)
        return true;
    clocktime_t ct = dbvalue_clocktime(val);
    if (clocktime_less(fl->limit, ct))
        return true;                               /* written after the flush moment */
    size_t need = 12 + klen;
    if (fl->len + need > fl->cap) {
        fl->cap = (fl->len + need) * 2;
        fl->buf = xrealloc(fl->buf, fl->cap);
    }
    be64_put(fl->buf + fl->len, ct);
    be32_put(fl->buf + fl->len + 8, (uint32_t)klen);
    memcpy(fl->buf + fl->len + 12, key, klen);
    fl->len += need;
    fl->count++;
    return true;
}

/* The tombstone version for a flushed record: the record's version with the next
 * logical clock.  It is newer than the record, so store-if-newer keeps every older copy
 * (replicas, replace streams) from coming back; and since every server derives the same
 * tombstone from the same record, a write made after the flush on another coordinator
 * (stamped after its own tombstone, DECISIONS.md §2) is newer on every replica too,
 * whatever the servers' clock skew.  (The flush moment itself, taken on each server's
 * own clock, could be newer than such a write on a replica and silently drop it.) */
static clocktime_t flush_version(clocktime_t ct)
{
    return clocktime_make(clocktime_sec(ct), clocktime_clock(ct) + 1);
}

static void do_flush(server *srv)
{
    kclock_update_time(&srv->clock);
    flush_list fl = { .limit = kclock_event(&srv->clock) };
    store_iterate(srv->st, 0, flush_collect, &fl);
    size_t removed = 0;
    for (size_t off = 0; off < fl.len;) {
        clocktime_t ct = be64_get(fl.buf + off);
        uint32_t klen = be32_get(fl.buf + off + 8);
        if (store_remove(srv->st, fl.buf + off + 12, klen, flush_version(ct)))
            removed++;
        off += 12 + (size_t)klen;
    }
    free(fl.buf);
    flushes_done++;
    log_info("flush_all: %zu of %zu items removed", removed, fl.count);
}

static void flush_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    flush_job *job = (flush_job *)w;
    ev_timer_stop(loop, w);
    for (flush_job **p = &pending_flushes; *p != NULL; p = &(*p)->next) {
        if (*p == job) {
            *p = job->next;
            break;
        }
    }
    if (!job->srv->stopping)
        do_flush(job->srv);
    free(job);
}

void rmwop_flush(server *srv, const rpc_request *req)
{
    uint32_t delay;
    if (req->cluster || !server_arg_u32(req, 0, &delay)) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    if (delay == 0) {
        do_flush(srv);
    } else {
        flush_job *job = xmalloc(sizeof(*job));
        job->srv = srv;
        job->next = pending_flushes;
        pending_flushes = job;
        ev_timer_init(&job->timer, flush_timer_cb, (double)delay, 0.0);
        ev_timer_start(srv->loop, &job->timer);
    }
    rpc_reply_bool(req->session, req->msgid, true);
}

uint64_t rmwop_flush_count(void)
{
    return flushes_done;
}

void rmwop_stop(server *srv)
{
    for (flush_job **p = &pending_flushes; *p != NULL;) {
        flush_job *job = *p;
        if (job->srv == srv) {
            ev_timer_stop(srv->loop, &job->timer);
            *p = job->next;
            free(job);
        } else {
            p = &job->next;
        }
    }
}
