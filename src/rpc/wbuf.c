/* wbuf.c - growable output byte buffer reused across messages, with a msgpack write hook. */
#include "config.h"
#include "rpc/wbuf.h"

#include <stdlib.h>
#include <string.h>

#include "logic/xmalloc.h"

#define WBUF_MIN_CAP 4096
#define WBUF_KEEP_CAP (256 * 1024)   /* capacity kept after a drain; larger is released */

void wbuf_init(wbuf *b)
{
    b->data = NULL;
    b->len = b->off = b->cap = 0;
}

void wbuf_destroy(wbuf *b)
{
    free(b->data);
    wbuf_init(b);
}

void wbuf_append(wbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        /* Reclaim the written prefix before growing: a slow peer keeps off > 0. */
        if (b->off > 0) {
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap : WBUF_MIN_CAP;
            while (cap < b->len + n)
                cap *= 2;
            b->data = xrealloc(b->data, cap);
            b->cap = cap;
        }
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

int wbuf_msgpack_write(void *data, const char *buf, size_t len)
{
    wbuf_append((wbuf *)data, buf, len);
    return 0;
}

void wbuf_consume(wbuf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        wbuf_clear(b);
}

void wbuf_clear(wbuf *b)
{
    b->len = b->off = 0;
    if (b->cap > WBUF_KEEP_CAP) {
        free(b->data);
        wbuf_init(b);
    }
}
