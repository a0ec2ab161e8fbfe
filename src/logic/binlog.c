/* binlog.c - the binary "logpack" log: record builder, framing, open/reopen/close. */
#include "logic/binlog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "logic/kwire.h"
#include "logic/xmalloc.h"

/* One log per process; the mutex orders records from several threads and protects the
 * descriptor against a concurrent SIGHUP reopen. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_fd = -1;
static char *g_path;
static uint32_t (*g_now)(void);

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int binlog_open(const char *path)
{
    int fd = open_path(path);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&g_lock);
    if (g_fd >= 0)
        close(g_fd);
    g_fd = fd;
    free(g_path);
    g_path = xstrdup(path);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

int binlog_reopen(void)
{
    int rc = 0;
    pthread_mutex_lock(&g_lock);
    if (g_fd >= 0) {
        int fd = open_path(g_path);
        if (fd < 0) {
            rc = -1;   /* keep writing to the old file rather than losing records */
        } else {
            close(g_fd);
            g_fd = fd;
        }
    }
    int saved = errno;
    pthread_mutex_unlock(&g_lock);
    errno = saved;
    return rc;
}

void binlog_close(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_fd >= 0)
        close(g_fd);
    g_fd = -1;
    free(g_path);
    g_path = NULL;
    pthread_mutex_unlock(&g_lock);
}

bool binlog_is_open(void)
{
    pthread_mutex_lock(&g_lock);
    bool open = g_fd >= 0;
    pthread_mutex_unlock(&g_lock);
    return open;
}

uint32_t binlog_code(const char *name)
{
    uint32_t c = 0;
    for (size_t i = 0; i < 4 && name[i] != '\0'; i++)
        c = (c << 8) | (uint8_t)name[i];
    return c;
}

void binlog_set_time_source(uint32_t (*now)(void))
{
    g_now = now;
}

/* ---------------------------------------------------------------- builder */

void binlog_begin(binlog_rec *r, const char *name, unsigned version)
{
    memset(r, 0, sizeof(*r));
    if (!binlog_is_open())
        return;
    r->active = true;
    r->name = binlog_code(name);
    r->version = version;
    msgpack_sbuffer_init(&r->body);
    msgpack_packer_init(&r->pk, &r->body, msgpack_sbuffer_write);
}

/* Every value is preceded by its key code; msgpack-c packs unsigned ints shortest. */
static bool add_key(binlog_rec *r, const char *key)
{
    if (!r->active)
        return false;
    r->nkeys++;
    msgpack_pack_uint32(&r->pk, binlog_code(key));
    return true;
}

void binlog_add_uint(binlog_rec *r, const char *key, uint64_t v)
{
    if (add_key(r, key))
        msgpack_pack_uint64(&r->pk, v);
}

void binlog_add_u64(binlog_rec *r, const char *key, uint64_t v)
{
    binlog_add_uint(r, key, v);
}

void binlog_add_int(binlog_rec *r, const char *key, int64_t v)
{
    if (add_key(r, key))
        msgpack_pack_int64(&r->pk, v);   /* non-negative values come out unsigned */
}

void binlog_add_raw(binlog_rec *r, const char *key, const void *p, size_t n)
{
    if (add_key(r, key))
        kwire_pack_raw(&r->pk, p, n);
}

void binlog_add_str(binlog_rec *r, const char *key, const char *s)
{
    binlog_add_raw(r, key, s, s != NULL ? strlen(s) : 0);
}

void binlog_add_addr(binlog_rec *r, const char *key, const kaddr *a)
{
    static const uint8_t zero[KADDR_IPV4_LEN];
    /* cli.md §10: "zero address if none" is six zero bytes, not an empty raw */
    if (a == NULL || a->len == 0)
        binlog_add_raw(r, key, zero, sizeof(zero));
    else
        binlog_add_raw(r, key, a->raw, a->len);
}

void binlog_add_time(binlog_rec *r)
{
    uint32_t (*now)(void) = g_now;
    binlog_add_uint(r, "time", now != NULL ? now() : (uint64_t)time(NULL));
}

