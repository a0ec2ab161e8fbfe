/* test_listener.c - the shared accept loop (src/net/listener.c) on real loopback sockets. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logic/log.h"
#include "net/listener.h"

typedef struct accepted_log {
    int fds[256];
    unsigned n;
} accepted_log;

static void on_accept(void *ud, int fd)
{
    accepted_log *a = ud;
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    assert_true(fl & O_NONBLOCK);
    assert_true(fdfl & FD_CLOEXEC);
    if (a->n < 256)
        a->fds[a->n++] = fd;
    else
        close(fd);
}

static int listen_loopback(struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof *addr), 0);
    assert_int_equal(listen(fd, 256), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
    return fd;
}

static int connect_to(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (const struct sockaddr *)addr, sizeof *addr), 0);
    return fd;
}

static void break_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

/* Run the loop until *count reaches want or secs pass. */
static void run_until(struct ev_loop *loop, const unsigned *count, unsigned want, double secs)
{
    ev_tstamp end = ev_time() + secs;
    while (*count < want && ev_time() < end) {
        ev_timer t;
        ev_timer_init(&t, break_cb, 0.02, 0.0);
        ev_timer_start(loop, &t);
        ev_run(loop, EVRUN_ONCE);
        ev_timer_stop(loop, &t);
    }
}

static void run_for(struct ev_loop *loop, double secs)
{
    ev_timer t;
    ev_timer_init(&t, break_cb, secs, 0.0);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
}

/* every waiting peer is accepted, at most `burst` per readable event */
static void test_accepts_every_peer_in_bursts(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sockaddr_in addr;
    int lfd = listen_loopback(&addr);
    accepted_log got = {0};
    net_listener l = {.burst = 8};
    net_listener_start(&l, loop, lfd, "test", on_accept, &got);
    int clients[20];
    for (int i = 0; i < 20; i++)
        clients[i] = connect_to(&addr);
    ev_run(loop, EVRUN_ONCE);
    assert_true(got.n > 0 && got.n <= 8);          /* one event, one burst */
    run_until(loop, &got.n, 20, 5.0);
    assert_int_equal(got.n, 20);
    assert_int_equal(l.accepted, 20);
    assert_int_equal(l.pauses, 0);
    for (unsigned i = 0; i < got.n; i++)
        close(got.fds[i]);
    for (int i = 0; i < 20; i++)
        close(clients[i]);
    net_listener_stop(&l);
    close(lfd);
    ev_loop_destroy(loop);
}

/* Out of descriptors, the listener rests (it used to spin: the listening socket stays
 * readable), and it accepts the waiting peer once descriptors are free again. */
static void test_rests_when_out_of_descriptors_then_accepts(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sockaddr_in addr;
    int lfd = listen_loopback(&addr);
    accepted_log got = {0};
    net_listener l = {0};
    net_listener_start(&l, loop, lfd, "test", on_accept, &got);
    int client = connect_to(&addr);

    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = dup(0);                            /* the lowest free descriptor */
    assert_true(probe >= 0);
    close(probe);
    low = old;
    low.rlim_cur = (rlim_t)probe;                  /* no descriptor left to accept into */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    run_for(loop, 0.5);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

    assert_int_equal(got.n, 0);
    assert_true(l.pauses >= 1);
    assert_true(l.pauses <= 6);                    /* 0.1, 0.2, 0.4 s: not a spin */
    assert_true(l.pause_sec > NET_LISTEN_PAUSE_MIN);

    run_until(loop, &got.n, 1, 3.0);               /* resumes after the rest */
    assert_int_equal(got.n, 1);
    assert_true(l.pause_sec == NET_LISTEN_PAUSE_MIN);
    close(got.fds[0]);
    close(client);
    net_listener_stop(&l);
    close(lfd);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_every_peer_in_bursts),
        cmocka_unit_test(test_rests_when_out_of_descriptors_then_accepts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
