/* gwop.c - kumo-gateway's data operations: get/set/delete/update with the retries of
 * algorithms.md §5.1, flush_all, and the memcached item payload (doc/storage-format.md). */
#include "gateway/gateway_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/gwcache.h"
#include "logic/binlog.h"
#include "logic/hashspace.h"
#include "logic/item.h"
#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"
#include "rpc/rpc.h"

/* A pseudo error for "the needed hash space has no active node" (cli.md §9.5 "No server"). */
#define GW_ERR_NO_SERVER 100
/* kumofs-c: the write's coordinator stopped answering and was just tried by another
 * request; answered at once instead of waiting out -Rt (see gw_write_blocked). */
#define GW_ERR_UNREACHABLE 101

#define GW_RETRY_DELAY 1.0            /* algorithms.md §5.1: "after a ~1 s delay" */
/* The first retry after an error 6 ("obsolete hash space" / "server not ready"): the
 * cause is transient -- at the start of a replace the gateway's or the coordinator's
 * hash space is a moment behind the manager's -- so waiting the full second only adds
 * latency (kumofs-c; the original always waited). */
#define GW_FAST_RETRY_DELAY 0.02
#define GW_OP_BUF_KEEP (64 * 1024)    /* op buffers up to this size are kept in the pool */
#define GW_OP_POOL_MAX 4096           /* pooled op structs */
#define GW_RELATIVE_TIME_MAX 2592000  /* memcached: up to 30 days is relative */

enum op_kind { OP_GET, OP_SET, OP_DELETE, OP_UPDATE };

/* One data request and its retry state (algorithms.md §5.1).  buf holds the DBKey and,
 * for a set, the DBValue right after it, so a retry re-sends the same bytes. */
struct gw_op {
    struct gw_op *prev, *next; /* live list (for gateway_free), or the pool via next */
    gateway *gw;
    uint8_t kind;              /* enum op_kind */
    uint8_t setop;             /* SET_OP_*; update: GATEWAY_ADD.. */
    bool async;                /* delete: STORE_FLAG_ASYNC */
    bool noserver_logged;
    bool fail_pending;         /* the delay timer delivers the attempt failure fail_err */
    int fail_err;              /* GW_ERR_NO_SERVER or GW_ERR_UNREACHABLE */
    bool fast_retried;         /* the one fast retry after an error 6 is used up */
    bool raw_ok;               /* update: UPDATE_FLAG_RAW (this gateway has no -E/-F) */
    bool once;                 /* set: Update's retry rules (gw_set_once) */
    bool probed;               /* update: the coordinator's kind was asked (gw_peer_probe) */
    bool via_relay;            /* write: the next attempt goes through a relay (Forward) */
    bool relayed;              /* write: the attempt in flight went through a relay */
    kaddr target;              /* ... to this coordinator */
    bool maybe_applied;        /* update: its connection was dropped while it was out */
    uint8_t uflags;            /* update: UPDATE_FLAG_VALUE / _CREATE / _TTL */
    unsigned retry;            /* retries made so far */
    int last_err;
    double started;            /* ev_now at the start: the -Rt budget counts from here */
    ev_timer delay;
    uint64_t arg;              /* update: CAS unique or delta */
    union { gateway_get_cb get; gateway_store_cb store; gateway_update_cb update; } cb;
    void *ud;
    uint8_t *buf;
    size_t bufcap;
    size_t keylen;             /* DBKey length (8 + prefix + key) */
    size_t vallen;             /* DBValue length (set only) */
    uint8_t *cached;           /* get with -lc: the cached DBValue (malloc'd), or NULL */
    size_t cachedlen;
};

/* ------------------------------------------------------------------ ops */

static gw_op *op_new(gateway *gw, int kind, size_t need)
{
    gw_op *op = gw->pool;
    if (op) {
        gw->pool = op->next;
        gw->npool--;
    } else {
        op = xcalloc(1, sizeof *op);
    }
    uint8_t *buf = op->buf;
    size_t cap = op->bufcap;
    memset(op, 0, sizeof *op);
    if (cap < need) {
        free(buf);
        cap = need < 256 ? 256 : need;
        buf = xmalloc(cap);
    }
    op->buf = buf;
    op->bufcap = cap;
    op->gw = gw;
    op->kind = (uint8_t)kind;
    op->next = gw->live;
    if (gw->live)
        gw->live->prev = op;
    gw->live = op;
    return op;
}

static void op_free(gw_op *op)
{
    gateway *gw = op->gw;
    ev_timer_stop(gw->loop, &op->delay);
    free(op->cached);
    op->cached = NULL;
    if (op->prev)
        op->prev->next = op->next;
    else
        gw->live = op->next;
    if (op->next)
        op->next->prev = op->prev;
    if (gw->closing || gw->npool >= GW_OP_POOL_MAX) {
        free(op->buf);
        free(op);
        return;
    }
    if (op->bufcap > GW_OP_BUF_KEEP) {
        free(op->buf);
        op->buf = NULL;
        op->bufcap = 0;
    }
    op->next = gw->pool;
    gw->pool = op;
    gw->npool++;
}

