/* test_repl.c - every transition of the replication tracker (src/server/repl.h), driven
 * through a recording environment: what it sends, asks and answers, in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "logic/log.h"
#include "server/repl.h"

#define SEC 1700000000u
#define CT clocktime_make(SEC, 100)       /* the version being replicated */

/* The environment: actions go to log[] as "send 0;ask 1 version;answer ok;...", the
 * questions read the fields below. */
typedef struct fake {
    char log[1024];
    unsigned answers;
    bool stopping;
    bool gone[REPL_MAX_TARGETS];          /* peer_active() says no */
    bool superseded;
    bool forbid_restamp;                  /* restamp_allowed() says no */
    bool local_store_fails;               /* restamp() fails */
    clocktime_t base;                     /* restamp()'s last base */
    clocktime_t seen;                     /* restamp_allowed()'s last seen */
    int failed_err;                       /* report_failed()'s last error */
} fake;

static void note(fake *f, const char *fmt, ...)
{
    size_t n = strlen(f->log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->log + n, sizeof(f->log) - n, fmt, ap);
    va_end(ap);
}

static void f_send(void *ud, unsigned t) { note(ud, "send %u;", t); }
static void f_ask(void *ud, unsigned t, repl_ask what)
{
    note(ud, "ask %u %s;", t, what == REPL_ASK_VERSION ? "version" : "get");
}
static void f_answer(void *ud, repl_answer a)
{
    fake *f = ud;
    f->answers++;
    note(f, "answer %s;", a == REPL_ANSWER_OK ? "ok" : a == REPL_ANSWER_NIL ? "nil" : "storage");
}
static void f_report_failed(void *ud, unsigned t, int rpc_err)
{
    fake *f = ud;
    f->failed_err = rpc_err;
    note(f, "failed %u;", t);
}
static bool f_restamp(void *ud, clocktime_t base, clocktime_t *ct)
{
    fake *f = ud;
    f->base = base;
    note(f, "restamp;");
    if (f->local_store_fails)
        return false;
    *ct = base + 1;
    return true;
}
static bool f_stopping(void *ud) { return ((fake *)ud)->stopping; }
static bool f_peer_active(void *ud, unsigned t) { return !((fake *)ud)->gone[t]; }
static bool f_superseded(void *ud, clocktime_t ct) { (void)ct; return ((fake *)ud)->superseded; }
static bool f_restamp_allowed(void *ud, clocktime_t seen)
{
    fake *f = ud;
    f->seen = seen;
    return !f->forbid_restamp;
}

static const repl_env env = {
    .send = f_send, .ask = f_ask, .answer = f_answer, .report_failed = f_report_failed,
    .restamp = f_restamp, .stopping = f_stopping, .peer_active = f_peer_active,
    .superseded = f_superseded, .restamp_allowed = f_restamp_allowed,
};

/* A write with nr old owners (targets 0..nr-1) then nw write replicas, started; the log
 * is cleared after the start's sends. */
static void start(repl_machine *m, fake *f, unsigned nr, unsigned nw, unsigned retry_limit,
                  bool async)
{
    memset(f, 0, sizeof(*f));
    repl_init(m, &env, f, CT, retry_limit, async);
    for (unsigned i = 0; i < nr; i++)
        repl_add_target(m, true);
    for (unsigned i = 0; i < nw; i++)
        repl_add_target(m, false);
    repl_op_state s = repl_start(m);
    assert_int_equal(s, async ? REPL_OP_ASYNC : REPL_OP_ROUND);
    char want[64] = "";
    if (async)
        strcat(want, "answer ok;");
    for (unsigned i = 0; i < nr + nw; i++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "send %u;", i);
    assert_string_equal(f->log, want);
    f->log[0] = '\0';
}

static repl_op_state ev(repl_machine *m, unsigned t, repl_event_kind k)
{
    repl_event e = { .kind = k, .session_ok = true, .rpc_err = k == REPL_EV_TIMEOUT ? 3 : 0 };
    return repl_step(m, t, &e);
}

static repl_op_state ev_lost(repl_machine *m, unsigned t, repl_event_kind k)
{
    repl_event e = { .kind = k, .session_ok = false, .rpc_err = 2 };
    return repl_step(m, t, &e);
}

