/* peerkind.h - which peers speak kumofs-c, learnt by a probe: an original kumofs 0.4.13
 * server answers the kumofs-c method GetVersion with error 5 "unknown method". */
#ifndef KUMO_PEERKIND_H
#define KUMO_PEERKIND_H

#include <stddef.h>

#include "logic/addr.h"
#include "logic/hashspace.h"
#include "server/server.h"

/* Called once with the active nodes of the probed hash space that answered GetVersion
 * (kumofs-c servers; self always counts as one).  modern is borrowed until the callback
 * returns.  A node that answered an error, timed out or could not be reached is left
 * out: it is treated as an original. */
typedef void (*peerkind_cb)(server *srv, void *ud, const kaddr *modern, size_t nmodern);

/* Probe every active node of hs other than self (GetVersion of an empty key on the
 * cluster session).  cb runs from the loop when every probe has answered; at once when
 * there is nobody to probe. */
void peerkind_probe(server *srv, const hashspace *hs, peerkind_cb cb, void *ud);

#endif