/* Write the DBKey of prefix ‖ key into op->buf (wire.md §7.5). */
static void op_set_key(gw_op *op, const char *key, size_t keylen)
{
    gateway *gw = op->gw;
    uint8_t *p = op->buf + DBKEY_HASH_LEN;
    if (gw->prefixlen)
        memcpy(p, gw->cfg.key_prefix, gw->prefixlen);
    memcpy(p + gw->prefixlen, key, keylen);
    op->keylen = DBKEY_HASH_LEN + gw->prefixlen + keylen;
    dbkey_stamp(op->buf, gw->prefixlen + keylen);
}

static const char *op_user_key(const gw_op *op, size_t *len)
{
    size_t skip = DBKEY_HASH_LEN + op->gw->prefixlen;
    *len = op->keylen - skip;
    return (const char *)op->buf + skip;
}

static const char *op_name(const gw_op *op)
{
    static const char *const names[] = {
        [OP_GET] = "get", [OP_SET] = "set", [OP_DELETE] = "delete", [OP_UPDATE] = "update",
    };
    return names[op->kind];
}

/* cli.md §10: eg/es/ed when a request finally fails; the key as stored (with the -k
 * prefix, without the hash), the value without the 10-byte value header.  An update
 * (add, incr, ... -- not in the original) is a write: logged as es.  err is the RPC
 * error code, 0 for the server's "replication failed", GW_ERR_NO_SERVER without one. */
static void op_binlog_failed(const gw_op *op, int err)
{
    if (!binlog_is_open())
        return;
    const uint8_t *key = op->buf + DBKEY_HASH_LEN;
    size_t klen = op->keylen - DBKEY_HASH_LEN;
    if (op->kind == OP_GET)
        binlog_get_failed(key, klen, err);
    else if (op->kind == OP_DELETE)
        binlog_delete_failed(key, klen, err);
    else
        binlog_set_failed(key, klen, op->buf + op->keylen + DBVALUE_HEADER_LEN,
                          op->vallen - DBVALUE_HEADER_LEN, err);
}

/* Deliver the final outcome and release the op. */
static void op_finish(gw_op *op, int status, const gateway_value *v, clocktime_t ct)
{
    if (op->kind == OP_GET) {
        size_t klen;
        const char *k = op_user_key(op, &klen);
        if (op->cb.get)
            op->cb.get(op->ud, status, v, k, klen);
    } else if (op->kind == OP_UPDATE) {
        if (op->cb.update)
            op->cb.update(op->ud, status, ct, NULL, 0);
    } else if (op->cb.store) {
        op->cb.store(op->ud, status, ct);
    }
    op_free(op);
}

static void op_send(gw_op *op);

/* Seconds left of the -Rt budget; a large number without one (kumofs-c). */
static double op_budget_left(const gw_op *op)
{
    const gateway *gw = op->gw;
    if (!(gw->cfg.request_timeout > 0))
        return 1e9;
    return op->started + gw->cfg.request_timeout - ev_now(gw->loop);
}

static unsigned op_retry_limit(const gw_op *op)
{
    const gateway_config *c = &op->gw->cfg;
    if (op->kind == OP_GET)
        return c->get_retry ? 3 * c->get_retry - 1 : 0;
    return op->kind == OP_DELETE ? c->delete_retry : c->set_retry;
}

/* Update ops are not idempotent: retried only when the request cannot have changed
 * anything yet -- no server, the connection failed or was lost, or the coordinator
 * refused it (error 6 "obsolete hash space" / "server not ready").  A timeout or a
 * malformed answer is final. */
static bool op_retryable(const gw_op *op, int err)
{
    /* A string error is a kumofs-c server's storage failure (a full disk): it answers
     * again at once the same way, so the client hears it now (protocol-additions.md). */
    if (err == RPC_OTHER_ERROR)
        return false;
    if (op->once)
        /* a compare-and-swap step (gw_set_once): a lost connection may come after the
         * server applied it, and a resent CAS would then fail its compare and make the
         * fallback apply the command twice; only "not sent" and error 6 are safe */
        return err == GW_ERR_NO_SERVER || err == RPC_SERVER_ERROR;
    if (op->kind != OP_UPDATE)
        return true;
    if (op->maybe_applied)
        return false;
    return err == GW_ERR_NO_SERVER || err == RPC_NODE_LOST || err == RPC_TRANSPORT_LOST ||
           err == RPC_SERVER_ERROR;
}

/* An attempt failed with err (0 = the server's "replication failed" nil): retry or give
 * up (algorithms.md §5.1).  Always called from an event callback, never from the caller
 * of gateway_get/_set/_delete. */
