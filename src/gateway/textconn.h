/* textconn.h - the memcached text protocol front end: listener and per-connection state
 * machine (memcached.md §2 as memcached 1.6 answers, DECISIONS.md §3); replies always in
 * request order, requests pipelined to the cluster. */
#ifndef KUMO_TEXTCONN_H
#define KUMO_TEXTCONN_H

#include <ev.h>
#include <stddef.h>

#include "gateway/gateway.h"

#define TEXTCONN_ITEM_SIZE_MAX_DEFAULT (1024 * 1024)   /* memcached's -I default */

typedef struct textconn_config {
    size_t item_size_max;     /* largest value accepted by set/cas (-x) */
} textconn_config;

typedef struct textconn_listener textconn_listener;

/* Serve the text protocol on an already listening non-blocking socket (takes ownership of
 * fd), sending requests through gw (borrowed; free gw before the listener).  cfg copied. */
textconn_listener *textconn_listen(struct ev_loop *loop, int fd, gateway *gw,
                                   const textconn_config *cfg);

/* Close the listening socket and every connection; free l. */
void textconn_listener_free(textconn_listener *l);

#endif
