/* gateway.c - kumo-gateway's cluster side: hash spaces, managers, routing, sessions. */
#include "gateway/gateway_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logic/hashspace.h"
#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"
#include "rpc/rpc.h"

/* ------------------------------------------------------------------ hash spaces */

static void space_init(gw_space *sp)
{
    hashspace_init(&sp->hs);
    sp->sess = NULL;
    sp->nsess = 0;
}

static void space_drop_sessions(gw_space *sp)
{
    for (size_t i = 0; i < sp->nsess; i++)
        if (sp->sess[i])
            rpc_session_unref(sp->sess[i]);
    free(sp->sess);
    sp->sess = NULL;
    sp->nsess = 0;
}

static void space_destroy(gw_space *sp)
{
    space_drop_sessions(sp);
    hashspace_destroy(&sp->hs);
}

/* algorithms.md §4: replace the local copy if it is empty, or if the seed is non-empty
 * and not older (local.timestamp <= seed.timestamp, in ClockTime order). */
static bool space_accept(gw_space *sp, hashspace *seed)
{
    bool take = hashspace_empty(&sp->hs) ||
                (!hashspace_empty(seed) && !clocktime_less(seed->clocktime, sp->hs.clocktime));
    if (!take)
        return false;
    hashspace_swap(&sp->hs, seed);
    space_drop_sessions(sp);
    if (sp->hs.nnodes) {
        sp->sess = xcalloc(sp->hs.nnodes, sizeof *sp->sess);
        sp->nsess = sp->hs.nnodes;
    }
    return true;
}

rpc_session *gw_space_session(gateway *gw, gw_space *sp, size_t idx)
{
    rpc_session *s = sp->sess[idx];
    if (s && rpc_session_is_lost(s)) {
        rpc_session_unref(s);
        s = NULL;
    }
    if (!s) {
        s = rpc_node_session(gw->node, &sp->hs.nodes[idx].addr, false);
        rpc_session_ref(s);
        sp->sess[idx] = s;
        if (sp == &gw->whs)
            gw_peer_refresh(gw, s);   /* learn its kind before the first Update needs it */
    }
    return s;
}

double gw_attempt_timeout(const gateway *gw, rpc_session *s, bool get, double remaining)
{
    if (!(gw->cfg.request_timeout > 0))
        return 0.0;
    remaining -= 2 * RPC_DEADLINE_RESOLUTION;   /* the answer is due by the budget's end */
    double t = remaining;
    if (get) {
        double srtt, var;
        t = gw->cfg.attempt_max;
        if (rpc_session_rtt(s, &srtt, &var)) {
            t = srtt + 4 * var;
            if (t < 4 * srtt)
                t = 4 * srtt;
            if (t > gw->cfg.attempt_max)
                t = gw->cfg.attempt_max;
        }
        if (t < gw->cfg.attempt_min)
            t = gw->cfg.attempt_min;
        if (remaining > 0 && t > remaining)
            t = remaining;
    }
    return t > 0.01 ? t : 0.01;
}

bool gw_session_suspect(gateway *gw, rpc_session *s)
{
    return rpc_session_timeouts(s) > 0 ||
           (gw->nunreachable > 0 && gw_peer_unreachable(gw, rpc_session_addr(s)));
}

/* ud of a write-path probe: whose unreachable mark its answer clears. */
typedef struct gw_probe {
    gateway *gw;
    kaddr addr;
} gw_probe;

static void write_probe_cb(rpc_session *s, const rpc_result *r, void *ud)
{
    gw_probe *p = ud;
    (void)s;
    if (r->err == RPC_OK && !p->gw->closing)
        gw_peer_set_unreachable(p->gw, &p->addr, false);
    free(p);
}

bool gw_write_blocked(gateway *gw, rpc_session *s)
{
    if (!(gw->cfg.request_timeout > 0))
        return false;
    if (rpc_session_timeouts(s) < GW_SUSPECT_TIMEOUTS &&
        !(gw->nunreachable > 0 && gw_peer_unreachable(gw, rpc_session_addr(s))))
        return false;
    if (ev_now(gw->loop) - rpc_session_last_call(s) >= GW_PROBE_INTERVAL) {
        /* a cheap probe (GetStatus pid): its answer, when it comes, clears the
         * suspicion in the rpc layer and the unreachable mark; no client request waits
         * for it */
        gw_probe *p = xmalloc(sizeof *p);
        p->gw = gw;
        p->addr = *rpc_session_addr(s);
        msgpack_packer *pk = rpc_call_begin_timed(s, SRV_GET_STATUS, gw->cfg.attempt_max,
                                                  write_probe_cb, p);
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint32(pk, STATUS_PID);
        rpc_call_end(s);
    }
    return true;
}

