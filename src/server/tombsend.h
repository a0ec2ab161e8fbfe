/* tombsend.h - deletes across original peers during a replace copy (doc/protocol-additions.md
 * §3).  A kumofs 0.4.13 server fails a whole replace stream on an 8-byte tombstone, so the
 * copy phase hands it each delete as a ReplicateDelete (TOMBSEND_DELETE); and an original
 * sender never streams its tombstones, so a restarted kumofs-c server asks an original
 * owner about each record it kept (TOMBSEND_VERIFY: Get; a miss there is a delete it
 * missed, stored here as a tombstone just newer than the record). */
#ifndef KUMO_TOMBSEND_H
#define KUMO_TOMBSEND_H

#include <stddef.h>

#include "logic/addr.h"
#include "logic/clocktime.h"
#include "server/server.h"

typedef struct tombsend tombsend;

/* An empty list.  Filled on any thread, sent on the loop.  Release with tombsend_free
 * unless handed to tombsend_start. */
enum tombsend_kind { TOMBSEND_DELETE, TOMBSEND_VERIFY };
tombsend *tombsend_new(enum tombsend_kind kind);
void tombsend_free(tombsend *t);

/* Queue an entry: DELETE: the delete of dbkey (klen bytes) at version ct, for dst.
 * VERIFY: ask dst (an rhs owner) for dbkey, whose local record has version ct. */
void tombsend_add(tombsend *t, const kaddr *dst, const void *dbkey, size_t klen, clocktime_t ct);

size_t tombsend_count(const tombsend *t);

/* Send every queued delete (a bounded window in flight; an entry that fails is sent again
 * twice, 1 s apart), then call done(srv, ud) once from the loop.  Takes ownership of t. */
void tombsend_start(server *srv, tombsend *t, void (*done)(server *srv, void *ud), void *ud);

#endif
