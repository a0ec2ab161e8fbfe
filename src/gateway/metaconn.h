/* metaconn.h - the memcached 1.6 meta commands (mg, ms, md, ma, mn, me) on the text
 * port, as memcached's protocol.txt describes them; the flags a replicated store can
 * honour, the others refused as memcached refuses an unknown flag
 * (doc/protocol-additions.md). */
#ifndef KUMO_METACONN_H
#define KUMO_METACONN_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/frontconn.h"
#include "gateway/gateway.h"

typedef struct metaconn_env {
    gateway *gw;
    size_t item_size_max;
} metaconn_env;

/* True when buf starts a meta command line ("mg", "ms", ... followed by a space or the
 * line end); len >= 3 is needed to tell, with fewer bytes the answer is false. */
bool metaconn_is_meta(const char *buf, size_t len);

/* frontconn_proto.parse for one meta request: same contract (bytes consumed, 0 with
 * *need when more input is needed). */
size_t metaconn_parse(frontconn *c, const metaconn_env *env, const char *buf, size_t len,
                      size_t *need);

/* The slot size the meta commands need (the text protocol's slot_size is the larger). */
size_t metaconn_slot_size(void);

#endif
