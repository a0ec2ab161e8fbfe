/* hashspace.h - the consistent-hashing ring of hashing.md: 128 virtual nodes per server,
 * SHA-1 low 64 bits, three-slot assignment walk, whs/rhs seeds with timestamps. */
#ifndef KUMO_HASHSPACE_H
#define KUMO_HASHSPACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/addr.h"
#include "logic/clocktime.h"

#define HS_VIRTUAL_NODES 128
#define HS_REPLICAS 3

/* H(bytes): SHA-1, digest bytes 0..7 read little-endian (hashing.md §1). */
uint64_t hs_hash(const void *data, size_t len);

/* The 128 virtual-node positions of a server (hashing.md §1.2). */
void hs_virtual_nodes(const kaddr *addr, uint64_t out[HS_VIRTUAL_NODES]);

typedef struct hs_node {
    kaddr addr;
    bool active;          /* false = fault */
} hs_node;

typedef struct hs_vnode {
    uint64_t pos;         /* virtual-node position */
    uint32_t node;        /* index into hashspace.nodes */
} hs_vnode;

/* A hash space: the seed's node list (order significant), its timestamp, and the ring
 * built from it.  Fields are readable; change them only through the functions below,
 * which keep the ring in step with the list. */
typedef struct hashspace {
    hs_node *nodes;       /* seed order (attach order) */
    size_t nnodes;
    size_t cap;
    clocktime_t clocktime;
    hs_vnode *ring;       /* nnodes * 128 entries, stable-sorted by pos */
    size_t nring;
} hashspace;

void hashspace_init(hashspace *hs);            /* empty: no nodes, clocktime 0 */
void hashspace_destroy(hashspace *hs);         /* frees nodes and ring */
void hashspace_clear(hashspace *hs);           /* back to empty, keeps allocations */
void hashspace_copy(hashspace *dst, const hashspace *src);  /* dst must be initialised */
void hashspace_swap(hashspace *a, hashspace *b);

/* Index of the node with this address in the list, or -1. */
int hashspace_index(const hashspace *hs, const kaddr *addr);

/* Append a node (caller checks it is not present). */
void hashspace_add_node(hashspace *hs, const kaddr *addr, bool active);

/* Set a node's active flag.  Returns true if the node exists and the flag changed. */
bool hashspace_set_active(hashspace *hs, const kaddr *addr, bool active);

/* Remove a node from the list.  Returns true if it was present. */
bool hashspace_remove_node(hashspace *hs, const kaddr *addr);

/* Remove every fault node.  Returns true if any was removed. */
bool hashspace_remove_fault_nodes(hashspace *hs);

/* "Empty" = no active node (hashing.md §3). */
bool hashspace_empty(const hashspace *hs);

/* Node lists equal (order, addresses, flags); timestamps ignored. */
bool hashspace_nodes_equal(const hashspace *a, const hashspace *b);

/* Is this address an active node of the space? */
bool hashspace_is_active(const hashspace *hs, const kaddr *addr);

/* Ring index of the first entry with pos >= h, wrapping to 0; -1 if the ring is empty. */
long hashspace_find(const hashspace *hs, uint64_t h);

/* The assigned-node list of h (the EACH_ASSIGN walk, hashing.md §2.2): up to 3 distinct
 * nodes, fault nodes included.  Writes pointers into hs->nodes (valid until hs changes)
 * and returns the count (0 for an empty list). */
size_t hashspace_assign(const hashspace *hs, uint64_t h, const hs_node *out[HS_REPLICAS]);

/* The gateway's server_for(h, offset) rule (hashing.md §2.4); NULL if the list is empty. */
const hs_node *hashspace_server_for(const hashspace *hs, uint64_t h, unsigned offset);

#endif