static void op_attempt_failed(gw_op *op, int err)
{
    gateway *gw = op->gw;
    op->last_err = err;
    /* no time left for another attempt within -Rt: answer now rather than late */
    bool out_of_time = op_budget_left(op) < 0.05 || err == GW_ERR_UNREACHABLE;
    if (op->retry >= op_retry_limit(op) || !op_retryable(op, err) || out_of_time) {
        if (err == RPC_TRANSPORT_LOST || err == RPC_SERVER_ERROR)
            gw_renew(gw);
        size_t klen;
        const char *k = op_user_key(op, &klen);
        log_error("%s failed after %u retries: error %d, key %.*s", op_name(op), op->retry,
                  err, (int)(klen > 64 ? 64 : klen), k);
        op_binlog_failed(op, err);
        op_finish(op, GATEWAY_FAILED, NULL, 0);
        return;
    }
    op->retry++;
    gw_renew_check(gw);
    /* get: offsets 1 and 2 at once, offset 0 (another round) after a pause; set and
     * delete always re-resolve the coordinator after a pause */
    bool now = op->kind == OP_GET && op->retry % 3 != 0;
    if (op->kind != OP_GET && !op->relayed &&
        (err == RPC_TIMEOUT || err == RPC_NODE_LOST || err == RPC_TRANSPORT_LOST)) {
        /* kumofs-c: the coordinator did not answer this gateway; another owner of the
         * key may still reach it, so the next attempt goes through it (Forward), now */
        op->via_relay = true;
        now = true;
    }
    if (now && err != GW_ERR_NO_SERVER) {
        op_send(op);
        return;
    }
    ev_tstamp delay = now ? 0.0 : GW_RETRY_DELAY;
    if (!now && (err == RPC_SERVER_ERROR || err == 0) && !op->fast_retried) {
        /* error 6, or the coordinator's "replication failed" (0: typically a replica
         * whose hash space is a moment behind at the start of a replace, answering it
         * error 6): fetch the hash spaces now and retry soon; later retries wait as
         * §5.1 says.  One renew per fast-retry period whatever the number of ops
         * failing at once (mgr_request never piles requests up either). */
        op->fast_retried = true;
        delay = GW_FAST_RETRY_DELAY;
        ev_tstamp t = ev_now(gw->loop);
        if (t - gw->fast_renew_at >= GW_FAST_RETRY_DELAY) {
            gw->fast_renew_at = t;
            gw_renew(gw);
        }
    }
    double left = op_budget_left(op);
    if (delay > left - 0.05)
        delay = left - 0.05 > 0 ? left - 0.05 : 0.0;
    ev_timer_set(&op->delay, delay, 0.0);
    ev_timer_start(gw->loop, &op->delay);
}

static void op_delay_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    gw_op *op = w->data;
    if (op->fail_pending) {
        op->fail_pending = false;
        op_attempt_failed(op, op->fail_err);
    } else {
        op_send(op);
    }
}

/* gw_peer_probe answered: send the Update (or hand it to the fallback). */
static void op_probed_cb(void *ud)
{
    gw_op *op = ud;
    if (op->gw->closing) {
        op_finish(op, GATEWAY_FAILED, NULL, 0);
        return;
    }
    op_send(op);
}

/* Hand an Update op to the Get + CAS fallback (gwrmw.c) and release it. */
static void op_update_fallback(gw_op *op)
{
    item req;
    const uint8_t *v = op->buf + op->keylen;
    item_decode(ITEM_META_V1, v + DBVALUE_HEADER_LEN, op->vallen - DBVALUE_HEADER_LEN, 0,
                &req);
    size_t klen;
    const char *k = op_user_key(op, &klen);
    gw_rmw_fallback(op->gw, op->setop, op->uflags, k, klen, &req, op->arg, op->cb.update,
                    op->ud);
    op_free(op);
}

static void on_get_reply(rpc_session *s, const rpc_result *r, void *ud);
static void on_store_reply(rpc_session *s, const rpc_result *r, void *ud);
static void on_update_reply(rpc_session *s, const rpc_result *r, void *ud);

/* The server method of a write op and its params (wire.md §8.2 Set [operation, dbkey,
 * dbvalue], Delete [flags, dbkey]; Update [op, flags, dbkey, dbvalue, arg],
 * doc/protocol-additions.md), the same bytes sent to the coordinator or in a Forward. */
static uint32_t op_write_method(const gw_op *op)
{
    return op->kind == OP_SET ? SRV_SET : op->kind == OP_DELETE ? SRV_DELETE : SRV_UPDATE;
}

static void op_pack_write(const gw_op *op, msgpack_packer *pk)
{
    switch (op->kind) {
    case OP_SET:
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint32(pk, op->setop);
        kwire_pack_raw(pk, op->buf, op->keylen);
        kwire_pack_raw(pk, op->buf + op->keylen, op->vallen);
        break;
    case OP_UPDATE:
        msgpack_pack_array(pk, 5);
        msgpack_pack_uint32(pk, op->setop);
        msgpack_pack_uint32(pk, (op->async ? UPDATE_FLAG_ASYNC : 0) |
                                (op->raw_ok ? UPDATE_FLAG_RAW : 0) | op->uflags);
        kwire_pack_raw(pk, op->buf, op->keylen);
        kwire_pack_raw(pk, op->buf + op->keylen, op->vallen);
        msgpack_pack_uint64(pk, op->arg);
        break;
    default:
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint32(pk, op->async ? STORE_FLAG_ASYNC : 0);
        kwire_pack_raw(pk, op->buf, op->keylen);
        break;
    }
}

