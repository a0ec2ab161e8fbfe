/* textconn.h - the memcached text protocol front end (memcached.md §2 as memcached 1.6
 * answers, DECISIONS.md §3): parsing, dispatch and replies over the shared connection
 * machinery of frontconn.h; replies always in request order, requests pipelined. */
#ifndef KUMO_TEXTCONN_H
#define KUMO_TEXTCONN_H

#include <ev.h>
#include <stddef.h>

#include "gateway/gateway.h"
#include "gateway/gwstats.h"

#define TEXTCONN_ITEM_SIZE_MAX_DEFAULT (1024 * 1024)   /* memcached's -I default */

typedef struct textconn_config {
    size_t item_size_max;     /* largest value accepted by set/cas (-x) */
} textconn_config;

typedef struct textconn_listener textconn_listener;

/* Serve the text protocol on an already listening non-blocking socket (takes ownership of
 * fd), sending requests through gw (borrowed; free gw before the listener) and counting
 * into stats (borrowed; shared with the binary front end).  cfg copied. */
textconn_listener *textconn_listen(struct ev_loop *loop, int fd, gateway *gw, gwstats *stats,
                                   const textconn_config *cfg);

/* Close the listening socket and every connection; free l (NULL allowed). */
void textconn_listener_free(textconn_listener *l);

#endif
