/* frontconn.c - connection machinery shared by the memcached front ends. */
#include "gateway/frontconn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logic/daemon.h"
#include "logic/log.h"
#include "logic/xmalloc.h"
#include "net/listener.h"

#define FC_IN_INITIAL (16 * 1024)     /* input buffer start size (memcached.md §1.1) */
#define FC_IN_MIN_FREE 4096           /* free space reserved before each read */
#define FC_BUF_SHRINK (1024 * 1024)   /* idle buffers above this go back to the start size */
#define FC_MAX_SLOTS 8192             /* replies outstanding before we stop reading */
#define FC_OUT_HIGH (8 * 1024 * 1024) /* unsent output before we stop reading */
#define FC_SLOT_POOL_MAX 65536
#define FC_SLOT_DATA_KEEP (16 * 1024)

struct frontconn {
    frontconn_listener *l;
    frontconn *prev, *next;    /* live connections of the listener */
    frontconn *dirty_next;     /* listener's flush list */
    int fd;
    ev_io rio, wio;
    enum frontconn_state state;
    bool reading, writing;     /* watchers active */
    bool paused;               /* too much outstanding: reading stopped until drained */
    bool in_dirty;
    bool dead;                 /* closed; freed when refs and in_dirty drop */
    unsigned refs;             /* pending slots (gateway requests in flight) */
    unsigned nslots;
    nbuf in;                   /* unparsed input: [in.off, in.len) */
    size_t need;               /* bytes the parser asked for (0 unknown) */
    size_t swallow;            /* FRONTCONN_SWALLOW: bytes still to discard */
    nbuf out;                  /* replies ready to write: [out.off, out.len) */
    frontconn_slot *head, *tail;  /* reply FIFO */
    void *pstate;              /* proto->conn_size bytes, allocated with the connection */
};

struct frontconn_listener {
    struct ev_loop *loop;
    const frontconn_proto *proto;
    gwstats *stats;
    void *ud;
    net_listener nl;           /* the accept loop (net/listener.h) */
    ev_prepare flush;          /* write every dirty connection once per loop iteration */
    frontconn *conns;
    frontconn *dirty;
    frontconn_slot *pool;
    size_t npool;
};

/* ------------------------------------------------------------------ slots */

static void slot_release(frontconn_listener *l, frontconn_slot *s)
{
    if (l->npool >= FC_SLOT_POOL_MAX) {
        if (l->proto->slot_destroy)
            l->proto->slot_destroy(s);
        nbuf_destroy(&s->reply);
        free(s);
        return;
    }
    if (s->reply.cap > FC_SLOT_DATA_KEEP)
        nbuf_destroy(&s->reply);
    s->next = l->pool;
    l->pool = s;
    l->npool++;
}

/* A slot for c from the listener's pool (or a new one), not yet in any list. */
static frontconn_slot *slot_take(frontconn *c, bool done, bool unordered)
{
    frontconn_listener *l = c->l;
    frontconn_slot *s = l->pool;
    if (s) {
        l->pool = s->next;
        l->npool--;
    } else {
        s = xcalloc(1, l->proto->slot_size);
    }
    s->next = NULL;
    s->conn = c;
    s->done = done;
    s->unordered = unordered;
    nbuf_clear(&s->reply);
    return s;
}

static frontconn_slot *slot_push(frontconn *c, bool pending)
{
    frontconn_slot *s = slot_take(c, !pending, false);
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->nslots++;
    if (pending)
        c->refs++;
    return s;
}

frontconn_slot *frontconn_slot_new(frontconn *c)
{
    return slot_push(c, true);
}

frontconn_slot *frontconn_slot_new_unordered(frontconn *c)
{
    frontconn_slot *s = slot_take(c, false, true);
    c->refs++;
    return s;
}

static void conn_mark_dirty(frontconn *c)
{
    if (!c->in_dirty) {
        c->in_dirty = true;
        c->dirty_next = c->l->dirty;
        c->l->dirty = c;
    }
}

nbuf *frontconn_slot_target(frontconn_slot *s)
{
    return s->unordered || s == s->conn->head ? &s->conn->out : &s->reply;
}

/* Move every completed slot at the head of the FIFO into the output. */
static void conn_advance(frontconn *c)
{
    while (c->head && c->head->done) {
        frontconn_slot *h = c->head;
        c->head = h->next;
        if (!c->head)
            c->tail = NULL;
        nbuf_append(&c->out, nbuf_head(&h->reply), nbuf_pending(&h->reply));
        c->nslots--;
        slot_release(c->l, h);
    }
    conn_mark_dirty(c);
}

static void conn_maybe_free(frontconn *c)
{
    if (c->dead && c->refs == 0 && !c->in_dirty)
        free(c);
}

