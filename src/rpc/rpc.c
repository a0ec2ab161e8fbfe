/* rpc.c - msgpack-RPC node and sessions: session table, calls and replies, step timeouts,
 * connect retry and node-lost delivery (wire.md §4-§5, algorithms.md §1, §3). */
#include "config.h"
#include "rpc/rpc_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logic/log.h"
#include "logic/xmalloc.h"

#define RPC_HASH_MIN 64
#define RPC_PREPARE_ROUNDS 8   /* deferred-work rounds per loop iteration before yielding */

static const msgpack_object rpc_nil = { .type = MSGPACK_OBJECT_NIL };

/* ------------------------------------------------------------------ session table */

static size_t addr_hash(const kaddr *a, bool cluster)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (unsigned i = 0; i < a->len; i++)
        h = (h ^ a->raw[i]) * 16777619u;
    return (size_t)(h ^ (cluster ? 0x9e3779b9u : 0));
}

static void hash_grow(rpc_node *n)
{
    size_t cap = n->hcap * 2;
    rpc_session **h = xcalloc(cap, sizeof *h);
    for (size_t i = 0; i < n->hcap; i++) {
        rpc_session *s = n->hash[i];
        while (s) {
            rpc_session *next = s->hnext;
            size_t j = addr_hash(&s->addr, s->cluster) & (cap - 1);
            s->hnext = h[j];
            h[j] = s;
            s = next;
        }
    }
    free(n->hash);
    n->hash = h;
    n->hcap = cap;
}

static void hash_insert(rpc_node *n, rpc_session *s)
{
    if (n->hcount >= n->hcap)
        hash_grow(n);
    size_t i = addr_hash(&s->addr, s->cluster) & (n->hcap - 1);
    s->hnext = n->hash[i];
    n->hash[i] = s;
    s->in_hash = true;
    n->hcount++;
}

static void hash_remove(rpc_node *n, rpc_session *s)
{
    if (!s->in_hash)
        return;
    size_t i = addr_hash(&s->addr, s->cluster) & (n->hcap - 1);
    for (rpc_session **pp = &n->hash[i]; *pp; pp = &(*pp)->hnext) {
        if (*pp == s) {
            *pp = s->hnext;
            break;
        }
    }
    s->hnext = NULL;
    s->in_hash = false;
    n->hcount--;
}

static void list_push(rpc_session **head, rpc_session *s)
{
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
}

