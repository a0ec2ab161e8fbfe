/* store.c - the server's record store over a Tokyo Cabinet hash database (storage.md). */
#include "config.h"   /* _GNU_SOURCE: fallocate, sync_file_range */
#include "server/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <tcutil.h>
#include <tchdb.h>

#include "logic/log.h"
#include "logic/record.h"
#include "logic/xmalloc.h"

/* One remembered delete (storage.md §5.1).  Accounted as 8 + klen bytes, like the
 * original, whatever the real allocation costs. */
typedef struct garbage_entry {
    struct garbage_entry *next;
    clocktime_t ct;          /* clocktime of the delete */
    size_t klen;
    uint8_t key[];           /* the TC key (DBKey) */
} garbage_entry;

/* A flush_all being applied (protocol-additions.md §1.2).  While on, every live record
 * whose version is not newer than horizon and whose key is not in written is a flushed
 * record: it is turned into its tombstone before anyone reads or writes it, and the walk
 * turns the others. */
typedef struct store_flush {
    bool on;
    clocktime_t horizon;     /* the flush moment */
    TCMAP *written;          /* keys written since the flush began: never flushed */
    struct store_walk *walk; /* the walk over the file, while on */
    uint64_t count;          /* records tombstoned so far */
} store_flush;

/* A running backup's record of the keys written while it dumps: a rewritten record can
 * move to an offset the dump has already passed, so these keys are copied again at the
 * end (store_dump_step). */
typedef struct dump_watch {
    struct dump_watch *next;
    TCMAP *keys;
} dump_watch;

/* Naming: a do_ function runs with st->mu held; every public store_ function takes it. */
struct store {
    TCHDB *db;
    /* Serialises TC access between the event loop and the replace/backup threads.  We do
     * not use tchdbsetmutex: with it TC calls sched_yield() on every operation, which on a
     * loaded host sends the server to the back of the run queue once per request. */
    pthread_mutex_t mu;
    /* garbage queue: FIFO, head = oldest */
    garbage_entry *gq_head;
    garbage_entry *gq_tail;
    size_t gq_size;          /* accounted bytes: sum of 8 + klen */
    uint32_t garbage_min;    /* -gN seconds */
    uint32_t garbage_max;    /* -gX seconds */
    size_t garbage_limit;    /* -gS, in bytes */
    /* disk space (see reserve()): the file's blocks exist up to this offset */
    uint64_t reserved;
    bool use_statvfs;        /* the file system has no fallocate: check free space */
    double full_logged_at;   /* last "disk full" log line, to keep the log quiet */
    store_flush flush;       /* flush_all in progress (store_flush_begin) */
    dump_watch *dumps;       /* running backups (store_dump_start) */
};

/* The outcome of this thread's last store call: 0 (done, or refused by its condition)
 * or the errno of a storage failure.  Thread-local: the loop and the replace and backup
 * threads use the store at once. */
static _Thread_local int store_errno;

int store_error(void)
{
    return store_errno;
}

#define STORE_DEFAULT_XMSIZ (1LL << 30)

/* ---- disk space: a full disk refuses writes, it never kills the server ----
 * Tokyo Cabinet writes the first xmsiz bytes of the file through a shared mapping and
 * grows the file with ftruncate, which leaves a hole; storing into a hole page when the
 * file system is full raises SIGBUS (measured: three servers on a 16 MiB tmpfs died one
 * after the other, without a log line).  Beyond the mapping a pwrite would fail, and TC
 * then marks the database fatal.  So before every write the blocks it may touch are
 * made to exist (fallocate, keeping the file size): the current end of the data plus the
 * largest record the write can append.  If they cannot be had, the write is refused with
 * ENOSPC before TC sees it, reads go on, and a later write succeeds as soon as space is
 * there again. */
#define STORE_RESERVE_STEP (4u << 20)    /* grow the reservation in steps of 4 MiB */
#define STORE_RECORD_SLACK 1024          /* TC's record header, padding and bookkeeping */

/* fallocate, or (file systems without it) a free-space check of the same length. */
static int grow_reservation(store *st, uint64_t from, uint64_t len)
{
    if (!st->use_statvfs) {
        int rc = fallocate(st->db->fd, FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)len);
        if (rc == 0 || (errno != EOPNOTSUPP && errno != ENOSYS))
            return rc == 0 ? 0 : errno;
        st->use_statvfs = true;
        log_warn("store: the file system has no fallocate; checking free space instead");
    }
    struct statvfs sv;
    if (fstatvfs(st->db->fd, &sv) != 0)
        return errno;
    if ((uint64_t)sv.f_bavail * sv.f_frsize < len)
        return ENOSPC;
    return 0;
}

/* Make room for a write that may append a record of klen + vlen bytes.  Lock held.
 * Returns false (store_errno set, logged at most every 10 s) when there is no space. */
