/* stream.c - replace stream connections (wire.md §10), both sides, as state machines. */
#include "server/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <msgpack.h>

#include "logic/daemon.h"
#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/record.h"
#include "logic/xmalloc.h"
#include "net/listener.h"
#include "net/nbuf.h"
#include "net/nconn.h"
#include "rpc/mpscan.h"

#define STREAM_HEADER_LEN 23        /* wire.md §10 step 3 */
#define STREAM_IDLE_TIMEOUT 60.0    /* step 6: per-read receive timeout */
#define STREAM_CHUNK (64 * 1024)
#define STREAM_APPLY_CHUNK (16 * 1024)
#define STREAM_ACK_EVERY 100        /* step 5: keep-alive after every 100 pairs */
#define STREAM_DRAIN_TIMEOUT 10.0   /* how long an acknowledged receiver waits for EOF */
#define STREAM_MAX_ELEMENTS 1024    /* pairs are 2-element arrays; nothing legitimate nests */
/* A receiver stores what a replace streams in its event loop, between the clients'
 * requests.  Unpaced, a new server storing its share took 70 % of a core and the
 * clients lost two thirds of their throughput (scripts/bench-ops.sh); so after each
 * STREAM_PACE_SLICE seconds of applying streams (all of them together) during which it
 * also served requests, it stops reading them for STREAM_PACE_RATIO times as long (TCP
 * then holds the senders back), taking at most 1 / (1 + ratio) of the loop while there
 * are clients and all it can without. */
#define STREAM_PACE_SLICE 0.0005
#define STREAM_PACE_RATIO 3.0

enum stream_state {
    /* sender (accepted on -L) */
    SS_READ_HEADER,              /* reading the receiver's 23-byte identification */
    SS_SEND_FILE,                /* writing the offer file */
    SS_READ_ACK,                 /* reading 0x90 keep-alives until the final nil */
    /* receiver (we pull an offer) */
    SR_CONNECTING,
    SR_RECEIVE,                  /* header queued; inflating and applying pairs */
    SR_FLUSH,                    /* got the terminating nil; flushing 0xc0 */
    SR_DRAIN,                    /* acknowledged; reading until the sender closes */
};

typedef struct stream_conn {
    nconn nc;                    /* the socket and its buffers (net/nconn.h) */
    struct stream_conn *prev, *next;
    stream_set *ss;
    enum stream_state state;
    bool ok;                     /* how the transfer ends when the connection closes */
    ev_timer timer;
    kaddr peer;                  /* receiver's cluster address / sender's stream address */
    /* sender */
    uint64_t offer_id;
    bool offer_bound;            /* offer_id valid and not yet reported */
    int file_fd;
    off_t file_off, file_size;
    /* both: msgpack objects coming in */
    msgpack_unpacker unp;
    mpscan scan;                         /* vets peer bytes before the unpacker sees them */
    msgpack_unpacked res;
    bool unp_init;
    /* receiver */
    z_stream z;
    bool z_init;
    bool z_end;
    uint64_t pairs;
    uint64_t stored;
    bool store_failed;           /* a record could not be stored: the stream fails */
    ev_timer pace;               /* resumes reading after a pause */
} stream_conn;

struct stream_set {
    server *srv;
    stream_offers offers;        /* the sender's source of offer files (replace.c) */
    int listen_fd;
    net_listener listener;       /* the accept loop (net/listener.h) */
    nconn_group group;           /* output once per loop turn, deferred closes */
    stream_conn *conns;
    bool closing;
    double worked;               /* seconds spent applying streams since the last pause */
    uint64_t requests;           /* server_requests when that time began */
    double pace_until;           /* no stream is applied before this time (ev_time) */
};

/* ---- plumbing ---- */

static void conn_timer(stream_conn *c, double after)
{
    struct ev_loop *loop = server_loop(c->ss->srv);
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, after, 0.0);
    ev_timer_start(loop, &c->timer);
}

/* End the transfer: ok = delivered (sender) or applied (receiver).  The connection
 * closes after the running callback returns (conn_closed reports it). */
static void conn_close(stream_conn *c, bool ok)
{
    c->ok = ok;
    nconn_close(&c->nc);
}

