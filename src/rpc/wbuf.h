/* wbuf.h - growable output byte buffer reused across messages, with a msgpack write hook. */
#ifndef KUMO_RPC_WBUF_H
#define KUMO_RPC_WBUF_H

#include <stddef.h>

/* Bytes [off, len) are waiting to be written; [0, off) were already written.  Plain data
 * owned by its container: wbuf_init / wbuf_destroy. */
typedef struct wbuf {
    char *data;
    size_t len;   /* end of the queued bytes */
    size_t off;   /* start of the not-yet-written bytes */
    size_t cap;
} wbuf;

void wbuf_init(wbuf *b);
void wbuf_destroy(wbuf *b);

/* Append n bytes (grows the buffer; aborts on OOM through xmalloc). */
void wbuf_append(wbuf *b, const void *p, size_t n);

/* msgpack_packer_write callback: data is a wbuf *.  Always returns 0. */
int wbuf_msgpack_write(void *data, const char *buf, size_t len);

/* Bytes still waiting. */
static inline size_t wbuf_pending(const wbuf *b) { return b->len - b->off; }

/* Mark n more bytes as written; when everything is written the buffer is rewound (and a
 * buffer that grew very large is shrunk back so one burst does not pin memory). */
void wbuf_consume(wbuf *b, size_t n);

/* Drop all queued bytes. */
void wbuf_clear(wbuf *b);

#endif
