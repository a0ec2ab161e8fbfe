/* kumo-bench: a verifying memcached load generator (text and binary protocol) for
 * scripts/bench.sh and the e2e tests; every get hit is checked against what was written. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * Values.  A value is a 32-byte header "KKKKKKKKVVVVVVVVRRRRRRRRLLLLLLLL" (hex: key index,
 * version, run id, value length) followed by letters generated from (key, version, run).
 * A get hit is a MISMATCH unless the header names the requested key, the length is the
 * real length and every pattern byte is right.  For values of this run the version must
 * also be one that was issued, and not older than the FLOOR the key had when the get was
 * sent (else STALE).  A miss of a key with a floor is LOST (an acknowledged set vanished).
 *
 * The floor of a key is the version of its newest set that is known to be the last one
 * applied: one packed atomic per key holds (sets started << 16 | sets in flight); the
 * start sequence number is the set's version.  A set that started while no other set of
 * the key was in flight, and is acknowledged while none started after it, was applied
 * after every older set (those were acknowledged before it was sent) and before any newer
 * one, so every later read must see it or something newer.  A set lost with its connection
 * stays "in flight" for ever: it may still be applied, so that key's floor stops moving.
 */
#define HDR_LEN 32
#define MAX_VALUE (1u << 20)
#define KEY_LEN 16 /* see key_format */

enum op { OP_GET, OP_SET };
enum phase { PH_PRELOAD, PH_WARMUP, PH_MEASURE, PH_DONE };

struct opts {
    const char *host, *port, *prefix;
    int threads, conns, depth, vsize, seconds, warmup, timeout_ms, progress_ms;
    uint32_t keys;
    double get_ratio;
    uint64_t seed;
    bool binary, preload, quiet;
};

/* Log-linear latency histogram in nanoseconds: 64 sub-buckets per power of two. */
#define HSUB 64
#define HBUCKETS (64 * HSUB)
struct hist { uint64_t n[HBUCKETS]; uint64_t max; };

struct stats {
    uint64_t gets, hits, misses, sets, stored, set_fail, errors, mismatches, stale, lost,
        foreign, dropped;
    struct hist lat;
};

struct req { enum op op; uint32_t key; uint32_t ver; uint32_t floor; bool solo; uint64_t t0; };

struct conn {
    int fd;
    struct req *ring; int head, count;  /* outstanding requests, oldest at head */
    char *in; size_t in_len, in_cap;
    char *out; size_t out_len, out_off, out_cap;
    uint32_t opaque;
    uint64_t down_until;                /* reconnect after this time (ns) when fd < 0 */
};

struct worker {
    pthread_t tid;
    int id, ep, nconn;
    struct conn *conns;
    uint64_t rng;
    char *scratch;
    struct stats st[3];                 /* per phase: preload, warm-up, measured */
    int err_printed;
};

static struct opts O = {
    .host = "127.0.0.1", .port = "11211", .prefix = "kb:", .threads = 1, .conns = 16, .depth = 1,
    .vsize = 1024, .seconds = 5, .warmup = 1, .timeout_ms = 2000, .keys = 100000,
    .get_ratio = 0.9, .seed = 1,
};
static _Atomic uint64_t *key_state;     /* (started << 16) | in flight, per key */
static _Atomic uint32_t *key_floor;
static _Atomic uint32_t preload_next;
static _Atomic int phase = PH_PRELOAD;
static volatile sig_atomic_t interrupted;
static uint32_t run_id;
static struct addrinfo *server_ai;
static _Atomic int errors_printed;
static _Atomic uint64_t replies_measured;   /* for --progress */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void hist_add(struct hist *h, uint64_t ns)
{
    int b;
    if (ns < HSUB) {
        b = (int)ns;
    } else {
        int msb = 63 - __builtin_clzll(ns);
        b = (msb - 5) * HSUB + (int)((ns >> (msb - 6)) & (HSUB - 1));
    }
    if (b >= HBUCKETS) b = HBUCKETS - 1;
    h->n[b]++;
    if (ns > h->max) h->max = ns;
}

/* Upper edge of bucket b in ns. */
static uint64_t hist_edge(int b)
{
    if (b < HSUB) return (uint64_t)b;
    int msb = b / HSUB + 5, sub = b % HSUB;
    return ((uint64_t)(HSUB + sub + 1) << (msb - 6)) - 1;
}

