/* dataop.c - Get/Set/Delete on the coordinator and their replication (algorithms.md §5). */
#include "server/dataop.h"

#include <string.h>

#include "logic/kwire.h"
#include "logic/binlog.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"

/* At most 2 write replicas (whs slots other than self) plus 3 read-space replicas. */
#define MAX_TARGETS 5

enum op_kind { OP_KIND_SET, OP_KIND_DELETE };

struct repl_op;

/* One replica of a pending write; the address of this struct is the RPC callback's ud. */
typedef struct repl_target {
    struct repl_op *op;
    kaddr peer;
    bool by_rhs;                 /* R group (flag 0x01) rather than W */
} repl_target;

/* A coordinated Set/Delete whose replication replies are still coming in (§5.3 step 9).
 * Lives until the last callback of its calls has run, which may be after the client was
 * answered (async ops, or a W failure that answered nil early). */
typedef struct repl_op {
    struct repl_op *next_free;   /* pool link */
    size_t cap;                  /* bytes available in data[] */
    server *srv;
    rpc_session *client;         /* referenced while the op lives */
    uint32_t msgid;
    enum op_kind kind;
    clocktime_t ct;              /* the version being replicated */
    unsigned pending;            /* replies still needed before answering */
    unsigned inflight;           /* calls whose callback has not run yet */
    unsigned w_retry, r_retry;   /* one retry counter per group (§5.3) */
    bool replied;
    bool result;                 /* Delete's answer */
    dataop_answer_fn answer;     /* NULL: Set's/Delete's own answers */
    unsigned ntargets;
    repl_target targets[MAX_TARGETS];
    size_t klen, vlen;
    uint8_t data[];              /* key, then value (Set only) */
} repl_op;

/* ---- tracker pool: the hot Set path allocates nothing once warm ---- */

#define POOL_CAP 1024            /* data bytes of pooled trackers */
#define POOL_MAX 256             /* trackers kept on the free list */

static repl_op *pool_head;
static unsigned pool_count;

static repl_op *op_alloc(size_t need)
{
    repl_op *op;
    if (need <= POOL_CAP && pool_head != NULL) {
        op = pool_head;
        pool_head = op->next_free;
        pool_count--;
    } else {
        size_t cap = need <= POOL_CAP ? POOL_CAP : need;
        op = xmalloc(sizeof(*op) + cap);
        op->cap = cap;
    }
    size_t cap = op->cap;
    memset(op, 0, sizeof(*op));
    op->cap = cap;
    return op;
}

static void op_release(repl_op *op)
{
    if (op->client != NULL)
        rpc_session_unref(op->client);
    if (op->cap == POOL_CAP && pool_count < POOL_MAX) {
        op->next_free = pool_head;
        pool_head = op;
        pool_count++;
    } else {
        free(op);
    }
}

void dataop_pool_free(void)
{
    while (pool_head != NULL) {
        repl_op *op = pool_head;
        pool_head = op->next_free;
        free(op);
    }
    pool_count = 0;
}

/* ---- parameter helpers ---- */

static bool get_dbkey(const msgpack_object *o, const char **key, size_t *klen)
{
    /* wire.md §7.5: shorter than the 8-byte hash is a type error */
    return o != NULL && kwire_get_raw(o, key, klen) && *klen >= DBKEY_HASH_LEN;
}

static void reply_raw(rpc_session *s, uint32_t msgid, const void *data, size_t len)
{
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    msgpack_pack_nil(pk);
    kwire_pack_raw(pk, data, len);
    rpc_reply_end(s);
}

/* ---- replica sets (algorithms.md §5.2, hashing.md §2.3) ---- */

static bool plan_has(const kaddr *list, unsigned n, const kaddr *a)
{
    for (unsigned i = 0; i < n; i++)
        if (kaddr_eq(&list[i], a))
            return true;
    return false;
}

