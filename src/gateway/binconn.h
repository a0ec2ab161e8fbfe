/* binconn.h - the memcached binary protocol front end (-b), answering as memcached 1.6
 * does (DECISIONS.md §3, memcached.md §3): framing, dispatch and replies over the shared
 * connection machinery of frontconn.h; replies always in request order. */
#ifndef KUMO_BINCONN_H
#define KUMO_BINCONN_H

#include <ev.h>
#include <stddef.h>

#include "gateway/gateway.h"
#include "gateway/gwstats.h"

typedef struct binconn_config {
    size_t item_size_max;     /* largest value accepted by the storage opcodes (-x) */
    bool cloudy;              /* -c: kumofs's "cloudy" subset (memcached.md §4): get/getq/
                               * getk/getkq, set and delete only, raw values, replies as
                               * operations complete, anything else closes */
} binconn_config;

typedef struct binconn_listener binconn_listener;

/* Serve the binary protocol on an already listening non-blocking socket (takes ownership
 * of fd), sending requests through gw (borrowed; free gw before the listener) and counting
 * into stats (borrowed; shared with the text front end).  cfg copied.  Release with
 * binconn_listener_free. */
binconn_listener *binconn_listen(struct ev_loop *loop, int fd, gateway *gw, gwstats *stats,
                                 const binconn_config *cfg);

/* Close the listening socket and every connection; free l.  NULL is allowed. */
void binconn_listener_free(binconn_listener *l);

#endif
