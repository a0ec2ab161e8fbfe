/* rpc.h - the msgpack-RPC core over libev (wire.md §2-§6): streaming framing, request /
 * response / handshake envelopes, sessions per peer address that may own several TCP
 * connections, caller-side step timeouts, connect retry, node-lost delivery.
 *
 * Threading: one rpc_node belongs to one libev loop; every function here must be called
 * from that loop's thread.  Callbacks run on it. */
#ifndef KUMO_RPC_H
#define KUMO_RPC_H

#include <ev.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "logic/addr.h"

/* Error codes as delivered to callbacks (wire.md §5).  1-3 are produced locally. */
enum rpc_error {
    RPC_OK = 0,                /* error field nil */
    RPC_TRANSPORT_LOST = 1,    /* session destroyed while pending */
    RPC_NODE_LOST = 2,         /* connection lost / connect failed */
    RPC_TIMEOUT = 3,           /* no response within the step budget */
    RPC_UNKNOWN_ERROR = 4,
    RPC_PROTOCOL_ERROR = 5,    /* unknown method, bad params */
    RPC_SERVER_ERROR = 6,      /* "obsolete hash space", "server not ready", ... */
    RPC_OTHER_ERROR = 7        /* error field not a small integer (true, "empty suffix"): see rpc_result.error */
};

enum rpc_role { RPC_ROLE_NONE = -1, RPC_ROLE_MANAGER = 0, RPC_ROLE_SERVER = 1 };

#define RPC_DEFAULT_TIMEOUT_STEPS 10   /* wire.md §4.5 */

typedef struct rpc_node rpc_node;
typedef struct rpc_session rpc_session;

typedef struct rpc_result {
    int err;                         /* enum rpc_error */
    const msgpack_object *error;     /* error field as received (a nil object for local errors) */
    const msgpack_object *result;    /* result field (a nil object when err != 0 locally) */
} rpc_result;

/* Called exactly once per call: with the response, or with a local error (1-3).  The
 * objects are borrowed until the callback returns.  s may already be lost. */
typedef void (*rpc_callback)(rpc_session *s, const rpc_result *r, void *ud);

typedef struct rpc_request {
    rpc_session *session;            /* borrowed; rpc_session_ref() to answer later */
    uint32_t msgid;
    uint32_t method;                 /* (version << 16) | number; version is 0 */
    const msgpack_object *params;    /* an array; borrowed until the handler returns */
    bool cluster;                    /* arrived on a handshaken (cluster) connection */
} rpc_request;

/* Handles one incoming request.  It must eventually answer with rpc_reply_* (now, or
 * later after rpc_session_ref) or deliberately not answer (wire.md lists such methods). */
typedef void (*rpc_dispatch_fn)(const rpc_request *req, void *ud);

typedef struct rpc_config {
    kaddr self;                      /* own -l address, sent in the handshake; len 0 = plain client only */
    int role;                        /* RPC_ROLE_MANAGER / RPC_ROLE_SERVER / RPC_ROLE_NONE */
    double connect_timeout;          /* -Ys seconds (default 10) */
    unsigned connect_retry_limit;    /* -Yn (default 4): give up when attempts exceed it */
    double clock_interval;           /* -Ci seconds: one step every (floor(Ci/0.5)+1) * 0.5 s */
    rpc_dispatch_fn dispatch;        /* incoming requests (may be NULL: answered PROTOCOL_ERROR) */
    void (*new_node)(rpc_session *s, int role, void *ud);   /* first handshake seen on a cluster session */
    void (*lost_node)(rpc_session *s, int role, void *ud);  /* cluster session given up (after retries) */
    void *ud;                        /* passed to the three callbacks */
} rpc_config;

/* Create an endpoint on loop.  cfg is copied.  Release with rpc_node_free. */
rpc_node *rpc_node_new(struct ev_loop *loop, const rpc_config *cfg);

/* Close every connection; pending callbacks get RPC_TRANSPORT_LOST; free the node. */
void rpc_node_free(rpc_node *node);

/* Accept connections on an already listening non-blocking socket (daemon_listen_tcp);
 * the node takes ownership of fd.  Accepted peers that start with a handshake become
 * cluster connections of the session for their address, others plain-client sessions. */
void rpc_node_listen_fd(rpc_node *node, int fd);

struct ev_loop *rpc_node_loop(rpc_node *node);

