/* test_rpc.c - msgpack-RPC core over real loopback sockets: envelope bytes (wire.md §4,
 * §11), handshake (§4.3), pipelining, peer loss, garbage input, connect retry and step
 * timeouts (algorithms.md §1, §3); the input scanner (mpscan) that bounds what a peer's
 * headers can make msgpack-c allocate. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logic/addr.h"
#include "rpc/mpscan.h"
#include "rpc/pending.h"
#include "rpc/rpc.h"
#include "rpc/rpc_internal.h"   /* white-box: force a msgid wrap */

static struct ev_loop *L;

/* ------------------------------------------------------------------ helpers */

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Run the loop until pred(ud) holds or secs elapse (a 5 ms tick keeps it from blocking on
 * raw test sockets the loop does not watch).  Returns pred(ud). */
typedef bool (*pred_fn)(void *ud);
static bool run_until(pred_fn pred, void *ud, double secs)
{
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(L, &tick);
    ev_now_update(L);
    double end = ev_time() + secs;
    while (!pred(ud) && ev_time() < end)
        ev_run(L, EVRUN_ONCE);
    ev_timer_stop(L, &tick);
    return pred(ud);
}

static bool pred_never(void *ud)
{
    (void)ud;
    return false;
}

static void pump(double secs)
{
    run_until(pred_never, NULL, secs);
}

/* Run the loop until *counter >= target or secs elapse. */
static bool wait_count(int *counter, int target, double secs)
{
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(L, &tick);
    double end = ev_time() + secs;
    while (*counter < target && ev_time() < end)
        ev_run(L, EVRUN_ONCE);
    ev_timer_stop(L, &tick);
    return *counter >= target;
}

static int listen_any(kaddr *out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 128), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    kaddr_set_ipv4(out, 0x7f000001, ntohs(sa.sin_port));
    return fd;
}

/* A loopback port with nothing listening. */
static void closed_port(kaddr *out)
{
    int fd = listen_any(out);
    close(fd);
}

static int raw_connect(const kaddr *a)
{
    struct sockaddr_storage ss;
    socklen_t sl = kaddr_to_sockaddr(a, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, sl), 0);
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

typedef struct rawbuf {
    int fd;
    uint8_t buf[1 << 16];
    size_t len;
    size_t want;
    size_t pos;   /* bytes already checked by raw_expect */
    bool eof;
} rawbuf;

static bool pred_recv(void *ud)
{
    rawbuf *r = ud;
    while (r->len < r->want && !r->eof) {
        ssize_t n = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, MSG_DONTWAIT);
        if (n > 0)
            r->len += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            r->eof = true;
        else
            break;
    }
    return r->len >= r->want || r->eof;
}

/* Read exactly want more bytes into r (from r->len). */
static void raw_expect(rawbuf *r, const uint8_t *bytes, size_t n)
{
    size_t start = r->pos;
    r->want = start + n;
    bool got = run_until(pred_recv, r, 3.0);
    if (!got || r->len < start + n) {
        fprintf(stderr, "raw_expect: got %zu of %zu bytes:", r->len - start, n);
        for (size_t i = start; i < r->len; i++)
            fprintf(stderr, " %02x", r->buf[i]);
        fprintf(stderr, "\n");
    }
    assert_true(got);
    assert_false(r->len < start + n);
    assert_memory_equal(r->buf + start, bytes, n);
    r->pos = start + n;
}

static bool pred_eof(void *ud)
{
    rawbuf *r = ud;
    r->want = SIZE_MAX;
    pred_recv(r);
    return r->eof;
}

typedef struct acc {
    int lfd;
    int fd;
} acc;

static bool pred_accept(void *ud)
{
    acc *a = ud;
    if (a->fd < 0)
        a->fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
    return a->fd >= 0;
}

static int raw_accept(int lfd)
{
    acc a = { lfd, -1 };
    assert_true(run_until(pred_accept, &a, 3.0));
    return a.fd;
}

static rpc_config make_cfg(const kaddr *self, int role)
{
    rpc_config c;
    memset(&c, 0, sizeof c);
    if (self)
        c.self = *self;
    c.role = role;
    c.connect_timeout = 1.0;
    c.connect_retry_limit = 4;
    c.clock_interval = 2.0;
    return c;
}

/* Records the outcome of one call. */
typedef struct callrec {
    int calls;
    int err;
    int result_type;
    uint64_t u;
    bool b;
    int error_type;
} callrec;

