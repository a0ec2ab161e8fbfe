/* handlers.c - kumo-manager's incoming requests: validation and the methods of wire.md §8.1. */
#include "manager/handlers.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>

#include "logic/clocktime.h"
#include "logic/hashspace.h"
#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "manager/manager_internal.h"

/* ------------------------------------------------------------------ request handlers
 * Each returns false when the params do not have the expected form; the dispatcher then
 * answers PROTOCOL_ERROR (wire.md §5). */

static void reply_seed(rpc_session *s, uint32_t msgid, const hashspace *hs)
{
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    msgpack_pack_nil(pk);
    kwire_pack_seed(pk, hs);
    rpc_reply_end(s);
}

static void reply_pair(manager *m, rpc_session *s, uint32_t msgid)
{
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 2);
    kwire_pack_seed(pk, &m->whs);
    kwire_pack_seed(pk, &m->rhs);
    rpc_reply_end(s);
}

static bool param_u32(const rpc_request *req, uint32_t i, uint32_t *v)
{
    const msgpack_object *o = kwire_array_at(req->params, i);
    return o != NULL && kwire_get_u32(o, v);
}

static bool param_u64(const rpc_request *req, uint32_t i, uint64_t *v)
{
    const msgpack_object *o = kwire_array_at(req->params, i);
    return o != NULL && kwire_get_u64(o, v);
}

static bool param_bool(const rpc_request *req, uint32_t i, bool *v)
{
    const msgpack_object *o = kwire_array_at(req->params, i);
    return o != NULL && kwire_get_bool(o, v);
}

static bool param_seed(const rpc_request *req, uint32_t i, hashspace *hs)
{
    const msgpack_object *o = kwire_array_at(req->params, i);
    return o != NULL && kwire_get_seed(o, hs);
}

static bool from_partner(const manager *m, const rpc_request *req)
{
    return mgr_has_partner(m) && kaddr_eq(rpc_session_addr(req->session), &m->cfg.partner);
}

static bool h_keep_alive(manager *m, const rpc_request *req)
{
    uint32_t clock;
    if (!param_u32(req, 0, &clock))
        return false;
    kclock_merge(&m->clock, clock);
    rpc_reply_nil(req->session, req->msgid);
    return true;
}

static bool h_hash_space_request(manager *m, const rpc_request *req)
{
    reply_pair(m, req->session, req->msgid);
    return true;
}

/* Seed acceptance of §9.2: a non-empty seed replaces an empty or not newer local space. */
static bool accept_seed(hashspace *local, hashspace *seed)
{
    if (hashspace_empty(seed))
        return false;
    if (!hashspace_empty(local) && clocktime_less(seed->clocktime, local->clocktime))
        return false;
    hashspace_swap(local, seed);
    return true;
}

/* True if ours is non-empty and the partner's seed is empty or older. */
static bool seed_behind(const hashspace *seed, const hashspace *ours)
{
    return !hashspace_empty(ours) &&
           (hashspace_empty(seed) || clocktime_less(seed->clocktime, ours->clocktime));
}

static bool h_hash_space_sync(manager *m, const rpc_request *req)
{
    hashspace w, r;
    uint32_t clock;
    hashspace_init(&w);
    hashspace_init(&r);
    bool ok = param_seed(req, 0, &w) && param_seed(req, 1, &r) && param_u32(req, 2, &clock);
    if (ok) {
        if (!from_partner(m, req)) {
            rpc_reply_error(req->session, req->msgid, RPC_SERVER_ERROR);
        } else {
            kclock_merge(&m->clock, clock);
            bool behind = seed_behind(&w, &m->whs) || seed_behind(&r, &m->rhs);
            bool changed = accept_seed(&m->whs, &w);
            changed |= accept_seed(&m->rhs, &r);
            mgr_newcomers_adopt(m);
            /* kumofs-c: a partner that restarted faster than our connect retries gave up
             * on it is never "lost" and "connected" again here (the session just
             * reconnects), so the §9.2 exchange on connect does not happen on our side.
             * Its own, empty or older, spaces tell: answer with ours. */
            if (behind)
                mgr_sync_partner(m);
            if (changed)
                rpc_reply_bool(req->session, req->msgid, true);
            else
                rpc_reply_nil(req->session, req->msgid);
        }
    }
    hashspace_destroy(&w);
    hashspace_destroy(&r);
    return ok;
}

static bool h_whash_space_request(manager *m, const rpc_request *req)
{
    reply_seed(req->session, req->msgid, &m->whs);
    return true;
}