static bool reserve(store *st, size_t klen, size_t vlen)
{
    uint64_t end = tchdbfsiz(st->db);
    uint64_t need = end + klen + vlen + STORE_RECORD_SLACK;
    if (need <= st->reserved)
        return true;
    uint64_t from = st->reserved > end ? st->reserved : end;
    /* a whole step when it fits, else exactly what this write needs */
    int err = grow_reservation(st, from, need - from + STORE_RESERVE_STEP);
    if (err == 0) {
        st->reserved = need + STORE_RESERVE_STEP;
        return true;
    }
    err = grow_reservation(st, from, need - from);
    if (err == 0) {
        st->reserved = need;
        return true;
    }
    store_errno = err;
    double t = monotonic_sec();
    if (t - st->full_logged_at >= 10.0 || st->full_logged_at == 0) {
        st->full_logged_at = t;
        log_error("store: no room for a %zu-byte record at %llu: %s; writes are refused "
                  "until space is freed", klen + vlen, (unsigned long long)end, strerror(err));
    }
    return false;
}

/* Hooks of flush_all and backup on every access to a key, with st->mu held (defined at
 * the end of the file).  They cost one branch while neither runs. */
static void do_flush_key(store *st, const void *key, size_t klen);
static void do_flush_record(store *st, const TCXSTR *k, TCXSTR *v);
static void do_note_write(store *st, const void *key, size_t klen);
static void walk_destroy(struct store_walk *w);
static inline void do_before_read(store *st, const void *key, size_t klen)
{
    if (st->flush.on)
        do_flush_key(st, key, klen);
}
static inline void do_before_write(store *st, const void *key, size_t klen)
{
    if (st->flush.on || st->dumps != NULL)
        do_note_write(st, key, klen);
}

/* TC keys and values are int-sized; anything larger cannot be stored. */
static bool fits_int(size_t n) { return n <= (size_t)INT_MAX; }

/* Apply the `#name=value` suffixes of storage.md §1.1 to db and cut them off path (in
 * place).  Returns false (err filled) if a suffix has no '='. */
static bool apply_tuning(TCHDB *db, char *path, char *err, size_t errlen)
{
    char *hash;
    /* Without #xmsiz, map up to STORE_DEFAULT_XMSIZ of the file instead of TC's 64 MiB:
     * records beyond the mapped region cost a pread/pwrite syscall each, and a server
     * with ~100 MB of data ran sets ~35% slower for it.  Only address space is reserved;
     * the file format is unchanged.  An explicit #xmsiz below still wins. */
    tchdbsetxmsiz(db, STORE_DEFAULT_XMSIZ);
    /* The last '#' first; the leftmost duplicate is therefore applied last and wins. */
    while ((hash = strrchr(path, '#')) != NULL) {
        char *param = hash + 1;
        char *eq = strchr(param, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "invalid database parameter: %s", param);
            return false;
        }
        *hash = '\0';
        *eq = '\0';
        const char *value = eq + 1;
        if (strcmp(param, "rcnum") == 0) {
            tchdbsetcache(db, (int32_t)tcatoix(value));
        } else if (strcmp(param, "xmsiz") == 0) {
            tchdbsetxmsiz(db, tcatoix(value));
        }
        /* unknown names are ignored silently, as in the original */
    }
    return true;
}

/* Configure and open db on spec; false with err filled on failure. */
static bool do_open(TCHDB *db, const char *spec, char *err, size_t errlen)
{
    char *path = xstrdup(spec);
    bool ok = apply_tuning(db, path, err, errlen);
    /* storage.md §1: writer + create, no tune (TC defaults, like the original). */
    if (ok && !tchdbopen(db, path, HDBOWRITER | HDBOCREAT)) {
        snprintf(err, errlen, "%s: %s", path, tchdberrmsg(tchdbecode(db)));
        ok = false;
    }
    free(path);
    return ok;
}

store *store_open(const char *spec, char *err, size_t errlen)
{
    TCHDB *db = tchdbnew();
    if (!do_open(db, spec, err, errlen)) {
        tchdbdel(db);
        return NULL;
    }
    store *st = xcalloc(1, sizeof(*st));
    st->db = db;
    st->reserved = tchdbfsiz(db);     /* written data has its blocks; the rest is a hole */
    pthread_mutex_init(&st->mu, NULL);
    store_set_garbage(st, 60, 3600, 2048);   /* cli.md §4 defaults */
    return st;
}

void store_close(store *st)
{
    if (st == NULL)
        return;
    if (!tchdbclose(st->db))
        log_error("store close failed: %s", tchdberrmsg(tchdbecode(st->db)));
    tchdbdel(st->db);
    if (st->flush.written != NULL)
        tcmapdel(st->flush.written);
    if (st->flush.walk != NULL) {
        walk_destroy(st->flush.walk);
        free(st->flush.walk);
    }
    pthread_mutex_destroy(&st->mu);
    garbage_entry *e = st->gq_head;
    while (e != NULL) {
        garbage_entry *next = e->next;
        free(e);
        e = next;
    }
    free(st);
}

void store_set_garbage(store *st, uint32_t min_sec, uint32_t max_sec, size_t mem_limit_kib)
{
    if (min_sec > max_sec)
        min_sec = max_sec;   /* cli.md §4: -gN silently lowered to -gX */
    st->garbage_min = min_sec;
    st->garbage_max = max_sec;
    st->garbage_limit = mem_limit_kib > SIZE_MAX / 1024 ? SIZE_MAX : mem_limit_kib * 1024;
}

void *store_get(store *st, const void *key, size_t klen, size_t *vlen)
{
    if (!fits_int(klen))
        return NULL;
    int sz = 0;
    pthread_mutex_lock(&st->mu);
    do_before_read(st, key, klen);
    void *v = tchdbget(st->db, key, (int)klen, &sz);
    pthread_mutex_unlock(&st->mu);
    if (v == NULL)
        return NULL;
    *vlen = (size_t)sz;
    return v;   /* TC allocates with malloc: the caller's free() releases it */
}

