/* handlers.h - kumo-manager's incoming requests: validation and the methods of wire.md §8.1. */
#ifndef KUMO_MANAGER_HANDLERS_H
#define KUMO_MANAGER_HANDLERS_H

#include "rpc/rpc.h"

/* The rpc dispatch function of the manager (ud = the manager).  Answers every request:
 * PROTOCOL_ERROR (5) for unknown methods, malformed params or a method on the wrong kind
 * of connection; SERVER_ERROR (6) for partner-only methods from anyone else; no answer
 * only for the ReplaceElection "double replace guard" (algorithms.md §9.3). */
void handlers_dispatch(const rpc_request *req, void *ud);

#endif
