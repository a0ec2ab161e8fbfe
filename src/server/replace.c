/* replace.c - replace copy and delete phases of a server (algorithms.md §8). */
#include "server/replace.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"
#include "server/peerkind.h"
#include "server/stream.h"
#include "server/tombsend.h"

#define OFFER_TIMEOUT_STEPS 160      /* wire.md §4.5 */
#define OFFER_ATTEMPTS 3             /* a failed offer is made again, then given up */
#define OFFER_RETRY_DELAY 1.0        /* seconds before the 2nd attempt, doubled after */

enum job_kind { JOB_COPY, JOB_DELETE };

/* One whole-database iteration for the worker.  The hash spaces are the worker's own
 * copies, so the loop may change its spaces meanwhile. */
typedef struct job {
    struct job *next;
    enum job_kind kind;
    uint64_t gen;                /* copy generation when queued (copy jobs) */
    clocktime_t time;            /* replace_time (copy) or whs timestamp T (delete) */
    kaddr mgr;                   /* manager that started the phase */
    bool full;                   /* full replace (§8.5) */
    hashspace src;               /* copy: S = old rhs */
    hashspace dst;               /* copy: D = new whs / the seed; delete: own whs */
    clocktime_t purge_limit;     /* now - gX (storage.md §5.2) */
    kaddr *modern;               /* copy: the destinations that read tombstones (peerkind) */
    size_t nmodern;
} job;

/* An offer waiting for its receiver to pull it (wire.md §10). */
typedef struct pending_offer {
    uint64_t id;
    kaddr dst;
    int fd;                      /* the finished zlib stream, unlinked temp file */
    off_t size;
    clocktime_t time;            /* replace_time of the copy phase that made it */
    unsigned attempts;           /* ReplaceOffers sent so far */
    bool retry_pending;          /* a failed attempt waits for its retry timer */
} pending_offer;

/* A batch of finished offer files, worker -> loop. */
typedef struct offer_batch {
    uint64_t gen;
    clocktime_t time;
    size_t n;
    struct { kaddr dst; int fd; off_t size; } item[];
} offer_batch;

/* Completion of a job, worker -> loop. */
typedef struct job_done {
    enum job_kind kind;
    uint64_t gen;
    clocktime_t time;
    kaddr mgr;
} job_done;

struct replace {
    server *srv;
    /* loop-thread state */
    kaddr manager;               /* who gets ReplaceCopyEnd */
    clocktime_t time;            /* current replace_time */
    int waiting;                 /* §8.2: iteration token + offers in flight */
    bool copying;
    int deletes_running;
    pending_offer *offers;
    size_t noffers, cap;
    uint64_t next_offer_id;
    /* shared with the worker */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job *head, *tail;            /* guarded by lock */
    size_t outstanding;          /* guarded by lock: offers not yet resolved (-M wait) */
    atomic_bool stop;
    atomic_uint_fast64_t copy_gen;   /* bumped by each ReplaceCopyStart; older copies abort */
    pthread_t thread;
    bool thread_started;
};

/* ======================================================================= loop side */

static void set_outstanding(replace *r)
{
    pthread_mutex_lock(&r->lock);
    r->outstanding = r->noffers;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void offer_remove_at(replace *r, size_t i)
{
    close(r->offers[i].fd);
    r->offers[i] = r->offers[--r->noffers];
    set_outstanding(r);
}

static void drop_offers(replace *r)
{
    for (size_t i = 0; i < r->noffers; i++)
        close(r->offers[i].fd);
    r->noffers = 0;
    set_outstanding(r);
}

static long offer_find(replace *r, uint64_t id)
{
    for (size_t i = 0; i < r->noffers; i++)
        if (r->offers[i].id == id)
            return (long)i;
    return -1;
}

static void end_cb(rpc_session *s, const rpc_result *res, void *ud)
{
    (void)ud;
    if (res->err != RPC_OK) {
        char buf[KADDR_STRLEN];
        log_warn("replace end notice to %s failed: error %d", kaddr_format(rpc_session_addr(s), buf), res->err);
    }
}

static void send_end(replace *r, uint32_t method, const kaddr *mgr, clocktime_t t)
{
    server *srv = r->srv;
    rpc_session *s = rpc_node_session(server_rpc(srv), mgr, true);
    msgpack_packer *pk = rpc_call_begin(s, method, RPC_DEFAULT_TIMEOUT_STEPS, end_cb, NULL);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, t);
    msgpack_pack_uint32(pk, kclock_incr(server_clock(srv)));
    rpc_call_end(s);
}