bool store_get_clocktime(store *st, const void *key, size_t klen, clocktime_t *ct)
{
    if (!fits_int(klen))
        return false;
    uint8_t buf[8];
    pthread_mutex_lock(&st->mu);
    do_before_read(st, key, klen);
    int n = tchdbget3(st->db, key, (int)klen, buf, sizeof(buf));
    pthread_mutex_unlock(&st->mu);
    if (n < 8)
        return false;
    *ct = be64_get(buf);
    return true;
}

/* After a TC call returned false: a storage failure (logged, store_errno = EIO) unless
 * it only means "kept" or "no record". */
static void report_error(store *st, const char *what)
{
    int ecode = tchdbecode(st->db);
    if (ecode != TCEKEEP && ecode != TCENOREC) {
        log_error("store %s failed: %s", what, tchdberrmsg(ecode));
        store_errno = EIO;
    }
}

bool store_put(store *st, const void *key, size_t klen, const void *val, size_t vlen)
{
    store_errno = 0;
    if (!fits_int(klen) || !fits_int(vlen))
        return false;
    pthread_mutex_lock(&st->mu);
    do_before_write(st, key, klen);
    bool ok = reserve(st, klen, vlen) && tchdbput(st->db, key, (int)klen, val, (int)vlen);
    if (!ok && store_errno == 0)
        report_error(st, "put");
    pthread_mutex_unlock(&st->mu);
    return ok;
}

/* Argument of the put procedures: the incoming value and the clocktime to decide on. */
typedef struct put_op {
    const void *val;
    size_t vlen;
    clocktime_t ct;
} put_op;

/* storage.md §4.1: replace only when the stored version is strictly older (or short). */
static void *update_proc(const void *old, int oldlen, int *sp, void *opaque)
{
    const put_op *op = opaque;
    if (!record_should_replace(old, (size_t)oldlen, op->ct))
        return NULL;
    *sp = (int)op->vlen;
    return xmemdup(op->val, op->vlen);   /* TC frees it with free() */
}

static bool do_update(store *st, const void *key, size_t klen, const void *val, size_t vlen)
{
    put_op op = { val, vlen, be64_get(val) };
    if (!reserve(st, klen, vlen))
        return false;
    /* An absent key gets val unconditionally: TC's putproc semantics (§4). */
    if (!tchdbputproc(st->db, key, (int)klen, val, (int)vlen, update_proc, &op)) {
        report_error(st, "update");
        return false;
    }
    return true;
}

bool store_update(store *st, const void *key, size_t klen, const void *val, size_t vlen)
{
    store_errno = 0;
    if (vlen < 8 || !fits_int(klen) || !fits_int(vlen))
        return false;
    pthread_mutex_lock(&st->mu);
    do_before_write(st, key, klen);
    bool ok = do_update(st, key, klen, val, vlen);
    pthread_mutex_unlock(&st->mu);
    return ok;
}

/* §5.1 conditional physical delete: remove only while the record is still that tombstone
 * (or anything no newer, or a short value).  The op is the entry's clocktime. */
static void *collect_proc(const void *old, int oldlen, int *sp, void *opaque)
{
    (void)sp;
    const clocktime_t *ct = opaque;
    if (record_tombstone_collectable(old, (size_t)oldlen, *ct))
        return (void *)-1;
    return NULL;
}

static void collect(store *st, const void *key, size_t klen, clocktime_t ct)
{
    /* vbuf NULL: never insert anything when the key has vanished meanwhile. */
    if (!tchdbputproc(st->db, key, (int)klen, NULL, 0, collect_proc, &ct))
        report_error(st, "garbage collect");
}

static void garbage_pop(store *st)
{
    garbage_entry *e = st->gq_head;
    st->gq_head = e->next;
    if (st->gq_head == NULL)
        st->gq_tail = NULL;
    st->gq_size -= 8 + e->klen;
    free(e);
}

/* Push the entry of a successful remove and advance the queue with T = now
 * (storage.md §5.1).  There is no timer: this is the only place the queue moves. */
static void garbage_push(store *st, const void *key, size_t klen, clocktime_t now)
{
    garbage_entry *e = xmalloc(sizeof(*e) + klen);
    e->next = NULL;
    e->ct = now;
    e->klen = klen;
    memcpy(e->key, key, klen);
    if (st->gq_tail != NULL)
        st->gq_tail->next = e;
    else
        st->gq_head = e;
    st->gq_tail = e;
    st->gq_size += 8 + klen;

    clocktime_t min_limit = clocktime_sub_sec(now, st->garbage_min);
    clocktime_t max_limit = clocktime_sub_sec(now, st->garbage_max);
    while (st->gq_head != NULL) {
        garbage_entry *front = st->gq_head;
        if (st->gq_size > st->garbage_limit) {
            /* Memory pressure: drop the entry; its tombstone goes only if old enough. */
            if (clocktime_less(front->ct, min_limit))
                collect(st, front->key, front->klen, front->ct);
        } else if (clocktime_less(front->ct, max_limit)) {
            collect(st, front->key, front->klen, front->ct);
        } else {
            break;
        }
        garbage_pop(st);
    }
}

