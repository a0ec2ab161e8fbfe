/* server_internal.h - the server's state, private to server.c (the other modules use
 * server.h's accessors). */
#ifndef KUMO_SERVER_INTERNAL_H
#define KUMO_SERVER_INTERNAL_H

#include <stdatomic.h>

#include "server/server.h"

/* Everything here is touched only from the event loop thread unless a field says otherwise. */
struct server {
    struct ev_loop *loop;
    rpc_node *rpc;
    store *st;
    server_config cfg;

    kclock clock;                /* algorithms.md §2 */
    hashspace whs;               /* write hash space */
    hashspace rhs;               /* read hash space */
    time_t start_time;           /* for GetStatus uptime */
    bool stopping;               /* shutting down: no retries, no new work */
    double last_tick;            /* ev_now of the last server_tick: a long gap = we were stopped */
    bool resync;                 /* after a stall: refuse client writes until fresh hash spaces */
    unsigned resync_pending;     /* hash-space answers still awaited for the resync */
    double resync_since;
    double resync_asked;         /* when the hash spaces were last asked for it */
    double mgr_ok_sent;          /* send time of the newest KeepAlive a manager answered */
    bool mgr_refused[2];         /* per manager (-m, -p): its last KeepAlive failed on the
                                  * connection (no process there), not by a timeout */
    double mgr_timeout_at;       /* when a KeepAlive to a manager last timed out */

    uint64_t cmd_get;            /* GetStatus counters (wire.md §9) */
    uint64_t cmd_set;
    uint64_t cmd_delete;
    _Atomic uint64_t requests;   /* requests dispatched (server_requests) */

    replace *repl;               /* copy/delete phases and pending offers */
    dataop_state *dop;           /* replication trackers' pools, stamp cache (dataop.c) */
    stream_set *streams;         /* replace stream connections */

    /* Background threads post tasks here; ev_async wakes the loop. */
    pthread_mutex_t task_lock;
    server_task *task_head, *task_tail;   /* guarded by task_lock */
    ev_async task_wakeup;
    int backups_running;         /* guarded by task_lock */
};

#endif
