/* nconn.c - the one connection engine (see nconn.h). */
#include "net/nconn.h"

#include <assert.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCONN_IN_KEEP (16 * 1024)

static void conn_queue(nconn *c)
{
    if (c->queued)
        return;
    c->queued = true;
    c->qnext = c->g->queue;
    if (c->qnext)
        c->qnext->qprev = &c->qnext;
    c->qprev = &c->g->queue;
    c->g->queue = c;
    /* the loop must not block before the group runs, even when this comes from a
     * prepare watcher that ran after the group's (another group's resumed parsing
     * making calls, say) */
    ev_idle_start(c->g->loop, &c->g->idle);
}

/* The one place that decides whether the watchers run. */
static void conn_update(nconn *c)
{
    struct ev_loop *loop = c->g->loop;
    bool want_read = c->reading && !c->paused && !c->full && !c->backlog && !c->eof &&
                     !c->closing && !c->connecting;
    if (want_read && !ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    else if (!want_read && ev_is_active(&c->rio))
        ev_io_stop(loop, &c->rio);
    bool want_write = !c->closing && (c->connecting || nbuf_pending(&c->out) > 0);
    if (want_write && !ev_is_active(&c->wio))
        ev_io_start(loop, &c->wio);
    else if (!want_write && ev_is_active(&c->wio))
        ev_io_stop(loop, &c->wio);
}

static void conn_end(nconn *c, enum nconn_end why, int err)
{
    if (c->closing)
        return;
    c->closing = true;
    c->why = why;
    c->err = err;
    conn_update(c);          /* both watchers stop: nothing more happens on this socket */
    conn_queue(c);
}

void nconn_close(nconn *c)
{
    conn_end(c, NCONN_END_LOCAL, 0);
}

static void conn_unqueue(nconn *c)
{
    if (!c->queued)
        return;
    *c->qprev = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    c->qnext = NULL;
    c->qprev = NULL;
    c->queued = false;
}

/* Close the socket and notify the owner.  Only where no callback of c is running: the
 * end of c's own event handler, or a group run. */
static void conn_finish(nconn *c)
{
    conn_unqueue(c);
    ev_io_stop(c->g->loop, &c->rio);
    ev_io_stop(c->g->loop, &c->wio);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    nbuf_destroy(&c->in);
    nbuf_destroy(&c->out);
    c->ops->closed(c, c->why);   /* the owner may free c here */
}

/* Unparsed input that the read watcher will not bring back: parse it at the next run. */
static void conn_kick(nconn *c)
{
    if (nbuf_pending(&c->in) > 0 && !c->paused && !c->closing) {
        c->backlog = true;
        conn_queue(c);
    }
}

/* Offer the input to the parser until it wants more, pauses, closes, the output is over
 * its limit or `limit` bytes were consumed.  Returns the bytes consumed. */
static size_t conn_parse(nconn *c, size_t limit)
{
    if (c->in_parse || c->paused || c->closing)
        return 0;
    c->in_parse = true;
    size_t pos = 0;
    while (pos < nbuf_pending(&c->in)) {
        if (c->paused || c->closing || c->stopped)
            break;
        if (c->out_high && nbuf_pending(&c->out) >= c->out_high) {
            c->full = true;               /* resumed when the output drains (conn_write) */
            break;
        }
        if (pos >= limit) {
            conn_kick(c);                 /* the budget is spent: others' turn first */
            break;
        }
        size_t need = 0;
        size_t n = c->ops->parse(c, nbuf_head(&c->in) + pos, nbuf_pending(&c->in) - pos, &need);
        c->need = need;
        if (n == 0)
            break;
        assert(n <= nbuf_pending(&c->in) - pos && "nconn parse: consumed more than given");
        pos += n;
    }
    c->in_parse = false;
    if (c->stopped)
        pos = nbuf_pending(&c->in);       /* the protocol wants no more input */
    if (pos)
        nbuf_consume(&c->in, pos);        /* the rest moves to the front when room is needed */
    if (c->need == 0 && c->in.cap > NCONN_BUF_SHRINK)
        nbuf_shrink(&c->in, c->in_keep);
    return pos;
}

/* Write as much output as the socket takes.  Returns false on an error (close requested). */
static bool conn_write(nconn *c)
{
    if (c->connecting || c->closing)
        return !c->closing;
    while (nbuf_pending(&c->out) > 0) {
        ssize_t n = send(c->fd, nbuf_head(&c->out), nbuf_pending(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            nbuf_consume(&c->out, (size_t)n);
            if (c->g->bytes_out)
                *c->g->bytes_out += (uint64_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            conn_end(c, NCONN_END_ERROR, n < 0 ? errno : EPIPE);
            return false;
        }
    }
    if (c->full && nbuf_pending(&c->out) < c->out_high) {
        c->full = false;
        conn_kick(c);                     /* input waiting behind the limit */
    }
    return true;
}

/* Write, and let the protocol refill an empty output (bounded). */
static void conn_flush_all(nconn *c)
{
    for (int round = 0; round < NCONN_WRITE_ROUNDS; round++) {
        if (!conn_write(c) || c->connecting)
            return;
        if (nbuf_pending(&c->out) > 0 || !c->ops->drained)
            return;
        c->ops->drained(c);
        if (c->closing || nbuf_pending(&c->out) == 0)
            return;
    }
}

/* One connection's share of a group run. */
static void conn_run(nconn *c)
{
    if (c->closing) {
        conn_finish(c);
        return;
    }
    if (c->backlog) {
        c->backlog = false;
        conn_parse(c, c->budget);
    }
    conn_flush_all(c);
    if (c->closing)
        conn_finish(c);
    else
        conn_update(c);
}

void nconn_group_run(nconn_group *g)
{
    /* the connections queued so far; those queued while they run wait for the next run
     * (a local list head, so a finished connection can still unlink itself) */
    nconn *list = g->queue;
    g->queue = NULL;
    if (list)
        list->qprev = &list;
    while (list) {
        nconn *c = list;
        conn_unqueue(c);
        conn_run(c);
    }
    /* work queued during this run (a budget spent, a close requested by a callback) is
     * done at the next turn, which must come without waiting for a socket */
    if (g->queue)
        ev_idle_start(g->loop, &g->idle);
    else
        ev_idle_stop(g->loop, &g->idle);
}

static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    nconn_group_run(NCONN_CONTAINER_OF(w, nconn_group, prep));
}

static void idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);   /* only here to keep the loop from blocking; prepare works */
}