static void list_remove(rpc_session **head, rpc_session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static rpc_session *sess_alloc(rpc_node *n, const kaddr *addr)
{
    rpc_session *s = xcalloc(1, sizeof *s);
    s->node = n;
    s->addr = *addr;
    s->role = RPC_ROLE_NONE;
    s->refs = 1;   /* the node's */
    nbuf_init(&s->queued);
    pending_init(&s->pending);
    msgpack_packer_init(&s->pk, &s->queued, nbuf_msgpack_write);
    list_push(&n->sessions, s);
    return s;
}

rpc_session *rpc_sess_get(rpc_node *n, const kaddr *addr, bool cluster, bool create)
{
    size_t i = addr_hash(addr, cluster) & (n->hcap - 1);
    for (rpc_session *s = n->hash[i]; s; s = s->hnext)
        if (s->cluster == cluster && kaddr_eq(&s->addr, addr))
            return s;
    if (!create)
        return NULL;
    rpc_session *s = sess_alloc(n, addr);
    s->cluster = cluster;
    hash_insert(n, s);
    return s;
}

rpc_session *rpc_sess_new_accepted(rpc_node *n, const kaddr *peer)
{
    rpc_session *s = sess_alloc(n, peer);
    s->accepted = true;
    return s;
}

/* ------------------------------------------------------------------ deferred work */

static void schedule_connect(rpc_session *s)
{
    if (s->want_connect || s->lost || !s->node || s->node->freeing)
        return;
    s->want_connect = true;
    rpc_session_ref(s);
    s->cnext = s->node->connect_q;
    s->node->connect_q = s;
}

static void schedule_fail(rpc_session *s)
{
    if (s->want_fail)
        return;
    s->want_fail = true;
    rpc_session_ref(s);
    s->fnext = s->node->fail_q;
    s->node->fail_q = s;
}

/* Complete every outstanding call of s with a local error.  The table is emptied before
 * the first callback, so calls made from the callbacks are not failed by this pass. */
static void sess_fail_all(rpc_session *s, int err)
{
    pending_table *t = &s->pending;
    uint32_t cnt = t->count;
    if (cnt == 0)
        return;
    pending_call *v = xmalloc(cnt * sizeof *v);
    uint32_t k = 0;
    for (uint32_t i = 0; i < pending_capacity(t); i++) {
        if (t->slots[i].used) {
            v[k++] = t->slots[i];
            t->slots[i].used = false;
        }
    }
    t->count = 0;
    rpc_result r = { .err = err, .error = &rpc_nil, .result = &rpc_nil };
    rpc_session_ref(s);
    for (uint32_t i = 0; i < k; i++)
        if (v[i].cb)
            v[i].cb(s, &r, v[i].ud);
    rpc_session_unref(s);
    free(v);
}

/* Runs once per loop iteration (ev_prepare): closes requested during callbacks finish
 * first (a reconnect must not find the old socket still open), then connects requested
 * during callbacks, errors for calls made on lost sessions, then one write per
 * connection for everything packed since the last iteration. */
static void node_run_deferred(rpc_node *n)
{
    for (int round = 0; round < RPC_PREPARE_ROUNDS; round++) {
        bool work = false;
        if (nconn_group_busy(&n->group))
            nconn_group_run(&n->group);
        rpc_session *q = n->connect_q;
        n->connect_q = NULL;
        while (q) {
            rpc_session *s = q;
            q = s->cnext;
            s->cnext = NULL;
            s->want_connect = false;
            if (!s->lost && !n->freeing && s->nconns == 0 && !s->connecting)
                rpc_conn_connect(s);
            rpc_session_unref(s);
            work = true;
        }
        q = n->fail_q;
        n->fail_q = NULL;
        while (q) {
            rpc_session *s = q;
            q = s->fnext;
            s->fnext = NULL;
            s->want_fail = false;
            sess_fail_all(s, n->freeing ? RPC_TRANSPORT_LOST : RPC_NODE_LOST);
            rpc_session_unref(s);
            work = true;
        }
        /* one write per connection for everything packed since the last turn; closes
         * requested since then finish (their callbacks may queue more: another round) */
        if (nconn_group_busy(&n->group)) {
            nconn_group_run(&n->group);
            work = true;
        }
        if (!work)
            break;
    }
    /* Release the node's reference to lost sessions: no callback that could still hold
     * the pointer is running now.  Sessions somebody else still references stay listed so
     * that rpc_node_free can detach them. */
    for (rpc_session *s = n->dead, *next; s; s = next) {
        next = s->next;
        if (s->refs == 1) {
            list_remove(&n->dead, s);
            rpc_session_unref(s);
        }
    }
}

static void node_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    rpc_node *n = RPC_CONTAINER_OF(w, rpc_node, prep);
    node_run_deferred(n);
    if (n->connect_q || n->fail_q || nconn_group_busy(&n->group))
        ev_idle_start(loop, &n->idle);   /* poll without blocking, then prepare again */
    else
        ev_idle_stop(loop, &n->idle);
}

static void node_idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Complete taken-out calls with RPC_TIMEOUT; each v[i].s carries a reference.
 * deadline: they were calls with a deadline in seconds.  A session whose deadline calls
 * time out RPC_RESET_TIMEOUTS times in a row without any answer drops its connections
 * (a cluster session reconnects, a plain one is made anew on next use): after a
 * partition heals, a TCP connection that retransmitted into the void has backed off for
 * many seconds and everything queued behind it would wait for its next retransmission,
 * while a fresh connection works at once. */
