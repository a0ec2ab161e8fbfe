/* server.h - kumo-server core: state shared by the server modules, request dispatch,
 * hash-space maintenance, keepalive, status/config and backup (wire.md §8.2, §9;
 * algorithms.md §3, §7).  Data operations live in dataop.c, the replace phases in
 * replace.c, the replace stream connections in stream.c. */
#ifndef KUMO_SERVER_H
#define KUMO_SERVER_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "logic/addr.h"
#include "logic/clocktime.h"
#include "logic/hashspace.h"
#include "logic/kwire.h"
#include "rpc/rpc.h"
#include "server/store.h"

/* Start-up parameters (cli.md §4).  Strings are borrowed for the server's lifetime. */
typedef struct server_config {
    kaddr self;                  /* -l: cluster identity and RPC listen address */
    kaddr stream_addr;           /* -l IP with the -L port (wire.md §10) */
    kaddr mgr1;                  /* -m */
    kaddr mgr2;                  /* -p; len 0 when absent */
    const char *store_spec;      /* raw -s string: backups are "<spec>-<suffix>" */
    const char *tmpdir;          /* -f: replace offer temp files */
    unsigned set_retry;          /* -S */
    unsigned delete_retry;       /* -D */
    unsigned mem_limit_mib;      /* -M, 0 = unlimited */
    uint32_t garbage_max_sec;    /* -gX: tombstone purge age during iterations */
    double connect_timeout;      /* -Ys */
    unsigned connect_retry_limit;/* -Yn */
    double clock_interval;       /* -Ci */
} server_config;

typedef struct server server;
typedef struct replace replace;     /* replace.c */
typedef struct stream_set stream_set; /* stream.c */
typedef struct dataop_state dataop_state; /* dataop.c */

/* A closure run on the event loop thread, posted by a background thread. */
typedef void (*server_task_fn)(server *srv, void *arg);
typedef struct server_task {
    struct server_task *next;
    server_task_fn fn;
    void *arg;
} server_task;

/* The server.  Internal to the src/server modules; everything here is touched only from
 * the event loop thread unless a field says otherwise. */
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

    replace *repl;               /* copy/delete phases and pending offers */
    dataop_state *dop;           /* replication trackers' pools, stamp cache (dataop.c) */
    stream_set *streams;         /* replace stream connections */

    /* Background threads post tasks here; ev_async wakes the loop. */
    pthread_mutex_t task_lock;
    server_task *task_head, *task_tail;   /* guarded by task_lock */
    ev_async task_wakeup;
    int backups_running;         /* guarded by task_lock */
};

/* Create the server on loop around an open store (not owned).  Creates the RPC node.
 * Release with server_free. */
server *server_new(struct ev_loop *loop, store *st, const server_config *cfg);

/* Serve RPC on rpc_fd and the replace stream on stream_fd (both listening, non-blocking;
 * the server takes ownership). */
void server_start(server *srv, int rpc_fd, int stream_fd);

/* The 0.5 s tick: refresh the clock's cached time (algorithms.md §1). */
void server_tick(server *srv);

/* The 2 s keepalive: KeepAlive([clock incr]) to manager1 and manager2 (algorithms.md §3). */
void server_keepalive(server *srv);

/* Stop background work (waits for the replace worker and running backups), close every
 * connection and free the server.  The store stays open for the caller to close. */
void server_free(server *srv);

/* Run fn(srv, arg) on the loop thread soon.  Callable from any thread. */
void server_post(server *srv, server_task_fn fn, void *arg);

/* Replication to a peer gives up an attempt after this many seconds (kumofs-c; the
 * original waited 10 steps of -Ci 8, ~90 s, on a peer that stopped answering). */
#define SERVER_REPLICATE_TIMEOUT 1.0

/* Is self one of the active slots of h in hs? */
bool server_is_replica(const server *srv, const hashspace *hs, uint64_t h);

/* Request parameter i decoded with the lenient kwire rules; false if the params array
 * is too short or the element has the wrong type (the caller answers error 5). */
static inline bool server_arg_u32(const rpc_request *req, uint32_t i, uint32_t *v)
{
    const msgpack_object *o = kwire_array_at(req->params, i);
    return o != NULL && kwire_get_u32(o, v);
}
static inline bool server_arg_u64(const rpc_request *req, uint32_t i, uint64_t *v)
{
    const msgpack_object *o = kwire_array_at(req->params, i);
    return o != NULL && kwire_get_u64(o, v);
}
static inline bool server_arg_seed(const rpc_request *req, uint32_t i, hashspace *hs)
{
    const msgpack_object *o = kwire_array_at(req->params, i);
    return o != NULL && kwire_get_seed(o, hs);
}

#endif
