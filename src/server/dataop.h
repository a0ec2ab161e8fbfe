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

/* Release the pool of replication trackers (at shutdown, after the RPC node is gone). */
void dataop_pool_free(void);

#endif