static void rec_cb(rpc_session *s, const rpc_result *r, void *ud)
{
    (void)s;
    callrec *c = ud;
    c->calls++;
    c->err = r->err;
    c->error_type = r->error->type;
    c->result_type = r->result->type;
    if (r->result->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        c->u = r->result->via.u64;
    if (r->result->type == MSGPACK_OBJECT_BOOLEAN)
        c->b = r->result->via.boolean;
}

static void call_empty(rpc_session *s, uint32_t method, unsigned steps, callrec *c)
{
    msgpack_packer *pk = rpc_call_begin(s, method, steps, rec_cb, c);
    msgpack_pack_array(pk, 0);
    rpc_call_end(s);
}

static void call_u64(rpc_session *s, uint32_t method, uint64_t v, rpc_callback cb, void *ud)
{
    msgpack_packer *pk = rpc_call_begin(s, method, RPC_DEFAULT_TIMEOUT_STEPS, cb, ud);
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint64(pk, v);
    rpc_call_end(s);
}

/* Node-level event recorder. */
typedef struct events {
    int new_nodes;
    int new_role;
    kaddr new_addr;
    int lost_nodes;
    int lost_role;
    kaddr lost_addr;
} events;

static void ev_new_node(rpc_session *s, int role, void *ud);
static void ev_lost_node(rpc_session *s, int role, void *ud);

/* A generic test server: dispatch by method.
 *   1: echo params[0] + 1           2: defer (kept for later)
 *   5: SERVER_ERROR                 6: u64 = params array length */
typedef struct server {
    events ev;
    int requests;
    bool last_cluster;
    rpc_session *deferred_s[1024];
    uint32_t deferred_id[1024];
    uint64_t deferred_v[1024];
    int ndeferred;
} server;

static void ev_new_node(rpc_session *s, int role, void *ud)
{
    events *e = ud;
    e->new_nodes++;
    e->new_role = role;
    e->new_addr = *rpc_session_addr(s);
}

static void ev_lost_node(rpc_session *s, int role, void *ud)
{
    events *e = ud;
    e->lost_nodes++;
    e->lost_role = role;
    e->lost_addr = *rpc_session_addr(s);
}

static void server_dispatch(const rpc_request *req, void *ud)
{
    server *sv = ud;
    sv->requests++;
    sv->last_cluster = req->cluster;
    const msgpack_object *p = req->params;
    switch (req->method) {
    case 1:
        if (p->via.array.size < 1 || p->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
            return;
        }
        rpc_reply_u64(req->session, req->msgid, p->via.array.ptr[0].via.u64 + 1);
        return;
    case 2:
        assert_true(sv->ndeferred < 1024);
        rpc_session_ref(req->session);
        sv->deferred_s[sv->ndeferred] = req->session;
        sv->deferred_id[sv->ndeferred] = req->msgid;
        sv->deferred_v[sv->ndeferred] =
            p->via.array.size > 0 ? p->via.array.ptr[0].via.u64 : 0;
        sv->ndeferred++;
        return;
    case 5:
        rpc_reply_error(req->session, req->msgid, RPC_SERVER_ERROR);
        return;
    case 6:
        rpc_reply_u64(req->session, req->msgid, p->via.array.size);
        return;
    case 7: {   /* echo a raw string back */
        const msgpack_object *o = &p->via.array.ptr[0];
        msgpack_packer *pk = rpc_reply_begin(req->session, req->msgid);
        msgpack_pack_nil(pk);
        msgpack_pack_v4raw(pk, o->via.str.size);
        msgpack_pack_v4raw_body(pk, o->via.str.ptr, o->via.str.size);
        rpc_reply_end(req->session);
        return;
    }
    default:
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
    }
}

static void count_fn(rpc_session *s, void *ud)
{
    (void)s;
    ++*(int *)ud;
}

static void server_drop_deferred(server *sv)
{
    for (int i = 0; i < sv->ndeferred; i++)
        rpc_session_unref(sv->deferred_s[i]);
    sv->ndeferred = 0;
}

/* A listening rpc node with the test server behind it. */
static rpc_node *server_node(server *sv, kaddr *addr, int role, bool cluster_self)
{
    memset(sv, 0, sizeof *sv);
    int lfd = listen_any(addr);
    rpc_config c = make_cfg(cluster_self ? addr : NULL, cluster_self ? role : RPC_ROLE_NONE);
    c.dispatch = server_dispatch;
    c.new_node = ev_new_node;
    c.lost_node = ev_lost_node;
    c.ud = sv;
    rpc_node *n = rpc_node_new(L, &c);
    rpc_node_listen_fd(n, lfd);
    return n;
}

static int setup(void **state)
{
    (void)state;
    L = ev_loop_new(EVFLAG_AUTO);
    return L ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    ev_loop_destroy(L);
    return 0;
}

/* ------------------------------------------------------------------ tests */

static void test_pending_table(void **state)
{
    (void)state;
    pending_table t;
    pending_init(&t);
    enum { N = 5000 };
    static bool present[N];
    memset(present, 0, sizeof present);
    srand(7);
    uint32_t base = UINT32_MAX - 2000;   /* crosses the 2^32 wrap */
    int live = 0;
    for (int i = 0; i < 200000; i++) {
        int k = rand() % N;
        uint32_t id = base + (uint32_t)k;
        pending_call pc;
        if (present[k]) {
            assert_true(pending_take(&t, id, &pc));
            assert_int_equal(pc.msgid, id);
            assert_ptr_equal(pc.ud, (void *)(uintptr_t)(k + 1));
            present[k] = false;
            live--;
        } else {
            assert_false(pending_take(&t, id, &pc));
            pending_insert(&t, id, 3, NULL, (void *)(uintptr_t)(k + 1));
            present[k] = true;
            live++;
        }
        assert_int_equal(t.count, (uint32_t)live);
    }
    pending_destroy(&t);
}

/* Plain client → raw server: request bytes, response matching, error codes, msgid wrap. */
static void test_client_envelope_bytes(void **state)
{
    (void)state;
    kaddr addr;
    int lfd = listen_any(&addr);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    rpc_node *n = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(n, &addr, false);
    assert_false(rpc_session_is_connected(s));

    callrec c1 = { 0 }, c2 = { 0 }, c3 = { 0 };
    call_empty(s, 99, 10, &c1);   /* kumoctl GetNodesInfo form: 94 00 <id> 63 90 */
    msgpack_packer *pk = rpc_call_begin(s, 35, 10, rec_cb, &c2);
    msgpack_pack_array(pk, 1);
    msgpack_pack_v4raw(pk, 3);
    msgpack_pack_v4raw_body(pk, "abc", 3);
    rpc_call_end(s);
    call_empty(s, 0x10005, 10, &c3);   /* version 1, number 5 */

    rawbuf *r = calloc(1, sizeof *r);
    r->fd = raw_accept(lfd);
    static const uint8_t want[] = {
        0x94, 0x00, 0x01, 0x63, 0x90,
        0x94, 0x00, 0x02, 0x23, 0x91, 0xa3, 'a', 'b', 'c',
        0x94, 0x00, 0x03, 0xce, 0x00, 0x01, 0x00, 0x05, 0x90,
    };
    raw_expect(r, want, sizeof want);
    assert_true(rpc_session_is_connected(s));

    /* Out of order, one unknown msgid (dropped), an error code, a non-integer error. */
    static const uint8_t resp[] = {
        0x94, 0x01, 0x02, 0x06, 0xc0,       /* SERVER_ERROR for 2 (wire.md §11) */
        0x94, 0x01, 0x09, 0xc0, 0xc0,       /* unknown msgid */
        0x94, 0x01, 0x01, 0xc0, 0xc3,       /* true for 1 */
        0x94, 0x01, 0x03, 0xc3, 0xc0,       /* error field `true` for 3 */
        0x94, 0x01, 0x01, 0xc0, 0xc2,       /* second answer to 1: ignored */
    };
    raw_send(r->fd, resp, sizeof resp);
    assert_true(wait_count(&c3.calls, 1, 3.0));
    pump(0.05);
    assert_int_equal(c1.calls, 1);
    assert_int_equal(c1.err, RPC_OK);
    assert_int_equal(c1.error_type, MSGPACK_OBJECT_NIL);
    assert_int_equal(c1.result_type, MSGPACK_OBJECT_BOOLEAN);
    assert_true(c1.b);
    assert_int_equal(c2.calls, 1);
    assert_int_equal(c2.err, RPC_SERVER_ERROR);
    assert_int_equal(c3.calls, 1);
    assert_int_equal(c3.err, RPC_OTHER_ERROR);
    assert_int_equal(c3.error_type, MSGPACK_OBJECT_BOOLEAN);

    /* msgid wraps modulo 2^32 (wire.md §4.2). */
    s->msgid = UINT32_MAX - 1;
    callrec w1 = { 0 }, w2 = { 0 };
    call_empty(s, 1, 10, &w1);
    call_empty(s, 1, 10, &w2);
    static const uint8_t wantw[] = {
        0x94, 0x00, 0xce, 0xff, 0xff, 0xff, 0xff, 0x01, 0x90,
        0x94, 0x00, 0x00, 0x01, 0x90,
    };
    raw_expect(r, wantw, sizeof wantw);
    static const uint8_t respw[] = {
        0x94, 0x01, 0x00, 0xc0, 0x07,
        0x94, 0x01, 0xce, 0xff, 0xff, 0xff, 0xff, 0xc0, 0x08,
    };
    raw_send(r->fd, respw, sizeof respw);
    assert_true(wait_count(&w1.calls, 1, 3.0));
    assert_true(wait_count(&w2.calls, 1, 3.0));
    assert_int_equal(w1.u, 8);
    assert_int_equal(w2.u, 7);

    rpc_node_free(n);
    assert_int_equal(c1.calls, 1);
    close(r->fd);
    close(lfd);
    free(r);
}

/* Raw clients → rpc node: error response bytes, acceptor handshake, port-0 init refused. */
static void test_server_envelope_and_handshake(void **state)
{
    (void)state;
    server sv;
    kaddr addr;
    rpc_node *n = server_node(&sv, &addr, RPC_ROLE_SERVER, true);

    /* Plain client: error response is exactly 94 01 03 06 c0 (wire.md §11). */
    rawbuf *r = calloc(1, sizeof *r);
    r->fd = raw_connect(&addr);
    static const uint8_t req[] = { 0x94, 0x00, 0x03, 0x05, 0x90 };
    raw_send(r->fd, req, sizeof req);
    static const uint8_t err[] = { 0x94, 0x01, 0x03, 0x06, 0xc0 };
    raw_expect(r, err, sizeof err);
    assert_false(sv.last_cluster);
    /* Unknown method, and params that are not an array: PROTOCOL_ERROR, conn stays. */
    static const uint8_t req2[] = { 0x94, 0x00, 0x04, 0x63, 0x90, 0x94, 0x00, 0x05, 0x01, 0xc0 };
    raw_send(r->fd, req2, sizeof req2);
    static const uint8_t err2[] = { 0x94, 0x01, 0x04, 0x05, 0xc0, 0x94, 0x01, 0x05, 0x05, 0xc0 };
    raw_expect(r, err2, sizeof err2);
    /* The plain client is an accepted session addressed by its TCP peer (getpeername). */
    int nclients = 0;
    rpc_node_foreach_client(n, count_fn, &nclients);
    assert_int_equal(nclients, 1);
    close(r->fd);

    /* Cluster peer 127.0.0.1:19801 role 1: we answer with our own init first. */
    memset(r, 0, sizeof *r);
    r->fd = raw_connect(&addr);
    static const uint8_t init[] = { 0x93, 0x02, 0xa6, 0x4d, 0x59, 0x7f, 0x00, 0x00, 0x01, 0x01,
                                    0x94, 0x00, 0x01, 0x06, 0x92, 0xc0, 0xc0 };
    raw_send(r->fd, init, sizeof init);
    uint8_t myinit[10] = { 0x93, 0x02, 0xa6 };
    memcpy(myinit + 3, addr.raw, 6);
    myinit[9] = 0x01;
    raw_expect(r, myinit, sizeof myinit);
    static const uint8_t ans[] = { 0x94, 0x01, 0x01, 0xc0, 0x02 };
    raw_expect(r, ans, sizeof ans);
    assert_true(sv.last_cluster);
    assert_int_equal(sv.ev.new_nodes, 1);
    assert_int_equal(sv.ev.new_role, RPC_ROLE_SERVER);
    kaddr peer;
    kaddr_set_ipv4(&peer, 0x7f000001, 19801);
    assert_true(kaddr_eq(&sv.ev.new_addr, &peer));
    rpc_session *ps = rpc_node_find_session(n, &peer);
    assert_non_null(ps);
    assert_true(rpc_session_is_connected(ps));
    assert_int_equal(rpc_session_role(ps), RPC_ROLE_SERVER);
    /* A later init on a classified connection is a too-short response: closed. */
    raw_send(r->fd, init, 10);
    assert_true(run_until(pred_eof, r, 3.0));
    close(r->fd);

    /* Init carrying port 0: closed without an answer and without new_node. */
    memset(r, 0, sizeof *r);
    r->fd = raw_connect(&addr);
    static const uint8_t init0[] = { 0x93, 0x02, 0xa6, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x01 };
    raw_send(r->fd, init0, sizeof init0);
    assert_true(run_until(pred_eof, r, 3.0));
    assert_int_equal(r->len, 0);
    assert_int_equal(sv.ev.new_nodes, 1);
    close(r->fd);

    rpc_node_free(n);
    free(r);
}

/* Cluster node → raw acceptor: init bytes first (wire.md §11), then queued calls. */
static void test_connector_handshake_bytes(void **state)
{
    (void)state;
    kaddr peer;
    int lfd = listen_any(&peer);
    kaddr self;
    kaddr_set_ipv4(&self, 0x7f000001, 19801);
    events ev = { 0 };
    rpc_config cfg = make_cfg(&self, RPC_ROLE_SERVER);
    cfg.new_node = ev_new_node;
    cfg.lost_node = ev_lost_node;
    cfg.ud = &ev;
    rpc_node *n = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(n, &peer, true);
    callrec c = { 0 };
    call_empty(s, 0, 10, &c);

    rawbuf *r = calloc(1, sizeof *r);
    r->fd = raw_accept(lfd);
    static const uint8_t want[] = { 0x93, 0x02, 0xa6, 0x4d, 0x59, 0x7f, 0x00, 0x00, 0x01, 0x01,
                                    0x94, 0x00, 0x01, 0x00, 0x90 };
    raw_expect(r, want, sizeof want);
    assert_int_equal(ev.new_nodes, 0);
    uint8_t reply[15] = { 0x93, 0x02, 0xa6 };
    memcpy(reply + 3, peer.raw, 6);
    reply[9] = 0x00;   /* a manager */
    static const uint8_t resp[] = { 0x94, 0x01, 0x01, 0xc0, 0xc2 };
    memcpy(reply + 10, resp, sizeof resp);
    raw_send(r->fd, reply, sizeof reply);
    assert_true(wait_count(&c.calls, 1, 3.0));
    assert_int_equal(c.err, RPC_OK);
    assert_false(c.b);
    assert_int_equal(ev.new_nodes, 1);
    assert_int_equal(ev.new_role, RPC_ROLE_MANAGER);
    assert_true(kaddr_eq(&ev.new_addr, &peer));
    assert_int_equal(rpc_session_role(s), RPC_ROLE_MANAGER);

    rpc_node_free(n);
    assert_int_equal(ev.lost_nodes, 0);   /* freeing is not a lost node */
    close(r->fd);
    close(lfd);
    free(r);
}

/* A connecting side whose peer answers with something other than an init closes. */
static void test_connector_requires_init(void **state)
{
    (void)state;
    kaddr peer;
    int lfd = listen_any(&peer);
    kaddr self;
    kaddr_set_ipv4(&self, 0x7f000001, 19801);
    rpc_config cfg = make_cfg(&self, RPC_ROLE_SERVER);
    cfg.connect_retry_limit = 0;
    rpc_node *n = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(n, &peer, true);
    rpc_session_ref(s);
    callrec c = { 0 };
    call_empty(s, 0, 10, &c);
    rawbuf *r = calloc(1, sizeof *r);
    r->fd = raw_accept(lfd);
    r->want = 15;
    assert_true(run_until(pred_recv, r, 3.0));
    static const uint8_t resp[] = { 0x94, 0x01, 0x01, 0xc0, 0xc2 };
    raw_send(r->fd, resp, sizeof resp);
    assert_true(run_until(pred_eof, r, 3.0));
    close(lfd);   /* the reconnect is refused */
    assert_true(wait_count(&c.calls, 1, 3.0));
    assert_int_equal(c.err, RPC_NODE_LOST);
    assert_true(rpc_session_is_lost(s));
    rpc_session_unref(s);
    rpc_node_free(n);
    close(r->fd);
    free(r);
}

/* Two cluster nodes calling each other over the handshaken session(s). */
static void test_two_cluster_nodes(void **state)
{
    (void)state;
    server sa, sb;
    kaddr aa, ab;
    rpc_node *a = server_node(&sa, &aa, RPC_ROLE_MANAGER, true);
    rpc_node *b = server_node(&sb, &ab, RPC_ROLE_SERVER, true);

    rpc_session *a2b = rpc_node_session(a, &ab, true);
    callrec c1 = { 0 };
    call_u64(a2b, 1, 41, rec_cb, &c1);
    assert_true(wait_count(&c1.calls, 1, 3.0));
    assert_int_equal(c1.err, RPC_OK);
    assert_int_equal(c1.u, 42);
    assert_true(sb.last_cluster);
    assert_true(wait_count(&sa.ev.new_nodes, 1, 3.0));
    assert_int_equal(sa.ev.new_role, RPC_ROLE_SERVER);
    assert_true(kaddr_eq(&sa.ev.new_addr, &ab));
    assert_int_equal(sb.ev.new_nodes, 1);
    assert_int_equal(sb.ev.new_role, RPC_ROLE_MANAGER);
    assert_true(kaddr_eq(&sb.ev.new_addr, &aa));

    /* B → A uses the session the handshake bound (no second connect needed). */
    rpc_session *b2a = rpc_node_find_session(b, &aa);
    assert_non_null(b2a);
    assert_true(rpc_session_is_connected(b2a));
    callrec c2 = { 0 };
    call_u64(b2a, 1, 99, rec_cb, &c2);
    assert_true(wait_count(&c2.calls, 1, 3.0));
    assert_int_equal(c2.err, RPC_OK);
    assert_int_equal(c2.u, 100);
    assert_true(sa.last_cluster);

    /* Both directions interleaved, and a server error on the way. */
    callrec c3 = { 0 }, c4 = { 0 };
    call_empty(a2b, 5, 10, &c3);
    call_empty(b2a, 6, 10, &c4);
    assert_true(wait_count(&c3.calls, 1, 3.0));
    assert_true(wait_count(&c4.calls, 1, 3.0));
    assert_int_equal(c3.err, RPC_SERVER_ERROR);
    assert_int_equal(c4.err, RPC_OK);
    assert_int_equal(c4.u, 0);
    assert_int_equal(sa.ev.new_nodes, 1);
    assert_int_equal(sb.ev.new_nodes, 1);
    int na = 0, nb = 0, nc = 0;
    rpc_node_foreach_cluster(a, count_fn, &na);
    rpc_node_foreach_cluster(b, count_fn, &nb);
    rpc_node_foreach_client(a, count_fn, &nc);
    assert_int_equal(na, 1);
    assert_int_equal(nb, 1);
    assert_int_equal(nc, 0);

    rpc_node_free(a);
    rpc_node_free(b);
    assert_int_equal(c1.calls + c2.calls + c3.calls + c4.calls, 4);
}

/* 500 pipelined calls answered in reverse order are all matched. */
typedef struct pipe_ctx {
    int done;
    int wrong;
    int errs;
    int seen[500];
} pipe_ctx;

static pipe_ctx *g_pipe;
static void pipe_cb(rpc_session *s, const rpc_result *r, void *ud)
{
    (void)s;
    uintptr_t i = (uintptr_t)ud;
    g_pipe->done++;
    g_pipe->seen[i]++;
    if (r->err != RPC_OK)
        g_pipe->errs++;
    else if (r->result->type != MSGPACK_OBJECT_POSITIVE_INTEGER || r->result->via.u64 != i * 3 + 1)
        g_pipe->wrong++;
}

static void test_pipelined_out_of_order(void **state)
{
    (void)state;
    enum { N = 500 };
    server *sv = calloc(1, sizeof *sv);
    kaddr addr;
    rpc_node *srv = server_node(sv, &addr, RPC_ROLE_SERVER, true);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    rpc_node *cli = rpc_node_new(L, &cfg);
    pipe_ctx *pc = calloc(1, sizeof *pc);
    g_pipe = pc;
    rpc_session *s = rpc_node_session(cli, &addr, false);
    for (uintptr_t i = 0; i < N; i++)
        call_u64(s, 2, i * 3, pipe_cb, (void *)i);
    assert_true(wait_count(&sv->ndeferred, N, 5.0));
    assert_int_equal(pc->done, 0);
    assert_false(sv->last_cluster);
    for (int i = N - 1; i >= 0; i--) {
        rpc_reply_u64(sv->deferred_s[i], sv->deferred_id[i], sv->deferred_v[i] + 1);
        /* Flush mid-way sometimes so replies straddle several reads. */
        if (i % 97 == 0)
            pump(0.001);
    }
    assert_true(wait_count(&pc->done, N, 5.0));
    assert_int_equal(pc->wrong, 0);
    assert_int_equal(pc->errs, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(pc->seen[i], 1);
    server_drop_deferred(sv);
    rpc_node_free(cli);
    rpc_node_free(srv);
    free(pc);
    free(sv);
}

/* Counts errors per call; asserts exactly-once delivery. */
typedef struct lost_ctx {
    int calls[64];
    int err[64];
    int total;
} lost_ctx;

static lost_ctx *g_lost;
static void lost_cb(rpc_session *s, const rpc_result *r, void *ud)
{
    (void)s;
    uintptr_t i = (uintptr_t)ud;
    g_lost->calls[i]++;
    g_lost->err[i] = r->err;
    g_lost->total++;
}

/* Plain client: the server dies with calls pending → all get NODE_LOST once; the next
 * rpc_node_session gives a fresh session. */
static void test_peer_killed_plain(void **state)
{
    (void)state;
    server *sv = calloc(1, sizeof *sv);
    kaddr addr;
    rpc_node *srv = server_node(sv, &addr, RPC_ROLE_SERVER, true);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    rpc_node *cli = rpc_node_new(L, &cfg);
    lost_ctx lc = { { 0 } };
    g_lost = &lc;
    rpc_session *s = rpc_node_session(cli, &addr, false);
    for (uintptr_t i = 0; i < 20; i++)
        call_u64(s, 2, i, lost_cb, (void *)i);
    assert_true(wait_count(&sv->ndeferred, 20, 3.0));
    server_drop_deferred(sv);
    rpc_node_free(srv);   /* closes the listener and every connection */
    assert_true(wait_count(&lc.total, 20, 3.0));
    pump(0.05);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(lc.calls[i], 1);
        assert_int_equal(lc.err[i], RPC_NODE_LOST);
    }
    rpc_session *s2 = rpc_node_session(cli, &addr, false);
    assert_false(rpc_session_is_lost(s2));
    rpc_node_free(cli);
    assert_int_equal(lc.total, 20);
    free(sv);
}

/* Cluster peer dies: reconnects are refused, pending calls get NODE_LOST and lost_node
 * fires with the peer's role and address. */
static void test_peer_killed_cluster(void **state)
{
    (void)state;
    server *sv = calloc(1, sizeof *sv);
    server *me = calloc(1, sizeof *me);
    kaddr addr, myaddr;
    rpc_node *srv = server_node(sv, &addr, RPC_ROLE_SERVER, true);
    rpc_node *cli = server_node(me, &myaddr, RPC_ROLE_MANAGER, true);
    lost_ctx lc = { { 0 } };
    g_lost = &lc;
    rpc_session *s = rpc_node_session(cli, &addr, true);
    for (uintptr_t i = 0; i < 10; i++)
        call_u64(s, 2, i, lost_cb, (void *)i);
    assert_true(wait_count(&sv->ndeferred, 10, 3.0));
    assert_true(wait_count(&me->ev.new_nodes, 1, 3.0));
    server_drop_deferred(sv);
    rpc_node_free(srv);
    assert_true(wait_count(&me->ev.lost_nodes, 1, 5.0));
    assert_int_equal(me->ev.lost_role, RPC_ROLE_SERVER);
    assert_true(kaddr_eq(&me->ev.lost_addr, &addr));
    assert_int_equal(lc.total, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(lc.calls[i], 1);
        assert_int_equal(lc.err[i], RPC_NODE_LOST);
    }
    assert_null(rpc_node_find_session(cli, &addr));
    pump(0.05);
    rpc_node_free(cli);
    assert_int_equal(me->ev.lost_nodes, 1);
    assert_int_equal(lc.total, 10);
    free(sv);
    free(me);
}

/* rpc_node_free with calls pending: TRANSPORT_LOST exactly once each, and a call made on a
 * session the user still references after its loss fails later, not inside rpc_call_end. */
static void test_node_free_delivers_transport_lost(void **state)
{
    (void)state;
    server *sv = calloc(1, sizeof *sv);
    kaddr addr;
    rpc_node *srv = server_node(sv, &addr, RPC_ROLE_SERVER, true);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    rpc_node *cli = rpc_node_new(L, &cfg);
    lost_ctx lc = { { 0 } };
    g_lost = &lc;
    rpc_session *s = rpc_node_session(cli, &addr, false);
    for (uintptr_t i = 0; i < 8; i++)
        call_u64(s, 2, i, lost_cb, (void *)i);
    assert_true(wait_count(&sv->ndeferred, 8, 3.0));
    /* A never-connected session's queued call fails too. */
    kaddr other;
    closed_port(&other);
    rpc_session *s2 = rpc_node_session(cli, &other, true);
    call_u64(s2, 1, 1, lost_cb, (void *)8);
    rpc_node_free(cli);
    assert_int_equal(lc.total, 9);
    for (int i = 0; i < 9; i++) {
        assert_int_equal(lc.calls[i], 1);
        assert_int_equal(lc.err[i], RPC_TRANSPORT_LOST);
    }
    /* The server sees the client go; answering the dropped session is harmless. */
    pump(0.05);
    for (int i = 0; i < sv->ndeferred; i++)
        rpc_reply_nil(sv->deferred_s[i], sv->deferred_id[i]);
    pump(0.05);
    server_drop_deferred(sv);
    rpc_node_free(srv);
    free(sv);
}

/* Garbage on the listening port closes only that connection. */
static void test_garbage_closes_connection(void **state)
{
    (void)state;
    server sv;
    kaddr addr;
    rpc_node *n = server_node(&sv, &addr, RPC_ROLE_SERVER, true);
    static const struct {
        const char *bytes;
        size_t len;
    } junk[] = {
        { "garbage\r\n", 9 },
        { "\xc1\xc1\xc1", 3 },                         /* never-used byte */
        { "\x92\x00\x01", 3 },                         /* too short */
        { "\x94\x00\xa1x\x01\x90", 6 },                /* msgid not an integer */
        { "\x94\xcd\x01\x00\x01\xc0\xc0", 7 },         /* type 256: a response (kept) */
        { "\x94\xce\x00\x01\x00\x00\x01\xc0\xc0", 9 }, /* type 65536 */
        { "\x93\x02\xa3\x01\x02\x03\x01", 7 },         /* init with a 3-byte address */
        { "\x81\xa1k\x01", 4 },                        /* a map */
        { "\x94\x00\xff\x01\x90", 5 },                 /* negative msgid */
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        rawbuf *r = calloc(1, sizeof *r);
        r->fd = raw_connect(&addr);
        raw_send(r->fd, junk[i].bytes, junk[i].len);
        if (i == 4) {
            /* type 256 is a (valid) response to an unknown msgid: dropped, conn stays. */
            pump(0.05);
            assert_false(pred_eof(r));
        } else {
            assert_true(run_until(pred_eof, r, 3.0));
        }
        close(r->fd);
        free(r);
    }
    assert_int_equal(sv.requests, 0);

    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    rpc_node *cli = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(cli, &addr, false);
    callrec c = { 0 };
    call_u64(s, 1, 10, rec_cb, &c);
    assert_true(wait_count(&c.calls, 1, 3.0));
    assert_int_equal(c.err, RPC_OK);
    assert_int_equal(c.u, 11);
    rpc_node_free(cli);
    rpc_node_free(n);
}

/* Connect to a closed port: -Yn 2 → three attempts, then NODE_LOST; lost_node does not
 * fire because the role was never learned; the call on the kept session fails later. */
static void test_connect_refused(void **state)
{
    (void)state;
    kaddr addr;
    closed_port(&addr);
    kaddr self;
    kaddr_set_ipv4(&self, 0x7f000001, 19801);
    events ev = { 0 };
    rpc_config cfg = make_cfg(&self, RPC_ROLE_SERVER);
    cfg.connect_timeout = 0.2;
    cfg.connect_retry_limit = 2;
    cfg.new_node = ev_new_node;
    cfg.lost_node = ev_lost_node;
    cfg.ud = &ev;
    rpc_node *n = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(n, &addr, true);
    rpc_session_ref(s);
    callrec c = { 0 };
    double t0 = ev_time();
    call_empty(s, 1, 10, &c);
    assert_true(wait_count(&c.calls, 1, 3.0));
    assert_true(ev_time() - t0 < 2.0);
    assert_int_equal(c.err, RPC_NODE_LOST);
    assert_true(rpc_session_is_lost(s));
    assert_int_equal(s->retry, 3);
    assert_int_equal(ev.lost_nodes, 0);

    callrec c2 = { 0 };
    call_empty(s, 1, 10, &c2);
    assert_int_equal(c2.calls, 0);   /* "later", never inside rpc_call_end */
    assert_true(wait_count(&c2.calls, 1, 1.0));
    assert_int_equal(c2.err, RPC_NODE_LOST);
    rpc_session *fresh = rpc_node_session(n, &addr, true);
    assert_ptr_not_equal(fresh, s);
    assert_false(rpc_session_is_lost(fresh));
    rpc_session_unref(s);
    rpc_node_free(n);
}

/* A peer that never completes the TCP handshake (listener backlog full, SYNs dropped):
 * each attempt is cut by -Ys and the call fails after -Yn + 1 attempts. */
static void test_connect_timeout(void **state)
{
    (void)state;
    kaddr addr;
    int lfd = listen_any(&addr);
    assert_int_equal(listen(lfd, 0), 0);
    int fill[4];
    int nfill = 0;
    for (; nfill < 4; nfill++) {   /* fill the accept queue; later connects stay pending */
        fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_storage ss;
        socklen_t sl = kaddr_to_sockaddr(&addr, &ss);
        (void)connect(fill[nfill], (struct sockaddr *)&ss, sl);
    }
    pump(0.05);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    cfg.connect_timeout = 0.2;
    cfg.connect_retry_limit = 1;
    rpc_node *n = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(n, &addr, false);
    callrec c = { 0 };
    double t0 = ev_time();
    call_empty(s, 1, 10, &c);
    assert_true(wait_count(&c.calls, 1, 5.0));
    double dt = ev_time() - t0;
    assert_int_equal(c.err, RPC_NODE_LOST);
    if (dt < 0.35)
        skip();   /* this kernel completed the handshakes anyway: nothing timed out */
    assert_true(dt < 1.0);
    rpc_node_free(n);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(lfd);
}

/* Large messages both ways: socket back-pressure (EAGAIN → write watcher) and unpacker
 * growth; every echo comes back intact and raw lengths use only a0-bf/da/db. */
typedef struct big_ctx {
    int done;
    int bad;
} big_ctx;

static void big_cb(rpc_session *s, const rpc_result *r, void *ud)
{
    (void)s;
    big_ctx *b = ud;
    b->done++;
    if (r->err != RPC_OK || r->result->type != MSGPACK_OBJECT_STR) {
        b->bad++;
        return;
    }
    const msgpack_object_str *str = &r->result->via.str;
    uint8_t fill = str->size ? (uint8_t)str->ptr[0] : 0;
    for (uint32_t i = 0; i < str->size; i++)
        if ((uint8_t)str->ptr[i] != fill) {
            b->bad++;
            return;
        }
}

static void test_large_messages(void **state)
{
    (void)state;
    server *sv = calloc(1, sizeof *sv);
    kaddr addr;
    rpc_node *srv = server_node(sv, &addr, RPC_ROLE_SERVER, true);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    rpc_node *cli = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(cli, &addr, false);
    enum { N = 120, SZ = 300 * 1024 };
    char *blob = malloc(SZ);
    big_ctx b = { 0 };
    for (int i = 0; i < N; i++) {
        uint32_t len = (uint32_t)(i % 3 == 0 ? 31 : i % 3 == 1 ? 40000 : SZ);
        memset(blob, 'a' + i % 26, len);
        msgpack_packer *pk = rpc_call_begin(s, 7, 10, big_cb, &b);
        msgpack_pack_array(pk, 1);
        msgpack_pack_v4raw(pk, len);
        msgpack_pack_v4raw_body(pk, blob, len);
        rpc_call_end(s);
    }
    assert_true(wait_count(&b.done, N, 10.0));
    assert_int_equal(b.bad, 0);
    assert_int_equal(sv->requests, N);

    /* The raw form on the wire: 31 → a0|31, 32 → da 0020, 65536 → db 00010000. */
    int lfd = listen_any(&addr);
    rpc_session *rs = rpc_node_session(cli, &addr, false);
    static const uint32_t lens[] = { 31, 32, 65536 };
    for (int i = 0; i < 3; i++) {
        msgpack_packer *pk = rpc_call_begin(rs, 1, 10, NULL, NULL);
        msgpack_pack_array(pk, 1);
        msgpack_pack_v4raw(pk, lens[i]);
        msgpack_pack_v4raw_body(pk, blob, lens[i]);
        rpc_call_end(rs);
    }
    rawbuf *r = calloc(1, sizeof *r);
    r->fd = raw_accept(lfd);
    static const uint8_t h1[] = { 0x94, 0x00, 0x01, 0x01, 0x91, 0xbf };
    raw_expect(r, h1, sizeof h1);
    r->pos += 31;
    static const uint8_t h2[] = { 0x94, 0x00, 0x02, 0x01, 0x91, 0xda, 0x00, 0x20 };
    raw_expect(r, h2, sizeof h2);
    r->pos += 32;
    static const uint8_t h3[] = { 0x94, 0x00, 0x03, 0x01, 0x91, 0xdb, 0x00, 0x01, 0x00, 0x00 };
    raw_expect(r, h3, sizeof h3);
    close(r->fd);
    close(lfd);
    free(r);
    free(blob);
    rpc_node_free(cli);
    rpc_node_free(srv);
    free(sv);
}

/* A peer streaming one endless object is cut off at the 64 MiB cap; the node lives.  The
 * object is an array of 1 MiB strings, so every header is modest and the cap is reached by
 * bytes actually sent (a single huge string header is refused at once, see
 * test_hostile_headers_close_only_that_connection). */
static void test_oversized_message_closes(void **state)
{
    (void)state;
    server sv;
    kaddr addr;
    rpc_node *n = server_node(&sv, &addr, RPC_ROLE_SERVER, true);
    int fd = raw_connect(&addr);
    static const uint8_t head[] = { 0x94, 0x00, 0x01, 0x01, 0xdc, 0x10, 0x00 };   /* 4096 */
    raw_send(fd, head, sizeof head);
    size_t chunk = 1 << 20;   /* db <len> + body: one whole array element */
    char *zeros = calloc(1, chunk);
    static const uint8_t raw_head[] = { 0xdb, 0x00, 0x0f, 0xff, 0xfb };   /* 2^20 - 5 */
    memcpy(zeros, raw_head, sizeof raw_head);
    size_t sent = 0;
    bool closed = false;
    ev_now_update(L);
    double end = ev_time() + 20.0;
    while (!closed && ev_time() < end && sent < (size_t)100 << 20) {
        size_t off = sent % chunk;   /* resume a partial send where it stopped */
        ssize_t w = send(fd, zeros + off, chunk - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0)
            sent += (size_t)w;
        else if (errno == EPIPE || errno == ECONNRESET)
            closed = true;
        pump(0.002);
    }
    assert_true(closed);
    assert_true(sent > (size_t)60 << 20);
    assert_int_equal(sv.requests, 0);
    free(zeros);
    close(fd);
    /* Still serving. */
    rawbuf *r = calloc(1, sizeof *r);
    r->fd = raw_connect(&addr);
    static const uint8_t req[] = { 0x94, 0x00, 0x02, 0x06, 0x90 };
    raw_send(r->fd, req, sizeof req);
    static const uint8_t ans[] = { 0x94, 0x01, 0x02, 0xc0, 0x00 };
    raw_expect(r, ans, sizeof ans);
    close(r->fd);
    free(r);
    rpc_node_free(n);
}

/* Step timeouts (algorithms.md §1): Ci 0.1 → one step per 0.5 s; budget N → (N+1)-th step. */
static void test_timeout_steps(void **state)
{
    (void)state;
    server *sv = calloc(1, sizeof *sv);
    kaddr addr;
    rpc_node *srv = server_node(sv, &addr, RPC_ROLE_SERVER, true);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    cfg.clock_interval = 0.1;   /* one step every 0.5 s */
    rpc_node *cli = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(cli, &addr, false);
    callrec c = { 0 }, quick = { 0 };
    double t0 = ev_time();
    msgpack_packer *pk = rpc_call_begin(s, 2, 2, rec_cb, &c);   /* never answered */
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint8(pk, 0);
    rpc_call_end(s);
    call_u64(s, 1, 5, rec_cb, &quick);
    assert_true(wait_count(&quick.calls, 1, 2.0));
    assert_int_equal(quick.err, RPC_OK);
    assert_true(wait_count(&c.calls, 1, 3.0));
    double dt = ev_time() - t0;
    assert_int_equal(c.err, RPC_TIMEOUT);
    /* Budget 2: times out at the 3rd step, i.e. after more than 2 and at most 3 periods. */
    assert_true(dt > 0.95);
    assert_true(dt < 1.5 + 0.3);
    /* A late answer is dropped silently. */
    assert_int_equal(sv->ndeferred, 1);
    rpc_reply_u64(sv->deferred_s[0], sv->deferred_id[0], 1);
    pump(0.1);
    assert_int_equal(c.calls, 1);
    assert_false(rpc_session_is_lost(s));
    server_drop_deferred(sv);
    rpc_node_free(cli);
    rpc_node_free(srv);
    free(sv);
}

/* Deadlines in seconds (rpc_call_begin_timed) end a call long before the step timer
 * would; the session counts it as a timeout until the peer answers anything again, and
 * answered calls feed its round-trip estimate. */
static void test_timed_call_deadline_and_rtt(void **state)
{
    (void)state;
    server *sv = calloc(1, sizeof *sv);
    kaddr addr;
    rpc_node *srv = server_node(sv, &addr, RPC_ROLE_SERVER, true);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    cfg.clock_interval = 2;   /* one step every 2.5 s: budget 10 = 25 s */
    rpc_node *cli = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(cli, &addr, false);
    double srtt, var;
    assert_false(rpc_session_rtt(s, &srtt, &var));
    callrec quick = { 0 }, c = { 0 };
    call_u64(s, 1, 5, rec_cb, &quick);
    assert_true(wait_count(&quick.calls, 1, 2.0));
    assert_true(rpc_session_rtt(s, &srtt, &var));
    assert_true(srtt > 0 && srtt < 1.0);
    double t0 = ev_time();
    msgpack_packer *pk = rpc_call_begin_timed(s, 2, 0.2, rec_cb, &c);   /* never answered */
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint8(pk, 0);
    rpc_call_end(s);
    assert_true(wait_count(&c.calls, 1, 2.0));
    assert_int_equal(c.err, RPC_TIMEOUT);
    assert_true(ev_time() - t0 >= 0.2 - 0.01);
    assert_int_equal(rpc_session_timeouts(s), 1);
    assert_false(rpc_session_is_lost(s));
    /* the late answer is dropped but shows the peer is alive */
    assert_int_equal(sv->ndeferred, 1);
    rpc_reply_u64(sv->deferred_s[0], sv->deferred_id[0], 1);
    pump(0.1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(rpc_session_timeouts(s), 0);
    server_drop_deferred(sv);
    rpc_node_free(cli);
    rpc_node_free(srv);
    free(sv);
}

/* A response split byte by byte across reads is reassembled. */
static void test_fragmented_input(void **state)
{
    (void)state;
    server sv;
    kaddr addr;
    rpc_node *n = server_node(&sv, &addr, RPC_ROLE_SERVER, true);
    rawbuf *r = calloc(1, sizeof *r);
    r->fd = raw_connect(&addr);
    static const uint8_t req[] = { 0x94, 0x00, 0x07, 0x01, 0x91, 0xcd, 0x01, 0x00 };
    for (size_t i = 0; i < sizeof req; i++) {
        raw_send(r->fd, req + i, 1);
        pump(0.005);
    }
    static const uint8_t ans[] = { 0x94, 0x01, 0x07, 0xc0, 0xcd, 0x01, 0x01 };
    raw_expect(r, ans, sizeof ans);
    close(r->fd);
    free(r);
    rpc_node_free(n);
}

/* ------------------------------------------------------------------ mpscan */

#define RPC_LIMIT_MESSAGE (64u * 1024 * 1024)   /* rpc_conn.c's limits */
#define RPC_LIMIT_ELEMENTS 65536u

/* Scan n bytes in one call. */
static enum mpscan_error scan_whole(const void *p, size_t n, size_t cap, uint32_t elems)
{
    mpscan sc;
    mpscan_init(&sc, cap, elems);
    return mpscan_execute(&sc, p, n);
}

/* Scan n bytes one call per byte; *at gets the index of the byte that failed (n if none). */
static enum mpscan_error scan_bytewise(const void *p, size_t n, size_t cap, uint32_t elems,
                                       size_t *at)
{
    mpscan sc;
    mpscan_init(&sc, cap, elems);
    for (size_t i = 0; i < n; i++) {
        enum mpscan_error e = mpscan_execute(&sc, (const uint8_t *)p + i, 1);
        if (e != MPSCAN_OK) {
            *at = i;
            return e;
        }
    }
    *at = n;
    return MPSCAN_OK;
}

/* Objects msgpack-c allocates for o's containers (a map pair is two). */
static uint64_t count_elems(const msgpack_object *o)
{
    uint64_t n = 0;
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        n = o->via.array.size;
        for (uint32_t i = 0; i < o->via.array.size; i++)
            n += count_elems(&o->via.array.ptr[i]);
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        n = 2 * (uint64_t)o->via.map.size;
        for (uint32_t i = 0; i < o->via.map.size; i++)
            n += count_elems(&o->via.map.ptr[i].key) + count_elems(&o->via.map.ptr[i].val);
    }
    return n;
}

/* Pack one message of every msgpack format into its own buffer. */
enum { NVALID = 47 };
static size_t make_valid_messages(msgpack_sbuffer *out)
{
    static char blob[70000];
    memset(blob, 'x', sizeof blob);
    size_t k = 0;
    msgpack_packer pk;
#define NEXT() \
    (msgpack_sbuffer_init(&out[k]), msgpack_packer_init(&pk, &out[k++], msgpack_sbuffer_write))
    NEXT(); msgpack_pack_nil(&pk);
    NEXT(); msgpack_pack_true(&pk);
    NEXT(); msgpack_pack_false(&pk);
    NEXT(); msgpack_pack_uint8(&pk, 0x7f);                      /* positive fixint */
    NEXT(); msgpack_pack_int8(&pk, -32);                        /* negative fixint */
    NEXT(); msgpack_pack_uint8(&pk, 200);                       /* cc */
    NEXT(); msgpack_pack_uint16(&pk, 0x1234);                   /* cd */
    NEXT(); msgpack_pack_uint32(&pk, 0x12345678);               /* ce */
    NEXT(); msgpack_pack_uint64(&pk, (uint64_t)1 << 40);        /* cf */
    NEXT(); msgpack_pack_int8(&pk, -100);                       /* d0 */
    NEXT(); msgpack_pack_int16(&pk, -1000);                     /* d1 */
    NEXT(); msgpack_pack_int32(&pk, -100000);                   /* d2 */
    NEXT(); msgpack_pack_int64(&pk, -((int64_t)1 << 40));       /* d3 */
    NEXT(); msgpack_pack_float(&pk, 1.5f);                      /* ca */
    NEXT(); msgpack_pack_double(&pk, 2.5);                      /* cb */
    NEXT(); msgpack_pack_str_with_body(&pk, "", 0);             /* a0 */
    NEXT(); msgpack_pack_str_with_body(&pk, blob, 31);          /* bf */
    NEXT(); msgpack_pack_str_with_body(&pk, blob, 40);          /* d9 */
    NEXT(); msgpack_pack_str_with_body(&pk, blob, 300);         /* da */
    NEXT(); msgpack_pack_str_with_body(&pk, blob, 70000);       /* db */
    NEXT(); msgpack_pack_str_with_body(&pk, "", 0);
    msgpack_sbuffer_clear(&out[k - 1]);
    msgpack_sbuffer_write(&out[k - 1], "\xd9\x00", 2);          /* str 8 of length 0 */
    NEXT(); msgpack_pack_bin_with_body(&pk, blob, 0);           /* c4 00 */
    NEXT(); msgpack_pack_bin_with_body(&pk, blob, 10);          /* c4 */
    NEXT(); msgpack_pack_bin_with_body(&pk, blob, 300);         /* c5 */
    NEXT(); msgpack_pack_bin_with_body(&pk, blob, 70000);       /* c6 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 1, 7);        /* d4 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 2, 7);        /* d5 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 4, 7);        /* d6 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 8, 7);        /* d7 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 16, 7);       /* d8 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 0, 7);        /* c7 00 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 3, 7);        /* c7 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 300, 7);      /* c8 */
    NEXT(); msgpack_pack_ext_with_body(&pk, blob, 70000, 7);    /* c9 */
    NEXT(); msgpack_pack_array(&pk, 0);                         /* 90 */
    NEXT(); msgpack_pack_map(&pk, 0);                           /* 80 */
    NEXT(); msgpack_pack_array(&pk, 20);                        /* dc */
    for (int i = 0; i < 20; i++)
        msgpack_pack_uint8(&pk, (uint8_t)i);
    NEXT(); msgpack_pack_map(&pk, 20);                          /* de */
    for (int i = 0; i < 20; i++) {
        msgpack_pack_uint8(&pk, (uint8_t)i);
        msgpack_pack_array(&pk, 0);
    }
    NEXT(); msgpack_sbuffer_write(&out[k - 1], "\xdd\x00\x00\x00\x02\x01\xa1z", 8);   /* array 32 */
    NEXT(); msgpack_sbuffer_write(&out[k - 1], "\xdf\x00\x00\x00\x01\x01\x90", 7);    /* map 32 */
    NEXT(); msgpack_sbuffer_write(&out[k - 1], "\xdc\x00\x00", 3);                    /* empty 16 */
    NEXT(); msgpack_sbuffer_write(&out[k - 1], "\xdf\x00\x00\x00\x00", 5);            /* empty 32 */
    NEXT();   /* a request envelope: [0, msgid, 35 (Set), [key, value, 0]] */
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint8(&pk, 0);
    msgpack_pack_uint32(&pk, 77777);
    msgpack_pack_uint8(&pk, 35);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_v4raw(&pk, 13);
    msgpack_pack_v4raw_body(&pk, blob, 13);
    msgpack_pack_v4raw(&pk, 5000);
    msgpack_pack_v4raw_body(&pk, blob, 5000);
    msgpack_pack_uint8(&pk, 0);
    NEXT();   /* mixed nesting: {[1, {2: [nil]}]: [[], {}, ext], "k": -1.0} */
    msgpack_pack_map(&pk, 2);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_uint8(&pk, 2);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_map(&pk, 0);
    msgpack_pack_ext_with_body(&pk, blob, 5, 1);
    msgpack_pack_str_with_body(&pk, "k", 1);
    msgpack_pack_double(&pk, -1.0);
    NEXT();   /* the deepest msgpack-c accepts: 32 open containers, then a leaf */
    for (int i = 0; i < MPSCAN_MAX_DEPTH; i++)
        msgpack_pack_array(&pk, 1);
    msgpack_pack_uint8(&pk, 1);
    NEXT();   /* 32 deep, closing and reopening: [[..[1, [2]]..]] */
    for (int i = 0; i < MPSCAN_MAX_DEPTH - 1; i++)
        msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint8(&pk, 2);
    for (int i = 0; i < MPSCAN_MAX_DEPTH - 2; i++)
        msgpack_pack_map(&pk, 0);
    NEXT(); msgpack_pack_map(&pk, 1);                           /* a map whose key is a map */
    msgpack_pack_map(&pk, 1);
    msgpack_pack_nil(&pk);
    msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, 0);
#undef NEXT
    assert_int_equal(k, NVALID);
    return k;
}