bool frontconn_slot_alive(frontconn_slot *s)
{
    frontconn *c = s->conn;
    if (!c->dead)
        return true;
    c->refs--;
    slot_release(c->l, s);
    conn_maybe_free(c);
    return false;
}

void frontconn_slot_complete(frontconn_slot *s)
{
    frontconn *c = s->conn;
    s->done = true;
    c->refs--;
    if (s->unordered) {                /* its reply is in the output already */
        conn_mark_dirty(c);
        slot_release(c->l, s);
    } else if (s == c->head) {
        conn_advance(c);
    }
}

nbuf *frontconn_reply_buf(frontconn *c)
{
    conn_mark_dirty(c);
    return c->head ? &slot_push(c, false)->reply : &c->out;
}

void *frontconn_ud(const frontconn *c)
{
    return c->l->ud;
}

gwstats *frontconn_stats(const frontconn *c)
{
    return c->l->stats;
}

/* ------------------------------------------------------------------ connection */

static void conn_close(frontconn *c)
{
    if (c->dead)
        return;
    frontconn_listener *l = c->l;
    c->dead = true;
    l->stats->curr_connections--;
    ev_io_stop(l->loop, &c->rio);
    ev_io_stop(l->loop, &c->wio);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    /* completed replies go; pending slots stay with their requests until they complete
     * (frontconn_slot_alive), so a late completion never touches freed memory */
    for (frontconn_slot *s = c->head, *n; s; s = n) {
        n = s->next;
        s->next = NULL;
        if (s->done)
            slot_release(l, s);
    }
    c->head = c->tail = NULL;
    nbuf_destroy(&c->in);
    nbuf_destroy(&c->out);
    conn_maybe_free(c);
}

void frontconn_abort(frontconn *c)
{
    conn_mark_dirty(c);       /* keeps c allocated until the flush list lets it go, as
                               * the caller (a parse inside conn_process) still uses it */
    conn_close(c);
}

void frontconn_set_state(frontconn *c, enum frontconn_state st)
{
    c->state = st;
    if (st == FRONTCONN_DRAIN) {
        /* nothing more is read; conn_flush closes once the FIFO and output are empty */
        if (c->reading) {
            ev_io_stop(c->l->loop, &c->rio);
            c->reading = false;
        }
        conn_mark_dirty(c);
    }
}

void frontconn_swallow(frontconn *c, size_t n)
{
    c->swallow = n;
    if (n)
        frontconn_set_state(c, FRONTCONN_SWALLOW);
}

static bool conn_overloaded(const frontconn *c)
{
    return c->nslots >= FC_MAX_SLOTS || nbuf_pending(&c->out) >= FC_OUT_HIGH;
}

/* Run every complete request in the input buffer through the protocol (a work budget
 * per event comes from the read size and the back-pressure limits). */
static void conn_process(frontconn *c)
{
    const frontconn_proto *proto = c->l->proto;
    size_t pos = 0;
    while (!c->dead && pos < nbuf_pending(&c->in)) {
        const char *p = nbuf_head(&c->in) + pos;
        size_t avail = nbuf_pending(&c->in) - pos;
        if (c->state == FRONTCONN_SWALLOW) {
            size_t d = avail < c->swallow ? avail : c->swallow;
            pos += d;
            c->swallow -= d;
            if (c->swallow == 0)
                frontconn_set_state(c, FRONTCONN_READ);
            continue;
        }
        if (c->state == FRONTCONN_SKIPLINE) {
            const char *nl = memchr(p, '\n', avail);
            pos += nl ? (size_t)(nl - p) + 1 : avail;
            if (nl)
                frontconn_set_state(c, FRONTCONN_READ);
            continue;
        }
        if (c->state != FRONTCONN_READ)
            break;
        if (conn_overloaded(c)) {
            c->paused = true;   /* resumed by conn_flush once replies drain */
            break;
        }
        size_t need = 0;
        size_t n = proto->parse(c, p, avail, &need);
        c->need = need;
        if (n == 0)
            break;
        pos += n;
    }
    if (c->dead)
        return;
    if (c->state == FRONTCONN_DRAIN)
        pos = nbuf_pending(&c->in);   /* input after quit / EOF / garbage is ignored */
    if (pos)
        nbuf_consume(&c->in, pos);    /* the rest moves to the front when room is needed */
    if (c->need == 0 && c->in.cap > FC_BUF_SHRINK)
        nbuf_shrink(&c->in, FC_IN_INITIAL);
}

