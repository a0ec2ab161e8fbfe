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

/* What a server speaks, learnt before the first Update to it (gwrmw.c): an original
 * kumofs 0.4.13 answers Update with "unknown method" and then drops the connection,
 * failing everything else in flight on it, so it is asked with GetStatus first. */
#define GW_PEERS_MAX 256            /* the largest clusters tested have 100 servers */
enum gw_peer_kind { GW_PEER_UNKNOWN = 0, GW_PEER_ORIGINAL, GW_PEER_MODERN };
typedef struct gw_peer {
    kaddr addr;
    int kind;                  /* enum gw_peer_kind */
    uint32_t ext;              /* its STATUS_EXT_* bits (modern only) */
    bool unreachable;          /* writes to it go through a relay until a probe answers
                                * (gw_write_unreachable) */
    ev_tstamp until;           /* the answer is fresh until then; later asked again */
    bool probing;              /* a background GetStatus is out */
} gw_peer;

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
    gw_peer peers[GW_PEERS_MAX];
    unsigned nunreachable;     /* peers marked unreachable: 0 spares the lookups */
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

/* Has s stopped answering: calls timed out since its last answer (rpc layer), or its
 * server is marked unreachable (gw_write_unreachable; a new session has no timeouts
 * yet)?  Gets then go to the key's other replicas first. */
bool gw_session_suspect(gateway *gw, rpc_session *s);

/* Should a write to coordinator session s fail at once (kumofs-c)?  Yes when s stopped
 * answering (GW_SUSPECT_TIMEOUTS calls timed out since its last answer): the write is
 * answered with an error now instead of holding its client for -Rt (a gateway cut from
 * one server while the manager still sees it, or a frozen server not yet marked fault).
 * Every GW_PROBE_INTERVAL seconds a cheap probe goes to s; its answer ends this. */
#define GW_SUSPECT_TIMEOUTS 2
#define GW_PROBE_INTERVAL 0.5
bool gw_write_blocked(gateway *gw, rpc_session *s);

/* A direct write to coordinator session s got no answer (timeout, lost connection): drop
 * s abortively, so that nothing sent or queued on it can reach the server later (once a
 * cut heals) and overwrite what was written meanwhile through a relay, and count s's
 * server as unreachable (gw_write_blocked) until a probe answers. */
void gw_write_unreachable(gateway *gw, rpc_session *s);

/* ---- gwop.c */

/* How this gateway lays out raw (meta 0) payloads: its -E/-F as ITEM_RAW_* bits. */
unsigned gw_item_layout(const gateway *gw);

/* A Set of the stored value form meta ‖ payload (already encoded, see logic/item.h) with
 * Update's retry rules: retried only while it cannot have been applied (no server, lost
 * connection, error 6), so a compare-and-swap step is never applied twice.  setop is
 * SET_OP_CAS (compare = the version read) or SET_OP_SET.  cb as gateway_set's. */
void gw_set_once(gateway *gw, const char *key, size_t keylen, unsigned setop,
                 uint64_t compare, uint16_t meta, const uint8_t *payload, size_t len,
                 gateway_store_cb cb, void *ud);

/* ---- gwrmw.c */
/* Run a read-modify-write whose coordinator does not know Update (an original kumofs
 * 0.4.13 server answered error 5) as a loop of Get and compare-and-swap Sets.  uflags:
 * the Update flags VALUE / CREATE / TTL; req is the request's item (copied); cb and ud as
 * gateway_update's. */
struct item;
void gw_rmw_fallback(gateway *gw, unsigned op, unsigned uflags, const char *key,
                     size_t keylen, const struct item *req, uint64_t arg,
                     gateway_update_cb cb, void *ud);

/* Remember what addr speaks (for a while), and ask (GW_PEER_UNKNOWN when never learnt).
 * gw_peer_kind answers a stale kind too, and asks s's server again in the background;
 * gw_peer_refresh only asks, when the kind is unknown or stale.  Asking early, when a
 * session is first used, keeps an Update from waiting for the probe while a request
 * pipelined behind it (a get of the same key) overtakes it. */
void gw_peer_set(gateway *gw, const kaddr *addr, int kind);
int gw_peer_kind(gateway *gw, rpc_session *s);
void gw_peer_refresh(gateway *gw, rpc_session *s);

/* Does s's server relay writes (Forward, STATUS_EXT_FORWARD)?  Only a server that said
 * so is ever sent a Forward: an original drops the connection on an unknown method.  An
 * unknown or stale answer is asked again in the background. */
bool gw_peer_relays(gateway *gw, rpc_session *s);

/* The unreachable mark of addr (gw_write_unreachable); set, or ask. */
void gw_peer_set_unreachable(gateway *gw, const kaddr *addr, bool on);
bool gw_peer_unreachable(gateway *gw, const kaddr *addr);

/* Ask s's server what it speaks (GetStatus of STATUS_EXTENSIONS), record the answer,
 * then call cb(ud) from the loop. */
void gw_peer_probe(gateway *gw, rpc_session *s, void (*cb)(void *ud), void *ud);

/* Complete every live op with GATEWAY_FAILED and free the op pool (gateway_free, after
 * rpc_node_free, with gw->closing set). */
void gw_ops_close(gateway *gw);

#endif
