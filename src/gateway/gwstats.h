/* gwstats.h - the gateway's memcached statistics, one set for the whole process: both
 * front ends count into it and report it (text `stats`, binary `stat`) in memcached
 * 1.6's field names and order. */
#ifndef KUMO_GWSTATS_H
#define KUMO_GWSTATS_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* What `version` answers on both protocols: memcached-shaped so libmemcached can parse
 * it (DECISIONS.md §3), naming the kumofs release we are compatible with. */
#define GWSTATS_VERSION "1.6.21-kumofs-0.4.13"

struct gateway;

/* Plain counters, bumped directly by the front ends when an outcome is known (noreply
 * requests included).  Single-threaded: the event loop owns them. */
typedef struct gwstats {
    time_t started;
    uint64_t curr_connections, total_connections;    /* across every listener */
    uint64_t cmd_get, cmd_set, cmd_flush, cmd_touch;
    uint64_t get_hits, get_misses, get_expired, get_flushed;
    uint64_t delete_misses, delete_hits;
    uint64_t incr_misses, incr_hits, decr_misses, decr_hits;
    uint64_t cas_misses, cas_hits, cas_badval;
    uint64_t touch_hits, touch_misses;
    uint64_t total_items;
    uint64_t bytes_read, bytes_written;
    uint64_t curr_items;       /* estimate from the servers, see gwstats_start */
    /* private: the curr_items refresher */
    struct ev_loop *loop;
    struct gateway *gw;
    ev_timer refresh;
    ev_tstamp wanted_until;    /* refresh while someone asked for stats lately */
    ev_tstamp refreshed_at;
    bool refreshing;
} gwstats;

/* Zero every counter and note the start time. */
void gwstats_init(gwstats *st);

/* Keep curr_items filled: while clients ask for stats (and for a while after), every few
 * seconds the item count (GetStatus items) of the active read-hash-space servers is
 * summed and divided by the replica count -- an estimate (it counts tombstones, and
 * copies in flight during replace).  gw borrowed until gwstats_stop. */
void gwstats_start(gwstats *st, struct ev_loop *loop, struct gateway *gw);

/* Stop the refresher (before gateway_free). */
void gwstats_stop(gwstats *st);

/* `stats reset`: zero the counters except the connection counts. */
void gwstats_reset(gwstats *st);

/* Called for each general statistic, in memcached 1.6's order; name and value are
 * borrowed until the call returns. */
typedef void (*gwstats_emit_fn)(void *ud, const char *name, const char *value);

/* Report every general statistic through emit (and note that stats are wanted, for the
 * curr_items refresher). */
void gwstats_report(gwstats *st, gwstats_emit_fn emit, void *ud);

#endif