/* A relay for a write whose coordinator coord this gateway cannot reach: the session of
 * another active owner of the key that answers and said it relays (gw_peer_relays: an
 * original server is never sent a Forward), or NULL. */
static rpc_session *op_relay_session(gw_op *op, gw_space *sp, const hs_node *coord)
{
    const hs_node *slots[HS_REPLICAS];
    size_t n = hashspace_assign(&sp->hs, dbkey_hash(op->buf), slots);
    for (size_t i = 0; i < n; i++) {
        if (slots[i] == coord || !slots[i]->active)
            continue;
        rpc_session *rs = gw_space_session(op->gw, sp, (size_t)(slots[i] - sp->hs.nodes));
        if (!gw_session_suspect(op->gw, rs) && gw_peer_relays(op->gw, rs))
            return rs;
    }
    return NULL;
}

/* One attempt of a write to coordinator n (session s): direct, or wrapped in a Forward
 * to another owner of the key when s stopped answering (gw_write_blocked) or the last
 * direct attempt got no answer (kumofs-c; doc/protocol-additions.md §1.6). */
static void op_send_write(gw_op *op, gw_space *sp, const hs_node *n, rpc_session *s)
{
    gateway *gw = op->gw;
    bool blocked = gw_write_blocked(gw, s);
    rpc_session *rs = blocked || op->via_relay ? op_relay_session(op, sp, n) : NULL;
    op->via_relay = false;
    op->relayed = false;
    if (blocked && rs == NULL) {
        op->fail_pending = true;
        op->fail_err = GW_ERR_UNREACHABLE;
        ev_timer_set(&op->delay, 0.0, 0.0);
        ev_timer_start(gw->loop, &op->delay);
        return;
    }
    if (op->kind == OP_UPDATE) {
        switch (gw_peer_kind(gw, s)) {
        case GW_PEER_ORIGINAL:
            op_update_fallback(op);
            return;
        case GW_PEER_UNKNOWN:
            /* ask first: an Update would make an original drop the connection.  Not
             * through a relay (the coordinator would not answer the question): an
             * original answers the relayed Update error 5 (on_update_reply) */
            if (!op->probed && rs == NULL) {
                op->probed = true;
                gw_peer_probe(gw, s, op_probed_cb, op);
                return;
            }
            break;
        default:
            break;
        }
    }
    rpc_callback cb = op->kind == OP_UPDATE ? on_update_reply : on_store_reply;
    double left = op_budget_left(op);
    double tmo = gw_attempt_timeout(gw, rs ? rs : s, false, left);
    msgpack_packer *pk;
    if (rs != NULL) {
        /* Forward [target, method, params, timeout_ms]: the relay gives up (and drops
         * its connection to the target) well before this gateway does, so its answer
         * arrives before this write is sent any other way */
        double margin = tmo / 4 > 0.1 ? tmo / 4 : 0.1;
        uint32_t relay_ms = 0;                   /* -Rt 0: the relay's default */
        if (tmo > 0)
            relay_ms = tmo - margin > 0.01 ? (uint32_t)((tmo - margin) * 1000) : 10;
        op->relayed = true;
        op->target = n->addr;
        pk = rpc_call_begin_timed(rs, SRV_FORWARD, tmo, cb, op);
        msgpack_pack_array(pk, 4);
        kwire_pack_addr(pk, &n->addr);
        msgpack_pack_uint32(pk, op_write_method(op));
        op_pack_write(op, pk);
        msgpack_pack_uint32(pk, relay_ms);
        rpc_call_end(rs);
        return;
    }
    /* A set or delete may be sent again after a timeout (the relay path above): the
     * direct attempt gets half the budget, so the relayed one has time too.  An Update
     * or a compare-and-swap step is never resent after a timeout (op_retryable). */
    if (op->kind != OP_UPDATE && !op->once && tmo > 0 && left / 2 > gw->cfg.attempt_min &&
        tmo > left / 2)
        tmo = left / 2;
    pk = rpc_call_begin_timed(s, op_write_method(op), tmo, cb, op);
    op_pack_write(op, pk);
    rpc_call_end(s);
}

