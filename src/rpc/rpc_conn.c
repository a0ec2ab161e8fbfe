/* rpc_conn.c - one msgpack-RPC TCP connection: connect, accept, streaming decode of the
 * envelopes (wire.md §2, §4), handshake classification (§4.3) and buffered output. */
#include "config.h"   /* _GNU_SOURCE: accept4, SOCK_NONBLOCK */
#include "rpc/rpc_internal.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logic/log.h"
#include "logic/xmalloc.h"

#define RPC_READ_CHUNK (32 * 1024)            /* free space wanted before each read() */
#define RPC_READ_ROUNDS 4                     /* read() calls per readable event: bounded work */
/* Objects one message may announce.  kumofs messages hold at most a few thousand (a hash
 * space's node list); this caps msgpack-c's up-front allocation per message at 1.5 MiB
 * (24-byte msgpack_object each), where the size cap alone would still let a 5-byte header
 * announcing ~2^26 elements reserve 1.5 GiB. */
#define RPC_MAX_ELEMENTS 65536u

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents);

static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static rpc_conn *conn_new(rpc_node *n, int fd, enum rpc_conn_state state)
{
    rpc_conn *c = xcalloc(1, sizeof *c);
    c->node = n;
    c->fd = fd;
    c->state = state;
    mpscan_init(&c->scan, MPSCAN_MESSAGE_MAX, RPC_MAX_ELEMENTS);
    if (!msgpack_unpacker_init(&c->unp, MSGPACK_UNPACKER_INIT_BUFFER_SIZE)) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    nbuf_init(&c->out);
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    c->nnext = n->conns;
    if (n->conns)
        n->conns->nprev = c;
    n->conns = c;
    return c;
}

void rpc_conn_free(rpc_conn *c)
{
    assert(c->state == RPC_CONN_CLOSED && "rpc_conn_free: connection still open");
    msgpack_unpacker_destroy(&c->unp);
    nbuf_destroy(&c->out);
    free(c);
}

void rpc_conn_close(rpc_conn *c, bool notify)
{
    if (c->state == RPC_CONN_CLOSED)
        return;
    rpc_node *n = c->node;
    ev_io_stop(n->loop, &c->rio);
    ev_io_stop(n->loop, &c->wio);
    ev_timer_stop(n->loop, &c->ctimer);
    close(c->fd);
    c->fd = -1;
    c->state = RPC_CONN_CLOSED;
    if (c->nprev)
        c->nprev->nnext = c->nnext;
    else
        n->conns = c->nnext;
    if (c->nnext)
        c->nnext->nprev = c->nprev;
    c->nprev = c->nnext = NULL;
    /* Freed at the next prepare: the read loop or a callback may still hold c or objects
     * decoded from its unpacker buffer. */
    c->xnext = n->dead_conns;
    n->dead_conns = c;

    rpc_session *s = c->session;
    c->session = NULL;
    if (!s)
        return;
    if (s->connecting == c) {
        s->connecting = NULL;
        return;
    }
    for (rpc_conn **pp = &s->conns; *pp; pp = &(*pp)->snext) {
        if (*pp == c) {
            *pp = c->snext;
            s->nconns--;
            break;
        }
    }
    c->snext = NULL;
    if (s->pk_conn == c)
        s->pk_conn = NULL;
    if (notify)
        rpc_sess_conn_lost(s);
}

void rpc_conn_mark_dirty(rpc_conn *c)
{
    if (c->dirty || c->state == RPC_CONN_CLOSED)
        return;
    c->dirty = true;
    c->dnext = c->node->dirty;
    c->node->dirty = c;
}

void rpc_conn_flush(rpc_conn *c)
{
    while (nbuf_pending(&c->out) > 0) {
        ssize_t w = send(c->fd, c->out.data + c->out.off, nbuf_pending(&c->out), MSG_NOSIGNAL);
        if (w > 0) {
            nbuf_consume(&c->out, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(c->node->loop, &c->wio);
            return;
        }
        log_debug("rpc: write failed fd(%d): %s", c->fd, strerror(errno));
        rpc_conn_close(c, true);
        return;
    }
    ev_io_stop(c->node->loop, &c->wio);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    rpc_conn_flush(RPC_CONTAINER_OF(w, rpc_conn, wio));
}

/* [2, self_addr, self_role] (wire.md §4.3 step 1). */
static void conn_write_init(rpc_conn *c)
{
    const rpc_config *cfg = &c->node->cfg;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &c->out, nbuf_msgpack_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint8(&pk, 2);
    msgpack_pack_v4raw(&pk, cfg->self.len);
    msgpack_pack_v4raw_body(&pk, cfg->self.raw, cfg->self.len);
    msgpack_pack_uint8(&pk, (uint8_t)cfg->role);
}

/* ------------------------------------------------------------------ connect */

static void conn_connect_abort(rpc_conn *c, const char *why)
{
    rpc_session *s = c->session;
    char a[KADDR_STRLEN];
    log_debug("connect failed %s: %s", kaddr_format(&s->addr, a), why);
    rpc_conn_close(c, false);
    rpc_sess_connect_failed(s);
}

static void conn_connected(rpc_conn *c)
{
    rpc_node *n = c->node;
    rpc_session *s = c->session;
    char a[KADDR_STRLEN];
    ev_io_stop(n->loop, &c->wio);
    ev_timer_stop(n->loop, &c->ctimer);
    ev_io_init(&c->wio, conn_write_cb, c->fd, EV_WRITE);
    set_nodelay(c->fd);
    log_info("connect success %s fd(%d)", kaddr_format(&s->addr, a), c->fd);
    s->connecting = NULL;
    c->session = NULL;
    if (s->cluster) {
        c->state = RPC_CONN_CLUSTER;
        c->await_init = true;
        conn_write_init(c);        /* the handshake goes before anything queued */
    } else {
        c->state = RPC_CONN_PLAIN;
    }
    ev_io_start(n->loop, &c->rio);
    rpc_sess_bind(s, c);
    rpc_conn_mark_dirty(c);
}

static void conn_connect_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    rpc_conn *c = RPC_CONTAINER_OF(w, rpc_conn, wio);
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        conn_connect_abort(c, strerror(err));
        return;
    }
    conn_connected(c);
}

