/* tombsend.c - deletes for original peers during a replace copy (see tombsend.h). */
#include "server/tombsend.h"

#include <string.h>

#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"
#include "server/store.h"

#define TOMBSEND_WINDOW 64           /* ReplicateDeletes in flight at once */
#define TOMBSEND_ROUNDS 3            /* first send + two retries of what failed */
#define TOMBSEND_RETRY_DELAY 1.0

/* Entries in one byte buffer: kaddr ‖ BE64 version ‖ BE32 key length ‖ key. */
typedef struct entries {
    uint8_t *buf;
    size_t len, cap;
    size_t count;
} entries;

struct tombsend {
    enum tombsend_kind kind;
    entries todo;                /* this round */
    entries failed;              /* to send again next round */
    size_t next;                 /* offset of the next entry of todo to send */
    size_t inflight;
    unsigned round;
    size_t delivered, lost;
    size_t removed;              /* VERIFY: records found deleted on the peer */
    server *srv;
    void (*done)(server *, void *);
    void *ud;
    ev_timer timer;
};

static void entries_add(entries *e, const kaddr *dst, const void *key, size_t klen, clocktime_t ct)
{
    size_t need = sizeof(kaddr) + 12 + klen;
    if (e->len + need > e->cap) {
        e->cap = (e->len + need) * 2;
        e->buf = xrealloc(e->buf, e->cap);
    }
    uint8_t *p = e->buf + e->len;
    memcpy(p, dst, sizeof(kaddr));
    be64_put(p + sizeof(kaddr), ct);
    be32_put(p + sizeof(kaddr) + 8, (uint32_t)klen);
    memcpy(p + sizeof(kaddr) + 12, key, klen);
    e->len += need;
    e->count++;
}

tombsend *tombsend_new(enum tombsend_kind kind)
{
    tombsend *t = xcalloc(1, sizeof(tombsend));
    t->kind = kind;
    return t;
}

void tombsend_free(tombsend *t)
{
    if (t == NULL)
        return;
    free(t->todo.buf);
    free(t->failed.buf);
    free(t);
}

void tombsend_add(tombsend *t, const kaddr *dst, const void *dbkey, size_t klen, clocktime_t ct)
{
    entries_add(&t->todo, dst, dbkey, klen, ct);
}

size_t tombsend_count(const tombsend *t)
{
    return t->todo.count;
}

/* One ReplicateDelete in flight: its entry copied, to queue it again on failure. */
typedef struct call {
    tombsend *t;
    kaddr dst;
    clocktime_t ct;
    size_t klen;
    uint8_t key[];
} call;

static void pump(tombsend *t);

static void finish_round(tombsend *t)
{
    char buf[KADDR_STRLEN];
    if (t->failed.count > 0 && t->round + 1 < TOMBSEND_ROUNDS && !server_stopping(t->srv)) {
        free(t->todo.buf);
        t->todo = t->failed;
        memset(&t->failed, 0, sizeof(t->failed));
        t->next = 0;
        t->round++;
        ev_timer_start(server_loop(t->srv), &t->timer);
        return;
    }
    t->lost = t->failed.count;
    if (t->lost > 0 && t->kind == TOMBSEND_DELETE)
        log_error("replace: %zu deletes could not be delivered to original peers (e.g. %s); "
                  "their old values may be read there until deleted again",
                  t->lost, kaddr_format((const kaddr *)t->failed.buf, buf));
    else if (t->lost > 0)
        log_error("replace: %zu records could not be checked with original peers (e.g. %s); "
                  "those deleted while this server was down may be read again",
                  t->lost, kaddr_format((const kaddr *)t->failed.buf, buf));
    else if (t->kind == TOMBSEND_DELETE)
        log_info("replace: %zu deletes delivered to original peers", t->delivered);
    else
        log_info("replace: %zu records checked with original peers, %zu deleted there",
                 t->delivered, t->removed);
    t->done(t->srv, t->ud);
    tombsend_free(t);
}

static void call_done(rpc_session *s, const rpc_result *r, void *ud)
{
    (void)s;
    call *c = ud;
    tombsend *t = c->t;
    t->inflight--;
    bool b;
    if (t->kind == TOMBSEND_VERIFY && r->err == RPC_OK) {
        t->delivered++;
        /* nil: absent or a tombstone on an owner that held the key all along, so the
         * record kept here was deleted meanwhile.  The tombstone is just newer than it:
         * any later write (or the stream bringing one) is newer still. */
        if (kwire_is_nil(r->result) &&
            store_remove(server_store(t->srv), c->key, c->klen,
                         clocktime_make(clocktime_sec(c->ct), clocktime_clock(c->ct) + 1)))
            t->removed++;
    } else if (t->kind == TOMBSEND_DELETE && r->err == RPC_OK && kwire_get_bool(r->result, &b))
        /* true: stored; false: the peer already holds something newer -- both fine */
        t->delivered++;
    else
        entries_add(&t->failed, &c->dst, c->key, c->klen, c->ct);
    free(c);
    pump(t);
}

static void pump(tombsend *t)
{
    server *srv = t->srv;
    while (t->inflight < TOMBSEND_WINDOW && t->next < t->todo.len && !server_stopping(srv)) {
        const uint8_t *p = t->todo.buf + t->next;
        uint32_t klen = be32_get(p + sizeof(kaddr) + 8);
        call *c = xmalloc(sizeof(*c) + klen);
        c->t = t;
        memcpy(&c->dst, p, sizeof(kaddr));
        c->ct = be64_get(p + sizeof(kaddr));
        c->klen = klen;
        memcpy(c->key, p + sizeof(kaddr) + 12, klen);
        t->next += sizeof(kaddr) + 12 + klen;
        t->inflight++;
        if (t->kind == TOMBSEND_VERIFY) {
            /* Get is a plain-client request (wire.md §8.2) */
            rpc_session *s = rpc_node_session(server_rpc(srv), &c->dst, false);
            msgpack_packer *pk = rpc_call_begin(s, SRV_GET, RPC_DEFAULT_TIMEOUT_STEPS,
                                                call_done, c);
            msgpack_pack_array(pk, 1);
            kwire_pack_raw(pk, c->key, c->klen);
            rpc_call_end(s);
            continue;
        }
        /* wire.md §8.2 ReplicateDelete [adjust_clock, flags, delete_clocktime, dbkey]; the
         * receiver checks its whs, which the copy phase already gave it */
        rpc_session *s = rpc_node_session(server_rpc(srv), &c->dst, true);
        msgpack_packer *pk = rpc_call_begin(s, SRV_REPLICATE_DELETE, RPC_DEFAULT_TIMEOUT_STEPS,
                                            call_done, c);
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, kclock_incr(server_clock(srv)));
        msgpack_pack_uint32(pk, 0);
        msgpack_pack_uint64(pk, c->ct);
        kwire_pack_raw(pk, c->key, c->klen);
        rpc_call_end(s);
    }
    if (t->inflight == 0 && (t->next >= t->todo.len || server_stopping(srv)))
        finish_round(t);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    ev_timer_stop(loop, w);
    pump(w->data);
}

void tombsend_start(server *srv, tombsend *t, void (*done)(server *srv, void *ud), void *ud)
{
    t->srv = srv;
    t->done = done;
    t->ud = ud;
    ev_timer_init(&t->timer, retry_cb, TOMBSEND_RETRY_DELAY, 0.0);
    t->timer.data = t;
    pump(t);
}
