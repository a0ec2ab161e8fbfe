/* replace.h - the replace phases on a server (algorithms.md §8): the copy phase builds
 * zlib offer streams per destination in temp files and offers them, the delete phase
 * drops records this server no longer owns.  Whole-database iterations run on one
 * background worker thread; everything else on the event loop. */
#ifndef KUMO_REPLACE_H
#define KUMO_REPLACE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "logic/addr.h"
#include "logic/hashspace.h"
#include "server/server.h"

/* Create the replace state and start its worker thread.  Release with replace_free. */
replace *replace_new(server *srv);

/* Stop the worker (aborting any iteration) and wait for it.  Tasks it posted may still
 * run afterwards; they only clean up once the server is stopping. */
void replace_stop(replace *r);

/* Close pending offers and free (after replace_stop and the last posted task). */
void replace_free(replace *r);

/* ReplaceCopyStart from manager mgr (§8.2, §8.5).  seed's content is taken (seed is left
 * empty).  Normal replace: own whs := seed; full: whs unchanged. */
void replace_copy_start(replace *r, const kaddr *mgr, hashspace *seed, bool full);

/* ReplaceDeleteStart from manager mgr (§8.4): rhs := own whs, then delete in background. */
void replace_delete_start(replace *r, const kaddr *mgr);

bool replace_is_copying(const replace *r);
bool replace_is_deleting(const replace *r);

/* The offers of r for the replace-stream sender (stream_set_new): the pending offer for
 * a receiver, as a dup'd descriptor of its file with id and size (wire.md §10 step 4),
 * and the end of a transfer. */
struct stream_offers;
void replace_stream_offers(replace *r, struct stream_offers *out);

#endif
