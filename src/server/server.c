/* server.c - kumo-server core: dispatch, hash spaces, keepalive, status, backup. */
#include "server/server_internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"
#include "server/dataop.h"
#include "server/relay.h"
#include "server/replace.h"
#include "server/rmwop.h"
#include "server/stream.h"

/* ---- background tasks ---- */

void server_post(server *srv, server_task_fn fn, void *arg)
{
    server_task *t = xmalloc(sizeof(*t));
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_lock(&srv->task_lock);
    if (srv->task_tail != NULL)
        srv->task_tail->next = t;
    else
        srv->task_head = t;
    srv->task_tail = t;
    pthread_mutex_unlock(&srv->task_lock);
    ev_async_send(srv->loop, &srv->task_wakeup);
}

static void run_tasks(server *srv)
{
    for (;;) {
        pthread_mutex_lock(&srv->task_lock);
        server_task *t = srv->task_head;
        srv->task_head = srv->task_tail = NULL;
        pthread_mutex_unlock(&srv->task_lock);
        if (t == NULL)
            return;
        while (t != NULL) {
            server_task *next = t->next;
            t->fn(srv, t->arg);
            free(t);
            t = next;
        }
    }
}

static void task_wakeup_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    run_tasks(w->data);
}

/* ---- helpers ---- */

bool server_is_replica(const server *srv, const hashspace *hs, uint64_t h)
{
    const hs_node *slots[HS_REPLICAS];
    size_t n = hashspace_assign(hs, h, slots);
    for (size_t i = 0; i < n; i++)
        if (slots[i]->active && kaddr_eq(&slots[i]->addr, &srv->cfg.self))
            return true;
    return false;
}

static bool is_manager(const server *srv, const kaddr *a)
{
    return kaddr_eq(a, &srv->cfg.mgr1) || (srv->cfg.mgr2.len != 0 && kaddr_eq(a, &srv->cfg.mgr2));
}

static void reply_protocol_error(const rpc_request *req)
{
    rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
}

static void log_hs(const char *what, const hashspace *hs)
{
    log_info("%s hash space updated: %zu nodes, time(%llu)", what, hs->nnodes,
             (unsigned long long)hs->clocktime);
}

/* ---- hash spaces from the managers (algorithms.md §3, §7) ---- */

static void request_hash_space(server *srv, rpc_session *s, uint32_t method);

/* ud of a hash-space request: which space, and back to the server. */
typedef struct hs_request {
    server *srv;
    uint32_t method;
    bool resync;                /* asked for by resync_begin: counts towards its end */
} hs_request;

static void resync_answered(server *srv, hs_request *q);
static void request_hash_space_tagged(server *srv, rpc_session *s, uint32_t method, bool resync);

static void hs_request_cb(rpc_session *s, const rpc_result *r, void *ud)
{
    hs_request *q = ud;
    server *srv = q->srv;
    if (r->err != RPC_OK) {
        /* §7: re-send to the same manager while its session is alive */
        if (!srv->stopping && !rpc_session_is_lost(s)) {
            request_hash_space_tagged(srv, s, q->method, q->resync);
        }
        free(q);
        return;
    }
    hashspace seed;
    hashspace_init(&seed);
    if (kwire_get_seed(r->result, &seed)) {
        bool is_w = q->method == MGR_WHASH_SPACE_REQUEST;
        hashspace *local = is_w ? &srv->whs : &srv->rhs;
        /* the strict rule: only an empty local space or a strictly older one */
        if (hashspace_empty(local) || clocktime_less(local->clocktime, seed.clocktime)) {
            hashspace_swap(local, &seed);
            if (local->nnodes > 0)
                log_hs(is_w ? "write" : "read", local);
        }
    } else {
        log_warn("bad hash space reply from manager");
    }
    hashspace_destroy(&seed);
    resync_answered(srv, q);
    free(q);
}

static void request_hash_space(server *srv, rpc_session *s, uint32_t method)
{
    request_hash_space_tagged(srv, s, method, false);
}

/* ---- resync after a stall or a silence (kumofs-c) ----
 * A server that was stopped (SIGSTOP, a hung disk, a starved machine) or cut off from
 * the managers finds requests queued while it was away (or retransmitted once the
 * network heals), and its hash spaces may be stale: the manager may have declared it
 * fault and moved its keys to other coordinators.  Stamping those writes now could put
 * an old write above newer acknowledged ones.  So after a gap in the 0.5 s tick longer
 * than STALL_SECONDS, or when no manager answered a KeepAlive sent in the last
 * LEASE_SECONDS (KeepAlives go out every tick), client writes are refused (error 6, the
 * gateway tries again elsewhere) until the hash spaces were fetched again from a manager.
 * Only when the managers' connections are refused (their processes are gone, so nobody
 * can declare this server fault) does it go on without them: the lease is not enforced,
 * and a resync after a stall ends after RESYNC_MAX_SECONDS. */
