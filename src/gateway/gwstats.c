/* gwstats.c - the gateway's memcached statistics shared by the text and binary front ends. */
#include "gateway/gwstats.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gateway/gateway.h"

#define GWSTATS_REFRESH 5.0        /* seconds between curr_items refreshes */
#define GWSTATS_WANTED 300.0       /* keep refreshing this long after the last stats */

void gwstats_init(gwstats *st)
{
    memset(st, 0, sizeof *st);
    st->started = time(NULL);
}

static void items_done(void *ud, bool ok, uint64_t items)
{
    gwstats *st = ud;
    st->refreshing = false;
    if (ok)
        st->curr_items = items;
}

static void items_refresh(gwstats *st)
{
    if (!st->gw || st->refreshing)
        return;
    st->refreshing = true;
    st->refreshed_at = ev_now(st->loop);
    gateway_count_items(st->gw, items_done, st);
}

static void refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    gwstats *st = w->data;
    /* idle clusters get no status traffic: only while someone reads the stats */
    if (ev_now(loop) < st->wanted_until)
        items_refresh(st);
}

void gwstats_start(gwstats *st, struct ev_loop *loop, struct gateway *gw)
{
    st->loop = loop;
    st->gw = gw;
    ev_timer_init(&st->refresh, refresh_cb, GWSTATS_REFRESH, GWSTATS_REFRESH);
    st->refresh.data = st;
    ev_timer_start(loop, &st->refresh);
}

void gwstats_stop(gwstats *st)
{
    if (st->loop)
        ev_timer_stop(st->loop, &st->refresh);
    st->gw = NULL;     /* a refresh still in flight completes into st, which lives on */
}

void gwstats_reset(gwstats *st)
{
    uint64_t cur = st->curr_connections, tot = st->total_connections;
    uint64_t items = st->curr_items;
    st->cmd_get = st->cmd_set = st->cmd_flush = st->cmd_touch = 0;
    st->get_hits = st->get_misses = st->get_expired = st->get_flushed = 0;
    st->delete_misses = st->delete_hits = 0;
    st->incr_misses = st->incr_hits = st->decr_misses = st->decr_hits = 0;
    st->cas_misses = st->cas_hits = st->cas_badval = 0;
    st->touch_hits = st->touch_misses = 0;
    st->total_items = 0;
    st->bytes_read = st->bytes_written = 0;
    st->curr_connections = cur;     /* gauges, not counters: memcached keeps them too */
    st->total_connections = tot;
    st->curr_items = items;
}

static void emit_u64(gwstats_emit_fn emit, void *ud, const char *name, uint64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    emit(ud, name, tmp);
}

void gwstats_report(gwstats *st, gwstats_emit_fn emit, void *ud)
{
    time_t now = time(NULL);
    if (st->loop) {
        ev_tstamp t = ev_now(st->loop);
        /* the first request after a quiet spell starts the refresher at once */
        if (t >= st->wanted_until || t - st->refreshed_at >= GWSTATS_REFRESH)
            items_refresh(st);
        st->wanted_until = t + GWSTATS_WANTED;
    }
    char tmp[64];
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    getrusage(RUSAGE_SELF, &ru);
    emit_u64(emit, ud, "pid", (uint64_t)getpid());
    emit_u64(emit, ud, "uptime", (uint64_t)(now - st->started));
    emit_u64(emit, ud, "time", (uint64_t)now);
    emit(ud, "version", GWSTATS_VERSION);
    emit_u64(emit, ud, "pointer_size", sizeof(void *) * 8);
    snprintf(tmp, sizeof tmp, "%ld.%06ld", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
    emit(ud, "rusage_user", tmp);
    snprintf(tmp, sizeof tmp, "%ld.%06ld", (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
    emit(ud, "rusage_system", tmp);
    emit_u64(emit, ud, "max_connections", 0);
    emit_u64(emit, ud, "curr_connections", st->curr_connections);
    emit_u64(emit, ud, "total_connections", st->total_connections);
    emit_u64(emit, ud, "connection_structures", st->curr_connections);
    emit_u64(emit, ud, "cmd_get", st->cmd_get);
    emit_u64(emit, ud, "cmd_set", st->cmd_set);
    emit_u64(emit, ud, "cmd_flush", st->cmd_flush);
    emit_u64(emit, ud, "cmd_touch", st->cmd_touch);
    emit_u64(emit, ud, "get_hits", st->get_hits);
    emit_u64(emit, ud, "get_misses", st->get_misses);
    emit_u64(emit, ud, "get_expired", st->get_expired);
    emit_u64(emit, ud, "get_flushed", st->get_flushed);
    emit_u64(emit, ud, "delete_misses", st->delete_misses);
    emit_u64(emit, ud, "delete_hits", st->delete_hits);
    emit_u64(emit, ud, "incr_misses", st->incr_misses);
    emit_u64(emit, ud, "incr_hits", st->incr_hits);
    emit_u64(emit, ud, "decr_misses", st->decr_misses);
    emit_u64(emit, ud, "decr_hits", st->decr_hits);
    emit_u64(emit, ud, "cas_misses", st->cas_misses);
    emit_u64(emit, ud, "cas_hits", st->cas_hits);
    emit_u64(emit, ud, "cas_badval", st->cas_badval);
    emit_u64(emit, ud, "touch_hits", st->touch_hits);
    emit_u64(emit, ud, "touch_misses", st->touch_misses);
    emit_u64(emit, ud, "auth_cmds", 0);
    emit_u64(emit, ud, "auth_errors", 0);
    emit_u64(emit, ud, "bytes_read", st->bytes_read);
    emit_u64(emit, ud, "bytes_written", st->bytes_written);
    emit_u64(emit, ud, "limit_maxbytes", 0);
    emit_u64(emit, ud, "threads", 1);
    emit_u64(emit, ud, "curr_items", st->curr_items);
    emit_u64(emit, ud, "total_items", st->total_items);
    emit_u64(emit, ud, "evictions", 0);
}
