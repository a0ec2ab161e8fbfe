/* test_kwire.c - msgpack encodings of wire.md §3/§7 against §11 and captured vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "logic/kwire.h"

/* ---- helpers ---- */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = hex; *p; ) {
        unsigned v;
        if (*p == ' ') { p++; continue; }
        assert_true(n < cap);
        assert_int_equal(sscanf(p, "%2x", &v), 1);
        out[n++] = (uint8_t)v;
        p += 2;
    }
    return n;
}

static void assert_sbuf_hex(const msgpack_sbuffer *sb, const char *hex)
{
    uint8_t want[4096];
    size_t n = unhex(hex, want, sizeof(want));
    if (sb->size != n || memcmp(sb->data, want, n) != 0) {
        char got[8192];
        size_t k = 0;
        for (size_t i = 0; i < sb->size && k + 3 < sizeof(got); i++)
            k += (size_t)snprintf(got + k, sizeof(got) - k, "%02x", (uint8_t)sb->data[i]);
        fail_msg("encoded %s, want %s", got, hex);
    }
}

/* Unpack a whole message given as hex; the caller destroys `res`. */
static void unpack_hex(const char *hex, msgpack_unpacked *res)
{
    static uint8_t buf[4096];
    size_t n = unhex(hex, buf, sizeof(buf)), off = 0;
    msgpack_unpacked_init(res);
    assert_int_equal(msgpack_unpack_next(res, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, n);
}

static kaddr lo(uint16_t port)
{
    kaddr a;
    kaddr_set_ipv4(&a, 0x7f000001, port);
    return a;
}

/* ---- emit: wire.md §11 ---- */

static void test_pack_seed_spec(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    hashspace hs;
    kaddr a = lo(19801);

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    hashspace_init(&hs);
    hashspace_add_node(&hs, &a, true);
    hs.clocktime = 0x4b3d3b0000000005ULL;
    assert_int_equal(kwire_pack_seed(&pk, &hs), 0);
    assert_sbuf_hex(&sb, "92 91 a7 01 4d597f000001 cf 4b3d3b0000000005");

    /* the empty hash space is [[], 0] */
    msgpack_sbuffer_clear(&sb);
    hashspace_clear(&hs);
    assert_int_equal(kwire_pack_seed(&pk, &hs), 0);
    assert_sbuf_hex(&sb, "92 90 00");

    /* a fault node carries flag 0x00 */
    msgpack_sbuffer_clear(&sb);
    hashspace_add_node(&hs, &a, false);
    hs.clocktime = 7;
    assert_int_equal(kwire_pack_seed(&pk, &hs), 0);
    assert_sbuf_hex(&sb, "92 91 a7 00 4d597f000001 07");

    /* address dumps */
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(kwire_pack_addr(&pk, &a), 0);
    kaddr b;
    kaddr_set_ipv4(&b, 0xc0a80065, 19800);
    assert_int_equal(kwire_pack_addr(&pk, &b), 0);
    hs_node n = { .addr = a, .active = true };
    assert_int_equal(kwire_pack_node(&pk, &n), 0);
    assert_sbuf_hex(&sb, "a6 4d597f000001 a6 4d58c0a80065 a7 01 4d597f000001");

    hashspace_destroy(&hs);
    msgpack_sbuffer_destroy(&sb);
}

static void test_pack_raw_forms(void **state)
{
    (void)state;
    static const struct { size_t len; const char *head; } t[] = {
        { 0, "a0" }, { 1, "a1" }, { 31, "bf" },
        { 32, "da0020" },              /* never str8 (0xd9) */
        { 40, "da0028" },
        { 255, "da00ff" },
        { 65535, "daffff" },
        { 65536, "db00010000" },
        { 70000, "db00011170" },
    };
    uint8_t *data = malloc(70000);
    assert_non_null(data);
    for (size_t i = 0; i < 70000; i++)
        data[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        uint8_t head[8];
        size_t hl = unhex(t[i].head, head, sizeof(head));
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        assert_int_equal(kwire_pack_raw(&pk, data, t[i].len), 0);
        assert_int_equal(sb.size, hl + t[i].len);
        assert_memory_equal(sb.data, head, hl);
        if (t[i].len)
            assert_memory_equal(sb.data + hl, data, t[i].len);

        /* and it decodes back as a raw */
        msgpack_unpacked res;
        size_t off = 0;
        const char *p;
        size_t len;
        msgpack_unpacked_init(&res);
        assert_int_equal(msgpack_unpack_next(&res, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
        assert_true(kwire_get_raw(&res.data, &p, &len));
        assert_int_equal(len, t[i].len);
        msgpack_unpacked_destroy(&res);
        msgpack_sbuffer_destroy(&sb);
    }
    free(data);
}

static void test_pack_uint_forms(void **state)
{
    (void)state;
    /* wire.md §3: shortest unsigned form, never the signed ones */
    static const struct { uint64_t v; const char *hex; } t[] = {
        { 0, "00" }, { 127, "7f" }, { 128, "cc80" }, { 255, "ccff" }, { 256, "cd0100" },
        { 65536, "ce00010000" }, { 0x4b3d3b0000000005ULL, "cf4b3d3b0000000005" },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_uint64(&pk, t[i].v);
        assert_sbuf_hex(&sb, t[i].hex);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* ---- accept: real vectors from test/vectors/vectors.jsonl ---- */

struct vector_case {
    const char *kind;
    const char *prefix;       /* message bytes before the first seed */
    const char *seeds[2];     /* the HSSeed(s) as captured */
    const char *suffix;       /* bytes after the last seed */
    uint32_t path[3];         /* index path from the message to the first seed */
    size_t depth;
    size_t nnodes;
    uint64_t clocktime;
};

#define S3 "9293a701baba7f000001a701babb7f000001a701bab97f000001cf6b024a1700000002"
#define S4 "9294a701baba7f000001a701babb7f000001a701bab97f000001a701babc7f000001cf6b024a2d00000014"
#define S4F "9294a701baba7f000001a700babb7f000001a701bab97f000001a701babc7f000001cf6b024a6000000035"

static const struct {
    const char *hex;          /* the full captured message */
    struct vector_case c;
} vectors[] = {
    { "940103c09293a701baba7f000001a701babb7f000001a701bab97f000001cf6b024a1700000002",
      { "WHashSpaceRequest.response", "940103c0", { S3, NULL }, "", { 3 }, 1, 3,
        7710806974656413698ULL } },
    { "940102c0929000",
      { "RHashSpaceRequest.response (empty)", "940102c0", { "929000", NULL }, "", { 3 }, 1, 0, 0 } },
    { "9401cdc30ec0929293a701baba7f000001a701babb7f000001a701bab97f000001cf6b024a170000000290",
      { "GetNodesInfo.response", "9401cdc30ec092", { S3, NULL }, "90", { 3, 0 }, 2, 3,
        7710806974656413698ULL } },
    { "94000103929293a701baba7f000001a701babb7f000001a701bab97f000001cf6b024a1700000002929000",
      { "HashSpacePush.request (admin)", "9400010392", { S3, "929000" }, "", { 3, 0 }, 2, 3,
        7710806974656413698ULL } },
    { "94000103929294a701baba7f000001a701babb7f000001a701bab97f000001a701babc7f000001cf6b024a2d00000014"
      "9293a701baba7f000001a701babb7f000001a701bab97f000001cf6b024a1700000002",
      { "HashSpacePush.request (gateway)", "9400010392", { S4, S3 }, "", { 3, 0 }, 2, 4,
        7710807069145694228ULL } },
    { "94002f02939294a701baba7f000001a700babb7f000001a701bab97f000001a701babc7f000001cf6b024a6000000035"
      "9294a701baba7f000001a700babb7f000001a701bab97f000001a701babc7f000001cf6b024a600000003536",
      { "HashSpaceSync.request (one fault)", "94002f0293", { S4F, S4F }, "36", { 3, 0 }, 2, 4,
        7710807288189026357ULL } },
    { "94000308939293a701baba7f000001a701babb7f000001a701bab97f000001cf6b024a170000000203c2",
      { "ReplaceCopyStart.request", "9400030893", { S3, NULL }, "03c2", { 3, 0 }, 2, 3,
        7710806974656413698ULL } },
};

static void test_vectors_roundtrip(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(vectors) / sizeof(vectors[0]); v++) {
        const struct vector_case *c = &vectors[v].c;
        msgpack_unpacked res;
        hashspace hs;

        /* the split into prefix / seeds / suffix is exactly the captured message */
        char joined[4096];
        snprintf(joined, sizeof(joined), "%s%s%s%s", c->prefix, c->seeds[0],
                 c->seeds[1] ? c->seeds[1] : "", c->suffix);
        assert_string_equal(joined, vectors[v].hex);

        unpack_hex(vectors[v].hex, &res);
        const msgpack_object *o = &res.data;
        for (size_t d = 0; d < c->depth; d++) {
            o = kwire_array_at(o, c->path[d]);
            assert_non_null(o);
        }
        for (int s = 0; s < 2 && c->seeds[s]; s++) {
            const msgpack_object *so = s == 0 ? o : o + 1;   /* the pair's second element */
            msgpack_sbuffer sb;
            msgpack_packer pk;
            hashspace_init(&hs);
            if (!kwire_get_seed(so, &hs))
                fail_msg("%s: seed %d does not decode", c->kind, s);
            if (s == 0) {
                assert_int_equal(hs.nnodes, c->nnodes);
                assert_int_equal(hs.clocktime, c->clocktime);
                assert_int_equal(hs.nring, c->nnodes * HS_VIRTUAL_NODES);
            }
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            assert_int_equal(kwire_pack_seed(&pk, &hs), 0);
            assert_sbuf_hex(&sb, c->seeds[s]);
            msgpack_sbuffer_destroy(&sb);
            hashspace_destroy(&hs);
        }
        msgpack_unpacked_destroy(&res);
    }
}

static void test_vector_fault_flag(void **state)
{
    (void)state;
    msgpack_unpacked res;
    hashspace hs;
    kaddr s3;
    kaddr_set_ipv4(&s3, 0x7f000001, 47803);   /* dump babb7f000001 */
    unpack_hex(S4F, &res);
    hashspace_init(&hs);
    assert_true(kwire_get_seed(&res.data, &hs));
    assert_false(hashspace_is_active(&hs, &s3));
    assert_true(hs.nodes[0].active);
    assert_false(hs.nodes[1].active);
    assert_int_equal(kaddr_port(&hs.nodes[1].addr), 47803);
    hashspace_destroy(&hs);
    msgpack_unpacked_destroy(&res);
}

static void test_vector_newcomers(void **state)
{
    (void)state;
    /* GetNodesInfo.response with an empty whs and three newcomer addresses */
    msgpack_unpacked res;
    unpack_hex("9401cdf4a1c09292900093a6baba7f000001a6babb7f000001a6bab97f000001", &res);
    const msgpack_object *result = kwire_array_at(&res.data, 3);
    const msgpack_object *list = kwire_array_at(result, 1);
    static const uint16_t ports[] = { 47802, 47803, 47801 };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_non_null(list);
    assert_int_equal(list->via.array.size, 3);
    for (uint32_t i = 0; i < 3; i++) {
        kaddr a;
        assert_true(kwire_get_addr(kwire_array_at(list, i), &a));
        assert_int_equal(kaddr_port(&a), ports[i]);
        assert_int_equal(kwire_pack_addr(&pk, &a), 0);
    }
    assert_sbuf_hex(&sb, "a6baba7f000001a6babb7f000001a6bab97f000001");

    uint64_t msgid;
    assert_true(kwire_get_u64(kwire_array_at(&res.data, 1), &msgid));
    assert_int_equal(msgid, 62625);
    assert_true(kwire_is_nil(kwire_array_at(&res.data, 2)));
    assert_null(kwire_array_at(&res.data, 4));
    assert_null(kwire_array_at(kwire_array_at(&res.data, 1), 0));   /* not an array */

    hashspace hs;
    hashspace_init(&hs);
    assert_true(kwire_get_seed(kwire_array_at(result, 0), &hs));
    assert_int_equal(hs.nnodes, 0);
    assert_true(hashspace_empty(&hs));
    hashspace_destroy(&hs);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&res);
}

/* ---- accept: the lenient forms of wire.md §3 ---- */

static void test_accept_forms(void **state)
{
    (void)state;
    static const struct { const char *hex; size_t nnodes; bool active; uint64_t ct; } ok[] = {
        /* fixraw, str8, str16, bin8, bin16 nodes */
        { "92 91 a7 01 4d597f000001 cf 4b3d3b0000000005", 1, true, 0x4b3d3b0000000005ULL },
        { "92 91 d9 07 01 4d597f000001 cf 4b3d3b0000000005", 1, true, 0x4b3d3b0000000005ULL },
        { "92 91 da 0007 01 4d597f000001 05", 1, true, 5 },
        { "92 91 c4 07 01 4d597f000001 05", 1, true, 5 },
        { "92 91 c5 0007 00 4d597f000001 05", 1, false, 5 },
        /* any non-zero flag is active */
        { "92 91 a7 02 4d597f000001 05", 1, true, 5 },
        /* signed encodings of non-negative clocktimes */
        { "92 91 a7 01 4d597f000001 d3 4b3d3b0000000005", 1, true, 0x4b3d3b0000000005ULL },
        { "92 91 a7 01 4d597f000001 d0 05", 1, true, 5 },
        { "92 90 d2 00000009", 0, false, 9 },
        /* longer arrays are fine */
        { "93 90 00 c3", 0, false, 0 },
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        msgpack_unpacked res;
        hashspace hs;
        unpack_hex(ok[i].hex, &res);
        hashspace_init(&hs);
        if (!kwire_get_seed(&res.data, &hs))
            fail_msg("seed '%s' rejected", ok[i].hex);
        assert_int_equal(hs.nnodes, ok[i].nnodes);
        assert_int_equal(hs.clocktime, ok[i].ct);
        if (ok[i].nnodes) {
            kaddr a = lo(19801);
            assert_true(kaddr_eq(&hs.nodes[0].addr, &a));
            assert_int_equal(hs.nodes[0].active, ok[i].active);
        }
        hashspace_destroy(&hs);
        msgpack_unpacked_destroy(&res);
    }

    static const char *bad[] = {
        "91 90",                                          /* too short */
        "90",
        "c0",
        "92 c0 00",                                       /* nodes not an array */
        "92 91 a6 4d597f000001 00",                       /* node without flag: 6 bytes */
        "92 91 a8 01 4d597f00000100 00",                  /* 7-byte dump */
        "92 91 a0 00",                                    /* empty node */
        "92 91 05 00",                                    /* node not a raw */
        "92 92 a7 01 4d597f000001 05 00",                 /* second node bad */
        "92 90 ff",                                       /* negative clocktime */
        "92 90 a1 00",                                    /* clocktime not an int */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msgpack_unpacked res;
        hashspace hs;
        kaddr a = lo(1);
        unpack_hex(bad[i], &res);
        hashspace_init(&hs);
        hashspace_add_node(&hs, &a, true);     /* must come back empty */
        hs.clocktime = 99;
        if (kwire_get_seed(&res.data, &hs))
            fail_msg("seed '%s' accepted", bad[i]);
        assert_int_equal(hs.nnodes, 0);
        assert_int_equal(hs.nring, 0);
        assert_int_equal(hs.clocktime, 0);
        hashspace_destroy(&hs);
        msgpack_unpacked_destroy(&res);
    }
}

static void test_accept_scalars(void **state)
{
    (void)state;
    static const struct { const char *hex; bool ok64; uint64_t v; bool ok32; } ints[] = {
        { "00", true, 0, true },
        { "cc ff", true, 255, true },
        { "ce ffffffff", true, 0xffffffffULL, true },
        { "cf 0000000100000000", true, 0x100000000ULL, false },   /* too wide for u32 */
        { "cf ffffffffffffffff", true, UINT64_MAX, false },
        { "d0 7f", true, 127, true },
        { "d1 0100", true, 256, true },
        { "d3 0000000000000001", true, 1, true },
        { "ff", false, 0, false },                                /* -1 */
        { "d0 80", false, 0, false },
        { "c3", false, 0, false },
        { "a1 31", false, 0, false },
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        msgpack_unpacked res;
        uint64_t v64 = 0;
        uint32_t v32 = 0;
        unpack_hex(ints[i].hex, &res);
        assert_int_equal(kwire_get_u64(&res.data, &v64), ints[i].ok64);
        if (ints[i].ok64)
            assert_int_equal(v64, ints[i].v);
        assert_int_equal(kwire_get_u32(&res.data, &v32), ints[i].ok32);
        if (ints[i].ok32)
            assert_int_equal(v32, ints[i].v);
        msgpack_unpacked_destroy(&res);
    }

    static const struct { const char *hex; bool ok; bool v; } bools[] = {
        { "c3", true, true }, { "c2", true, false }, { "01", false, false }, { "c0", false, false },
    };
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        msgpack_unpacked res;
        bool b = !bools[i].v;
        unpack_hex(bools[i].hex, &res);
        assert_int_equal(kwire_get_bool(&res.data, &b), bools[i].ok);
        if (bools[i].ok)
            assert_int_equal(b, bools[i].v);
        msgpack_unpacked_destroy(&res);
    }

    /* raw in every string/bin form, addresses of 6 and 22 bytes only */
    static const struct { const char *hex; bool raw; bool addr; } raws[] = {
        { "a6 4d597f000001", true, true },
        { "d9 06 4d597f000001", true, true },
        { "da 0006 4d597f000001", true, true },
        { "db 00000006 4d597f000001", true, true },
        { "c4 06 4d597f000001", true, true },
        { "c6 00000006 4d597f000001", true, true },
        { "a5 4d597f0000", true, false },
        { "c0", false, false },
        { "05", false, false },
    };
    for (size_t i = 0; i < sizeof(raws) / sizeof(raws[0]); i++) {
        msgpack_unpacked res;
        const char *p;
        size_t len;
        kaddr a;
        unpack_hex(raws[i].hex, &res);
        assert_int_equal(kwire_get_raw(&res.data, &p, &len), raws[i].raw);
        assert_int_equal(kwire_get_addr(&res.data, &a), raws[i].addr);
        if (raws[i].addr)
            assert_int_equal(kaddr_port(&a), 19801);
        msgpack_unpacked_destroy(&res);
    }
}

/* kwire_pack_object (a relay passing a request on): whatever form came in, the old-spec
 * forms go out -- str8 and bin as raw, signed non-negative ints unsigned -- and nesting
 * past the limit fails instead of recursing on. */
static void repack_hex(const char *in_hex, const char *want_hex)
{
    uint8_t in[256];
    size_t n = unhex(in_hex, in, sizeof(in));
    msgpack_unpacked res;
    msgpack_unpacked_init(&res);
    assert_int_equal(msgpack_unpack_next(&res, (const char *)in, n, NULL), MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(kwire_pack_object(&pk, &res.data), 0);
    assert_sbuf_hex(&sb, want_hex);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&res);
}

static void test_pack_object_old_forms(void **state)
{
    (void)state;
    repack_hex("c0", "c0");
    repack_hex("c3", "c3");
    repack_hex("c2", "c2");
    repack_hex("d0 05", "05");                          /* int8 5 -> fixint */
    repack_hex("d1 01 00", "cd 01 00");                 /* int16 256 -> uint16 */
    repack_hex("ff", "ff");                             /* -1 stays negative fixint */
    repack_hex("d9 03 61 62 63", "a3 61 62 63");        /* str8 -> fixraw */
    repack_hex("c4 02 00 01", "a2 00 01");              /* bin8 -> fixraw */
    repack_hex("d9 20 " "41414141414141414141414141414141" "41414141414141414141414141414141",
               "da 00 20 " "41414141414141414141414141414141" "41414141414141414141414141414141");
    /* Set [0, dbkey, dbvalue] with a bin key: the shape a relay passes on */
    repack_hex("93 00 c4 01 6b c4 02 00 00", "93 00 a1 6b a2 00 00");
    repack_hex("81 a1 6b 92 01 c0", "81 a1 6b 92 01 c0");   /* maps and nesting */
}

static void test_pack_object_depth_limit(void **state)
{
    (void)state;
    /* built by hand: msgpack-c's own unpacker stops at 32 levels, our limit guards any
     * object however it was made */
    msgpack_object objs[KWIRE_PACK_DEPTH_MAX + 2];
    size_t n = sizeof objs / sizeof objs[0];
    objs[n - 1].type = MSGPACK_OBJECT_NIL;
    for (size_t i = 0; i + 1 < n; i++) {
        objs[i].type = MSGPACK_OBJECT_ARRAY;
        objs[i].via.array.size = 1;
        objs[i].via.array.ptr = &objs[i + 1];
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(kwire_pack_object(&pk, &objs[0]), -1);     /* nil at depth 33 */
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(kwire_pack_object(&pk, &objs[1]), 0);      /* nil at depth 32 */
    msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_seed_spec),
        cmocka_unit_test(test_pack_raw_forms),
        cmocka_unit_test(test_pack_uint_forms),
        cmocka_unit_test(test_vectors_roundtrip),
        cmocka_unit_test(test_vector_fault_flag),
        cmocka_unit_test(test_vector_newcomers),
        cmocka_unit_test(test_accept_forms),
        cmocka_unit_test(test_accept_scalars),
        cmocka_unit_test(test_pack_object_old_forms),
        cmocka_unit_test(test_pack_object_depth_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
