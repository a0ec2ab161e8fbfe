/* clocktime.c - the logical clock and the kumofs ClockTime order (algorithms.md §2). */
#include "logic/clocktime.h"

#include <time.h>

/* Below this a clock is "just wrapped"; above CLOCK_HIGH it is "about to wrap". */
#define CLOCK_LOW  (1u << 10)
#define CLOCK_HIGH (1u << 22)

bool clock_less(uint32_t a, uint32_t b)
{
    /* algorithms.md §2: a tiny value against a huge one means the tiny side wrapped,
     * so it is the newer one */
    if ((a < CLOCK_LOW && b > CLOCK_HIGH) || (b < CLOCK_LOW && a > CLOCK_HIGH))
        return a > b;
    return a < b;
}

bool clocktime_less(clocktime_t x, clocktime_t y)
{
    uint32_t xt = clocktime_sec(x), yt = clocktime_sec(y);
    int32_t d = (int32_t)(xt - yt);
    /* within the time error margin the logical clocks decide, otherwise wall seconds */
    if (d > -CLOCKTIME_TIME_ERROR_MARGIN && d < CLOCKTIME_TIME_ERROR_MARGIN)
        return clock_less(clocktime_clock(x), clocktime_clock(y));
    return xt < yt;
}

clocktime_t clocktime_sub_sec(clocktime_t ct, uint32_t s)
{
    return ct - ((uint64_t)s << 32);
}

void kclock_init(kclock *c)
{
    c->counter = 0;
    kclock_update_time(c);
}

void kclock_update_time(kclock *c)
{
    c->now_sec = (uint32_t)time(NULL);
}

uint32_t kclock_incr(kclock *c)
{
    return c->counter++;
}

void kclock_merge(kclock *c, uint32_t other)
{
    /* exactly `other`, not other + 1 (algorithms.md §2) */
    if (clock_less(c->counter, other))
        c->counter = other;
}

clocktime_t kclock_now(const kclock *c)
{
    return clocktime_make(c->now_sec, c->counter);
}

clocktime_t kclock_event(kclock *c)
{
    return clocktime_make(c->now_sec, kclock_incr(c));
}

clocktime_t kclock_event_after(kclock *c, clocktime_t seen)
{
    uint32_t seen_sec = clocktime_sec(seen);
    uint32_t sec = c->now_sec;

    /* If our wall clock lags `seen`, borrow its seconds: with equal seconds the clock
     * part decides, which we control.  If we are ahead by less than the margin the clock
     * part decides as well; only if we are ahead by >= 5 s do seconds alone suffice, and
     * a larger clock does no harm there either. */
    if ((int32_t)(seen_sec - sec) > 0)
        sec = seen_sec;
    /* clock_less(x, x + 1) holds for every x, including the 2^32 wrap */
    if (!clock_less(clocktime_clock(seen), c->counter))
        c->counter = clocktime_clock(seen) + 1;
    return clocktime_make(sec, kclock_incr(c));
}

double monotonic_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
