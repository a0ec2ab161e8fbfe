/* test_hashspace.c - the hash ring against every worked example of hashing.md §4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "logic/hashspace.h"

static kaddr lo(uint16_t port)
{
    kaddr a;
    kaddr_set_ipv4(&a, 0x7f000001, port);
    return a;
}

/* Build a hash space of 127.0.0.1:<ports...>, all active, in the given order. */
static void build(hashspace *hs, const uint16_t *ports, size_t n)
{
    hashspace_init(hs);
    for (size_t i = 0; i < n; i++) {
        kaddr a = lo(ports[i]);
        hashspace_add_node(hs, &a, true);
    }
}

static uint16_t port_of(const hs_node *n) { return kaddr_port(&n->addr); }

/* ---- §4.1 key hashes ---- */
static void test_key_hashes(void **state)
{
    (void)state;
    static const struct { const char *key; uint64_t h; } t[] = {
        { "the-key", 0xbfc35380c472f6f6ULL },
        { "foo",     0xdb0f3feab5c7ee0bULL },
        { "hello",   0xa2e8c5dc1dc6f4aaULL },
        { "",        0x0d4b6b5eeea339daULL },
        { "abc",     0x6a810647363e99a9ULL },   /* tools.md §5 example */
        { "somekey", 0x468c4356e1096bf1ULL },   /* reference-outputs.md */
        { "k5470",   0xffe4c78a5fe2a9c6ULL },
        { "key1",    0x1c994bda6cab7310ULL },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        assert_int_equal(hs_hash(t[i].key, strlen(t[i].key)), t[i].h);
    assert_int_equal(hs_hash("foo", 3), 15784905496261553675ULL);
}

/* ---- §4.2 virtual nodes ---- */
static void test_virtual_nodes(void **state)
{
    (void)state;
    static const struct {
        uint32_t ip; uint16_t port; uint64_t v0, v1, v2, v127;
    } t[] = {
        { 0x7f000001, 19801, 0xf3664b679fd0f407ULL, 0x20d119f370e283f1ULL,
          0x22c48953ca9be3c7ULL, 0xd88919a4d0f411c5ULL },
        { 0x7f000001, 19802, 0xc872064f1ffa8427ULL, 0xc28f28a437c097f0ULL,
          0x3d64935e3ac193bcULL, 0x8f5a22510906af14ULL },
        { 0x7f000001, 19803, 0x5c654a146c759557ULL, 0xfa12a20f03c8409cULL,
          0xc456653a8381f943ULL, 0x01bed6f47a345df2ULL },
        { 0xc0a80065, 19800, 0x2bdac55e8582516dULL, 0x521cb9dee1732014ULL,
          0xcf50cc8b3a8798a2ULL, 0xc5d6f1f0f57f9416ULL },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        kaddr a;
        uint64_t v[HS_VIRTUAL_NODES];
        kaddr_set_ipv4(&a, t[i].ip, t[i].port);
        hs_virtual_nodes(&a, v);
        assert_int_equal(v[0], t[i].v0);
        assert_int_equal(v[1], t[i].v1);
        assert_int_equal(v[2], t[i].v2);
        assert_int_equal(v[127], t[i].v127);
    }

    /* v[3..7] of 127.0.0.1:19801 and the chaining rule v[1] = H(LE64(v[0])) */
    static const uint64_t more[] = { 0x70556ab1e91f4430ULL, 0x0bb1c41ce821dd80ULL,
        0x80af9979ab7e04b9ULL, 0xe9a78c9fe7b649cfULL, 0xcf689aa1ee4884c3ULL };
    kaddr a = lo(19801);
    uint64_t v[HS_VIRTUAL_NODES];
    hs_virtual_nodes(&a, v);
    for (int i = 0; i < 5; i++)
        assert_int_equal(v[3 + i], more[i]);
    static const uint8_t le_v0[8] = { 0x07, 0xf4, 0xd0, 0x9f, 0x67, 0x4b, 0x66, 0xf3 };
    assert_int_equal(hs_hash(le_v0, 8), v[1]);
    assert_int_equal(hs_hash(a.raw, a.len), v[0]);
}

/* ---- §4.3 slot lists, 3 servers ---- */
static const uint16_t three[] = { 19801, 19802, 19803 };
static const uint16_t four[] = { 19801, 19802, 19803, 19804 };

struct slot_case {
    const char *key;
    uint64_t first;         /* position of the first entry >= H */
    long index;             /* its ring index, -1 = not checked */
    uint16_t slot[3];
};

static void check_slots(const hashspace *hs, const struct slot_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t h = hs_hash(c[i].key, strlen(c[i].key));
        long at = hashspace_find(hs, h);
        const hs_node *out[HS_REPLICAS];
        assert_true(at >= 0);
        assert_int_equal(hs->ring[at].pos, c[i].first);
        if (c[i].index >= 0)
            assert_int_equal(at, c[i].index);
        assert_int_equal(hashspace_assign(hs, h, out), 3);
        for (int s = 0; s < 3; s++)
            assert_int_equal(port_of(out[s]), c[i].slot[s]);
    }
}