static repl_op_state ev_version(repl_machine *m, unsigned t, clocktime_t v)
{
    repl_event e = { .kind = REPL_EV_VERSION, .session_ok = true, .version = v };
    return repl_step(m, t, &e);
}

static repl_op_state ev_absent(repl_machine *m, unsigned t)
{
    repl_event e = { .kind = REPL_EV_VERSION, .session_ok = true, .absent = true };
    return repl_step(m, t, &e);
}

#define assert_state(mach, idx, want) \
    assert_string_equal(repl_target_state_name((mach)->t[idx].state), repl_target_state_name(want))

/* ---- success ---- */

static void test_all_replicas_ack_answers_ok(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 2, false);
    assert_int_equal(ev(&m, 0, REPL_EV_STORED), REPL_OP_ROUND);
    assert_state(&m, 0, REPL_T_ACKED);
    assert_string_equal(f.log, "");            /* the client waits for the last one */
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "answer ok;");
    assert_int_equal(m.ct, CT);
    assert_int_equal(m.rounds, 0);
    assert_false(m.live);
}

static void test_delete_notes_a_live_value_on_any_replica(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 2, false);
    repl_event live = { .kind = REPL_EV_STORED, .session_ok = true, .live = true };
    assert_int_equal(repl_step(&m, 1, &live), REPL_OP_ROUND);
    assert_int_equal(ev(&m, 0, REPL_EV_STORED), REPL_OP_DONE);
    assert_true(m.live);
    assert_string_equal(f.log, "answer ok;");
}

/* ---- refusal: learn the version, re-stamp, retry ---- */

static void test_refusal_learns_version_restamps_and_retries(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 2, false);
    clocktime_t theirs = clocktime_make(SEC, 500);
    assert_int_equal(ev(&m, 0, REPL_EV_REFUSED), REPL_OP_ROUND);
    assert_state(&m, 0, REPL_T_ASK_VERSION);
    assert_string_equal(f.log, "ask 0 version;");
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_ROUND);
    assert_int_equal(ev_version(&m, 0, theirs), REPL_OP_ROUND);
    /* round end: re-stamped past their version and sent to every target again */
    assert_string_equal(f.log, "ask 0 version;restamp;send 0;send 1;");
    assert_int_equal(f.seen, theirs);
    assert_int_equal(f.base, theirs);
    assert_int_equal(m.ct, theirs + 1);
    assert_int_equal(m.rounds, 1);
    assert_state(&m, 0, REPL_T_SENT);
    assert_state(&m, 1, REPL_T_SENT);
    assert_int_equal(f.answers, 0);
    f.log[0] = '\0';
    assert_int_equal(ev(&m, 0, REPL_EV_STORED), REPL_OP_ROUND);
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "answer ok;");
}

static void test_refusal_by_our_own_version_counts_as_stored(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);                 /* e.g. our retried send arrived twice */
    assert_int_equal(ev_version(&m, 0, CT), REPL_OP_DONE);
    assert_string_equal(f.log, "ask 0 version;answer ok;");
}

/* rt07 under load: two coordinators stamped the same clocktime for two writes of a key;
 * the replica kept the other one and answers 2.  Taking that for our own retried send
 * acknowledged a write no replica held (a stale read). */
static void test_collided_version_restamps_past_it(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 2, false);
    assert_int_equal(ev(&m, 0, REPL_EV_COLLIDED), REPL_OP_ROUND);
    assert_state(&m, 0, REPL_T_NEWER);
    assert_string_equal(f.log, "");             /* nothing to ask: it told us */
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_ROUND);
    assert_string_equal(f.log, "restamp;send 0;send 1;");
    assert_int_equal(f.seen, CT);
    assert_int_equal(f.base, CT);
    assert_int_equal(m.ct, CT + 1);
    f.log[0] = '\0';
    ev(&m, 0, REPL_EV_STORED);
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "answer ok;");
}

static void test_collided_version_in_async_mode_is_counted(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, true);
    assert_int_equal(ev(&m, 0, REPL_EV_COLLIDED), REPL_OP_DONE);
    assert_string_equal(f.log, "");
    assert_int_equal(m.rounds, 0);
}