static double hist_pct_us(const struct hist *h, double p)
{
    uint64_t total = 0, acc = 0;
    for (int b = 0; b < HBUCKETS; b++) total += h->n[b];
    if (total == 0) return 0;
    uint64_t want = (uint64_t)(p * (double)total + 0.999999);
    if (want == 0) want = 1;
    for (int b = 0; b < HBUCKETS; b++) {
        acc += h->n[b];
        if (acc >= want) {
            uint64_t e = hist_edge(b);
            return (double)(e < h->max ? e : h->max) / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

/* Key idx: the prefix, the index zero-padded, '-': always KEY_LEN bytes, no NUL. */
static void key_format(char *k, uint32_t idx)
{
    char d[KEY_LEN + 1];
    size_t p = strlen(O.prefix);
    snprintf(d, sizeof d, "%0*" PRIu32, (int)(KEY_LEN - 1 - p), idx);
    memcpy(k, O.prefix, p);
    memcpy(k + p, d, KEY_LEN - 1 - p);
    k[KEY_LEN - 1] = '-';
}

/* Pattern bytes of (key, version, run): letters, so a text dump stays readable. */
static void pattern_fill(char *p, size_t n, uint32_t key, uint32_t ver, uint32_t run)
{
    uint64_t s = ((uint64_t)key << 32 | ver) ^ ((uint64_t)run * 0x2545f4914f6cdd1dull);
    size_t i = 0;
    while (i < n) {
        uint64_t r = splitmix(&s);
        for (int j = 0; j < 16 && i < n; j++, r >>= 4) p[i++] = (char)('a' + (r & 15));
    }
}

static void value_fill(char *v, size_t len, uint32_t key, uint32_t ver)
{
    char h[HDR_LEN + 1];
    snprintf(h, sizeof h, "%08" PRIx32 "%08" PRIx32 "%08" PRIx32 "%08" PRIx32, key, ver, run_id,
             (uint32_t)len);
    memcpy(v, h, HDR_LEN);
    pattern_fill(v + HDR_LEN, len - HDR_LEN, key, ver, run_id);
}

static bool hex32(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

static void report_error(struct worker *w, const char *what, const char *data, size_t n)
{
    (void)w;
    if (O.quiet || atomic_fetch_add(&errors_printed, 1) >= 10) return;
    char ex[81];
    size_t m = 0;
    for (size_t i = 0; i < n && m < 76; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c >= 32 && c < 127) { ex[m++] = (char)c; }
        else { m += (size_t)snprintf(ex + m, sizeof ex - m, "\\x%02x", c); }
    }
    ex[m] = 0;
    fprintf(stderr, "kumo-bench: %s: \"%s\"\n", what, ex);
}

/* Check one get hit of r->key; counts the outcome in st. */
static void verify_hit(struct worker *w, struct stats *st, const struct req *r, const char *v,
                       size_t len, uint32_t flags)
{
    uint32_t k, ver, run, l;
    if (flags != 0 || len < HDR_LEN || !hex32(v, &k) || !hex32(v + 8, &ver) ||
        !hex32(v + 16, &run) || !hex32(v + 24, &l) || k != r->key || l != len || ver == 0) {
        st->mismatches++;
        report_error(w, "mismatch (header)", v, len < 80 ? len : 80);
        return;
    }
    if (len - HDR_LEN > MAX_VALUE) { st->mismatches++; return; }
    pattern_fill(w->scratch, len - HDR_LEN, k, ver, run);
    if (memcmp(w->scratch, v + HDR_LEN, len - HDR_LEN) != 0) {
        st->mismatches++;
        report_error(w, "mismatch (pattern)", v, len < 80 ? len : 80);
        return;
    }
    if (run != run_id) { st->foreign++; return; }
    uint32_t issued = (uint32_t)(atomic_load(&key_state[k]) >> 16);
    if (len != (size_t)O.vsize || ver > issued) {
        st->mismatches++;
        report_error(w, "mismatch (never written)", v, HDR_LEN);
    } else if (ver < r->floor) {
        st->stale++;
        report_error(w, "stale value", v, HDR_LEN);
    }
}

static void set_acked(const struct req *r)
{
    uint64_t old = atomic_fetch_sub(&key_state[r->key], 1);
    if (r->solo && (old & 0xffff) == 1 && (uint32_t)(old >> 16) == r->ver) {
        uint32_t f = atomic_load(&key_floor[r->key]);
        while (f < r->ver && !atomic_compare_exchange_weak(&key_floor[r->key], &f, r->ver)) {}
    }
}

/* ---------------------------------------------------------------- connections */

static void out_reserve(struct conn *c, size_t n)
{
    if (c->out_len + n <= c->out_cap) return;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + n <= c->out_cap) return;
    }
    while (c->out_len + n > c->out_cap) c->out_cap = c->out_cap ? c->out_cap * 2 : 65536;
    c->out = realloc(c->out, c->out_cap);
    if (!c->out) { perror("kumo-bench: realloc"); exit(2); }
}

static void conn_open(struct worker *w, struct conn *c)
{
    c->fd = socket(server_ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { perror("kumo-bench: socket"); exit(2); }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, server_ai->ai_addr, server_ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        c->down_until = now_ns() + 100000000u;
        return;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c };
    epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->head = c->count = 0;
    c->in_len = c->out_len = c->out_off = 0;
}

/* Drop the connection after an error: its outstanding requests are "dropped". */
static void conn_fail(struct worker *w, struct conn *c, const char *why, const char *data, size_t n)
{
    int ph = atomic_load(&phase);
    struct stats *st = &w->st[ph > PH_MEASURE ? PH_MEASURE : ph];
    st->errors++;
    report_error(w, why, data ? data : "", data ? n : 0);
    st->dropped += (uint64_t)c->count;  /* their sets stay "in flight": floors freeze */
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->count = 0;
    c->down_until = now_ns() + 10000000u;
}

/* Queue one request; preload_key >= 0: a set of that key, else a random get or set. */
static void push_request(struct worker *w, struct conn *c, int64_t preload_key)
{
    struct req *r = &c->ring[(c->head + c->count) % O.depth];
    char key[KEY_LEN];
    if (preload_key >= 0) {
        r->op = OP_SET;
        r->key = (uint32_t)preload_key;
    } else {
        r->op = (double)(splitmix(&w->rng) >> 11) / 9007199254740992.0 < O.get_ratio ? OP_GET : OP_SET;
        r->key = (uint32_t)(splitmix(&w->rng) % O.keys);
    }
    key_format(key, r->key);
    if (r->op == OP_GET) {
        r->floor = atomic_load(&key_floor[r->key]);
        if (O.binary) {
            out_reserve(c, 24 + KEY_LEN);
            unsigned char *h = (unsigned char *)c->out + c->out_len;
            memset(h, 0, 24);
            h[0] = 0x80; h[1] = 0x00; h[3] = KEY_LEN; h[11] = KEY_LEN;
            uint32_t op = c->opaque++;
            memcpy(h + 12, &op, 4);
            memcpy(h + 24, key, KEY_LEN);
            c->out_len += 24 + KEY_LEN;
        } else {
            out_reserve(c, 4 + KEY_LEN + 2);
            char *p = c->out + c->out_len;
            memcpy(p, "get ", 4); memcpy(p + 4, key, KEY_LEN); memcpy(p + 4 + KEY_LEN, "\r\n", 2);
            c->out_len += 4 + KEY_LEN + 2;
        }
    } else {
        uint64_t old = atomic_fetch_add(&key_state[r->key], (1ull << 16) | 1);
        r->solo = (old & 0xffff) == 0;
        r->ver = (uint32_t)(old >> 16) + 1;
        size_t vl = (size_t)O.vsize;
        if (O.binary) {
            out_reserve(c, 24 + 8 + KEY_LEN + vl);
            unsigned char *h = (unsigned char *)c->out + c->out_len;
            memset(h, 0, 32);
            uint32_t body = htonl((uint32_t)(8 + KEY_LEN + vl)), op = c->opaque++;
            h[0] = 0x80; h[1] = 0x01; h[3] = KEY_LEN; h[4] = 8;
            memcpy(h + 8, &body, 4);
            memcpy(h + 12, &op, 4);
            memcpy(h + 32, key, KEY_LEN);
            value_fill((char *)h + 32 + KEY_LEN, vl, r->key, r->ver);
            c->out_len += 32 + KEY_LEN + vl;
        } else {
            out_reserve(c, 64 + vl);
            int n = snprintf(c->out + c->out_len, 64, "set %.*s 0 0 %zu\r\n", KEY_LEN, key, vl);
            c->out_len += (size_t)n;
            value_fill(c->out + c->out_len, vl, r->key, r->ver);
            memcpy(c->out + c->out_len + vl, "\r\n", 2);
            c->out_len += vl + 2;
        }
    }
    r->t0 = now_ns();
    c->count++;
}

/* Fill the pipeline: as many requests as the depth allows (preload: while keys remain). */
static void refill(struct worker *w, struct conn *c)
{
    int ph = atomic_load(&phase);
    if (ph == PH_DONE || c->fd < 0) return;
    while (c->count < O.depth) {
        if (ph == PH_PRELOAD) {
            uint32_t k = atomic_fetch_add(&preload_next, 1);
            if (k >= O.keys) return;
            push_request(w, c, k);
        } else {
            push_request(w, c, -1);
        }
    }
}

static void flush_out(struct worker *w, struct conn *c)
{
    while (c->fd >= 0 && c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) { c->out_off += (size_t)n; continue; }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        conn_fail(w, c, "send failed", NULL, 0);
        return;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
}

/* Account one complete reply to the oldest request. */
static void complete(struct worker *w, struct conn *c)
{
    struct req *r = &c->ring[c->head];
    int ph = atomic_load(&phase);
    if (ph == PH_DONE) ph = PH_MEASURE;
    struct stats *st = &w->st[ph];
    hist_add(&st->lat, now_ns() - r->t0);
    if (ph == PH_MEASURE)
        atomic_fetch_add_explicit(&replies_measured, 1, memory_order_relaxed);
    c->head = (c->head + 1) % O.depth;
    c->count--;
}

/* A decimal number at *q (before end); advances *q past it. */
static bool parse_u64(const char **q, const char *end, uint64_t *out)
{
    const char *s = *q;
    uint64_t v = 0;
    while (s < end && *s >= '0' && *s <= '9' && v < (1ull << 60)) v = v * 10 + (uint64_t)(*s++ - '0');
    if (s == *q) return false;
    *q = s;
    *out = v;
    return true;
}

/* Parse replies from c->in; returns bytes consumed or -1 after conn_fail. */
static ssize_t parse_text(struct worker *w, struct conn *c)
{
    size_t off = 0;
    while (c->count > 0 && off < c->in_len) {
        char *p = c->in + off, *e = memmem(p, c->in_len - off, "\r\n", 2);
        if (!e) { if (c->in_len - off > 512) goto bad; break; }
        size_t ll = (size_t)(e - p);
        struct req *r = &c->ring[c->head];
        int ph = atomic_load(&phase); if (ph == PH_DONE) ph = PH_MEASURE;
        struct stats *st = &w->st[ph];
        if (r->op == OP_SET) {
            st->sets++;
            if (ll == 6 && memcmp(p, "STORED", 6) == 0) { st->stored++; set_acked(r); }
            else if (ll >= 12 && memcmp(p, "SERVER_ERROR", 12) == 0) { st->set_fail++; report_error(w, "set failed", p, ll); }
            else if ((ll == 10 && !memcmp(p, "NOT_STORED", 10)) || (ll == 6 && !memcmp(p, "EXISTS", 6))) { st->set_fail++; }
            else goto bad;
            off += ll + 2;
        } else if (ll == 3 && memcmp(p, "END", 3) == 0) {
            st->gets++; st->misses++;
            if (r->floor > 0) { st->lost++; report_error(w, "lost write (miss after an acknowledged set)", c->in, 0); }
            off += 5;
        } else if (ll > 6 && memcmp(p, "VALUE ", 6) == 0) {
            char key[KEY_LEN];
            uint64_t flags, bytes;
            key_format(key, r->key);
            const char *q = p + 7 + KEY_LEN;
            if (ll < 6 + KEY_LEN + 4 || memcmp(p + 6, key, KEY_LEN) != 0 || p[6 + KEY_LEN] != ' ' ||
                !parse_u64(&q, e, &flags) || *q++ != ' ' || !parse_u64(&q, e, &bytes) ||
                (q != e && *q != ' ') || bytes > MAX_VALUE + HDR_LEN || flags > UINT32_MAX)
                goto bad;
            size_t need = ll + 2 + bytes + 2 + 5;
            if (c->in_len - off < need) {
                if (c->in_cap < need) { c->in_cap = need * 2; c->in = realloc(c->in, c->in_cap); }
                break;
            }
            char *v = e + 2;
            if (memcmp(v + bytes, "\r\nEND\r\n", 7) != 0) goto bad;
            st->gets++; st->hits++;
            verify_hit(w, st, r, v, (size_t)bytes, (uint32_t)flags);
            off += need;
        } else if (ll >= 12 && memcmp(p, "SERVER_ERROR", 12) == 0) {
            st->gets++; st->errors++; report_error(w, "get failed", p, ll);
            off += ll + 2;
        } else {
            goto bad;
        }
        complete(w, c);
    }
    return (ssize_t)off;
bad:
    conn_fail(w, c, "protocol error", c->in + off, c->in_len - off < 80 ? c->in_len - off : 80);
    return -1;
}

static ssize_t parse_binary(struct worker *w, struct conn *c)
{
    size_t off = 0;
    while (c->count > 0 && c->in_len - off >= 24) {
        unsigned char *h = (unsigned char *)c->in + off;
        uint32_t body, opaque; uint16_t status, klen;
        memcpy(&body, h + 8, 4); body = ntohl(body);
        memcpy(&opaque, h + 12, 4);
        memcpy(&status, h + 6, 2); status = ntohs(status);
        memcpy(&klen, h + 2, 2); klen = ntohs(klen);
        struct req *r = &c->ring[c->head];
        uint32_t want = c->opaque - (uint32_t)c->count;
        if (h[0] != 0x81 || h[1] != (r->op == OP_GET ? 0x00 : 0x01) || opaque != want ||
            body > MAX_VALUE + 4096)
            goto bad;
        if (c->in_len - off < 24 + (size_t)body) {
            if (c->in_cap < 24 + (size_t)body) { c->in_cap = (24 + body) * 2; c->in = realloc(c->in, c->in_cap); }
            break;
        }
        int ph = atomic_load(&phase); if (ph == PH_DONE) ph = PH_MEASURE;
        struct stats *st = &w->st[ph];
        if (r->op == OP_SET) {
            st->sets++;
            if (status == 0) { st->stored++; set_acked(r); }
            else { st->set_fail++; report_error(w, "set failed", (char *)h + 24 + h[4] + klen, body - h[4] - klen); }
        } else {
            st->gets++;
            if (status == 1) {
                st->misses++;
                if (r->floor > 0) { st->lost++; report_error(w, "lost write (miss after an acknowledged set)", "", 0); }
            } else if (status == 0 && h[4] == 4 && body >= 4u + klen) {
                uint32_t flags; memcpy(&flags, h + 24, 4);
                st->hits++;
                verify_hit(w, st, r, (char *)h + 24 + 4 + klen, body - 4 - klen, ntohl(flags));
            } else {
                st->errors++;
                report_error(w, "get failed", (char *)h + 24, body < 80 ? body : 80);
            }
        }
        off += 24 + body;
        complete(w, c);
    }
    return (ssize_t)off;
bad:
    conn_fail(w, c, "protocol error (binary)", c->in + off, 24);
    return -1;
}

static void on_readable(struct worker *w, struct conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 65536;
            c->in = realloc(c->in, c->in_cap);
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n == 0) { conn_fail(w, c, "connection closed by server", NULL, 0); return; }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            conn_fail(w, c, "recv failed", NULL, 0);
            return;
        }
        c->in_len += (size_t)n;
        if (c->count == 0) { conn_fail(w, c, "data while nothing is outstanding", c->in, c->in_len); return; }
        ssize_t used = O.binary ? parse_binary(w, c) : parse_text(w, c);
        if (used < 0) return;
        memmove(c->in, c->in + used, c->in_len - (size_t)used);
        c->in_len -= (size_t)used;
        refill(w, c);
        if ((size_t)n < 16384) return; /* edge-triggered: a short read drained the socket */
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[64];
    for (int i = 0; i < w->nconn; i++) {
        struct conn *c = &w->conns[i];
        c->ring = calloc((size_t)O.depth, sizeof *c->ring);
        conn_open(w, c);
        refill(w, c);
        flush_out(w, c);
    }
    int last_phase = atomic_load(&phase);
    while (atomic_load(&phase) != PH_DONE) {
        int n = epoll_wait(w->ep, evs, 64, 50);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(w, c);
        }
        /* After reading every ready connection: one flush per connection with output. */
        uint64_t t = now_ns();
        int ph = atomic_load(&phase);
        for (int i = 0; i < w->nconn; i++) {
            struct conn *c = &w->conns[i];
            if (c->fd < 0) {
                if (t >= c->down_until && ph != PH_DONE) { conn_open(w, c); refill(w, c); flush_out(w, c); }
                continue;
            }
            if (ph != last_phase) refill(w, c);
            if (c->out_len > c->out_off) flush_out(w, c);
            if (c->fd >= 0 && c->count > 0 && t > c->ring[c->head].t0 &&
                t - c->ring[c->head].t0 > (uint64_t)O.timeout_ms * 1000000u)
                conn_fail(w, c, "timeout", NULL, 0);
        }
        last_phase = ph;
    }
    for (int i = 0; i < w->nconn; i++)
        if (w->conns[i].fd >= 0) close(w->conns[i].fd);
    return NULL;
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: kumo-bench [options]\n"
        "  -s HOST:PORT  server (default 127.0.0.1:11211)\n"
        "  -c N          connections in all (default 16)\n"
        "  -T N          threads, one epoll loop each (default 1)\n"
        "  -d N          pipeline depth per connection (default 1)\n"
        "  -v N          value bytes, %d..%u (default 1024)\n"
        "  -r R          fraction of gets, 0..1 (default 0.9)\n"
        "  -n N          distinct keys (default 100000)\n"
        "  -t SEC        measured seconds (default 5; 0 with --preload: preload only)\n"
        "  -w SEC        warm-up seconds, not counted (default 1)\n"
        "  --preload     set every key once before the warm-up\n"
        "  --binary      memcached binary protocol (default: text)\n"
        "  --seed N      workload seed (default 1)\n"
        "  --prefix P    key prefix, up to 4 characters (default kb:); keys are P + index + '-',\n"
        "                16 bytes in all\n"
        "  --timeout MS  a request without a reply after MS ms is an error (default 2000)\n"
        "  --progress MS print \"PROGRESS t=S ops=N ops_per_s=R\" every MS ms of the measured run\n"
        "  -q            print only the RESULT line\n"
        "Every get hit is verified; exit status 0 = no errors of any kind, 1 = errors, 2 = usage.\n",
        HDR_LEN, MAX_VALUE);
}