static void test_ring_three(void **state)
{
    (void)state;
    hashspace hs;
    build(&hs, three, 3);
    assert_int_equal(hs.nring, 384);
    assert_int_equal(hs.ring[0].pos, 0x002de3615913c491ULL);
    assert_int_equal(port_of(&hs.nodes[hs.ring[0].node]), 19803);
    assert_int_equal(hs.ring[383].pos, 0xffd729e89e68db17ULL);
    assert_int_equal(port_of(&hs.nodes[hs.ring[383].node]), 19803);
    for (size_t i = 1; i < hs.nring; i++)
        assert_true(hs.ring[i - 1].pos <= hs.ring[i].pos);

    static const struct slot_case c[] = {
        { "the-key", 0xbfffdaf805e30884ULL, -1, { 19801, 19802, 19803 } },
        { "foo",     0xdb13b14494a7a5a3ULL, -1, { 19803, 19802, 19801 } },
        { "hello",   0xa2f375d00a46ab8aULL, -1, { 19801, 19802, 19803 } },
        { "k5470",   0x002de3615913c491ULL, 0,  { 19803, 19801, 19802 } },  /* wraps */
        { "abc",     0, -1, { 19802, 19801, 19803 } },                       /* tools.md §5 */
        { "somekey", 0, -1, { 19801, 19803, 19802 } },                       /* reference */
    };
    check_slots(&hs, c, 4);
    /* the tools examples, without the entry check */
    for (size_t i = 4; i < 6; i++) {
        const hs_node *out[HS_REPLICAS];
        uint64_t h = hs_hash(c[i].key, strlen(c[i].key));
        assert_int_equal(hashspace_assign(&hs, h, out), 3);
        for (int s = 0; s < 3; s++)
            assert_int_equal(port_of(out[s]), c[i].slot[s]);
    }
    /* reference-outputs.md: first ten dump lines of the 3-server cluster */
    static const struct { uint64_t pos; uint16_t port; } head[] = {
        { 0x002de3615913c491ULL, 19803 }, { 0x0057531ae7b3e2c3ULL, 19803 },
        { 0x008942e799e75fc0ULL, 19801 }, { 0x0098fac4335173bdULL, 19803 },
        { 0x01a1fb25585721f3ULL, 19803 }, { 0x01bed6f47a345df2ULL, 19803 },
        { 0x023be175e0cec19cULL, 19803 }, { 0x0261de6745e162c3ULL, 19801 },
        { 0x03175f9f57d0de27ULL, 19802 }, { 0x03765851bf7a3af3ULL, 19803 },
    };
    for (size_t i = 0; i < 10; i++) {
        assert_int_equal(hs.ring[i].pos, head[i].pos);
        assert_int_equal(port_of(&hs.nodes[hs.ring[i].node]), head[i].port);
    }
    hashspace_destroy(&hs);
}