static void test_collided_version_where_restamp_is_not_allowed_answers_nil(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    f.forbid_restamp = true;
    assert_int_equal(ev(&m, 0, REPL_EV_COLLIDED), REPL_OP_DONE);
    assert_string_equal(f.log, "answer nil;");
}

static void test_refusal_by_an_absent_replica_restamps_past_our_version(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);
    assert_int_equal(ev_absent(&m, 0), REPL_OP_ROUND);
    assert_string_equal(f.log, "ask 0 version;restamp;send 0;");
    assert_int_equal(f.seen, CT);
    assert_int_equal(f.base, CT);
}

static void test_restamp_base_is_the_newest_version_seen(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 1, 2, 2, false);
    clocktime_t older = clocktime_make(SEC, 50), a = clocktime_make(SEC, 300),
                b = clocktime_make(SEC, 700);
    for (unsigned t = 0; t < 3; t++)
        ev(&m, t, REPL_EV_REFUSED);
    ev_version(&m, 1, b);
    ev_version(&m, 0, older);                   /* the old owner's counts too */
    assert_int_equal(ev_version(&m, 2, a), REPL_OP_ROUND);
    assert_int_equal(f.seen, b);
    assert_int_equal(f.base, b);
    assert_int_equal(m.ct, b + 1);
}

static void test_restamp_base_is_our_version_when_the_seen_one_is_older(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);
    ev_version(&m, 0, clocktime_make(SEC, 7));
    assert_int_equal(f.base, CT);
    assert_int_equal(m.ct, CT + 1);
}

static void test_old_owner_newer_version_restamps_too(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 1, 1, 2, false);
    ev(&m, 1, REPL_EV_STORED);
    ev(&m, 0, REPL_EV_REFUSED);
    assert_int_equal(ev_version(&m, 0, clocktime_make(SEC, 900)), REPL_OP_ROUND);
    assert_string_equal(f.log, "ask 0 version;restamp;send 0;send 1;");
}

static void test_original_replica_is_asked_with_get(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);
    assert_int_equal(ev(&m, 0, REPL_EV_NO_METHOD), REPL_OP_ROUND);
    assert_state(&m, 0, REPL_T_ASK_GET);
    assert_int_equal(ev_version(&m, 0, clocktime_make(SEC, 400)), REPL_OP_ROUND);
    assert_string_equal(f.log, "ask 0 version;ask 0 get;restamp;send 0;");
}

static void test_get_without_a_version_leaves_it_unknown_and_fails(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);
    ev(&m, 0, REPL_EV_NO_METHOD);
    assert_int_equal(ev(&m, 0, REPL_EV_NO_VERSION), REPL_OP_DONE);   /* nil: a tombstone? */
    assert_state(&m, 0, REPL_T_UNKNOWN);
    assert_string_equal(f.log, "ask 0 version;ask 0 get;answer nil;");
}

static void test_get_version_unknown_while_stopping_is_not_asked_again(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);
    f.stopping = true;
    assert_int_equal(ev(&m, 0, REPL_EV_NO_METHOD), REPL_OP_DONE);
    assert_string_equal(f.log, "ask 0 version;answer nil;");
}

static void test_w_version_unknown_answers_nil(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);
    ev(&m, 1, REPL_EV_REFUSED);
    ev_version(&m, 1, clocktime_make(SEC, 900));     /* NEWER, but ... */
    assert_int_equal(ev(&m, 0, REPL_EV_NO_VERSION), REPL_OP_DONE);
    /* ... an unknown W version wins: no re-stamp */
    assert_string_equal(f.log, "ask 0 version;ask 1 version;answer nil;");
}

static void test_old_owner_version_unknown_does_not_fail(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 1, 1, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);
    ev(&m, 0, REPL_EV_NO_VERSION);
    assert_state(&m, 0, REPL_T_UNKNOWN);
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "ask 0 version;answer ok;");
}

static void test_refusal_on_a_lost_session_is_unknown(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 2, false);
    assert_int_equal(ev_lost(&m, 0, REPL_EV_REFUSED), REPL_OP_ROUND);
    assert_state(&m, 0, REPL_T_UNKNOWN);
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "answer nil;");
}

