/* dataop.c - Get/Set/Delete on the coordinator and their replication (algorithms.md §5). */
#include "server/dataop.h"

#include <errno.h>
#include <string.h>

#include "logic/kwire.h"
#include "logic/binlog.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"
#include "server/repl.h"
#include "server/rmwop.h"

/* Last version this server stamped as coordinator, per key hash (a direct-mapped cache).
 * A replica's refusal is only fought when no later write of ours superseded the op. */
#define STAMP_SLOTS 4096

enum op_kind { OP_KIND_SET, OP_KIND_DELETE };

struct repl_op;

/* The RPC callbacks' ud for one target of a write: which op, which machine target. */
typedef struct op_target {
    struct repl_op *op;
    kaddr peer;
    unsigned index;              /* in op->m.t[] */
} op_target;

/* A coordinated Set/Delete whose replication replies are still coming in (§5.3 step 9):
 * the I/O side of a repl_machine (repl.h), which decides.  Lives until the machine is
 * DONE: the last call has ended, which may be after the client was answered (async ops,
 * or a W failure that answered nil early). */
typedef struct repl_op {
    struct repl_op *next_free;   /* pool link */
    size_t cap;                  /* bytes available in data[] */
    server *srv;
    rpc_session *client;         /* referenced while the op lives */
    uint32_t msgid;
    enum op_kind kind;
    double born;                 /* ev_now when the write was stamped (restamp_allowed) */
    clocktime_t whs_ct;          /* server_whs(srv)->clocktime then */
    bool result;                 /* Delete's answer: a live value existed here */
    dataop_answer_fn answer;     /* NULL: Set's/Delete's own answers */
    repl_machine m;              /* the state; m.ct is the version being replicated */
    op_target targets[REPL_MAX_TARGETS];
    size_t klen, vlen;
    uint8_t data[];              /* key, then value (Set only) */
} repl_op;

/* ---- tracker pool: the hot Set path allocates nothing once warm ----
 * One free list per size class: data capacities of 1 KiB << i plus room for the key
 * (a 1 KiB value with its key and header is past 1 KiB), up to 64 KiB values.  Each list
 * keeps at most POOL_CLASS_BYTES, so a burst of large values does not pin memory. */

#define POOL_CLASSES 7                     /* 1 KiB .. 64 KiB */
#define POOL_KEY_ROOM 512                  /* key (<= 250 bytes) and value header */
#define POOL_CLASS_BYTES (2u << 20)
#define POOL_MAX 256                       /* trackers kept per class at most */

struct op_pool {
    repl_op *head;
    unsigned count;
};

/* A coordinator's memory of the versions it stamped (op_superseded). */
struct stamp_slot {
    uint64_t h;
    clocktime_t ct;
    bool used;
};

/* Per server (dataop_state_new): the tracker pools and the stamp cache. */
struct dataop_state {
    struct op_pool pools[POOL_CLASSES];
    struct stamp_slot stamps[STAMP_SLOTS];
};

dataop_state *dataop_state_new(void)
{
    return xcalloc(1, sizeof(dataop_state));
}

static size_t pool_cap(int c) { return ((size_t)1024 << c) + POOL_KEY_ROOM; }

/* The smallest class whose capacity holds need bytes, or -1 (not pooled). */
static int pool_class(size_t need)
{
    for (int c = 0; c < POOL_CLASSES; c++)
        if (need <= pool_cap(c))
            return c;
    return -1;
}

static unsigned pool_limit(int c)
{
    size_t n = POOL_CLASS_BYTES / (sizeof(repl_op) + pool_cap(c));
    return n < POOL_MAX ? (unsigned)n : POOL_MAX;
}

