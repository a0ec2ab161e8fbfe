/* hashspace.c - the consistent-hashing ring: SHA-1 positions, 128 virtual nodes per server,
 * the three-slot assignment walk and the gateway's server_for (hashing.md). */
/* OpenSSL 3's one-shot SHA1() fetches the algorithm through EVP with locks on every call
 * (~530 ns for a 16-byte key here); the low-level SHA1_Init/Update/Final take ~60 ns.
 * They are deprecated in 3.0 but remain the fast path, so silence the deprecation. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "logic/hashspace.h"

#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "logic/xmalloc.h"

/* hashing.md §1: the first 8 digest bytes read little-endian, whatever the host order */
static uint64_t digest_to_u64(const unsigned char d[SHA_DIGEST_LENGTH])
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | d[i];
    return v;
}

static void sha1(const void *data, size_t len, unsigned char d[SHA_DIGEST_LENGTH])
{
    SHA_CTX c;
    SHA1_Init(&c);
    SHA1_Update(&c, data, len);
    SHA1_Final(d, &c);
}

uint64_t hs_hash(const void *data, size_t len)
{
    unsigned char d[SHA_DIGEST_LENGTH];
    sha1(data, len, d);
    return digest_to_u64(d);
}

void hs_virtual_nodes(const kaddr *addr, uint64_t out[HS_VIRTUAL_NODES])
{
    unsigned char d[SHA_DIGEST_LENGTH];
    /* hashing.md §1.2: v[0] = H(dump); v[i] = H(LE64(v[i-1])), and LE64(v[i-1]) is just
     * the first 8 bytes of the previous digest */
    sha1(addr->raw, addr->len, d);
    out[0] = digest_to_u64(d);
    for (int i = 1; i < HS_VIRTUAL_NODES; i++) {
        unsigned char in[8];
        memcpy(in, d, 8);
        sha1(in, 8, d);
        out[i] = digest_to_u64(d);
    }
}

void hashspace_init(hashspace *hs)
{
    memset(hs, 0, sizeof(*hs));
}

void hashspace_destroy(hashspace *hs)
{
    free(hs->nodes);
    free(hs->ring);
    memset(hs, 0, sizeof(*hs));
}

void hashspace_clear(hashspace *hs)
{
    hs->nring = 0;
    hs->nnodes = 0;
    hs->clocktime = 0;
}

/* Stable order by position.  Entries are generated in (node, i) order, so comparing the
 * node index on ties reproduces the stable sort of hashing.md §2; equal positions within
 * one node are indistinguishable entries. */
static int vnode_cmp(const void *pa, const void *pb)
{
    const hs_vnode *a = pa, *b = pb;
    if (a->pos != b->pos)
        return a->pos < b->pos ? -1 : 1;
    if (a->node != b->node)
        return a->node < b->node ? -1 : 1;
    return 0;
}

/* Append the 128 entries of the last node of the list and keep the ring sorted: sort the
 * new entries, then merge them in behind equal positions of earlier nodes (the original's
 * append + stable sort, hashing.md §2). */
static void ring_add_last(hashspace *hs)
{
    uint32_t idx = (uint32_t)(hs->nnodes - 1);
    uint64_t v[HS_VIRTUAL_NODES];
    hs_vnode add[HS_VIRTUAL_NODES];
    hs_vnode *merged = xmalloc((hs->nring + HS_VIRTUAL_NODES) * sizeof(hs_vnode));
    size_t i = 0, j = 0, k = 0;

    hs_virtual_nodes(&hs->nodes[idx].addr, v);
    for (int n = 0; n < HS_VIRTUAL_NODES; n++) {
        add[n].pos = v[n];
        add[n].node = idx;
    }
    qsort(add, HS_VIRTUAL_NODES, sizeof(hs_vnode), vnode_cmp);
    while (i < hs->nring || j < HS_VIRTUAL_NODES) {
        if (j == HS_VIRTUAL_NODES || (i < hs->nring && hs->ring[i].pos <= add[j].pos))
            merged[k++] = hs->ring[i++];
        else
            merged[k++] = add[j++];
    }
    free(hs->ring);
    hs->ring = merged;
    hs->nring = k;
}

/* After nodes were dropped from the list: drop their ring entries and renumber the rest.
 * keep_map[i] is the new index of old node i, or UINT32_MAX if it was removed.  Relative
 * order of the survivors is unchanged, so the ring stays correctly sorted. */
static void ring_remap(hashspace *hs, const uint32_t *keep_map)
{
    size_t w = 0;
    for (size_t r = 0; r < hs->nring; r++) {
        uint32_t m = keep_map[hs->ring[r].node];
        if (m != UINT32_MAX) {
            hs->ring[w].pos = hs->ring[r].pos;
            hs->ring[w].node = m;
            w++;
        }
    }
    hs->nring = w;
}

void hashspace_copy(hashspace *dst, const hashspace *src)
{
    if (dst == src)
        return;
    free(dst->nodes);
    free(dst->ring);
    dst->nodes = src->nnodes ? xmemdup(src->nodes, src->nnodes * sizeof(hs_node)) : NULL;
    dst->nnodes = dst->cap = src->nnodes;
    dst->ring = src->nring ? xmemdup(src->ring, src->nring * sizeof(hs_vnode)) : NULL;
    dst->nring = src->nring;
    dst->clocktime = src->clocktime;
}

