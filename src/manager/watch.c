/* watch.c - kumo-manager's failure detector for servers (kumofs-c).
 *
 * The original notices a hung-but-connected server only after six keepalives of 10 steps
 * each failed in a row (about half a minute, algorithms.md §3).  Here every connected
 * server gets a KeepAlive (the original's message, so original servers answer it too)
 * every timeout/2 seconds with a deadline of `timeout` seconds; `misses` unanswered in a
 * row shut the session down, which is the lost-node path of §6.2 (fault, sync, push).
 * One slow answer is not a miss as long as it comes within the deadline, and one miss is
 * forgiven by the next answer, so a slow server is not flapped out.
 *
 * Coming back is damped the other way: a server that was lost must answer `recover`
 * heartbeats in a row (doubled for every further loss within FLAP_WINDOW seconds) before
 * the auto-replace election attaches it again.  `kumoctl attach` is not held back. */
#include "manager/watch.h"

#include <stdlib.h>
#include <string.h>

#include "logic/log.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"
#include "manager/manager_internal.h"
#include "rpc/rpc.h"

#define FLAP_WINDOW 60.0      /* losses further apart than this start the count again */
#define RECOVER_MAX 256       /* cap of the doubled recover count */

/* What the detector knows about one server address. */
typedef struct watch_entry {
    kaddr addr;
    unsigned misses;          /* heartbeats unanswered in a row */
    unsigned oks;             /* heartbeats answered in a row */
    unsigned losses;          /* losses within FLAP_WINDOW of each other */
    double lost_at;           /* ev_now of the last loss, 0 = never */
} watch_entry;

struct mgr_watch {
    manager *m;
    struct ev_loop *loop;
    watch_config cfg;
    ev_timer beat;
    watch_entry *v;
    size_t n, cap;
};

static watch_entry *entry_get(mgr_watch *w, const kaddr *a)
{
    for (size_t i = 0; i < w->n; i++)
        if (kaddr_eq(&w->v[i].addr, a))
            return &w->v[i];
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->v = xrealloc(w->v, w->cap * sizeof *w->v);
    }
    watch_entry *e = &w->v[w->n++];
    memset(e, 0, sizeof *e);
    e->addr = *a;
    return e;
}

static void beat_done(rpc_session *s, const rpc_result *r, void *ud)
{
    mgr_watch *w = ud;
    if (w->m->closing || rpc_session_is_lost(s))
        return;
    watch_entry *e = entry_get(w, rpc_session_addr(s));
    char buf[KADDR_STRLEN];
    if (r->err == RPC_OK) {
        if (e->misses >= 1)
            log_info("server %s answers again after %u missed heartbeats",
                     kaddr_format(&e->addr, buf), e->misses);
        e->misses = 0;
        e->oks++;
        return;
    }
    if (r->err != RPC_TIMEOUT)
        return;   /* a refused or lost connection is the rpc layer's lost-node path */
    e->oks = 0;
    if (++e->misses < w->cfg.misses)
        return;
    log_warn("server %s missed %u heartbeats of %.2f s: declaring it lost",
             kaddr_format(&e->addr, buf), e->misses, w->cfg.timeout);
    e->misses = 0;
    rpc_session_shutdown(s);   /* -> on_lost_node -> fault, sync, push (§6.2) */
}

static void beat_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    mgr_watch *w = t->data;
    manager *m = w->m;
    mgr_sess_list l = {0};
    mgr_connected_servers(m, &l);
    for (size_t i = 0; i < l.n; i++) {
        msgpack_packer *pk = rpc_call_begin_timed(l.v[i], MGR_KEEP_ALIVE, w->cfg.timeout,
                                                  beat_done, w);
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint64(pk, kclock_incr(&m->clock));
        rpc_call_end(l.v[i]);
    }
    mgr_sess_list_release(&l);
}

mgr_watch *watch_new(manager *m, struct ev_loop *loop, const watch_config *cfg)
{
    if (cfg->misses == 0 || !(cfg->timeout > 0))
        return NULL;
    mgr_watch *w = xcalloc(1, sizeof *w);
    w->m = m;
    w->loop = loop;
    w->cfg = *cfg;
    double period = cfg->timeout / 2;
    ev_timer_init(&w->beat, beat_cb, period, period);
    w->beat.data = w;
    ev_timer_start(loop, &w->beat);
    ev_unref(loop);   /* housekeeping: the listener keeps the loop alive */
    return w;
}

void watch_free(mgr_watch *w)
{
    if (w == NULL)
        return;
    ev_ref(w->loop);
    ev_timer_stop(w->loop, &w->beat);
    free(w->v);
    free(w);
}

void watch_server_lost(mgr_watch *w, const kaddr *a)
{
    if (w == NULL)
        return;
    watch_entry *e = entry_get(w, a);
    double now = ev_now(w->loop);
    if (e->lost_at > 0 && now - e->lost_at <= FLAP_WINDOW)
        e->losses++;
    else
        e->losses = 1;
    e->lost_at = now;
    e->oks = 0;
    e->misses = 0;
}

bool watch_may_attach(mgr_watch *w, const kaddr *a)
{
    if (w == NULL)
        return true;
    watch_entry *e = entry_get(w, a);
    if (e->losses == 0)
        return true;   /* never lost: a new server */
    unsigned need = w->cfg.recover;
    for (unsigned i = 1; i < e->losses && need < RECOVER_MAX; i++)
        need *= 2;
    if (need > RECOVER_MAX)
        need = RECOVER_MAX;
    return e->oks >= need;
}
