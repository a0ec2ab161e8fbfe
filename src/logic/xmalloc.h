/* xmalloc.h - the one allocation wrapper: out of memory aborts with a message. */
#ifndef KUMO_XMALLOC_H
#define KUMO_XMALLOC_H

#include <stddef.h>

/* Like malloc/calloc/realloc/strdup, but never return NULL: on failure they print
 * "out of memory" to stderr and abort().  Release the result with free(). */
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
void *xmemdup(const void *p, size_t size);

#endif