bool store_remove(store *st, const void *key, size_t klen, clocktime_t ct)
{
    store_errno = 0;
    if (!fits_int(klen))
        return false;
    uint8_t tomb[TOMBSTONE_LEN];
    be64_put(tomb, ct);
    pthread_mutex_lock(&st->mu);
    do_before_write(st, key, klen);
    bool ok = do_update(st, key, klen, tomb, sizeof(tomb));
    if (ok)
        garbage_push(st, key, klen, ct);
    pthread_mutex_unlock(&st->mu);
    return ok;
}

/* storage.md §4.4: replace only a record whose clocktime equals compare exactly. */
static void *cas_proc(const void *old, int oldlen, int *sp, void *opaque)
{
    const put_op *op = opaque;
    if (!record_cas_matches(old, (size_t)oldlen, op->ct))
        return NULL;
    *sp = (int)op->vlen;
    return xmemdup(op->val, op->vlen);
}

bool store_cas(store *st, const void *key, size_t klen, const void *val, size_t vlen,
               clocktime_t compare)
{
    store_errno = 0;
    if (!fits_int(klen) || !fits_int(vlen))
        return false;
    put_op op = { val, vlen, compare };
    pthread_mutex_lock(&st->mu);
    do_before_write(st, key, klen);
    bool ok = reserve(st, klen, vlen)
        && tchdbputproc(st->db, key, (int)klen, val, (int)vlen, cas_proc, &op);
    if (!ok && store_errno == 0)
        report_error(st, "cas");
    pthread_mutex_unlock(&st->mu);
    return ok;
}

bool store_erase(store *st, const void *key, size_t klen)
{
    if (!fits_int(klen))
        return false;
    pthread_mutex_lock(&st->mu);
    do_before_write(st, key, klen);
    bool ok = tchdbout(st->db, key, (int)klen);
    if (!ok)
        report_error(st, "erase");
    pthread_mutex_unlock(&st->mu);
    return ok;
}

uint64_t store_count(store *st)
{
    pthread_mutex_lock(&st->mu);
    uint64_t n = tchdbrnum(st->db);
    pthread_mutex_unlock(&st->mu);
    return n;
}

/* §5.2 "conditional on being unchanged": remove only if the value is still the bytes we
 * saw during the iteration. */
typedef struct same_op {
    const void *val;
    size_t vlen;
} same_op;

static void *purge_proc(const void *old, int oldlen, int *sp, void *opaque)
{
    (void)sp;
    const same_op *op = opaque;
    if ((size_t)oldlen == op->vlen && memcmp(old, op->val, op->vlen) == 0)
        return (void *)-1;
    return NULL;
}

static void purge(store *st, const void *key, size_t klen, const void *val, size_t vlen)
{
    same_op op = { val, vlen };
    if (!tchdbputproc(st->db, key, (int)klen, NULL, 0, purge_proc, &op))
        report_error(st, "purge");
}

static uint64_t do_iterate(store *st, clocktime_t purge_limit, bool tombstones,
                           store_iter_fn fn, void *ud)
{
    uint64_t visited = 0;
    TCXSTR *k = tcxstrnew();
    TCXSTR *v = tcxstrnew();
    /* iternext3 copies the record out; our lock is held for each step (and purge) but
     * released around fn, so fn may modify or erase the current record and the event loop
     * keeps serving between records. */
    pthread_mutex_lock(&st->mu);
    bool ok = tchdbiterinit(st->db);
    if (!ok)
        report_error(st, "iterinit");
    pthread_mutex_unlock(&st->mu);
    if (!ok)
        goto out;
    for (;;) {
        pthread_mutex_lock(&st->mu);
        bool more = tchdbiternext3(st->db, k, v);
        if (more && st->flush.on)
            do_flush_record(st, k, v);   /* a flushed record is never copied live */
        pthread_mutex_unlock(&st->mu);
        if (!more)
            break;
        const void *key = tcxstrptr(k);
        size_t klen = (size_t)tcxstrsize(k);
        const void *val = tcxstrptr(v);
        size_t vlen = (size_t)tcxstrsize(v);
        if (vlen < 8) {
            pthread_mutex_lock(&st->mu);
            purge(st, key, klen, val, vlen);   /* invalid record */
            pthread_mutex_unlock(&st->mu);
            continue;
        }
        if (!dbvalue_is_live(vlen)) {
            /* A tombstone (8 or 9 bytes): never handed to fn; aged ones go (§5.2). */
            if (purge_limit != 0 && clocktime_less(dbvalue_clocktime(val), purge_limit)) {
                pthread_mutex_lock(&st->mu);
                purge(st, key, klen, val, vlen);
                pthread_mutex_unlock(&st->mu);
                continue;
            }
            if (!tombstones)
                continue;
        }
        visited++;
        if (!fn(key, klen, val, vlen, ud))
            break;
    }
out:
    tcxstrdel(k);
    tcxstrdel(v);
    return visited;
}

uint64_t store_iterate(store *st, clocktime_t purge_limit, store_iter_fn fn, void *ud)
{
    return do_iterate(st, purge_limit, false, fn, ud);
}

uint64_t store_iterate_all(store *st, clocktime_t purge_limit, store_iter_fn fn, void *ud)
{
    return do_iterate(st, purge_limit, true, fn, ud);
}

