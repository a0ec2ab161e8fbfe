/* test_item.c - the memcached item payload forms (doc/storage-format.md) and the
 * read-modify-write rules shared by gateway and server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "logic/item.h"
#include "logic/proto.h"
#include "logic/record.h"

/* Decode a whole DBValue the way a gateway with this layout does. */
static bool decode_value(const uint8_t *v, size_t len, unsigned layout, item *it)
{
    return item_decode(dbvalue_meta(v), v + DBVALUE_HEADER_LEN, len - DBVALUE_HEADER_LEN,
                       layout, it);
}

/* flags 0, no expiry: the original's raw form, exactly what an original gateway writes */
static void test_plain_item_is_stored_raw(void **state)
{
    (void)state;
    size_t len;
    uint8_t *v = item_value_new(0, 0, 0, "hello", 5, NULL, 0, 0, &len);
    assert_int_equal(len, DBVALUE_HEADER_LEN + 5);
    assert_int_equal(dbvalue_meta(v), ITEM_META_RAW);
    assert_memory_equal(v + DBVALUE_HEADER_LEN, "hello", 5);
    free(v);
}

/* flags or expiry: tagged; and the tag is recognised when an original coordinator zeroed
 * the replica's meta (the 8-extra-bytes corruption of issue 10) */
static void test_tagged_item_survives_zeroed_meta(void **state)
{
    (void)state;
    size_t len;
    uint8_t *v = item_value_new(42, 2000000000u, 0, "abc", 3, NULL, 0, 0, &len);
    assert_int_equal(dbvalue_meta(v), ITEM_META_TAGGED);
    assert_int_equal(len, DBVALUE_HEADER_LEN + ITEM_TAGGED_HEADER_LEN + 3);
    for (int zero = 0; zero < 2; zero++) {
        if (zero)
            be16_put(v + 8, 0);
        item it;
        assert_true(decode_value(v, len, 0, &it));
        assert_int_equal(it.flags, 42);
        assert_int_equal(it.exptime, 2000000000u);
        assert_int_equal(it.len, 3);
        assert_memory_equal(it.data, "abc", 3);
    }
    free(v);
}

/* a flags-0 value that starts with the magic goes tagged, so it is not misread */
static void test_raw_value_never_starts_with_magic(void **state)
{
    (void)state;
    const char data[] = ITEM_MAGIC "xxxxxxxxxx";
    size_t len;
    uint8_t *v = item_value_new(0, 0, 0, data, sizeof data - 1, NULL, 0, 0, &len);
    assert_int_equal(dbvalue_meta(v), ITEM_META_TAGGED);
    item it;
    assert_true(decode_value(v, len, 0, &it));
    assert_int_equal(it.len, sizeof data - 1);
    assert_memory_equal(it.data, data, sizeof data - 1);
    free(v);
    /* split across the two parts of an append */
    v = item_value_new(0, 0, 0, "\xc1k", 2, "cIzz", 4, 0, &len);
    assert_int_equal(dbvalue_meta(v), ITEM_META_TAGGED);
    free(v);
}

/* -E -F gateways: the original's prefixes hold exptime and 16-bit flags */
static void test_raw_layout_with_prefixes(void **state)
{
    (void)state;
    unsigned layout = ITEM_RAW_EXPTIME | ITEM_RAW_FLAGS;
    size_t len;
    uint8_t *v = item_value_new(7, 1900000000u, 0, "d", 1, NULL, 0, layout, &len);
    assert_int_equal(dbvalue_meta(v), ITEM_META_RAW);
    assert_int_equal(len, DBVALUE_HEADER_LEN + 4 + 2 + 1);
    assert_int_equal(be32_get(v + DBVALUE_HEADER_LEN), 1900000000u);
    assert_int_equal(be16_get(v + DBVALUE_HEADER_LEN + 4), 7);
    item it;
    assert_true(decode_value(v, len, layout, &it));
    assert_int_equal(it.flags, 7);
    free(v);
    /* flags above 16 bits do not fit: tagged */
    v = item_value_new(0x10000, 0, 0, "d", 1, NULL, 0, layout, &len);
    assert_int_equal(dbvalue_meta(v), ITEM_META_TAGGED);
    free(v);
    /* ITEM_RAW_NEVER */
    v = item_value_new(0, 0, 0, "d", 1, NULL, 0, ITEM_RAW_NEVER, &len);
    assert_int_equal(dbvalue_meta(v), ITEM_META_TAGGED);
    free(v);
}

