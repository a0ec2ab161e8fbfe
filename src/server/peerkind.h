/* peerkind.h - which peers speak kumofs-c, learnt by a probe: GetStatus of the code
 * STATUS_EXTENSIONS, which a kumofs-c server answers with its extension bits and an
 * original kumofs 0.4.13 server with nil. */
#ifndef KUMO_PEERKIND_H
#define KUMO_PEERKIND_H

#include <stddef.h>

#include "logic/addr.h"
#include "logic/hashspace.h"
#include "server/server.h"

/* Called once with the active nodes of the probed hash space that answered with
 * STATUS_EXT_V1 (kumofs-c servers; self always counts as one).  modern is borrowed until the callback
 * returns.  A node that answered an error, timed out or could not be reached is left
 * out: it is treated as an original. */
typedef void (*peerkind_cb)(server *srv, void *ud, const kaddr *modern, size_t nmodern);

/* Probe every active node of hs other than self (on a plain session).  cb runs from the
 * loop when every probe has answered; at once when
 * there is nobody to probe. */
void peerkind_probe(server *srv, const hashspace *hs, peerkind_cb cb, void *ud);

#endif