/* One attempt: resolve the target in the current hash space and send. */
static void op_send(gw_op *op)
{
    gateway *gw = op->gw;
    gw_space *sp = op->kind == OP_GET ? &gw->rhs : &gw->whs;
    if (hashspace_empty(&sp->hs)) {
        if (!op->noserver_logged) {
            op->noserver_logged = true;
            log_warn("req_%s FAILED: No server", op_name(op));
        }
        gw_renew_check(gw);
        /* fail the attempt from the loop, so callbacks never run inside gateway_get */
        op->fail_pending = true;
        op->fail_err = GW_ERR_NO_SERVER;
        ev_timer_set(&op->delay, 0.0, 0.0);
        ev_timer_start(gw->loop, &op->delay);
        return;
    }
    unsigned offset = op->kind == OP_GET ? op->retry % 3 : 0;
    const hs_node *n = hashspace_server_for(&sp->hs, dbkey_hash(op->buf), offset);
    /* kumofs-c: a get never goes to a fault node (server_for falls back to one when the
     * slots from the offset on are all fault: a fault server may be alive, cut off from
     * the manager only, and hold stale values), and skips replicas that stopped
     * answering while another may answer */
    for (unsigned k = 1; op->kind == OP_GET && k < 3 && !n->active; k++)
        n = hashspace_server_for(&sp->hs, dbkey_hash(op->buf), (offset + k) % 3);
    if (op->kind == OP_GET && !n->active) {
        op->fail_pending = true;
        op->fail_err = GW_ERR_NO_SERVER;
        ev_timer_set(&op->delay, 0.0, 0.0);
        ev_timer_start(gw->loop, &op->delay);
        return;
    }
    rpc_session *s = gw_space_session(gw, sp, (size_t)(n - sp->hs.nodes));
    for (unsigned k = 1; op->kind == OP_GET && k < 3 && gw_session_suspect(gw, s); k++) {
        const hs_node *alt = hashspace_server_for(&sp->hs, dbkey_hash(op->buf), (offset + k) % 3);
        rpc_session *as = gw_space_session(gw, sp, (size_t)(alt - sp->hs.nodes));
        if (alt->active && !gw_session_suspect(gw, as))
            s = as;
    }
    if (op->kind != OP_GET) {
        op_send_write(op, sp, n, s);
        return;
    }
    /* wire.md §8.2 Get [dbkey] */
    double tmo = gw_attempt_timeout(gw, s, true, op_budget_left(op));
    msgpack_packer *pk;
    if (gw->cfg.cache && !op->cached)     /* memcached.md §5: the cached version */
        op->cached = gwcache_get(gw->cfg.cache, op->buf + DBKEY_HASH_LEN,
                                 op->keylen - DBKEY_HASH_LEN, &op->cachedlen);
    if (op->cached) {   /* GetIfModified [dbkey, if_time] */
        pk = rpc_call_begin_timed(s, SRV_GET_IF_MODIFIED, tmo, on_get_reply, op);
        msgpack_pack_array(pk, 2);
        kwire_pack_raw(pk, op->buf, op->keylen);
        msgpack_pack_uint64(pk, dbvalue_clocktime(op->cached));
    } else {
        pk = rpc_call_begin_timed(s, SRV_GET, tmo, on_get_reply, op);
        msgpack_pack_array(pk, 1);
        kwire_pack_raw(pk, op->buf, op->keylen);
    }
    rpc_call_end(s);
}

/* Common head of the reply callbacks (s: where the attempt went): false when the reply
 * is already dealt with (the gateway is closing, or an RPC error went to the retry
 * logic). */
static bool op_reply_usable(gw_op *op, rpc_session *s, const rpc_result *r)
{
    if (op->gw->closing) {
        op_finish(op, GATEWAY_FAILED, NULL, 0);
        return false;
    }
    if (r->err != RPC_OK) {
        bool no_answer = r->err == RPC_TIMEOUT || r->err == RPC_NODE_LOST ||
                         r->err == RPC_TRANSPORT_LOST;
        if (op->kind != OP_GET && !op->relayed && no_answer) {
            /* the coordinator did not answer this gateway.  An Update may have reached
             * it before its connection went (nothing tells), so it is not sent again;
             * and whatever else is still on the way to it is dropped before the write
             * goes another way (gw_write_unreachable) */
            if (op->kind == OP_UPDATE && r->err != RPC_TIMEOUT &&
                (rpc_session_timeouts(s) > 0 || gw_peer_unreachable(op->gw, rpc_session_addr(s))))
                op->maybe_applied = true;
            gw_write_unreachable(op->gw, s);
        } else if (op->kind == OP_UPDATE && no_answer) {
            /* relayed: the relay, or its own connection to the coordinator, went away
             * (the relay drops that connection itself when it times out); it may have
             * passed the Update on already.  The relay is not marked unreachable: it
             * is usually late because the coordinator is (a frozen one), and marking
             * it sent the writes of the keys it coordinates after the failover through
             * relays too, where a late copy can land after newer writes (measured: stale
             * reads in test_frozen_server_is_marked_fault_on_loopback under load) */
            op->maybe_applied = true;
        }
        op_attempt_failed(op, r->err);
        return false;
    }
    return true;
}

