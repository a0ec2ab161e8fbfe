/* repl.h - the coordinator's replication tracker as a state machine: one replicated write
 * (Set, Delete, a memcached read-modify-write) to the key's other owners, from the first
 * send to the client's answer (algorithms.md §5.3, DECISIONS.md §2,
 * protocol-additions.md §1.3).
 *
 * The machine decides; it does no I/O.  Its owner (dataop.c) sends the RPCs, touches the
 * store and answers the client through a repl_env, and turns each RPC reply into a
 * repl_event for repl_step.  So every transition can be driven by a unit test
 * (test/unit/test_repl.c) without sockets.
 *
 * Each TARGET (one other owner: W = a write-hash-space replica, R = an old owner that
 * gets the write too while a replace runs) has at most one call in flight:
 *
 *   state        event                           condition              -> state   action
 *   -----------  ------------------------------  ---------------------  ---------  ------
 *   SENT         STORED                                                 ACKED      (Delete: note a live value)
 *   SENT         REFUSED                         op ASYNC               ACKED      (§5.3 step 9: false counts)
 *   SENT         REFUSED                         not stopping, session  ASK_VERSION ask GetVersion
 *   SENT         REFUSED                         otherwise              UNKNOWN
 *   SENT         COLLIDED                        op ASYNC               ACKED
 *   SENT         COLLIDED                        otherwise              NEWER      seen = our version
 *   SENT         TIMEOUT                         peer left its hs       GONE
 *   SENT         TIMEOUT, ERROR                  not stopping, session,
 *                                                group retries <= limit SENT       retries++, send again
 *   SENT         TIMEOUT, ERROR, STORAGE_ERROR   otherwise              FAILED     report; W: fail the op
 *   ASK_VERSION  VERSION                         ours                   ACKED
 *   ASK_VERSION  VERSION                         another, or absent     NEWER      remember it
 *   ASK_VERSION  NO_METHOD                       not stopping           ASK_GET    ask Get (an original)
 *   ASK_VERSION  NO_METHOD, NO_VERSION           otherwise              UNKNOWN
 *   ASK_GET      VERSION                         as in ASK_VERSION      ACKED/NEWER
 *   ASK_GET      NO_VERSION, NO_METHOD                                  UNKNOWN
 *
 * ACKED, NEWER, UNKNOWN, GONE and FAILED are final for the round.  "W: fail the op"
 * answers the client nil (a storage error: the storage error) at once: ROUND -> FAILED.
 *
 * The OP (the whole write) moves when its last target of the round becomes final:
 *
 *        start                 start (async: answer ok first)
 *          |                     |
 *          v    W target FAILED  v
 *   +-> ROUND ----------------> ASYNC/FAILED --(all targets final)--> DONE
 *   |      |                         (replies are drained; nothing more is answered)
 *   |      |  all targets final:
 *   |      |   a W target UNKNOWN ........................ answer nil  -> DONE
 *   |      |   no NEWER target, or superseded ............ answer ok   -> DONE
 *   |      |   rounds = REPL_MAX_RESTAMPS, or stopping ... answer nil  -> DONE
 *   |      |   re-stamp not allowed, or local store fails  answer nil  -> DONE
 *   +------+   else RESTAMP: stamp past every version seen, store it, rounds++,
 *              retries = 0, every target SENT again (a new round)
 *
 * R targets never fail the write: their UNKNOWN and FAILED count like ACKED (GONE too,
 * for both groups).  A NEWER target of either group makes the round re-stamp.  The op
 * is DONE once it answered and no call is in flight; its owner then releases it. */
#ifndef KUMO_REPL_H
#define KUMO_REPL_H

#include <stdbool.h>

#include "logic/clocktime.h"

#define REPL_MAX_TARGETS 5      /* 2 write replicas (whs slots but self) + 3 old owners */
#define REPL_MAX_RESTAMPS 3     /* re-stamp rounds before the write answers nil */

typedef enum repl_op_state {
    REPL_OP_ROUND,              /* a round of sends is out; the client waits for its end */
    REPL_OP_ASYNC,              /* the client was answered at start; replies only drain */
    REPL_OP_FAILED,             /* the client was answered nil before the round ended */
    REPL_OP_DONE                /* answered and no call in flight: release the op */
} repl_op_state;

typedef enum repl_target_state {
    REPL_T_SENT,                /* ReplicateSet/Delete in flight (first, retry, re-stamp) */
    REPL_T_ASK_VERSION,         /* it refused: GetVersion in flight */
    REPL_T_ASK_GET,             /* no GetVersion there (an original): Get in flight */
    REPL_T_ACKED,               /* stored, or holds our version (async: refused too) */
    REPL_T_NEWER,               /* holds another version (seen): the round re-stamps */
    REPL_T_UNKNOWN,             /* refused, and its version could not be learnt */
    REPL_T_GONE,                /* timed out after leaving its hash space: not needed */
    REPL_T_FAILED               /* failed for good: retries spent, storage error, stopping */
} repl_target_state;