#define RPC_RESET_TIMEOUTS 3
static void expire_calls(rpc_expired *v, size_t k, bool deadline)
{
    rpc_result r = { .err = RPC_TIMEOUT, .error = &rpc_nil, .result = &rpc_nil };
    for (size_t i = 0; i < k; i++)
        v[i].s->timeouts++;
    for (size_t i = 0; i < k; i++) {
        if (v[i].cb)
            v[i].cb(v[i].s, &r, v[i].ud);
    }
    for (size_t i = 0; i < k; i++) {
        rpc_session *s = v[i].s;
        if (deadline && s->timeouts >= RPC_RESET_TIMEOUTS && s->node && !s->lost
            && !s->accepted && s->conns != NULL && !s->node->freeing) {
            char a[KADDR_STRLEN];
            log_info("rpc: %u calls to %s timed out in a row: reconnecting", s->timeouts,
                     kaddr_format(&s->addr, a));
            /* the session stays (and stays suspect until it answers); calls written to
             * the old connection fail now, a new one is opened at the prepare */
            while (s->conns) {
                /* abortive close: requests still in the send buffer are dropped here,
                 * not delivered late by retransmission once the network heals */
                struct linger lg = { .l_onoff = 1, .l_linger = 0 };
                (void)setsockopt(nconn_fd(&s->conns->nc), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                rpc_conn_close(s->conns, false);
            }
            schedule_fail(s);
            schedule_connect(s);
        }
        rpc_session_unref(s);
    }
}

/* Record the k-th expired call (session s, msgid) in the node's scratch list. */
static void note_expired(rpc_node *n, size_t k, rpc_session *s, uint32_t msgid)
{
    if (k == n->expired_cap) {
        n->expired_cap = n->expired_cap ? n->expired_cap * 2 : 64;
        n->expired = xrealloc(n->expired, n->expired_cap * sizeof *n->expired);
    }
    n->expired[k].s = s;
    n->expired[k].msgid = msgid;
}

/* Take the k recorded calls out of their tables, then run their callbacks (expire_calls;
 * by_deadline as it says).  Copied out first: a callback may run a nested step and reuse
 * the scratch list. */
static void take_expired(rpc_node *n, size_t k, bool by_deadline)
{
    rpc_expired *v = xmemdup(n->expired, k * sizeof *v);
    for (size_t i = 0; i < k; i++) {
        pending_call pc;
        bool found = pending_take(&v[i].s->pending, v[i].msgid, &pc);
        assert(found && "expired call vanished");
        (void)found;
        v[i].cb = pc.cb;
        v[i].ud = pc.ud;
        rpc_session_ref(v[i].s);
    }
    expire_calls(v, k, by_deadline);
    free(v);
}

/* algorithms.md §1: every step decrements each outstanding budget; a call whose budget is
 * already 0 completes with TIMEOUT.  Expired calls are taken out of their tables before any
 * callback runs, so callbacks may freely call, reply or shut sessions down. */
static void node_step_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    rpc_node *n = RPC_CONTAINER_OF(w, rpc_node, step);
    size_t k = 0;
    for (rpc_session *s = n->sessions; s; s = s->next) {
        pending_table *t = &s->pending;
        if (t->count == 0)
            continue;
        for (uint32_t i = 0; i < pending_capacity(t); i++) {
            pending_call *pc = &t->slots[i];
            if (!pc->used)
                continue;
            if (pc->steps > 0) {
                pc->steps--;
                continue;
            }
            note_expired(n, k++, s, pc->msgid);
        }
    }
    if (k == 0)
        return;
    take_expired(n, k, false);
}

/* Calls with a deadline in seconds (rpc_call_begin_timed): the same, at a finer grain.
 * The timer stops itself once no such call is outstanding. */