#define STALL_SECONDS 1.5
/* Longer than the manager's quickest fault verdict (-Ws 1 -Wn 2: 1.5 s after the last
 * answer), so a loaded but healthy cluster does not refuse writes on one slow answer;
 * the window in between is covered by the gateways' abortive reconnects (rpc.c). */
#define LEASE_SECONDS 3.0
#define RESYNC_ASK_SECONDS 1.0    /* the hash spaces are asked again while a resync lasts */
#define RESYNC_MAX_SECONDS 5.0

static void request_hash_space_tagged(server *srv, rpc_session *s, uint32_t method, bool resync)
{
    hs_request *q = xmalloc(sizeof(*q));
    q->srv = srv;
    q->method = method;
    q->resync = resync;
    msgpack_packer *pk = rpc_call_begin(s, method, RPC_DEFAULT_TIMEOUT_STEPS, hs_request_cb, q);
    msgpack_pack_array(pk, 0);
    rpc_call_end(s);
}

static void resync_ask(server *srv)
{
    srv->resync_asked = ev_now(srv->loop);
    srv->resync_pending = 0;
    const kaddr *mgrs[2] = { &srv->cfg.mgr1, &srv->cfg.mgr2 };
    for (int i = 0; i < 2; i++) {
        if (mgrs[i]->len == 0)
            continue;
        rpc_session *s = rpc_node_session(srv->rpc, mgrs[i], true);
        request_hash_space_tagged(srv, s, MGR_WHASH_SPACE_REQUEST, true);
        request_hash_space_tagged(srv, s, MGR_RHASH_SPACE_REQUEST, true);
        srv->resync_pending += 2;
    }
}

static void resync_begin(server *srv, const char *why, double secs)
{
    if (srv->resync)
        return;   /* server_tick asks again while it lasts */
    log_warn("%s for %.1f s: refusing writes until the hash spaces are fetched again",
             why, secs);
    srv->resync = true;
    srv->resync_since = ev_now(srv->loop);
    resync_ask(srv);
}

static void resync_end(server *srv, const char *why)
{
    srv->resync = false;
    srv->resync_pending = 0;
    log_warn("accepting writes again: %s", why);
}

/* Every configured manager refused its last KeepAlive's connection and none timed out
 * lately: their processes are down (a cut or a frozen manager times out instead). */
static bool managers_down(const server *srv, double now)
{
    if (!srv->mgr_refused[0] || (srv->cfg.mgr2.len != 0 && !srv->mgr_refused[1]))
        return false;
    return now - srv->mgr_timeout_at > LEASE_SECONDS;
}

static void lease_check(server *srv, double now)
{
    if (srv->mgr_ok_sent > 0 && now - srv->mgr_ok_sent > LEASE_SECONDS
        && !managers_down(srv, now))
        resync_begin(srv, "no manager answered", now - srv->mgr_ok_sent);
}

static void resync_answered(server *srv, hs_request *q)
{
    if (!q->resync || !srv->resync)
        return;
    /* one manager's pair of answers is enough: it knows whether we were declared lost */
    if (srv->resync_pending > 0)
        srv->resync_pending--;
    if (srv->resync_pending <= (srv->cfg.mgr2.len != 0 ? 2u : 0u))
        resync_end(srv, "hash spaces fetched again");
}

/* Work that must not run on a stale view (kumofs-c): client requests during a resync.
 * (Replication from a coordinator listed as fault is not refused: right after an attach
 * a replica may still list the returning coordinator as fault, and a refused old-owner
 * copy counts as done, so the write would be acknowledged without it.)
 * Answers error 6 and returns true when refused. */
static bool stale_refused(server *srv, const rpc_request *req)
{
    double now = ev_now(srv->loop);
    if (srv->last_tick > 0 && now - srv->last_tick > STALL_SECONDS)
        resync_begin(srv, "the event loop stood still", now - srv->last_tick);
    else
        lease_check(srv, now);
    switch (req->method) {
    case SRV_GET:      /* its copy may have missed writes made elsewhere meanwhile */
    case SRV_SET:
    case SRV_DELETE:
    case SRV_UPDATE:
        if (!srv->resync)
            return false;
        break;
    default:
        return false;
    }
    rpc_reply_error(req->session, req->msgid, RPC_SERVER_ERROR);
    return true;
}