/* ---- private cursors ---- */

/* TC keeps one iterator per handle, and its whole state is hdb->iter, the file offset of
 * the next record (tchdb.h exposes the struct; tchdbiterinit sets iter to the first
 * record, tchdbiternext3 reads the record at iter and moves iter past it).  Swapping our
 * own offset in and out under st->mu gives the flush walk and each backup a cursor of
 * their own, so they never disturb store_iterate (the replace copy) or each other. */
static uint64_t do_cursor_start(store *st)
{
    uint64_t saved = st->db->iter;
    tchdbiterinit(st->db);
    uint64_t pos = st->db->iter;
    st->db->iter = saved;
    return pos;
}

/* The record at *pos (copied into k and v) and *pos moved past it.  false at the end
 * (tchdbecode TCENOREC) or on a read error. */
static bool do_cursor_next(store *st, uint64_t *pos, TCXSTR *k, TCXSTR *v)
{
    uint64_t saved = st->db->iter;
    st->db->iter = *pos;
    bool more = tchdbiternext3(st->db, k, v);
    *pos = st->db->iter;
    st->db->iter = saved;
    return more;
}

/* A walk over every record that survives the file changing between its steps (the
 * flush walk, a backup dump).  Its cursor is a file offset, valid only while the record
 * before it stays where it is: once that record is rewritten, Tokyo Cabinet may free its
 * block, merge it with a neighbour and put another record across the offset, and a
 * cursor read from there would fail or, worse, skip records.  A record that is still
 * stored unchanged has not moved, so a step starts after the newest of the last few
 * records read that is still there, and the walk starts over if none is (the walks are
 * idempotent).  Within a step the store lock is held throughout. */
#define WALK_MARKS 4
#define WALK_RESTARTS 8

typedef struct store_walk {
    uint64_t pos;                /* the cursor */
    TCXSTR *mk[WALK_MARKS];      /* the last records read (as stored after the visit) ... */
    TCXSTR *mv[WALK_MARKS];
    uint64_t mend[WALK_MARKS];   /* ... and the cursor just past each */
    unsigned marks;              /* how many of them are valid */
    unsigned next;               /* ring slot of the next mark */
    unsigned restarts;
} store_walk;

static void walk_init(store_walk *w)
{
    memset(w, 0, sizeof(*w));
    for (unsigned i = 0; i < WALK_MARKS; i++) {
        w->mk[i] = tcxstrnew();
        w->mv[i] = tcxstrnew();
    }
}

static void walk_destroy(store_walk *w)
{
    for (unsigned i = 0; i < WALK_MARKS; i++) {
        tcxstrdel(w->mk[i]);
        tcxstrdel(w->mv[i]);
    }
}

static void do_walk_start(store *st, store_walk *w)
{
    w->pos = do_cursor_start(st);
    w->marks = 0;
}

static bool do_still_stored(store *st, const TCXSTR *k, const TCXSTR *v)
{
    int sz = 0;
    void *cur = tchdbget(st->db, tcxstrptr(k), tcxstrsize(k), &sz);
    bool same = cur != NULL && sz == tcxstrsize(v) && memcmp(cur, tcxstrptr(v), (size_t)sz) == 0;
    free(cur);
    return same;
}

/* At the start of a step: place the cursor after the newest unchanged mark, or start
 * over.  false once the walk has started over too often. */
static bool do_walk_resume(store *st, store_walk *w)
{
    for (unsigned i = 0; i < w->marks; i++) {
        unsigned j = (w->next + WALK_MARKS - 1 - i) % WALK_MARKS;
        if (do_still_stored(st, w->mk[j], w->mv[j])) {
            w->pos = w->mend[j];
            w->marks -= i;
            w->next = (j + 1) % WALK_MARKS;
            return true;
        }
    }
    if (w->marks == 0)
        return true;                       /* nothing read yet: pos is the start */
    do_walk_start(st, w);
    return ++w->restarts <= WALK_RESTARTS;
}

/* After visiting a record: remember it as it is now stored. */
static void do_walk_mark(store_walk *w, const TCXSTR *k, const TCXSTR *v)
{
    unsigned j = w->next;
    tcxstrclear(w->mk[j]);
    tcxstrcat(w->mk[j], tcxstrptr(k), tcxstrsize(k));
    tcxstrclear(w->mv[j]);
    tcxstrcat(w->mv[j], tcxstrptr(v), tcxstrsize(v));
    w->mend[j] = w->pos;
    w->next = (j + 1) % WALK_MARKS;
    if (w->marks < WALK_MARKS)
        w->marks++;
}

/* The next record of the walk into k, v.  false at the end; on a read error (the file
 * changed in a way the marks did not catch) the walk starts over, and gives up (false,
 * *failed set) after too many. */
static bool do_walk_next(store *st, store_walk *w, TCXSTR *k, TCXSTR *v, bool *failed)
{
    *failed = false;
    for (;;) {
        if (do_cursor_next(st, &w->pos, k, v))
            return true;
        int ecode = tchdbecode(st->db);
        if (ecode == TCENOREC)
            return false;
        log_warn("walk: reading the database failed (%s); starting over", tchdberrmsg(ecode));
        do_walk_start(st, w);
        if (++w->restarts > WALK_RESTARTS) {
            *failed = true;
            return false;
        }
    }
}

