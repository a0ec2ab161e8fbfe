/* test_nconn.c - the connection engine (src/net/nconn.c) over real socketpairs and a
 * real libev loop: need-more, work budget, back-pressure, deferred close, peer close and
 * errors, large outputs written in pieces, refills on drain, connect. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/nconn.h"

/* A test protocol: messages are one length byte and that many bytes; each message is
 * answered with `echo` bytes of 'r' (0: none). */
typedef struct tconn {
    nconn nc;
    int msgs;                 /* messages parsed */
    size_t last_need;         /* *need set by the last "need more" */
    int need_calls;
    size_t echo;
    int close_at;             /* close inside parse at this message (0: never) */
    bool touched_after_close; /* parse kept using the connection after closing it */
    int closed_calls;
    enum nconn_end why;
    int err;
    bool freed_fd_during_parse;
    int eofs;
    /* drained refills */
    size_t refill_left;
    int refills;
    /* connect */
    int connected_calls;
    int connect_err;
} tconn;

static struct ev_loop *loop;
static nconn_group group;

static size_t t_parse(nconn *nc, const char *p, size_t len, size_t *need)
{
    tconn *t = NCONN_CONTAINER_OF(nc, tconn, nc);
    size_t want = 1 + (uint8_t)p[0];
    if (len < want) {
        *need = want;
        t->last_need = want;
        t->need_calls++;
        return 0;
    }
    t->msgs++;
    if (t->echo) {
        nbuf *out = nconn_out(nc);
        nbuf_reserve(out, t->echo);
        memset(out->data + out->len, 'r', t->echo);
        out->len += t->echo;
    }
    if (t->close_at && t->msgs == t->close_at) {
        nconn_close(nc);
        /* still ours until the callback returns: the fd is open, the buffers usable */
        t->freed_fd_during_parse = fcntl(nconn_fd(nc), F_GETFD) < 0;
        nbuf_append(nconn_out(nc), "x", 1);
        t->touched_after_close = t->closed_calls == 0;
    }
    return want;
}

static void t_closed(nconn *nc, enum nconn_end why)
{
    tconn *t = NCONN_CONTAINER_OF(nc, tconn, nc);
    t->closed_calls++;
    t->why = why;
    t->err = nconn_errno(nc);
}

static void t_eof(nconn *nc)
{
    tconn *t = NCONN_CONTAINER_OF(nc, tconn, nc);
    t->eofs++;
    nconn_close(nc);
}

static void t_drained(nconn *nc)
{
    tconn *t = NCONN_CONTAINER_OF(nc, tconn, nc);
    if (t->refill_left == 0)
        return;
    size_t n = t->refill_left < 10000 ? t->refill_left : 10000;
    nbuf *out = nconn_out(nc);
    for (size_t i = 0; i < n; i++)
        nbuf_append(out, &(char){ (char)('a' + t->refills % 26) }, 1);
    t->refill_left -= n;
    t->refills++;
}

static void t_connected(nconn *nc, int err)
{
    tconn *t = NCONN_CONTAINER_OF(nc, tconn, nc);
    t->connected_calls++;
    t->connect_err = err;
    if (err)
        nconn_close(nc);
}

static const nconn_ops ops = { .parse = t_parse, .closed = t_closed };
static const nconn_ops ops_eof = { .parse = t_parse, .eof = t_eof, .closed = t_closed };
static const nconn_ops ops_drain = { .parse = t_parse, .drained = t_drained,
                                     .closed = t_closed };
static const nconn_ops ops_connect = { .parse = t_parse, .connected = t_connected,
                                       .closed = t_closed };

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    loop = ev_loop_new(EVFLAG_AUTO);
    nconn_group_init(&group, loop, true);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nconn_group_destroy(&group);
    ev_loop_destroy(loop);
    return 0;
}

/* t on one end of a socketpair (started); returns the peer's end (non-blocking). */
static int pair(tconn *t, const nconn_ops *o)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    memset(t, 0, sizeof *t);
    nconn_init(&t->nc, &group, sv[0], o);
    nconn_start(&t->nc);
    return sv[1];
}