static void test_refusal_while_stopping_is_unknown(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    f.stopping = true;
    assert_int_equal(ev(&m, 0, REPL_EV_REFUSED), REPL_OP_DONE);
    assert_string_equal(f.log, "answer nil;");
}

/* ---- when the re-stamp is not made ---- */

static void test_refusal_where_restamp_is_not_allowed_answers_nil(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 2, false);
    f.forbid_restamp = true;                 /* hash space changed, too old, or a resync */
    clocktime_t theirs = clocktime_make(SEC, 500);
    ev(&m, 0, REPL_EV_STORED);
    ev(&m, 1, REPL_EV_REFUSED);
    assert_int_equal(ev_version(&m, 1, theirs), REPL_OP_DONE);
    /* nothing stored locally, nothing sent again */
    assert_string_equal(f.log, "ask 1 version;answer nil;");
    assert_int_equal(f.seen, theirs);
    assert_int_equal(m.ct, CT);
}

static void test_superseded_op_answers_ok_without_restamp(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    f.superseded = true;                     /* a newer local stamp of the key exists */
    ev(&m, 0, REPL_EV_REFUSED);
    assert_int_equal(ev_version(&m, 0, clocktime_make(SEC, 500)), REPL_OP_DONE);
    assert_string_equal(f.log, "ask 0 version;answer ok;");
    assert_int_equal(m.rounds, 0);
}

static void test_restamp_local_store_failure_answers_nil(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    f.local_store_fails = true;
    ev(&m, 0, REPL_EV_REFUSED);
    assert_int_equal(ev_version(&m, 0, clocktime_make(SEC, 500)), REPL_OP_DONE);
    assert_string_equal(f.log, "ask 0 version;restamp;answer nil;");
    assert_int_equal(m.ct, CT);
}

static void test_restamp_rounds_exhausted_answers_nil(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    for (unsigned round = 0; round <= REPL_MAX_RESTAMPS; round++) {
        f.log[0] = '\0';
        assert_int_equal(ev(&m, 0, REPL_EV_REFUSED), REPL_OP_ROUND);
        repl_op_state s = ev_version(&m, 0, m.ct + 1000);   /* always newer there */
        if (round < REPL_MAX_RESTAMPS) {
            assert_int_equal(s, REPL_OP_ROUND);
            assert_string_equal(f.log, "ask 0 version;restamp;send 0;");
            assert_int_equal(m.rounds, round + 1);
        } else {
            assert_int_equal(s, REPL_OP_DONE);
            assert_string_equal(f.log, "ask 0 version;answer nil;");
        }
    }
    assert_int_equal(f.answers, 1);
}

static void test_stopping_at_round_end_does_not_restamp(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    ev(&m, 0, REPL_EV_REFUSED);
    f.stopping = true;
    assert_int_equal(ev_version(&m, 0, clocktime_make(SEC, 500)), REPL_OP_DONE);
    assert_string_equal(f.log, "ask 0 version;answer nil;");
}

/* ---- replicas lost, errors, retries ---- */

static void test_replica_lost_mid_round_is_not_waited_for(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 2, false);
    ev(&m, 0, REPL_EV_STORED);
    f.gone[1] = true;                        /* declared fault while its call was out */
    assert_int_equal(ev(&m, 1, REPL_EV_TIMEOUT), REPL_OP_DONE);
    assert_state(&m, 1, REPL_T_GONE);
    assert_string_equal(f.log, "answer ok;");
}

static void test_timeout_of_an_active_replica_is_retried(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 2, false);
    assert_int_equal(ev(&m, 0, REPL_EV_TIMEOUT), REPL_OP_ROUND);
    assert_state(&m, 0, REPL_T_SENT);
    assert_int_equal(ev(&m, 0, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "send 0;answer ok;");
}

