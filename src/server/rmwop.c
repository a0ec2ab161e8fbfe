/* rmwop.c - memcached read-modify-write (Update) and flush_all (Flush) on kumo-server. */
#include "server/rmwop.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "logic/item.h"
#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"
#include "server/dataop.h"

/* The contract's "live item": a live record (>= 10 bytes) whose payload decodes and has
 * not expired.  Raw (meta 0) records are read without prefixes: flags 0, never expires,
 * the whole payload is the data (the server does not know the gateways' -E/-F). */
static bool item_read(const uint8_t *v, size_t vlen, uint32_t now, item *it)
{
    if (v == NULL || !dbvalue_is_live(vlen))
        return false;
    if (!item_decode(dbvalue_meta(v), v + DBVALUE_HEADER_LEN, vlen - DBVALUE_HEADER_LEN, 0, it))
        return false;
    return !item_expired(it, now);
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
    item it;
    if (!ok || !item_decode(dbvalue_meta(val), (const uint8_t *)val + DBVALUE_HEADER_LEN,
                            vlen - DBVALUE_HEADER_LEN, 0, &it))
        rpc_reply_error(client, msgid, RPC_UNKNOWN_ERROR);
    else
        reply_result(client, msgid, UPDATE_STORED, ct, it.data, it.len);
}

/* ---- Update ---- */

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
        && (op == UPDATE_OP_INCR || op == UPDATE_OP_DECR
            || vlen >= DBVALUE_HEADER_LEN + ITEM_V1_HEADER_LEN);
    dataop_plan plan;
    if (!dataop_begin_write(srv, req, params_ok, key, &plan))
        return;
    /* The server is single threaded and this is the key's coordinator, so nothing can
     * write the key between this read and the store below: the op is atomic. */
    size_t oldlen;
    bool have;
    clocktime_t stored;
    uint8_t *old = dataop_read(srv, key, klen, &oldlen, &have, &stored);
    item cur;
    bool live = item_read(old, oldlen, (uint32_t)time(NULL), &cur);
    /* the request's item is in the first form (meta 1: flags ‖ exptime ‖ data); incr and
     * decr carry none */
    item ask = {0};
    if (vlen >= DBVALUE_HEADER_LEN + ITEM_V1_HEADER_LEN)
        item_decode(ITEM_META_V1, (const uint8_t *)cval + DBVALUE_HEADER_LEN,
                    vlen - DBVALUE_HEADER_LEN, 0, &ask);
    /* UPDATE_FLAG_RAW: the gateway reads raw records without prefixes, so a result of
     * flags 0 and no expiry may be stored in the original's form */
    unsigned layout = (flags & UPDATE_FLAG_RAW) ? 0 : ITEM_RAW_NEVER;
    uint8_t *nv;
    size_t nlen = 0;
    uint32_t status = item_apply(op, arg, live ? &cur : NULL, have ? stored : 0, &ask,
                                 layout, &nv, &nlen);
    free(old);                                     /* cur borrowed it; nv is a copy */
    if (status != UPDATE_STORED) {
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
    dataop_replicate_value(srv, req, ct, &plan, key, klen, nv, nlen,
                           (flags & UPDATE_FLAG_ASYNC) != 0,
                           number ? answer_number : answer_stored);
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