static bool h_rhash_space_request(manager *m, const rpc_request *req)
{
    reply_seed(req->session, req->msgid, &m->rhs);
    return true;
}

/* ReplaceCopyEnd / ReplaceDeleteEnd bookkeeping (algorithms.md §6.6, §6.7).  Returns
 * true when this report emptied the remaining list. */
static bool progress_report(mgr_progress *p, clocktime_t t, const kaddr *from)
{
    if (!p->valid || p->time != t)
        return false;
    return mgr_addr_list_remove(&p->remaining, from) && p->remaining.n == 0;
}

static bool h_replace_copy_end(manager *m, const rpc_request *req)
{
    uint64_t t;
    uint32_t clock;
    if (!param_u64(req, 0, &t) || !param_u32(req, 1, &clock))
        return false;
    kclock_merge(&m->clock, clock);
    rpc_reply_bool(req->session, req->msgid, true);
    char buf[KADDR_STRLEN];
    log_debug("replace copy end from %s time(%" PRIu64 ")",
              kaddr_format(rpc_session_addr(req->session), buf), t);
    if (progress_report(&m->copying, t, rpc_session_addr(req->session)))
        mgr_finish_copy(m);
    return true;
}

static bool h_replace_delete_end(manager *m, const rpc_request *req)
{
    uint64_t t;
    uint32_t clock;
    if (!param_u64(req, 0, &t) || !param_u32(req, 1, &clock))
        return false;
    kclock_merge(&m->clock, clock);
    rpc_reply_bool(req->session, req->msgid, true);
    if (progress_report(&m->deleting, t, rpc_session_addr(req->session))) {
        m->deleting.valid = false;
        log_info("replace finished time(%" PRIu64 ")", t);
    }
    return true;
}

/* The partner's side of the election, decision table of algorithms.md §9.3. */
static bool h_replace_election(manager *m, const rpc_request *req)
{
    hashspace seed;
    uint32_t clock;
    hashspace_init(&seed);
    bool ok = param_seed(req, 0, &seed) && param_u32(req, 1, &clock);
    if (!ok) {
        hashspace_destroy(&seed);
        return false;
    }
    if (!from_partner(m, req)) {
        rpc_reply_error(req->session, req->msgid, RPC_SERVER_ERROR);
    } else {
        kclock_merge(&m->clock, clock);
        const kaddr *sender = rpc_session_addr(req->session);
        if (hashspace_empty(&seed) || clocktime_less(seed.clocktime, m->whs.clocktime)) {
            rpc_reply_bool(req->session, req->msgid, true);      /* sender is obsolete */
        } else if (clocktime_less(m->whs.clocktime, seed.clocktime) ||
                   hashspace_nodes_equal(&m->whs, &seed)) {
            /* "double replace guard": deliberately no answer; the sender times out and
             * then starts the replace itself (as the original does) */
            log_info("replace election: double replace guard");
        } else if (kaddr_cmp(sender, &m->cfg.self) < 0) {
            rpc_reply_nil(req->session, req->msgid);             /* sender replaces */
        } else {
            mgr_attach_new_servers(m);
            mgr_detach_fault_servers(m);
            mgr_start_replace(m, false);
            rpc_reply_bool(req->session, req->msgid, true);
        }
    }
    hashspace_destroy(&seed);
    return true;
}

static bool h_get_nodes_info(manager *m, const rpc_request *req)
{
    mgr_newcomers_prune(m);
    msgpack_packer *pk = rpc_reply_begin(req->session, req->msgid);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 2);
    kwire_pack_seed(pk, &m->whs);
    msgpack_pack_array(pk, m->newcomers.n);
    for (size_t i = 0; i < m->newcomers.n; i++)
        kwire_pack_addr(pk, &m->newcomers.v[i]);
    rpc_reply_end(req->session);
    return true;
}

/* AttachNewServers / DetachFaultServers [replace]: the change, then the replace if asked. */
static bool change_then_replace(manager *m, const rpc_request *req, void (*change)(manager *))
{
    bool replace;
    if (!param_bool(req, 0, &replace))
        return false;
    change(m);
    if (replace)
        mgr_start_replace(m, false);
    rpc_reply_nil(req->session, req->msgid);
    return true;
}

static bool h_attach_new_servers(manager *m, const rpc_request *req)
{
    return change_then_replace(m, req, mgr_attach_new_servers);
}

static bool h_detach_fault_servers(manager *m, const rpc_request *req)
{
    return change_then_replace(m, req, mgr_detach_fault_servers);
}