/* mpscan_complete marks where each message of a stream ends, fed in any split (byte by
 * byte here), and mpscan_message_need never asks for more than the message in progress:
 * the RPC connection decodes a message only once it is whole and reserves room for it. */
static void test_mpscan_message_boundaries(void **state)
{
    (void)state;
    msgpack_sbuffer m[NVALID];
    size_t nm = make_valid_messages(m);
    mpscan s;
    mpscan_init(&s, RPC_LIMIT_MESSAGE, RPC_LIMIT_ELEMENTS);
    uint64_t start = 0;
    for (size_t i = 0; i < nm; i++) {
        const char *p = m[i].data;
        size_t len = m[i].size;
        for (size_t k = 0; k < len; k++) {
            assert_int_equal(mpscan_complete(&s), start);
            if (k > 0) {
                uint64_t need = mpscan_message_need(&s);
                assert_true(need > k && need <= len);
            }
            assert_int_equal(mpscan_execute(&s, p + k, 1), MPSCAN_OK);
        }
        start += len;
        assert_int_equal(mpscan_complete(&s), start);
        assert_int_equal(mpscan_message_need(&s), 0);
    }
    for (size_t i = 0; i < nm; i++)
        msgpack_sbuffer_destroy(&m[i]);
}

/* Every msgpack format passes, whole and byte by byte; the size and element limits are
 * exact (a message of L bytes and E elements passes with limits L, E and fails with L-1
 * or E-1), and a stream of all of them passes, so message boundaries match msgpack-c's. */
