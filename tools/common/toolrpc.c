/* toolrpc.c - blocking msgpack-RPC client and shared helpers of the admin tools (tools.md §1). */
#include "tools/common/toolrpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "logic/kwire.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"
#include "rpc/mpscan.h"

#define READ_CHUNK 4096
/* The daemons' input limits (rpc_conn.c): a reply never comes near them, and a peer that
 * announces more cannot make msgpack-c reserve gigabytes in the tool. */
#define MAX_ELEMENTS 65536u

struct toolrpc {
    int fd;                      /* non-blocking; every wait goes through poll() */
    uint32_t next_msgid;         /* tools.md §1: random start, +1 per request, wraps at 2^16 */
    uint32_t cur_msgid;          /* msgid of the request being built/awaited */
    msgpack_sbuffer sbuf;        /* the request being built */
    msgpack_packer pk;
    mpscan scan;                 /* vets received bytes before unp sees them */
    msgpack_unpacker unp;        /* stream decoder over the socket */
    msgpack_unpacked msg;        /* last decoded message; owns the objects we lend out */
    char errmsg[256];            /* last transport failure */
    int timeout_ms;              /* per toolrpc_call() send and receive deadline */
};

static int connect_timeout_ms = TOOLRPC_CONNECT_TIMEOUT_MS;

void toolrpc_set_connect_timeout(int ms)
{
    connect_timeout_ms = ms;
}

void toolrpc_set_timeout(toolrpc *c, int ms)
{
    c->timeout_ms = ms;
}

/* ------------------------------------------------------------------ time */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready for events or the deadline passes.  1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* ------------------------------------------------------------------ connect */

/* A per-process random first msgid for every connection (tools.md §1). */
static uint32_t random_msgid(void)
{
    static bool seeded;
    if (!seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        srandom((unsigned)ts.tv_nsec ^ (unsigned)ts.tv_sec ^ ((unsigned)getpid() << 16));
        seeded = true;
    }
    return (uint32_t)random() % 65536u;
}

static toolrpc *toolrpc_new(int fd)
{
    toolrpc *c = xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->next_msgid = random_msgid();
    c->timeout_ms = TOOLRPC_RECV_TIMEOUT_MS;
    msgpack_sbuffer_init(&c->sbuf);
    msgpack_packer_init(&c->pk, &c->sbuf, msgpack_sbuffer_write);
    mpscan_init(&c->scan, MPSCAN_MESSAGE_MAX, MAX_ELEMENTS);
    if (!msgpack_unpacker_init(&c->unp, MSGPACK_UNPACKER_INIT_BUFFER_SIZE)) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    msgpack_unpacked_init(&c->msg);
    return c;
}

/* Non-blocking connect with a timeout.  Returns the fd or -1 with errno set. */
static int connect_one(const struct sockaddr *sa, socklen_t salen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, sa, salen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int r = wait_fd(fd, POLLOUT, now_ms() + connect_timeout_ms);
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (r == 0)
        soerr = ETIMEDOUT;
    else if (r < 0)
        soerr = errno;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr != 0) {
        close(fd);
        errno = soerr;
        return -1;
    }
    return fd;
}

/* Ruby-like connect failure text: `<strerror> - connect(2) for "<ip>" port <port>`. */
static void connect_error(char *err, size_t errlen, int e, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
    }
    snprintf(err, errlen, "%s - connect(2) for \"%s\" port %u", strerror(e), ip, port);
}

toolrpc *toolrpc_connect(const char *addr, unsigned default_port, char *err, size_t errlen)
{
    /* tools.md §1: split at the first ':' (IPv6 literals are therefore unusable, as in
     * the original); the rest is the port, passed on as it is. */
    const char *colon = strchr(addr, ':');
    char host[256], port[64];
    if (colon != NULL) {
        snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
        snprintf(port, sizeof(port), "%s", colon + 1);
    } else {
        snprintf(host, sizeof(host), "%s", addr);
        snprintf(port, sizeof(port), "%u", default_port);
    }
    if (host[0] == '\0')
        snprintf(host, sizeof(host), "0.0.0.0");   /* Ruby sockets read "" as INADDR_ANY */

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int gr = getaddrinfo(host, port, &hints, &res);
    if (gr != 0) {
        snprintf(err, errlen, "getaddrinfo: %s (%s:%s)", gai_strerror(gr), host, port);
        return NULL;
    }
    /* like Ruby's TCPSocket: try each resolved address, report the last failure */
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = connect_one(ai->ai_addr, ai->ai_addrlen);
        if (fd >= 0)
            break;
        connect_error(err, errlen, errno, ai->ai_addr);
    }
    freeaddrinfo(res);
    if (fd < 0)
        return NULL;
    return toolrpc_new(fd);
}

