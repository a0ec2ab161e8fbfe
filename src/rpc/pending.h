/* pending.h - per-session table of outstanding calls keyed by msgid (wire.md §4.2, §4.4). */
#ifndef KUMO_RPC_PENDING_H
#define KUMO_RPC_PENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

/* One outstanding call.  Plain data. */
typedef struct pending_call {
    uint32_t msgid;
    uint32_t steps;        /* remaining step budget (algorithms.md §1) */
    double sent;           /* ev_now when the call was made (round-trip estimate) */
    double deadline;       /* ev_now after which it times out; 0 = the step budget only */
    rpc_callback cb;       /* may be NULL: the answer is dropped */
    void *ud;
    bool used;             /* slot occupied */
} pending_call;

/* Open addressing with linear probing and backward-shift deletion: msgids are sequential
 * per session, so the identity hash spreads them perfectly and the steady path never
 * allocates (the table only grows, to keep the load at most 1/2). */
typedef struct pending_table {
    pending_call *slots;
    uint32_t mask;         /* capacity - 1 (capacity is a power of two), 0 before the first insert */
    uint32_t count;
} pending_table;

void pending_init(pending_table *t);
void pending_destroy(pending_table *t);

/* Add a call.  The caller keeps msgids unique among outstanding calls. */
void pending_insert(pending_table *t, uint32_t msgid, uint32_t steps, rpc_callback cb, void *ud);

/* The same with its send time and an absolute deadline (0 = none). */
void pending_insert_timed(pending_table *t, uint32_t msgid, uint32_t steps, double sent,
                          double deadline, rpc_callback cb, void *ud);

/* Remove the call with msgid into *out.  Returns false (and leaves *out alone) if unknown. */
bool pending_take(pending_table *t, uint32_t msgid, pending_call *out);

/* Capacity for iteration over t->slots[0 .. pending_capacity(t)). */
static inline uint32_t pending_capacity(const pending_table *t) { return t->slots ? t->mask + 1 : 0; }

#endif