static void test_transport_errors_until_retries_exhausted_answer_nil(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 1, false);            /* -S 1: two retries of the W group */
    ev(&m, 0, REPL_EV_ERROR);
    assert_int_equal(m.w_retry, 1);
    ev(&m, 0, REPL_EV_ERROR);
    assert_int_equal(m.w_retry, 2);
    assert_string_equal(f.log, "send 0;send 0;");
    /* the third error fails the write at once, before the other replica answers */
    assert_int_equal(ev(&m, 0, REPL_EV_ERROR), REPL_OP_FAILED);
    assert_state(&m, 0, REPL_T_FAILED);
    assert_string_equal(f.log, "send 0;send 0;failed 0;answer nil;");
    /* the round drains; no second answer */
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_DONE);
    assert_int_equal(f.answers, 1);
}

static void test_retries_are_counted_per_group(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 1, 2, 0, false);            /* limit 0: one retry per group */
    ev(&m, 1, REPL_EV_ERROR);                  /* W: the group's one retry */
    ev(&m, 0, REPL_EV_ERROR);                  /* R: its own counter */
    assert_string_equal(f.log, "send 1;send 0;");
    assert_int_equal(ev(&m, 2, REPL_EV_ERROR), REPL_OP_FAILED);  /* the other W: spent */
    assert_string_equal(f.log, "send 1;send 0;failed 2;answer nil;");
}

static void test_error_on_a_lost_session_is_not_retried(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 5, false);
    assert_int_equal(ev_lost(&m, 0, REPL_EV_ERROR), REPL_OP_DONE);
    assert_string_equal(f.log, "failed 0;answer nil;");
    assert_int_equal(f.failed_err, 2);
}

static void test_error_while_stopping_is_not_retried(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 5, false);
    f.stopping = true;
    assert_int_equal(ev(&m, 0, REPL_EV_TIMEOUT), REPL_OP_DONE);
    assert_string_equal(f.log, "failed 0;answer nil;");
}

static void test_replica_storage_error_answers_it_at_once(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 5, false);
    assert_int_equal(ev(&m, 1, REPL_EV_STORAGE_ERROR), REPL_OP_FAILED);  /* no retry */
    assert_string_equal(f.log, "failed 1;answer storage;");
    assert_int_equal(ev(&m, 0, REPL_EV_STORED), REPL_OP_DONE);
    assert_int_equal(f.answers, 1);
}

static void test_old_owner_failure_does_not_fail_the_write(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 1, 1, 0, false);
    ev(&m, 0, REPL_EV_ERROR);                  /* R: retried once */
    assert_int_equal(ev(&m, 0, REPL_EV_ERROR), REPL_OP_ROUND);
    assert_state(&m, 0, REPL_T_FAILED);
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "send 0;failed 0;answer ok;");
}

static void test_old_owner_storage_error_does_not_fail_the_write(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 1, 1, 0, false);
    assert_int_equal(ev(&m, 0, REPL_EV_STORAGE_ERROR), REPL_OP_ROUND);
    assert_int_equal(ev(&m, 1, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "failed 0;answer ok;");
}

static void test_failed_write_still_learns_a_refusers_version_but_never_restamps(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 2, 0, false);
    ev_lost(&m, 0, REPL_EV_ERROR);             /* nil now */
    assert_int_equal(ev(&m, 1, REPL_EV_REFUSED), REPL_OP_FAILED);
    /* as before the state machine: the GetVersion is still sent ... */
    assert_int_equal(ev_version(&m, 1, clocktime_make(SEC, 900)), REPL_OP_DONE);
    /* ... but the round end neither re-stamps nor answers again */
    assert_string_equal(f.log, "failed 0;answer nil;ask 1 version;");
    assert_int_equal(m.rounds, 0);
}

static void test_retry_counters_restart_after_a_restamp(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 0, 1, 0, false);
    ev(&m, 0, REPL_EV_TIMEOUT);                /* the group's one retry */
    ev(&m, 0, REPL_EV_REFUSED);
    ev_version(&m, 0, clocktime_make(SEC, 500));
    assert_int_equal(m.w_retry, 0);
    ev(&m, 0, REPL_EV_TIMEOUT);                /* retried again in the new round */
    assert_int_equal(ev(&m, 0, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "send 0;ask 0 version;restamp;send 0;send 0;answer ok;");
}

/* ---- async ---- */