/* ---- flush_all (protocol-additions.md §1.2) ---- */

/* The tombstone version for a flushed record: the record's version with the next
 * logical clock.  It is newer than the record, so store-if-newer keeps every older copy
 * (replicas, replace streams) from coming back; and since every server derives the same
 * tombstone from the same record, a write made after the flush on another coordinator
 * (stamped after its own tombstone, DECISIONS.md §2) is newer on every replica too,
 * whatever the servers' clock skew.  (The flush moment itself, taken on each server's
 * own clock, could be newer than such a write on a replica and silently drop it.  For
 * the same reason the horizon alone cannot decide what a get sees: a write that arrives
 * after the flush may carry a version below this server's flush moment.  Such keys are
 * in flush.written and are never flushed.) */
static clocktime_t flush_version(clocktime_t ct)
{
    return clocktime_make(clocktime_sec(ct), clocktime_clock(ct) + 1);
}

/* Is the record key/val (a live value of version ct) one this flush must tombstone? */
static bool do_is_flushed(store *st, const void *key, size_t klen, clocktime_t ct)
{
    if (clocktime_less(st->flush.horizon, ct))
        return false;                      /* written after the flush moment */
    int sz;
    return tcmapget(st->flush.written, key, (int)klen, &sz) == NULL;
}

/* Replace the flushed record key (version ct) by its tombstone, as a delete does: the
 * tombstone enters the garbage queue (storage.md §5.1).  Returns the tombstone's
 * version. */
static clocktime_t do_flush_tombstone(store *st, const void *key, size_t klen, clocktime_t ct)
{
    uint8_t tomb[TOMBSTONE_LEN];
    clocktime_t fct = flush_version(ct);
    be64_put(tomb, fct);
    for (dump_watch *w = st->dumps; w != NULL; w = w->next)
        tcmapput(w->keys, key, (int)klen, "", 0);
    if (do_update(st, key, klen, tomb, sizeof(tomb))) {
        garbage_push(st, key, klen, fct);
        st->flush.count++;
    }
    return fct;
}

/* do_before_read while a flush is on: apply the flush to key now if it is due. */
static void do_flush_key(store *st, const void *key, size_t klen)
{
    uint8_t head[DBVALUE_HEADER_LEN];
    int n = tchdbget3(st->db, key, (int)klen, head, sizeof(head));
    if (n < 0 || !dbvalue_is_live((size_t)n))
        return;                            /* absent or a tombstone */
    clocktime_t ct = be64_get(head);
    if (do_is_flushed(st, key, klen, ct))
        do_flush_tombstone(st, key, klen, ct);
}

/* A record just read by an iteration: if it is flushed, tombstone it and hand the
 * tombstone to the reader instead. */
static void do_flush_record(store *st, const TCXSTR *k, TCXSTR *v)
{
    const void *key = tcxstrptr(k);
    size_t klen = (size_t)tcxstrsize(k);
    if (!dbvalue_is_live((size_t)tcxstrsize(v)))
        return;
    clocktime_t ct = dbvalue_clocktime(tcxstrptr(v));
    if (!do_is_flushed(st, key, klen, ct))
        return;
    uint8_t tomb[TOMBSTONE_LEN];
    be64_put(tomb, do_flush_tombstone(st, key, klen, ct));
    tcxstrclear(v);
    tcxstrcat(v, tomb, sizeof(tomb));
}

/* do_before_write: the flush applies to the old record first; the new one survives the
 * flush, and running backups copy the key again. */
static void do_note_write(store *st, const void *key, size_t klen)
{
    if (st->flush.on) {
        do_flush_key(st, key, klen);
        tcmapput(st->flush.written, key, (int)klen, "", 0);
    }
    for (dump_watch *w = st->dumps; w != NULL; w = w->next)
        tcmapput(w->keys, key, (int)klen, "", 0);
}

void store_flush_begin(store *st, clocktime_t horizon)
{
    pthread_mutex_lock(&st->mu);
    if (st->flush.on) {
        /* A second flush while the first walks: everything written since the first is
         * older than the new horizon, so it is flushed too; walk again from the start. */
        tcmapclear(st->flush.written);
    } else {
        st->flush.written = tcmapnew();
        st->flush.walk = xmalloc(sizeof(*st->flush.walk));
        walk_init(st->flush.walk);
        st->flush.count = 0;
        st->flush.on = true;
    }
    if (clocktime_less(st->flush.horizon, horizon))
        st->flush.horizon = horizon;
    do_walk_start(st, st->flush.walk);
    st->flush.walk->restarts = 0;
    pthread_mutex_unlock(&st->mu);
}