static void on_get_reply(rpc_session *s, const rpc_result *r, void *ud)
{
    gw_op *op = ud;
    if (!op_reply_usable(op, s, r))
        return;
    const char *p;
    size_t len;
    bool unmodified;
    gateway_value v;
    if (op->cached && kwire_get_bool(r->result, &unmodified) && unmodified) {
        /* GetIfModified: the cached copy holds (it was live when cached) */
        gateway_value_parse(op->cached, op->cachedlen, &v);
        op_finish(op, GATEWAY_OK, &v, v.ct);
    } else if (kwire_is_nil(r->result)) {
        op_finish(op, GATEWAY_MISS, NULL, 0);   /* final: other replicas not consulted */
    } else if (kwire_get_raw(r->result, &p, &len)) {
        if (!gateway_value_parse(p, len, &v)) {
            op_finish(op, GATEWAY_MISS, NULL, 0);   /* a tombstone */
            return;
        }
        if (op->gw->cfg.cache)
            gwcache_put_if_newer(op->gw->cfg.cache, op->buf + DBKEY_HASH_LEN,
                                 op->keylen - DBKEY_HASH_LEN, p, len);
        op_finish(op, GATEWAY_OK, &v, v.ct);
    } else {
        op_attempt_failed(op, RPC_PROTOCOL_ERROR);
    }
}

static void on_store_reply(rpc_session *s, const rpc_result *r, void *ud)
{
    gw_op *op = ud;
    if (!op_reply_usable(op, s, r))
        return;
    const msgpack_object *o = r->result;
    uint64_t ct;
    bool b;
    /* wire.md §8.2: Set → u64 version / false (CAS mismatch) / nil (replication failed);
     * Delete → true / false / nil */
    if (kwire_is_nil(o))
        op_attempt_failed(op, 0);
    else if (kwire_get_bool(o, &b))
        op_finish(op, b ? GATEWAY_OK : (op->kind == OP_SET ? GATEWAY_EXISTS : GATEWAY_NOT_FOUND),
                  NULL, 0);
    else if (op->kind == OP_SET && kwire_get_u64(o, &ct))
        op_finish(op, GATEWAY_OK, NULL, ct);
    else
        op_attempt_failed(op, RPC_PROTOCOL_ERROR);
}

/* Update result [status, clocktime, value|nil] (doc/protocol-additions.md). */
static void on_update_reply(rpc_session *s, const rpc_result *r, void *ud)
{
    gw_op *op = ud;
    if (r->err == RPC_PROTOCOL_ERROR && !op->gw->closing) {
        /* An original kumofs 0.4.13 coordinator: "unknown method".  Nothing was done;
         * run the op as Get + compare-and-swap Sets (gwrmw.c), and send it no Update
         * for a while: it drops the connection after that answer.  Through a relay
         * (which relays, so it knows Forward) the answer is the coordinator's. */
        gw_peer_set(op->gw, op->relayed ? &op->target : rpc_session_addr(s), GW_PEER_ORIGINAL);
        op_update_fallback(op);
        return;
    }
    if (!op_reply_usable(op, s, r))
        return;
    static const int status_map[] = {
        GATEWAY_OK, GATEWAY_NOT_STORED, GATEWAY_EXISTS, GATEWAY_NOT_FOUND, GATEWAY_NON_NUMERIC,
        GATEWAY_CREATED,
    };
    const msgpack_object *o = r->result;
    uint32_t st;
    uint64_t ct;
    const char *val = NULL;
    size_t vlen = 0;
    const msgpack_object *ov = kwire_array_at(o, 2);
    if (!kwire_array_at(o, 0) || !kwire_get_u32(kwire_array_at(o, 0), &st) ||
        st >= sizeof status_map / sizeof status_map[0] || !kwire_array_at(o, 1) ||
        !kwire_get_u64(kwire_array_at(o, 1), &ct) ||
        (ov && !kwire_is_nil(ov) && !kwire_get_raw(ov, &val, &vlen))) {
        /* a server without SRV_UPDATE never gets here (error 5); anything else odd is
         * final, because the op may have been applied */
        log_error("update: malformed result from server");
        op_finish(op, GATEWAY_FAILED, NULL, 0);
        return;
    }
    if (op->cb.update)
        op->cb.update(op->ud, status_map[st], ct, val, vlen);
    op_free(op);
}

static gw_op *op_start(gateway *gw, int kind, const char *key, size_t keylen, size_t extra)
{
    gw_op *op = op_new(gw, kind, DBKEY_HASH_LEN + gw->prefixlen + keylen + extra);
    ev_timer_init(&op->delay, op_delay_cb, 0.0, 0.0);
    op->delay.data = op;
    op->started = ev_now(gw->loop);
    op_set_key(op, key, keylen);
    return op;
}

void gateway_get(gateway *gw, const char *key, size_t keylen, gateway_get_cb cb, void *ud)
{
    gw_op *op = op_start(gw, OP_GET, key, keylen, 0);
    op->cb.get = cb;
    op->ud = ud;
    op_send(op);
}

/* A write op carrying a DBValue (wire.md §7.6) after its key: header (clocktime field
 * ct, meta), then hdr and data. */
