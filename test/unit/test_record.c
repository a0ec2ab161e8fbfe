/* test_record.c - DBKey layout and the version rules of storage.md §2, §4, §5. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "logic/record.h"

static void test_dbkey(void **state)
{
    (void)state;
    /* hashing.md §4.1: DBKey of "foo" = db0f3feab5c7ee0b 666f6f */
    static const uint8_t want[] = { 0xdb, 0x0f, 0x3f, 0xea, 0xb5, 0xc7, 0xee, 0x0b, 'f', 'o', 'o' };
    uint8_t out[11];
    dbkey_make(out, "foo", 3);
    assert_memory_equal(out, want, sizeof(want));
    assert_int_equal(dbkey_hash(out), 0xdb0f3feab5c7ee0bULL);

    static const uint8_t the_key[8] = { 0xbf, 0xc3, 0x53, 0x80, 0xc4, 0x72, 0xf6, 0xf6 };
    uint8_t k2[8 + 7];
    dbkey_make(k2, "the-key", 7);
    assert_memory_equal(k2, the_key, 8);

    static const uint8_t empty[8] = { 0x0d, 0x4b, 0x6b, 0x5e, 0xee, 0xa3, 0x39, 0xda };
    uint8_t k3[8];
    dbkey_make(k3, "", 0);
    assert_memory_equal(k3, empty, 8);
}

static void test_value_header(void **state)
{
    (void)state;
    uint8_t v[13] = { 0 };
    dbvalue_set_clocktime(v, 0x4b3d3b0000000005ULL);
    static const uint8_t want[8] = { 0x4b, 0x3d, 0x3b, 0x00, 0x00, 0x00, 0x00, 0x05 };
    assert_memory_equal(v, want, 8);
    assert_int_equal(dbvalue_clocktime(v), 0x4b3d3b0000000005ULL);
    v[8] = 0x12; v[9] = 0x34;
    assert_int_equal(dbvalue_meta(v), 0x1234);
    assert_true(dbvalue_is_live(10));
    assert_false(dbvalue_is_live(9));
    assert_false(dbvalue_is_live(TOMBSTONE_LEN));
}

#define T0 1700000000u
/* constant-expression clocktime_make for static tables */
#define CT(sec, clock) (((uint64_t)(sec) << 32) | (uint32_t)(clock))

/* A stored record: `len` bytes whose first 8 (if present) carry ct. */
struct stored { size_t len; clocktime_t ct; bool absent; };

static const uint8_t *mk(const struct stored *s, uint8_t *buf)
{
    uint8_t full[16];
    if (s->absent)
        return NULL;
    memset(full, 0xaa, sizeof(full));
    be64_put(full, s->ct);
    memcpy(buf, full, s->len);
    return buf;
}

static void test_should_replace(void **state)
{
    (void)state;
    static const struct { const char *name; struct stored old; clocktime_t incoming; bool want; } t[] = {
        { "absent",            { 0, 0, true }, CT(T0, 100), true },
        { "7-byte junk",       { 7, CT(T0 + 999, 9), false }, CT(T0, 100), true },
        { "empty value",       { 0, 0, false }, CT(T0, 100), true },
        { "older live",        { 12, CT(T0, 99), false }, CT(T0, 100), true },
        { "equal live",        { 12, CT(T0, 100), false }, CT(T0, 100), false },
        { "newer live",        { 12, CT(T0, 101), false }, CT(T0, 100), false },
        { "older tombstone",   { 8, CT(T0, 50), false }, CT(T0, 100), true },
        { "newer tombstone",   { 8, CT(T0, 150), false }, CT(T0, 100), false },
        { "9-byte tombstone",  { 9, CT(T0, 150), false }, CT(T0, 100), false },
        { "older by seconds",  { 12, CT(T0 - 10, 900), false }, CT(T0, 100), true },
        { "newer by seconds",  { 12, CT(T0 + 10, 1), false }, CT(T0, 100), false },
        { "clock wrap newer",  { 12, CT(T0, 0xfffffff0u), false }, CT(T0, 3), true },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        uint8_t buf[16];
        const uint8_t *old = mk(&t[i].old, buf);
        if (record_should_replace(old, t[i].old.len, t[i].incoming) != t[i].want)
            fail_msg("store-if-newer case '%s'", t[i].name);
    }
}

static void test_cas(void **state)
{
    (void)state;
    static const struct { const char *name; struct stored old; clocktime_t cmp; bool want; } t[] = {
        { "absent",              { 0, 0, true }, 12345, true },
        { "short",               { 5, 0, false }, 0, false },
        { "live equal",          { 14, CT(T0, 77), false }, CT(T0, 77), true },
        { "live differs",        { 14, CT(T0, 77), false }, CT(T0, 78), false },
        { "live older compare",  { 14, CT(T0, 77), false }, CT(T0, 76), false },
        { "tombstone equal",     { 8, CT(T0, 77), false }, CT(T0, 77), true },
        { "tombstone differs",   { 8, CT(T0, 77), false }, 0, false },
        { "only seconds differ", { 14, CT(T0 + 1, 77), false }, CT(T0, 77), false },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        uint8_t buf[16];
        const uint8_t *old = mk(&t[i].old, buf);
        if (record_cas_matches(old, t[i].old.len, t[i].cmp) != t[i].want)
            fail_msg("cas case '%s'", t[i].name);
    }
}

static void test_tombstone_collectable(void **state)
{
    (void)state;
    static const struct { const char *name; struct stored old; clocktime_t entry; bool want; } t[] = {
        { "absent",               { 0, 0, true }, CT(T0, 5), false },
        { "short junk",           { 3, 0, false }, CT(T0, 5), true },
        { "same tombstone",       { 8, CT(T0, 5), false }, CT(T0, 5), true },
        { "older record",         { 12, CT(T0, 4), false }, CT(T0, 5), true },
        { "re-set since (newer)", { 12, CT(T0, 6), false }, CT(T0, 5), false },
        { "newer tombstone",      { 8, CT(T0 + 60, 1), false }, CT(T0, 5), false },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        uint8_t buf[16];
        const uint8_t *old = mk(&t[i].old, buf);
        if (record_tombstone_collectable(old, t[i].old.len, t[i].entry) != t[i].want)
            fail_msg("collectable case '%s'", t[i].name);
    }
}

/* dbkey_stamp hashes a key already in place, as dbkey_make does with a copy */
static void test_dbkey_stamp_matches_make(void **state)
{
    (void)state;
    uint8_t a[8 + 7], b[8 + 7];
    dbkey_make(a, "the-key", 7);
    memcpy(b + 8, "the-key", 7);
    dbkey_stamp(b, 7);
    assert_memory_equal(a, b, sizeof a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dbkey_stamp_matches_make),
        cmocka_unit_test(test_dbkey),
        cmocka_unit_test(test_value_header),
        cmocka_unit_test(test_should_replace),
        cmocka_unit_test(test_cas),
        cmocka_unit_test(test_tombstone_collectable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