void binlog_discard(binlog_rec *r)
{
    if (r->active)
        msgpack_sbuffer_destroy(&r->body);
    r->active = false;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int binlog_commit(binlog_rec *r)
{
    if (!r->active)
        return -1;
    msgpack_sbuffer out;
    msgpack_packer pk;
    msgpack_sbuffer_init(&out);
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    static const char room[4];   /* the length prefix, filled in below */
    msgpack_sbuffer_write(&out, room, sizeof(room));
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint32(&pk, r->name);
    msgpack_pack_unsigned_int(&pk, r->version);
    msgpack_pack_map(&pk, r->nkeys);
    if (r->body.size > 0)
        msgpack_sbuffer_write(&out, r->body.data, r->body.size);
    size_t n = out.size - 4;
    out.data[0] = (char)(n >> 24);
    out.data[1] = (char)(n >> 16);
    out.data[2] = (char)(n >> 8);
    out.data[3] = (char)n;

    int rc = -1;
    pthread_mutex_lock(&g_lock);
    if (g_fd >= 0)
        rc = write_all(g_fd, out.data, out.size);
    pthread_mutex_unlock(&g_lock);
    msgpack_sbuffer_destroy(&out);
    binlog_discard(r);
    return rc;
}

/* ---------------------------------------------------------------- cli.md §10 records */

void binlog_manager_start(const kaddr *addr, const kaddr *partner)
{
    binlog_rec r;
    binlog_begin(&r, "SM", 2);
    binlog_add_time(&r);
    binlog_add_addr(&r, "addr", addr);
    binlog_add_addr(&r, "Padd", partner);
    binlog_commit(&r);
}

void binlog_server_start(const kaddr *addr, const char *db, const kaddr *mgr1,
                         const kaddr *mgr2, const kaddr *stream_addr, const char *tmpdir)
{
    binlog_rec r;
    binlog_begin(&r, "SS", 2);
    if (!r.active)
        return;
    binlog_add_time(&r);
    binlog_add_addr(&r, "addr", addr);
    binlog_add_str(&r, "db", db);
    binlog_add_addr(&r, "mgr1", mgr1);
    binlog_add_addr(&r, "mgr2", mgr2);
    binlog_add_addr(&r, "sadd", stream_addr);
    binlog_add_str(&r, "tmpd", tmpdir);
    /* the backup basename is the raw -s string plus "-" (storage.md §6) */
    size_t dl = db != NULL ? strlen(db) : 0;
    char *bkup = xmalloc(dl + 2);
    memcpy(bkup, db != NULL ? db : "", dl);
    bkup[dl] = '-';
    bkup[dl + 1] = '\0';
    binlog_add_str(&r, "bkup", bkup);
    free(bkup);
    binlog_commit(&r);
}

void binlog_gateway_start(const kaddr *mgr1, const kaddr *mgr2)
{
    binlog_rec r;
    binlog_begin(&r, "SW", 2);
    binlog_add_time(&r);
    binlog_add_addr(&r, "mgr1", mgr1);
    binlog_add_addr(&r, "mgr2", mgr2);
    binlog_commit(&r);
}

static void addr_event(const char *name, const kaddr *addr)
{
    binlog_rec r;
    binlog_begin(&r, name, 3);
    binlog_add_time(&r);
    binlog_add_addr(&r, "addr", addr);
    binlog_commit(&r);
}

void binlog_unknown_partner(const kaddr *addr) { addr_event("eP", addr); }
void binlog_new_server(const kaddr *addr) { addr_event("nS", addr); }
void binlog_lost_server(const kaddr *addr) { addr_event("lS", addr); }

void binlog_replicate_set_failed(const void *key, size_t klen, const void *val, size_t vlen,
                                 uint64_t hash, clocktime_t cktm, const kaddr *to)
{
    binlog_rec r;
    binlog_begin(&r, "ers", 4);
    binlog_add_time(&r);
    binlog_add_raw(&r, "key", key, klen);
    binlog_add_raw(&r, "val", val, vlen);
    binlog_add_u64(&r, "hash", hash);
    binlog_add_u64(&r, "cktm", cktm);
    binlog_add_addr(&r, "to", to);
    binlog_commit(&r);
}

void binlog_replicate_delete_failed(const void *key, size_t klen, uint64_t hash,
                                    const kaddr *to)
{
    binlog_rec r;
    binlog_begin(&r, "erd", 4);
    binlog_add_time(&r);
    binlog_add_raw(&r, "key", key, klen);
    binlog_add_u64(&r, "hash", hash);
    binlog_add_addr(&r, "to", to);
    binlog_commit(&r);
}

void binlog_get_failed(const void *key, size_t klen, int err)
{
    binlog_rec r;
    binlog_begin(&r, "eg", 3);
    binlog_add_time(&r);
    binlog_add_raw(&r, "key", key, klen);
    binlog_add_int(&r, "err", err);
    binlog_commit(&r);
}

void binlog_set_failed(const void *key, size_t klen, const void *val, size_t vlen, int err)
{
    binlog_rec r;
    binlog_begin(&r, "es", 3);
    binlog_add_time(&r);
    binlog_add_raw(&r, "key", key, klen);
    binlog_add_raw(&r, "val", val, vlen);
    binlog_add_int(&r, "err", err);
    binlog_commit(&r);
}

void binlog_delete_failed(const void *key, size_t klen, int err)
{
    binlog_rec r;
    binlog_begin(&r, "ed", 3);
    binlog_add_time(&r);
    binlog_add_raw(&r, "key", key, klen);
    binlog_add_int(&r, "err", err);
    binlog_commit(&r);
}