/* the first form (meta 1) still reads, whatever its flags */
static void test_v1_form_reads(void **state)
{
    (void)state;
    uint8_t v[DBVALUE_HEADER_LEN + 8 + 2] = {0};
    be16_put(v + 8, ITEM_META_V1);
    memcpy(v + DBVALUE_HEADER_LEN, ITEM_MAGIC, 4);   /* flags that look like the magic */
    be32_put(v + DBVALUE_HEADER_LEN + 4, 0);
    memcpy(v + DBVALUE_HEADER_LEN + 8, "ok", 2);
    item it;
    assert_true(decode_value(v, sizeof v, 0, &it));
    assert_int_equal(it.flags, be32_get((const uint8_t *)ITEM_MAGIC));
    assert_int_equal(it.len, 2);
    assert_false(decode_value(v, DBVALUE_HEADER_LEN + 4, 0, &it));
}

static void test_expiry(void **state)
{
    (void)state;
    item it = { .exptime = 100 };
    assert_true(item_expired(&it, 100));
    assert_false(item_expired(&it, 99));
    it.exptime = 0;
    assert_false(item_expired(&it, 4000000000u));
}

static void test_apply_rules(void **state)
{
    (void)state;
    item cur = { .flags = 5, .exptime = 0, .data = (const uint8_t *)"41", .len = 2 };
    item req = { .flags = 0, .exptime = 0, .data = (const uint8_t *)"x", .len = 1 };
    uint8_t *out;
    size_t len;
    item it;
    assert_int_equal(item_apply(UPDATE_OP_ADD, 0, 0, &cur, 9, &req, 0, &out, &len), UPDATE_NOT_STORED);
    assert_int_equal(item_apply(UPDATE_OP_REPLACE, 0, 0, NULL, 0, &req, 0, &out, &len), UPDATE_NOT_STORED);
    assert_int_equal(item_apply(UPDATE_OP_CAS, 0, 8, &cur, 9, &req, 0, &out, &len), UPDATE_EXISTS);
    assert_int_equal(item_apply(UPDATE_OP_CAS, 0, 8, NULL, 0, &req, 0, &out, &len), UPDATE_NOT_FOUND);
    assert_int_equal(item_apply(UPDATE_OP_INCR, 0, 1, &req, 9, &req, 0, &out, &len), UPDATE_NON_NUMERIC);

    assert_int_equal(item_apply(UPDATE_OP_INCR, 0, 1, &cur, 9, &req, 0, &out, &len), UPDATE_STORED);
    assert_true(decode_value(out, len, 0, &it));
    assert_int_equal(it.flags, 5);                   /* kept */
    assert_int_equal(it.len, 2);
    assert_memory_equal(it.data, "42", 2);
    free(out);

    assert_int_equal(item_apply(UPDATE_OP_DECR, 0, 50, &cur, 9, &req, 0, &out, &len), UPDATE_STORED);
    assert_true(decode_value(out, len, 0, &it));
    assert_memory_equal(it.data, "0", 1);
    free(out);

    assert_int_equal(item_apply(UPDATE_OP_APPEND, 0, 0, &cur, 9, &req, 0, &out, &len), UPDATE_STORED);
    assert_true(decode_value(out, len, 0, &it));
    assert_int_equal(it.len, 3);
    assert_memory_equal(it.data, "41x", 3);
    free(out);

    /* a plain add is stored raw, readable by an original gateway */
    assert_int_equal(item_apply(UPDATE_OP_ADD, 0, 0, NULL, 0, &req, 0, &out, &len), UPDATE_STORED);
    assert_int_equal(dbvalue_meta(out), ITEM_META_RAW);
    assert_int_equal(len, DBVALUE_HEADER_LEN + 1);
    free(out);

    req.exptime = 1234;
    assert_int_equal(item_apply(UPDATE_OP_TOUCH, 0, 0, &cur, 9, &req, 0, &out, &len), UPDATE_STORED);
    assert_true(decode_value(out, len, 0, &it));
    assert_int_equal(it.exptime, 1234);
    assert_int_equal(it.flags, 5);
    free(out);
}