static void turns(int n)
{
    for (int i = 0; i < n; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

static void put(int fd, const void *p, size_t n)
{
    assert_int_equal(write(fd, p, n), (ssize_t)n);
}

/* Read what the peer end has now (non-blocking); returns the byte count. */
static size_t drain_peer(int fd, char *into, size_t cap)
{
    size_t got = 0;
    char scratch[65536];
    for (;;) {
        char *dst = into ? into + got : scratch;
        size_t room = into ? cap - got : sizeof scratch;
        if (room == 0)
            break;
        ssize_t n = read(fd, dst, room);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

/* Close t (if open) and let the group finish it. */
static void finish(tconn *t)
{
    nconn_close(&t->nc);
    turns(2);
    assert_int_equal(t->closed_calls, 1);
}

static void test_need_more_partial_input(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops);
    char msg[201];
    msg[0] = (char)200;
    memset(msg + 1, 'a', 200);
    put(peer, msg, 50);                  /* a quarter of the message */
    turns(3);
    assert_int_equal(t.msgs, 0);
    assert_int_equal(t.last_need, 201);
    assert_int_equal(nconn_in_pending(&t.nc), 50);
    put(peer, msg + 50, 151);
    put(peer, msg, 3);                   /* and the start of the next one */
    turns(3);
    assert_int_equal(t.msgs, 1);
    assert_int_equal(nconn_in_pending(&t.nc), 3);
    put(peer, msg + 3, 198);
    turns(3);
    assert_int_equal(t.msgs, 2);
    assert_int_equal(nconn_in_pending(&t.nc), 0);
    finish(&t);
    close(peer);
}

/* A parser that asks for more than the read size gets the room for it at once. */
static void test_need_more_reserves_room(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops);
    t.nc.read_min = 16;
    char msg[256];
    msg[0] = (char)255;
    memset(msg + 1, 'b', 255);
    put(peer, msg, 1);
    turns(2);
    assert_int_equal(t.last_need, 256);
    put(peer, msg + 1, 255);
    turns(2);                            /* one read event takes the whole rest */
    assert_int_equal(t.msgs, 1);
    assert_true(t.nc.in.cap >= 256);
    finish(&t);
    close(peer);
}

/* One client's burst is parsed a budget at a time; another client is served between. */
static void test_budget_yields_and_resumes(void **state)
{
    (void)state;
    tconn a, b;
    int pa = pair(&a, &ops), pb = pair(&b, &ops);
    a.nc.budget = 40;                    /* ten 4-byte messages per event */
    char burst[4000];
    for (size_t i = 0; i < sizeof burst; i += 4)
        memcpy(burst + i, "\x03xyz", 4);
    put(pa, burst, sizeof burst);
    put(pb, "\x01q", 2);
    ev_run(loop, EVRUN_NOWAIT);
    assert_true(a.msgs >= 10 && a.msgs <= 20);  /* a budget, maybe two (read, then run) */
    assert_int_equal(b.msgs, 1);
    assert_true(a.nc.backlog || nconn_in_pending(&a.nc) > 0);
    for (int i = 0; i < 400 && a.msgs < 1000; i++)
        ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(a.msgs, 1000);
    assert_int_equal(nconn_in_pending(&a.nc), 0);
    finish(&a);
    finish(&b);
    close(pa);
    close(pb);
}

/* Output over out_high stops reading; draining it resumes the parsing of what waits. */
static void test_backpressure_stops_and_resumes(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops);
    t.echo = 64 * 1024;
    t.nc.out_high = 256 * 1024;
    int small = 4096;
    (void)setsockopt(nconn_fd(&t.nc), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    char reqs[200];
    for (size_t i = 0; i < sizeof reqs; i += 2)
        memcpy(reqs + i, "\x01k", 2);
    put(peer, reqs, sizeof reqs);        /* 100 requests: 6.4 MB of answers */
    turns(20);
    assert_true(t.nc.full);
    assert_false(ev_is_active(&t.nc.rio));
    int stalled = t.msgs;
    assert_true(stalled < 100);
    turns(20);
    assert_int_equal(t.msgs, stalled);   /* nothing more while the peer does not read */
    size_t got = 0;
    for (int i = 0; i < 20000 && got < 100u * 64 * 1024; i++) {
        got += drain_peer(peer, NULL, 0);
        ev_run(loop, EVRUN_NOWAIT);
    }
    assert_int_equal(t.msgs, 100);
    assert_int_equal(got, 100u * 64 * 1024);
    assert_false(t.nc.full);
    assert_true(ev_is_active(&t.nc.rio));
    finish(&t);
    close(peer);
}

/* nconn_close inside parse: the connection stays usable until parse returns, the rest of
 * the input is not parsed, closed comes once, from the next run. */
static void test_deferred_close_inside_parse(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops);
    t.close_at = 2;
    put(peer, "\x01" "a" "\x01" "b" "\x01" "c", 6);
    ev_run(loop, EVRUN_NOWAIT);
    turns(2);
    assert_int_equal(t.msgs, 2);
    assert_true(t.touched_after_close);
    assert_false(t.freed_fd_during_parse);
    assert_int_equal(t.closed_calls, 1);
    assert_int_equal(t.why, NCONN_END_LOCAL);
    nconn_close(&t.nc);                  /* idempotent, no second notification */
    turns(2);
    assert_int_equal(t.closed_calls, 1);
    char c;
    assert_int_equal(read(peer, &c, 1), 0);   /* closed, unsent output dropped */
    close(peer);
}

/* The peer's close: input before it is parsed, then eof (or, without eof, closed). */
static void test_peer_close(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops_eof);
    put(peer, "\x01" "a" "\x02" "bc", 5);
    shutdown(peer, SHUT_WR);
    turns(3);
    assert_int_equal(t.msgs, 2);
    assert_int_equal(t.eofs, 1);
    assert_int_equal(t.closed_calls, 1);
    assert_int_equal(t.why, NCONN_END_LOCAL);
    close(peer);

    peer = pair(&t, &ops);
    put(peer, "\x01" "a", 2);
    close(peer);
    turns(3);
    assert_int_equal(t.msgs, 1);
    assert_int_equal(t.closed_calls, 1);
    assert_int_equal(t.why, NCONN_END_EOF);
}