static long num_arg(const char *s, long lo, long hi, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "kumo-bench: %s must be %ld..%ld, not '%s'\n", what, lo, hi, s);
        exit(2);
    }
    return v;
}

static void on_signal(int sig) { (void)sig; interrupted = 1; }

static void sum_stats(struct stats *dst, const struct stats *src)
{
    dst->gets += src->gets; dst->hits += src->hits; dst->misses += src->misses;
    dst->sets += src->sets; dst->stored += src->stored; dst->set_fail += src->set_fail;
    dst->errors += src->errors; dst->mismatches += src->mismatches; dst->stale += src->stale;
    dst->lost += src->lost; dst->foreign += src->foreign; dst->dropped += src->dropped;
    for (int b = 0; b < HBUCKETS; b++) dst->lat.n[b] += src->lat.n[b];
    if (src->lat.max > dst->lat.max) dst->lat.max = src->lat.max;
}

static uint64_t failures(const struct stats *s)
{
    return s->errors + s->set_fail + s->mismatches + s->stale + s->lost;
}

/* Sleep until deadline (ns) or an interrupt; with --progress, print a PROGRESS line
 * per interval of the measured phase (t0: its start). */
static void sleep_until_progress(uint64_t deadline, uint64_t t0)
{
    uint64_t step = (uint64_t)O.progress_ms * 1000000u, next = t0 + step;
    uint64_t last = atomic_load(&replies_measured), last_t = t0;
    while (!interrupted && now_ns() < deadline) {
        usleep(O.progress_ms > 0 && O.progress_ms < 10 ? 1000 : 10000);
        uint64_t t = now_ns();
        if (O.progress_ms > 0 && t >= next) {
            uint64_t n = atomic_load(&replies_measured);
            printf("PROGRESS t=%.3f ops=%" PRIu64 " ops_per_s=%.0f\n", (double)(t - t0) / 1e9,
                   n - last, (double)(n - last) / ((double)(t - last_t) / 1e9));
            fflush(stdout);
            last = n;
            last_t = t;
            next += step;
        }
    }
}