bool store_flush_step(store *st, size_t max_records, double max_sec, uint64_t *flushed)
{
    TCXSTR *k = tcxstrnew();
    TCXSTR *v = tcxstrnew();
    /* A tombstone can cost far more than a read: when the garbage queue is over -gS, each
     * one also removes an old tombstone, and with a full free block pool Tokyo Cabinet
     * sorts the pool on every removal (measured: ~44 us a record over 1.27M records, ~1.5
     * us without).  So the step is bounded in time as well as in records. */
    double deadline = monotonic_sec() + max_sec;
    pthread_mutex_lock(&st->mu);
    bool more = st->flush.on;
    bool failed = more && !do_walk_resume(st, st->flush.walk);
    for (size_t i = 0; more && !failed && i < max_records; i++) {
        if (i % 16 == 15 && monotonic_sec() > deadline)
            break;
        more = do_walk_next(st, st->flush.walk, k, v, &failed);
        if (more) {
            do_flush_record(st, k, v);
            do_walk_mark(st->flush.walk, k, v);
        }
    }
    if (failed) {
        log_error("flush_all: giving up the walk, the database changed too often under it; "
                  "some flushed items may come back");
        more = false;
    }
    if (st->flush.on && !more) {
        st->flush.on = false;
        tcmapdel(st->flush.written);
        st->flush.written = NULL;
        walk_destroy(st->flush.walk);
        free(st->flush.walk);
        st->flush.walk = NULL;
    }
    *flushed = st->flush.count;
    pthread_mutex_unlock(&st->mu);
    tcxstrdel(k);
    tcxstrdel(v);
    return more;
}

/* ---- backup (storage.md §6) ---- */

/* A dump of the store: the walk's cursor, then the keys written meanwhile. */
struct store_dump {
    dump_watch watch;            /* linked into st->dumps until the walk ends */
    bool walking;                /* false once in the re-copy phase */
    store_walk walk;
    TCMAP *recopy;               /* the watched keys, once the walk has ended */
    TCXSTR *k, *v;               /* the record being handed out */
};

store_dump *store_dump_start(store *st)
{
    store_dump *d = xcalloc(1, sizeof(*d));
    d->watch.keys = tcmapnew();
    d->walking = true;
    d->k = tcxstrnew();
    d->v = tcxstrnew();
    walk_init(&d->walk);
    pthread_mutex_lock(&st->mu);
    d->watch.next = st->dumps;
    st->dumps = &d->watch;
    do_walk_start(st, &d->walk);
    pthread_mutex_unlock(&st->mu);
    return d;
}

static void do_unwatch(store *st, store_dump *d)
{
    for (dump_watch **p = &st->dumps; *p != NULL; p = &(*p)->next) {
        if (*p == &d->watch) {
            *p = d->watch.next;
            break;
        }
    }
}

/* A record present throughout the dump is either unchanged, and then the walk meets it
 * where it was, or rewritten (possibly moved to an offset the walk has passed), and then
 * its key is in the watch list and handed out again, at its current value, after the
 * walk.  Every write after the walk comes after the version the dump needed. */
int store_dump_step(store *st, store_dump *d, size_t max_bytes, double max_sec,
                    store_dump_fn fn, void *ud, char *err, size_t errlen)
{
    double deadline = monotonic_sec() + max_sec;
    size_t bytes = 0;
    if (d->walking) {
        pthread_mutex_lock(&st->mu);
        bool failed = !do_walk_resume(st, &d->walk);
        bool more = !failed;
        for (unsigned i = 0; more && bytes < max_bytes; i++) {
            if (i % 16 == 15 && monotonic_sec() > deadline)
                break;
            more = do_walk_next(st, &d->walk, d->k, d->v, &failed);
            if (!more)
                break;
            if (st->flush.on)
                do_flush_record(st, d->k, d->v);   /* a backup after flush_all holds no flushed item */
            do_walk_mark(&d->walk, d->k, d->v);
            bytes += (size_t)(tcxstrsize(d->k) + tcxstrsize(d->v));
            fn(tcxstrptr(d->k), (size_t)tcxstrsize(d->k), tcxstrptr(d->v),
               (size_t)tcxstrsize(d->v), ud);
        }
        if (!more && !failed) {
            /* the walk is over: from now on, hand out the keys written meanwhile */
            do_unwatch(st, d);
            d->walking = false;
            d->recopy = d->watch.keys;
            d->watch.keys = NULL;
            tcmapiterinit(d->recopy);
        }
        pthread_mutex_unlock(&st->mu);
        if (failed) {
            snprintf(err, errlen, "backup: the database changed too often under the dump");
            return -1;
        }
        if (d->walking)
            return 1;
    }
    for (unsigned i = 0; bytes < max_bytes; i++) {
        if (i % 16 == 15 && monotonic_sec() > deadline)
            return 1;
        int ksz;
        const void *key = tcmapiternext(d->recopy, &ksz);
        if (key == NULL)
            return 0;
        int vsz = 0;
        pthread_mutex_lock(&st->mu);
        do_before_read(st, key, (size_t)ksz);
        void *val = tchdbget(st->db, key, ksz, &vsz);
        pthread_mutex_unlock(&st->mu);
        bytes += (size_t)ksz + (size_t)vsz;
        fn(key, (size_t)ksz, val, (size_t)vsz, ud);   /* val NULL: gone meanwhile */
        free(val);
    }
    return 1;
}

void store_dump_free(store *st, store_dump *d)
{
    if (d == NULL)
        return;
    pthread_mutex_lock(&st->mu);
    if (d->walking)
        do_unwatch(st, d);
    pthread_mutex_unlock(&st->mu);
    if (d->watch.keys != NULL)
        tcmapdel(d->watch.keys);
    if (d->recopy != NULL)
        tcmapdel(d->recopy);
    tcxstrdel(d->k);
    tcxstrdel(d->v);
    walk_destroy(&d->walk);
    free(d);
}

