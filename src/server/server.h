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

/* What the other server modules use of the server.  The struct itself is server.c's
 * (server_internal.h): a module reaches the server's state through these, so the state
 * can change shape without every module following. */
struct ev_loop *server_loop(const server *srv);
rpc_node *server_rpc(const server *srv);
store *server_store(const server *srv);
const server_config *server_cfg(const server *srv);
kclock *server_clock(const server *srv);          /* algorithms.md §2 */
hashspace *server_whs(const server *srv);         /* write hash space (replace.c swaps it) */
hashspace *server_rhs(const server *srv);         /* read hash space */
bool server_stopping(const server *srv);          /* shutting down: no retries, no new work */
bool server_resyncing(const server *srv);         /* after a stall: refusing client writes */
replace *server_replace(const server *srv);       /* replace.c's state */
dataop_state *server_dataop(const server *srv);   /* dataop.c's trackers and stamp cache */
stream_set *server_streams(const server *srv);    /* stream.c's connections */
/* Requests dispatched so far, readable from any thread.  The background work of a
 * replace, a backup and a flush_all yields the CPU only while this moves (clients are
 * there to yield it to), and runs at full speed on an idle server. */
uint64_t server_requests(const server *srv);
/* The one rule of that yielding: background work that just ran `worked` seconds pauses
 * ratio times as long (min_pause at least) if requests were dispatched since *seen, and
 * not at all otherwise.  Returns the pause in seconds and sets *seen to the count now.
 * Any thread. */
double server_yield_pause(const server *srv, uint64_t *seen, double worked, double ratio,
                          double min_pause);

/* GetStatus counters (wire.md §9) */
void server_count_get(server *srv);
void server_count_set(server *srv);
void server_count_delete(server *srv);

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