/* §8.2 step 9: when nothing is left in flight, report the copy phase done. */
static void check_copy_done(replace *r)
{
    if (!r->copying || r->waiting > 0)
        return;
    r->copying = false;
    log_info("replace copy finished time(%llu)", (unsigned long long)r->time);
    send_end(r, MGR_REPLACE_COPY_END, &r->manager, r->time);
}

typedef struct offer_call {
    replace *r;
    uint64_t id;
    unsigned attempt;            /* which attempt this ReplaceOffer is */
} offer_call;

static void offer_failed(replace *r, size_t i);

/* ReplaceOffer is never answered: a timeout or a lost session while the offer is still
 * pending (the receiver never pulled it) counts as a failed attempt. */
static void offer_cb(rpc_session *s, const rpc_result *res, void *ud)
{
    (void)s;
    (void)res;
    offer_call *c = ud;
    replace *r = c->r;
    uint64_t id = c->id;
    unsigned attempt = c->attempt;
    free(c);
    long i = offer_find(r, id);
    if (i >= 0 && !server_stopping(r->srv) && !r->offers[i].retry_pending
        && r->offers[i].attempts == attempt) {
        char buf[KADDR_STRLEN];
        log_warn("replace offer to %s abandoned", kaddr_format(&r->offers[i].dst, buf));
        offer_failed(r, (size_t)i);
    }
}

static void offer_send(replace *r, const pending_offer *o)
{
    server *srv = r->srv;
    if (kaddr_eq(&o->dst, &server_cfg(srv)->self)) {
        /* full replace offers to ourselves too (wire.md §8.2): pull directly */
        stream_pull_start(server_streams(srv), &server_cfg(srv)->stream_addr);
        return;
    }
    offer_call *c = xmalloc(sizeof(*c));
    c->r = r;
    c->id = o->id;
    c->attempt = o->attempts;
    rpc_session *s = rpc_node_session(server_rpc(srv), &o->dst, true);
    msgpack_packer *pk = rpc_call_begin(s, SRV_REPLACE_OFFER, OFFER_TIMEOUT_STEPS, offer_cb, c);
    msgpack_pack_array(pk, 1);
    kwire_pack_addr(pk, &server_cfg(srv)->stream_addr);
    rpc_call_end(s);
}

static void offer_batch_task(server *srv, void *arg)
{
    replace *r = server_replace(srv);
    offer_batch *b = arg;
    if (server_stopping(srv) || b->gen != atomic_load(&r->copy_gen) || !r->copying) {
        for (size_t i = 0; i < b->n; i++)
            close(b->item[i].fd);
        free(b);
        return;
    }
    drop_offers(r);              /* the pending set is replaced, not merged (§8.2 step 7) */
    if (b->n > r->cap) {
        r->cap = b->n;
        r->offers = xrealloc(r->offers, r->cap * sizeof(*r->offers));
    }
    for (size_t i = 0; i < b->n; i++) {
        pending_offer *o = &r->offers[r->noffers++];
        o->id = ++r->next_offer_id;
        o->dst = b->item[i].dst;
        o->fd = b->item[i].fd;
        o->size = b->item[i].size;
        o->time = b->time;
        o->attempts = 1;
        o->retry_pending = false;
    }
    set_outstanding(r);
    r->waiting += (int)b->n;
    /* Send after recording every offer: a receiver may connect back at once. */
    for (size_t i = 0; i < b->n; i++) {
        const pending_offer *o = &r->offers[i];
        char buf[KADDR_STRLEN];
        log_info("replace offer %lld bytes to %s", (long long)o->size, kaddr_format(&o->dst, buf));
        offer_send(r, o);
    }
    free(b);
}

