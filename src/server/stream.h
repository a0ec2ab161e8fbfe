/* stream.h - the replace stream of wire.md §10 over libev: the sender side on the -L
 * listener (header, offer file, acknowledgements) and the receiver side that pulls an
 * offered stream, inflates it and applies store-if-newer. */
#ifndef KUMO_STREAM_H
#define KUMO_STREAM_H

#include "logic/addr.h"
#include "server/server.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Where the sender side finds what to send (replace.c provides it; stream.c does not
 * know the replace):
 * open: the pending offer for the receiver at dst: a descriptor of the offer file (the
 *   stream closes it), its id and size; -1 if there is none (wire.md §10 step 4);
 * finished: the transfer of offer id ended, ok = acknowledged by the receiver. */
typedef struct stream_offers {
    int (*open)(void *ud, const kaddr *dst, uint64_t *id, off_t *size);
    void (*finished)(void *ud, uint64_t id, bool ok);
    void *ud;
} stream_offers;

/* Create the connection set (offers copied).  Release with stream_set_free (closes
 * every connection). */
stream_set *stream_set_new(server *srv, const stream_offers *offers);
void stream_set_free(stream_set *ss);

/* Accept stream connections on a listening non-blocking socket (takes ownership). */
void stream_listen(stream_set *ss, int fd);

/* A ReplaceOffer(stream_addr) arrived: connect to stream_addr and pull the stream. */
void stream_pull_start(stream_set *ss, const kaddr *stream_addr);

#endif