static void test_async_answers_first_and_drains(void **state)
{
    (void)state;
    repl_machine m;
    fake f;
    start(&m, &f, 1, 2, 0, true);              /* start() checked "answer ok;" came first */
    /* a refusal is counted, never fought */
    assert_int_equal(ev(&m, 1, REPL_EV_REFUSED), REPL_OP_ASYNC);
    assert_state(&m, 1, REPL_T_ACKED);
    /* errors are still retried, and a final W failure is logged, not answered */
    ev(&m, 2, REPL_EV_ERROR);
    assert_int_equal(ev(&m, 2, REPL_EV_ERROR), REPL_OP_ASYNC);
    assert_int_equal(ev(&m, 0, REPL_EV_STORED), REPL_OP_DONE);
    assert_string_equal(f.log, "send 2;failed 2;");
    assert_int_equal(f.answers, 1);
    assert_int_equal(m.rounds, 0);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(repl_op_state_name(REPL_OP_FAILED), "FAILED");
    assert_string_equal(repl_target_state_name(REPL_T_ASK_GET), "ASK_GET");
    assert_string_equal(repl_event_name(REPL_EV_STORAGE_ERROR), "STORAGE_ERROR");
}

int main(void)
{
    /* the machine's warnings (re-stamp rounds lost) are expected here: keep TAP clean */
    log_open("/dev/null", false, false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_replicas_ack_answers_ok),
        cmocka_unit_test(test_delete_notes_a_live_value_on_any_replica),
        cmocka_unit_test(test_refusal_learns_version_restamps_and_retries),
        cmocka_unit_test(test_refusal_by_our_own_version_counts_as_stored),
        cmocka_unit_test(test_collided_version_restamps_past_it),
        cmocka_unit_test(test_collided_version_in_async_mode_is_counted),
        cmocka_unit_test(test_collided_version_where_restamp_is_not_allowed_answers_nil),
        cmocka_unit_test(test_refusal_by_an_absent_replica_restamps_past_our_version),
        cmocka_unit_test(test_restamp_base_is_the_newest_version_seen),
        cmocka_unit_test(test_restamp_base_is_our_version_when_the_seen_one_is_older),
        cmocka_unit_test(test_old_owner_newer_version_restamps_too),
        cmocka_unit_test(test_original_replica_is_asked_with_get),
        cmocka_unit_test(test_get_without_a_version_leaves_it_unknown_and_fails),
        cmocka_unit_test(test_get_version_unknown_while_stopping_is_not_asked_again),
        cmocka_unit_test(test_w_version_unknown_answers_nil),
        cmocka_unit_test(test_old_owner_version_unknown_does_not_fail),
        cmocka_unit_test(test_refusal_on_a_lost_session_is_unknown),
        cmocka_unit_test(test_refusal_while_stopping_is_unknown),
        cmocka_unit_test(test_refusal_where_restamp_is_not_allowed_answers_nil),
        cmocka_unit_test(test_superseded_op_answers_ok_without_restamp),
        cmocka_unit_test(test_restamp_local_store_failure_answers_nil),
        cmocka_unit_test(test_restamp_rounds_exhausted_answers_nil),
        cmocka_unit_test(test_stopping_at_round_end_does_not_restamp),
        cmocka_unit_test(test_replica_lost_mid_round_is_not_waited_for),
        cmocka_unit_test(test_timeout_of_an_active_replica_is_retried),
        cmocka_unit_test(test_transport_errors_until_retries_exhausted_answer_nil),
        cmocka_unit_test(test_retries_are_counted_per_group),
        cmocka_unit_test(test_error_on_a_lost_session_is_not_retried),
        cmocka_unit_test(test_error_while_stopping_is_not_retried),
        cmocka_unit_test(test_replica_storage_error_answers_it_at_once),
        cmocka_unit_test(test_old_owner_failure_does_not_fail_the_write),
        cmocka_unit_test(test_old_owner_storage_error_does_not_fail_the_write),
        cmocka_unit_test(test_failed_write_still_learns_a_refusers_version_but_never_restamps),
        cmocka_unit_test(test_retry_counters_restart_after_a_restamp),
        cmocka_unit_test(test_async_answers_first_and_drains),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