static void node_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    rpc_node *n = RPC_CONTAINER_OF(w, rpc_node, deadlines);
    double now = ev_now(loop);
    size_t k = 0, timed = 0;
    for (rpc_session *s = n->sessions; s; s = s->next) {
        pending_table *t = &s->pending;
        if (t->count == 0)
            continue;
        for (uint32_t i = 0; i < pending_capacity(t); i++) {
            pending_call *pc = &t->slots[i];
            if (!pc->used || pc->deadline <= 0)
                continue;
            timed++;
            if (pc->deadline > now)
                continue;
            note_expired(n, k++, s, pc->msgid);
        }
    }
    if (timed == k) {
        ev_ref(loop);   /* balances the ev_unref made when it was started */
        ev_timer_stop(loop, w);
    }
    if (k == 0)
        return;
    take_expired(n, k, true);
}

/* ------------------------------------------------------------------ session events */

void rpc_sess_bind(rpc_session *s, rpc_conn *c)
{
    c->session = s;
    c->snext = NULL;
    rpc_conn **pp = &s->conns;
    while (*pp)
        pp = &(*pp)->snext;
    *pp = c;   /* appended: the first connection keeps carrying our traffic */
    s->nconns++;
    s->retry = 0;   /* algorithms.md §3: reset whenever a connection binds */
    if (nbuf_pending(&s->queued) > 0) {
        nbuf_append(rpc_conn_out(c), s->queued.data + s->queued.off, nbuf_pending(&s->queued));
        nbuf_clear(&s->queued);
    }
}

void rpc_sess_learn_role(rpc_session *s, int role)
{
    if (s->role != RPC_ROLE_NONE || s->lost)
        return;   /* the first init sets it (wire.md §4.3 step 3) */
    s->role = role;
    char a[KADDR_STRLEN];
    log_warn("new node %d %s", role, kaddr_format(&s->addr, a));
    rpc_node *n = s->node;
    if (n->cfg.new_node)
        n->cfg.new_node(s, role, n->cfg.ud);
}

void rpc_sess_lose(rpc_session *s, int err)
{
    if (s->lost)
        return;
    rpc_node *n = s->node;
    s->lost = true;
    hash_remove(n, s);
    if (s->connecting)
        rpc_conn_close(s->connecting, false);
    while (s->conns)
        rpc_conn_close(s->conns, false);
    nbuf_clear(&s->queued);
    list_remove(&n->sessions, s);
    list_push(&n->dead, s);   /* the node's reference is dropped at the next prepare */
    rpc_session_ref(s);
    sess_fail_all(s, err);
    if (s->cluster && s->role != RPC_ROLE_NONE && !n->freeing) {
        char a[KADDR_STRLEN];
        log_warn("lost node %d %s", s->role, kaddr_format(&s->addr, a));
        if (n->cfg.lost_node)
            n->cfg.lost_node(s, s->role, n->cfg.ud);
    }
    rpc_session_unref(s);
}

void rpc_sess_conn_lost(rpc_session *s)
{
    if (s->lost || s->nconns > 0 || s->connecting)
        return;
    rpc_node *n = s->node;
    /* Plain-client sessions fail at once; the next use makes a fresh session. */
    if (!s->cluster || n->freeing || s->retry > n->cfg.connect_retry_limit) {
        rpc_sess_lose(s, RPC_NODE_LOST);
        return;
    }
    /* Every call written so far went out on a connection that is now gone, so its
     * answer can never come: fail them now rather than after the step timeout (a server's
     * -Ci 8 would hold a replicated Set for ~90 s).  Then reconnect to its cluster address. */
    schedule_fail(s);
    schedule_connect(s);
}

void rpc_sess_connect_failed(rpc_session *s)
{
    if (s->lost || s->nconns > 0)
        return;
    if (s->retry > s->node->cfg.connect_retry_limit) {
        rpc_sess_lose(s, RPC_NODE_LOST);
        return;
    }
    schedule_connect(s);   /* retry immediately (at this loop iteration's prepare) */
}