toolrpc *toolrpc_connect_kaddr(const kaddr *a, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = kaddr_to_sockaddr(a, &ss);
    if (sl == 0) {
        snprintf(err, errlen, "invalid address");
        return NULL;
    }
    int fd = connect_one((struct sockaddr *)&ss, sl);
    if (fd < 0) {
        connect_error(err, errlen, errno, (struct sockaddr *)&ss);
        return NULL;
    }
    return toolrpc_new(fd);
}

void toolrpc_close(toolrpc *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    msgpack_unpacked_destroy(&c->msg);
    msgpack_unpacker_destroy(&c->unp);
    msgpack_sbuffer_destroy(&c->sbuf);
    free(c);
}

const char *toolrpc_errmsg(const toolrpc *c)
{
    return c->errmsg;
}

/* ------------------------------------------------------------------ call */

msgpack_packer *toolrpc_request(toolrpc *c, uint32_t method, uint32_t nparams)
{
    msgpack_sbuffer_clear(&c->sbuf);
    c->cur_msgid = c->next_msgid;
    c->next_msgid = (c->next_msgid + 1) % 65536u;
    /* wire.md §4.1: [0, msgid, method, params] with unsigned integers */
    msgpack_pack_array(&c->pk, 4);
    msgpack_pack_uint64(&c->pk, 0);
    msgpack_pack_uint64(&c->pk, c->cur_msgid);
    msgpack_pack_uint64(&c->pk, method);
    msgpack_pack_array(&c->pk, nparams);
    return &c->pk;
}

static int send_all(toolrpc *c, const char *p, size_t len)
{
    int64_t deadline = now_ms() + c->timeout_ms;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(c->fd, POLLOUT, deadline);
            if (r > 0)
                continue;
            snprintf(c->errmsg, sizeof(c->errmsg), "%s", r == 0 ? "send timed out" : strerror(errno));
            return -1;
        }
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Is this decoded message the response to msgid?  wire.md §4.1: a plain client treats
 * every non-request message as a response; requests (type 0) are ignored (tools.md §1). */
static bool is_our_response(const msgpack_object *o, uint32_t msgid)
{
    uint64_t type, id;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 4)
        return false;
    if (!kwire_get_u64(&o->via.array.ptr[0], &type) || type == 0)
        return false;
    return kwire_get_u64(&o->via.array.ptr[1], &id) && id == msgid;
}

int toolrpc_call(toolrpc *c, const msgpack_object **error, const msgpack_object **result)
{
    c->errmsg[0] = '\0';
    if (send_all(c, c->sbuf.data, c->sbuf.size) != 0)
        return -1;

    int64_t deadline = now_ms() + c->timeout_ms;
    for (;;) {
        msgpack_unpack_return ur = msgpack_unpacker_next(&c->unp, &c->msg);
        if (ur == MSGPACK_UNPACK_SUCCESS) {
            const msgpack_object *o = &c->msg.data;
            if (is_our_response(o, c->cur_msgid)) {
                *error = &o->via.array.ptr[2];
                *result = &o->via.array.ptr[3];
                return 0;
            }
            continue;
        }
        if (ur != MSGPACK_UNPACK_CONTINUE) {
            snprintf(c->errmsg, sizeof(c->errmsg), "invalid msgpack data from peer");
            return -1;
        }
        if (!msgpack_unpacker_reserve_buffer(&c->unp, READ_CHUNK)) {
            fprintf(stderr, "out of memory\n");
            abort();
        }
        ssize_t n = recv(c->fd, msgpack_unpacker_buffer(&c->unp), READ_CHUNK, 0);
        if (n > 0) {
            /* Checked before the unpacker may act on a header in them (sticky). */
            enum mpscan_error se =
                mpscan_execute(&c->scan, msgpack_unpacker_buffer(&c->unp), (size_t)n);
            if (se != MPSCAN_OK) {
                snprintf(c->errmsg, sizeof(c->errmsg), "invalid msgpack data from peer (%s)",
                         mpscan_strerror(se));
                return -1;
            }
            msgpack_unpacker_buffer_consumed(&c->unp, (size_t)n);
            continue;
        }
        if (n == 0) {
            snprintf(c->errmsg, sizeof(c->errmsg), "connection closed by peer");
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int r = wait_fd(c->fd, POLLIN, deadline);
            if (r > 0)
                continue;
            snprintf(c->errmsg, sizeof(c->errmsg), "%s",
                     r == 0 ? "timed out waiting for the response" : strerror(errno));
            return -1;
        }
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", strerror(errno));
        return -1;
    }
}

