/* stream.h - the replace stream of wire.md §10 over libev: the sender side on the -L
 * listener (header, offer file, acknowledgements) and the receiver side that pulls an
 * offered stream, inflates it and applies store-if-newer. */
#ifndef KUMO_STREAM_H
#define KUMO_STREAM_H

#include "logic/addr.h"
#include "server/server.h"

/* Create the connection set.  Release with stream_set_free (closes every connection). */
stream_set *stream_set_new(server *srv);
void stream_set_free(stream_set *ss);

/* Accept stream connections on a listening non-blocking socket (takes ownership). */
void stream_listen(stream_set *ss, int fd);

/* A ReplaceOffer(stream_addr) arrived: connect to stream_addr and pull the stream. */
void stream_pull_start(stream_set *ss, const kaddr *stream_addr);

#endif