void rpc_sess_response(rpc_session *s, uint32_t msgid, const msgpack_object *error,
                       const msgpack_object *result)
{
    pending_call pc;
    double now = s->node ? ev_now(s->node->loop) : 0.0;
    s->last_response = now;
    s->timeouts = 0;   /* a late answer too: the peer is alive */
    if (!pending_take(&s->pending, msgid, &pc))
        return;   /* unknown msgid: already answered or timed out (wire.md §4.2) */
    if (pc.sent > 0 && now >= pc.sent) {
        /* RFC 6298 §2: alpha 1/8, beta 1/4 */
        double sample = now - pc.sent;
        if (s->srtt <= 0) {
            s->srtt = sample > 0 ? sample : 1e-6;
            s->rttvar = sample / 2;
        } else {
            double d = s->srtt > sample ? s->srtt - sample : sample - s->srtt;
            s->rttvar = 0.75 * s->rttvar + 0.25 * d;
            s->srtt = 0.875 * s->srtt + 0.125 * sample;
        }
    }
    if (!pc.cb)
        return;
    int err;
    if (error->type == MSGPACK_OBJECT_NIL)
        err = RPC_OK;
    else if (error->type == MSGPACK_OBJECT_POSITIVE_INTEGER && error->via.u64 >= 1 &&
             error->via.u64 <= RPC_SERVER_ERROR)
        err = (int)error->via.u64;
    else
        err = RPC_OTHER_ERROR;
    rpc_result r = { .err = err, .error = error, .result = result };
    rpc_session_ref(s);
    pc.cb(s, &r, pc.ud);
    rpc_session_unref(s);
}

/* ------------------------------------------------------------------ node */

rpc_node *rpc_node_new(struct ev_loop *loop, const rpc_config *cfg)
{
    rpc_node *n = xcalloc(1, sizeof *n);
    n->loop = loop;
    n->cfg = *cfg;
    if (!(n->cfg.connect_timeout > 0))
        n->cfg.connect_timeout = 10.0;
    double ci = n->cfg.clock_interval > 0 ? n->cfg.clock_interval : 0.0;
    double period = (double)((long)(ci / 0.5) + 1) * 0.5;   /* algorithms.md §1 */
    n->hcap = RPC_HASH_MIN;
    n->hash = xcalloc(n->hcap, sizeof *n->hash);

    /* Housekeeping watchers do not keep the loop alive by themselves. */
    ev_timer_init(&n->step, node_step_cb, period, period);
    ev_timer_start(loop, &n->step);
    ev_unref(loop);
    ev_timer_init(&n->deadlines, node_deadline_cb, RPC_DEADLINE_RESOLUTION,
                  RPC_DEADLINE_RESOLUTION);
    ev_prepare_init(&n->prep, node_prepare_cb);
    ev_prepare_start(loop, &n->prep);
    ev_unref(loop);
    ev_idle_init(&n->idle, node_idle_cb);
    nconn_group_init(&n->group, loop, false);   /* run by node_run_deferred */
    return n;
}

void rpc_node_free(rpc_node *n)
{
    if (!n)
        return;
    n->freeing = true;
    ev_ref(n->loop);
    ev_timer_stop(n->loop, &n->step);
    if (ev_is_active(&n->deadlines)) {
        ev_ref(n->loop);
        ev_timer_stop(n->loop, &n->deadlines);
    }
    ev_ref(n->loop);
    ev_prepare_stop(n->loop, &n->prep);
    ev_idle_stop(n->loop, &n->idle);
    while (n->listeners) {
        rpc_listener *l = n->listeners;
        n->listeners = l->next;
        net_listener_stop(&l->nl);
        close(net_listener_fd(&l->nl));
        free(l);
    }
    /* Callbacks may make new sessions and calls; keep going until nothing is left. */
    for (;;) {
        while (n->sessions)
            rpc_sess_lose(n->sessions, RPC_TRANSPORT_LOST);
        while (n->conns)
            rpc_conn_close(n->conns, false);
        if (n->connect_q) {
            rpc_session *s = n->connect_q;
            n->connect_q = s->cnext;
            s->want_connect = false;
            rpc_session_unref(s);
        } else if (n->fail_q) {
            rpc_session *s = n->fail_q;
            n->fail_q = s->fnext;
            s->want_fail = false;
            sess_fail_all(s, RPC_TRANSPORT_LOST);
            rpc_session_unref(s);
        } else if (!n->sessions) {
            break;
        }
    }
    nconn_group_destroy(&n->group);   /* every connection is closed: they are freed */
    while (n->dead) {
        rpc_session *s = n->dead;
        list_remove(&n->dead, s);
        s->node = NULL;   /* a user reference may outlive the node */
        rpc_session_unref(s);
    }
    free(n->hash);
    free(n->expired);
    free(n);
}

