/* manager.c - kumo-manager's cluster logic: hash spaces, newcomers, attach/detach, replace
 * bookkeeping, keepalive, partner sync and replace election (algorithms.md §3, §6, §9). */
#include "manager/manager.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "logic/clocktime.h"
#include "logic/hashspace.h"
#include "logic/kwire.h"
#include "logic/binlog.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"
#include "manager/handlers.h"
#include "manager/manager_internal.h"
#include "manager/watch.h"
#include "rpc/rpc.h"

/* algorithms.md §3: a session whose keepalives fail more than this often in a row is
 * shut down, which turns a hung-but-connected server into a lost node. */
#define KEEPALIVE_FAIL_LIMIT 5

/* How long a replace waits for an active server that is not connected to this manager
 * (mgr_start_replace), in 0.5 s ticks; then it goes on without it, as the original. */
#define UNSENT_GRACE_TICKS 20

/* ------------------------------------------------------------------ small helpers */

static void addr_list_push(mgr_addr_list *l, const kaddr *a)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = *a;
}

static bool addr_list_contains(const mgr_addr_list *l, const kaddr *a)
{
    for (size_t i = 0; i < l->n; i++)
        if (kaddr_eq(&l->v[i], a))
            return true;
    return false;
}

/* Removes every occurrence; returns true if any was present. */
bool mgr_addr_list_remove(mgr_addr_list *l, const kaddr *a)
{
    size_t j = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!kaddr_eq(&l->v[i], a))
            l->v[j++] = l->v[i];
    bool removed = j != l->n;
    l->n = j;
    return removed;
}

static void addr_list_copy(mgr_addr_list *dst, const mgr_addr_list *src)
{
    dst->n = 0;
    for (size_t i = 0; i < src->n; i++)
        addr_list_push(dst, &src->v[i]);
}

static void addr_list_free(mgr_addr_list *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void sess_list_add(mgr_sess_list *l, rpc_session *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == s)
            return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    rpc_session_ref(s);
    l->v[l->n++] = s;
}