/* ---- §4.3 slot lists, 4 servers ---- */
static void test_ring_four(void **state)
{
    (void)state;
    hashspace hs;
    build(&hs, four, 4);
    assert_int_equal(hs.nring, 512);
    static const struct slot_case c[] = {
        { "the-key", 0xbfffdaf805e30884ULL, 386, { 19801, 19804, 19802 } },
        { "foo",     0xdb13b14494a7a5a3ULL, 439, { 19803, 19802, 19801 } },
        { "hello",   0xa2f375d00a46ab8aULL, 332, { 19801, 19802, 19803 } },
        { "key1",    0x1c9fb927b4c7ca97ULL, 49,  { 19802, 19803, 19801 } },
    };
    check_slots(&hs, c, 4);
    hashspace_destroy(&hs);
}

/* ---- §4.3 fault example and §2.4 server_for ---- */
static void test_fault_example(void **state)
{
    (void)state;
    hashspace hs;
    kaddr a1 = lo(19801);
    build(&hs, four, 4);
    assert_true(hashspace_set_active(&hs, &a1, false));
    assert_false(hashspace_set_active(&hs, &a1, false));   /* no change */
    assert_int_equal(hs.nring, 512);                       /* fault nodes stay in the ring */

    uint64_t h = hs_hash("the-key", 7);
    const hs_node *out[HS_REPLICAS];
    assert_int_equal(hashspace_assign(&hs, h, out), 3);
    assert_int_equal(port_of(out[0]), 19801);
    assert_false(out[0]->active);
    assert_int_equal(port_of(out[1]), 19804);
    assert_int_equal(port_of(out[2]), 19802);

    static const struct { unsigned offset; uint16_t port; } t[] = {
        { 0, 19804 }, { 1, 19804 }, { 2, 19802 },
    };
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(port_of(hashspace_server_for(&hs, h, t[i].offset)), t[i].port);

    /* offset 2 with slot 2 fault → slot 2 anyway */
    kaddr a2 = lo(19802);
    hashspace_set_active(&hs, &a2, false);
    assert_int_equal(port_of(hashspace_server_for(&hs, h, 2)), 19802);
    /* all three slots fault → the last examined slot */
    kaddr a4 = lo(19804);
    hashspace_set_active(&hs, &a4, false);
    assert_int_equal(port_of(hashspace_server_for(&hs, h, 0)), 19802);
    assert_false(hashspace_empty(&hs));                    /* :19803 still active */
    hashspace_destroy(&hs);
}

static void test_server_for_short_lists(void **state)
{
    (void)state;
    hashspace hs;
    static const uint16_t two[] = { 19801, 19802 };
    build(&hs, two, 2);
    uint64_t h = hs_hash("the-key", 7);
    const hs_node *out[HS_REPLICAS];
    assert_int_equal(hashspace_assign(&hs, h, out), 2);
    kaddr n0 = out[0]->addr, n1 = out[1]->addr;

    /* offset 0, n0 fault, n1 active → n1 */
    hashspace_set_active(&hs, &n0, false);
    assert_true(kaddr_eq(&hashspace_server_for(&hs, h, 0)->addr, &n1));
    /* offset 1 with n1 fault in a 2-node ring → n0 */
    hashspace_set_active(&hs, &n0, true);
    hashspace_set_active(&hs, &n1, false);
    assert_true(kaddr_eq(&hashspace_server_for(&hs, h, 1)->addr, &n0));
    /* offset 2 beyond a 2-slot list → n0 */
    assert_true(kaddr_eq(&hashspace_server_for(&hs, h, 2)->addr, &n0));
    hashspace_destroy(&hs);

    /* a single server: one slot */
    build(&hs, two, 1);
    assert_int_equal(hashspace_assign(&hs, h, out), 1);
    assert_int_equal(port_of(hashspace_server_for(&hs, h, 1)), 19801);
    hashspace_destroy(&hs);

    /* empty */
    hashspace_init(&hs);
    assert_int_equal(hashspace_find(&hs, h), -1);
    assert_int_equal(hashspace_assign(&hs, h, out), 0);
    assert_null(hashspace_server_for(&hs, h, 0));
    assert_true(hashspace_empty(&hs));
    hashspace_destroy(&hs);
}