static void job_done_task(server *srv, void *arg)
{
    replace *r = server_replace(srv);
    job_done *d = arg;
    if (server_stopping(srv)) {
        free(d);
        return;
    }
    if (d->kind == JOB_COPY) {
        /* §8.2 step 8: drop the iteration's own token, if still the current replace */
        if (d->gen == atomic_load(&r->copy_gen) && d->time == r->time && r->copying) {
            r->waiting--;
            check_copy_done(r);
        }
    } else {
        r->deletes_running--;
        log_info("replace delete finished time(%llu)", (unsigned long long)d->time);
        send_end(r, MGR_REPLACE_DELETE_END, &d->mgr, d->time);
    }
    free(d);
}

static int offer_open(void *ud, const kaddr *dst, uint64_t *id, off_t *size)
{
    replace *r = ud;
    for (size_t i = 0; i < r->noffers; i++) {
        if (!kaddr_eq(&r->offers[i].dst, dst))
            continue;
        int fd = dup(r->offers[i].fd);
        if (fd < 0)
            return -1;
        *id = r->offers[i].id;
        *size = r->offers[i].size;
        return fd;
    }
    return -1;
}

/* The offer at i is over (delivered, or given up): it no longer holds the copy phase. */
static void offer_end(replace *r, size_t i)
{
    clocktime_t t = r->offers[i].time;
    offer_remove_at(r, i);
    if (r->copying && t == r->time) {
        r->waiting--;
        check_copy_done(r);
    }
}

typedef struct offer_retry {
    ev_timer timer;              /* first: the watcher pointer is the retry pointer */
    replace *r;
    uint64_t id;
} offer_retry;

static void offer_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    offer_retry *t = (offer_retry *)w;
    ev_timer_stop(loop, w);
    long i = offer_find(t->r, t->id);
    if (i >= 0 && !server_stopping(t->r->srv)) {
        t->r->offers[i].retry_pending = false;
        t->r->offers[i].attempts++;
        offer_send(t->r, &t->r->offers[i]);
    }
    free(t);
}

/* An attempt at offer i failed (the stream broke, or the receiver never pulled it).
 * Offer it again after a pause; after OFFER_ATTEMPTS give up, so that one peer that
 * cannot take the stream never holds the replace forever: the copy phase then ends
 * as the original's does when an offer times out (wire.md §8.2 ReplaceOffer), and the
 * error tells the operator to repair the copy with a full replace. */
static void offer_failed(replace *r, size_t i)
{
    pending_offer *o = &r->offers[i];
    char buf[KADDR_STRLEN];
    kaddr_format(&o->dst, buf);
    if (o->attempts < OFFER_ATTEMPTS) {
        offer_retry *t = xmalloc(sizeof(*t));
        t->r = r;
        t->id = o->id;
        double delay = OFFER_RETRY_DELAY * (double)(1u << (o->attempts - 1));
        log_warn("replace offer to %s: attempt %u of %u failed, offering again in %.0f s",
                 buf, o->attempts, OFFER_ATTEMPTS, delay);
        o->retry_pending = true;  /* late failures of this attempt no longer count */
        ev_timer_init(&t->timer, offer_retry_cb, delay, 0.0);
        ev_timer_start(server_loop(r->srv), &t->timer);
        return;
    }
    log_error("replace offer to %s failed %u times; giving up: the records for it were "
              "not copied. Repair the peer, then run `kumoctl <manager> full-replace`",
              buf, OFFER_ATTEMPTS);
    offer_end(r, i);
}

static void offer_finished(void *ud, uint64_t id, bool ok)
{
    replace *r = ud;
    long i = offer_find(r, id);
    if (i < 0)
        return;
    char buf[KADDR_STRLEN];
    if (!ok) {
        log_warn("replace offer to %s failed", kaddr_format(&r->offers[i].dst, buf));
        if (!r->offers[i].retry_pending)
            offer_failed(r, (size_t)i);
        return;
    }
    log_info("replace offer to %s delivered", kaddr_format(&r->offers[i].dst, buf));
    offer_end(r, (size_t)i);
}