static repl_op *op_alloc(server *srv, size_t need)
{
    struct op_pool *pools = server_dataop(srv)->pools;
    int c = pool_class(need);
    repl_op *op;
    if (c >= 0 && pools[c].head != NULL) {
        op = pools[c].head;
        pools[c].head = op->next_free;
        pools[c].count--;
    } else {
        size_t cap = c >= 0 ? pool_cap(c) : need;
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
    struct op_pool *pools = server_dataop(op->srv)->pools;
    if (op->client != NULL)
        rpc_session_unref(op->client);
    int c = pool_class(op->cap);
    if (c >= 0 && op->cap == pool_cap(c) && pools[c].count < pool_limit(c)) {
        op->next_free = pools[c].head;
        pools[c].head = op;
        pools[c].count++;
    } else {
        free(op);
    }
}

void dataop_state_free(dataop_state *d)
{
    if (d == NULL)
        return;
    struct op_pool *pools = d->pools;
    for (int c = 0; c < POOL_CLASSES; c++) {
        while (pools[c].head != NULL) {
            repl_op *op = pools[c].head;
            pools[c].head = op->next_free;
            free(op);
        }
        pools[c].count = 0;
    }
    free(d);
}

/* ---- parameter helpers ---- */

static bool get_dbkey(const msgpack_object *o, const char **key, size_t *klen)
{
    /* wire.md §7.5: shorter than the 8-byte hash is a type error */
    return o != NULL && kwire_get_raw(o, key, klen) && *klen >= DBKEY_HASH_LEN;
}

void dataop_reply_store_failed(rpc_session *s, uint32_t msgid)
{
    const char *msg = store_error() == ENOSPC ? "no space left on the server's disk"
                                              : "the server's storage failed";
    msgpack_packer *pk = rpc_reply_begin(s, msgid);
    kwire_pack_raw(pk, msg, strlen(msg));
    msgpack_pack_nil(pk);
    rpc_reply_end(s);
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
    const kaddr *self = &server_cfg(srv)->self;
    const hs_node *slots[HS_REPLICAS];
    p->nw = p->nr = 0;
    if (hashspace_empty(server_whs(srv)))
        return RPC_SERVER_ERROR;                       /* "server not ready" */
    size_t n = hashspace_assign(server_whs(srv), h, slots);
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
    /* While a replace runs the old owners get the write too, so that reads still routed
     * by rhs see it (§8.6).  The original tests only the timestamps, but a server loss
     * during a replace makes the manager give whs and rhs the same new timestamp while
     * their node lists still differ (the copy is abandoned and reads stay on the old
     * rhs): comparing the lists too keeps those old owners up to date. */
    if (server_whs(srv)->clocktime != server_rhs(srv)->clocktime || !hashspace_nodes_equal(server_whs(srv), server_rhs(srv))) {
        if (hashspace_empty(server_rhs(srv)))
            return RPC_SERVER_ERROR;
        n = hashspace_assign(server_rhs(srv), h, slots);
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

/* check_replica of key's hash against hs; on an error answers req with it, false. */
static bool check_answer(server *srv, const rpc_request *req, const hashspace *hs,
                         const void *key)
{
    int err = check_replica(srv, hs, dbkey_hash(key));
    if (err != 0)
        rpc_reply_error(req->session, req->msgid, err);
    return err == 0;
}

/* Get's responsibility check: an active rhs slot of the key (§5.5). */
static bool check_reader(server *srv, const rpc_request *req, const void *key)
{
    return check_answer(srv, req, server_rhs(srv), key);
}

/* Answer a read with the stored record v: the value, or nil if absent or a tombstone. */
static void reply_live(const rpc_request *req, const void *v, size_t vlen)
{
    if (v != NULL && dbvalue_is_live(vlen))
        reply_raw(req->session, req->msgid, v, vlen);
    else
        rpc_reply_nil(req->session, req->msgid);
}

/* ---- replication: the I/O side of the tracker (repl.h decides) ---- */

static void repl_callback(rpc_session *s, const rpc_result *r, void *ud);
static void ask_callback(rpc_session *s, const rpc_result *r, void *ud);

/* ---- versions stamped by this coordinator ---- */

static void note_stamp(server *srv, const void *dbkey, clocktime_t ct)
{
    uint64_t h = dbkey_hash(dbkey);
    struct stamp_slot *e = &server_dataop(srv)->stamps[h & (STAMP_SLOTS - 1)];
    e->h = h;
    e->ct = ct;
    e->used = true;
}

/* Did this server coordinate a later write of op's key than ct?  Then that write carries
 * the newer value and op must not be re-stamped over it.  (Two keys sharing a slot only
 * make a superseded op look current: it is then re-stamped, as before the cache.) */
static bool env_superseded(void *ud, clocktime_t ct)
{
    const repl_op *op = ud;
    uint64_t h = dbkey_hash(op->data);
    const struct stamp_slot *e = &server_dataop(op->srv)->stamps[h & (STAMP_SLOTS - 1)];
    return e->used && e->h == h && e->ct != ct;
}

static void env_send(void *ud, unsigned i)
{
    repl_op *op = ud;
    op_target *t = &op->targets[i];
    server *srv = op->srv;
    rpc_session *s = rpc_node_session(server_rpc(srv), &t->peer, true);
    clocktime_t ct = op->m.ct;
    uint32_t flags = (op->m.t[i].by_rhs ? REPLICATE_FLAG_BY_RHS : 0) | REPLICATE_FLAG_RESTAMP;
    /* algorithms.md §2: adjust_clock is the clock part of the record's new version */
    msgpack_packer *pk;
    if (op->kind == OP_KIND_SET) {
        pk = rpc_call_begin_timed(s, SRV_REPLICATE_SET, SERVER_REPLICATE_TIMEOUT, repl_callback, t);
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, clocktime_clock(ct));
        msgpack_pack_uint32(pk, flags);
        kwire_pack_raw(pk, op->data, op->klen);
        kwire_pack_raw(pk, op->data + op->klen, op->vlen);
    } else {
        pk = rpc_call_begin_timed(s, SRV_REPLICATE_DELETE, SERVER_REPLICATE_TIMEOUT, repl_callback, t);
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, clocktime_clock(ct));
        /* ask for the reply that tells whether the replica held a live value; an
         * original replica ignores the bit and answers a plain boolean */
        msgpack_pack_uint32(pk, flags | REPLICATE_FLAG_LIVE_REPLY);
        msgpack_pack_uint64(pk, ct);
        kwire_pack_raw(pk, op->data, op->klen);
    }
    rpc_call_end(s);
}

/* Send [dbkey] to the target's peer: GetVersion on the cluster session, or, to an
 * original kumo-server, Get on a plain one. */
static void env_ask(void *ud, unsigned i, repl_ask what)
{
    repl_op *op = ud;
    op_target *t = &op->targets[i];
    bool version = what == REPL_ASK_VERSION;
    rpc_session *s = rpc_node_session(server_rpc(op->srv), &t->peer, version);
    msgpack_packer *pk = rpc_call_begin(s, version ? SRV_GET_VERSION : SRV_GET,
                                        RPC_DEFAULT_TIMEOUT_STEPS, ask_callback, t);
    msgpack_pack_array(pk, 1);
    kwire_pack_raw(pk, op->data, op->klen);
    rpc_call_end(s);
}

/* Answer the client: ok, or nil when a W replica finally failed -- the local copy keeps
 * the new version (the "indefinite" outcome of §5.3) and the gateway retries. */
static void env_answer(void *ud, repl_answer a)
{
    repl_op *op = ud;
    bool ok = a == REPL_ANSWER_OK;
    if (op->answer != NULL)
        op->answer(op->client, op->msgid, ok, op->m.ct, op->data + op->klen, op->vlen);
    else if (a == REPL_ANSWER_STORAGE)
        dataop_reply_store_failed(op->client, op->msgid);
    else if (!ok)
        rpc_reply_nil(op->client, op->msgid);
    else if (op->kind == OP_KIND_SET)
        rpc_reply_u64(op->client, op->msgid, op->m.ct);
    else
        rpc_reply_bool(op->client, op->msgid, op->result || op->m.live);
}

static void env_report_failed(void *ud, unsigned i, int rpc_err)
{
    repl_op *op = ud;
    const op_target *t = &op->targets[i];
    char buf[KADDR_STRLEN];
    log_error("%s to %s failed: error %d",
              op->kind == OP_KIND_SET ? "ReplicateSet" : "ReplicateDelete",
              kaddr_format(&t->peer, buf), rpc_err);
    /* cli.md §10: ers/erd carry the user key and data, without kumofs headers */
    if (op->klen < DBKEY_HASH_LEN)
        return;
    const uint8_t *key = op->data;
    uint64_t hash = dbkey_hash(key);
    if (op->kind == OP_KIND_SET && op->vlen >= DBVALUE_HEADER_LEN)
        binlog_replicate_set_failed(key + DBKEY_HASH_LEN, op->klen - DBKEY_HASH_LEN,
                                    key + op->klen + DBVALUE_HEADER_LEN,
                                    op->vlen - DBVALUE_HEADER_LEN, hash, op->m.ct, &t->peer);
    else if (op->kind != OP_KIND_SET)
        binlog_replicate_delete_failed(key + DBKEY_HASH_LEN, op->klen - DBKEY_HASH_LEN,
                                       hash, &t->peer);
}

static bool env_stopping(void *ud)
{
    const repl_op *op = ud;
    return server_stopping(op->srv);
}

static bool env_peer_active(void *ud, unsigned i)
{
    const repl_op *op = ud;
    const server *srv = op->srv;
    return hashspace_is_active(op->m.t[i].by_rhs ? server_rhs(srv) : server_whs(srv), &op->targets[i].peer);
}

/* May op still be stamped again (kumofs-c)?  A re-stamp puts an old write above the
 * version a replica holds, which is only right while that version cannot be a write the
 * cluster acknowledged after this one's client stopped waiting.  So not when
 * - the write hash space changed since the write was stamped: this server may have been
 *   declared fault meanwhile (a freeze, a cut) and another coordinator have taken writes
 *   of the key, or a replace have moved the key;
 * - the write is older than RESTAMP_MAX_AGE: its gateway may have answered its client
 *   with an error already (-Rt, 2 s by default; the client then sets the key again
 *   through another coordinator), e.g. after a stall whose resync already ended when the
 *   refusals came in;
 * - a resync runs (the server was stopped or lost its manager lease: its hash spaces may
 *   be stale).
 * The write then fails (nil): its outcome is indefinite, as for any failed write. */
#define RESTAMP_MAX_AGE 1.0
static bool env_restamp_allowed(void *ud, clocktime_t seen)
{
    const repl_op *op = ud;
    const server *srv = op->srv;
    if (!server_resyncing(srv) && server_whs(srv)->clocktime == op->whs_ct
        && ev_now(server_loop(srv)) - op->born <= RESTAMP_MAX_AGE)
        return true;
    log_info("not re-stamping a write of %.1f s ago (a replica had %llu): answering nil",
             ev_now(server_loop(srv)) - op->born, (unsigned long long)seen);
    return false;
}

/* DECISIONS.md §2: stamp the write again past every version seen for the key (base) and
 * the local one, and store it locally; the machine then sends it to all targets once
 * more.  The original acknowledged the write here although its replicas kept the older
 * value. */
static bool env_restamp(void *ud, clocktime_t base, clocktime_t *out)
{
    repl_op *op = ud;
    server *srv = op->srv;
    clocktime_t local;
    if (store_get_clocktime(server_store(srv), op->data, op->klen, &local) && clocktime_less(base, local))
        base = local;
    kclock_update_time(server_clock(srv));
    clocktime_t ct = kclock_event_after(server_clock(srv), base);
    bool ok;
    if (op->kind == OP_KIND_SET) {
        dbvalue_set_clocktime(op->data + op->klen, ct);
        ok = store_put(server_store(srv), op->data, op->klen, op->data + op->klen, op->vlen);
    } else {
        ok = store_remove(server_store(srv), op->data, op->klen, ct);
    }
    if (!ok)
        return false;
    log_debug("re-stamping a write %llu -> %llu (past %llu)", (unsigned long long)op->m.ct,
              (unsigned long long)ct, (unsigned long long)base);
    note_stamp(srv, op->data, ct);
    *out = ct;
    return true;
}

static const repl_env op_env = {
    .send = env_send,
    .ask = env_ask,
    .answer = env_answer,
    .report_failed = env_report_failed,
    .restamp = env_restamp,
    .stopping = env_stopping,
    .peer_active = env_peer_active,
    .superseded = env_superseded,
    .restamp_allowed = env_restamp_allowed,
};

/* Feed one reply to op's machine; the op ends with its machine. */
static void op_step(op_target *t, const repl_event *ev)
{
    repl_op *op = t->op;
    if (repl_step(&op->m, t->index, ev) == REPL_OP_DONE)
        op_release(op);
}

/* A Replicate* reply. */
static void repl_callback(rpc_session *s, const rpc_result *r, void *ud)
{
    op_target *t = ud;
    repl_event ev = { .session_ok = s != NULL && !rpc_session_is_lost(s), .rpc_err = r->err };
    if (r->err == RPC_OK) {
        bool is_bool = r->result != NULL && r->result->type == MSGPACK_OBJECT_BOOLEAN;
        ev.kind = is_bool && !r->result->via.boolean ? REPL_EV_REFUSED : REPL_EV_STORED;
        /* 2: refused, another write holds exactly our version (protocol-additions.md 1.3) */
        if (r->result != NULL && r->result->type == MSGPACK_OBJECT_POSITIVE_INTEGER
            && r->result->via.u64 == REPLICATE_REPLY_COLLIDED)
            ev.kind = REPL_EV_COLLIDED;
        /* Delete answers DELETED if a live value existed on any copy, not only on this
         * coordinator (which may not have received the key yet during a replace):
         * `true` says so (an original replica's `true` only says "stored" and counts
         * too), the integer 1 says stored over nothing live (protocol-additions.md). */
        ev.live = t->op->kind == OP_KIND_DELETE && is_bool && r->result->via.boolean;
    } else if (r->err == RPC_TIMEOUT) {
        ev.kind = REPL_EV_TIMEOUT;
    } else if (r->err == RPC_OTHER_ERROR && r->error != NULL
               && (r->error->type == MSGPACK_OBJECT_STR || r->error->type == MSGPACK_OBJECT_BIN)) {
        ev.kind = REPL_EV_STORAGE_ERROR;  /* a kumofs-c replica's storage failure */
    } else {
        ev.kind = REPL_EV_ERROR;
    }
    op_step(t, &ev);
}

/* A GetVersion reply (a u64, or nil: absent) or a Get reply (the record, whose header
 * holds its version; nil may hide a tombstone: unknown) about a refusing replica. */
static void ask_callback(rpc_session *s, const rpc_result *r, void *ud)
{
    op_target *t = ud;
    bool get = t->op->m.t[t->index].state == REPL_T_ASK_GET;
    repl_event ev = { .kind = REPL_EV_NO_VERSION,
                      .session_ok = s != NULL && !rpc_session_is_lost(s), .rpc_err = r->err };
    const msgpack_object *o = r->result;
    const char *v;
    size_t vlen;
    if (r->err == RPC_PROTOCOL_ERROR && !get) {
        ev.kind = REPL_EV_NO_METHOD;
    } else if (r->err != RPC_OK) {
        /* NO_VERSION */
    } else if (o == NULL || o->type == MSGPACK_OBJECT_NIL) {
        if (!get) {
            ev.kind = REPL_EV_VERSION;
            ev.absent = true;
        }
    } else if (!get) {
        if (kwire_get_u64(o, &ev.version))
            ev.kind = REPL_EV_VERSION;
    } else if (kwire_get_raw(o, &v, &vlen) && vlen >= TOMBSTONE_LEN) {
        ev.kind = REPL_EV_VERSION;
        ev.version = dbvalue_clocktime(v);
    }
    op_step(t, &ev);
}

/* Build a tracker for the plan and send to every target.  key/val are copied. */
static void replicate(server *srv, const rpc_request *req, enum op_kind kind, clocktime_t ct,
                      const dataop_plan *p, const void *key, size_t klen,
                      const void *val, size_t vlen, bool async, bool result,
                      dataop_answer_fn answer)
{
    repl_op *op = op_alloc(srv, klen + vlen);
    op->srv = srv;
    op->client = req->session;
    rpc_session_ref(op->client);
    op->msgid = req->msgid;
    op->kind = kind;
    op->born = ev_now(server_loop(srv));
    op->whs_ct = server_whs(srv)->clocktime;
    op->result = result;
    op->answer = answer;
    op->klen = klen;
    op->vlen = vlen;
    memcpy(op->data, key, klen);
    if (vlen > 0)
        memcpy(op->data + klen, val, vlen);
    note_stamp(srv, key, ct);
    repl_init(&op->m, &op_env, op, ct,
              kind == OP_KIND_SET ? server_cfg(srv)->set_retry : server_cfg(srv)->delete_retry, async);
    /* old owners first, then the write replicas: the order of the sends */
    for (unsigned i = 0; i < p->nr; i++) {
        unsigned k = repl_add_target(&op->m, true);
        op->targets[k] = (op_target){ op, p->r[i], k };
    }
    for (unsigned i = 0; i < p->nw; i++) {
        unsigned k = repl_add_target(&op->m, false);
        op->targets[k] = (op_target){ op, p->w[i], k };
    }
    repl_start(&op->m);
}

void dataop_replicate_value(server *srv, const rpc_request *req, clocktime_t ct,
                            const dataop_plan *p, const void *key, size_t klen,
                            const void *val, size_t vlen, bool async, dataop_answer_fn answer)
{
    if (p->nw + p->nr == 0) {
        note_stamp(srv, key, ct);
        answer(req->session, req->msgid, true, ct, val, vlen);
        return;
    }
    replicate(srv, req, OP_KIND_SET, ct, p, key, klen, val, vlen, async, false, answer);
}

clocktime_t dataop_next_version(server *srv, bool have_stored, clocktime_t stored)
{
    return have_stored ? kclock_event_after(server_clock(srv), stored) : kclock_event(server_clock(srv));
}

uint8_t *dataop_read(server *srv, const void *key, size_t klen, size_t *len, bool *have,
                     clocktime_t *stored)
{
    *len = 0;
    uint8_t *old = store_get(server_store(srv), key, klen, len);
    *have = old != NULL && *len >= TOMBSTONE_LEN;
    *stored = *have ? dbvalue_clocktime(old) : 0;
    return old;
}

bool dataop_begin_write(server *srv, const rpc_request *req, bool params_ok, const void *key,
                        dataop_plan *p)
{
    int err = params_ok ? dataop_plan_write(srv, dbkey_hash(key), p) : RPC_PROTOCOL_ERROR;
    if (err != 0)
        rpc_reply_error(req->session, req->msgid, err);
    return err == 0;
}

/* ---- handlers ---- */

void dataop_set(server *srv, const rpc_request *req)
{
    uint32_t opcode;
    const char *key = NULL, *cval;
    size_t klen, vlen;
    const msgpack_object *o = kwire_array_at(req->params, 2);
    bool params_ok = !req->cluster && o != NULL
        && server_arg_u32(req, 0, &opcode)
        && get_dbkey(kwire_array_at(req->params, 1), &key, &klen)
        && kwire_get_raw(o, &cval, &vlen) && vlen >= DBVALUE_HEADER_LEN
        && (opcode == SET_OP_SET || opcode == SET_OP_SET_ASYNC || opcode == SET_OP_CAS);
    dataop_plan plan;
    if (!dataop_begin_write(srv, req, params_ok, key, &plan))
        return;
    /* The value buffer belongs to this request until we return; stamping the version in
     * place saves a copy on the hot path (wire.md §7.6: the server overwrites it). */
    uint8_t *val = (uint8_t *)(uintptr_t)cval;
    clocktime_t compare = dbvalue_clocktime(val);
    clocktime_t stored;
    bool have = store_get_clocktime(server_store(srv), key, klen, &stored);
    clocktime_t ct = dataop_next_version(srv, have, stored);
    dbvalue_set_clocktime(val, ct);

    if (opcode == SET_OP_CAS) {
        if (!store_cas(server_store(srv), key, klen, val, vlen, compare)) {
            if (store_error() != 0)
                dataop_reply_store_failed(req->session, req->msgid);
            else
                rpc_reply_bool(req->session, req->msgid, false);   /* EXISTS; nothing replicated */
            return;
        }
    } else if (!store_put(server_store(srv), key, klen, val, vlen)) {
        dataop_reply_store_failed(req->session, req->msgid);
        return;
    }
    server_count_set(srv);
    if (plan.nw + plan.nr == 0) {
        note_stamp(srv, key, ct);
        rpc_reply_u64(req->session, req->msgid, ct);
        return;
    }
    replicate(srv, req, OP_KIND_SET, ct, &plan, key, klen, val, vlen,
              opcode == SET_OP_SET_ASYNC, false, NULL);
}

void dataop_delete(server *srv, const rpc_request *req)
{
    uint32_t flags;
    const char *key = NULL;
    size_t klen;
    bool params_ok = !req->cluster && server_arg_u32(req, 0, &flags)
        && get_dbkey(kwire_array_at(req->params, 1), &key, &klen);
    dataop_plan plan;
    if (!dataop_begin_write(srv, req, params_ok, key, &plan))
        return;
    /* DECISIONS.md §3: the answer says whether a live value existed before. */
    size_t oldlen = 0;
    bool have;
    clocktime_t stored;
    uint8_t *old = dataop_read(srv, key, klen, &oldlen, &have, &stored);
    bool had_live = old != NULL && rmwop_item_live(old, oldlen);  /* expired = gone */
    clocktime_t ct = dataop_next_version(srv, have, stored);
    free(old);

    /* The tombstone is written and replicated even for an absent key, so replicas that
     * still hold an old value drop it. */
    if (!store_remove(server_store(srv), key, klen, ct)) {
        if (store_error() != 0) {
            dataop_reply_store_failed(req->session, req->msgid);
            return;
        }
        /* §5.4 step 3: "not deleted" */
        if (plan.nr == 0) {
            rpc_reply_bool(req->session, req->msgid, false);
            return;
        }
        plan.nw = 0;
    }
    server_count_delete(srv);
    if (plan.nw + plan.nr == 0) {
        note_stamp(srv, key, ct);
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
    if (!check_reader(srv, req, key))
        return;
    server_count_get(srv);
    size_t vlen = 0;
    void *v = store_get(server_store(srv), key, klen, &vlen);
    reply_live(req, v, vlen);
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
    if (!check_reader(srv, req, key))
        return;
    size_t vlen = 0;
    void *v = store_get(server_store(srv), key, klen, &vlen);
    /* storage.md §4.5: still valid iff stored clocktime <= the caller's */
    if (v != NULL && vlen >= TOMBSTONE_LEN && !clocktime_less(if_time, dbvalue_clocktime(v))) {
        rpc_reply_bool(req->session, req->msgid, true);
    } else {
        server_count_get(srv);
        reply_live(req, v, vlen);
    }
    free(v);
}

/* Common head of ReplicateSet/ReplicateDelete: params 0 and 1, responsibility, clock. */
static bool replica_head(server *srv, const rpc_request *req, const char *key)
{
    uint32_t adjust = 0, flags = 0;
    server_arg_u32(req, 0, &adjust);
    server_arg_u32(req, 1, &flags);
    if (!check_answer(srv, req, (flags & REPLICATE_FLAG_BY_RHS) ? server_rhs(srv) : server_whs(srv), key))
        return false;
    kclock_merge(server_clock(srv), adjust);
    return true;
}

static bool head_types_ok(const rpc_request *req)
{
    uint32_t u;
    return req->cluster && server_arg_u32(req, 0, &u)
        && server_arg_u32(req, 1, &u);
}

/* A write from an original coordinator (no REPLICATE_FLAG_RESTAMP / _LIVE_REPLY) was
 * refused.  The original counts `false` as stored, so a coordinator whose clock lags
 * (just restarted) would acknowledge a write that its replicas dropped -- the stale reads
 * of DECISIONS.md §2.  When the stored version is strictly newer, answer an error
 * instead: the coordinator retries, then answers nil, and the gateway sends the write
 * again with a later stamp.  An equal version is the same write sent again: `false`.
 * Returns true when the error was sent. */
static bool refuse_older(server *srv, const rpc_request *req, const void *key, size_t klen,
                         clocktime_t incoming)
{
    clocktime_t have;
    if (!store_get_clocktime(server_store(srv), key, klen, &have) || !clocktime_less(incoming, have))
        return false;
    rpc_reply_error(req->session, req->msgid, RPC_UNKNOWN_ERROR);
    return true;
}

/* After a refusal: does the replica hold another write stamped with exactly `ct`?  Two
 * coordinators can stamp the same clocktime (seconds and a Lamport counter, neither
 * unique per server) for different writes of a key, e.g. when a replace or a failure
 * moved the key between them; store-if-newer then keeps whichever arrived first, and a
 * coordinator that took an equal version for its own retried send would acknowledge a
 * write its replicas dropped (a stale read in rt07 under load). */
static bool is_other_write(const uint8_t *old, size_t oldlen, clocktime_t ct,
                           const void *ours, size_t ourlen)
{
    return old != NULL && oldlen >= 8 && dbvalue_clocktime(old) == ct
           && (oldlen != ourlen || memcmp(old, ours, ourlen) != 0);
}

/* is_other_write of the record stored now (read only after a refusal: rare). */
static bool holds_other_write(server *srv, const void *key, size_t klen, clocktime_t ct,
                              const void *ours, size_t ourlen)
{
    size_t oldlen = 0;
    uint8_t *old = store_get(server_store(srv), key, klen, &oldlen);
    bool other = is_other_write(old, oldlen, ct, ours, ourlen);
    free(old);
    return other;
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
    uint32_t flags = 0;
    server_arg_u32(req, 1, &flags);
    bool stored = store_update(server_store(srv), key, klen, val, vlen);
    if (!stored && store_error() != 0) {
        dataop_reply_store_failed(req->session, req->msgid);
        return;
    }
    if (!stored && !(flags & REPLICATE_FLAG_RESTAMP)
        && refuse_older(srv, req, key, klen, dbvalue_clocktime(val)))
        return;
    if (!stored && (flags & REPLICATE_FLAG_RESTAMP)
        && holds_other_write(srv, key, klen, dbvalue_clocktime(val), val, vlen)) {
        rpc_reply_u64(req->session, req->msgid, REPLICATE_REPLY_COLLIDED);
        return;
    }
    rpc_reply_bool(req->session, req->msgid, stored);
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
    uint32_t flags = 0;
    server_arg_u32(req, 1, &flags);
    if (!(flags & REPLICATE_FLAG_LIVE_REPLY)) {
        bool stored = store_remove(server_store(srv), key, klen, ct);
        if (!stored && store_error() != 0) {
            dataop_reply_store_failed(req->session, req->msgid);
            return;
        }
        if (!stored && refuse_older(srv, req, key, klen, ct))
            return;
        rpc_reply_bool(req->session, req->msgid, stored);
        return;
    }
    /* kumofs-c coordinator: true = stored over a live value, 1 = stored over nothing
     * live (absent or tombstone), false = refused (protocol-additions.md §1.4) */
    size_t oldlen = 0;
    uint8_t *old = store_get(server_store(srv), key, klen, &oldlen);
    bool had_live = old != NULL && rmwop_item_live(old, oldlen);  /* expired = gone */
    if (!store_remove(server_store(srv), key, klen, ct)) {
        /* refused: judged on `old`, read just before (a replace write in between can
         * only have made the record newer, and a newer record is refused either way) */
        uint8_t tomb[TOMBSTONE_LEN];
        be64_put(tomb, ct);
        if (store_error() != 0)
            dataop_reply_store_failed(req->session, req->msgid);
        else if (is_other_write(old, oldlen, ct, tomb, sizeof tomb))
            rpc_reply_u64(req->session, req->msgid, REPLICATE_REPLY_COLLIDED);
        else
            rpc_reply_bool(req->session, req->msgid, false);
    } else if (had_live)
        rpc_reply_bool(req->session, req->msgid, true);
    else
        rpc_reply_u64(req->session, req->msgid, 1);
    free(old);
}

void dataop_get_version(server *srv, const rpc_request *req)
{
    const char *key;
    size_t klen;
    if (!get_dbkey(kwire_array_at(req->params, 0), &key, &klen)) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    /* No responsibility check: a read of metadata any peer may need, e.g. a coordinator
     * whose W replica is not yet an rhs owner (algorithms.md §8.6). */
    clocktime_t ct;
    if (store_get_clocktime(server_store(srv), key, klen, &ct))
        rpc_reply_u64(req->session, req->msgid, ct);
    else
        rpc_reply_nil(req->session, req->msgid);
}