void nconn_group_init(nconn_group *g, struct ev_loop *loop, bool own_prepare)
{
    g->loop = loop;
    g->own_prepare = own_prepare;
    g->queue = NULL;
    g->bytes_in = g->bytes_out = NULL;
    ev_prepare_init(&g->prep, prepare_cb);
    ev_idle_init(&g->idle, idle_cb);
    if (own_prepare)
        ev_prepare_start(loop, &g->prep);
}

void nconn_group_destroy(nconn_group *g)
{
    /* only closing connections may be left; their closed callbacks run now */
    while (g->queue) {
        nconn *c = g->queue;
        assert(c->closing && "nconn_group_destroy: a connection is still open");
        conn_finish(c);
    }
    ev_prepare_stop(g->loop, &g->prep);
    ev_idle_stop(g->loop, &g->idle);
}

/* ------------------------------------------------------------------ events */

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    nconn *c = NCONN_CONTAINER_OF(w, nconn, rio);
    size_t left = c->budget;
    for (int round = 0; round < NCONN_READ_ROUNDS; round++) {
        size_t have = nbuf_pending(&c->in);
        size_t want = c->need > have ? c->need - have : 0;
        nbuf_reserve(&c->in, want > c->read_min ? want : c->read_min);
        size_t cap = c->in.cap - c->in.len;
        ssize_t n = read(c->fd, c->in.data + c->in.len, cap);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_end(c, NCONN_END_ERROR, errno);
            break;
        }
        if (n == 0) {
            c->eof = true;
            conn_parse(c, SIZE_MAX);      /* what was asked before the close is answered */
            if (c->closing)
                break;
            if (c->ops->eof)
                c->ops->eof(c);
            else
                conn_end(c, NCONN_END_EOF, 0);
            break;
        }
        c->in.len += (size_t)n;
        if (c->g->bytes_in)
            *c->g->bytes_in += (uint64_t)n;
        size_t used = conn_parse(c, left);
        left = used < left ? left - used : 0;
        if (c->closing || c->paused || c->full || c->backlog || c->stopped || (size_t)n < cap)
            break;
        if (left == 0) {
            conn_kick(c);
            break;
        }
    }
    if (c->closing)
        conn_finish(c);          /* the parser has returned: nothing holds c now */
    else
        conn_update(c);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    nconn *c = NCONN_CONTAINER_OF(w, nconn, wio);
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        c->connecting = false;
        if (err == 0) {
            c->reading = true;
            conn_queue(c);                /* output queued while connecting */
        } else {
            c->err = err;
        }
        conn_update(c);
        c->ops->connected(c, err);
        if (c->closing)
            conn_finish(c);
        return;
    }
    conn_flush_all(c);
    if (c->closing)
        conn_finish(c);
    else
        conn_update(c);
}

/* ------------------------------------------------------------------ the protocol's side */

void nconn_init(nconn *c, nconn_group *g, int fd, const nconn_ops *ops)
{
    assert(ops->closed && "nconn_init: ops->closed is required");
    *c = (nconn){ .g = g, .ops = ops, .fd = fd };
    c->budget = NCONN_BUDGET;
    c->read_min = NCONN_READ_MIN;
    c->in_keep = NCONN_IN_KEEP;
    c->out_high = NCONN_OUT_HIGH;
    ev_io_init(&c->rio, read_cb, fd, EV_READ);
    ev_io_init(&c->wio, write_cb, fd, EV_WRITE);
}

void nconn_start(nconn *c)
{
    assert(c->ops->parse && "nconn_start: a reading connection needs ops->parse");
    c->reading = true;
    nbuf_reserve(&c->in, c->in_keep);
    conn_update(c);
}

void nconn_connect(nconn *c)
{
    assert(c->ops->connected && "nconn_connect: ops->connected is required");
    c->connecting = true;
    conn_update(c);
}

nbuf *nconn_out(nconn *c)
{
    conn_queue(c);
    return &c->out;
}

void nconn_mark(nconn *c)
{
    conn_queue(c);
}

void nconn_pause(nconn *c)
{
    c->paused = true;
    conn_update(c);
}

void nconn_resume(nconn *c)
{
    if (!c->paused)
        return;
    c->paused = false;
    conn_kick(c);
    conn_update(c);
}

void nconn_stop_reading(nconn *c)
{
    c->stopped = true;
    c->reading = false;
    if (!c->in_parse)
        nbuf_clear(&c->in);
    conn_update(c);
}