void mgr_sess_list_release(mgr_sess_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        rpc_session_unref(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void collect_server_fn(rpc_session *s, void *ud)
{
    if (rpc_session_role(s) == RPC_ROLE_SERVER)
        sess_list_add(ud, s);
}

static void collect_any_fn(rpc_session *s, void *ud)
{
    sess_list_add(ud, s);
}

/* Every server with a live cluster connection, attached or not. */
void mgr_connected_servers(manager *m, mgr_sess_list *out)
{
    rpc_node_foreach_cluster(m->node, collect_server_fn, out);
}

static const char *fmt_addr(const kaddr *a, char buf[KADDR_STRLEN])
{
    return kaddr_format(a, buf);
}

bool mgr_has_partner(const manager *m)
{
    return !kaddr_is_null(&m->cfg.partner);
}

/* A server's session "is still alive" (algorithms.md §6.3): it exists and has not been
 * given up, even if it is reconnecting right now. */
static bool server_alive(manager *m, const kaddr *a)
{
    rpc_session *s = rpc_node_find_session(m->node, a);
    return s != NULL && !rpc_session_is_lost(s);
}

/* Drop newcomers that are active in whs or whose session died (wire.md §8.1 HashSpaceSync). */
void mgr_newcomers_prune(manager *m)
{
    size_t j = 0;
    for (size_t i = 0; i < m->newcomers.n; i++) {
        const kaddr *a = &m->newcomers.v[i];
        if (!hashspace_is_active(&m->whs, a) && server_alive(m, a))
            m->newcomers.v[j++] = *a;
    }
    m->newcomers.n = j;
}

/* After the partner's whs replaced ours: a server connected here that the new whs does
 * not hold active is a newcomer (algorithms.md §6: "connected but not active in whs").
 * After a split heals, the partner may have marked fault a server that never left us; it
 * never connects again here, so without this no attach on this manager could bring it
 * back. */
static void schedule_election(manager *m);

void mgr_newcomers_adopt(manager *m)
{
    bool added = false;
    mgr_newcomers_prune(m);
    mgr_sess_list l = {0};
    mgr_connected_servers(m, &l);
    for (size_t i = 0; i < l.n; i++) {
        const kaddr *a = rpc_session_addr(l.v[i]);
        if (!rpc_session_is_lost(l.v[i]) && !hashspace_is_active(&m->whs, a)
                && !addr_list_contains(&m->newcomers, a)) {
            addr_list_push(&m->newcomers, a);
            added = true;
        }
    }
    mgr_sess_list_release(&l);
    if (added && m->auto_replace)
        schedule_election(m);
}

/* Mark a node fault with a new timestamp if it is present (algorithms.md §6.2). */
static bool mark_fault(hashspace *hs, const kaddr *a, clocktime_t ct)
{
    if (hashspace_index(hs, a) < 0)
        return false;
    hashspace_set_active(hs, a, false);
    hs->clocktime = ct;
    return true;
}

/* ------------------------------------------------------------------ outgoing messages */

/* HashSpaceSync([whs, rhs, clock]) - method 2 in both the manager's and the server's
 * number space (wire.md §8.1, §8.2).  Replies are ignored (§9.2: no retry). */
static void send_sync(manager *m, rpc_session *s)
{
    msgpack_packer *pk = rpc_call_begin(s, MGR_HASH_SPACE_SYNC, RPC_DEFAULT_TIMEOUT_STEPS,
                                        NULL, NULL);
    msgpack_pack_array(pk, 3);
    kwire_pack_seed(pk, &m->whs);
    kwire_pack_seed(pk, &m->rhs);
    msgpack_pack_uint64(pk, kclock_incr(&m->clock));
    rpc_call_end(s);
}

static void sync_partner(manager *m)
{
    if (!mgr_has_partner(m))
        return;
    send_sync(m, rpc_node_session(m->node, &m->cfg.partner, true));
}

void mgr_sync_partner(manager *m)
{
    sync_partner(m);
}

/* HashSpacePush([whs, rhs]) to every plain client: gateways and tools (wire.md §8.3). */
static void push_client_fn(rpc_session *s, void *ud)
{
    manager *m = ud;
    msgpack_packer *pk = rpc_call_begin(s, GW_HASH_SPACE_PUSH, RPC_DEFAULT_TIMEOUT_STEPS,
                                        NULL, NULL);
    msgpack_pack_array(pk, 2);
    kwire_pack_seed(pk, &m->whs);
    kwire_pack_seed(pk, &m->rhs);
    rpc_call_end(s);
}

static void push_clients(manager *m)
{
    mgr_sess_list l = {0};
    rpc_node_foreach_client(m->node, collect_any_fn, &l);
    for (size_t i = 0; i < l.n; i++)
        push_client_fn(l.v[i], m);
    mgr_sess_list_release(&l);
}

/* ------------------------------------------------------------------ attach / detach / replace */

/* algorithms.md §6.3: newcomers with a live session become active whs nodes. */
void mgr_attach_new_servers(manager *m)
{
    char buf[KADDR_STRLEN];
    clocktime_t ct = kclock_event(&m->clock);
    size_t changes = 0;

    for (size_t i = 0; i < m->newcomers.n; i++) {
        const kaddr *a = &m->newcomers.v[i];
        if (server_alive(m, a) && !hashspace_is_active(&m->whs, a))
            changes++;
    }
    if (changes > 0) {
        log_info("update hash space at time(%" PRIu64 ")", ct);
        for (size_t i = 0; i < m->newcomers.n; i++) {
            const kaddr *a = &m->newcomers.v[i];
            if (!server_alive(m, a))
                continue;
            if (hashspace_index(&m->whs, a) >= 0) {
                if (hashspace_set_active(&m->whs, a, true))
                    log_info("recover server: %s", fmt_addr(a, buf));
            } else {
                hashspace_add_node(&m->whs, a, true);
                log_info("new server: %s", fmt_addr(a, buf));
            }
        }
        m->whs.clocktime = ct;
    }
    m->newcomers.n = 0;
    sync_partner(m);
}

/* algorithms.md §6.4: fault nodes leave whs; rhs keeps them until the copy finished. */
void mgr_detach_fault_servers(manager *m)
{
    clocktime_t ct = kclock_event(&m->clock);
    if (hashspace_remove_fault_nodes(&m->whs)) {
        m->whs.clocktime = ct;
        log_info("detach fault servers at time(%" PRIu64 ")", ct);
    }
    sync_partner(m);
}

/* ReplaceCopyStart([whs, clock, full]) to one server (wire.md §8.2). */
static void send_copy_start(manager *m, rpc_session *s, bool full)
{
    msgpack_packer *pk = rpc_call_begin(s, SRV_REPLACE_COPY_START,
                                        RPC_DEFAULT_TIMEOUT_STEPS, NULL, NULL);
    msgpack_pack_array(pk, 3);
    kwire_pack_seed(pk, &m->whs);
    msgpack_pack_uint64(pk, kclock_incr(&m->clock));
    if (full)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    rpc_call_end(s);
}

/* algorithms.md §6.5: every connected server runs the copy phase towards whs.
 * kumofs-c: an active whs node that has no connection to this manager yet (this manager
 * was restarted, or the server was started while it was down, and the server has not
 * reconnected) may be the only surviving first owner of some records.  The original
 * left it out and finished the copy without it, so a newcomer never received those
 * records and answered misses once rhs switched.  It is a target here too: it gets its
 * ReplaceCopyStart when it connects (on_server_connected), and the copy phase does not
 * finish before it reported, unless it stays away for UNSENT_GRACE_TICKS. */
void mgr_start_replace(manager *m, bool full)
{
    mgr_sess_list servers = {0};
    mgr_connected_servers(m, &servers);

    m->copying.valid = true;
    m->copying.time = m->whs.clocktime;
    m->copying.full = full;
    m->copying.targets.n = 0;
    for (size_t i = 0; i < servers.n; i++)
        addr_list_push(&m->copying.targets, rpc_session_addr(servers.v[i]));
    m->copying.unsent.n = 0;
    for (size_t i = 0; i < m->whs.nnodes; i++) {
        const hs_node *n = &m->whs.nodes[i];
        if (n->active && !addr_list_contains(&m->copying.targets, &n->addr))
            addr_list_push(&m->copying.unsent, &n->addr);
    }
    addr_list_copy(&m->copying.remaining, &m->copying.targets);
    for (size_t i = 0; i < m->copying.unsent.n; i++) {
        addr_list_push(&m->copying.targets, &m->copying.unsent.v[i]);
        addr_list_push(&m->copying.remaining, &m->copying.unsent.v[i]);
    }
    m->deleting.valid = false;

    log_info("start replace copy; full=%d", full ? 1 : 0);
    log_info("active node: %zu", servers.n);
    m->copying.unsent_ticks = UNSENT_GRACE_TICKS;
    if (m->copying.unsent.n > 0)
        log_info("waiting for %zu active servers to connect", m->copying.unsent.n);

    for (size_t i = 0; i < servers.n; i++)
        send_copy_start(m, servers.v[i], full);
    mgr_sess_list_release(&servers);
    push_clients(m);
}

/* algorithms.md §6.6: every target copied; switch rhs to whs and start the delete phase. */
void mgr_finish_copy(manager *m)
{
    clocktime_t t = m->copying.time;
    m->copying.valid = false;

    m->deleting.valid = true;
    m->deleting.time = t;
    addr_list_copy(&m->deleting.targets, &m->copying.targets);
    addr_list_copy(&m->deleting.remaining, &m->copying.targets);

    log_info("start replace delete time(%" PRIu64 ")", t);
    for (size_t i = 0; i < m->deleting.targets.n; i++) {
        kaddr a = m->deleting.targets.v[i];
        rpc_session *s = rpc_node_session(m->node, &a, true);
        msgpack_packer *pk = rpc_call_begin(s, SRV_REPLACE_DELETE_START,
                                            RPC_DEFAULT_TIMEOUT_STEPS, NULL, NULL);
        msgpack_pack_array(pk, 2);
        kwire_pack_seed(pk, &m->whs);
        msgpack_pack_uint64(pk, kclock_incr(&m->clock));
        rpc_call_end(s);
    }
    hashspace_copy(&m->rhs, &m->whs);
    /* servers are not sent HashSpaceSync: they take rhs := whs on ReplaceDeleteStart */
    push_clients(m);
    sync_partner(m);
}

/* ------------------------------------------------------------------ election (§6.8, §9.3) */

static void election_done(rpc_session *s, const rpc_result *r, void *ud)
{
    (void)s;
    manager *m = ud;
    if (m->closing)
        return;
    /* an error, a timeout (the partner's "double replace guard" never answers) or nil:
     * the partner leaves the replace to us; true: it is obsolete or handled there */
    if (r->err != RPC_OK || kwire_is_nil(r->result)) {
        mgr_start_replace(m, false);
        return;
    }
    log_info("replace election: partner takes over");
}

/* A returning server the failure detector holds back (watch.c: not healthy long enough
 * after a loss) postpones the auto-replace election, so that a flapping server does not
 * start a replace each time it comes and goes. */
static bool newcomers_held(manager *m)
{
    for (size_t i = 0; i < m->newcomers.n; i++)
        if (server_alive(m, &m->newcomers.v[i]) && !watch_may_attach(m->watch, &m->newcomers.v[i]))
            return true;
    return false;
}

static void run_election(manager *m)
{
    mgr_attach_new_servers(m);
    mgr_detach_fault_servers(m);
    if (mgr_has_partner(m) && kaddr_cmp(&m->cfg.partner, &m->cfg.self) < 0) {
        rpc_session *s = rpc_node_session(m->node, &m->cfg.partner, true);
        msgpack_packer *pk = rpc_call_begin(s, MGR_REPLACE_ELECTION, RPC_DEFAULT_TIMEOUT_STEPS,
                                            election_done, m);
        msgpack_pack_array(pk, 2);
        kwire_pack_seed(pk, &m->whs);
        msgpack_pack_uint64(pk, kclock_incr(&m->clock));
        rpc_call_end(s);
        return;
    }
    mgr_start_replace(m, false);
}

/* Each trigger restarts the -Rs delay (a debounce, algorithms.md §6.8); stored in ticks. */
static void schedule_election(manager *m)
{
    m->election_ticks = (int)(2 * m->cfg.replace_delay);
}

/* ------------------------------------------------------------------ node events */

static void on_server_connected(manager *m, rpc_session *s)
{
    char buf[KADDR_STRLEN];
    const kaddr *a = rpc_session_addr(s);
    log_info("server connected %s", fmt_addr(a, buf));
    binlog_new_server(a);
    rpc_session_set_data(s, NULL);
    if (!hashspace_is_active(&m->whs, a) && !addr_list_contains(&m->newcomers, a))
        addr_list_push(&m->newcomers, a);
    /* a copy-phase target that was not connected when the replace started (see
     * mgr_start_replace) */
    if (mgr_addr_list_remove(&m->copying.unsent, a) && m->copying.valid
            && m->copying.time == m->whs.clocktime && hashspace_is_active(&m->whs, a))
        send_copy_start(m, s, m->copying.full);
    if (m->auto_replace)
        schedule_election(m);
}

/* algorithms.md §6.2 */
static void on_server_lost(manager *m, rpc_session *s)
{
    char buf[KADDR_STRLEN];
    kaddr a = *rpc_session_addr(s);
    log_warn("server lost %s", fmt_addr(&a, buf));
    binlog_lost_server(&a);
    watch_server_lost(m->watch, &a);

    clocktime_t ct = kclock_event(&m->clock);
    bool changed = mark_fault(&m->whs, &a, ct);
    changed |= mark_fault(&m->rhs, &a, ct);
    if (changed) {
        sync_partner(m);
        mgr_sess_list servers = {0};
        mgr_connected_servers(m, &servers);
        for (size_t i = 0; i < servers.n; i++)
            if (!kaddr_eq(rpc_session_addr(servers.v[i]), &a))
                send_sync(m, servers.v[i]);
        mgr_sess_list_release(&servers);
        push_clients(m);
    }
    mgr_addr_list_remove(&m->newcomers, &a);
    mgr_newcomers_prune(m);

    if (m->auto_replace)
        schedule_election(m);
    else
        m->copying.valid = false;   /* the running replace never enters its delete phase */
}

static void on_new_node(rpc_session *s, int role, void *ud)
{
    manager *m = ud;
    char buf[KADDR_STRLEN];
    if (m->closing)
        return;
    if (role == RPC_ROLE_SERVER) {
        on_server_connected(m, s);
    } else if (role == RPC_ROLE_MANAGER) {
        const kaddr *a = rpc_session_addr(s);
        if (mgr_has_partner(m) && kaddr_eq(a, &m->cfg.partner)) {
            log_info("partner connected %s", fmt_addr(a, buf));
            send_sync(m, s);   /* §9.2: each side sends its spaces on connect */
        } else {
            log_warn("unknown partner %s", fmt_addr(a, buf));
            binlog_unknown_partner(a);
        }
    }
}

static void on_lost_node(rpc_session *s, int role, void *ud)
{
    manager *m = ud;
    if (m->closing)
        return;
    if (role == RPC_ROLE_SERVER)
        on_server_lost(m, s);
    /* a lost partner is only logged (by the rpc layer's "lost node") */
}

/* ------------------------------------------------------------------ keepalive */

/* The failure count lives in the session's user pointer (the manager is its only user). */
static void keepalive_done(rpc_session *s, const rpc_result *r, void *ud)
{
    manager *m = ud;
    if (m->closing)
        return;
    if (r->err == RPC_OK) {
        rpc_session_set_data(s, NULL);
        return;
    }
    if (rpc_session_is_lost(s))
        return;
    uintptr_t fails = (uintptr_t)rpc_session_data(s) + 1;
    rpc_session_set_data(s, (void *)fails);
    if (fails > KEEPALIVE_FAIL_LIMIT) {
        char buf[KADDR_STRLEN];
        log_warn("keepalive failed %u times: %s", (unsigned)fails,
                 fmt_addr(rpc_session_addr(s), buf));
        rpc_session_set_data(s, NULL);
        rpc_session_shutdown(s);
    }
}

void manager_keepalive(manager *m)
{
    mgr_sess_list l = {0};
    if (!watch_enabled(m->watch))   /* else watch.c's heartbeats keep the servers */
        mgr_connected_servers(m, &l);
    for (size_t i = 0; i < m->newcomers.n && !watch_enabled(m->watch); i++) {
        rpc_session *s = rpc_node_find_session(m->node, &m->newcomers.v[i]);
        if (s != NULL && !rpc_session_is_lost(s))
            sess_list_add(&l, s);
    }
    /* keeping the partner alive is also what connects to it (§9.2 handshake) */
    if (mgr_has_partner(m))
        sess_list_add(&l, rpc_node_session(m->node, &m->cfg.partner, true));
    for (size_t i = 0; i < l.n; i++) {
        msgpack_packer *pk = rpc_call_begin(l.v[i], MGR_KEEP_ALIVE, RPC_DEFAULT_TIMEOUT_STEPS,
                                            keepalive_done, m);
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint64(pk, kclock_incr(&m->clock));
        rpc_call_end(l.v[i]);
    }
    mgr_sess_list_release(&l);
}

/* ------------------------------------------------------------------ life cycle */

/* Copy targets that never connected within the grace time: go on without them. */
static void copy_give_up_unsent(manager *m)
{
    char buf[KADDR_STRLEN];
    for (size_t i = 0; i < m->copying.unsent.n; i++) {
        const kaddr *a = &m->copying.unsent.v[i];
        log_warn("replace goes on without %s: not connected", fmt_addr(a, buf));
        mgr_addr_list_remove(&m->copying.targets, a);
        mgr_addr_list_remove(&m->copying.remaining, a);
    }
    m->copying.unsent.n = 0;
    if (m->copying.remaining.n == 0)
        mgr_finish_copy(m);
}

void manager_tick(manager *m)
{
    kclock_update_time(&m->clock);
    if (m->copying.valid && m->copying.unsent.n > 0 && --m->copying.unsent_ticks <= 0)
        copy_give_up_unsent(m);
    if (m->election_ticks < 0)
        return;
    /* "after N seconds" fires on the tick after 2N ticks elapsed (algorithms.md §1) */
    if (m->election_ticks > 0) {
        m->election_ticks--;
        return;
    }
    m->election_ticks = -1;
    if (!m->auto_replace)
        return;
    if (newcomers_held(m)) {
        m->election_ticks = 2;   /* look again in a second */
        return;
    }
    run_election(m);
}

manager *manager_new(struct ev_loop *loop, const manager_config *cfg)
{
    manager *m = xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->auto_replace = cfg->auto_replace;
    m->election_ticks = -1;
    kclock_init(&m->clock);
    hashspace_init(&m->whs);
    hashspace_init(&m->rhs);

    rpc_config rc = {
        .self = cfg->self,
        .role = RPC_ROLE_MANAGER,
        .connect_timeout = cfg->connect_timeout,
        .connect_retry_limit = cfg->connect_retry_limit,
        .clock_interval = cfg->clock_interval,
        .dispatch = handlers_dispatch,
        .new_node = on_new_node,
        .lost_node = on_lost_node,
        .ud = m,
    };
    m->node = rpc_node_new(loop, &rc);
    watch_config wc = {
        .timeout = cfg->watch_timeout,
        .misses = cfg->watch_misses,
        .recover = cfg->watch_recover,
    };
    m->watch = watch_new(m, loop, &wc);
    return m;
}

void manager_listen_fd(manager *m, int fd)
{
    rpc_node_listen_fd(m->node, fd);
}

static void progress_free(mgr_progress *p)
{
    addr_list_free(&p->targets);
    addr_list_free(&p->remaining);
    addr_list_free(&p->unsent);
}

void manager_free(manager *m)
{
    if (m == NULL)
        return;
    m->closing = true;   /* pending callbacks fire inside rpc_node_free */
    rpc_node_free(m->node);
    watch_free(m->watch);   /* after the node: its callbacks may still run in there */
    hashspace_destroy(&m->whs);
    hashspace_destroy(&m->rhs);
    addr_list_free(&m->newcomers);
    progress_free(&m->copying);
    progress_free(&m->deleting);
    free(m);
}