/* ------------------------------------------------------------------ GetNodesInfo */

int toolrpc_get_nodes_info(toolrpc *c, hashspace *whs, kaddr **newcomers, size_t *nnew,
                           char *err, size_t errlen)
{
    const msgpack_object *r;
    *newcomers = NULL;
    *nnew = 0;
    toolrpc_request(c, MGR_GET_NODES_INFO, 0);
    int rc = toolrpc_call_checked(c, &r, err, errlen);
    if (rc != 0)
        return rc;
    /* wire.md §8.1: [whs:HSSeed, newcomers:[address...]] */
    const msgpack_object *seed = kwire_array_at(r, 0);
    const msgpack_object *list = kwire_array_at(r, 1);
    if (seed == NULL || list == NULL || list->type != MSGPACK_OBJECT_ARRAY ||
        !kwire_get_seed(seed, whs)) {
        snprintf(err, errlen, "malformed GetNodesInfo result");
        return -1;
    }
    if (list->via.array.size > 0) {
        *newcomers = xcalloc(list->via.array.size, sizeof(kaddr));
        for (uint32_t i = 0; i < list->via.array.size; i++) {
            if (!kwire_get_addr(&list->via.array.ptr[i], &(*newcomers)[*nnew])) {
                free(*newcomers);
                *newcomers = NULL;
                *nnew = 0;
                snprintf(err, errlen, "malformed GetNodesInfo result");
                return -1;
            }
            (*nnew)++;
        }
    }
    return 0;
}

int toolrpc_fetch_whs(const char *addr, hashspace *whs, char *err, size_t errlen)
{
    toolrpc *m = toolrpc_connect(addr, TOOLRPC_MANAGER_PORT, err, errlen);
    if (m == NULL)
        return -1;
    kaddr *newcomers;
    size_t nnew;
    int r = toolrpc_get_nodes_info(m, whs, &newcomers, &nnew, err, errlen);
    toolrpc_close(m);
    free(newcomers);
    return r;
}

/* ------------------------------------------------------------------ GetStatus */

int toolrpc_call_checked(toolrpc *c, const msgpack_object **result, char *err, size_t errlen)
{
    const msgpack_object *e;
    if (toolrpc_call(c, &e, result) != 0) {
        snprintf(err, errlen, "%s", toolrpc_errmsg(c));
        return -1;
    }
    if (!kwire_is_nil(e)) {
        char v[256];
        snprintf(err, errlen, "error %s", toolrpc_format_value(e, false, v, sizeof(v)));
        return 1;
    }
    return 0;
}

int toolrpc_get_status(toolrpc *c, uint32_t code, const msgpack_object **result, char *err,
                       size_t errlen)
{
    msgpack_packer *pk = toolrpc_request(c, SRV_GET_STATUS, 1);
    msgpack_pack_uint64(pk, code);
    return toolrpc_call_checked(c, result, err, errlen);
}

const char *toolrpc_replstat_name(uint64_t st)
{
    return (st & REPLSTAT_INACTIVE) ? "inactive"
         : (st & REPLSTAT_DELETING) ? "Deleting"
         : (st & REPLSTAT_COPYING)  ? "Copying"
         : (st & REPLSTAT_HS_DIFFER) ? "WAIT" : "ready";
}

bool toolrpc_wants_help(int argc, char **argv)
{
    return argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
}

/* ------------------------------------------------------------------ rendering */

