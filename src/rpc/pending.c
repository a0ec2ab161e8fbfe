/* pending.c - per-session table of outstanding calls keyed by msgid (wire.md §4.2, §4.4). */
#include "config.h"
#include "rpc/pending.h"

#include <stdlib.h>

#include "logic/xmalloc.h"

#define PENDING_MIN_CAP 16

void pending_init(pending_table *t)
{
    t->slots = NULL;
    t->mask = 0;
    t->count = 0;
}

void pending_destroy(pending_table *t)
{
    free(t->slots);
    pending_init(t);
}

static void slot_put(pending_call *slots, uint32_t mask, const pending_call *c)
{
    uint32_t i = c->msgid & mask;
    while (slots[i].used)
        i = (i + 1) & mask;
    slots[i] = *c;
}

static void pending_grow(pending_table *t)
{
    uint32_t oldcap = pending_capacity(t);
    uint32_t cap = oldcap ? oldcap * 2 : PENDING_MIN_CAP;
    pending_call *slots = xcalloc(cap, sizeof *slots);
    for (uint32_t i = 0; i < oldcap; i++)
        if (t->slots[i].used)
            slot_put(slots, cap - 1, &t->slots[i]);
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
}

void pending_insert(pending_table *t, uint32_t msgid, uint32_t steps, rpc_callback cb, void *ud)
{
    pending_insert_timed(t, msgid, steps, 0.0, 0.0, cb, ud);
}

void pending_insert_timed(pending_table *t, uint32_t msgid, uint32_t steps, double sent,
                          double deadline, rpc_callback cb, void *ud)
{
    if ((t->count + 1) * 2 > pending_capacity(t))
        pending_grow(t);
    pending_call c = { .msgid = msgid, .steps = steps, .sent = sent, .deadline = deadline,
                       .cb = cb, .ud = ud, .used = true };
    slot_put(t->slots, t->mask, &c);
    t->count++;
}

bool pending_take(pending_table *t, uint32_t msgid, pending_call *out)
{
    if (t->count == 0)
        return false;
    uint32_t mask = t->mask;
    uint32_t i = msgid & mask;
    while (t->slots[i].used && t->slots[i].msgid != msgid)
        i = (i + 1) & mask;
    if (!t->slots[i].used)
        return false;
    *out = t->slots[i];
    /* Backward-shift deletion: pull later members of the probe run into the hole so that
     * lookups never need tombstones. */
    uint32_t hole = i;
    uint32_t j = (i + 1) & mask;
    while (t->slots[j].used) {
        uint32_t home = t->slots[j].msgid & mask;
        /* j may fill the hole if its home is not in the cyclic range (hole, j]. */
        bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
        j = (j + 1) & mask;
    }
    t->slots[hole].used = false;
    t->count--;
    return true;
}
