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
#include "net/nconn.h"

#define FC_MAX_SLOTS 8192             /* replies outstanding before we stop reading */
#define FC_SLOT_POOL_MAX 65536
#define FC_SLOT_DATA_KEEP (16 * 1024)

/* Reading, writing, the work budget, output back-pressure (8 MiB unsent) and the close
 * are the engine's (net/nconn.h); a front-end connection adds the reply FIFO and the
 * input states of the memcached protocols. */
struct frontconn {
    nconn nc;                  /* the socket, its buffers and watchers */
    frontconn_listener *l;
    frontconn *prev, *next;    /* live connections of the listener */
    enum frontconn_state state;
    bool held;                 /* FC_MAX_SLOTS replies outstanding: parsing paused */
    bool dead;                 /* closed; freed when refs drop */
    unsigned refs;             /* pending slots (gateway requests in flight) */
    unsigned nslots;
    size_t swallow;            /* FRONTCONN_SWALLOW: bytes still to discard */
    frontconn_slot *head, *tail;  /* reply FIFO */
    void *pstate;              /* proto->conn_size bytes, allocated with the connection */
};

struct frontconn_listener {
    struct ev_loop *loop;
    const frontconn_proto *proto;
    gwstats *stats;
    void *ud;
    net_listener nl;           /* the accept loop (net/listener.h) */
    nconn_group group;         /* flushes every connection once per loop iteration */
    frontconn *conns;
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

nbuf *frontconn_slot_target(frontconn_slot *s)
{
    return s->unordered || s == s->conn->head ? nconn_out(&s->conn->nc) : &s->reply;
}

/* Move every completed slot at the head of the FIFO into the output. */
static void conn_advance(frontconn *c)
{
    nbuf *out = nconn_out(&c->nc);
    while (c->head && c->head->done) {
        frontconn_slot *h = c->head;
        c->head = h->next;
        if (!c->head)
            c->tail = NULL;
        nbuf_append(out, nbuf_head(&h->reply), nbuf_pending(&h->reply));
        c->nslots--;
        slot_release(c->l, h);
    }
    if (c->held && c->nslots < FC_MAX_SLOTS) {
        c->held = false;
        nconn_resume(&c->nc);
    }
}

static void conn_maybe_free(frontconn *c)
{
    if (c->dead && c->refs == 0)
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
        nconn_mark(&c->nc);
        slot_release(c->l, s);
    } else if (s == c->head) {
        conn_advance(c);
    }
}

nbuf *frontconn_reply_buf(frontconn *c)
{
    nbuf *out = nconn_out(&c->nc);
    return c->head ? &slot_push(c, false)->reply : out;
}

void *frontconn_ud(const frontconn *c)
{
    return c->l->ud;
}

gwstats *frontconn_stats(const frontconn *c)
{
    return c->l->stats;
}

void *frontconn_pstate(frontconn *c)
{
    return c->pstate;
}

/* ------------------------------------------------------------------ connection */

void frontconn_abort(frontconn *c)
{
    nconn_close(&c->nc);      /* the engine closes after the parser returns */
}

void frontconn_set_state(frontconn *c, enum frontconn_state st)
{
    c->state = st;
    if (st == FRONTCONN_DRAIN) {
        /* nothing more is read; conn_drained closes once the FIFO and output are empty */
        nconn_stop_reading(&c->nc);
        nconn_mark(&c->nc);
    }
}

void frontconn_swallow(frontconn *c, size_t n)
{
    c->swallow = n;
    if (n)
        frontconn_set_state(c, FRONTCONN_SWALLOW);
}

/* nconn parse: one step of the input states; READ hands one request to the protocol. */
static size_t conn_parse(nconn *nc, const char *p, size_t avail, size_t *need)
{
    frontconn *c = NCONN_CONTAINER_OF(nc, frontconn, nc);
    switch (c->state) {
    case FRONTCONN_SWALLOW: {
        size_t d = avail < c->swallow ? avail : c->swallow;
        c->swallow -= d;
        if (c->swallow == 0)
            frontconn_set_state(c, FRONTCONN_READ);
        return d;
    }
    case FRONTCONN_SKIPLINE: {
        const char *nl = memchr(p, '\n', avail);
        if (nl)
            frontconn_set_state(c, FRONTCONN_READ);
        return nl ? (size_t)(nl - p) + 1 : avail;
    }
    case FRONTCONN_READ:
        if (c->nslots >= FC_MAX_SLOTS) {
            c->held = true;           /* resumed by conn_advance once replies drain */
            nconn_pause(&c->nc);
            return 0;
        }
        return c->l->proto->parse(c, p, avail, need);
    case FRONTCONN_DRAIN:
        break;
    }
    return 0;
}

/* nconn eof: half-close: still answer what was asked (unlike the original,
 * memcached.md §2.4). */
static void conn_eof(nconn *nc)
{
    frontconn_set_state(NCONN_CONTAINER_OF(nc, frontconn, nc), FRONTCONN_DRAIN);
}

/* nconn drained: everything written; a draining connection closes once no reply is
 * pending either. */
static void conn_drained(nconn *nc)
{
    frontconn *c = NCONN_CONTAINER_OF(nc, frontconn, nc);
    if (c->state == FRONTCONN_DRAIN && !c->head)
        nconn_close(nc);
}

/* nconn closed: completed replies go; pending slots stay with their requests until they
 * complete (frontconn_slot_alive), so a late completion never touches freed memory. */
static void conn_closed(nconn *nc, enum nconn_end why)
{
    (void)why;
    frontconn *c = NCONN_CONTAINER_OF(nc, frontconn, nc);
    frontconn_listener *l = c->l;
    c->dead = true;
    l->stats->curr_connections--;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    for (frontconn_slot *s = c->head, *n; s; s = n) {
        n = s->next;
        s->next = NULL;
        if (s->done)
            slot_release(l, s);
    }
    c->head = c->tail = NULL;
    conn_maybe_free(c);
}

static const nconn_ops conn_ops = {
    .parse = conn_parse,
    .eof = conn_eof,
    .drained = conn_drained,
    .closed = conn_closed,
};

static void conn_open(frontconn_listener *l, int fd)
{
    /* the protocol state follows the struct, aligned for any type */
    size_t head = (sizeof(frontconn) + 15) & ~(size_t)15;
    frontconn *c = xcalloc(1, head + l->proto->conn_size);
    c->pstate = l->proto->conn_size ? (char *)c + head : NULL;
    c->l = l;
    c->state = FRONTCONN_READ;
    nconn_init(&c->nc, &l->group, fd, &conn_ops);
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->stats->curr_connections++;
    l->stats->total_connections++;
    nconn_start(&c->nc);
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
    nconn_group_init(&l->group, loop, true);
    l->group.bytes_in = &stats->bytes_read;
    l->group.bytes_out = &stats->bytes_written;
    net_listener_start(&l->nl, loop, fd, proto->name, accepted, l);
    return l;
}

void frontconn_listener_free(frontconn_listener *l)
{
    if (!l)
        return;
    net_listener_stop(&l->nl);
    close(net_listener_fd(&l->nl));
    for (frontconn *c = l->conns; c; c = c->next)
        nconn_close(&c->nc);
    /* the closes finish here; connections still referenced by requests are freed when
     * those complete, which gateway_free (called first) guarantees */
    nconn_group_destroy(&l->group);
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
