/* nbuf.h - the byte buffer of every connection: the RPC connections' output and queued
 * messages, the memcached front ends' input, output and out-of-order replies, and the
 * replace streams' output.
 *
 * Bytes [off, len) are queued; [0, off) were already consumed (written, or parsed).  The
 * buffer is reused for the connection's whole life; nbuf_clear rewinds it and gives back
 * a capacity that one burst made very large.  Plain data owned by its container:
 * zero-initialised or nbuf_init, released with nbuf_destroy. */
#ifndef KUMO_NET_NBUF_H
#define KUMO_NET_NBUF_H

#include <stddef.h>
#include <string.h>

typedef struct nbuf {
    char *data;
    size_t len;   /* end of the queued bytes */
    size_t off;   /* start of the bytes not yet consumed */
    size_t cap;
} nbuf;

void nbuf_init(nbuf *b);
void nbuf_destroy(nbuf *b);

/* Make room for n more bytes after len: first by moving the queued bytes to the front
 * (a slow peer keeps off > 0), then by growing.  Aborts on out-of-memory (xmalloc). */
void nbuf_grow(nbuf *b, size_t n);

/* nbuf_grow only when needed.  Inline: every reply goes through it. */
static inline void nbuf_reserve(nbuf *b, size_t n)
{
    if (b->cap - b->len < n)
        nbuf_grow(b, n);
}

/* Append n bytes (n may be 0). */
static inline void nbuf_append(nbuf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    nbuf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Bytes still queued, and where they start. */
static inline size_t nbuf_pending(const nbuf *b) { return b->len - b->off; }
static inline char *nbuf_head(const nbuf *b)
{
    return b->off ? b->data + b->off : b->data;   /* no arithmetic on NULL (empty) */
}

/* Mark n more bytes as consumed; when everything is, the buffer is rewound (nbuf_clear). */
void nbuf_consume(nbuf *b, size_t n);

/* Drop all queued bytes; a capacity over NBUF_KEEP_CAP is released. */
#define NBUF_KEEP_CAP (256 * 1024)
void nbuf_clear(nbuf *b);

/* Give back capacity beyond `to` bytes when at most `to` are queued (input buffers
 * after a large request). */
void nbuf_shrink(nbuf *b, size_t to);

/* msgpack_packer_write callback: data is an nbuf *.  Always returns 0. */
int nbuf_msgpack_write(void *data, const char *buf, size_t len);

#endif
