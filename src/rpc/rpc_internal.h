/* rpc_internal.h - structures and hooks shared by the rpc modules (node/session, connection). */
#ifndef KUMO_RPC_INTERNAL_H
#define KUMO_RPC_INTERNAL_H

#include <stddef.h>

#include "net/listener.h"
#include "net/nconn.h"
#include "rpc/mpscan.h"
#include "rpc/pending.h"
#include "rpc/rpc.h"
#include "net/nbuf.h"

#define RPC_CONTAINER_OF(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/* Connection states (STYLE.md: one enum, transitions in rpc_conn.c). */
enum rpc_conn_state {
    RPC_CONN_CONNECTING,   /* outgoing non-blocking connect in progress (session->connecting) */
    RPC_CONN_ACCEPTED,     /* incoming, first message not seen yet (wire.md §4.3 step 2) */
    RPC_CONN_CLUSTER,      /* handshaken, bound to a cluster session */
    RPC_CONN_PLAIN,        /* plain-client connection, bound to a session */
    RPC_CONN_CLOSED        /* unbound; nconn closes the socket and frees it at the next prepare */
};

typedef struct rpc_conn {
    nconn nc;                      /* socket, input and output, close (net/nconn.h) */
    rpc_node *node;
    rpc_session *session;          /* bound session (or the connecting one); NULL when ACCEPTED/CLOSED */
    enum rpc_conn_state state;
    bool await_init;               /* we connected as a cluster node: the peer's init must come first */
    ev_timer ctimer;               /* connect timeout (-Ys) */
    mpscan scan;                   /* vets every read byte before it is decoded (sizes, depth) */
    size_t scanned;                /* unparsed input bytes the scanner has seen */
    uint64_t base;                 /* stream offset of the first unparsed input byte */
    msgpack_zone zone;             /* objects of the message being handled; cleared after it */
    struct rpc_conn *snext;        /* session's bound connections */
    struct rpc_conn *nprev, *nnext;/* node's open connections */
} rpc_conn;

struct rpc_session {
    rpc_node *node;                /* NULL once the node was freed while a user reference remained */
    kaddr addr;                    /* cluster address, target address, or TCP peer of a plain client */
    int role;                      /* learned from the first init (wire.md §4.3 step 3) */
    bool cluster;                  /* sends/accepts the handshake; reconnects when the last conn drops */
    bool accepted;                 /* anonymous plain-client session made by accept */
    bool lost;                     /* given up: nothing is sent any more */
    bool in_hash;
    bool want_connect;             /* on node->connect_q */
    bool want_fail;                /* on node->fail_q */
    unsigned refs;                 /* the node holds one until the session is lost and released */
    unsigned retry;                /* connect attempts since the last bind (algorithms.md §3) */
    uint32_t msgid;                /* last msgid used; pre-incremented (wire.md §4.2) */
    void *data;                    /* user pointer */
    rpc_conn *conns;               /* bound live connections; writes go to the first */
    unsigned nconns;
    rpc_conn *connecting;          /* connect attempt in progress */
    nbuf queued;                   /* messages made while unconnected (a discard area once lost) */
    pending_table pending;         /* outstanding calls, any connection may answer (wire.md §4.4) */
    double srtt, rttvar;           /* smoothed round trip of answered calls, seconds (0: none yet) */
    double last_response;          /* ev_now of the last response, 0 = none yet */
    unsigned timeouts;             /* calls timed out since the last response */
    double last_call;              /* ev_now of the last call made */
    msgpack_packer pk;             /* returned by rpc_call_begin / rpc_reply_begin */
    rpc_conn *pk_conn;             /* where pk currently writes (NULL: queued) */
    struct rpc_session *prev, *next; /* node->sessions (live) or node->dead */
    struct rpc_session *hnext;     /* hash chain */
    struct rpc_session *cnext;     /* node->connect_q */
    struct rpc_session *fnext;     /* node->fail_q */
};

typedef struct rpc_listener {
    net_listener nl;               /* the accept loop (net/listener.h) */
    rpc_node *node;
    struct rpc_listener *next;
} rpc_listener;

/* One timed-out call collected by the step timer before its callback runs. */
typedef struct rpc_expired {
    rpc_session *s;
    uint32_t msgid;
    rpc_callback cb;
    void *ud;
} rpc_expired;

struct rpc_node {
    struct ev_loop *loop;
    rpc_config cfg;
    ev_timer step;                 /* algorithms.md §1 step timer */
    ev_timer deadlines;            /* runs while calls with a deadline in seconds are out */
    ev_prepare prep;               /* once per loop iteration: connects, deferred errors, flush */
    ev_idle idle;                  /* keeps the loop from blocking while the prepare has work left */
    rpc_session *sessions;         /* live sessions */
    rpc_session *dead;             /* lost sessions whose node reference is released at prepare */
    rpc_session **hash;            /* (addr, cluster) -> session, chained */
    size_t hcap, hcount;
    rpc_session *connect_q;        /* sessions to (re)connect; each holds a reference */
    rpc_session *fail_q;           /* lost sessions with calls to fail; each holds a reference */
    rpc_conn *conns;               /* open connections */
    nconn_group group;             /* their output, deferred input and closes, run at prep */
    rpc_listener *listeners;
    rpc_expired *expired;          /* step timer scratch */
    size_t expired_cap;
    bool freeing;
};

/* rpc_conn.c */
void rpc_conn_connect(rpc_session *s);                 /* start one attempt (counts a retry) */
void rpc_conn_close(rpc_conn *c, bool notify);         /* notify: tell the session it lost a conn */
/* The output of c, to append to; it is written at the next prepare. */
static inline nbuf *rpc_conn_out(rpc_conn *c) { return nconn_out(&c->nc); }
static inline void rpc_conn_mark_dirty(rpc_conn *c) { nconn_mark(&c->nc); }
void rpc_conn_accepted(void *node, int fd);   /* net_accept_fn: a new peer on a listener */

/* rpc.c */
rpc_session *rpc_sess_get(rpc_node *n, const kaddr *addr, bool cluster, bool create);
rpc_session *rpc_sess_new_accepted(rpc_node *n, const kaddr *peer);
void rpc_sess_bind(rpc_session *s, rpc_conn *c);
void rpc_sess_conn_lost(rpc_session *s);
void rpc_sess_connect_failed(rpc_session *s);
void rpc_sess_learn_role(rpc_session *s, int role);
void rpc_sess_lose(rpc_session *s, int err);
void rpc_sess_response(rpc_session *s, uint32_t msgid, const msgpack_object *error,
                       const msgpack_object *result);

#endif
