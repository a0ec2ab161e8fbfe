/* store.c - the server's record store over a Tokyo Cabinet hash database (storage.md). */
#include "config.h"   /* _GNU_SOURCE: fallocate */
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
};

/* The outcome of this thread's last store call: 0 (done, or refused by its condition)
 * or the errno of a storage failure.  Thread-local: the loop and the replace and backup
 * threads use the store at once. */
static _Thread_local int store_errno;

int store_error(void)
{
    return store_errno;
}

/* Debian's Tokyo Cabinet calls sched_yield() from its record writer about once per put,
 * even without tchdbsetmutex (measured: 28,807 yields for 40,000 tchdbputproc calls).  In
 * a single-threaded event loop a yield only hands the CPU to other processes and adds
 * latency to every request, so the program that links the store defines it as a no-op;
 * the dynamic linker binds TC's calls to this definition.  Our own threads synchronise
 * with mutexes and never rely on yielding. */
int sched_yield(void)
{
    return 0;
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

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

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
    double t = now_sec();
    if (t - st->full_logged_at >= 10.0 || st->full_logged_at == 0) {
        st->full_logged_at = t;
        log_error("store: no room for a %zu-byte record at %llu: %s; writes are refused "
                  "until space is freed", klen + vlen, (unsigned long long)end, strerror(err));
    }
    return false;
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

int store_backup(store *st, const char *dst, char *err, size_t errlen)
{
    size_t n = strlen(dst) + 5;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp", dst);
    int rc = -1;
    int fd;
    /* tchdbcopy synchronises the database and copies it; our lock keeps writers out
     * meanwhile, so the copy is a consistent snapshot. */
    pthread_mutex_lock(&st->mu);
    bool copied = tchdbcopy(st->db, tmp);
    if (!copied)
        snprintf(err, errlen, "backup to %s failed: %s", tmp, tchdberrmsg(tchdbecode(st->db)));
    pthread_mutex_unlock(&st->mu);
    if (!copied)
        goto out;
    fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "backup: can't open %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "backup: fsync %s failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, dst) != 0) {
        snprintf(err, errlen, "backup: rename %s to %s failed: %s", tmp, dst, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    return rc;
}