static void test_mpscan_accepts_valid_messages(void **state)
{
    (void)state;
    msgpack_sbuffer m[NVALID];
    size_t nm = make_valid_messages(m);
    msgpack_sbuffer all;
    msgpack_sbuffer_init(&all);
    size_t maxlen = 0;
    for (size_t i = 0; i < nm; i++) {
        const char *p = m[i].data;
        size_t len = m[i].size, at;
        /* the vector itself: exactly one message according to msgpack-c */
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&u, p, len, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, len);
        uint64_t elems = count_elems(&u.data);
        msgpack_unpacked_destroy(&u);

        assert_int_equal(scan_whole(p, len, RPC_LIMIT_MESSAGE, RPC_LIMIT_ELEMENTS), MPSCAN_OK);
        assert_int_equal(scan_bytewise(p, len, RPC_LIMIT_MESSAGE, RPC_LIMIT_ELEMENTS, &at),
                         MPSCAN_OK);
        assert_int_equal(scan_whole(p, len, len, (uint32_t)elems), MPSCAN_OK);
        assert_int_equal(scan_bytewise(p, len, len, (uint32_t)elems, &at), MPSCAN_OK);
        if (len > 1) {
            if (scan_whole(p, len, len - 1, (uint32_t)elems) != MPSCAN_TOO_LARGE)
                fail_msg("message %zu (%zu bytes) passed a %zu-byte limit", i, len, len - 1);
            assert_int_equal(scan_bytewise(p, len, len - 1, (uint32_t)elems, &at),
                             MPSCAN_TOO_LARGE);
        }
        if (elems > 0)
            assert_int_equal(scan_whole(p, len, len, (uint32_t)elems - 1), MPSCAN_TOO_MANY);
        msgpack_sbuffer_write(&all, p, len);
        if (len > maxlen)
            maxlen = len;
    }
    /* Back to back: each message gets the full limit again. */
    size_t at;
    assert_int_equal(scan_whole(all.data, all.size, maxlen, 200), MPSCAN_OK);
    assert_int_equal(scan_bytewise(all.data, all.size, maxlen, 200, &at), MPSCAN_OK);
    mpscan sc;   /* odd splits */
    mpscan_init(&sc, maxlen, 200);
    for (size_t off = 0, step = 1; off < all.size; off += step, step = step * 3 % 1009 + 1) {
        size_t n = off + step > all.size ? all.size - off : step;
        assert_int_equal(mpscan_execute(&sc, all.data + off, n), MPSCAN_OK);
    }
    for (size_t i = 0; i < nm; i++)
        msgpack_sbuffer_destroy(&m[i]);
    msgpack_sbuffer_destroy(&all);
}

