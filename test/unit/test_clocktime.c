/* test_clocktime.c - ClockTime packing and order, the logical clock (algorithms.md §2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "logic/clocktime.h"

static void test_packing(void **state)
{
    (void)state;
    /* wire.md §11: time 1262304000, clock 5 */
    clocktime_t ct = clocktime_make(1262304000u, 5);
    assert_int_equal(ct, 0x4b3d3b0000000005ULL);
    assert_int_equal(clocktime_sec(ct), 1262304000u);
    assert_int_equal(clocktime_clock(ct), 5);
    assert_int_equal(clocktime_make(0xffffffffu, 0xffffffffu), UINT64_MAX);
    assert_int_equal(clocktime_sub_sec(ct, 60), clocktime_make(1262304000u - 60, 5));
}

static void test_clock_less(void **state)
{
    (void)state;
    static const struct { uint32_t a, b; bool less; } t[] = {
        { 0, 1, true },
        { 1, 0, false },
        { 5, 5, false },
        { 1000, 2000, true },
        { (1u << 22) + 1, 0, true },          /* b wrapped: b is newer */
        { 0, (1u << 22) + 1, false },
        { 0xffffffffu, 0, true },
        { 0xffffffffu, 1023, true },
        { 0xffffffffu, 1024, false },         /* 1024 is not "just wrapped" */
        { 1023, 0xffffffffu, false },
        { 1u << 22, 0, false },               /* 2^22 is not "about to wrap" */
        { 0, 1u << 22, true },
        { 5000, 1u << 23, true },             /* neither side near the edge */
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        assert_int_equal(clock_less(t[i].a, t[i].b), t[i].less);
}

static void test_clocktime_less(void **state)
{
    (void)state;
    const uint32_t s = 1700000000u;
    static const struct { int dsec; uint32_t cx, cy; bool less; } t[] = {
        /* x = (s + dsec, cx), y = (s, cy) */
        { 0, 1, 2, true },
        { 0, 2, 1, false },
        { 0, 3, 3, false },                   /* equal is not less */
        { 4, 1, 2, true },                    /* 4 s apart: the clock decides */
        { -4, 2, 1, false },
        { 5, 1, 2, false },                   /* 5 s apart: the seconds decide */
        { -5, 2, 1, true },
        { 100, 0, 9, false },
        { -100, 9, 0, true },
        { 0, 0xffffffffu, 3, true },          /* clock wrap inside the window */
        { 3, 0xffffffffu, 3, true },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        clocktime_t x = clocktime_make(s + (uint32_t)t[i].dsec, t[i].cx);
        clocktime_t y = clocktime_make(s, t[i].cy);
        assert_int_equal(clocktime_less(x, y), t[i].less);
    }
    /* the seconds difference is taken mod 2^32 then signed */
    assert_true(clocktime_less(clocktime_make(0xfffffffeu, 9), clocktime_make(1, 1)) == false);
}

static void test_kclock(void **state)
{
    (void)state;
    kclock c;
    kclock_init(&c);
    assert_int_equal(c.counter, 0);
    assert_true(c.now_sec > 1600000000u);

    c.now_sec = 1000;
    assert_int_equal(kclock_incr(&c), 0);     /* returns, then adds */
    assert_int_equal(c.counter, 1);
    assert_int_equal(kclock_now(&c), clocktime_make(1000, 1));
    assert_int_equal(c.counter, 1);           /* now does not tick */
    assert_int_equal(kclock_event(&c), clocktime_make(1000, 1));
    assert_int_equal(c.counter, 2);

    /* merge takes exactly the other value when it is newer, wrap-aware */
    static const struct { uint32_t have, other, want; } t[] = {
        { 2, 10, 10 },
        { 10, 2, 10 },
        { 10, 10, 10 },
        { 0xfffffff0u, 3, 3 },                /* the other side wrapped */
        { 3, 0xfffffff0u, 3 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        c.counter = t[i].have;
        kclock_merge(&c, t[i].other);
        assert_int_equal(c.counter, t[i].want);
    }
}

/* DECISIONS.md §2: a coordinator never stamps at or below a version it has seen. */
static void test_event_after(void **state)
{
    (void)state;
    const uint32_t now = 1700000000u;
    static const struct { int dsec; uint32_t seen_clock; uint32_t counter; } t[] = {
        { 0, 5, 0 },                  /* same second, our clock behind */
        { 0, 5, 5 },                  /* equal clocks */
        { 0, 5, 100 },                /* our clock already ahead */
        { 3, 50, 10 },                /* seen 3 s ahead, clock decides */
        { 100, 7, 1000 },             /* seen far ahead: seconds alone would lose */
        { 100, 0xffffffffu, 2 },      /* ... and its clock about to wrap */
        { -3, 900, 10 },              /* seen 3 s behind, within the window */
        { -100, 900, 10 },            /* seen far behind: anything now is newer */
        { 0, 0xffffffffu, 0xfffffff0u },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        kclock c = { .counter = t[i].counter, .now_sec = now };
        clocktime_t seen = clocktime_make(now + (uint32_t)t[i].dsec, t[i].seen_clock);
        clocktime_t ev = kclock_event_after(&c, seen);
        assert_true(clocktime_less(seen, ev));
        assert_false(clocktime_less(ev, seen));
        /* and the clock moved on: the next event is newer still */
        clocktime_t ev2 = kclock_event_after(&c, ev);
        assert_true(clocktime_less(ev, ev2));
        assert_true(clocktime_less(seen, kclock_event_after(&c, seen)));
    }
    /* nothing seen yet (0) still gives an ordinary event */
    kclock c = { .counter = 7, .now_sec = now };
    assert_int_equal(kclock_event_after(&c, 0), clocktime_make(now, 7));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packing),
        cmocka_unit_test(test_clock_less),
        cmocka_unit_test(test_clocktime_less),
        cmocka_unit_test(test_kclock),
        cmocka_unit_test(test_event_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
