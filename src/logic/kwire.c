/* kwire.c - msgpack encodings of addresses, hash-space nodes and seeds (wire.md §3, §7). */
#include "logic/kwire.h"

#include <string.h>

int kwire_pack_raw(msgpack_packer *pk, const void *data, size_t len)
{
    /* wire.md §3: only fixraw / 0xda / 0xdb; the old unpacker drops str8 and bin */
    if (msgpack_pack_v4raw(pk, len) != 0)
        return -1;
    return len ? msgpack_pack_v4raw_body(pk, data, len) : 0;
}

int kwire_pack_addr(msgpack_packer *pk, const kaddr *a)
{
    return kwire_pack_raw(pk, a->raw, a->len);
}

int kwire_pack_node(msgpack_packer *pk, const hs_node *n)
{
    uint8_t buf[1 + KADDR_IPV6_LEN];
    /* wire.md §7.2: emit exactly 0x01 / 0x00, kumoctl compares with 0x01 */
    buf[0] = n->active ? 0x01 : 0x00;
    memcpy(buf + 1, n->addr.raw, n->addr.len);
    return kwire_pack_raw(pk, buf, 1u + n->addr.len);
}

int kwire_pack_seed(msgpack_packer *pk, const hashspace *hs)
{
    if (msgpack_pack_array(pk, 2) != 0 || msgpack_pack_array(pk, hs->nnodes) != 0)
        return -1;
    for (size_t i = 0; i < hs->nnodes; i++)
        if (kwire_pack_node(pk, &hs->nodes[i]) != 0)
            return -1;
    return msgpack_pack_uint64(pk, hs->clocktime);
}

static int pack_object(msgpack_packer *pk, const msgpack_object *o, int depth)
{
    if (depth > KWIRE_PACK_DEPTH_MAX)
        return -1;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return msgpack_pack_nil(pk);
    case MSGPACK_OBJECT_BOOLEAN:   /* wire.md §3: 0xc2/0xc3 only */
        return o->via.boolean ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return msgpack_pack_uint64(pk, o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return o->via.i64 >= 0 ? msgpack_pack_uint64(pk, (uint64_t)o->via.i64)
                               : msgpack_pack_int64(pk, o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return msgpack_pack_double(pk, o->via.f64);
    case MSGPACK_OBJECT_STR:
        return kwire_pack_raw(pk, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return kwire_pack_raw(pk, o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY:
        if (msgpack_pack_array(pk, o->via.array.size) != 0)
            return -1;
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (pack_object(pk, &o->via.array.ptr[i], depth + 1) != 0)
                return -1;
        return 0;
    case MSGPACK_OBJECT_MAP:
        if (msgpack_pack_map(pk, o->via.map.size) != 0)
            return -1;
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (pack_object(pk, &o->via.map.ptr[i].key, depth + 1) != 0 ||
                pack_object(pk, &o->via.map.ptr[i].val, depth + 1) != 0)
                return -1;
        return 0;
    default:                        /* ext: nothing in kumofs carries one */
        return msgpack_pack_nil(pk);
    }
}

int kwire_pack_object(msgpack_packer *pk, const msgpack_object *o)
{
    return pack_object(pk, o, 0);
}

bool kwire_get_raw(const msgpack_object *o, const char **data, size_t *len)
{
    /* wire.md §3: STR (any width) and BIN are both "raw" */
    if (o->type == MSGPACK_OBJECT_STR) {
        *data = o->via.str.ptr;
        *len = o->via.str.size;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        *data = o->via.bin.ptr;
        *len = o->via.bin.size;
        return true;
    }
    return false;
}

bool kwire_get_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *v = o->via.u64;
        return true;
    }
    /* msgpack-c already maps non-negative signed encodings to POSITIVE_INTEGER; this
     * branch only guards other decoders' habits */
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= 0) {
        *v = (uint64_t)o->via.i64;
        return true;
    }
    return false;
}

bool kwire_get_u32(const msgpack_object *o, uint32_t *v)
{
    uint64_t u;
    if (!kwire_get_u64(o, &u) || u > UINT32_MAX)
        return false;
    *v = (uint32_t)u;
    return true;
}

bool kwire_get_bool(const msgpack_object *o, bool *v)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *v = o->via.boolean;
    return true;
}

const msgpack_object *kwire_array_at(const msgpack_object *o, uint32_t i)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || i >= o->via.array.size)
        return NULL;
    return &o->via.array.ptr[i];
}

bool kwire_get_addr(const msgpack_object *o, kaddr *a)
{
    const char *p;
    size_t len;
    return kwire_get_raw(o, &p, &len) && kaddr_from_dump(a, p, len) == 0;
}

bool kwire_get_node(const msgpack_object *o, hs_node *n)
{
    const char *p;
    size_t len;
    if (!kwire_get_raw(o, &p, &len) || len < 1)
        return false;
    if (kaddr_from_dump(&n->addr, p + 1, len - 1) != 0)
        return false;
    n->active = p[0] != 0;    /* daemons take any non-zero flag as active (§7.2) */
    return true;
}

bool kwire_get_seed(const msgpack_object *o, hashspace *hs)
{
    const msgpack_object *nodes = kwire_array_at(o, 0);
    const msgpack_object *ct = kwire_array_at(o, 1);
    uint64_t clocktime;

    hashspace_clear(hs);
    /* longer arrays are accepted, trailing elements ignored (wire.md §3) */
    if (nodes == NULL || ct == NULL || nodes->type != MSGPACK_OBJECT_ARRAY ||
        !kwire_get_u64(ct, &clocktime))
        return false;
    for (uint32_t i = 0; i < nodes->via.array.size; i++) {
        hs_node n;
        if (!kwire_get_node(&nodes->via.array.ptr[i], &n)) {
            hashspace_clear(hs);
            return false;
        }
        hashspace_add_node(hs, &n.addr, n.active);
    }
    hs->clocktime = clocktime;
    return true;
}