static void request_hash_spaces_from(server *srv, const kaddr *mgr)
{
    rpc_session *s = rpc_node_session(srv->rpc, mgr, true);
    request_hash_space(srv, s, MGR_WHASH_SPACE_REQUEST);
    request_hash_space(srv, s, MGR_RHASH_SPACE_REQUEST);
}

static void on_new_node(rpc_session *s, int role, void *ud)
{
    (void)role;                 /* "new node <role> <addr>" is logged by the RPC layer */
    server *srv = ud;
    const kaddr *a = rpc_session_addr(s);
    if (is_manager(srv, a)) {
        request_hash_spaces_from(srv, &srv->cfg.mgr1);
        if (srv->cfg.mgr2.len != 0)
            request_hash_spaces_from(srv, &srv->cfg.mgr2);
    }
}

static void on_lost_node(rpc_session *s, int role, void *ud)
{
    /* "lost node <role> <addr>" is logged by the RPC layer; pending requests to the
     * peer fail on their own, so there is nothing else to do here. */
    (void)s;
    (void)role;
    (void)ud;
}

/* HashSpaceSync rule (wire.md §8.2): non-empty seed and local.ts <= seed.ts. */
static bool adopt_sync(hashspace *local, hashspace *seed)
{
    if (hashspace_empty(seed) || clocktime_less(seed->clocktime, local->clocktime))
        return false;
    hashspace_swap(local, seed);
    return true;
}

/* ---- keepalive ---- */

/* ud of a KeepAlive: to which manager (0 = -m, 1 = -p) and when it was sent (the lease
 * counts from there). */
typedef struct ka_call {
    server *srv;
    int mgr;
    double sent;
} ka_call;

static void keepalive_cb(rpc_session *s, const rpc_result *r, void *ud)
{
    ka_call *k = ud;
    server *srv = k->srv;
    double sent = k->sent;
    int i = k->mgr;
    free(k);
    if (r->err == RPC_OK) {
        if (sent > srv->mgr_ok_sent)
            srv->mgr_ok_sent = sent;
        srv->mgr_refused[i] = false;
    } else if (r->err == RPC_TIMEOUT) {
        srv->mgr_timeout_at = ev_now(srv->loop);
        srv->mgr_refused[i] = false;
    } else {
        srv->mgr_refused[i] = true;   /* the connection failed or was refused */
    }
    if (r->err != RPC_OK) {
        char buf[KADDR_STRLEN];
        log_debug("KeepAlive to %s failed: error %d", kaddr_format(rpc_session_addr(s), buf), r->err);
    }
}

static void keepalive_to(server *srv, const kaddr *mgr, int i)
{
    rpc_session *s = rpc_node_session(srv->rpc, mgr, true);
    ka_call *k = xmalloc(sizeof(*k));
    k->srv = srv;
    k->mgr = i;
    k->sent = ev_now(srv->loop);
    msgpack_packer *pk = rpc_call_begin_timed(s, MGR_KEEP_ALIVE, LEASE_SECONDS / 2, keepalive_cb, k);
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint32(pk, kclock_incr(&srv->clock));
    rpc_call_end(s);
}

void server_keepalive(server *srv)
{
    keepalive_to(srv, &srv->cfg.mgr1, 0);
    if (srv->cfg.mgr2.len != 0)
        keepalive_to(srv, &srv->cfg.mgr2, 1);
}

void server_tick(server *srv)
{
    kclock_update_time(&srv->clock);
    double now = ev_now(srv->loop);
    if (srv->last_tick > 0 && now - srv->last_tick > STALL_SECONDS)
        resync_begin(srv, "the event loop stood still", now - srv->last_tick);
    else
        lease_check(srv, now);
    if (srv->resync && managers_down(srv, now) && now - srv->resync_since > RESYNC_MAX_SECONDS)
        resync_end(srv, "the managers are not running");
    else if (srv->resync && now - srv->resync_asked > RESYNC_ASK_SECONDS)
        resync_ask(srv);   /* earlier requests may have died with their session */
    srv->last_tick = now;
    if (!srv->stopping)
        server_keepalive(srv);   /* every tick: the lease above counts on it */
}

/* ---- cluster control requests ---- */

static void handle_keepalive(server *srv, const rpc_request *req)
{
    uint32_t adjust;
    if (!req->cluster || !server_arg_u32(req, 0, &adjust)) {
        reply_protocol_error(req);
        return;
    }
    kclock_merge(&srv->clock, adjust);
    rpc_reply_nil(req->session, req->msgid);
}