/* Coordinator check and W/R computation.  Returns 0, or the error code to answer. */
int dataop_plan_write(server *srv, uint64_t h, dataop_plan *p)
{
    const kaddr *self = &srv->cfg.self;
    const hs_node *slots[HS_REPLICAS];
    p->nw = p->nr = 0;
    if (hashspace_empty(&srv->whs))
        return RPC_SERVER_ERROR;                       /* "server not ready" */
    size_t n = hashspace_assign(&srv->whs, h, slots);
    /* The first active slot must be us; no active slot at all passes (quirk, §2.3). */
    for (size_t i = 0; i < n; i++) {
        if (!slots[i]->active)
            continue;
        if (!kaddr_eq(&slots[i]->addr, self))
            return RPC_SERVER_ERROR;                   /* "obsolete hash space" */
        break;
    }
    for (size_t i = 0; i < n; i++)
        if (slots[i]->active && !kaddr_eq(&slots[i]->addr, self))
            p->w[p->nw++] = slots[i]->addr;
    /* While a replace runs (timestamps differ) the old owners get the write too, so that
     * reads still routed by rhs see it (§8.6). */
    if (srv->whs.clocktime != srv->rhs.clocktime) {
        if (hashspace_empty(&srv->rhs))
            return RPC_SERVER_ERROR;
        n = hashspace_assign(&srv->rhs, h, slots);
        for (size_t i = 0; i < n; i++) {
            const kaddr *a = &slots[i]->addr;
            if (slots[i]->active && !kaddr_eq(a, self) && !plan_has(p->w, p->nw, a))
                p->r[p->nr++] = *a;
        }
    }
    return 0;
}

/* Responsibility check of a replica (Get, GetIfModified, Replicate*). */
static int check_replica(server *srv, const hashspace *hs, uint64_t h)
{
    if (hashspace_empty(hs))
        return RPC_SERVER_ERROR;                       /* "server not ready" */
    if (!server_is_replica(srv, hs, h))
        return RPC_SERVER_ERROR;                       /* "obsolete hash space" */
    return 0;
}

/* ---- replication ---- */

static void repl_callback(rpc_session *s, const rpc_result *r, void *ud);

static void repl_send(repl_target *t)
{
    repl_op *op = t->op;
    server *srv = op->srv;
    rpc_session *s = rpc_node_session(srv->rpc, &t->peer, true);
    uint32_t flags = t->by_rhs ? REPLICATE_FLAG_BY_RHS : 0;
    /* algorithms.md §2: adjust_clock is the clock part of the record's new version */
    msgpack_packer *pk;
    if (op->kind == OP_KIND_SET) {
        pk = rpc_call_begin(s, SRV_REPLICATE_SET, RPC_DEFAULT_TIMEOUT_STEPS, repl_callback, t);
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, clocktime_clock(op->ct));
        msgpack_pack_uint32(pk, flags);
        kwire_pack_raw(pk, op->data, op->klen);
        kwire_pack_raw(pk, op->data + op->klen, op->vlen);
    } else {
        pk = rpc_call_begin(s, SRV_REPLICATE_DELETE, RPC_DEFAULT_TIMEOUT_STEPS, repl_callback, t);
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, clocktime_clock(op->ct));
        msgpack_pack_uint32(pk, flags);
        msgpack_pack_uint64(pk, op->ct);
        kwire_pack_raw(pk, op->data, op->klen);
    }
    rpc_call_end(s);
}

static void op_answer(repl_op *op)
{
    if (op->replied)
        return;
    op->replied = true;
    if (op->answer != NULL)
        op->answer(op->client, op->msgid, true, op->ct, op->data + op->klen, op->vlen);
    else if (op->kind == OP_KIND_SET)
        rpc_reply_u64(op->client, op->msgid, op->ct);
    else
        rpc_reply_bool(op->client, op->msgid, op->result);
}

static void op_count_success(repl_op *op)
{
    if (op->pending > 0 && --op->pending == 0)
        op_answer(op);
}