void gw_write_unreachable(gateway *gw, rpc_session *s)
{
    if (rpc_session_is_lost(s))
        return;
    char a[KADDR_STRLEN];
    log_info("%s did not answer a write: dropping its connection; writes go through a "
             "relay until it answers", kaddr_format(rpc_session_addr(s), a));
    /* marked first: the calls failed by the abort are sent again at once, and must see it */
    gw_peer_set_unreachable(gw, rpc_session_addr(s), true);
    rpc_session_abort(s);
}

/* Accept a HashSpacePair [wseed, rseed] (wire.md §7.8).  False on a type error. */
static bool gw_accept_pair(gateway *gw, const msgpack_object *pair)
{
    const msgpack_object *w = kwire_array_at(pair, 0), *r = kwire_array_at(pair, 1);
    if (!w || !r)
        return false;
    hashspace ws, rs;
    hashspace_init(&ws);
    hashspace_init(&rs);
    bool ok = kwire_get_seed(w, &ws) && kwire_get_seed(r, &rs);
    if (ok) {
        bool cw = space_accept(&gw->whs, &ws);
        bool cr = space_accept(&gw->rhs, &rs);
        /* Connect to every active server now and learn its kind (kumofs-c or original):
         * an Update to a server of unknown kind waits for that answer, and a get the
         * same client pipelined after it would overtake it (a `gat -1` then `get` saw
         * the value).  Done here, the answers are in before the first client needs them. */
        for (size_t i = 0; cw && i < gw->whs.hs.nnodes; i++)
            if (gw->whs.hs.nodes[i].active)
                gw_space_session(gw, &gw->whs, i);
        if (cw || cr)
            log_debug("hash space updated: whs %zu nodes, rhs %zu nodes",
                      gw->whs.hs.nnodes, gw->rhs.hs.nnodes);
    }
    hashspace_destroy(&ws);
    hashspace_destroy(&rs);
    return ok;
}

/* ------------------------------------------------------------------ managers */

static void mgr_request(gw_manager *m);

static void mgr_done(rpc_session *s, const rpc_result *r, void *ud)
{
    gw_manager *m = ud;
    m->pending = false;
    if (m->gw->closing)
        return;
    if (r->err != RPC_OK) {
        char a[KADDR_STRLEN];
        log_debug("HashSpaceRequest to %s failed: %d", kaddr_format(&m->addr, a), r->err);
        /* algorithms.md §4: re-sent at once while the session lives; a lost session is
         * retried by the keepalive.  Remote errors are not retried in a tight loop. */
        if (r->err == RPC_TIMEOUT && !rpc_session_is_lost(s))
            mgr_request(m);
        return;
    }
    if (!gw_accept_pair(m->gw, r->result))
        log_warn("bad HashSpaceRequest result from manager");
}

static void mgr_request(gw_manager *m)
{
    if (m->pending)
        return;
    rpc_session *s = rpc_node_session(m->gw->node, &m->addr, false);
    if (s != m->sess) {
        if (m->sess)
            rpc_session_unref(m->sess);
        rpc_session_ref(s);
        m->sess = s;
    }
    m->pending = true;
    msgpack_packer *pk = rpc_call_begin(s, MGR_HASH_SPACE_REQUEST, RPC_DEFAULT_TIMEOUT_STEPS,
                                        mgr_done, m);
    msgpack_pack_array(pk, 0);
    rpc_call_end(s);
}

void gw_renew(gateway *gw)
{
    for (int i = 0; i < gw->nmgr; i++)
        mgr_request(&gw->mgr[i]);
}

/* algorithms.md §4 renew threshold: every -rn+1 errors re-fetch the hash spaces. */
void gw_renew_check(gateway *gw)
{
    if (gw->renew_counter >= gw->cfg.renew_threshold) {
        gw->renew_counter = 0;
        gw_renew(gw);
    } else {
        gw->renew_counter++;
    }
}

/* Incoming requests: only HashSpacePush, on our own plain connection to a manager
 * (wire.md §8.3). */
static void gw_dispatch(const rpc_request *req, void *ud)
{
    gateway *gw = ud;
    if (req->cluster || req->method != GW_HASH_SPACE_PUSH ||
        req->params->type != MSGPACK_OBJECT_ARRAY || !gw_accept_pair(gw, req->params)) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    rpc_reply_bool(req->session, req->msgid, true);
}