static void sleep_until(uint64_t deadline)
{
    while (!interrupted && now_ns() < deadline) usleep(10000);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "preload", no_argument, 0, 'P' }, { "binary", no_argument, 0, 'B' },
        { "seed", required_argument, 0, 'S' }, { "timeout", required_argument, 0, 'O' },
        { "prefix", required_argument, 0, 'K' }, { "help", no_argument, 0, 'h' },
        { "progress", required_argument, 0, 'G' }, { 0, 0, 0, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "s:c:T:d:v:r:n:t:w:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 's': {
            char *s = strdup(optarg), *colon = strrchr(s, ':');
            if (!colon) { fprintf(stderr, "kumo-bench: -s wants HOST:PORT\n"); free(s); return 2; }
            *colon = 0; O.host = s; O.port = colon + 1;
            break;
        }
        case 'c': O.conns = (int)num_arg(optarg, 1, 10000, "-c"); break;
        case 'T': O.threads = (int)num_arg(optarg, 1, 64, "-T"); break;
        case 'd': O.depth = (int)num_arg(optarg, 1, 1024, "-d"); break;
        case 'v': O.vsize = (int)num_arg(optarg, HDR_LEN, MAX_VALUE, "-v"); break;
        case 'n': O.keys = (uint32_t)num_arg(optarg, 1, 100000000, "-n"); break;
        case 't': O.seconds = (int)num_arg(optarg, 0, 86400, "-t"); break;
        case 'w': O.warmup = (int)num_arg(optarg, 0, 3600, "-w"); break;
        case 'S': O.seed = (uint64_t)num_arg(optarg, 0, 0x7fffffff, "--seed"); break;
        case 'O': O.timeout_ms = (int)num_arg(optarg, 1, 3600000, "--timeout"); break;
        case 'G': O.progress_ms = (int)num_arg(optarg, 1, 3600000, "--progress"); break;
        case 'r': {
            char *end; O.get_ratio = strtod(optarg, &end);
            if (*end || O.get_ratio < 0 || O.get_ratio > 1) { fprintf(stderr, "kumo-bench: -r must be 0..1\n"); return 2; }
            break;
        }
        case 'K':
            if (strlen(optarg) > 4 || strpbrk(optarg, " \r\n")) {
                fprintf(stderr, "kumo-bench: --prefix takes up to 4 characters, no spaces\n");
                return 2;
            }
            O.prefix = optarg;
            break;
        case 'P': O.preload = true; break;
        case 'B': O.binary = true; break;
        case 'q': O.quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) { usage(stderr); return 2; }
    if (O.seconds == 0 && !O.preload) { fprintf(stderr, "kumo-bench: -t 0 needs --preload\n"); return 2; }
    if (O.threads > O.conns) O.threads = O.conns;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    int gai = getaddrinfo(O.host, O.port, &hints, &server_ai);
    if (gai) { fprintf(stderr, "kumo-bench: %s:%s: %s\n", O.host, O.port, gai_strerror(gai)); return 2; }

    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t rs = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec;
    run_id = (uint32_t)splitmix(&rs);
    key_state = calloc(O.keys, sizeof *key_state);
    key_floor = calloc(O.keys, sizeof *key_floor);
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    atomic_store(&phase, O.preload ? PH_PRELOAD : PH_WARMUP);

    struct worker *ws = calloc((size_t)O.threads, sizeof *ws);
    for (int i = 0; i < O.threads; i++) {
        struct worker *w = &ws[i];
        w->id = i;
        w->nconn = O.conns / O.threads + (i < O.conns % O.threads);
        w->conns = calloc((size_t)w->nconn, sizeof *w->conns);
        w->ep = epoll_create1(0);
        w->rng = O.seed * 0x100000001b3ull + (uint64_t)i;
        w->scratch = malloc(MAX_VALUE);
    }
    uint64_t t_start = now_ns(), t_pre = 0;
    for (int i = 0; i < O.threads; i++) pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]);

    if (O.preload) {
        /* Done when every key got a reply (stored or failed) or errors stopped progress. */
        uint64_t limit = t_start + 600ull * 1000000000u;
        while (!interrupted && now_ns() < limit) {
            uint64_t done = 0;
            for (int i = 0; i < O.threads; i++) done += ws[i].st[PH_PRELOAD].sets + ws[i].st[PH_PRELOAD].dropped;
            if (done >= O.keys) break;
            usleep(5000);
        }
        t_pre = now_ns() - t_start;
        atomic_store(&phase, O.seconds ? PH_WARMUP : PH_DONE);
    }
    uint64_t t_meas = 0, t_end = 0;
    if (O.seconds) {
        sleep_until(now_ns() + (uint64_t)O.warmup * 1000000000u);
        t_meas = now_ns();
        atomic_store(&phase, PH_MEASURE);
        sleep_until_progress(t_meas + (uint64_t)O.seconds * 1000000000u, t_meas);
        t_end = now_ns();
    }
    atomic_store(&phase, PH_DONE);
    for (int i = 0; i < O.threads; i++) pthread_join(ws[i].tid, NULL);

    static struct stats tot[3];
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < O.threads; i++) sum_stats(&tot[p], &ws[i].st[p]);
    struct stats *m = &tot[PH_MEASURE];
    double secs = t_end > t_meas ? (double)(t_end - t_meas) / 1e9 : 0;
    uint64_t ops = m->gets + m->sets;
    double ops_s = secs > 0 ? (double)ops / secs : 0;
    double pre_s = t_pre ? (double)tot[PH_PRELOAD].sets / ((double)t_pre / 1e9) : 0;
    uint64_t unmeasured = failures(&tot[PH_PRELOAD]) + failures(&tot[PH_WARMUP]);
    bool ok = !interrupted && failures(m) == 0 && unmeasured == 0 &&
              (ops > 0 || (O.seconds == 0 && tot[PH_PRELOAD].stored == O.keys));
    if (!O.quiet) {
        printf("kumo-bench %s:%s %s, %d conn(s) x depth %d, %d thread(s), %u keys, %d B values, %.0f%% gets%s\n",
               O.host, O.port, O.binary ? "binary" : "text", O.conns, O.depth, O.threads, O.keys,
               O.vsize, O.get_ratio * 100, interrupted ? " (INTERRUPTED)" : "");
        if (O.preload)
            printf("preload: %" PRIu64 " sets in %.2f s, %.0f sets/s, %" PRIu64 " failures\n",
                   tot[PH_PRELOAD].sets, (double)t_pre / 1e9, pre_s, failures(&tot[PH_PRELOAD]));
        printf("measured %.2f s: %" PRIu64 " ops, %.0f ops/s; gets %" PRIu64 " (hits %" PRIu64
               ", misses %" PRIu64 ", of earlier runs %" PRIu64 "), sets %" PRIu64 "\n",
               secs, ops, ops_s, m->gets, m->hits, m->misses, m->foreign, m->sets);
        printf("latency us: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n",
               hist_pct_us(&m->lat, .5), hist_pct_us(&m->lat, .9), hist_pct_us(&m->lat, .99),
               hist_pct_us(&m->lat, .999), (double)m->lat.max / 1000.0);
        printf("errors %" PRIu64 " set_fail %" PRIu64 " mismatches %" PRIu64 " stale %" PRIu64
               " lost %" PRIu64 " dropped %" PRIu64 " (preload+warm-up failures %" PRIu64 ")\n",
               m->errors, m->set_fail, m->mismatches, m->stale, m->lost, m->dropped, unmeasured);
    }
    printf("RESULT ops_per_s=%.0f gets=%" PRIu64 " hits=%" PRIu64 " misses=%" PRIu64 " sets=%" PRIu64
           " set_fail=%" PRIu64 " errors=%" PRIu64 " mismatches=%" PRIu64 " stale=%" PRIu64
           " lost=%" PRIu64 " p50_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f"
           " preload_sets_per_s=%.0f unmeasured_failures=%" PRIu64 " status=%d\n",
           ops_s, m->gets, m->hits, m->misses, m->sets, m->set_fail, m->errors, m->mismatches,
           m->stale, m->lost, hist_pct_us(&m->lat, .5), hist_pct_us(&m->lat, .99),
           hist_pct_us(&m->lat, .999), (double)m->lat.max / 1000.0, pre_s, unmeasured, ok ? 0 : 1);
    freeaddrinfo(server_ai);
    return ok ? 0 : 1;
}
