/* test_nbuf.c - the connections' byte buffer (src/net/nbuf.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "net/nbuf.h"

static void test_append_consume_rewind(void **state)
{
    (void)state;
    nbuf b = {0};
    nbuf_append(&b, "hello ", 6);
    nbuf_append(&b, "world", 5);
    nbuf_append(&b, NULL, 0);
    assert_int_equal(nbuf_pending(&b), 11);
    nbuf_consume(&b, 6);
    assert_int_equal(nbuf_pending(&b), 5);
    assert_memory_equal(nbuf_head(&b), "world", 5);
    nbuf_consume(&b, 5);                       /* all consumed: rewound */
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    nbuf_destroy(&b);
}

/* a partly consumed buffer moves its rest to the front before it grows */
static void test_grow_compacts_first(void **state)
{
    (void)state;
    nbuf b = {0};
    char chunk[200];
    memset(chunk, 'a', sizeof chunk);
    nbuf_append(&b, chunk, sizeof chunk);
    size_t cap = b.cap;
    nbuf_consume(&b, 150);
    nbuf_reserve(&b, cap - 60);                /* fits once the consumed part is gone */
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.off, 0);
    assert_int_equal(nbuf_pending(&b), 50);
    assert_memory_equal(nbuf_head(&b), chunk, 50);
    nbuf_reserve(&b, 10 * cap);                /* must grow */
    assert_true(b.cap - b.len >= 10 * cap);
    assert_memory_equal(nbuf_head(&b), chunk, 50);
    nbuf_destroy(&b);
}

/* one burst does not pin its memory: clear and shrink give it back */
static void test_large_capacity_is_released(void **state)
{
    (void)state;
    nbuf b = {0};
    static char big[NBUF_KEEP_CAP + 1];
    nbuf_append(&b, big, sizeof big);
    nbuf_clear(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    nbuf_append(&b, big, 5000);
    nbuf_consume(&b, 4990);
    nbuf_shrink(&b, 1024);
    assert_int_equal(b.cap, 1024);
    assert_int_equal(nbuf_pending(&b), 10);
    nbuf_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_consume_rewind),
        cmocka_unit_test(test_grow_compacts_first),
        cmocka_unit_test(test_large_capacity_is_released),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