static void repl_callback(rpc_session *s, const rpc_result *r, void *ud)
{
    repl_target *t = ud;
    repl_op *op = t->op;
    server *srv = op->srv;
    char buf[KADDR_STRLEN];

    if (r->err == RPC_OK) {
        /* true (stored) and false (already newer there) both count (§5.3 step 9) */
        op_count_success(op);
    } else {
        unsigned *retry = t->by_rhs ? &op->r_retry : &op->w_retry;
        unsigned limit = op->kind == OP_KIND_SET ? srv->cfg.set_retry : srv->cfg.delete_retry;
        if (!srv->stopping && s != NULL && !rpc_session_is_lost(s) && *retry <= limit) {
            (*retry)++;
            repl_send(t);                  /* same peer; the call stays in flight */
            return;
        }
        log_error("%s to %s failed: error %d",
                  op->kind == OP_KIND_SET ? "ReplicateSet" : "ReplicateDelete",
                  kaddr_format(&t->peer, buf), r->err);
        /* cli.md §10: ers/erd carry the user key and data, without kumofs headers */
        if (op->klen >= DBKEY_HASH_LEN) {
            const uint8_t *key = op->data;
            uint64_t hash = dbkey_hash(key);
            if (op->kind == OP_KIND_SET && op->vlen >= DBVALUE_HEADER_LEN)
                binlog_replicate_set_failed(key + DBKEY_HASH_LEN, op->klen - DBKEY_HASH_LEN,
                                            key + op->klen + DBVALUE_HEADER_LEN,
                                            op->vlen - DBVALUE_HEADER_LEN, hash, op->ct,
                                            &t->peer);
            else if (op->kind != OP_KIND_SET)
                binlog_replicate_delete_failed(key + DBKEY_HASH_LEN, op->klen - DBKEY_HASH_LEN,
                                               hash, &t->peer);
        }
        if (t->by_rhs) {
            op_count_success(op);          /* an old-owner failure does not fail the write */
        } else if (!op->replied) {
            /* A write replica failed: answer nil; the local copy keeps the new version
             * (the "indefinite" outcome of §5.3) and the gateway retries. */
            op->replied = true;
            if (op->answer != NULL)
                op->answer(op->client, op->msgid, false, op->ct, op->data + op->klen, op->vlen);
            else
                rpc_reply_nil(op->client, op->msgid);
        }
    }
    if (--op->inflight == 0)
        op_release(op);
}

/* Build a tracker for the plan and send to every target.  key/val are copied. */
static void replicate(server *srv, const rpc_request *req, enum op_kind kind, clocktime_t ct,
                      const dataop_plan *p, const void *key, size_t klen,
                      const void *val, size_t vlen, bool async, bool result,
                      dataop_answer_fn answer)
{
    repl_op *op = op_alloc(klen + vlen);
    op->srv = srv;
    op->client = req->session;
    rpc_session_ref(op->client);
    op->msgid = req->msgid;
    op->kind = kind;
    op->ct = ct;
    op->result = result;
    op->answer = answer;
    op->klen = klen;
    op->vlen = vlen;
    memcpy(op->data, key, klen);
    if (vlen > 0)
        memcpy(op->data + klen, val, vlen);
    for (unsigned i = 0; i < p->nr; i++)
        op->targets[op->ntargets++] = (repl_target){ op, p->r[i], true };
    for (unsigned i = 0; i < p->nw; i++)
        op->targets[op->ntargets++] = (repl_target){ op, p->w[i], false };
    /* One extra hold while sending, in case a callback runs before the loop ends. */
    op->inflight = op->ntargets + 1;
    op->pending = async ? 0 : op->ntargets;
    if (async)
        op_answer(op);
    for (unsigned i = 0; i < op->ntargets; i++)
        repl_send(&op->targets[i]);
    if (--op->inflight == 0)
        op_release(op);
}

void dataop_replicate_value(server *srv, const rpc_request *req, clocktime_t ct,
                            const dataop_plan *p, const void *key, size_t klen,
                            const void *val, size_t vlen, bool async, dataop_answer_fn answer)
{
    if (p->nw + p->nr == 0) {
        answer(req->session, req->msgid, true, ct, val, vlen);
        return;
    }
    replicate(srv, req, OP_KIND_SET, ct, p, key, klen, val, vlen, async, false, answer);
}