static void enqueue(replace *r, job *j)
{
    pthread_mutex_lock(&r->lock);
    if (r->tail != NULL)
        r->tail->next = j;
    else
        r->head = j;
    r->tail = j;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static job *job_new(replace *r, enum job_kind kind, const kaddr *mgr)
{
    job *j = xcalloc(1, sizeof(*j));
    j->kind = kind;
    j->mgr = *mgr;
    hashspace_init(&j->src);
    hashspace_init(&j->dst);
    j->purge_limit = clocktime_sub_sec(kclock_now(server_clock(r->srv)), server_cfg(r->srv)->garbage_max_sec);
    return j;
}

static void job_free(job *j)
{
    free(j->modern);
    hashspace_destroy(&j->src);
    hashspace_destroy(&j->dst);
    free(j);
}

/* peerkind_cb of a copy job: start it with the list of tombstone readers. */
static void copy_probed(server *srv, void *ud, const kaddr *modern, size_t nmodern)
{
    job *j = ud;
    if (server_stopping(srv)) {
        job_free(j);
        return;
    }
    j->modern = xcalloc(nmodern ? nmodern : 1, sizeof(*j->modern));
    memcpy(j->modern, modern, nmodern * sizeof(*modern));
    j->nmodern = nmodern;
    enqueue(server_replace(srv), j);
}

void replace_copy_start(replace *r, const kaddr *mgr, hashspace *seed, bool full)
{
    server *srv = r->srv;
    /* §8.2 step 1: reset (manager, time, waiting = 1); older completions are ignored */
    r->manager = *mgr;
    r->time = seed->clocktime;
    r->waiting = 1;
    r->copying = true;
    drop_offers(r);
    job *j = job_new(r, JOB_COPY, mgr);
    j->time = seed->clocktime;
    j->full = full;
    hashspace_copy(&j->src, server_rhs(srv));
    hashspace_copy(&j->dst, seed);
    if (!full)
        hashspace_swap(server_whs(srv), seed);   /* step 2: own whs := D (full: unchanged) */
    j->gen = atomic_fetch_add(&r->copy_gen, 1) + 1;
    log_info("start replace copy; full=%d time(%llu)", full ? 1 : 0, (unsigned long long)r->time);
    /* An original server rejects a value shorter than 10 bytes and fails the whole
     * stream, so learn first which destinations may be sent tombstones. */
    peerkind_probe(srv, &j->dst, copy_probed, j);
}

void replace_delete_start(replace *r, const kaddr *mgr)
{
    server *srv = r->srv;
    hashspace_copy(server_rhs(srv), server_whs(srv));   /* §8.4 step 1 */
    job *j = job_new(r, JOB_DELETE, mgr);
    j->time = server_whs(srv)->clocktime;
    hashspace_copy(&j->dst, server_whs(srv));
    r->deletes_running++;
    log_info("start replace delete time(%llu)", (unsigned long long)j->time);
    enqueue(r, j);
}

bool replace_is_copying(const replace *r) { return r->copying; }
bool replace_is_deleting(const replace *r) { return r->deletes_running > 0; }

/* ===================================================================== worker side */

/* One destination's zlib stream into an unlinked temp file (§8.2 step 6). */
typedef struct offer_stream {
    kaddr dst;
    int fd;
    z_stream z;
    off_t csize;                 /* compressed bytes written so far */
} offer_stream;

/* ---- pace: the worker's share of the CPU ----
 * A replace walks every record of the store and compresses what it sends, on a host
 * whose cores the clients' requests keep busy: unpaced, a 4th server's replace took
 * 60-70 % of the clients' throughput (scripts/bench-ops.sh).  The worker therefore works
 * in slices of PACE_SLICE_SEC and, if the server served requests during the slice
 * (server_requests), sleeps PACE_RATIO times as long after it, so it takes at most
 * 1 / (1 + PACE_RATIO) of a core while there are clients and all it can without.  It
 * never sleeps with the store lock held (store_iterate releases it around each record). */
#define PACE_SLICE_SEC 0.002
#define PACE_RATIO 6.0
#define PACE_CHECK_EVERY 32          /* records between clock reads */

typedef struct pace {
    double slice_start;
    uint64_t requests;           /* server_requests at the slice's start */
    unsigned n;
} pace;

static void pace_record(server *srv, pace *p)
{
    if (++p->n % PACE_CHECK_EVERY != 0)
        return;
    double now = monotonic_sec();
    if (p->slice_start == 0) {
        p->slice_start = now;
        p->requests = server_requests(srv);
        return;
    }
    double worked = now - p->slice_start;
    if (worked < PACE_SLICE_SEC)
        return;
    double rest = server_yield_pause(srv, &p->requests, worked, PACE_RATIO, 0);
    if (rest > 0) {
        struct timespec ts = { (time_t)rest, (long)((rest - (double)(time_t)rest) * 1e9) };
        nanosleep(&ts, NULL);
        now = monotonic_sec();
        p->requests = server_requests(srv);   /* the next slice counts its own */
    }
    p->slice_start = now;
}

typedef struct copy_ctx {
    replace *r;
    job *j;
    /* One allocation per stream: deflateInit ties a z_stream to its address (zlib's
     * state keeps a back pointer), so the structs must never move when the array grows
     * - a realloc'd array of structs broke every copy with a 5th destination. */
    offer_stream **os;
    size_t n, cap;
    kaddr *fault;                /* active in S, not active in D */
    size_t nfault;
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    bool failed;
    bool aborted;
    uint64_t records;
    tombsend *dels;              /* tombstones for original destinations (peerkind) */
    tombsend *verify;            /* own records to check with original owners */
    bool restarted;              /* self is fault in src, active in dst: just attached */
    pace pace;
    uint8_t out[64 * 1024];
} copy_ctx;

static bool write_all(int fd, const void *p, size_t len)
{
    const uint8_t *b = p;
    while (len > 0) {
        ssize_t n = write(fd, b, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        b += n;
        len -= (size_t)n;
    }
    return true;
}

static bool os_deflate(copy_ctx *c, offer_stream *os, const void *data, size_t len, int flush)
{
    os->z.next_in = (Bytef *)(uintptr_t)data;
    os->z.avail_in = (uInt)len;
    for (;;) {
        os->z.next_out = c->out;
        os->z.avail_out = sizeof(c->out);
        int rc = deflate(&os->z, flush);
        if (rc == Z_STREAM_ERROR)
            return false;
        size_t have = sizeof(c->out) - os->z.avail_out;
        if (have > 0) {
            if (!write_all(os->fd, c->out, have))
                return false;
            os->csize += (off_t)have;
        }
        if (flush == Z_FINISH ? rc == Z_STREAM_END : os->z.avail_out != 0)
            return true;
    }
}

static offer_stream *os_get(copy_ctx *c, const kaddr *dst)
{
    for (size_t i = 0; i < c->n; i++)
        if (kaddr_eq(&c->os[i]->dst, dst))
            return c->os[i];
    const char *dir = server_cfg(c->r->srv)->tmpdir;
    size_t plen = strlen(dir) + 8;
    char *path = xmalloc(plen);
    snprintf(path, plen, "%s/XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        log_error("replace: can't create a temp file in %s: %s", dir, strerror(errno));
        free(path);
        return NULL;
    }
    unlink(path);                /* anonymous from now on */
    free(path);
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4;
        c->os = xrealloc(c->os, c->cap * sizeof(*c->os));
    }
    offer_stream *os = xcalloc(1, sizeof(*os));
    os->dst = *dst;
    os->fd = fd;
    /* Level 1: the stream crosses a LAN once; level 6 cost ~15% more server CPU for a
     * replace of 1M records of 100 bytes (6.3 vs 5.4 CPU-s) and the receiver inflates
     * either at the same speed.  Any level is the same zlib format (wire.md §10). */
    if (deflateInit(&os->z, Z_BEST_SPEED) != Z_OK) {
        log_error("replace: deflateInit failed");
        close(fd);
        free(os);
        return NULL;
    }
    c->os[c->n++] = os;
    return os;
}

static void os_discard_all(copy_ctx *c)
{
    for (size_t i = 0; i < c->n; i++) {
        deflateEnd(&c->os[i]->z);
        close(c->os[i]->fd);
        free(c->os[i]);
    }
    c->n = 0;
}

/* Terminate every stream with nil and hand the files to the loop (§8.2 step 7).
 * Returns false on an I/O error (the streams are discarded). */
static bool post_offers(copy_ctx *c)
{
    if (c->n == 0)
        return true;
    static const uint8_t nil = 0xc0;
    offer_batch *b = xmalloc(sizeof(*b) + c->n * sizeof(b->item[0]));
    b->gen = c->j->gen;
    b->time = c->j->time;
    b->n = 0;
    for (size_t i = 0; i < c->n; i++) {
        offer_stream *os = c->os[i];
        if (!os_deflate(c, os, &nil, 1, Z_FINISH) || lseek(os->fd, 0, SEEK_SET) != 0) {
            log_error("replace: writing an offer file failed: %s", strerror(errno));
            free(b);
            os_discard_all(c);
            return false;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        offer_stream *os = c->os[i];
        deflateEnd(&os->z);
        b->item[i].dst = os->dst;
        b->item[i].fd = os->fd;
        b->item[i].size = os->csize;
        b->n++;
        free(os);
    }
    c->n = 0;
    /* Count them before posting so a -M wait cannot see a stale 0. */
    pthread_mutex_lock(&c->r->lock);
    c->r->outstanding = b->n;
    pthread_mutex_unlock(&c->r->lock);
    server_post(c->r->srv, offer_batch_task, b);
    return true;
}

static bool should_abort(copy_ctx *c)
{
    return atomic_load(&c->r->stop)
        || (c->j->kind == JOB_COPY && atomic_load(&c->r->copy_gen) != c->j->gen);
}

/* -M: wait (polling every second) until every posted offer was delivered or dropped. */
static void wait_offers_drained(copy_ctx *c)
{
    replace *r = c->r;
    pthread_mutex_lock(&r->lock);
    while (r->outstanding > 0 && !should_abort(c)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&r->cond, &r->lock, &ts);
    }
    pthread_mutex_unlock(&r->lock);
}

static size_t active_slots(const hashspace *hs, uint64_t h, const kaddr *out[HS_REPLICAS])
{
    const hs_node *slots[HS_REPLICAS];
    size_t n = hashspace_assign(hs, h, slots), k = 0;
    for (size_t i = 0; i < n; i++)
        if (slots[i]->active)
            out[k++] = &slots[i]->addr;
    return k;
}

static bool in_list(const kaddr *const *list, size_t n, const kaddr *a)
{
    for (size_t i = 0; i < n; i++)
        if (kaddr_eq(list[i], a))
            return true;
    return false;
}

static bool is_fault(const copy_ctx *c, const kaddr *a)
{
    for (size_t i = 0; i < c->nfault; i++)
        if (kaddr_eq(&c->fault[i], a))
            return true;
    return false;
}

static bool takes_tombstones(const job *j, const kaddr *dst)
{
    for (size_t i = 0; i < j->nmodern; i++)
        if (kaddr_eq(&j->modern[i], dst))
            return true;
    return false;
}

static bool append_record(copy_ctx *c, const kaddr *dst, const void *key, size_t klen,
                          const void *val, size_t vlen, off_t *csize)
{
    if (vlen == TOMBSTONE_LEN && !takes_tombstones(c->j, dst)) {
        /* an original peer fails the whole stream on it: send it a ReplicateDelete */
        tombsend_add(c->dels, dst, key, klen, dbvalue_clocktime(val));
        return true;
    }
    offer_stream *os = os_get(c, dst);
    if (os == NULL)
        return false;
    msgpack_sbuffer_clear(&c->sbuf);
    msgpack_pack_array(&c->pk, 2);
    kwire_pack_raw(&c->pk, key, klen);
    kwire_pack_raw(&c->pk, val, vlen);
    if (!os_deflate(c, os, c->sbuf.data, c->sbuf.size, Z_NO_FLUSH)) {
        log_error("replace: writing an offer file failed: %s", strerror(errno));
        return false;
    }
    *csize += os->csize;
    return true;
}

static bool copy_record(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    copy_ctx *c = ud;
    if (should_abort(c)) {
        c->aborted = true;
        return false;
    }
    pace_record(c->r->srv, &c->pace);
    /* Live values and exact 8-byte tombstones travel (kumofs-c extension of storage.md
     * §5.2, DECISIONS.md §2): a newbie that still holds a value deleted while it was
     * away drops it on store-if-newer of the tombstone.  9-byte oddities stay home. */
    if (klen < DBKEY_HASH_LEN || (!dbvalue_is_live(vlen) && vlen != TOMBSTONE_LEN))
        return true;
    const kaddr *self = &server_cfg(c->r->srv)->self;
    uint64_t h = dbkey_hash(key);
    const kaddr *da[HS_REPLICAS];
    size_t nd = active_slots(&c->j->dst, h, da);
    off_t csize = 0;
    bool appended = false;
    if (c->j->full) {
        /* §8.5: every active slot of the seed, ourselves included */
        for (size_t i = 0; i < nd; i++) {
            if (!append_record(c, da[i], key, klen, val, vlen, &csize))
                goto fail;
            appended = true;
        }
    } else {
        const kaddr *sa[HS_REPLICAS];
        size_t ns = active_slots(&c->j->src, h, sa);
        /* exactly one surviving old owner - the first - sends the record */
        const kaddr *owner = NULL;
        for (size_t i = 0; i < ns && owner == NULL; i++)
            if (!is_fault(c, sa[i]))
                owner = sa[i];
        if (owner != NULL && c->restarted && dbvalue_is_live(vlen) && in_list(da, nd, self)
            && !takes_tombstones(c->j, owner)) {
            /* the record may be one deleted while we were down, and an original owner
             * streams no tombstones: ask it (tombsend.h, TOMBSEND_VERIFY) */
            tombsend_add(c->verify, owner, key, klen, dbvalue_clocktime(val));
            return true;
        }
        if (owner == NULL || !kaddr_eq(owner, self))
            return true;
        for (size_t i = 0; i < nd; i++) {
            if (in_list(sa, ns, da[i]))
                continue;
            if (!append_record(c, da[i], key, klen, val, vlen, &csize))
                goto fail;
            appended = true;
        }
    }
    if (appended)
        c->records++;
    unsigned limit = server_cfg(c->r->srv)->mem_limit_mib;
    if (appended && limit > 0 && csize >= (off_t)limit * 1024 * 1024) {
        if (!post_offers(c))
            goto fail;
        wait_offers_drained(c);
    }
    return true;
fail:
    c->failed = true;
    return false;
}

/* Deletes for original destinations, worker -> loop (tombsend.h). */
typedef struct dels_batch {
    uint64_t gen;
    clocktime_t time;
    tombsend *dels;
} dels_batch;

static void dels_done(server *srv, void *ud)
{
    dels_batch *db = ud;
    replace *r = server_replace(srv);
    if (!server_stopping(srv) && r->copying && db->gen == atomic_load(&r->copy_gen)
        && db->time == r->time) {
        r->waiting--;
        check_copy_done(r);
    }
    free(db);
}

/* Like the offers, the deletes hold the copy phase until every one was answered: the
 * peer must have them before reads move to it (the delete phase). */
static void dels_task(server *srv, void *arg)
{
    replace *r = server_replace(srv);
    dels_batch *db = arg;
    if (server_stopping(srv) || db->gen != atomic_load(&r->copy_gen) || !r->copying) {
        tombsend_free(db->dels);
        free(db);
        return;
    }
    r->waiting++;
    tombsend *t = db->dels;
    db->dels = NULL;
    log_info("replace: %zu deletes for / checks with original peers", tombsend_count(t));
    tombsend_start(srv, t, dels_done, db);
}

static void run_copy(replace *r, job *j)
{
    copy_ctx *c = xcalloc(1, sizeof(*c));
    c->r = r;
    c->j = j;
    c->dels = tombsend_new(TOMBSEND_DELETE);
    c->verify = tombsend_new(TOMBSEND_VERIFY);
    msgpack_sbuffer_init(&c->sbuf);
    msgpack_packer_init(&c->pk, &c->sbuf, msgpack_sbuffer_write);
    const kaddr *self = &server_cfg(r->srv)->self;
    bool skip = hashspace_empty(&j->dst) || (!j->full && hashspace_empty(&j->src));
    if (!skip && !j->full) {
        for (size_t i = 0; i < j->src.nnodes; i++) {
            const hs_node *n = &j->src.nodes[i];
            if (n->active && !hashspace_is_active(&j->dst, &n->addr)) {
                if (c->fault == NULL)
                    c->fault = xmalloc(j->src.nnodes * sizeof(*c->fault));
                c->fault[c->nfault++] = n->addr;
            }
        }
        if (is_fault(c, self))
            skip = true;                     /* §8.2 step 5 */
        c->restarted = !hashspace_is_active(&j->src, self) && hashspace_is_active(&j->dst, self);
    }
    if (!skip) {
        store_iterate_all(server_store(r->srv), j->purge_limit, copy_record, c);
        if (!c->failed && !c->aborted && !should_abort(c) && !post_offers(c))
            c->failed = true;
    }
    os_discard_all(c);
    if (c->failed) {
        /* Never report a copy we could not make: no ReplaceCopyEnd, so no delete phase. */
        log_error("replace copy failed; not reporting completion");
    } else if (!c->aborted && !atomic_load(&r->stop)) {
        log_info("replace copy iteration done: %llu records offered", (unsigned long long)c->records);
        /* posted before the iteration's token is dropped, so they hold the phase */
        tombsend **lists[2] = {&c->dels, &c->verify};
        for (int k = 0; k < 2; k++) {
            if (tombsend_count(*lists[k]) == 0)
                continue;
            dels_batch *db = xmalloc(sizeof(*db));
            db->gen = j->gen;
            db->time = j->time;
            db->dels = *lists[k];
            *lists[k] = NULL;
            server_post(r->srv, dels_task, db);
        }
        job_done *d = xcalloc(1, sizeof(*d));
        d->kind = JOB_COPY;
        d->gen = j->gen;
        d->time = j->time;
        d->mgr = j->mgr;
        server_post(r->srv, job_done_task, d);
    }
    tombsend_free(c->dels);
    tombsend_free(c->verify);
    msgpack_sbuffer_destroy(&c->sbuf);
    free(c->os);
    free(c->fault);
    free(c);
}

typedef struct delete_ctx {
    replace *r;
    job *j;
    uint64_t deleted;
    bool aborted;
    pace pace;
} delete_ctx;

static bool delete_record(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    (void)val;
    (void)vlen;
    delete_ctx *c = ud;
    if (atomic_load(&c->r->stop)) {
        c->aborted = true;
        return false;
    }
    pace_record(c->r->srv, &c->pace);
    if (klen < DBKEY_HASH_LEN)
        return true;
    if (!server_is_replica(c->r->srv, &c->j->dst, dbkey_hash(key))) {
        if (store_erase(server_store(c->r->srv), key, klen))
            c->deleted++;
    }
    return true;
}

static void run_delete(replace *r, job *j)
{
    delete_ctx c = { r, j, 0, false, { 0, 0, 0 } };
    if (!hashspace_empty(&j->dst))
        store_iterate(server_store(r->srv), j->purge_limit, delete_record, &c);
    if (c.aborted)
        return;
    log_info("replace delete iteration done: %llu records deleted", (unsigned long long)c.deleted);
    job_done *d = xcalloc(1, sizeof(*d));
    d->kind = JOB_DELETE;
    d->time = j->time;
    d->mgr = j->mgr;
    server_post(r->srv, job_done_task, d);
}

static void *worker_main(void *arg)
{
    replace *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (r->head == NULL && !atomic_load(&r->stop))
            pthread_cond_wait(&r->cond, &r->lock);
        job *j = r->head;
        if (atomic_load(&r->stop)) {
            pthread_mutex_unlock(&r->lock);
            break;
        }
        r->head = j->next;
        if (r->head == NULL)
            r->tail = NULL;
        pthread_mutex_unlock(&r->lock);
        if (j->kind == JOB_COPY)
            run_copy(r, j);
        else
            run_delete(r, j);
        job_free(j);
    }
    return NULL;
}

/* ========================================================================= lifecycle */

replace *replace_new(server *srv)
{
    replace *r = xcalloc(1, sizeof(*r));
    r->srv = srv;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    atomic_init(&r->stop, false);
    atomic_init(&r->copy_gen, 0);
    if (pthread_create(&r->thread, NULL, worker_main, r) == 0)
        r->thread_started = true;
    else
        log_error("replace: can't start the worker thread");
    return r;
}

void replace_stop(replace *r)
{
    pthread_mutex_lock(&r->lock);
    atomic_store(&r->stop, true);
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (r->thread_started) {
        pthread_join(r->thread, NULL);
        r->thread_started = false;
    }
}

void replace_free(replace *r)
{
    replace_stop(r);
    while (r->head != NULL) {
        job *j = r->head;
        r->head = j->next;
        job_free(j);
    }
    for (size_t i = 0; i < r->noffers; i++)
        close(r->offers[i].fd);
    free(r->offers);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void replace_stream_offers(replace *r, stream_offers *out)
{
    out->open = offer_open;
    out->finished = offer_finished;
    out->ud = r;
}