static void handle_hash_space_sync(server *srv, const rpc_request *req)
{
    uint32_t adjust;
    hashspace w, r;
    hashspace_init(&w);
    hashspace_init(&r);
    if (!req->cluster || !server_arg_u32(req, 2, &adjust)
        || !server_arg_seed(req, 0, &w)
        || !server_arg_seed(req, 1, &r)) {
        reply_protocol_error(req);
    } else {
        kclock_merge(&srv->clock, adjust);
        bool wc = adopt_sync(&srv->whs, &w);
        bool rc = adopt_sync(&srv->rhs, &r);
        if (wc)
            log_hs("write", &srv->whs);
        if (rc)
            log_hs("read", &srv->rhs);
        if (wc || rc)
            rpc_reply_bool(req->session, req->msgid, true);
        else
            rpc_reply_nil(req->session, req->msgid);
    }
    hashspace_destroy(&w);
    hashspace_destroy(&r);
}

static void handle_replace_copy_start(server *srv, const rpc_request *req)
{
    uint32_t adjust;
    bool full = false;
    hashspace seed;
    hashspace_init(&seed);
    const msgpack_object *fo = kwire_array_at(req->params, 2);   /* full:bool = false */
    if (!req->cluster || !server_arg_u32(req, 1, &adjust)
        || !server_arg_seed(req, 0, &seed)
        || (fo != NULL && !kwire_get_bool(fo, &full))) {
        reply_protocol_error(req);
        hashspace_destroy(&seed);
        return;
    }
    kclock_merge(&srv->clock, adjust);
    rpc_reply_bool(req->session, req->msgid, true);       /* answered at once (§8.2) */
    replace_copy_start(srv->repl, rpc_session_addr(req->session), &seed, full);
    hashspace_destroy(&seed);
}

static void handle_replace_delete_start(server *srv, const rpc_request *req)
{
    uint32_t adjust;
    hashspace seed;      /* validated but ignored: the server uses its own whs (§8.4) */
    hashspace_init(&seed);
    bool ok = req->cluster && server_arg_u32(req, 1, &adjust)
        && server_arg_seed(req, 0, &seed);
    hashspace_destroy(&seed);
    if (!ok) {
        reply_protocol_error(req);
        return;
    }
    kclock_merge(&srv->clock, adjust);
    rpc_reply_bool(req->session, req->msgid, true);
    replace_delete_start(srv->repl, rpc_session_addr(req->session));
}

static void handle_replace_offer(server *srv, const rpc_request *req)
{
    kaddr from;
    const msgpack_object *o = kwire_array_at(req->params, 0);
    if (!req->cluster || o == NULL || !kwire_get_addr(o, &from) || kaddr_is_null(&from)) {
        reply_protocol_error(req);
        return;
    }
    /* never answered (wire.md §8.2): the offerer times out on its own */
    stream_pull_start(srv->streams, &from);
}

/* ---- backup (storage.md §6) ----
 * The dump runs on the event loop in paced steps of at most 1 ms (store_dump_step) and
 * hands the records through a bounded queue to a thread that writes the copy.  Only the loop
 * reads the store: a thread that read it under the store lock was, on a busy host, often
 * preempted while holding the lock, and gets waited for it (measured: p99.9 47 ms, max
 * 176 ms at 1 GiB).  The copy's writes and fsyncs stay off the loop. */

/* One dumped record on its way to the writer. */
typedef struct backup_rec {
    struct backup_rec *next;
    size_t klen, vlen;
    bool gone;                   /* the key was removed meanwhile */
    uint8_t data[];              /* key, then value */
} backup_rec;

/* The dump's pace, as the flush walk's (rmwop.c): steps of at most 1 MB and 0.25 ms,
 * each followed by a pause BACKUP_PAUSE_RATIO times as long (0.5 ms at least) if the
 * server served requests since the step before (none otherwise: server_yield_pause), so
 * the dump takes at most a quarter of the loop's time while there are clients.  With
 * 1 ms steps, pauses as long and the writer at nice 10, a backup of 200 MB a server left
 * clients 50-59 % of their throughput; with these, 55-57 % (scripts/bench-ops.sh). */
#define BACKUP_STEP_BYTES (1u << 20)
#define BACKUP_STEP_SEC 0.00025
#define BACKUP_PAUSE_MIN_SEC 0.0005
#define BACKUP_PAUSE_RATIO 3.0
#define BACKUP_QUEUE_BYTES (16u << 20)  /* the loop stops dumping while this much waits */
#define BACKUP_RETRY_SEC 0.005          /* queue full: look again after this */

/* The writer thread's nice value: it writes a whole database and would otherwise take
 * CPU from the event loops on a busy host.  It never holds the store lock (but once, to
 * read the tuning), so its priority cannot hold up the loop. */
