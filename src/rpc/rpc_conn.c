/* rpc_conn.c - the msgpack-RPC protocol on the connection engine (net/nconn.h): connect,
 * accept, framing and in-place decode of the envelopes (wire.md §2, §4) and handshake
 * classification (§4.3).  Reading, output, budget and close are the engine's. */
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
#define RPC_IN_KEEP (64 * 1024)               /* input capacity kept between messages */
#define RPC_NEED_STEP (1024 * 1024)           /* input reserved ahead of a partial message */
/* Objects one message may announce.  kumofs messages hold at most a few thousand (a hash
 * space's node list); this caps msgpack-c's up-front allocation per message at 1.5 MiB
 * (24-byte msgpack_object each), where the size cap alone would still let a 5-byte header
 * announcing ~2^26 elements reserve 1.5 GiB. */
#define RPC_MAX_ELEMENTS 65536u

static const nconn_ops conn_ops;

static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static rpc_conn *conn_new(rpc_node *n, int fd, enum rpc_conn_state state)
{
    rpc_conn *c = xcalloc(1, sizeof *c);
    c->node = n;
    c->state = state;
    nconn_init(&c->nc, &n->group, fd, &conn_ops);
    c->nc.read_min = RPC_READ_CHUNK;
    c->nc.in_keep = RPC_IN_KEEP;
    /* No output limit: two servers replicating large values to each other would each
     * stop reading while the other's output waits, and neither would drain. */
    c->nc.out_high = 0;
    mpscan_init(&c->scan, MPSCAN_MESSAGE_MAX, RPC_MAX_ELEMENTS);
    if (!msgpack_zone_init(&c->zone, MSGPACK_ZONE_CHUNK_SIZE)) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    c->nnext = n->conns;
    if (n->conns)
        n->conns->nprev = c;
    n->conns = c;
    return c;
}

void rpc_conn_close(rpc_conn *c, bool notify)
{
    if (c->state == RPC_CONN_CLOSED)
        return;
    rpc_node *n = c->node;
    ev_timer_stop(n->loop, &c->ctimer);
    /* The socket closes and c is freed at the next prepare (conn_closed): the read loop
     * or a callback may still hold c or objects decoded from its input. */
    nconn_close(&c->nc);
    c->state = RPC_CONN_CLOSED;
    if (c->nprev)
        c->nprev->nnext = c->nnext;
    else
        n->conns = c->nnext;
    if (c->nnext)
        c->nnext->nprev = c->nprev;
    c->nprev = c->nnext = NULL;

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

/* nconn closed: the engine ended c (the peer closed, a read or write failed) or finishes
 * the close rpc_conn_close requested.  Nothing holds c any more. */
static void conn_closed(nconn *nc, enum nconn_end why)
{
    rpc_conn *c = NCONN_CONTAINER_OF(nc, rpc_conn, nc);
    if (c->state != RPC_CONN_CLOSED) {
        if (why == NCONN_END_ERROR)
            log_debug("rpc: i/o failed fd(%d): %s", nconn_fd(nc), strerror(nconn_errno(nc)));
        rpc_conn_close(c, true);
    }
    msgpack_zone_destroy(&c->zone);
    free(c);
}

/* nconn eof: the peer closed. */
static void conn_eof(nconn *nc)
{
    rpc_conn_close(NCONN_CONTAINER_OF(nc, rpc_conn, nc), true);
}

/* [2, self_addr, self_role] (wire.md §4.3 step 1). */
static void conn_write_init(rpc_conn *c)
{
    const rpc_config *cfg = &c->node->cfg;
    msgpack_packer pk;
    msgpack_packer_init(&pk, rpc_conn_out(c), nbuf_msgpack_write);
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
    ev_timer_stop(n->loop, &c->ctimer);
    set_nodelay(nconn_fd(&c->nc));
    log_info("connect success %s fd(%d)", kaddr_format(&s->addr, a), nconn_fd(&c->nc));
    s->connecting = NULL;
    c->session = NULL;
    if (s->cluster) {
        c->state = RPC_CONN_CLUSTER;
        c->await_init = true;
        conn_write_init(c);        /* the handshake goes before anything queued */
    } else {
        c->state = RPC_CONN_PLAIN;
    }
    rpc_sess_bind(s, c);
    rpc_conn_mark_dirty(c);
}

/* nconn connected (reading has started when err is 0). */
static void conn_connect_done(nconn *nc, int err)
{
    rpc_conn *c = NCONN_CONTAINER_OF(nc, rpc_conn, nc);
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
    nconn_connect(&c->nc);
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
    nconn_start(&c->nc);
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
    if (getpeername(nconn_fd(&c->nc), (struct sockaddr *)&ss, &sl) == 0)
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

/* nconn parse: vet the new input with the scanner, then decode and handle one complete
 * message in place (its strings point into the input, valid until this returns). */
static size_t conn_parse(nconn *nc, const char *buf, size_t len, size_t *need)
{
    rpc_conn *c = NCONN_CONTAINER_OF(nc, rpc_conn, nc);
    if (len > c->scanned) {
        /* this also enforces MPSCAN_MESSAGE_MAX, since the scanner bounds each message */
        enum mpscan_error se = mpscan_execute(&c->scan, buf + c->scanned, len - c->scanned);
        c->scanned = len;
        if (se != MPSCAN_OK) {
            if (se == MPSCAN_BAD_BYTE)
                log_debug("rpc: undecodable input on fd(%d), closing", nconn_fd(nc));
            else
                log_warn("rpc: rejected input on fd(%d): %s, closing", nconn_fd(nc),
                         mpscan_strerror(se));
            rpc_conn_close(c, true);
            return 0;
        }
    }
    uint64_t ready = mpscan_complete(&c->scan) - c->base;   /* whole messages in buf */
    if (ready == 0) {
        /* room for the announced message, but at most RPC_NEED_STEP ahead of what came:
         * a header alone must not make us allocate the 64 MiB it may announce */
        uint64_t want = mpscan_message_need(&c->scan);
        *need = (size_t)(want < len + RPC_NEED_STEP ? want : len + RPC_NEED_STEP);
        return 0;
    }
    size_t off = 0;
    msgpack_object obj;
    msgpack_unpack_return r = msgpack_unpack(buf, (size_t)ready, &off, &c->zone, &obj);
    if (r != MSGPACK_UNPACK_SUCCESS && r != MSGPACK_UNPACK_EXTRA_BYTES) {
        log_debug("rpc: undecodable input on fd(%d), closing", nconn_fd(nc));
        rpc_conn_close(c, true);
        return 0;
    }
    bool ok = conn_handle(c, &obj);
    msgpack_zone_clear(&c->zone);
    c->base += off;
    c->scanned -= off;
    if (!ok) {
        log_debug("rpc: bad envelope on fd(%d), closing", nconn_fd(nc));
        rpc_conn_close(c, true);
    }
    return off;
}

static const nconn_ops conn_ops = {
    .parse = conn_parse,
    .eof = conn_eof,
    .connected = conn_connect_done,
    .closed = conn_closed,
};
