/* dataop.h - the server's data requests: Get, GetIfModified, Set, Delete on the
 * coordinator and ReplicateSet / ReplicateDelete on the replicas (algorithms.md §5.2-§5.5,
 * DECISIONS.md §2-§3). */
#ifndef KUMO_DATAOP_H
#define KUMO_DATAOP_H

#include "rpc/rpc.h"
#include "server/server.h"

/* Handlers: each validates its params and answers (now, or once replication completes). */
void dataop_get(server *srv, const rpc_request *req);
void dataop_get_if_modified(server *srv, const rpc_request *req);
void dataop_set(server *srv, const rpc_request *req);
void dataop_delete(server *srv, const rpc_request *req);
void dataop_replicate_set(server *srv, const rpc_request *req);
void dataop_replicate_delete(server *srv, const rpc_request *req);
/* GetVersion (kumofs-c, doc/protocol-additions.md): the stored clocktime of a key, live
 * or tombstone, or nil when absent.  Coordinators ask it of a replica that refused a
 * replicated write as not newer (DECISIONS.md §2). */
void dataop_get_version(server *srv, const rpc_request *req);

/* ---- coordinated writes, shared with rmwop.c ---- */

/* The other replicas of a coordinated write: W = the active whs slots but self, R = the
 * active rhs slots not in W while a replace runs (algorithms.md §5.2, §8.6). */
typedef struct dataop_plan {
    kaddr w[HS_REPLICAS];
    unsigned nw;
    kaddr r[HS_REPLICAS];
    unsigned nr;
} dataop_plan;

/* Set's coordinator check for hash h and its W/R planning into *p.  Returns 0, or the
 * RPC error code to answer (RPC_SERVER_ERROR: "server not ready" or "obsolete hash
 * space"). */
int dataop_plan_write(server *srv, uint64_t h, dataop_plan *p);

/* Head of a client write: error 5 unless params_ok, else dataop_plan_write for the DBKey
 * key.  On an error answers req with it and returns false. */
bool dataop_begin_write(server *srv, const rpc_request *req, bool params_ok, const void *key,
                        dataop_plan *p);

/* The stored record of key (malloc'd, the caller frees; NULL if absent) in *len bytes;
 * *have: it carries a version (live value or tombstone), *stored (else 0). */
uint8_t *dataop_read(server *srv, const void *key, size_t klen, size_t *len, bool *have,
                     clocktime_t *stored);

/* A new version for a key, strictly newer than the stored one if have_stored
 * (DECISIONS.md §2: a coordinator never stamps at or below a version it stores). */
clocktime_t dataop_next_version(server *srv, bool have_stored, clocktime_t stored);

/* Answers a replicated write's client exactly once: ok is true when every W replica
 * acknowledged (or at once for async writes), false when a W replica finally failed.
 * val/vlen are the replicated value, borrowed for the call. */
typedef void (*dataop_answer_fn)(rpc_session *client, uint32_t msgid, bool ok,
                                 clocktime_t ct, const void *val, size_t vlen);

/* Replicate an already stored value (version ct) to p's targets with ReplicateSet, with
 * Set's retry rules, and answer req through answer (at once when p has no targets or
 * async is set).  key/val are copied. */
void dataop_replicate_value(server *srv, const rpc_request *req, clocktime_t ct,
                            const dataop_plan *p, const void *key, size_t klen,
                            const void *val, size_t vlen, bool async, dataop_answer_fn answer);

/* A server's replication state: the pools of replication trackers and the cache of the
 * versions it stamped.  Released at shutdown, after the RPC node is gone. */
dataop_state *dataop_state_new(void);
void dataop_state_free(dataop_state *d);

/* Answer a write that the local store could not make (store_error() != 0, e.g. a full
 * disk) with a string error; a kumofs-c gateway gives up on it at once instead of
 * retrying (protocol-additions.md). */
void dataop_reply_store_failed(rpc_session *s, uint32_t msgid);

#endif