#define BACKUP_NICE 19

typedef struct backup_job {
    server *srv;
    rpc_session *session;        /* referenced */
    uint32_t msgid;
    char *dst;
    ev_tstamp started;
    struct backup_job *next;     /* running_backups (loop thread) */
    store_dump *dump;            /* loop thread; NULL once the dump has ended */
    ev_timer step;               /* the next dump step */
    uint64_t requests;           /* server_requests after the last step (loop thread) */
    pthread_mutex_t mu;          /* guards the fields below */
    pthread_cond_t cv;
    backup_rec *head, *tail;
    size_t queued;               /* bytes in the queue */
    bool end;                    /* the loop hands out no more records */
    bool cancel;                 /* ... and the copy must not be committed */
    bool failed;                 /* the writer failed: the loop stops dumping */
    bool ok;                     /* the writer's result */
    char err[256];               /* why not, for the log */
} backup_job;

static backup_job *running_backups;

static void backup_done(server *srv, void *arg)
{
    (void)srv;
    backup_job *job = arg;
    for (backup_job **p = &running_backups; *p != NULL; p = &(*p)->next) {
        if (*p == job) {
            *p = job->next;
            break;
        }
    }
    if (job->ok) {
        log_info("backup created: %s in %.1f s", job->dst, ev_now(srv->loop) - job->started);
        rpc_reply_bool(job->session, job->msgid, true);
    } else {
        log_error("%s", job->err);
        msgpack_packer *pk = rpc_reply_begin(job->session, job->msgid);
        msgpack_pack_true(pk);   /* error true (wire.md §8.2) */
        msgpack_pack_nil(pk);
        rpc_reply_end(job->session);
    }
    rpc_session_unref(job->session);
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
    free(job->dst);
    free(job);
}

/* store_dump_fn: queue a copy of the record for the writer. */
static void backup_enqueue(const void *key, size_t klen, const void *val, size_t vlen,
                           void *ud)
{
    backup_job *job = ud;
    if (val == NULL)
        vlen = 0;
    backup_rec *r = xmalloc(sizeof(*r) + klen + vlen);
    r->next = NULL;
    r->klen = klen;
    r->vlen = vlen;
    r->gone = val == NULL;
    memcpy(r->data, key, klen);
    if (vlen > 0)
        memcpy(r->data + klen, val, vlen);
    pthread_mutex_lock(&job->mu);
    if (job->tail != NULL)
        job->tail->next = r;
    else
        job->head = r;
    job->tail = r;
    job->queued += klen + vlen;
    pthread_cond_signal(&job->cv);
    pthread_mutex_unlock(&job->mu);
}

/* Loop thread: the dump is over (complete, failed or cancelled); tell the writer. */
static void backup_end_dump(backup_job *job, bool cancel, const char *err)
{
    ev_timer_stop(job->srv->loop, &job->step);
    store_dump_free(job->srv->st, job->dump);
    job->dump = NULL;
    pthread_mutex_lock(&job->mu);
    job->end = true;
    job->cancel = cancel;
    if (err != NULL && !job->failed)
        snprintf(job->err, sizeof(job->err), "%s", err);
    pthread_cond_signal(&job->cv);
    pthread_mutex_unlock(&job->mu);
}

static void backup_step_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    backup_job *job = w->data;
    pthread_mutex_lock(&job->mu);
    size_t queued = job->queued;
    bool failed = job->failed;
    pthread_mutex_unlock(&job->mu);
    if (failed) {
        backup_end_dump(job, true, NULL);
        return;
    }
    ev_tstamp pause = BACKUP_RETRY_SEC;           /* the queue is full: let the writer work */
    if (queued < BACKUP_QUEUE_BYTES) {
        char err[256];
        ev_tstamp t0 = ev_time();
        int rc = store_dump_step(job->srv->st, job->dump, BACKUP_STEP_BYTES, BACKUP_STEP_SEC,
                                 backup_enqueue, job, err, sizeof(err));
        if (rc <= 0) {
            backup_end_dump(job, rc < 0, rc < 0 ? err : NULL);
            return;
        }
        pause = server_yield_pause(job->srv, &job->requests, ev_time() - t0,
                                   BACKUP_PAUSE_RATIO, BACKUP_PAUSE_MIN_SEC);
    }
    ev_now_update(loop);
    ev_timer_set(w, pause, 0.0);
    ev_timer_start(loop, w);
}