/* The backup file being written. */
struct store_copy {
    TCHDB *out;
    char *dst;
    char *tmp;                   /* dst + ".tmp" */
    uint64_t unsynced;           /* bytes put since the last tchdbsync */
};

/* The copy writes its pages out after every so many bytes: a gigabyte of dirty pages
 * written at the end would stall every writer on the host, the servers' event loops
 * included. */
#define BACKUP_SYNC_BYTES (16u << 20)

store_copy *store_copy_create(store *st, const char *dst, char *err, size_t errlen)
{
    /* tuned like the live database (storage.md §1: the same alignment, free block pool
     * and options), with buckets for every record it will get */
    pthread_mutex_lock(&st->mu);
    uint64_t bnum = tchdbbnum(st->db);
    uint64_t rnum = tchdbrnum(st->db);
    int8_t apow = (int8_t)st->db->apow;
    int8_t fpow = (int8_t)st->db->fpow;
    uint8_t opts = st->db->opts;
    pthread_mutex_unlock(&st->mu);
    if (bnum < rnum * 2)
        bnum = rnum * 2;                   /* TC advises 0.5 to 4 buckets per record */
    store_copy *c = xcalloc(1, sizeof(*c));
    c->dst = xstrdup(dst);
    size_t n = strlen(dst) + 5;
    c->tmp = xmalloc(n);
    snprintf(c->tmp, n, "%s.tmp", dst);
    c->out = tchdbnew();
    tchdbtune(c->out, (int64_t)bnum, apow, fpow, opts);
    tchdbsetxmsiz(c->out, STORE_DEFAULT_XMSIZ);
    if (!tchdbopen(c->out, c->tmp, HDBOWRITER | HDBOCREAT | HDBOTRUNC)) {
        snprintf(err, errlen, "backup: can't create %s: %s", c->tmp,
                 tchdberrmsg(tchdbecode(c->out)));
        tchdbdel(c->out);
        free(c->tmp);
        free(c->dst);
        free(c);
        return NULL;
    }
    return c;
}

bool store_copy_put(store_copy *c, const void *key, size_t klen, const void *val,
                    size_t vlen, char *err, size_t errlen)
{
    bool ok = val != NULL ? tchdbput(c->out, key, (int)klen, val, (int)vlen)
                          : tchdbout(c->out, key, (int)klen) || tchdbecode(c->out) == TCENOREC;
    c->unsynced += klen + vlen;
    if (ok && c->unsynced >= BACKUP_SYNC_BYTES) {
        /* Write the dirty pages out and wait for them, without fsync: an fsync forces a
         * journal commit, which holds up every other writer on the file system (the
         * servers' own database writes included) for as long as the data takes. */
        c->unsynced = 0;
        if (sync_file_range(c->out->fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE |
                            SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            log_debug("backup: sync_file_range on %s: %s", c->tmp, strerror(errno));
    }
    if (!ok)
        snprintf(err, errlen, "backup: writing %s failed: %s", c->tmp,
                 tchdberrmsg(tchdbecode(c->out)));
    return ok;
}

static void copy_free(store_copy *c, bool remove_tmp)
{
    if (remove_tmp)
        unlink(c->tmp);
    free(c->tmp);
    free(c->dst);
    free(c);
}

void store_copy_abort(store_copy *c)
{
    tchdbclose(c->out);
    tchdbdel(c->out);
    copy_free(c, true);
}

int store_copy_commit(store_copy *c, char *err, size_t errlen)
{
    bool closed = tchdbclose(c->out);
    if (!closed)
        snprintf(err, errlen, "backup: closing %s failed: %s", c->tmp,
                 tchdberrmsg(tchdbecode(c->out)));
    tchdbdel(c->out);
    if (!closed) {
        copy_free(c, true);
        return -1;
    }
    int fd = open(c->tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "backup: can't open %s: %s", c->tmp, strerror(errno));
        copy_free(c, true);
        return -1;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "backup: fsync %s failed: %s", c->tmp, strerror(errno));
        close(fd);
        copy_free(c, true);
        return -1;
    }
    close(fd);
    if (rename(c->tmp, c->dst) != 0) {
        snprintf(err, errlen, "backup: rename %s to %s failed: %s", c->tmp, c->dst,
                 strerror(errno));
        copy_free(c, true);
        return -1;
    }
    copy_free(c, false);
    return 0;
}

/* store_backup's dump_fn: straight into the copy; the first failure sticks. */
typedef struct backup_ctx {
    store_copy *copy;
    bool ok;
    char *err;
    size_t errlen;
} backup_ctx;

static void backup_put(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    backup_ctx *b = ud;
    if (b->ok)
        b->ok = store_copy_put(b->copy, key, klen, val, vlen, b->err, b->errlen);
}

int store_backup(store *st, const char *dst, char *err, size_t errlen)
{
    backup_ctx b = { store_copy_create(st, dst, err, errlen), true, err, errlen };
    if (b.copy == NULL)
        return -1;
    store_dump *d = store_dump_start(st);
    int rc;
    /* small steps: the lock is held for one step at a time */
    while ((rc = store_dump_step(st, d, 64u << 10, 0.001, backup_put, &b, err, errlen)) > 0
           && b.ok)
        ;
    store_dump_free(st, d);
    if (rc < 0 || !b.ok) {
        store_copy_abort(b.copy);
        return -1;
    }
    return store_copy_commit(b.copy, err, errlen);
}