/* nconn closed: report the transfer and free the connection. */
static void conn_closed(nconn *nc, enum nconn_end why)
{
    (void)why;                   /* a peer close or a socket error ends with c->ok as set */
    stream_conn *c = NCONN_CONTAINER_OF(nc, stream_conn, nc);
    stream_set *ss = c->ss;
    char buf[KADDR_STRLEN];
    ev_timer_stop(server_loop(ss->srv), &c->timer);
    ev_timer_stop(server_loop(ss->srv), &c->pace);
    if (c->file_fd >= 0)
        close(c->file_fd);
    if (c->unp_init) {
        msgpack_unpacked_destroy(&c->res);
        msgpack_unpacker_destroy(&c->unp);
    }
    if (c->z_init)
        inflateEnd(&c->z);
    if (c->state >= SR_CONNECTING) {
        if (c->ok)
            log_info("replace stream from %s: %llu records, %llu stored",
                     kaddr_format(&c->peer, buf), (unsigned long long)c->pairs,
                     (unsigned long long)c->stored);
        else
            log_warn("replace stream from %s failed after %llu records",
                     kaddr_format(&c->peer, buf), (unsigned long long)c->pairs);
    }
    if (c->offer_bound && !ss->closing)
        ss->offers.finished(ss->offers.ud, c->offer_id, c->ok);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        ss->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    free(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    stream_conn *c = w->data;
    char buf[KADDR_STRLEN];
    if (c->state == SR_DRAIN) {
        conn_close(c, true);             /* the stream was applied; the sender lingers */
        return;
    }
    log_warn("replace stream with %s timed out", kaddr_format(&c->peer, buf));
    conn_close(c, false);
}

static const nconn_ops conn_ops;
static void pace_cb(struct ev_loop *loop, ev_timer *w, int revents);

static stream_conn *conn_new(stream_set *ss, int fd, enum stream_state state)
{
    stream_conn *c = xcalloc(1, sizeof(*c));
    c->ss = ss;
    c->file_fd = -1;
    c->state = state;
    nconn_init(&c->nc, &ss->group, fd, &conn_ops);
    /* one chunk per event: applying a chunk costs a burst of store updates (a receiver
     * applies at most STREAM_APPLY_CHUNK per event, so a request waits for at most that) */
    c->nc.read_min = STREAM_CHUNK;
    c->nc.budget = state >= SR_CONNECTING ? STREAM_APPLY_CHUNK : STREAM_CHUNK;
    ev_init(&c->timer, timer_cb);
    c->timer.data = c;
    ev_init(&c->pace, pace_cb);
    c->pace.data = c;
    c->next = ss->conns;
    if (ss->conns != NULL)
        ss->conns->prev = c;
    ss->conns = c;
    return c;
}

static void out_queue(stream_conn *c, const void *p, size_t len)
{
    nbuf_append(nconn_out(&c->nc), p, len);
}

static void unpacker_start(stream_conn *c)
{
    msgpack_unpacker_init(&c->unp, STREAM_CHUNK);
    mpscan_init(&c->scan, MPSCAN_MESSAGE_MAX, STREAM_MAX_ELEMENTS);
    msgpack_unpacked_init(&c->res);
    c->unp_init = true;
}

/* ---- sender: serve an offer file to the receiver that identifies itself ---- */

/* The receiver's 23-byte identification (wire.md §10 step 3).  Returns the bytes used. */
static size_t send_header_parse(stream_conn *c, const char *p, size_t len, size_t *need)
{
    if (len < STREAM_HEADER_LEN) {
        *need = STREAM_HEADER_LEN;
        return 0;
    }
    const uint8_t *hdr = (const uint8_t *)p;
    size_t alen = hdr[0];
    if (alen > STREAM_HEADER_LEN - 1 || kaddr_from_dump(&c->peer, hdr + 1, alen) != 0) {
        log_warn("replace stream: bad header");
        conn_close(c, false);
        return len;
    }
    c->file_fd = c->ss->offers.open(c->ss->offers.ud, &c->peer, &c->offer_id, &c->file_size);
    if (c->file_fd < 0) {
        char buf[KADDR_STRLEN];
        log_warn("replace stream: no offer for %s", kaddr_format(&c->peer, buf));
        conn_close(c, false);
        return len;
    }
    c->offer_bound = true;
    c->state = SS_SEND_FILE;
    nconn_pause(&c->nc);                 /* the acknowledgements are read after the file */
    nconn_mark(&c->nc);                  /* send_file_refill starts the file */
    return STREAM_HEADER_LEN;
}

/* nconn drained while sending: the next chunk of the offer file, or the end of it. */
static void send_file_refill(stream_conn *c)
{
    if (c->file_off >= c->file_size) {
        c->state = SS_READ_ACK;
        unpacker_start(c);
        nconn_resume(&c->nc);
        conn_timer(c, STREAM_IDLE_TIMEOUT);
        return;
    }
    off_t want = c->file_size - c->file_off;
    size_t len = want > STREAM_CHUNK ? STREAM_CHUNK : (size_t)want;
    nbuf *out = nconn_out(&c->nc);
    nbuf_reserve(out, len);              /* empty: the chunk goes at the front */
    ssize_t n = pread(c->file_fd, out->data, len, c->file_off);
    if (n <= 0) {
        log_error("replace stream: reading the offer file failed: %s", strerror(errno));
        conn_close(c, false);
        return;
    }
    c->file_off += n;
    out->len = (size_t)n;
    conn_timer(c, STREAM_IDLE_TIMEOUT);
}

/* 0x90 keep-alives until the final nil (step 6). */
static size_t send_ack_parse(stream_conn *c, const char *p, size_t len)
{
    if (mpscan_execute(&c->scan, p, len) != MPSCAN_OK) {
        conn_close(c, false);
        return len;
    }
    msgpack_unpacker_reserve_buffer(&c->unp, len);
    memcpy(msgpack_unpacker_buffer(&c->unp), p, len);
    msgpack_unpacker_buffer_consumed(&c->unp, len);
    for (;;) {
        msgpack_unpack_return r = msgpack_unpacker_next(&c->unp, &c->res);
        if (r == MSGPACK_UNPACK_CONTINUE)
            break;
        if (r != MSGPACK_UNPACK_SUCCESS) {
            conn_close(c, false);
            break;
        }
        if (c->res.data.type == MSGPACK_OBJECT_NIL) {
            conn_close(c, true);         /* delivered (step 6) */
            break;
        }
        conn_timer(c, STREAM_IDLE_TIMEOUT);   /* 0x90 keep-alive */
    }
    return len;
}

/* ---- receiver: pull a stream and apply it with store-if-newer ---- */

static bool recv_object(stream_conn *c, const msgpack_object *o)
{
    const char *key, *val;
    size_t klen, vlen;
    const msgpack_object *ko = kwire_array_at(o, 0), *vo = kwire_array_at(o, 1);
    if (ko == NULL || vo == NULL || !kwire_get_raw(ko, &key, &klen) || !kwire_get_raw(vo, &val, &vlen))
        return true;                     /* not a pair: ignore */
    c->pairs++;
    /* No responsibility check on the receiving side (algorithms.md §8.3). */
    if (klen >= DBKEY_HASH_LEN && vlen >= TOMBSTONE_LEN) {
        if (store_update(server_store(c->ss->srv), key, klen, val, vlen))
            c->stored++;
        else if (store_error() != 0)
            return false;    /* disk full: never acknowledge a stream we did not store */
    }
    if (c->pairs % STREAM_ACK_EVERY == 0) {
        static const uint8_t keepalive = 0x90;
        out_queue(c, &keepalive, 1);
    }
    return true;
}

/* Inflate the bytes in c->z into the unpacker and apply whole objects.  Returns false on
 * a corrupt stream. */
static bool recv_inflate(stream_conn *c)
{
    while (!c->z_end && c->state == SR_RECEIVE) {
        msgpack_unpacker_reserve_buffer(&c->unp, STREAM_CHUNK);
        size_t cap = msgpack_unpacker_buffer_capacity(&c->unp);
        c->z.next_out = (Bytef *)msgpack_unpacker_buffer(&c->unp);
        c->z.avail_out = (uInt)cap;
        int zr = inflate(&c->z, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
            return false;
        size_t produced = cap - c->z.avail_out;
        if (mpscan_execute(&c->scan, msgpack_unpacker_buffer(&c->unp), produced) != MPSCAN_OK)
            return false;                /* hostile lengths: refuse before msgpack-c allocates */
        msgpack_unpacker_buffer_consumed(&c->unp, produced);
        if (zr == Z_STREAM_END)
            c->z_end = true;
        for (;;) {
            msgpack_unpack_return r = msgpack_unpacker_next(&c->unp, &c->res);
            if (r == MSGPACK_UNPACK_CONTINUE)
                break;
            if (r != MSGPACK_UNPACK_SUCCESS)
                return false;
            if (c->res.data.type == MSGPACK_OBJECT_NIL) {
                static const uint8_t done = 0xc0;
                out_queue(c, &done, 1);
                c->state = SR_FLUSH;
                return true;
            }
            if (!recv_object(c, &c->res.data)) {
                c->store_failed = true;
                return false;
            }
        }
        if (c->z.avail_out != 0)
            break;                       /* input used up: wait for more */
    }
    return true;
}

static void pace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    stream_conn *c = w->data;
    nconn_resume(&c->nc);
}

static void pace_pause(stream_conn *c, double sec)
{
    struct ev_loop *loop = server_loop(c->ss->srv);
    nconn_pause(&c->nc);
    ev_timer_stop(loop, &c->pace);
    ev_timer_set(&c->pace, sec, 0.0);
    ev_timer_start(loop, &c->pace);
}

/* Inflate and apply one piece of the stream.  Returns the bytes used (all), or 0 while
 * the streams' share is used up (the piece waits, and the connection does not read). */
static size_t recv_parse(stream_conn *c, const char *p, size_t len)
{
    stream_set *ss = c->ss;
    conn_timer(c, STREAM_IDLE_TIMEOUT);
    if (c->z_end)
        return len;                      /* trailing bytes after the zlib stream */
    double t0 = ev_time();
    if (ss->pace_until > t0) {
        pace_pause(c, ss->pace_until - t0);
        return 0;
    }
    if (ss->worked == 0)
        ss->requests = server_requests(ss->srv);
    c->z.next_in = (Bytef *)p;
    c->z.avail_in = (uInt)len;
    if (!recv_inflate(c)) {
        log_warn(c->store_failed ? "replace stream: the store refused a record (disk full?)"
                                 : "replace stream: corrupt data");
        conn_close(c, false);
        return len;
    }
    double t1 = ev_time();
    ss->worked += t1 - t0;
    if (ss->worked >= STREAM_PACE_SLICE) {
        double pause = server_yield_pause(ss->srv, &ss->requests, ss->worked,
                                          STREAM_PACE_RATIO, 0);
        if (pause > 0) {
            ss->pace_until = t1 + pause;
            if (c->state == SR_RECEIVE)
                pace_pause(c, pause);
        }
        ss->worked = 0;
    }
    return len;
}

/* nconn connected: identify ourselves and start receiving. */
static void recv_connected(nconn *nc, int err)
{
    stream_conn *c = NCONN_CONTAINER_OF(nc, stream_conn, nc);
    if (err != 0) {
        char buf[KADDR_STRLEN];
        log_warn("replace stream: connect to %s failed: %s", kaddr_format(&c->peer, buf),
                 strerror(err));
        conn_close(c, false);
        return;
    }
    /* step 3: length of our address dump, the dump, zero padding */
    uint8_t hdr[STREAM_HEADER_LEN] = { 0 };
    const kaddr *self = &server_cfg(c->ss->srv)->self;
    hdr[0] = self->len;
    memcpy(hdr + 1, self->raw, self->len);
    out_queue(c, hdr, sizeof(hdr));
    if (inflateInit(&c->z) != Z_OK) {
        conn_close(c, false);
        return;
    }
    c->z_init = true;
    unpacker_start(c);
    c->state = SR_RECEIVE;
    conn_timer(c, STREAM_IDLE_TIMEOUT);
}

/* ---- the one state machine: what each state does with input, output and EOF ---- */

static size_t conn_parse(nconn *nc, const char *p, size_t len, size_t *need)
{
    stream_conn *c = NCONN_CONTAINER_OF(nc, stream_conn, nc);
    switch (c->state) {
    case SS_READ_HEADER:
        return send_header_parse(c, p, len, need);
    case SS_SEND_FILE:
        return 0;                        /* paused; nothing is read while sending */
    case SS_READ_ACK:
        return send_ack_parse(c, p, len);
    case SR_CONNECTING:
        return 0;
    case SR_RECEIVE:
        return recv_parse(c, p, len);
    case SR_FLUSH:
    case SR_DRAIN:
        return len;                      /* the stream is applied; the rest is ignored */
    }
    return 0;
}

static void conn_drained(nconn *nc)
{
    stream_conn *c = NCONN_CONTAINER_OF(nc, stream_conn, nc);
    if (c->state == SS_SEND_FILE) {
        send_file_refill(c);
    } else if (c->state == SR_FLUSH) {
        /* step 5 done.  The nil can be decoded before the zlib trailer behind it has
         * arrived; closing now would answer that trailer with a reset, and a sender still
         * writing it would abandon an offer we applied (its replace then never ends).
         * So half-close and read until the sender closes, as it does after the nil. */
        shutdown(nconn_fd(nc), SHUT_WR);
        c->state = SR_DRAIN;
        c->ok = true;
        conn_timer(c, STREAM_DRAIN_TIMEOUT);
    }
}

/* nconn eof: the peer closed.  Before the nil that fails the offer (§10.7); after it
 * (the receiver's last states) the stream was applied. */
static void conn_eof(nconn *nc)
{
    stream_conn *c = NCONN_CONTAINER_OF(nc, stream_conn, nc);
    conn_close(c, c->state == SR_FLUSH || c->state == SR_DRAIN);
}

static const nconn_ops conn_ops = {
    .parse = conn_parse,
    .eof = conn_eof,
    .drained = conn_drained,
    .connected = recv_connected,
    .closed = conn_closed,
};

/* ---- accept and pull ---- */

/* net_accept_fn: a receiver comes to pull an offer. */
static void accepted(void *ud, int fd)
{
    stream_set *ss = ud;
    daemon_socket_setup(fd);
    stream_conn *c = conn_new(ss, fd, SS_READ_HEADER);
    nconn_start(&c->nc);
    conn_timer(c, STREAM_IDLE_TIMEOUT);
}

void stream_listen(stream_set *ss, int fd)
{
    ss->listen_fd = fd;
    ss->listener.burst = 16;     /* receivers are few; a burst of them is a replace */
    net_listener_start(&ss->listener, server_loop(ss->srv), fd, "replace stream", accepted, ss);
}

void stream_pull_start(stream_set *ss, const kaddr *stream_addr)
{
    char buf[KADDR_STRLEN];
    struct sockaddr_storage sa;
    socklen_t salen = kaddr_to_sockaddr(stream_addr, &sa);
    if (salen == 0 || server_stopping(ss->srv))
        return;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("replace stream: socket failed: %s", strerror(errno));
        return;
    }
    stream_conn *c = conn_new(ss, fd, SR_CONNECTING);
    c->peer = *stream_addr;
    log_info("replace stream: pulling from %s", kaddr_format(stream_addr, buf));
    if (connect(fd, (struct sockaddr *)&sa, salen) != 0 && errno != EINPROGRESS) {
        log_warn("replace stream: connect to %s failed: %s", buf, strerror(errno));
        conn_close(c, false);
        return;
    }
    nconn_connect(&c->nc);
    conn_timer(c, server_cfg(ss->srv)->connect_timeout > 0 ? server_cfg(ss->srv)->connect_timeout : 10.0);
}

stream_set *stream_set_new(server *srv, const stream_offers *offers)
{
    stream_set *ss = xcalloc(1, sizeof(*ss));
    ss->srv = srv;
    ss->offers = *offers;
    ss->listen_fd = -1;
    nconn_group_init(&ss->group, server_loop(srv), true);
    return ss;
}

void stream_set_free(stream_set *ss)
{
    ss->closing = true;
    if (ss->listen_fd >= 0) {
        net_listener_stop(&ss->listener);
        close(ss->listen_fd);
    }
    for (stream_conn *c = ss->conns; c != NULL; c = c->next)
        conn_close(c, false);
    nconn_group_destroy(&ss->group);     /* the closes finish here */
    free(ss);
}