/* Write what is ready; decide on the write watcher, draining close and resume. */
static void conn_flush(frontconn *c)
{
    frontconn_listener *l = c->l;
    while (nbuf_pending(&c->out) > 0) {
        ssize_t n = write(c->fd, nbuf_head(&c->out), nbuf_pending(&c->out));
        if (n > 0) {
            nbuf_consume(&c->out, (size_t)n);
            l->stats->bytes_written += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            conn_close(c);            /* peer gone: its pending replies are dropped */
            return;
        }
    }
    if (nbuf_pending(&c->out) == 0) {
        if (c->out.cap > FC_BUF_SHRINK)
            nbuf_shrink(&c->out, FC_IN_INITIAL);
        if (c->writing) {
            ev_io_stop(l->loop, &c->wio);
            c->writing = false;
        }
        if (c->state == FRONTCONN_DRAIN && !c->head) {
            conn_close(c);
            return;
        }
    } else if (!c->writing) {
        ev_io_start(l->loop, &c->wio);
        c->writing = true;
    }
    if (c->paused && !conn_overloaded(c)) {
        c->paused = false;
        conn_process(c);
        if (!c->dead && !c->paused && !c->reading && c->state != FRONTCONN_DRAIN) {
            ev_io_start(l->loop, &c->rio);
            c->reading = true;
        }
    }
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    frontconn *c = w->data;
    size_t have = nbuf_pending(&c->in);
    size_t want = c->need > have ? c->need - have : 0;
    nbuf_reserve(&c->in, want > FC_IN_MIN_FREE ? want : FC_IN_MIN_FREE);
    ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c);
        return;
    }
    if (n == 0) {
        /* half-close: still answer what was asked (unlike the original, memcached.md §2.4) */
        conn_process(c);
        if (!c->dead)
            frontconn_set_state(c, FRONTCONN_DRAIN);
        return;
    }
    c->in.len += (size_t)n;
    c->l->stats->bytes_read += (size_t)n;
    conn_process(c);
    if (!c->dead && c->paused && c->reading) {
        ev_io_stop(loop, &c->rio);
        c->reading = false;
    }
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_flush(w->data);
}

/* ev_prepare: replies completed during this loop iteration go out in one write per
 * connection, however many requests completed. */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    frontconn_listener *l = w->data;
    frontconn *c;
    while ((c = l->dirty)) {
        l->dirty = c->dirty_next;
        c->in_dirty = false;
        if (c->dead)
            conn_maybe_free(c);
        else
            conn_flush(c);
    }
}

void *frontconn_pstate(frontconn *c)
{
    return c->pstate;
}

static void conn_open(frontconn_listener *l, int fd)
{
    /* the protocol state follows the struct, aligned for any type */
    size_t head = (sizeof(frontconn) + 15) & ~(size_t)15;
    frontconn *c = xcalloc(1, head + l->proto->conn_size);
    c->pstate = l->proto->conn_size ? (char *)c + head : NULL;
    c->l = l;
    c->fd = fd;
    c->state = FRONTCONN_READ;
    nbuf_reserve(&c->in, FC_IN_INITIAL);
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->stats->curr_connections++;
    l->stats->total_connections++;
    ev_io_start(l->loop, &c->rio);
    c->reading = true;
}

/* ------------------------------------------------------------------ listener */

/* net_accept_fn: a new client. */
static void accepted(void *ud, int fd)
{
    frontconn_listener *l = ud;
    if (daemon_socket_setup(fd) < 0) {
        close(fd);
        return;
    }
    conn_open(l, fd);
}

frontconn_listener *frontconn_listen(struct ev_loop *loop, int fd, const frontconn_proto *proto,
                                     gwstats *stats, void *ud)
{
    frontconn_listener *l = xcalloc(1, sizeof *l);
    l->loop = loop;
    l->proto = proto;
    l->stats = stats;
    l->ud = ud;
    ev_prepare_init(&l->flush, flush_cb);
    l->flush.data = l;
    ev_prepare_start(loop, &l->flush);
    net_listener_start(&l->nl, loop, fd, proto->name, accepted, l);
    return l;
}

void frontconn_listener_free(frontconn_listener *l)
{
    if (!l)
        return;
    net_listener_stop(&l->nl);
    ev_prepare_stop(l->loop, &l->flush);
    close(net_listener_fd(&l->nl));
    while (l->conns)
        conn_close(l->conns);
    /* connections still referenced by requests are freed when those complete, which
     * gateway_free (called first) guarantees; the flush list holds only dead ones now */
    while (l->dirty) {
        frontconn *c = l->dirty;
        l->dirty = c->dirty_next;
        c->in_dirty = false;
        conn_maybe_free(c);
    }
    while (l->pool) {
        frontconn_slot *s = l->pool;
        l->pool = s->next;
        if (l->proto->slot_destroy)
            l->proto->slot_destroy(s);
        nbuf_destroy(&s->reply);
        free(s);
    }
    free(l);
}