static void conn_connect_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_connect_abort(RPC_CONTAINER_OF(w, rpc_conn, ctimer), "timed out");
}

void rpc_conn_connect(rpc_session *s)
{
    rpc_node *n = s->node;
    char a[KADDR_STRLEN];
    struct sockaddr_storage ss;
    s->retry++;
    log_info("connecting to %s", kaddr_format(&s->addr, a));
    socklen_t sl = kaddr_to_sockaddr(&s->addr, &ss);
    int fd = -1;
    if (sl == 0) {
        errno = EADDRNOTAVAIL;
        goto fail;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS)
        goto fail;
    /* Completion (or an immediate success) is reported by writability. */
    rpc_conn *c = conn_new(n, fd, RPC_CONN_CONNECTING);
    c->session = s;
    s->connecting = c;
    ev_io_init(&c->wio, conn_connect_io_cb, fd, EV_WRITE);
    ev_io_start(n->loop, &c->wio);
    ev_timer_init(&c->ctimer, conn_connect_timeout_cb, n->cfg.connect_timeout, 0.0);
    ev_timer_start(n->loop, &c->ctimer);
    return;
fail:
    log_debug("connect failed %s: %s", a, strerror(errno));
    if (fd >= 0)
        close(fd);
    rpc_sess_connect_failed(s);
}

/* ------------------------------------------------------------------ accept */

void rpc_conn_accepted(void *node, int fd)
{
    rpc_node *n = node;
    set_nodelay(fd);
    rpc_conn *c = conn_new(n, fd, RPC_CONN_ACCEPTED);
    ev_io_start(n->loop, &c->rio);
}

/* ------------------------------------------------------------------ decode */

static bool obj_u32(const msgpack_object *o, uint32_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > UINT32_MAX)
        return false;
    *v = (uint32_t)o->via.u64;
    return true;
}

/* [2, address, role]: fills addr and role; false if malformed. */
static bool parse_init(const msgpack_object *e, uint32_t size, kaddr *addr, int *role)
{
    uint32_t r;
    if (size < 3)
        return false;
    /* wire.md §3: str and bin forms are both "raw". */
    if (e[1].type != MSGPACK_OBJECT_STR && e[1].type != MSGPACK_OBJECT_BIN)
        return false;
    if (kaddr_from_dump(addr, e[1].via.str.ptr, e[1].via.str.size) != 0)
        return false;
    if (!obj_u32(&e[2], &r) || r > 255)
        return false;
    *role = (int)r;
    return true;
}

/* First message on an accepted connection is an init (wire.md §4.3 step 2). */
static bool conn_accept_init(rpc_conn *c, const msgpack_object *e, uint32_t size)
{
    rpc_node *n = c->node;
    kaddr addr;
    int role;
    if (!parse_init(e, size, &addr, &role))
        return false;
    if (kaddr_is_null(&addr) || n->cfg.self.len == 0)
        return false;   /* port 0: not a connectable node; a plain-only node cannot answer */
    conn_write_init(c);
    c->state = RPC_CONN_CLUSTER;
    rpc_session *s = rpc_sess_get(n, &addr, true, true);
    rpc_sess_bind(s, c);
    rpc_conn_mark_dirty(c);
    rpc_session_ref(s);
    rpc_sess_learn_role(s, role);
    rpc_session_unref(s);
    return true;
}

static bool conn_classify_plain(rpc_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    kaddr peer = { 0 };
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0)
        (void)kaddr_from_sockaddr(&peer, (struct sockaddr *)&ss);
    c->state = RPC_CONN_PLAIN;
    rpc_session *s = rpc_sess_new_accepted(c->node, &peer);
    rpc_sess_bind(s, c);
    return true;
}

