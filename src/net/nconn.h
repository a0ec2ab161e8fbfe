/* nconn.h - the one connection engine of every daemon: a non-blocking socket with its
 * libev watchers, an input buffer handed to the protocol's parser with "need more", an
 * output buffer written once per loop turn, a per-event work budget, back-pressure and
 * deferred close.  The msgpack-RPC connections, the memcached front ends (text, binary,
 * meta) and the replace streams are protocols plugged into it through nconn_ops.
 *
 * Ownership: the protocol embeds an nconn in its own connection struct (libev style: the
 * caller owns the memory) and finds itself again with NCONN_CONTAINER_OF.  The struct's
 * fields are private to nconn.c; they are visible only so it can be embedded.
 *
 * Loop turns: every nconn belongs to an nconn_group (one per listener or per RPC node).
 * The group's run (an ev_prepare, or the owner's own prepare calling nconn_group_run)
 * writes the output of every connection that queued some, resumes parsing that was
 * deferred, and finishes the closes requested since the last run.
 *
 * Closing: nconn_close only requests it; the socket is closed and ops->closed is called,
 * exactly once, when the connection's running event handler has returned from the
 * protocol's callbacks (a close inside parse: right after parse returns), or else at the
 * next group run; never inside a callback of the same connection.  So a parser may close
 * its connection and keep using it until it returns.  After
 * ops->closed returns, nconn does not touch the connection again (the owner may free it
 * there). */
#ifndef KUMO_NET_NCONN_H
#define KUMO_NET_NCONN_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/nbuf.h"

#define NCONN_CONTAINER_OF(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

#define NCONN_BUDGET (256 * 1024)        /* input bytes parsed per read event, by default */
#define NCONN_READ_ROUNDS 4              /* read() calls per readable event */
#define NCONN_READ_MIN 4096              /* free input space before each read, by default */
#define NCONN_OUT_HIGH (8 * 1024 * 1024) /* unsent output that stops reading, by default */
#define NCONN_BUF_SHRINK (1024 * 1024)   /* idle buffers above this shrink to in_keep */
#define NCONN_WRITE_ROUNDS 16            /* ops->drained refills per flush */

typedef struct nconn nconn;
typedef struct nconn_group nconn_group;

/* Why a connection ended (ops->closed). */
enum nconn_end {
    NCONN_END_LOCAL,   /* nconn_close */
    NCONN_END_EOF,     /* the peer closed and the protocol has no eof handler */
    NCONN_END_ERROR,   /* read, write or connect failed: nconn_errno says why */
};

typedef struct nconn_ops {
    /* Parse from buf[0..len) (len > 0; borrowed until return; the bytes stay in place
     * while the callback runs, so decoded objects may point into them).  Returns the bytes
     * consumed, and is called again for the rest.  0 means "stop for now": more input is
     * needed (set *need to the total bytes wanted from buf when known; it starts at 0) or
     * the callback paused or closed the connection.  Required unless the connection never
     * reads. */
    size_t (*parse)(nconn *c, const char *buf, size_t len, size_t *need);
    /* Optional: the peer closed its side (read returned 0), after every input byte was
     * offered to parse.  Reading stops; the connection stays open for output until the
     * protocol closes it.  NULL: close with NCONN_END_EOF. */
    void (*eof)(nconn *c);
    /* Optional: a run of the connection found its output empty (all written).  It may
     * queue more (a file being sent), which is written at once, up to
     * NCONN_WRITE_ROUNDS refills per run; or close the connection. */
    void (*drained)(nconn *c);
    /* Optional: nconn_connect finished: err 0 connected (reading has started), else the
     * connect error (the connection stays open until the owner closes it). */
    void (*connected)(nconn *c, int err);
    /* Required: the connection is closed (socket closed, watchers stopped, buffers
     * freed).  Called exactly once per connection, never while one of its callbacks
     * runs. */
    void (*closed)(nconn *c, enum nconn_end why);
} nconn_ops;

