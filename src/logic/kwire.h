/* kwire.h - msgpack encodings of kumofs compound types (wire.md §3, §7): old-spec raw
 * strings out, any string/bin form in; addresses, hash-space nodes and seeds. */
#ifndef KUMO_KWIRE_H
#define KUMO_KWIRE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "logic/addr.h"
#include "logic/hashspace.h"

/* ---- emit (always the old-spec forms the original understands) ---- */

/* A byte string as old "raw": 0xa0-0xbf, 0xda, 0xdb only (msgpack_pack_v4raw). */
int kwire_pack_raw(msgpack_packer *pk, const void *data, size_t len);

/* An address dump as raw (6 bytes for IPv4). */
int kwire_pack_addr(msgpack_packer *pk, const kaddr *a);

/* A hash-space node: raw(1 + dump) with flag byte 0x01 active / 0x00 fault (§7.2). */
int kwire_pack_node(msgpack_packer *pk, const hs_node *n);

/* An HSSeed: [[node...], clocktime] (§7.3). */
int kwire_pack_seed(msgpack_packer *pk, const hashspace *hs);

/* Any decoded object again, in the forms above: byte strings (STR or BIN) as old raw,
 * non-negative integers in the shortest unsigned form, arrays and maps element by
 * element (a relay passing a request on, server/relay.c).  -1 on a packer failure or
 * nesting deeper than KWIRE_PACK_DEPTH_MAX. */
#define KWIRE_PACK_DEPTH_MAX 32
int kwire_pack_object(msgpack_packer *pk, const msgpack_object *o);

/* Booleans and nil through msgpack_pack_true/false/nil; integers through
 * msgpack_pack_uint64 (which msgpack-c emits in the shortest unsigned form). */

/* ---- accept (lenient as wire.md §3 says) ---- */

/* Byte string of any form (STR or BIN).  Pointer borrowed from the object's zone. */
bool kwire_get_raw(const msgpack_object *o, const char **data, size_t *len);

/* Unsigned integers; signed encodings of non-negative values accepted; values that do
 * not fit the width are rejected. */
bool kwire_get_u64(const msgpack_object *o, uint64_t *v);
bool kwire_get_u32(const msgpack_object *o, uint32_t *v);
bool kwire_get_bool(const msgpack_object *o, bool *v);
static inline bool kwire_is_nil(const msgpack_object *o) { return o->type == MSGPACK_OBJECT_NIL; }

/* Array access: element i of an array object, or NULL if o is not an array or too short. */
const msgpack_object *kwire_array_at(const msgpack_object *o, uint32_t i);

bool kwire_get_addr(const msgpack_object *o, kaddr *a);
bool kwire_get_node(const msgpack_object *o, hs_node *n);

/* Decode an HSSeed into hs (cleared first; ring rebuilt).  False on any type error,
 * leaving hs empty. */
bool kwire_get_seed(const msgpack_object *o, hashspace *hs);

#endif