/* A new version for key, strictly newer than whatever we store (DECISIONS.md §2). */
static clocktime_t next_version(server *srv, bool have_stored, clocktime_t stored)
{
    return have_stored ? kclock_event_after(&srv->clock, stored) : kclock_event(&srv->clock);
}

/* ---- handlers ---- */

void dataop_set(server *srv, const rpc_request *req)
{
    uint32_t opcode;
    const char *key, *cval;
    size_t klen, vlen;
    const msgpack_object *o = kwire_array_at(req->params, 2);
    if (req->cluster || o == NULL
        || !server_arg_u32(req, 0, &opcode)
        || !get_dbkey(kwire_array_at(req->params, 1), &key, &klen)
        || !kwire_get_raw(o, &cval, &vlen) || vlen < DBVALUE_HEADER_LEN
        || (opcode != SET_OP_SET && opcode != SET_OP_SET_ASYNC && opcode != SET_OP_CAS)) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    dataop_plan plan;
    int err = dataop_plan_write(srv, dbkey_hash(key), &plan);
    if (err != 0) {
        rpc_reply_error(req->session, req->msgid, err);
        return;
    }
    /* The value buffer belongs to this request until we return; stamping the version in
     * place saves a copy on the hot path (wire.md §7.6: the server overwrites it). */
    uint8_t *val = (uint8_t *)(uintptr_t)cval;
    clocktime_t compare = dbvalue_clocktime(val);
    clocktime_t stored;
    bool have = store_get_clocktime(srv->st, key, klen, &stored);
    clocktime_t ct = next_version(srv, have, stored);
    dbvalue_set_clocktime(val, ct);

    if (opcode == SET_OP_CAS) {
        if (!store_cas(srv->st, key, klen, val, vlen, compare)) {
            rpc_reply_bool(req->session, req->msgid, false);   /* EXISTS; nothing replicated */
            return;
        }
    } else if (!store_put(srv->st, key, klen, val, vlen)) {
        rpc_reply_error(req->session, req->msgid, RPC_SERVER_ERROR);
        return;
    }
    srv->cmd_set++;
    if (plan.nw + plan.nr == 0) {
        rpc_reply_u64(req->session, req->msgid, ct);
        return;
    }
    replicate(srv, req, OP_KIND_SET, ct, &plan, key, klen, val, vlen,
              opcode == SET_OP_SET_ASYNC, false, NULL);
}

void dataop_delete(server *srv, const rpc_request *req)
{
    uint32_t flags;
    const char *key;
    size_t klen;
    if (req->cluster
        || !server_arg_u32(req, 0, &flags)
        || !get_dbkey(kwire_array_at(req->params, 1), &key, &klen)) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    dataop_plan plan;
    int err = dataop_plan_write(srv, dbkey_hash(key), &plan);
    if (err != 0) {
        rpc_reply_error(req->session, req->msgid, err);
        return;
    }
    /* DECISIONS.md §3: the answer says whether a live value existed before. */
    size_t oldlen = 0;
    uint8_t *old = store_get(srv->st, key, klen, &oldlen);
    bool had_live = old != NULL && dbvalue_is_live(oldlen);
    bool have = old != NULL && oldlen >= TOMBSTONE_LEN;
    clocktime_t ct = next_version(srv, have, have ? dbvalue_clocktime(old) : 0);
    free(old);

    /* The tombstone is written and replicated even for an absent key, so replicas that
     * still hold an old value drop it. */
    if (!store_remove(srv->st, key, klen, ct)) {
        /* storage failure (§5.4 step 3: "not deleted") */
        if (plan.nr == 0) {
            rpc_reply_bool(req->session, req->msgid, false);
            return;
        }
        plan.nw = 0;
    }
    srv->cmd_delete++;
    if (plan.nw + plan.nr == 0) {
        rpc_reply_bool(req->session, req->msgid, had_live);
        return;
    }
    replicate(srv, req, OP_KIND_DELETE, ct, &plan, key, klen, NULL, 0,
              (flags & STORE_FLAG_ASYNC) != 0, had_live, NULL);
}

