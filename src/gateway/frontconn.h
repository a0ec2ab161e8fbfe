/* frontconn.h - what the memcached front ends (text, binary, meta) share on top of the
 * connection engine (net/nconn.h, which reads, writes once per loop turn, budgets,
 * applies back-pressure and closes): the listener, the reply FIFO completed in request
 * order, the input states (swallow, skip line, drain) and teardown with requests still in
 * flight.  A protocol plugs in through frontconn_proto and keeps only its parsing,
 * dispatch and reply formatting. */
#ifndef KUMO_FRONTCONN_H
#define KUMO_FRONTCONN_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "gateway/gwstats.h"
#include "net/nbuf.h"

/* Connection input states; frontconn_set_state is the one place that changes them. */
enum frontconn_state {
    FRONTCONN_READ,      /* parsing requests */
    FRONTCONN_SWALLOW,   /* discarding the announced body of an oversize request */
    FRONTCONN_SKIPLINE,  /* discarding the rest of an over-long line, through its "\n" */
    FRONTCONN_DRAIN,     /* quit, EOF or garbage: no more input; close once replies are out */
};

typedef struct frontconn frontconn;
typedef struct frontconn_listener frontconn_listener;

/* One reply position in a connection's FIFO.  A protocol embeds it as the FIRST member of
 * its own slot struct (frontconn_proto.slot_size) and casts.  A pending slot is the ud of
 * a gateway request, so it outlives its connection until that request completes. */
typedef struct frontconn_slot {
    struct frontconn_slot *next;
    frontconn *conn;
    bool done;
    bool unordered;            /* frontconn_slot_new_unordered: not in the FIFO */
    nbuf reply;                /* the reply, when completed before its turn */
} frontconn_slot;

typedef struct frontconn_proto {
    const char *name;          /* for log lines: "text", "binary" */
    size_t slot_size;          /* sizeof the protocol's slot, >= sizeof(frontconn_slot) */
    /* Parse and run ONE request from buf[0..len) (len > 0, state READ; buf borrowed until
     * return).  Returns the bytes consumed.  0 means "stop for now": either more input is
     * needed (*need = the total bytes wanted from buf, 0 if unknown) or the handler moved
     * the connection out of READ (frontconn_set_state). */
    size_t (*parse)(frontconn *c, const char *buf, size_t len, size_t *need);
    /* Optional: free the protocol's own allocations in a slot that is being freed (slots
     * are pooled; this runs only when one really goes). */
    void (*slot_destroy)(frontconn_slot *s);
    size_t conn_size;          /* bytes of per-connection protocol state (zeroed), or 0 */
} frontconn_proto;

/* Serve proto on an already listening non-blocking socket (takes ownership of fd).
 * proto, stats and ud are borrowed for the listener's lifetime; stats counts
 * connections and bytes.  Release with frontconn_listener_free. */
frontconn_listener *frontconn_listen(struct ev_loop *loop, int fd, const frontconn_proto *proto,
                                     gwstats *stats, void *ud);

/* Close the listening socket and every connection; free l (NULL allowed).  Requests in
 * flight must have completed first (gateway_free), since their slots point into l. */
void frontconn_listener_free(frontconn_listener *l);

/* The ud given to frontconn_listen. */
void *frontconn_ud(const frontconn *c);
/* The connection's protocol state (frontconn_proto.conn_size bytes, zeroed at accept). */
void *frontconn_pstate(frontconn *c);
/* The stats given to frontconn_listen. */
gwstats *frontconn_stats(const frontconn *c);

/* Change the input state (DRAIN also stops reading and schedules the draining close). */
void frontconn_set_state(frontconn *c, enum frontconn_state st);
/* Enter FRONTCONN_SWALLOW to drop the next n input bytes (n = 0: stay in READ). */
void frontconn_swallow(frontconn *c, size_t n);

/* The buffer for a reply known now: the output itself when no reply is pending before
 * it, else a completed slot queued behind the pending ones.  Borrowed until the next
 * frontconn call on c. */
nbuf *frontconn_reply_buf(frontconn *c);

/* Queue a pending reply slot (slot_size bytes, frontconn fields set, data empty; the
 * protocol part keeps what the previous user left).  Complete it exactly once with
 * frontconn_slot_complete, or drop it with frontconn_slot_alive == false. */
frontconn_slot *frontconn_slot_new(frontconn *c);

/* A pending reply that does not wait for the ones before it (kumofs's "cloudy"
 * protocol answers as operations complete): its reply goes out when it completes. */
frontconn_slot *frontconn_slot_new_unordered(frontconn *c);

/* Close c now, dropping replies not written yet (a protocol error where the original
 * closes without a word); pending requests complete into the void. */
void frontconn_abort(frontconn *c);

/* Call first in a gateway callback: false (and the slot released) when the client has
 * gone, in which case s must not be touched again. */
bool frontconn_slot_alive(frontconn_slot *s);

/* Where a completing slot writes its reply: the output when it is first in line (saves
 * a copy), else its own buffer until its turn. */
nbuf *frontconn_slot_target(frontconn_slot *s);

/* The reply of s is written: move every completed reply at the FIFO head to the output. */
void frontconn_slot_complete(frontconn_slot *s);

#endif