static void conn_request(rpc_conn *c, uint32_t msgid, uint32_t method, const msgpack_object *params)
{
    rpc_session *s = c->session;
    rpc_node *n = c->node;
    if (params->type != MSGPACK_OBJECT_ARRAY || !n->cfg.dispatch) {
        rpc_reply_error(s, msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    rpc_request req = {
        .session = s,
        .msgid = msgid,
        .method = method,
        .params = params,
        .cluster = c->state == RPC_CONN_CLUSTER,
    };
    rpc_session_ref(s);
    n->cfg.dispatch(&req, n->cfg.ud);
    rpc_session_unref(s);
}

/* Handle one top-level object.  Returns false on a protocol violation (the caller closes). */
static bool conn_handle(rpc_conn *c, const msgpack_object *obj)
{
    if (obj->type != MSGPACK_OBJECT_ARRAY || obj->via.array.size < 3)
        return false;
    const msgpack_object *e = obj->via.array.ptr;
    uint32_t size = obj->via.array.size;
    uint32_t type;
    /* wire.md §4.1: element 0 is read as an unsigned 16-bit integer. */
    if (!obj_u32(&e[0], &type) || type > 0xffff)
        return false;

    if (c->state == RPC_CONN_ACCEPTED) {
        if (type == 2)
            return conn_accept_init(c, e, size);
        conn_classify_plain(c);
    } else if (c->await_init) {
        kaddr addr;
        int role;
        if (type != 2 || !parse_init(e, size, &addr, &role))
            return false;
        c->await_init = false;
        rpc_session *s = c->session;
        rpc_session_ref(s);
        rpc_sess_learn_role(s, role);
        rpc_session_unref(s);
        return true;
    }

    /* Anything but a request is a response; a late init is a too-short response. */
    uint32_t msgid;
    if (size < 4 || !obj_u32(&e[1], &msgid))
        return false;
    if (type == 0) {
        uint32_t method;
        if (!obj_u32(&e[2], &method))
            return false;
        conn_request(c, msgid, method, &e[3]);
    } else {
        rpc_sess_response(c->session, msgid, &e[2], &e[3]);
    }
    return true;
}

/* Decode and handle every complete message in the unpacker.  Returns false if closed. */
static bool conn_process(rpc_conn *c)
{
    for (;;) {
        int r = msgpack_unpacker_execute(&c->unp);
        if (r < 0) {
            log_debug("rpc: undecodable input on fd(%d), closing", c->fd);
            rpc_conn_close(c, true);
            return false;
        }
        if (r == 0)
            break;
        msgpack_object obj = msgpack_unpacker_data(&c->unp);
        bool ok = conn_handle(c, &obj);
        /* Reuse the zone instead of msgpack_unpacker_next's fresh zone per message. */
        if (c->unp.z)
            msgpack_unpacker_reset_zone(&c->unp);
        msgpack_unpacker_reset(&c->unp);
        if (!ok) {
            log_debug("rpc: bad envelope on fd(%d), closing", c->fd);
            rpc_conn_close(c, true);
            return false;
        }
        if (c->state == RPC_CONN_CLOSED)
            return false;
    }
    return true;
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    rpc_conn *c = RPC_CONTAINER_OF(w, rpc_conn, rio);
    for (int round = 0; round < RPC_READ_ROUNDS; round++) {
        if (msgpack_unpacker_buffer_capacity(&c->unp) < RPC_READ_CHUNK &&
            !msgpack_unpacker_reserve_buffer(&c->unp, RPC_READ_CHUNK)) {
            log_error("rpc: cannot grow the read buffer on fd(%d)", c->fd);
            rpc_conn_close(c, true);
            return;
        }
        size_t cap = msgpack_unpacker_buffer_capacity(&c->unp);
        ssize_t r = read(c->fd, msgpack_unpacker_buffer(&c->unp), cap);
        if (r == 0) {
            rpc_conn_close(c, true);
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                log_debug("rpc: read failed fd(%d): %s", c->fd, strerror(errno));
                rpc_conn_close(c, true);
            }
            return;
        }
        /* Vet the new bytes before the unpacker may act on a header in them; this also
         * enforces MPSCAN_MESSAGE_MAX, since the scanner bounds each message's size. */
        enum mpscan_error se =
            mpscan_execute(&c->scan, msgpack_unpacker_buffer(&c->unp), (size_t)r);
        if (se != MPSCAN_OK) {
            if (se == MPSCAN_BAD_BYTE)
                log_debug("rpc: undecodable input on fd(%d), closing", c->fd);
            else
                log_warn("rpc: rejected input on fd(%d): %s, closing", c->fd, mpscan_strerror(se));
            rpc_conn_close(c, true);
            return;
        }
        msgpack_unpacker_buffer_consumed(&c->unp, (size_t)r);
        if (!conn_process(c))
            return;
        if ((size_t)r < cap)
            return;   /* drained the socket */
    }
}
