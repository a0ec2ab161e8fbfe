/* tombsend.h - deletes for original peers during a replace copy.  A kumofs 0.4.13 server
 * fails a whole replace stream on an 8-byte tombstone, so the copy phase hands it each
 * delete as a ReplicateDelete instead (doc/protocol-additions.md §3). */
#ifndef KUMO_TOMBSEND_H
#define KUMO_TOMBSEND_H

#include <stddef.h>

#include "logic/addr.h"
#include "logic/clocktime.h"
#include "server/server.h"

typedef struct tombsend tombsend;

/* An empty list.  Filled on any thread, sent on the loop.  Release with tombsend_free
 * unless handed to tombsend_start. */
tombsend *tombsend_new(void);
void tombsend_free(tombsend *t);

/* Queue the delete of dbkey (klen bytes) at version ct for dst. */
void tombsend_add(tombsend *t, const kaddr *dst, const void *dbkey, size_t klen, clocktime_t ct);

size_t tombsend_count(const tombsend *t);

/* Send every queued delete (a bounded window in flight; an entry that fails is sent again
 * twice, 1 s apart), then call done(srv, ud) once from the loop.  Takes ownership of t. */
void tombsend_start(server *srv, tombsend *t, void (*done)(server *srv, void *ud), void *ud);

#endif
