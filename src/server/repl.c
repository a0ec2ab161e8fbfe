/* repl.c - the replication tracker's transitions; repl.h has the table and the diagram. */
#include "server/repl.h"

#include <assert.h>
#include <string.h>

#include "logic/log.h"

void repl_init(repl_machine *m, const repl_env *env, void *ud, clocktime_t ct,
               unsigned retry_limit, bool async)
{
    memset(m, 0, sizeof(*m));
    m->env = env;
    m->ud = ud;
    m->ct = ct;
    m->retry_limit = retry_limit;
    m->state = async ? REPL_OP_ASYNC : REPL_OP_ROUND;
}

unsigned repl_add_target(repl_machine *m, bool by_rhs)
{
    assert(m->ntargets < REPL_MAX_TARGETS && "repl_add_target: too many targets");
    m->t[m->ntargets] = (repl_target){ .state = REPL_T_SENT, .by_rhs = by_rhs };
    return m->ntargets++;
}

static bool in_flight(repl_target_state s)
{
    return s == REPL_T_SENT || s == REPL_T_ASK_VERSION || s == REPL_T_ASK_GET;
}

/* A new round: every target gets the write (again).  All are SENT before the first
 * send, so the round cannot look finished while it is being sent. */
static void send_all(repl_machine *m)
{
    for (unsigned i = 0; i < m->ntargets; i++) {
        m->t[i].state = REPL_T_SENT;
        m->t[i].seen = 0;
    }
    for (unsigned i = 0; i < m->ntargets; i++)
        m->env->send(m->ud, i);
}

repl_op_state repl_start(repl_machine *m)
{
    assert(m->ntargets > 0 && "repl_start: a write without targets is answered by its owner");
    if (m->state == REPL_OP_ASYNC)
        m->env->answer(m->ud, REPL_ANSWER_OK);
    send_all(m);
    return m->state;
}

/* The client's answer at the end of the op. */
static void finish(repl_machine *m, repl_answer a)
{
    m->state = REPL_OP_DONE;
    m->env->answer(m->ud, a);
}

/* A W replica failed for good: the client hears nil now, unless already answered (the
 * local copy keeps the new version: the "indefinite" outcome of §5.3; the gateway
 * retries).  The round still runs to its end so the op can be released. */
static void fail_early(repl_machine *m, repl_answer a)
{
    if (m->state != REPL_OP_ROUND)
        return;
    m->state = REPL_OP_FAILED;
    m->env->answer(m->ud, a);
}

/* t told the version it holds for the key. */
static void learn_version(repl_machine *m, repl_target *t, const repl_event *ev)
{
    if (!ev->absent && ev->version == m->ct) {
        t->state = REPL_T_ACKED;              /* it has our write (e.g. a retried send) */
    } else {
        t->state = REPL_T_NEWER;
        t->seen = ev->absent ? m->ct : ev->version;
    }
}

/* May t's Replicate* be sent again after a timeout or an error?  Counts the retry. */
static bool take_retry(repl_machine *m, const repl_target *t, const repl_event *ev)
{
    unsigned *retry = t->by_rhs ? &m->r_retry : &m->w_retry;
    if (!ev->session_ok || *retry > m->retry_limit || m->env->stopping(m->ud))
        return false;
    (*retry)++;
    return true;
}

static void target_failed(repl_machine *m, unsigned i, const repl_event *ev)
{
    repl_target *t = &m->t[i];
    m->env->report_failed(m->ud, i, ev->rpc_err);
    t->state = REPL_T_FAILED;
    if (!t->by_rhs)                           /* an old owner's failure does not fail it */
        fail_early(m, ev->kind == REPL_EV_STORAGE_ERROR ? REPL_ANSWER_STORAGE
                                                        : REPL_ANSWER_NIL);
}

/* Every target of a ROUND is final: answer, or re-stamp and start the next round. */
static void round_end(repl_machine *m)
{
    const repl_env *env = m->env;
    bool lost = false, newer = false;
    clocktime_t seen_max = 0;
    for (unsigned i = 0; i < m->ntargets; i++) {
        const repl_target *t = &m->t[i];
        if (t->state == REPL_T_UNKNOWN && !t->by_rhs)
            lost = true;                      /* the write cannot be known to win there */
        if (t->state == REPL_T_NEWER) {
            if (!newer || clocktime_less(seen_max, t->seen))
                seen_max = t->seen;
            newer = true;
        }
    }
    if (lost) {
        finish(m, REPL_ANSWER_NIL);
        return;
    }
    /* A newer write of the key coordinated here carries the newer value: let it win. */
    if (!newer || env->superseded(m->ud, m->ct)) {
        finish(m, REPL_ANSWER_OK);
        return;
    }
    if (env->stopping(m->ud)) {
        log_info("shutting down: not re-stamping a write (a replica had %llu); answering nil",
                 (unsigned long long)seen_max);
        finish(m, REPL_ANSWER_NIL);
        return;
    }
    if (m->rounds >= REPL_MAX_RESTAMPS) {
        log_warn("a write lost %u re-stamp rounds to newer replica versions; answering nil",
                 m->rounds);
        finish(m, REPL_ANSWER_NIL);
        return;
    }
    /* Checked before anything is stored: the newer version a replica holds may be one
     * the cluster acknowledged after this write's client was given up on. */
    if (!env->restamp_allowed(m->ud, seen_max)) {
        finish(m, REPL_ANSWER_NIL);
        return;
    }
    clocktime_t base = clocktime_less(seen_max, m->ct) ? m->ct : seen_max, ct;
    if (!env->restamp(m->ud, base, &ct)) {
        finish(m, REPL_ANSWER_NIL);
        return;
    }
    m->ct = ct;
    m->rounds++;
    m->w_retry = m->r_retry = 0;
    send_all(m);
}