static gw_op *op_start_value(gateway *gw, int kind, const char *key, size_t keylen,
                             unsigned setop, clocktime_t ct, uint16_t meta, const void *hdr,
                             size_t hdrlen, const void *data, size_t datalen)
{
    size_t vallen = DBVALUE_HEADER_LEN + hdrlen + datalen;
    gw_op *op = op_start(gw, kind, key, keylen, vallen);
    op->setop = (uint8_t)setop;
    uint8_t *v = op->buf + op->keylen;
    be64_put(v, ct);
    be16_put(v + 8, meta);
    if (hdrlen)
        memcpy(v + DBVALUE_HEADER_LEN, hdr, hdrlen);
    if (datalen)
        memcpy(v + DBVALUE_HEADER_LEN + hdrlen, data, datalen);
    op->vallen = vallen;
    return op;
}

/* How this gateway lays out raw (meta 0) payloads: its -E / -F, as the original's. */
unsigned gw_item_layout(const gateway *gw)
{
    return (gw->cfg.save_expire ? ITEM_RAW_EXPTIME : 0) | (gw->cfg.save_flag ? ITEM_RAW_FLAGS : 0);
}

void gw_set_once(gateway *gw, const char *key, size_t keylen, unsigned setop,
                 uint64_t compare, uint16_t meta, const uint8_t *payload, size_t len,
                 gateway_store_cb cb, void *ud)
{
    gw_op *op = op_start_value(gw, OP_SET, key, keylen, setop,
                               setop == SET_OP_CAS ? compare : 0, meta, NULL, 0, payload, len);
    op->once = true;
    op->cb.store = cb;
    op->ud = ud;
    op_send(op);
}

void gateway_set(gateway *gw, const char *key, size_t keylen, unsigned setop, uint64_t compare,
                 uint16_t meta, const void *hdr, size_t hdrlen, const void *data,
                 size_t datalen, gateway_store_cb cb, void *ud)
{
    /* The front ends hand over a GATEWAY_META_ITEM header; what is stored is the form of
     * doc/storage-format.md: the original's raw form when it can hold the item (so an
     * original gateway reads it too), else the tagged form. */
    uint8_t enc[ITEM_HEADER_MAX];
    if (meta == GATEWAY_META_ITEM && hdrlen == GATEWAY_ITEM_HEADER_LEN) {
        const uint8_t *h = hdr;
        hdrlen = item_encode_header(be32_get(h), be32_get(h + 4), 0, data,
                                    datalen < ITEM_MAGIC_LEN ? datalen : ITEM_MAGIC_LEN,
                                    gw_item_layout(gw), &meta, enc);
        hdr = enc;
    }
    /* wire.md §7.6: the clocktime field carries the CAS compare value (0 for a set) */
    gw_op *op = op_start_value(gw, OP_SET, key, keylen, setop,
                               setop == SET_OP_CAS ? compare : 0, meta, hdr, hdrlen,
                               data, datalen);
    op->cb.store = cb;
    op->ud = ud;
    op_send(op);
}

void gateway_delete(gateway *gw, const char *key, size_t keylen, bool async,
                    gateway_store_cb cb, void *ud)
{
    gw_op *op = op_start(gw, OP_DELETE, key, keylen, 0);
    op->cb.store = cb;
    op->ud = ud;
    op->async = async || gw->cfg.async_delete;
    op_send(op);
}

void gateway_update(gateway *gw, unsigned updop, const char *key, size_t keylen,
                    uint32_t flags, int64_t exptime, const void *data, size_t datalen,
                    uint64_t arg, bool async, gateway_update_cb cb, void *ud)
{
    /* the clocktime field is ignored by the server; the meta says "our item form" */
    uint8_t hdr[GATEWAY_ITEM_HEADER_LEN];
    gateway_item_header(gw, flags, exptime, hdr);
    uint8_t uflags = (updop & GATEWAY_UPD_VALUE ? UPDATE_FLAG_VALUE : 0) |
                     (updop & GATEWAY_UPD_CREATE ? UPDATE_FLAG_CREATE : 0) |
                     (updop & GATEWAY_UPD_TTL ? UPDATE_FLAG_TTL : 0);
    updop &= 0xff;
    gw_op *op = op_start_value(gw, OP_UPDATE, key, keylen, updop, 0, GATEWAY_META_ITEM, hdr,
                               sizeof hdr, data, datalen);
    op->uflags = uflags;
    op->cb.update = cb;
    op->ud = ud;
    op->arg = arg;
    op->async = async;
    op->raw_ok = gw_item_layout(gw) == 0;
    op_send(op);
}

/* ------------------------------------------------------------------ flush_all */

/* One flush_all fan-out: SRV_FLUSH to every distinct active node. */
typedef struct gw_flush {
    gateway_store_cb cb;
    void *ud;
    unsigned pending;
    bool failed;
} gw_flush;