/* Headers announcing more than the message limit are refused on their last byte, before
 * anything else arrives: the reports' 2^32-element array and map, 4 GiB strings, and a
 * count that fits the 64 MiB budget but would still make msgpack-c reserve 1.5 GiB. */
static void test_mpscan_rejects_huge_headers(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        enum mpscan_error rpc;      /* with rpc_conn.c's limits */
        enum mpscan_error nocount;  /* 64 MiB, element count unlimited */
    } bad[] = {
        { "\x94\x00\x01\x22\xdd\xff\xff\xff\xff", 9, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },
        { "\x94\x00\x01\x22\xdf\xff\xff\xff\xff", 9, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },
        { "\xdd\x04\x00\x00\x00", 5, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },      /* 2^26 */
        { "\xdf\x02\x00\x00\x00", 5, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },      /* 2^25 pairs */
        { "\x91\x91\x91\xdd\xff\xff\xff\xff", 8, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },
        { "\x92\xde\x00\x10\x92\xdf\xff\xff\xff\xff", 10, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },
        /* fit in 64 MiB, but 24 bytes of msgpack_object per element: refused by count */
        { "\x94\x00\x01\x22\xdd\x03\xff\xff\xf0", 9, MPSCAN_TOO_MANY, MPSCAN_OK },
        { "\x92\xdc\x80\x00\xdc\x80\x00", 7, MPSCAN_TOO_MANY, MPSCAN_OK },  /* in total */
        { "\xdb\xff\xff\xff\xff", 5, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },      /* str 32 */
        { "\xc6\xff\xff\xff\xff", 5, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },      /* bin 32 */
        { "\xc9\xff\xff\xff\xff", 5, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },      /* ext 32 */
        { "\x94\x00\x01\x01\x91\xdb\x04\x00\x00\x00", 10, MPSCAN_TOO_LARGE, MPSCAN_TOO_LARGE },
        { "\xc1", 1, MPSCAN_BAD_BYTE, MPSCAN_BAD_BYTE },
        { "\x94\x00\x01\xc1", 4, MPSCAN_BAD_BYTE, MPSCAN_BAD_BYTE },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t at;
        assert_int_equal(scan_whole(bad[i].bytes, bad[i].len, RPC_LIMIT_MESSAGE,
                                    RPC_LIMIT_ELEMENTS), bad[i].rpc);
        assert_int_equal(scan_bytewise(bad[i].bytes, bad[i].len, RPC_LIMIT_MESSAGE,
                                       RPC_LIMIT_ELEMENTS, &at), bad[i].rpc);
        assert_int_equal(at, bad[i].len - 1);   /* on the header's last byte */
        assert_int_equal(scan_whole(bad[i].bytes, bad[i].len, RPC_LIMIT_MESSAGE, UINT32_MAX),
                         bad[i].nocount);
    }

    /* The budget counts one byte per pending element (two per pair), the header itself
     * and what enclosing containers still owe.  Limit 100: */
    static const struct {
        const char *bytes;
        size_t len;
        enum mpscan_error want;
    } edge[] = {
        { "\xdc\x00\x61", 3, MPSCAN_OK },              /* 3 + 97 = 100 */
        { "\xdc\x00\x62", 3, MPSCAN_TOO_LARGE },       /* 101 */
        { "\xde\x00\x30", 3, MPSCAN_OK },              /* 3 + 2 * 48 = 99 */
        { "\xde\x00\x31", 3, MPSCAN_TOO_LARGE },       /* 101 */
        { "\x92\xdc\x00\x5f", 4, MPSCAN_OK },          /* 4 + 95 + 1 (the outer's 2nd) */
        { "\x92\xdc\x00\x60", 4, MPSCAN_TOO_LARGE },
        { "\x92\xda\x00\x5f", 4, MPSCAN_OK },          /* a 95-byte string instead */
        { "\x92\xda\x00\x60", 4, MPSCAN_TOO_LARGE },
    };
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++)
        assert_int_equal(scan_whole(edge[i].bytes, edge[i].len, 100, UINT32_MAX), edge[i].want);

    /* Errors are sticky: the stream is not resynchronised. */
    mpscan sc;
    mpscan_init(&sc, RPC_LIMIT_MESSAGE, RPC_LIMIT_ELEMENTS);
    assert_int_equal(mpscan_execute(&sc, "\xdb\xff\xff\xff\xff", 5), MPSCAN_TOO_LARGE);
    assert_int_equal(mpscan_execute(&sc, "\xc0", 1), MPSCAN_TOO_LARGE);
    assert_string_equal(mpscan_strerror(MPSCAN_TOO_DEEP), "nested too deep");
}

