/* clocktime.h - the logical clock and ClockTime ordering of algorithms.md §2. */
#ifndef KUMO_CLOCKTIME_H
#define KUMO_CLOCKTIME_H

#include <stdbool.h>
#include <stdint.h>

/* ClockTime = (unix_seconds << 32) | clock (wire.md §7.4). */
typedef uint64_t clocktime_t;

#define CLOCKTIME_TIME_ERROR_MARGIN 5   /* seconds within which the clock part decides */

static inline clocktime_t clocktime_make(uint32_t sec, uint32_t clock)
{
    return ((uint64_t)sec << 32) | clock;
}
static inline uint32_t clocktime_sec(clocktime_t ct) { return (uint32_t)(ct >> 32); }
static inline uint32_t clocktime_clock(clocktime_t ct) { return (uint32_t)ct; }

/* Wrap-aware order of two 32-bit clocks. */
bool clock_less(uint32_t a, uint32_t b);

/* kumofs ClockTime "<": clocks decide within 5 s, otherwise seconds.  Not a total order;
 * use exactly this to make the original's keep/replace decisions. */
bool clocktime_less(clocktime_t x, clocktime_t y);

/* ClockTime minus s seconds (subtracts s << 32). */
clocktime_t clocktime_sub_sec(clocktime_t ct, uint32_t s);

/* A process's logical clock (managers and servers).  Not thread-safe by itself;
 * every daemon drives it from its one event loop. */
typedef struct kclock {
    uint32_t counter;    /* starts at 0 */
    uint32_t now_sec;    /* cached unix seconds, refreshed every tick */
} kclock;

void kclock_init(kclock *c);                 /* counter 0, now_sec = time(NULL) */
void kclock_update_time(kclock *c);          /* refresh now_sec from time(NULL) */
uint32_t kclock_incr(kclock *c);             /* return counter, then add 1 */
void kclock_merge(kclock *c, uint32_t other);/* counter := other if counter < other */
clocktime_t kclock_now(const kclock *c);     /* (now_sec << 32) | counter */
clocktime_t kclock_event(kclock *c);         /* (now_sec << 32) | kclock_incr() */

/* A new event time that is strictly newer (clocktime_less) than `seen`, e.g. the version
 * a coordinator already stores for a key (DECISIONS.md §2: never stamp a write at or
 * below a version it has stored).  Advances the clock as needed. */
clocktime_t kclock_event_after(kclock *c, clocktime_t seen);

/* The machine's monotonic clock in seconds (CLOCK_MONOTONIC), for measuring durations
 * off the event loop's thread. */
double monotonic_sec(void);

#endif