/* The session for a peer address; created (not yet connected) on first use.  cluster:
 * connections we open send the handshake, and connections the peer opens to us with a
 * handshake join the same session.  Calls queued on an unconnected session trigger the
 * connect and are sent once connected.  The pointer is owned by the node and stays valid
 * until the session is lost and the current callback returns; rpc_session_ref() to keep
 * it longer.  A lost session is removed: the next call here makes a fresh one. */
rpc_session *rpc_node_session(rpc_node *node, const kaddr *peer, bool cluster);

/* The existing cluster session for addr, or NULL. */
rpc_session *rpc_node_find_session(rpc_node *node, const kaddr *peer);

/* Iterate sessions: cluster sessions with at least one live connection, or accepted
 * plain-client sessions (e.g. gateways and tools connected to a manager).  The callback
 * may send on the session but must not free the node. */
typedef void (*rpc_session_fn)(rpc_session *s, void *ud);
void rpc_node_foreach_cluster(rpc_node *node, rpc_session_fn fn, void *ud);
void rpc_node_foreach_client(rpc_node *node, rpc_session_fn fn, void *ud);

/* Session accessors. */
const kaddr *rpc_session_addr(const rpc_session *s);   /* cluster address, or the TCP peer of a plain client */
int rpc_session_role(const rpc_session *s);            /* learned from the handshake, else RPC_ROLE_NONE */
bool rpc_session_is_connected(const rpc_session *s);   /* has at least one live connection */
bool rpc_session_is_lost(const rpc_session *s);        /* given up; no further calls will be sent */
void rpc_session_ref(rpc_session *s);
void rpc_session_unref(rpc_session *s);
void *rpc_session_data(const rpc_session *s);           /* one user pointer, NULL initially */
void rpc_session_set_data(rpc_session *s, void *data);

/* Close all connections of the session now and declare it lost (pending calls get
 * RPC_NODE_LOST, lost_node fires for a cluster peer with a known role). */
void rpc_session_shutdown(rpc_session *s);

/* As rpc_session_shutdown, but abortive (kumofs-c): requests still queued or in a
 * connection's send buffer are dropped, never delivered late once the network heals
 * (TCP RST instead of FIN).  For a caller about to send them another way. */
void rpc_session_abort(rpc_session *s);

/* Make a call: returns a packer positioned where the params go; pack exactly one object
 * (the params array), then call rpc_call_end.  cb may be NULL (the response is dropped).
 * timeout_steps: usually RPC_DEFAULT_TIMEOUT_STEPS.  Never fails: on a lost session the
 * callback later receives RPC_NODE_LOST. */
msgpack_packer *rpc_call_begin(rpc_session *s, uint32_t method, unsigned timeout_steps,
                               rpc_callback cb, void *ud);
void rpc_call_end(rpc_session *s);

/* The same with a deadline in seconds (kumofs-c): the call completes with RPC_TIMEOUT
 * once `seconds` have passed without an answer (checked every RPC_DEADLINE_RESOLUTION
 * seconds), whatever the step timer says.  seconds <= 0: the step budget only, as
 * rpc_call_begin(s, method, RPC_DEFAULT_TIMEOUT_STEPS, ...). */
#define RPC_DEADLINE_RESOLUTION 0.02
msgpack_packer *rpc_call_begin_timed(rpc_session *s, uint32_t method, double seconds,
                                     rpc_callback cb, void *ud);

/* Round-trip estimate over the session's answered calls (RFC 6298 smoothing): srtt and
 * its mean deviation in seconds.  False (both 0) before the first answer. */
bool rpc_session_rtt(const rpc_session *s, double *srtt, double *rttvar);

/* Calls of this session that timed out since its last response (any answer, even an
 * error, resets it): a peer that stopped answering shows a growing count. */
unsigned rpc_session_timeouts(const rpc_session *s);

/* ev_now when the last call on this session was made, 0 = none yet. */
double rpc_session_last_call(const rpc_session *s);

/* Answer a request: rpc_reply_begin writes [1, msgid, and returns a packer; pack the error
 * field then the result, then rpc_reply_end.  Answers to a lost session are dropped. */
msgpack_packer *rpc_reply_begin(rpc_session *s, uint32_t msgid);
void rpc_reply_end(rpc_session *s);

/* Shorthands. */
void rpc_reply_error(rpc_session *s, uint32_t msgid, int code);   /* [1, id, code, nil] */
void rpc_reply_nil(rpc_session *s, uint32_t msgid);               /* [1, id, nil, nil] */
void rpc_reply_bool(rpc_session *s, uint32_t msgid, bool v);      /* [1, id, nil, v] */
void rpc_reply_u64(rpc_session *s, uint32_t msgid, uint64_t v);   /* [1, id, nil, v] */

#endif