void dataop_get(server *srv, const rpc_request *req)
{
    const char *key;
    size_t klen;
    if (req->cluster || !get_dbkey(kwire_array_at(req->params, 0), &key, &klen)) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    int err = check_replica(srv, &srv->rhs, dbkey_hash(key));
    if (err != 0) {
        rpc_reply_error(req->session, req->msgid, err);
        return;
    }
    srv->cmd_get++;
    size_t vlen = 0;
    void *v = store_get(srv->st, key, klen, &vlen);
    if (v != NULL && dbvalue_is_live(vlen))
        reply_raw(req->session, req->msgid, v, vlen);
    else
        rpc_reply_nil(req->session, req->msgid);      /* absent or tombstone */
    free(v);
}

void dataop_get_if_modified(server *srv, const rpc_request *req)
{
    const char *key;
    size_t klen;
    uint64_t if_time;
    if (req->cluster || !get_dbkey(kwire_array_at(req->params, 0), &key, &klen)
        || !server_arg_u64(req, 1, &if_time)) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    int err = check_replica(srv, &srv->rhs, dbkey_hash(key));
    if (err != 0) {
        rpc_reply_error(req->session, req->msgid, err);
        return;
    }
    size_t vlen = 0;
    void *v = store_get(srv->st, key, klen, &vlen);
    /* storage.md §4.5: still valid iff stored clocktime <= the caller's */
    if (v != NULL && vlen >= TOMBSTONE_LEN && !clocktime_less(if_time, dbvalue_clocktime(v))) {
        rpc_reply_bool(req->session, req->msgid, true);
    } else {
        srv->cmd_get++;
        if (v != NULL && dbvalue_is_live(vlen))
            reply_raw(req->session, req->msgid, v, vlen);
        else
            rpc_reply_nil(req->session, req->msgid);
    }
    free(v);
}

/* Common head of ReplicateSet/ReplicateDelete: params 0 and 1, responsibility, clock. */
static bool replica_head(server *srv, const rpc_request *req, const char *key)
{
    uint32_t adjust = 0, flags = 0;
    server_arg_u32(req, 0, &adjust);
    server_arg_u32(req, 1, &flags);
    const hashspace *hs = (flags & REPLICATE_FLAG_BY_RHS) ? &srv->rhs : &srv->whs;
    int err = check_replica(srv, hs, dbkey_hash(key));
    if (err != 0) {
        rpc_reply_error(req->session, req->msgid, err);
        return false;
    }
    kclock_merge(&srv->clock, adjust);
    return true;
}

static bool head_types_ok(const rpc_request *req)
{
    uint32_t u;
    return req->cluster && server_arg_u32(req, 0, &u)
        && server_arg_u32(req, 1, &u);
}

void dataop_replicate_set(server *srv, const rpc_request *req)
{
    const char *key, *val;
    size_t klen, vlen;
    const msgpack_object *o = kwire_array_at(req->params, 3);
    if (!head_types_ok(req) || !get_dbkey(kwire_array_at(req->params, 2), &key, &klen)
        || o == NULL || !kwire_get_raw(o, &val, &vlen) || vlen < DBVALUE_HEADER_LEN) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    if (!replica_head(srv, req, key))
        return;
    rpc_reply_bool(req->session, req->msgid, store_update(srv->st, key, klen, val, vlen));
}

void dataop_replicate_delete(server *srv, const rpc_request *req)
{
    const char *key;
    size_t klen;
    uint64_t ct;
    if (!head_types_ok(req) || !server_arg_u64(req, 2, &ct)
        || !get_dbkey(kwire_array_at(req->params, 3), &key, &klen)) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    if (!replica_head(srv, req, key))
        return;
    rpc_reply_bool(req->session, req->msgid, store_remove(srv->st, key, klen, ct));
}