static void backup_done(rpc_session *s, const rpc_result *r, void *ud)
{
    (void)ud;
    char buf[KADDR_STRLEN];
    if (r->err != RPC_OK)
        log_warn("backup failed on %s (error %d)", kaddr_format(rpc_session_addr(s), buf), r->err);
}

/* algorithms.md §10: forward to every connected server, answer without waiting. */
static bool h_create_backup(manager *m, const rpc_request *req)
{
    const msgpack_object *o = kwire_array_at(req->params, 0);
    const char *suffix;
    size_t len;
    if (o == NULL || !kwire_get_raw(o, &suffix, &len))
        return false;
    if (len == 0) {
        static const char msg[] = "empty suffix";
        msgpack_packer *pk = rpc_reply_begin(req->session, req->msgid);
        kwire_pack_raw(pk, msg, sizeof msg - 1);
        msgpack_pack_nil(pk);
        rpc_reply_end(req->session);
        return true;
    }
    mgr_sess_list servers = {0};
    mgr_connected_servers(m, &servers);
    for (size_t i = 0; i < servers.n; i++) {
        msgpack_packer *pk = rpc_call_begin(servers.v[i], SRV_CREATE_BACKUP,
                                            RPC_DEFAULT_TIMEOUT_STEPS, backup_done, m);
        msgpack_pack_array(pk, 1);
        kwire_pack_raw(pk, suffix, len);
        rpc_call_end(servers.v[i]);
    }
    mgr_sess_list_release(&servers);
    rpc_reply_nil(req->session, req->msgid);
    return true;
}

/* wire.md §8.1: a change is answered twice on the same msgid (new value, then nil). */
static bool h_set_auto_replace(manager *m, const rpc_request *req)
{
    bool enable;
    if (!param_bool(req, 0, &enable))
        return false;
    if (enable == m->auto_replace) {
        rpc_reply_nil(req->session, req->msgid);
        return true;
    }
    m->auto_replace = enable;
    log_info("auto replace %s", enable ? "enabled" : "disabled");
    if (enable) {
        mgr_attach_new_servers(m);
        mgr_detach_fault_servers(m);
    } else {
        m->election_ticks = -1;
    }
    rpc_reply_bool(req->session, req->msgid, enable);
    rpc_reply_nil(req->session, req->msgid);
    return true;
}

static bool h_start_replace(manager *m, const rpc_request *req)
{
    bool full = false;
    const msgpack_object *o = kwire_array_at(req->params, 0);
    if (o != NULL && !kwire_get_bool(o, &full))   /* full defaults to false (wire.md §6) */
        return false;
    mgr_start_replace(m, full);
    rpc_reply_nil(req->session, req->msgid);
    return true;
}

/* ------------------------------------------------------------------ dispatch */

typedef bool (*handler_fn)(manager *m, const rpc_request *req);

static const struct {
    uint32_t method;
    bool cluster;            /* true: cluster connections only; false: plain clients only */
    handler_fn fn;
} handlers[] = {
    { MGR_KEEP_ALIVE, true, h_keep_alive },
    { MGR_HASH_SPACE_REQUEST, false, h_hash_space_request },
    { MGR_HASH_SPACE_SYNC, true, h_hash_space_sync },
    { MGR_WHASH_SPACE_REQUEST, true, h_whash_space_request },
    { MGR_RHASH_SPACE_REQUEST, true, h_rhash_space_request },
    { MGR_REPLACE_COPY_END, true, h_replace_copy_end },
    { MGR_REPLACE_DELETE_END, true, h_replace_delete_end },
    { MGR_REPLACE_ELECTION, true, h_replace_election },
    { MGR_GET_NODES_INFO, false, h_get_nodes_info },
    { MGR_ATTACH_NEW_SERVERS, false, h_attach_new_servers },
    { MGR_DETACH_FAULT_SERVERS, false, h_detach_fault_servers },
    { MGR_CREATE_BACKUP, false, h_create_backup },
    { MGR_SET_AUTO_REPLACE, false, h_set_auto_replace },
    { MGR_START_REPLACE, false, h_start_replace },
};

void handlers_dispatch(const rpc_request *req, void *ud)
{
    manager *m = ud;
    if (m->closing)
        return;
    if (req->params == NULL || req->params->type != MSGPACK_OBJECT_ARRAY) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        if (handlers[i].method != req->method)
            continue;
        /* wire.md §4.3: a method on the wrong kind of connection is an unknown method */
        if (handlers[i].cluster != req->cluster || !handlers[i].fn(m, req))
            rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
}