void rpc_node_listen_fd(rpc_node *n, int fd)
{
    rpc_listener *l = xcalloc(1, sizeof *l);
    l->node = n;
    net_listener_start(&l->nl, n->loop, fd, "rpc", rpc_conn_accepted, n);
    l->next = n->listeners;
    n->listeners = l;
}

struct ev_loop *rpc_node_loop(rpc_node *n)
{
    return n->loop;
}

rpc_session *rpc_node_session(rpc_node *n, const kaddr *peer, bool cluster)
{
    return rpc_sess_get(n, peer, cluster, true);
}

rpc_session *rpc_node_find_session(rpc_node *n, const kaddr *peer)
{
    return rpc_sess_get(n, peer, true, false);
}

void rpc_node_foreach_cluster(rpc_node *n, rpc_session_fn fn, void *ud)
{
    for (rpc_session *s = n->sessions, *next; s; s = next) {
        next = s->next;
        if (s->cluster && s->nconns > 0)
            fn(s, ud);
    }
}

void rpc_node_foreach_client(rpc_node *n, rpc_session_fn fn, void *ud)
{
    for (rpc_session *s = n->sessions, *next; s; s = next) {
        next = s->next;
        if (s->accepted)
            fn(s, ud);
    }
}

/* ------------------------------------------------------------------ session API */

const kaddr *rpc_session_addr(const rpc_session *s) { return &s->addr; }
int rpc_session_role(const rpc_session *s) { return s->role; }
bool rpc_session_is_connected(const rpc_session *s) { return s->nconns > 0; }
bool rpc_session_is_lost(const rpc_session *s) { return s->lost; }
void *rpc_session_data(const rpc_session *s) { return s->data; }
void rpc_session_set_data(rpc_session *s, void *data) { s->data = data; }

void rpc_session_ref(rpc_session *s)
{
    s->refs++;
}

void rpc_session_unref(rpc_session *s)
{
    assert(s->refs > 0 && "rpc_session_unref: reference count underflow");
    if (--s->refs > 0)
        return;
    assert((s->lost || !s->node) && "rpc_session_unref: live session freed");
    pending_destroy(&s->pending);
    nbuf_destroy(&s->queued);
    free(s);
}

void rpc_session_shutdown(rpc_session *s)
{
    if (s->node)
        rpc_sess_lose(s, RPC_NODE_LOST);
}