/* The writer: drains the queue into the copy, then commits it (or drops it). */
static void *backup_thread(void *arg)
{
    backup_job *job = arg;
    server *srv = job->srv;
    char err[256] = "";
    /* Linux: a thread id names one thread for setpriority; best effort. */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), BACKUP_NICE) != 0)
        log_debug("backup: can't lower the thread's priority");
    store_copy *copy = store_copy_create(srv->st, job->dst, err, sizeof(err));
    bool failed = copy == NULL;
    bool end = false, cancel = false;
    while (!end) {
        pthread_mutex_lock(&job->mu);
        while (job->head == NULL && !job->end)
            pthread_cond_wait(&job->cv, &job->mu);
        backup_rec *r = job->head;
        job->head = job->tail = NULL;
        job->queued = 0;
        end = job->end && r == NULL;
        cancel = job->cancel;
        if (failed && !job->failed) {
            job->failed = true;                    /* the loop stops dumping */
            snprintf(job->err, sizeof(job->err), "%s", err);
        }
        pthread_mutex_unlock(&job->mu);
        while (r != NULL) {
            backup_rec *next = r->next;
            if (!failed)
                failed = !store_copy_put(copy, r->data, r->klen, r->gone ? NULL : r->data + r->klen,
                                         r->vlen, err, sizeof(err));
            free(r);
            r = next;
        }
    }
    pthread_mutex_lock(&job->mu);
    if (failed && !job->failed)
        snprintf(job->err, sizeof(job->err), "%s", err);
    failed = failed || job->failed;
    if (cancel && job->err[0] == '\0')
        snprintf(job->err, sizeof(job->err), "backup to %s cancelled: the server is stopping",
                 job->dst);
    pthread_mutex_unlock(&job->mu);
    if (copy != NULL && (failed || cancel)) {
        store_copy_abort(copy);
    } else if (copy != NULL) {
        job->ok = store_copy_commit(copy, err, sizeof(err)) == 0;
        if (!job->ok)
            snprintf(job->err, sizeof(job->err), "%s", err);
    }
    server_post(srv, backup_done, job);
    pthread_mutex_lock(&srv->task_lock);
    srv->backups_running--;
    pthread_mutex_unlock(&srv->task_lock);
    return NULL;
}

static void handle_create_backup(server *srv, const rpc_request *req)
{
    const char *suffix;
    size_t slen;
    const msgpack_object *o = kwire_array_at(req->params, 0);
    if (!req->cluster || o == NULL || !kwire_get_raw(o, &suffix, &slen)) {
        reply_protocol_error(req);
        return;
    }
    backup_job *job = xcalloc(1, sizeof(*job));
    job->srv = srv;
    job->session = req->session;
    rpc_session_ref(job->session);
    job->msgid = req->msgid;
    job->started = ev_now(srv->loop);
    size_t blen = strlen(srv->cfg.store_spec);
    job->dst = xmalloc(blen + 1 + slen + 1);
    memcpy(job->dst, srv->cfg.store_spec, blen);
    job->dst[blen] = '-';
    if (slen > 0)
        memcpy(job->dst + blen + 1, suffix, slen);
    job->dst[blen + 1 + slen] = '\0';
    pthread_mutex_init(&job->mu, NULL);
    pthread_cond_init(&job->cv, NULL);
    job->next = running_backups;
    running_backups = job;

    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&srv->task_lock);
    srv->backups_running++;
    pthread_mutex_unlock(&srv->task_lock);
    if (pthread_create(&th, &attr, backup_thread, job) != 0) {
        pthread_mutex_lock(&srv->task_lock);
        srv->backups_running--;
        pthread_mutex_unlock(&srv->task_lock);
        snprintf(job->err, sizeof(job->err), "backup: can't start a thread");
        job->ok = false;
        backup_done(srv, job);
        pthread_attr_destroy(&attr);
        return;
    }
    pthread_attr_destroy(&attr);
    job->dump = store_dump_start(srv->st);
    ev_timer_init(&job->step, backup_step_cb, 0.0, 0.0);
    job->step.data = job;
    ev_timer_start(srv->loop, &job->step);
}

/* ---- status and config (wire.md §9) ---- */