/* Nesting: 32 open containers is msgpack-c's limit and the scanner's; both refuse a 33rd
 * (even an empty one), and a 40-level array is stopped at its 33rd byte. */
static void test_mpscan_rejects_deep_nesting(void **state)
{
    (void)state;
    uint8_t buf[64];
    for (int depth = MPSCAN_MAX_DEPTH - 1; depth <= 40; depth++) {
        for (int last = 0; last < 2; last++) {   /* leaf: 0x01, or an empty array 0x90 */
            memset(buf, 0x91, (size_t)depth);
            buf[depth] = last ? 0x90 : 0x01;
            size_t len = (size_t)depth + 1, at;
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            bool unpacks = msgpack_unpack_next(&u, (const char *)buf, len, NULL) ==
                           MSGPACK_UNPACK_SUCCESS;
            msgpack_unpacked_destroy(&u);
            /* an empty array is a container too: msgpack-c checks the depth first */
            enum mpscan_error want = depth + last <= MPSCAN_MAX_DEPTH ? MPSCAN_OK : MPSCAN_TOO_DEEP;
            assert_int_equal(scan_whole(buf, len, RPC_LIMIT_MESSAGE, RPC_LIMIT_ELEMENTS), want);
            assert_int_equal(scan_bytewise(buf, len, RPC_LIMIT_MESSAGE, RPC_LIMIT_ELEMENTS, &at),
                             want);
            if (want != MPSCAN_OK)
                assert_int_equal(at, MPSCAN_MAX_DEPTH);
            assert_int_equal(unpacks, want == MPSCAN_OK);   /* the same verdict as msgpack-c */
        }
    }
    /* Depth is per message: closing containers frees their levels. */
    mpscan sc;
    mpscan_init(&sc, RPC_LIMIT_MESSAGE, RPC_LIMIT_ELEMENTS);
    for (int round = 0; round < 3; round++) {
        memset(buf, 0x91, MPSCAN_MAX_DEPTH);
        buf[MPSCAN_MAX_DEPTH] = 0xc0;
        assert_int_equal(mpscan_execute(&sc, buf, MPSCAN_MAX_DEPTH + 1), MPSCAN_OK);
    }
}

