/* manager.h - kumo-manager's cluster logic: hash spaces, newcomers, attach/detach, replace
 * bookkeeping, keepalive, partner sync and replace election (algorithms.md §3, §6, §9). */
#ifndef KUMO_MANAGER_H
#define KUMO_MANAGER_H

#include <ev.h>
#include <stdbool.h>

#include "logic/addr.h"

typedef struct manager manager;

typedef struct manager_config {
    kaddr self;                    /* -l: advertised address, sent in handshakes */
    kaddr partner;                 /* -p: the other manager; len 0 = none */
    bool auto_replace;             /* -a: initial auto-replace flag */
    unsigned replace_delay;        /* -Rs seconds: debounce of the auto-replace election */
    double connect_timeout;        /* -Ys seconds */
    unsigned connect_retry_limit;  /* -Yn */
    double clock_interval;         /* -Ci seconds (RPC step period) */
    double watch_timeout;          /* -Ws: heartbeat deadline, seconds (watch.h) */
    unsigned watch_misses;         /* -Wn: misses that mark a server fault; 0 = off */
    unsigned watch_recover;        /* -Wr: answers before auto-replace re-attaches */
} manager_config;

/* Create the manager and its RPC endpoint on loop (cfg is copied).  The caller drives it
 * with manager_tick every 0.5 s and manager_keepalive every 2 s.  Release with
 * manager_free. */
manager *manager_new(struct ev_loop *loop, const manager_config *cfg);

/* Close every connection (pending calls fail locally) and free everything. */
void manager_free(manager *m);

/* Accept cluster peers and plain clients on a listening socket; takes ownership of fd. */
void manager_listen_fd(manager *m, int fd);

/* The 0.5 s tick (algorithms.md §1): refresh the clock's cached time and run delayed work
 * (the auto-replace election debounce, §6.8). */
void manager_tick(manager *m);

/* The 2 s keepalive (algorithms.md §3): KeepAlive to every connected server, newcomer and
 * the partner; sessions that fail more than 5 in a row are shut down. */
void manager_keepalive(manager *m);

#endif
