/* relay.h - Forward (kumofs-c, method 51): pass a gateway's write on to the key's
 * coordinator when the gateway cannot reach it itself (doc/protocol-additions.md §1.6). */
#ifndef KUMO_RELAY_H
#define KUMO_RELAY_H

#include "rpc/rpc.h"
#include "server/server.h"

/* Forward [target:address, method:u32, params:array, timeout_ms:u32] from a plain client:
 * send method(params) unchanged to target on a plain session of this server and answer
 * the client with target's reply (error and result as received, or the local error 1-3
 * of the relayed call).  The relay never runs the write itself, so the coordinator's
 * single-writer rules hold.  Refused with error 5: on a cluster connection, a method
 * other than Set (35), Delete (36) or Update (48) -- a Forward inside a Forward among
 * them: one hop only --, params that are not a flat array, a bad address.  Refused with
 * error 6: a target that is in neither of this server's hash spaces (the relay is no open
 * proxy).  timeout_ms (0 or absent: RELAY_TIMEOUT_DEFAULT) bounds the relayed call. */
void relay_forward(server *srv, const rpc_request *req);

#define RELAY_TIMEOUT_DEFAULT 2.0     /* seconds */
#define RELAY_TIMEOUT_MAX 30.0

#endif