struct nconn_group {
    struct ev_loop *loop;
    ev_prepare prep;              /* own_prepare: runs the group once per loop turn */
    ev_idle idle;                 /* keeps the loop from blocking while work is queued */
    bool own_prepare;
    nconn *queue;                 /* connections with output, deferred input or a close */
    uint64_t *bytes_in, *bytes_out; /* optional counters the owner points at (statistics) */
};

struct nconn {
    nconn_group *g;
    const nconn_ops *ops;
    int fd;
    ev_io rio, wio;
    nbuf in;                      /* unparsed input: [in.off, in.len) */
    nbuf out;                     /* output not written yet */
    size_t need;                  /* what the parser asked for (0: unknown) */
    size_t budget;                /* input bytes parsed per event (NCONN_BUDGET) */
    size_t read_min;              /* free input space before each read (NCONN_READ_MIN) */
    size_t in_keep;               /* input capacity kept when idle */
    size_t out_high;              /* back-pressure limit (NCONN_OUT_HIGH; 0: none) */
    int err;                      /* errno of the failure, NCONN_END_ERROR */
    enum nconn_end why;
    bool queued;                  /* on g->queue */
    bool reading;                 /* wants input (nconn_start, not paused, no EOF) */
    bool paused;                  /* nconn_pause: no reading nor parsing */
    bool full;                    /* back-pressure: output over out_high */
    bool backlog;                 /* unparsed input waits for the next run (budget) */
    bool eof;                     /* the peer closed its side */
    bool stopped;                 /* nconn_stop_reading: input is dropped */
    bool connecting;              /* nconn_connect in progress */
    bool closing;                 /* nconn_close requested */
    bool in_parse;                /* parse loop running (no re-entry) */
    nconn *qnext, **qprev;        /* g->queue (doubly linked: a close unlinks at once) */
    void *ud;                     /* the owner's, untouched */
};

/* Set up a group on loop.  own_prepare: the group runs itself once per loop turn (an
 * ev_prepare); otherwise the owner calls nconn_group_run from its own prepare, at the
 * point where the turn's output is complete. */
void nconn_group_init(nconn_group *g, struct ev_loop *loop, bool own_prepare);

/* Write queued output, resume deferred parsing, finish requested closes. */
void nconn_group_run(nconn_group *g);

/* Work is queued for the next run (an owner running the group from its own prepare
 * keeps its loop from blocking while this holds). */
static inline bool nconn_group_busy(const nconn_group *g) { return g->queue != NULL; }

/* Finish the closes still requested (their ops->closed run) and stop the group's
 * watchers.  Every connection must have been closed (nconn_close) first. */
void nconn_group_destroy(nconn_group *g);

/* Take over the non-blocking socket fd with ops (borrowed for the connection's life).
 * Nothing is read until nconn_start or nconn_connect.  The tuning fields (budget,
 * read_min, in_keep, out_high) may be changed after this call. */
void nconn_init(nconn *c, nconn_group *g, int fd, const nconn_ops *ops);

/* Start reading. */
void nconn_start(nconn *c);

/* fd has a non-blocking connect in progress: wait for it, then ops->connected. */
void nconn_connect(nconn *c);

/* The output buffer, to append to; the connection is queued for the next group run.
 * Borrowed until the next nconn call. */
nbuf *nconn_out(nconn *c);

/* Queue the connection for the next group run (output appended earlier through a kept
 * pointer, or a state change the protocol's drained callback must see). */
void nconn_mark(nconn *c);

/* Stop reading and parsing until nconn_resume (input already read stays buffered). */
void nconn_pause(nconn *c);
void nconn_resume(nconn *c);

/* Stop reading for good and drop the unparsed input (the protocol saw all it wants). */
void nconn_stop_reading(nconn *c);

/* Request the close (see above).  Idempotent.  Output not written yet is dropped. */
void nconn_close(nconn *c);

static inline bool nconn_closing(const nconn *c) { return c->closing; }
static inline int nconn_fd(const nconn *c) { return c->fd; }
static inline int nconn_errno(const nconn *c) { return c->err; }
static inline size_t nconn_out_pending(const nconn *c) { return nbuf_pending(&c->out); }
/* Input read but not parsed yet. */
static inline size_t nconn_in_pending(const nconn *c) { return nbuf_pending(&c->in); }

#endif
