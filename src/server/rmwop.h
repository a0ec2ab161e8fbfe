/* rmwop.h - memcached read-modify-write (Update) and flush_all (Flush) on kumo-server,
 * kumofs-c additions listed in doc/protocol-additions.md (DECISIONS.md §3). */
#ifndef KUMO_RMWOP_H
#define KUMO_RMWOP_H

#include <stdint.h>

#include "rpc/rpc.h"
#include "server/server.h"

/* Update [op, flags, dbkey, dbval, arg] on the key's coordinator: reads the stored item,
 * applies add/replace/append/prepend/cas/incr/decr/touch, stores the result with a new
 * version and replicates it like Set.  Answers [status, clocktime, value|nil], or error
 * 5 (bad params) / 6 (not the coordinator, not ready, W replication failed). */
void rmwop_update(server *srv, const rpc_request *req);

/* True if the stored record v is a live memcached item: not a tombstone, not expired
 * (meta 1 and 2 carry an exptime; doc/storage-format.md). */
bool rmwop_item_live(const void *v, size_t vlen);

/* Flush [delay]: at now + delay seconds, every live record not newer than the flush
 * moment reads as a miss at once and becomes a tombstone (store_flush_begin); the walk
 * that rewrites the file runs in short paced steps on the event loop.  Answers true once scheduled
 * (delay > 0) or in effect (delay 0). */
void rmwop_flush(server *srv, const rpc_request *req);

/* Number of flushes executed by this process (stats). */
uint64_t rmwop_flush_count(void);

/* At shutdown: cancel srv's delayed flushes that have not run yet and finish the walk
 * of a running one. */
void rmwop_stop(server *srv);

#endif