static void handle_get_status(server *srv, const rpc_request *req)
{
    uint32_t cmd;
    if (req->cluster || !server_arg_u32(req, 0, &cmd)) {
        reply_protocol_error(req);
        return;
    }
    msgpack_packer *pk = rpc_reply_begin(req->session, req->msgid);
    msgpack_pack_nil(pk);
    switch (cmd) {
    case STATUS_PID:       msgpack_pack_uint32(pk, (uint32_t)getpid()); break;
    case STATUS_UPTIME:    msgpack_pack_uint32(pk, (uint32_t)(time(NULL) - srv->start_time)); break;
    case STATUS_TIME:      msgpack_pack_uint64(pk, (uint64_t)time(NULL)); break;
    case STATUS_VERSION:   kwire_pack_raw(pk, KUMO_VERSION_STRING, strlen(KUMO_VERSION_STRING)); break;
    case STATUS_CMD_GET:   msgpack_pack_uint64(pk, srv->cmd_get); break;
    case STATUS_CMD_SET:   msgpack_pack_uint64(pk, srv->cmd_set); break;
    case STATUS_CMD_DELETE: msgpack_pack_uint64(pk, srv->cmd_delete); break;
    case STATUS_ITEMS:     msgpack_pack_uint64(pk, store_count(srv->st)); break;
    case STATUS_CLOCKTIME: msgpack_pack_uint64(pk, kclock_now(&srv->clock)); break;
    case STATUS_RHS:       kwire_pack_seed(pk, &srv->rhs); break;
    case STATUS_WHS:       kwire_pack_seed(pk, &srv->whs); break;
    case STATUS_EXTENSIONS: msgpack_pack_uint32(pk, STATUS_EXT_V1 | STATUS_EXT_FORWARD); break;
    case STATUS_REPLSTAT: {
        uint32_t bits = 0;
        if (!hashspace_is_active(&srv->whs, &srv->cfg.self))
            bits |= REPLSTAT_INACTIVE;
        if (!hashspace_nodes_equal(&srv->rhs, &srv->whs))
            bits |= REPLSTAT_HS_DIFFER;
        if (replace_is_copying(srv->repl))
            bits |= REPLSTAT_COPYING;
        if (replace_is_deleting(srv->repl))
            bits |= REPLSTAT_DELETING;
        msgpack_pack_uint32(pk, bits);
        break;
    }
    default:               msgpack_pack_nil(pk); break;
    }
    rpc_reply_end(req->session);
}

static void handle_set_config(server *srv, const rpc_request *req)
{
    (void)srv;
    uint32_t cmd;
    bool on;
    if (req->cluster || !server_arg_u32(req, 0, &cmd)) {
        reply_protocol_error(req);
        return;
    }
    if (cmd != CONF_TCP_NODELAY)
        return;                      /* the original sends no response (wire.md §9) */
    const msgpack_object *o = kwire_array_at(req->params, 1);
    if (o == NULL || !kwire_get_bool(o, &on)) {
        reply_protocol_error(req);
        return;
    }
    struct rlimit rl;
    rlim_t maxfd = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        maxfd = rl.rlim_cur;
    if (maxfd > (1u << 20))
        maxfd = 1u << 20;
    int v = on ? 1 : 0;
    uint32_t count = 0;
    for (rlim_t fd = 0; fd < maxfd; fd++)
        if (setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) == 0)
            count++;
    rpc_reply_u64(req->session, req->msgid, count);
}

/* ---- dispatch ---- */

