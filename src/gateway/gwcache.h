/* gwcache.h - kumo-gateway's optional local read cache (-lc, memcached.md §5): a Tokyo
 * Cabinet abstract database of values as the servers returned them (clocktime ‖ meta ‖
 * payload), keyed by the stored key (-k prefix included).  A get for a cached key asks
 * the server GetIfModified(key, cached clocktime) and is answered "not modified" without
 * the value crossing the network again. */
#ifndef KUMO_GWCACHE_H
#define KUMO_GWCACHE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gwcache gwcache;

/* Open the TC abstract database name ("*" on-memory hash, "+" on-memory tree, a file
 * "cache.tch#capnum=100000", ...).  NULL on failure (errno-like reason in *err). */
gwcache *gwcache_open(const char *name, const char **err);

void gwcache_close(gwcache *c);

/* The cached value of key (malloc'd, *len bytes; >= 10), or NULL. */
void *gwcache_get(gwcache *c, const void *key, size_t klen, size_t *len);

/* Store value unless the cache holds a version at least as new. */
void gwcache_put_if_newer(gwcache *c, const void *key, size_t klen, const void *val,
                          size_t vlen);

#endif