/* touch keeps the CAS (memcached), in the touched form, even under a zeroed meta */
static void test_touch_keeps_cas(void **state)
{
    (void)state;
    item cur = { .flags = 5, .data = (const uint8_t *)"v", .len = 1 };
    item req = { .exptime = 1234 };
    uint8_t *out, *out2;
    size_t len, len2;
    item it;
    assert_int_equal(item_apply(UPDATE_OP_TOUCH, 0, 0, &cur, 77, &req, 0, &out, &len),
                     UPDATE_STORED);
    assert_int_equal(dbvalue_meta(out), ITEM_META_TOUCHED);
    be16_put(out + 8, 0);                            /* an original coordinator's replica */
    assert_true(decode_value(out, len, 0, &it));
    assert_int_equal(it.cas, 77);
    assert_int_equal(item_cas(&it, 99), 77);
    assert_int_equal(it.exptime, 1234);
    assert_int_equal(it.flags, 5);
    assert_int_equal(it.len, 1);
    /* touched again (now at version 99): still the first CAS; cas compares with it */
    assert_int_equal(item_apply(UPDATE_OP_TOUCH, 0, 0, &it, 99, &req, 0, &out2, &len2),
                     UPDATE_STORED);
    item it2;
    assert_true(decode_value(out2, len2, 0, &it2));
    assert_int_equal(it2.cas, 77);
    free(out2);
    item val = { .data = (const uint8_t *)"n", .len = 1 };
    assert_int_equal(item_apply(UPDATE_OP_CAS, 0, 99, &it, 99, &val, 0, &out2, &len2),
                     UPDATE_EXISTS);
    assert_int_equal(item_apply(UPDATE_OP_CAS, 0, 77, &it, 99, &val, 0, &out2, &len2),
                     UPDATE_STORED);
    assert_int_equal(dbvalue_meta(out2), ITEM_META_RAW);   /* a real write: a new CAS */
    free(out2);
    free(out);
    /* a raw value never starts with the touched magic either */
    out = item_value_new(0, 0, 0, "\xc1kcT0123456789abcdef", 20, NULL, 0, 0, &len);
    assert_int_equal(dbvalue_meta(out), ITEM_META_TAGGED);
    free(out);
}

/* incr/decr with UPDATE_FLAG_CREATE make a missing item; UPDATE_FLAG_TTL sets the exptime */
static void test_incr_create_and_ttl(void **state)
{
    (void)state;
    item req = { .flags = 3, .exptime = 500, .data = (const uint8_t *)"10", .len = 2 };
    uint8_t *out;
    size_t len;
    item it;
    assert_int_equal(item_apply(UPDATE_OP_INCR, 0, 1, NULL, 0, &req, 0, &out, &len),
                     UPDATE_NOT_FOUND);
    assert_int_equal(item_apply(UPDATE_OP_INCR, UPDATE_FLAG_CREATE, 1, NULL, 0, &req, 0,
                                &out, &len), UPDATE_CREATED);
    assert_true(decode_value(out, len, 0, &it));
    assert_memory_equal(it.data, "10", 2);           /* the initial value, not incremented */
    assert_int_equal(it.flags, 3);
    assert_int_equal(it.exptime, 500);
    free(out);
    item cur = { .exptime = 100, .data = (const uint8_t *)"7", .len = 1 };
    assert_int_equal(item_apply(UPDATE_OP_DECR, UPDATE_FLAG_TTL, 2, &cur, 5, &req, 0, &out,
                                &len), UPDATE_STORED);
    assert_true(decode_value(out, len, 0, &it));
    assert_memory_equal(it.data, "5", 1);
    assert_int_equal(it.exptime, 500);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_item_is_stored_raw),
        cmocka_unit_test(test_tagged_item_survives_zeroed_meta),
        cmocka_unit_test(test_raw_value_never_starts_with_magic),
        cmocka_unit_test(test_raw_layout_with_prefixes),
        cmocka_unit_test(test_v1_form_reads),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_apply_rules),
        cmocka_unit_test(test_touch_keeps_cas),
        cmocka_unit_test(test_incr_create_and_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