void hashspace_swap(hashspace *a, hashspace *b)
{
    hashspace t = *a;
    *a = *b;
    *b = t;
}

int hashspace_index(const hashspace *hs, const kaddr *addr)
{
    for (size_t i = 0; i < hs->nnodes; i++)
        if (kaddr_eq(&hs->nodes[i].addr, addr))
            return (int)i;
    return -1;
}

void hashspace_add_node(hashspace *hs, const kaddr *addr, bool active)
{
    if (hs->nnodes == hs->cap) {
        hs->cap = hs->cap ? hs->cap * 2 : 8;
        hs->nodes = xrealloc(hs->nodes, hs->cap * sizeof(hs_node));
    }
    hs->nodes[hs->nnodes].addr = *addr;
    hs->nodes[hs->nnodes].active = active;
    hs->nnodes++;
    ring_add_last(hs);
}

bool hashspace_set_active(hashspace *hs, const kaddr *addr, bool active)
{
    int i = hashspace_index(hs, addr);
    if (i < 0 || hs->nodes[i].active == active)
        return false;
    /* ring entries refer to nodes by index, so positions and order are unchanged */
    hs->nodes[i].active = active;
    return true;
}

bool hashspace_remove_node(hashspace *hs, const kaddr *addr)
{
    int i = hashspace_index(hs, addr);
    uint32_t *map;
    if (i < 0)
        return false;
    map = xmalloc(hs->nnodes * sizeof(uint32_t));
    for (size_t n = 0; n < hs->nnodes; n++)
        map[n] = (int)n < i ? (uint32_t)n : (int)n == i ? UINT32_MAX : (uint32_t)(n - 1);
    ring_remap(hs, map);
    free(map);
    memmove(&hs->nodes[i], &hs->nodes[i + 1], (hs->nnodes - (size_t)i - 1) * sizeof(hs_node));
    hs->nnodes--;
    return true;
}

bool hashspace_remove_fault_nodes(hashspace *hs)
{
    size_t w = 0;
    uint32_t *map = xmalloc((hs->nnodes ? hs->nnodes : 1) * sizeof(uint32_t));
    for (size_t r = 0; r < hs->nnodes; r++) {
        if (hs->nodes[r].active) {
            map[r] = (uint32_t)w;
            hs->nodes[w++] = hs->nodes[r];
        } else {
            map[r] = UINT32_MAX;
        }
    }
    bool changed = w != hs->nnodes;
    if (changed) {
        ring_remap(hs, map);
        hs->nnodes = w;
    }
    free(map);
    return changed;
}

bool hashspace_empty(const hashspace *hs)
{
    for (size_t i = 0; i < hs->nnodes; i++)
        if (hs->nodes[i].active)
            return false;
    return true;
}

bool hashspace_nodes_equal(const hashspace *a, const hashspace *b)
{
    if (a->nnodes != b->nnodes)
        return false;
    for (size_t i = 0; i < a->nnodes; i++)
        if (!kaddr_eq(&a->nodes[i].addr, &b->nodes[i].addr) ||
            a->nodes[i].active != b->nodes[i].active)
            return false;
    return true;
}

bool hashspace_is_active(const hashspace *hs, const kaddr *addr)
{
    int i = hashspace_index(hs, addr);
    return i >= 0 && hs->nodes[i].active;
}

long hashspace_find(const hashspace *hs, uint64_t h)
{
    size_t lo = 0, hi = hs->nring;
    if (hs->nring == 0)
        return -1;
    /* lower bound: first pos >= h (hashing.md §2.1) */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (hs->ring[mid].pos < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == hs->nring ? 0 : (long)lo;
}

size_t hashspace_assign(const hashspace *hs, uint64_t h, const hs_node *out[HS_REPLICAS])
{
    long start = hashspace_find(hs, h);
    size_t n = 0;
    if (start < 0)
        return 0;
    /* the EACH_ASSIGN walk (hashing.md §2.2): distinct nodes in ring order, fault nodes
     * keep their slot; stop after a full turn */
    for (size_t k = 0; k < hs->nring && n < HS_REPLICAS; k++) {
        const hs_node *node = &hs->nodes[hs->ring[((size_t)start + k) % hs->nring].node];
        bool seen = false;
        for (size_t j = 0; j < n; j++)
            if (kaddr_eq(&out[j]->addr, &node->addr))
                seen = true;
        if (!seen)
            out[n++] = node;
    }
    return n;
}

const hs_node *hashspace_server_for(const hashspace *hs, uint64_t h, unsigned offset)
{
    const hs_node *slot[HS_REPLICAS];
    size_t n = hashspace_assign(hs, h, slot);
    if (n == 0)
        return NULL;
    /* hashing.md §2.4: skip `offset` slots, take the first active one of the rest */
    for (size_t i = offset; i < n; i++)
        if (slot[i]->active)
            return slot[i];
    /* nothing active: a full list ends its walk on slot 2 and returns it (the call then
     * fails and is retried); a short list runs off the ring back to slot 0 */
    return n == HS_REPLICAS ? slot[HS_REPLICAS - 1] : slot[0];
}
