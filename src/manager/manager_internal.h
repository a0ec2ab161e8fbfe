/* manager_internal.h - the manager's state, shared by manager.c (cluster logic) and
 * handlers.c (incoming requests) only; not a public interface. */
#ifndef KUMO_MANAGER_INTERNAL_H
#define KUMO_MANAGER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "logic/addr.h"
#include "logic/clocktime.h"
#include "logic/hashspace.h"
#include "manager/manager.h"
#include "rpc/rpc.h"

/* A growable list of node addresses (newcomers, replace targets). */
typedef struct mgr_addr_list {
    kaddr *v;
    size_t n, cap;
} mgr_addr_list;

/* Progress of one replace phase (algorithms.md §6): the replace time it belongs to, the
 * servers asked to run it and those that have not reported yet. */
typedef struct mgr_progress {
    bool valid;               /* false = invalidated: late reports are ignored */
    clocktime_t time;         /* whs timestamp the phase was started for */
    bool full;                /* copy phase of a full replace (§8.5) */
    mgr_addr_list targets;
    mgr_addr_list remaining;
    mgr_addr_list unsent;     /* copy targets not connected yet: ReplaceCopyStart due */
    int unsent_ticks;         /* ticks left to wait for them (manager_tick) */
} mgr_progress;

struct manager {
    manager_config cfg;
    rpc_node *node;
    kclock clock;
    hashspace whs;            /* write hash space: where data must be */
    hashspace rhs;            /* read hash space: where data is until the copy finished */
    mgr_addr_list newcomers;  /* connected servers not active in whs (in connect order) */
    bool auto_replace;        /* -a, toggled by SetAutoReplace */
    mgr_progress copying;
    mgr_progress deleting;
    int election_ticks;       /* ticks until the debounced election; -1 = none (§6.8) */
    struct mgr_watch *watch;  /* failure detector (watch.c); NULL = the original's keepalive only */
    bool closing;             /* manager_free running: ignore late callbacks */
};

/* Sessions collected from an rpc iteration, each held with rpc_session_ref so that a
 * session lost while we send to the others (a lost_node re-entering us) stays valid. */
typedef struct mgr_sess_list {
    rpc_session **v;
    size_t n, cap;
} mgr_sess_list;

/* Remove every occurrence of a; true if any was present. */
bool mgr_addr_list_remove(mgr_addr_list *l, const kaddr *a);

/* Every server with a live cluster connection (attached or not), each referenced;
 * release with mgr_sess_list_release. */
void mgr_connected_servers(manager *m, mgr_sess_list *out);
void mgr_sess_list_release(mgr_sess_list *l);

bool mgr_has_partner(const manager *m);

/* HashSpaceSync(whs, rhs) to the partner, if one is configured (algorithms.md §9.2). */
void mgr_sync_partner(manager *m);

/* Drop newcomers that are active in whs or whose session died. */
void mgr_newcomers_prune(manager *m);
void mgr_newcomers_adopt(manager *m);

/* The operations of algorithms.md §6.3-§6.6: attach newcomers, detach fault nodes (each
 * syncs the partner), start a replace, finish the copy phase. */
void mgr_attach_new_servers(manager *m);
void mgr_detach_fault_servers(manager *m);
void mgr_start_replace(manager *m, bool full);
void mgr_finish_copy(manager *m);

#endif