static void test_find_bounds(void **state)
{
    (void)state;
    hashspace hs;
    build(&hs, three, 3);
    static const struct { uint64_t h; long want; } t[] = {
        { 0, 0 },
        { 0x002de3615913c491ULL, 0 },         /* exact hit is a lower bound */
        { 0x002de3615913c492ULL, 1 },
        { 0xffd729e89e68db17ULL, 383 },
        { 0xffd729e89e68db18ULL, 0 },         /* past the largest: wrap */
        { UINT64_MAX, 0 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        assert_int_equal(hashspace_find(&hs, t[i].h), t[i].want);
    hashspace_destroy(&hs);
}

/* Membership edits keep the ring identical to a fresh build of the same list. */
static void assert_same_ring(const hashspace *a, const hashspace *b)
{
    assert_true(hashspace_nodes_equal(a, b));
    assert_int_equal(a->nring, b->nring);
    for (size_t i = 0; i < a->nring; i++) {
        assert_int_equal(a->ring[i].pos, b->ring[i].pos);
        assert_int_equal(a->ring[i].node, b->ring[i].node);
    }
}

static void test_membership_edits(void **state)
{
    (void)state;
    hashspace hs, ref, cp;
    kaddr a1 = lo(19801), a2 = lo(19802), a4 = lo(19804), a9 = lo(19809);

    build(&hs, four, 4);
    assert_int_equal(hashspace_index(&hs, &a4), 3);
    assert_int_equal(hashspace_index(&hs, &a9), -1);
    assert_true(hashspace_remove_node(&hs, &a4));
    assert_false(hashspace_remove_node(&hs, &a4));
    build(&ref, three, 3);
    assert_same_ring(&hs, &ref);
    hashspace_destroy(&ref);

    /* remove the first node: indices shift, positions stay sorted */
    assert_true(hashspace_remove_node(&hs, &a1));
    static const uint16_t two3[] = { 19802, 19803 };
    build(&ref, two3, 2);
    assert_same_ring(&hs, &ref);
    hashspace_destroy(&ref);

    /* detach of fault nodes */
    hashspace_add_node(&hs, &a4, true);
    hashspace_set_active(&hs, &a2, false);
    assert_false(hashspace_is_active(&hs, &a2));
    assert_true(hashspace_is_active(&hs, &a4));
    assert_true(hashspace_remove_fault_nodes(&hs));
    assert_false(hashspace_remove_fault_nodes(&hs));
    static const uint16_t three4[] = { 19803, 19804 };
    build(&ref, three4, 2);
    assert_same_ring(&hs, &ref);

    /* flags take part in equality, timestamps do not */
    hashspace_init(&cp);
    hashspace_copy(&cp, &hs);
    cp.clocktime = 42;
    assert_same_ring(&cp, &hs);
    hashspace_set_active(&cp, &a4, false);
    assert_false(hashspace_nodes_equal(&cp, &hs));
    hashspace_swap(&cp, &hs);
    assert_int_equal(hs.clocktime, 42);
    assert_false(hashspace_is_active(&hs, &a4));

    /* node order matters */
    static const uint16_t rev[] = { 19804, 19803 };
    hashspace_destroy(&ref);
    build(&ref, rev, 2);
    assert_false(hashspace_nodes_equal(&ref, &cp));

    /* clear keeps the object usable */
    hashspace_clear(&hs);
    assert_int_equal(hs.nnodes, 0);
    assert_int_equal(hs.nring, 0);
    assert_int_equal(hs.clocktime, 0);
    assert_int_equal(hashspace_find(&hs, 5), -1);
    hashspace_add_node(&hs, &a1, true);
    assert_int_equal(hs.nring, 128);

    /* all-fault space is empty */
    hashspace_set_active(&hs, &a1, false);
    assert_true(hashspace_empty(&hs));

    hashspace_destroy(&hs);
    hashspace_destroy(&ref);
    hashspace_destroy(&cp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_hashes),
        cmocka_unit_test(test_virtual_nodes),
        cmocka_unit_test(test_ring_three),
        cmocka_unit_test(test_ring_four),
        cmocka_unit_test(test_fault_example),
        cmocka_unit_test(test_server_for_short_lists),
        cmocka_unit_test(test_find_bounds),
        cmocka_unit_test(test_membership_edits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