/* ------------------------------------------------------------------ item count */

/* One curr_items estimate: GetStatus items to every active rhs node. */
typedef struct gw_items {
    gateway_items_cb cb;
    void *ud;
    unsigned pending, asked, answered;
    uint64_t sum;
} gw_items;

static void items_done(rpc_session *s, const rpc_result *r, void *ud)
{
    gw_items *q = ud;
    uint64_t n;
    if (r->err == RPC_OK && kwire_get_u64(r->result, &n)) {
        q->sum += n;
        q->answered++;
    }
    if (--q->pending)
        return;
    /* every key lives on 3 servers (fewer when the cluster is smaller); servers that did
     * not answer are assumed to hold as much as the others */
    unsigned copies = q->asked < 3 ? q->asked : 3;
    uint64_t est = q->answered ? q->sum * q->asked / q->answered / copies : 0;
    if (q->cb)
        q->cb(q->ud, q->answered > 0, est);
    free(q);
}

void gateway_count_items(gateway *gw, gateway_items_cb cb, void *ud)
{
    gw_space *sp = &gw->rhs;
    gw_items *q = xcalloc(1, sizeof *q);
    q->cb = cb;
    q->ud = ud;
    for (size_t i = 0; i < sp->hs.nnodes; i++)
        if (sp->hs.nodes[i].active)
            q->asked++;
    q->pending = q->asked;
    if (q->asked == 0) {
        free(q);
        if (cb)
            cb(ud, false, 0);
        return;
    }
    for (size_t i = 0; i < sp->hs.nnodes; i++) {
        if (!sp->hs.nodes[i].active)
            continue;
        rpc_session *s = gw_space_session(gw, sp, i);
        msgpack_packer *pk = rpc_call_begin(s, SRV_GET_STATUS, RPC_DEFAULT_TIMEOUT_STEPS,
                                            items_done, q);
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint32(pk, STATUS_ITEMS);
        rpc_call_end(s);
    }
}

/* ------------------------------------------------------------------ life cycle */

gateway *gateway_new(struct ev_loop *loop, const gateway_config *cfg)
{
    gateway *gw = xcalloc(1, sizeof *gw);
    gw->loop = loop;
    gw->cfg = *cfg;
    gw->prefixlen = cfg->key_prefix ? strlen(cfg->key_prefix) : 0;
    gw->now = (uint32_t)time(NULL);
    space_init(&gw->whs);
    space_init(&gw->rhs);
    gw->mgr[0].gw = gw;
    gw->mgr[0].addr = cfg->manager1;
    gw->nmgr = 1;
    if (!kaddr_is_null(&cfg->manager2)) {
        gw->mgr[1].gw = gw;
        gw->mgr[1].addr = cfg->manager2;
        gw->nmgr = 2;
    }
    rpc_config rc = {
        .role = RPC_ROLE_NONE,
        .connect_timeout = cfg->connect_timeout,
        .connect_retry_limit = cfg->connect_retry_limit,
        .clock_interval = cfg->clock_interval,
        .dispatch = gw_dispatch,
        .ud = gw,
    };
    gw->node = rpc_node_new(loop, &rc);
    return gw;
}

void gateway_start(gateway *gw)
{
    gw_renew(gw);
}

void gateway_tick(gateway *gw)
{
    gw->now = (uint32_t)time(NULL);
}

uint32_t gateway_now(const gateway *gw)
{
    return gw->now;
}

void gateway_keepalive(gateway *gw)
{
    /* algorithms.md §3: for each manager without a live connection, HashSpaceRequest
     * (which also reconnects) */
    for (int i = 0; i < gw->nmgr; i++) {
        gw_manager *m = &gw->mgr[i];
        if (!m->sess || rpc_session_is_lost(m->sess) || !rpc_session_is_connected(m->sess))
            mgr_request(m);
    }
}

void gateway_free(gateway *gw)
{
    if (!gw)
        return;
    gw->closing = true;
    for (int i = 0; i < gw->nmgr; i++)
        if (gw->mgr[i].sess)
            rpc_session_unref(gw->mgr[i].sess);
    space_drop_sessions(&gw->whs);
    space_drop_sessions(&gw->rhs);
    rpc_node_free(gw->node);        /* pending calls complete here, as GATEWAY_FAILED */
    gw_ops_close(gw);               /* ops that were waiting on a delay timer */
    space_destroy(&gw->whs);
    space_destroy(&gw->rhs);
    free(gw);
}