static void dispatch(const rpc_request *req, void *ud)
{
    server *srv = ud;
    if (srv->stopping)
        return;
    if (req->params == NULL || req->params->type != MSGPACK_OBJECT_ARRAY) {
        reply_protocol_error(req);
        return;
    }
    if (stale_refused(srv, req))
        return;
    /* only this thread writes it: a plain increment, made visible to the others */
    atomic_store_explicit(&srv->requests,
                          atomic_load_explicit(&srv->requests, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    switch (req->method) {
    case SRV_KEEP_ALIVE:           handle_keepalive(srv, req); break;
    case SRV_HASH_SPACE_SYNC:      handle_hash_space_sync(srv, req); break;
    case SRV_REPLACE_COPY_START:   handle_replace_copy_start(srv, req); break;
    case SRV_REPLACE_DELETE_START: handle_replace_delete_start(srv, req); break;
    case SRV_REPLACE_OFFER:        handle_replace_offer(srv, req); break;
    case SRV_REPLICATE_SET:        dataop_replicate_set(srv, req); break;
    case SRV_REPLICATE_DELETE:     dataop_replicate_delete(srv, req); break;
    case SRV_GET:                  dataop_get(srv, req); break;
    case SRV_SET:                  dataop_set(srv, req); break;
    case SRV_DELETE:               dataop_delete(srv, req); break;
    case SRV_GET_IF_MODIFIED:      dataop_get_if_modified(srv, req); break;
    case SRV_UPDATE:               rmwop_update(srv, req); break;
    case SRV_FLUSH:                rmwop_flush(srv, req); break;
    case SRV_GET_VERSION:          dataop_get_version(srv, req); break;
    case SRV_FORWARD:              relay_forward(srv, req); break;
    case SRV_CREATE_BACKUP:        handle_create_backup(srv, req); break;
    case SRV_GET_STATUS:           handle_get_status(srv, req); break;
    case SRV_SET_CONFIG:           handle_set_config(srv, req); break;
    default:                       reply_protocol_error(req); break;
    }
}

/* ---- lifecycle ---- */

server *server_new(struct ev_loop *loop, store *st, const server_config *cfg)
{
    server *srv = xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->st = st;
    srv->cfg = *cfg;
    kclock_init(&srv->clock);
    hashspace_init(&srv->whs);
    hashspace_init(&srv->rhs);
    srv->start_time = time(NULL);
    pthread_mutex_init(&srv->task_lock, NULL);
    ev_async_init(&srv->task_wakeup, task_wakeup_cb);
    srv->task_wakeup.data = srv;
    ev_async_start(loop, &srv->task_wakeup);

    rpc_config rc = {
        .self = cfg->self,
        .role = RPC_ROLE_SERVER,
        .connect_timeout = cfg->connect_timeout,
        .connect_retry_limit = cfg->connect_retry_limit,
        .clock_interval = cfg->clock_interval,
        .dispatch = dispatch,
        .new_node = on_new_node,
        .lost_node = on_lost_node,
        .ud = srv,
    };
    srv->rpc = rpc_node_new(loop, &rc);
    srv->dop = dataop_state_new();
    srv->repl = replace_new(srv);
    stream_offers offers;
    replace_stream_offers(srv->repl, &offers);
    srv->streams = stream_set_new(srv, &offers);
    return srv;
}

void server_start(server *srv, int rpc_fd, int stream_fd)
{
    rpc_node_listen_fd(srv->rpc, rpc_fd);
    stream_listen(srv->streams, stream_fd);
    /* Connect to the managers at once rather than on the first keepalive tick. */
    server_keepalive(srv);
}

void server_free(server *srv)
{
    srv->stopping = true;
    replace_stop(srv->repl);             /* joins the worker */
    rmwop_stop(srv);                     /* drop delayed flushes */
    for (backup_job *job = running_backups; job != NULL; job = job->next) {
        if (job->dump != NULL)            /* running backups are dropped */
            backup_end_dump(job, true, NULL);
    }
    for (;;) {                            /* let the backup writers finish */
        pthread_mutex_lock(&srv->task_lock);
        int n = srv->backups_running;
        pthread_mutex_unlock(&srv->task_lock);
        if (n == 0)
            break;
        usleep(10000);
    }
    run_tasks(srv);                       /* deliver what the threads posted */
    stream_set_free(srv->streams);
    rpc_node_free(srv->rpc);              /* pending callbacks see TRANSPORT_LOST */
    run_tasks(srv);
    replace_free(srv->repl);
    dataop_state_free(srv->dop);
    ev_async_stop(srv->loop, &srv->task_wakeup);
    pthread_mutex_destroy(&srv->task_lock);
    hashspace_destroy(&srv->whs);
    hashspace_destroy(&srv->rhs);
    free(srv);
}

/* ------------------------------------------------------------------ accessors (server.h) */

struct ev_loop *server_loop(const server *srv) { return srv->loop; }
rpc_node *server_rpc(const server *srv) { return srv->rpc; }
store *server_store(const server *srv) { return srv->st; }
const server_config *server_cfg(const server *srv) { return &srv->cfg; }
kclock *server_clock(const server *srv) { return (kclock *)&srv->clock; }
hashspace *server_whs(const server *srv) { return (hashspace *)&srv->whs; }
hashspace *server_rhs(const server *srv) { return (hashspace *)&srv->rhs; }
bool server_stopping(const server *srv) { return srv->stopping; }
bool server_resyncing(const server *srv) { return srv->resync; }
replace *server_replace(const server *srv) { return srv->repl; }
dataop_state *server_dataop(const server *srv) { return srv->dop; }
stream_set *server_streams(const server *srv) { return srv->streams; }
uint64_t server_requests(const server *srv)
{
    return atomic_load_explicit(&srv->requests, memory_order_relaxed);
}

double server_yield_pause(const server *srv, uint64_t *seen, double worked, double ratio,
                          double min_pause)
{
    uint64_t now = server_requests(srv);
    bool clients = now != *seen;
    *seen = now;
    if (!clients)
        return 0;
    double pause = worked * ratio;
    return pause < min_pause ? min_pause : pause;
}
void server_count_get(server *srv) { srv->cmd_get++; }
void server_count_set(server *srv) { srv->cmd_set++; }
void server_count_delete(server *srv) { srv->cmd_delete++; }