typedef enum repl_event_kind {
    REPL_EV_STORED,             /* Replicate* answered true (Delete also the integer 1) */
    REPL_EV_REFUSED,            /* Replicate* answered false: it holds a version >= ours */
    REPL_EV_COLLIDED,           /* Replicate* answered 2: it holds ANOTHER write of exactly
                                 * our version (two coordinators stamped the same clocktime) */
    REPL_EV_TIMEOUT,            /* Replicate* got no answer in time */
    REPL_EV_ERROR,              /* Replicate* transport error or error answer */
    REPL_EV_STORAGE_ERROR,      /* Replicate* answered a string error: the replica's disk */
    REPL_EV_VERSION,            /* GetVersion/Get told its version, or that it holds none */
    REPL_EV_NO_VERSION,         /* GetVersion/Get failed or told nothing usable */
    REPL_EV_NO_METHOD           /* GetVersion is unknown there (an original kumo-server) */
} repl_event_kind;

/* One reply, as the owner read it. */
typedef struct repl_event {
    repl_event_kind kind;
    bool session_ok;            /* the reply's session can carry another call */
    bool live;                  /* STORED by a Delete: the replica held a live value */
    bool absent;                /* VERSION: the replica holds nothing for the key */
    clocktime_t version;        /* VERSION: the version it holds (unless absent) */
    int rpc_err;                /* TIMEOUT/ERROR/STORAGE_ERROR: enum rpc_error, for logs */
} repl_event;

typedef enum repl_answer {
    REPL_ANSWER_OK,             /* every W replica has it (or async): the version/result */
    REPL_ANSWER_NIL,            /* indefinite outcome (§5.3): the gateway retries */
    REPL_ANSWER_STORAGE         /* a W replica's store failed: say so (a full disk) */
} repl_answer;

typedef enum repl_ask { REPL_ASK_VERSION, REPL_ASK_GET } repl_ask;

/* What the machine asks of its owner.  ud is repl_machine.ud; t a target index.  The
 * sends must not call back into repl_step before they return (rpc.h's contract). */
typedef struct repl_env {
    /* actions */
    void (*send)(void *ud, unsigned t);                 /* Replicate* of version m->ct */
    void (*ask)(void *ud, unsigned t, repl_ask what);   /* GetVersion or Get of the key */
    void (*answer)(void *ud, repl_answer a);            /* the client's answer; once */
    void (*report_failed)(void *ud, unsigned t, int rpc_err);   /* log, ers/erd binlog */
    /* Stamp the write again, newer than base and than the locally stored version, and
     * store it locally; *ct = the new version.  false: the local store failed. */
    bool (*restamp)(void *ud, clocktime_t base, clocktime_t *ct);
    /* questions */
    bool (*stopping)(void *ud);                         /* the server shuts down */
    bool (*peer_active)(void *ud, unsigned t);          /* still in its group's hash space */
    bool (*superseded)(void *ud, clocktime_t ct);       /* a later write of the key is ours */
    /* May the write still be re-stamped over a replica's version seen (see dataop.c's
     * restamp_allowed)?  Logs why not. */
    bool (*restamp_allowed)(void *ud, clocktime_t seen);
} repl_env;

typedef struct repl_target {
    repl_target_state state;
    bool by_rhs;                /* R group (an old owner), else W */
    clocktime_t seen;           /* NEWER: the version it holds */
} repl_target;

/* One write's tracker: plain data embedded in its owner, changed only by repl.c. */
typedef struct repl_machine {
    const repl_env *env;        /* borrowed for the machine's life */
    void *ud;
    repl_op_state state;
    clocktime_t ct;             /* the version being replicated (changes on re-stamp) */
    unsigned retry_limit;       /* -S / -D: retries per group = limit + 1 */
    unsigned w_retry, r_retry;  /* retries spent this round, one counter per group (§5.3) */
    unsigned rounds;            /* re-stamps done */
    bool live;                  /* Delete: a replica answered true (it held a live value) */
    unsigned ntargets;
    repl_target t[REPL_MAX_TARGETS];
} repl_machine;

/* Prepare m for a write of version ct: no targets yet, state ROUND (ASYNC if async). */
void repl_init(repl_machine *m, const repl_env *env, void *ud, clocktime_t ct,
               unsigned retry_limit, bool async);

/* Add a target (before repl_start); returns its index. */
unsigned repl_add_target(repl_machine *m, bool by_rhs);

/* Answer at once if async, then send to every target (at least one).  Returns the
 * op's state (never DONE). */
repl_op_state repl_start(repl_machine *m);

/* Feed target t's reply to the call it had in flight and run the transitions.  Returns
 * the op's state: DONE means no call is left and the owner must release the op. */
repl_op_state repl_step(repl_machine *m, unsigned t, const repl_event *ev);

/* Names for logs and tests ("ROUND", "ASK_VERSION", "REFUSED"...). */
const char *repl_op_state_name(repl_op_state s);
const char *repl_target_state_name(repl_target_state s);
const char *repl_event_name(repl_event_kind k);

#endif