/* Over a real socket: each hostile header, a 40-level nested array and a garbage stream
 * close their own connection at once (nothing dispatched, no huge allocation: under ASan
 * the 2^32-element headers used to abort the process), while an established connection
 * and new ones keep working. */
static void test_hostile_headers_close_only_that_connection(void **state)
{
    (void)state;
    server sv;
    kaddr addr;
    rpc_node *n = server_node(&sv, &addr, RPC_ROLE_SERVER, true);
    rpc_config cfg = make_cfg(NULL, RPC_ROLE_NONE);
    rpc_node *cli = rpc_node_new(L, &cfg);
    rpc_session *s = rpc_node_session(cli, &addr, false);
    callrec c0 = { 0 };
    call_u64(s, 1, 1, rec_cb, &c0);
    assert_true(wait_count(&c0.calls, 1, 3.0));
    assert_int_equal(c0.err, RPC_OK);

    uint8_t nested[4 + 40 + 1];
    memcpy(nested, "\x94\x00\x01\x22", 4);
    memset(nested + 4, 0x91, 40);
    nested[44] = 0x01;
    uint8_t garbage[5000];
    srand(1234);
    garbage[0] = 0xdf;   /* a map header first: the rest is random */
    for (size_t i = 1; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)rand();
    const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        { "\x94\x00\x01\x22\xdd\xff\xff\xff\xff", 9 },   /* array of 2^32 - 1 params */
        { "\x94\x00\x01\x22\xdf\xff\xff\xff\xff", 9 },   /* map of 2^32 - 1 pairs */
        { "\x94\x00\x01\x22\xdd\x03\xff\xff\xf0", 9 },   /* 1.5 GiB of objects, fits 64 MiB */
        { "\xdb\xff\xff\xff\xff", 5 },                   /* 4 GiB string */
        { "\x93\x02\xc6\xff\xff\xff\xff", 7 },           /* 4 GiB bin in a handshake */
        { (const char *)nested, sizeof nested },
        { (const char *)garbage, sizeof garbage },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rawbuf *r = calloc(1, sizeof *r);
        r->fd = raw_connect(&addr);
        raw_send(r->fd, bad[i].bytes, bad[i].len);
        if (!run_until(pred_eof, r, 3.0))
            fail_msg("payload %zu did not close its connection", i);
        close(r->fd);
        free(r);
    }
    assert_int_equal(sv.requests, 1);

    /* The established connection is untouched; a new one works too. */
    callrec c1 = { 0 };
    call_u64(s, 1, 41, rec_cb, &c1);
    assert_true(wait_count(&c1.calls, 1, 3.0));
    assert_int_equal(c1.err, RPC_OK);
    assert_int_equal(c1.u, 42);
    rawbuf *r = calloc(1, sizeof *r);
    r->fd = raw_connect(&addr);
    static const uint8_t req[] = { 0x94, 0x00, 0x02, 0x06, 0x90 };
    raw_send(r->fd, req, sizeof req);
    static const uint8_t ans[] = { 0x94, 0x01, 0x02, 0xc0, 0x00 };
    raw_expect(r, ans, sizeof ans);
    close(r->fd);
    free(r);
    rpc_node_free(cli);
    rpc_node_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pending_table),
        cmocka_unit_test_setup_teardown(test_client_envelope_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_envelope_and_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connector_handshake_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connector_requires_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_cluster_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_out_of_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_killed_plain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_killed_cluster, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_free_delivers_transport_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_closes_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_message_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fragmented_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timed_call_deadline_and_rtt, setup, teardown),
        cmocka_unit_test(test_mpscan_accepts_valid_messages),
        cmocka_unit_test(test_mpscan_message_boundaries),
        cmocka_unit_test(test_mpscan_rejects_huge_headers),
        cmocka_unit_test(test_mpscan_rejects_deep_nesting),
        cmocka_unit_test_setup_teardown(test_hostile_headers_close_only_that_connection, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