static void on_flush_reply(rpc_session *s, const rpc_result *r, void *ud)
{
    gw_flush *f = ud;
    bool b = false;
    if (r->err != RPC_OK || !kwire_get_bool(r->result, &b) || !b)
        f->failed = true;
    if (--f->pending)
        return;
    if (f->cb)
        f->cb(f->ud, f->failed ? GATEWAY_FAILED : GATEWAY_OK, 0);
    free(f);
}

static void flush_none_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    gw_flush *f = w->data;
    ev_timer_stop(loop, w);
    if (f->cb)
        f->cb(f->ud, GATEWAY_FAILED, 0);
    free(f);
    free(w);
}

void gateway_flush_all(gateway *gw, int64_t when, gateway_store_cb cb, void *ud)
{
    uint32_t at = gateway_abs_time(when), now = (uint32_t)time(NULL);
    uint32_t delay = at > now ? at - now : 0;
    gw_flush *f = xcalloc(1, sizeof *f);
    f->cb = cb;
    f->ud = ud;
    /* distinct addresses of whs ∪ rhs; the node lists are small (one per server) */
    size_t n = gw->whs.hs.nnodes + gw->rhs.hs.nnodes;
    const kaddr **seen = n ? xcalloc(n, sizeof *seen) : NULL;
    size_t nseen = 0;
    gw_space *spaces[2] = {&gw->whs, &gw->rhs};
    for (int si = 0; si < 2; si++) {
        gw_space *sp = spaces[si];
        for (size_t i = 0; i < sp->hs.nnodes; i++) {
            const hs_node *nd = &sp->hs.nodes[i];
            if (!nd->active)
                continue;
            bool dup = false;
            for (size_t j = 0; j < nseen && !dup; j++)
                dup = kaddr_eq(seen[j], &nd->addr);
            if (dup)
                continue;
            seen[nseen++] = &nd->addr;
            rpc_session *s = gw_space_session(gw, sp, i);
            f->pending++;
            msgpack_packer *pk = rpc_call_begin(s, SRV_FLUSH, RPC_DEFAULT_TIMEOUT_STEPS,
                                                on_flush_reply, f);
            msgpack_pack_array(pk, 1);
            msgpack_pack_uint32(pk, delay);
            rpc_call_end(s);
        }
    }
    free(seen);
    if (f->pending == 0) {
        /* no server: fail from the loop, callbacks never run inside the call */
        ev_timer *t = xmalloc(sizeof *t);
        ev_timer_init(t, flush_none_cb, 0.0, 0.0);
        t->data = f;
        ev_timer_start(gw->loop, t);
        log_warn("req_flush_all FAILED: No server");
    }
}

/* ------------------------------------------------------------------ items */

/* A stored value's item; now 0: expiry not checked. */
static bool gw_item_read(const gateway *gw, const gateway_value *v, uint32_t now,
                         gateway_item *it)
{
    item d;
    if (!item_decode(v->meta, v->payload, v->len, gw_item_layout(gw), &d) ||
        (now != 0 && item_expired(&d, now)))
        return false;
    it->flags = d.flags;
    it->exptime = d.exptime;
    it->cas = item_cas(&d, v->ct);       /* memcached keeps the CAS across touch */
    it->data = d.data;
    it->len = d.len;
    return true;
}

bool gateway_item_decode(const gateway *gw, const gateway_value *v, gateway_item *it)
{
    return gw_item_read(gw, v, gw->now ? gw->now : 1, it);
}

bool gateway_item_decode_any(const gateway *gw, const gateway_value *v, gateway_item *it)
{
    return gw_item_read(gw, v, 0, it);
}

bool gateway_value_parse(const void *dbvalue, size_t len, gateway_value *v)
{
    if (!dbvalue_is_live(len))
        return false;
    v->ct = dbvalue_clocktime(dbvalue);
    v->meta = dbvalue_meta(dbvalue);
    v->payload = (const uint8_t *)dbvalue + DBVALUE_HEADER_LEN;
    v->len = len - DBVALUE_HEADER_LEN;
    return true;
}

void gateway_item_header(const gateway *gw, uint32_t flags, int64_t exptime,
                         uint8_t hdr[GATEWAY_ITEM_HEADER_LEN])
{
    (void)gw;
    be32_put(hdr, flags);
    be32_put(hdr + 4, gateway_abs_time(exptime));
}

uint32_t gateway_abs_time(int64_t t)
{
    if (t == 0)
        return 0;
    if (t < 0)
        return 1;                                  /* long past: expired at once */
    if (t <= GW_RELATIVE_TIME_MAX)
        /* the current second, not the 0.5 s cached clock: a short time must not lose
         * half a second (memcached: current_time + exptime) */
        return (uint32_t)time(NULL) + (uint32_t)t;
    return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

/* ------------------------------------------------------------------ life cycle */

void gw_ops_close(gateway *gw)
{
    while (gw->live)
        op_finish(gw->live, GATEWAY_FAILED, NULL, 0);
    while (gw->pool) {
        gw_op *op = gw->pool;
        gw->pool = op->next;
        free(op->buf);
        free(op);
    }
}
