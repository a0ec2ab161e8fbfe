/* nbuf.c - the byte buffer of every connection (see nbuf.h). */
#include "net/nbuf.h"

#include <stdlib.h>

#include "logic/xmalloc.h"

#define NBUF_MIN_CAP 256

void nbuf_init(nbuf *b)
{
    b->data = NULL;
    b->len = b->off = b->cap = 0;
}

void nbuf_destroy(nbuf *b)
{
    free(b->data);
    nbuf_init(b);
}

void nbuf_grow(nbuf *b, size_t n)
{
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= n)
            return;
    }
    size_t cap = b->cap ? b->cap : NBUF_MIN_CAP;
    while (cap - b->len < n)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void nbuf_consume(nbuf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        nbuf_clear(b);
}

void nbuf_clear(nbuf *b)
{
    b->len = b->off = 0;
    if (b->cap > NBUF_KEEP_CAP)
        nbuf_destroy(b);
}

void nbuf_shrink(nbuf *b, size_t to)
{
    if (b->cap > to && nbuf_pending(b) <= to) {
        if (b->off > 0) {
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        b->data = xrealloc(b->data, to);
        b->cap = to;
    }
}

int nbuf_msgpack_write(void *data, const char *buf, size_t len)
{
    nbuf_append((nbuf *)data, buf, len);
    return 0;
}
