/* gateway_internal.h - state shared by gateway.c (hash spaces, managers, routing) and
 * gwop.c (the data operations and their retries); not for the front ends. */
#ifndef KUMO_GATEWAY_INTERNAL_H
#define KUMO_GATEWAY_INTERNAL_H

#include "gateway/gateway.h"
#include "logic/hashspace.h"
#include "rpc/rpc.h"

/* One hash space plus a cache of the plain-client session of each of its nodes, so a
 * request resolves its server session with one array access (the rpc layer keeps one
 * session per address; the cache holds a reference and is dropped when it is lost). */
typedef struct gw_space {
    hashspace hs;
    rpc_session **sess;        /* parallel to hs.nodes; NULL = not looked up yet */
    size_t nsess;
} gw_space;

typedef struct gw_manager {
    gateway *gw;
    kaddr addr;
    rpc_session *sess;         /* referenced; the session of the last HashSpaceRequest */
    bool pending;              /* a HashSpaceRequest is outstanding: never pile them up */
} gw_manager;

/* One data request (defined in gwop.c). */
typedef struct gw_op gw_op;

struct gateway {
    struct ev_loop *loop;
    rpc_node *node;
    gateway_config cfg;
    size_t prefixlen;
    gw_space whs, rhs;
    gw_manager mgr[2];
    int nmgr;
    unsigned renew_counter;    /* -rn error counter (algorithms.md §4) */
    ev_tstamp fast_renew_at;   /* last renew sent for a fast retry (rate limit) */
    uint32_t now;              /* cached unix time, refreshed every tick */
    bool closing;
    gw_op *live;               /* ops in flight */
    gw_op *pool;
    size_t npool;
};

/* ---- gateway.c */

/* The plain-client session of node idx of sp, looked up (and cached, referenced) on first
 * use or after the cached one was lost.  Borrowed: valid while sp's node list is. */
rpc_session *gw_space_session(gateway *gw, gw_space *sp, size_t idx);

/* Send a HashSpaceRequest to every manager that has none outstanding. */
void gw_renew(gateway *gw);

/* algorithms.md §4 renew threshold: count one error; every -rn+1 errors gw_renew. */
void gw_renew_check(gateway *gw);

/* Deadline in seconds for one attempt to server session s (kumofs-c): for a get an
 * adaptive one, max(4 srtt, srtt + 4 rttvar) clamped to [-At, -Ax]; for a write the rest
 * of the request's budget.  remaining: seconds left of the -Rt budget (<= 0: no budget).
 * Returns 0 when neither applies (-Rt 0: the original's step timeouts). */
double gw_attempt_timeout(const gateway *gw, rpc_session *s, bool get, double remaining);

/* Has s stopped answering: calls timed out since its last answer (rpc layer)?  Gets
 * then go to the key's other replicas first. */
bool gw_session_suspect(const rpc_session *s);

/* Should a write to coordinator session s fail at once (kumofs-c)?  Yes when s stopped
 * answering (GW_SUSPECT_TIMEOUTS calls timed out since its last answer): the write is
 * answered with an error now instead of holding its client for -Rt (a gateway cut from
 * one server while the manager still sees it, or a frozen server not yet marked fault).
 * Every GW_PROBE_INTERVAL seconds a cheap probe goes to s; its answer ends this. */
#define GW_SUSPECT_TIMEOUTS 2
#define GW_PROBE_INTERVAL 0.5
bool gw_write_blocked(gateway *gw, rpc_session *s);

/* ---- gwop.c */

/* Complete every live op with GATEWAY_FAILED and free the op pool (gateway_free, after
 * rpc_node_free, with gw->closing set). */
void gw_ops_close(gateway *gw);

#endif