static void bad_event(const repl_machine *m, unsigned i, const repl_event *ev)
{
    log_error("replication tracker: event %s in target state %s (op %s)",
              repl_event_name(ev->kind), repl_target_state_name(m->t[i].state),
              repl_op_state_name(m->state));
    assert(!"repl_step: event not expected in this state");
}

repl_op_state repl_step(repl_machine *m, unsigned i, const repl_event *ev)
{
    assert(i < m->ntargets && m->state != REPL_OP_DONE && in_flight(m->t[i].state)
           && "repl_step: no call of this target is in flight");
    const repl_env *env = m->env;
    repl_target *t = &m->t[i];

    switch (t->state) {
    case REPL_T_SENT:
        switch (ev->kind) {
        case REPL_EV_STORED:
            if (ev->live)
                m->live = true;
            t->state = REPL_T_ACKED;
            break;
        case REPL_EV_REFUSED:
            /* §5.3 step 9 counts false as stored; we fight a refusal instead (DECISIONS.md
             * §2): learn the replica's version first.  An async write was answered
             * already and is never re-stamped. */
            if (m->state == REPL_OP_ASYNC) {
                t->state = REPL_T_ACKED;
            } else if (ev->session_ok && !env->stopping(m->ud)) {
                t->state = REPL_T_ASK_VERSION;
                env->ask(m->ud, i, REPL_ASK_VERSION);
            } else {
                t->state = REPL_T_UNKNOWN;
            }
            break;
        case REPL_EV_COLLIDED:
            /* Not our retried send although the version is ours: another coordinator
             * stamped the same clocktime for another write of the key, and the replica
             * kept that one.  Re-stamp past it, as past a newer version. */
            if (m->state == REPL_OP_ASYNC) {
                t->state = REPL_T_ACKED;
            } else {
                t->state = REPL_T_NEWER;
                t->seen = m->ct;
            }
            break;
        case REPL_EV_TIMEOUT:
            if (!env->peer_active(m->ud, i)) {
                t->state = REPL_T_GONE;       /* declared fault meanwhile: not needed */
                break;
            }
            /* fall through */
        case REPL_EV_ERROR:
            if (take_retry(m, t, ev)) {
                env->send(m->ud, i);          /* same peer; stays SENT */
                break;
            }
            /* fall through */
        case REPL_EV_STORAGE_ERROR:
            /* a replica's full disk: a retry at once cannot help, the client should
             * hear it now */
            target_failed(m, i, ev);
            break;
        default:
            bad_event(m, i, ev);
            return m->state;
        }
        break;

    case REPL_T_ASK_VERSION:
        switch (ev->kind) {
        case REPL_EV_VERSION:
            learn_version(m, t, ev);
            break;
        case REPL_EV_NO_METHOD:
            /* An original kumo-server has no GetVersion: its Get (a plain client request,
             * answered by rhs owners) shows a live value's version. */
            if (!env->stopping(m->ud)) {
                t->state = REPL_T_ASK_GET;
                env->ask(m->ud, i, REPL_ASK_GET);
                break;
            }
            /* fall through */
        case REPL_EV_NO_VERSION:
            t->state = REPL_T_UNKNOWN;
            break;
        default:
            bad_event(m, i, ev);
            return m->state;
        }
        break;

    case REPL_T_ASK_GET:
        switch (ev->kind) {
        case REPL_EV_VERSION:
            learn_version(m, t, ev);
            break;
        case REPL_EV_NO_VERSION:
        case REPL_EV_NO_METHOD:
            t->state = REPL_T_UNKNOWN;
            break;
        default:
            bad_event(m, i, ev);
            return m->state;
        }
        break;

    default:
        bad_event(m, i, ev);
        return m->state;
    }

    for (unsigned k = 0; k < m->ntargets; k++)
        if (in_flight(m->t[k].state))
            return m->state;
    if (m->state == REPL_OP_ROUND)
        round_end(m);
    else
        m->state = REPL_OP_DONE;              /* ASYNC, FAILED: answered, now drained */
    return m->state;
}

const char *repl_op_state_name(repl_op_state s)
{
    switch (s) {
    case REPL_OP_ROUND: return "ROUND";
    case REPL_OP_ASYNC: return "ASYNC";
    case REPL_OP_FAILED: return "FAILED";
    case REPL_OP_DONE: return "DONE";
    }
    return "?";
}

const char *repl_target_state_name(repl_target_state s)
{
    switch (s) {
    case REPL_T_SENT: return "SENT";
    case REPL_T_ASK_VERSION: return "ASK_VERSION";
    case REPL_T_ASK_GET: return "ASK_GET";
    case REPL_T_ACKED: return "ACKED";
    case REPL_T_NEWER: return "NEWER";
    case REPL_T_UNKNOWN: return "UNKNOWN";
    case REPL_T_GONE: return "GONE";
    case REPL_T_FAILED: return "FAILED";
    }
    return "?";
}

const char *repl_event_name(repl_event_kind k)
{
    switch (k) {
    case REPL_EV_STORED: return "STORED";
    case REPL_EV_REFUSED: return "REFUSED";
    case REPL_EV_COLLIDED: return "COLLIDED";
    case REPL_EV_TIMEOUT: return "TIMEOUT";
    case REPL_EV_ERROR: return "ERROR";
    case REPL_EV_STORAGE_ERROR: return "STORAGE_ERROR";
    case REPL_EV_VERSION: return "VERSION";
    case REPL_EV_NO_VERSION: return "NO_VERSION";
    case REPL_EV_NO_METHOD: return "NO_METHOD";
    }
    return "?";
}