void rpc_session_abort(rpc_session *s)
{
    if (!s->node || s->lost)
        return;
    for (rpc_conn *c = s->conns; c != NULL; c = c->snext) {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        (void)setsockopt(nconn_fd(&c->nc), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    rpc_sess_lose(s, RPC_NODE_LOST);   /* also drops what was queued while unconnected */
}

/* Where the next message for s goes: the first bound connection, else the session queue
 * (sent once connected; asking for the connect).  NULL when nothing will be sent. */
static nbuf *sess_out(rpc_session *s)
{
    s->pk_conn = NULL;
    if (s->lost || !s->node)
        return NULL;
    if (s->conns) {
        s->pk_conn = s->conns;
        return rpc_conn_out(s->conns);
    }
    if (!s->connecting)
        schedule_connect(s);
    return &s->queued;
}

static msgpack_packer *call_begin(rpc_session *s, uint32_t method, unsigned timeout_steps,
                                  double seconds, rpc_callback cb, void *ud)
{
    uint32_t msgid = ++s->msgid;   /* first call on a session is msgid 1; wraps mod 2^32 */
    double now = 0.0, deadline = 0.0;
    if (s->node) {
        now = ev_now(s->node->loop);
        s->last_call = now;
        if (seconds > 0) {
            deadline = now + seconds;
            if (!ev_is_active(&s->node->deadlines)) {
                ev_timer_start(s->node->loop, &s->node->deadlines);
                ev_unref(s->node->loop);   /* housekeeping: never keeps the loop alive */
            }
        }
    }
    pending_insert_timed(&s->pending, msgid, timeout_steps, now, deadline, cb, ud);
    nbuf *out = sess_out(s);
    /* A lost session packs into its (cleared) queue and the call fails at the prepare. */
    msgpack_packer_init(&s->pk, out ? out : &s->queued, nbuf_msgpack_write);
    msgpack_pack_array(&s->pk, 4);
    msgpack_pack_uint8(&s->pk, 0);
    msgpack_pack_uint32(&s->pk, msgid);
    msgpack_pack_uint32(&s->pk, method);
    return &s->pk;
}

msgpack_packer *rpc_call_begin(rpc_session *s, uint32_t method, unsigned timeout_steps,
                               rpc_callback cb, void *ud)
{
    return call_begin(s, method, timeout_steps, 0.0, cb, ud);
}

msgpack_packer *rpc_call_begin_timed(rpc_session *s, uint32_t method, double seconds,
                                     rpc_callback cb, void *ud)
{
    return call_begin(s, method, RPC_DEFAULT_TIMEOUT_STEPS, seconds, cb, ud);
}

bool rpc_session_rtt(const rpc_session *s, double *srtt, double *rttvar)
{
    *srtt = s->srtt;
    *rttvar = s->rttvar;
    return s->srtt > 0;
}

unsigned rpc_session_timeouts(const rpc_session *s)
{
    return s->timeouts;
}

double rpc_session_last_call(const rpc_session *s)
{
    return s->last_call;
}

void rpc_call_end(rpc_session *s)
{
    if (s->pk_conn) {
        rpc_conn_mark_dirty(s->pk_conn);
        s->pk_conn = NULL;
        return;
    }
    if (!s->lost && s->node)
        return;   /* queued until a connection binds */
    nbuf_clear(&s->queued);
    if (s->node)
        schedule_fail(s);   /* "later": never inside rpc_call_* */
    else
        sess_fail_all(s, RPC_TRANSPORT_LOST);
}

msgpack_packer *rpc_reply_begin(rpc_session *s, uint32_t msgid)
{
    nbuf *out = sess_out(s);
    msgpack_packer_init(&s->pk, out ? out : &s->queued, nbuf_msgpack_write);
    msgpack_pack_array(&s->pk, 4);
    msgpack_pack_uint8(&s->pk, 1);
    msgpack_pack_uint32(&s->pk, msgid);
    return &s->pk;
}

void rpc_reply_end(rpc_session *s)
{
    if (s->pk_conn) {
        rpc_conn_mark_dirty(s->pk_conn);
        s->pk_conn = NULL;
        return;
    }
    if (s->lost || !s->node)
        nbuf_clear(&s->queued);   /* answers to a lost session are dropped */
}

void rpc_reply_error(rpc_session *s, uint32_t msgid, int code)
{
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    msgpack_pack_uint32(pk, (uint32_t)code);
    msgpack_pack_nil(pk);
    rpc_reply_end(s);
}

void rpc_reply_nil(rpc_session *s, uint32_t msgid)
{
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    msgpack_pack_nil(pk);
    msgpack_pack_nil(pk);
    rpc_reply_end(s);
}

void rpc_reply_bool(rpc_session *s, uint32_t msgid, bool v)
{
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    msgpack_pack_nil(pk);
    if (v)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    rpc_reply_end(s);
}

void rpc_reply_u64(rpc_session *s, uint32_t msgid, uint64_t v)
{
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    msgpack_pack_nil(pk);
    msgpack_pack_uint64(pk, v);
    rpc_reply_end(s);
}
