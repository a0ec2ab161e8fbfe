/* listener.h - the one accept loop of every daemon: the msgpack-RPC ports, the memcached
 * ports and the replace-stream port all accept through it.
 *
 * Each readable event accepts up to `burst` connections (non-blocking, close-on-exec) and
 * hands each to on_accept, so one busy listener cannot starve the rest of the loop.  When
 * accept fails for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) the
 * listener would stay readable and the loop would spin, so it rests: first
 * NET_LISTEN_PAUSE_MIN seconds, doubling while the failures go on up to
 * NET_LISTEN_PAUSE_MAX, back to the minimum after an accept succeeds.  Pending peers wait
 * in the kernel's backlog meanwhile.  One log line per pause. */
#ifndef KUMO_NET_LISTENER_H
#define KUMO_NET_LISTENER_H

#include <ev.h>
#include <stdint.h>

#define NET_LISTEN_BURST 64
#define NET_LISTEN_PAUSE_MIN 0.1
#define NET_LISTEN_PAUSE_MAX 1.0

/* A new connection: fd is non-blocking and close-on-exec; the callee owns it. */
typedef void (*net_accept_fn)(void *ud, int fd);

typedef struct net_listener {
    ev_io io;                    /* readable: connections are waiting */
    ev_timer pause;              /* resting after an accept failure */
    struct ev_loop *loop;
    const char *name;            /* for the log: "rpc", "memcached text", ... */
    net_accept_fn on_accept;
    void *ud;
    double pause_sec;            /* the next rest */
    unsigned burst;              /* accepts per event (NET_LISTEN_BURST by default) */
    uint64_t accepted;           /* counters, for tests and statistics */
    uint64_t pauses;
} net_listener;

/* Set l up on the listening socket fd (made non-blocking here) and start it. */
void net_listener_start(net_listener *l, struct ev_loop *loop, int fd, const char *name,
                        net_accept_fn on_accept, void *ud);

/* Stop accepting (watchers stopped; the descriptor is left to the caller). */
void net_listener_stop(net_listener *l);

/* The listening descriptor. */
static inline int net_listener_fd(const net_listener *l)
{
    return l->io.fd;
}

#endif