char *toolrpc_format_time(uint32_t sec, char *buf, size_t len)
{
    time_t t = (time_t)sec;
    struct tm tm;
    buf[0] = '\0';
    if (localtime_r(&t, &tm) == NULL || strftime(buf, len, "%a %b %d %H:%M:%S %z %Y", &tm) == 0)
        snprintf(buf, len, "%u", sec);
    return buf;
}

/* A tiny bounded string builder. */
typedef struct sb {
    char *p;
    size_t len, cap;
} sb;

static void sb_put(sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_put(sb *s, const char *fmt, ...)
{
    if (s->len + 1 >= s->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        s->len = (size_t)n >= s->cap - s->len ? s->cap - 1 : s->len + (size_t)n;
}

/* Ruby 1.8 String#inspect: escapes for the C controls it knows, octal for other bytes. */
static void put_inspect_string(sb *s, const unsigned char *p, size_t n)
{
    sb_put(s, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = p[i];
        switch (ch) {
        case '"': sb_put(s, "\\\""); break;
        case '\\': sb_put(s, "\\\\"); break;
        case '\n': sb_put(s, "\\n"); break;
        case '\r': sb_put(s, "\\r"); break;
        case '\t': sb_put(s, "\\t"); break;
        case '\f': sb_put(s, "\\f"); break;
        case '\v': sb_put(s, "\\v"); break;
        case '\b': sb_put(s, "\\b"); break;
        case '\a': sb_put(s, "\\a"); break;
        case 033: sb_put(s, "\\e"); break;
        case '#':
            /* "#{", "#$", "#@" would read as interpolation, so Ruby escapes the '#' */
            if (i + 1 < n && (p[i + 1] == '{' || p[i + 1] == '$' || p[i + 1] == '@'))
                sb_put(s, "\\#");
            else
                sb_put(s, "#");
            break;
        default:
            if (ch >= 0x20 && ch < 0x7f)
                sb_put(s, "%c", ch);
            else
                sb_put(s, "\\%03o", ch);
        }
    }
    sb_put(s, "\"");
}

static void put_value(sb *s, const msgpack_object *o, bool inspect)
{
    const char *data;
    size_t n;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        if (inspect)
            sb_put(s, "nil");
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        sb_put(s, "%s", o->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        sb_put(s, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        sb_put(s, "%lld", (long long)o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        sb_put(s, "%g", o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN:
        kwire_get_raw(o, &data, &n);
        if (inspect)
            put_inspect_string(s, (const unsigned char *)data, n);
        else
            sb_put(s, "%.*s", (int)n, data);
        break;
    case MSGPACK_OBJECT_ARRAY:
        /* Ruby 1.8 Array#to_s joins the elements; inspect gives "[a, b]" */
        if (inspect)
            sb_put(s, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (inspect && i > 0)
                sb_put(s, ", ");
            put_value(s, &o->via.array.ptr[i], inspect);
        }
        if (inspect)
            sb_put(s, "]");
        break;
    case MSGPACK_OBJECT_MAP:
        if (inspect)
            sb_put(s, "{");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i > 0 && inspect)
                sb_put(s, ", ");
            put_value(s, &o->via.map.ptr[i].key, inspect);
            if (inspect)
                sb_put(s, "=>");
            put_value(s, &o->via.map.ptr[i].val, inspect);
        }
        if (inspect)
            sb_put(s, "}");
        break;
    default:
        sb_put(s, "?");
    }
}

char *toolrpc_format_value(const msgpack_object *o, bool inspect, char *buf, size_t len)
{
    sb s = { buf, 0, len };
    if (len == 0)
        return buf;
    buf[0] = '\0';
    put_value(&s, o, inspect);
    return buf;
}

bool toolrpc_value_equal(const msgpack_object *a, const msgpack_object *b)
{
    const char *pa, *pb;
    size_t la, lb;
    if (kwire_get_raw(a, &pa, &la)) {
        return kwire_get_raw(b, &pb, &lb) && la == lb && memcmp(pa, pb, la) == 0;
    }
    if (a->type == MSGPACK_OBJECT_ARRAY) {
        if (b->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != b->via.array.size)
            return false;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!toolrpc_value_equal(&a->via.array.ptr[i], &b->via.array.ptr[i]))
                return false;
        return true;
    }
    return msgpack_object_equal(*a, *b);
}