/* Writing to a peer that is gone ends the connection with the error. */
static void test_write_error(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops);
    nconn_stop_reading(&t.nc);           /* so the peer's close is seen by the write */
    close(peer);
    nbuf_append(nconn_out(&t.nc), "hello", 5);
    turns(3);
    assert_int_equal(t.closed_calls, 1);
    assert_int_equal(t.why, NCONN_END_ERROR);
    assert_int_equal(t.err, EPIPE);
}

/* 8 MiB queued at once leave in many partial writes, complete and in order. */
static void test_large_output_partial_writes(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops);
    t.nc.out_high = 0;
    size_t total = 8u * 1024 * 1024;
    char *data = malloc(total), *got = malloc(total);
    assert_non_null(data);
    assert_non_null(got);
    for (size_t i = 0; i < total; i++)
        data[i] = (char)(i * 7 + i / 4096);
    nbuf_append(nconn_out(&t.nc), data, total);
    size_t n = 0;
    int writes_pending_seen = 0;
    for (int i = 0; i < 100000 && n < total; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        if (nconn_out_pending(&t.nc) > 0)
            writes_pending_seen++;
        n += drain_peer(peer, got + n, total - n);
    }
    assert_int_equal(n, total);
    assert_true(writes_pending_seen > 0);     /* it did not fit in one write */
    assert_memory_equal(got, data, total);
    assert_int_equal(nconn_out_pending(&t.nc), 0);
    assert_false(ev_is_active(&t.nc.wio));
    free(data);
    free(got);
    finish(&t);
    close(peer);
}

/* drained refills an empty output (a file being sent) until the protocol stops. */
static void test_drained_refills(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops_drain);
    t.refill_left = 1000000;
    nconn_mark(&t.nc);
    size_t n = 0;
    for (int i = 0; i < 100000 && n < 1000000; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        n += drain_peer(peer, NULL, 0);
    }
    assert_int_equal(n, 1000000);
    assert_int_equal(t.refills, 100);
    finish(&t);
    close(peer);
}

/* A paused connection neither reads nor parses; resume parses what was waiting. */
static void test_pause_resume(void **state)
{
    (void)state;
    tconn t;
    int peer = pair(&t, &ops);
    put(peer, "\x01" "a", 2);
    turns(2);
    assert_int_equal(t.msgs, 1);
    nconn_pause(&t.nc);
    put(peer, "\x01" "b", 2);
    turns(3);
    assert_int_equal(t.msgs, 1);
    nconn_resume(&t.nc);
    turns(3);
    assert_int_equal(t.msgs, 2);
    finish(&t);
    close(peer);
}

static void test_connect(void **state)
{
    (void)state;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(l, 4), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &sl), 0);

    tconn t;
    memset(&t, 0, sizeof t);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    assert_true(rc == 0 || errno == EINPROGRESS);
    nconn_init(&t.nc, &group, fd, &ops_connect);
    nbuf_append(nconn_out(&t.nc), "\x01z", 2);   /* queued before the connect completes */
    nconn_connect(&t.nc);
    for (int i = 0; i < 1000 && !t.connected_calls; i++)
        ev_run(loop, EVRUN_ONCE);
    assert_int_equal(t.connected_calls, 1);
    assert_int_equal(t.connect_err, 0);
    int s = accept(l, NULL, NULL);
    assert_true(s >= 0);
    turns(3);
    char buf[2];
    assert_int_equal(read(s, buf, 2), 2);
    assert_memory_equal(buf, "\x01z", 2);
    put(s, "\x01y", 2);
    for (int i = 0; i < 1000 && !t.msgs; i++)
        ev_run(loop, EVRUN_ONCE);
    assert_int_equal(t.msgs, 1);
    finish(&t);
    close(s);
    close(l);   /* now nobody listens on that port: a refused connect */

    memset(&t, 0, sizeof t);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    assert_true(rc < 0);
    if (errno == EINPROGRESS) {
        nconn_init(&t.nc, &group, fd, &ops_connect);
        nconn_connect(&t.nc);
        for (int i = 0; i < 1000 && !t.closed_calls; i++)
            ev_run(loop, EVRUN_ONCE);
        assert_int_equal(t.connected_calls, 1);
        assert_int_equal(t.connect_err, ECONNREFUSED);
        assert_int_equal(t.closed_calls, 1);
    } else {
        assert_int_equal(errno, ECONNREFUSED);
        close(fd);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_need_more_partial_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_need_more_reserves_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_yields_and_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_stops_and_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_close_inside_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_output_partial_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drained_refills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
