/* test_store.c - the Tokyo Cabinet record store: layout, versions, tombstones, garbage
 * queue, purge, backup (storage.md). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tcutil.h>
#include <tchdb.h>

#include "logic/record.h"
#include "server/store.h"

static char g_dir[256];

static void path_in_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", g_dir, name);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/test_store.XXXXXX");
    return mkdtemp(g_dir) != NULL ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    DIR *d = opendir(g_dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char p[512];
            snprintf(p, sizeof(p), "%s/%s", g_dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

static store *open_named(const char *name)
{
    char p[512], err[256];
    path_in_dir(p, sizeof(p), name);
    store *st = store_open(p, err, sizeof(err));
    if (st == NULL)
        fail_msg("store_open(%s): %s", p, err);
    return st;
}

/* A live value: BE64(ct) ‖ 00 00 ‖ payload. */
static size_t make_value(uint8_t *out, clocktime_t ct, const char *payload)
{
    size_t n = strlen(payload);
    be64_put(out, ct);
    out[8] = 0;
    out[9] = 0;
    memcpy(out + 10, payload, n);
    return 10 + n;
}

/* Realistic seconds: "T - s" must not wrap below zero (storage.md §5.1). */
#define BASE_SEC 1700000000u
static clocktime_t ct_at(uint32_t sec) { return clocktime_make(BASE_SEC + sec, 0); }

static void assert_value(store *st, const char *key, clocktime_t ct, const char *payload)
{
    size_t vlen = 0;
    uint8_t *v = store_get(st, key, strlen(key), &vlen);
    assert_non_null(v);
    assert_int_equal(vlen, 10 + strlen(payload));
    assert_int_equal(be64_get(v), ct);
    assert_memory_equal(v + 10, payload, strlen(payload));
    free(v);
}

static bool file_exists(const char *name)
{
    char p[512];
    struct stat sb;
    path_in_dir(p, sizeof(p), name);
    return stat(p, &sb) == 0;
}

static void test_open_reopen(void **state)
{
    (void)state;
    uint8_t v[64];
    store *st = open_named("reopen.tch");
    size_t n = make_value(v, ct_at(1000), "hello");
    assert_true(store_put(st, "k1", 2, v, n));
    assert_int_equal(store_count(st), 1);
    store_close(st);
    assert_true(file_exists("reopen.tch"));

    st = open_named("reopen.tch");
    assert_int_equal(store_count(st), 1);
    assert_value(st, "k1", ct_at(1000), "hello");
    store_close(st);
}

static void test_suffix_parsing(void **state)
{
    (void)state;
    static const struct {
        const char *suffix;
        const char *file;     /* the file that must exist afterwards, or NULL */
        bool ok;
    } cases[] = {
        { "plain.tch", "plain.tch", true },
        { "tuned.tch#rcnum=100#xmsiz=1m", "tuned.tch", true },
        { "dup.tch#xmsiz=1g#xmsiz=2k#rcnum=10", "dup.tch", true },
        { "unknown.tch#foo=bar", "unknown.tch", true },
        { "bogus.tch#bogus", NULL, false },
        { "bogus2.tch#rcnum=5#bogus", NULL, false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char p[512], err[256] = "";
        path_in_dir(p, sizeof(p), cases[i].suffix);
        store *st = store_open(p, err, sizeof(err));
        if (cases[i].ok) {
            if (st == NULL)
                fail_msg("case %zu (%s): %s", i, cases[i].suffix, err);
            assert_true(file_exists(cases[i].file));
            /* the suffix must not have become part of the file name */
            assert_false(file_exists(cases[i].suffix) && strchr(cases[i].suffix, '#'));
            store_close(st);
        } else {
            assert_null(st);
            assert_true(err[0] != '\0');
            assert_false(file_exists("bogus.tch"));
        }
    }
    /* an unopenable path reports TC's error text */
    char err[256] = "";
    assert_null(store_open("/nonexistent-dir/x.tch", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent-dir/x.tch"));
}

static void test_put_get(void **state)
{
    (void)state;
    uint8_t v[64];
    store *st = open_named("putget.tch");
    size_t vlen;
    assert_null(store_get(st, "nope", 4, &vlen));
    clocktime_t ct;
    assert_false(store_get_clocktime(st, "nope", 4, &ct));

    size_t n = make_value(v, ct_at(2000), "one");
    assert_true(store_put(st, "a", 1, v, n));
    assert_value(st, "a", ct_at(2000), "one");
    /* plain put overwrites even with an older clocktime (coordinator set, §4.2) */
    n = make_value(v, ct_at(1000), "two");
    assert_true(store_put(st, "a", 1, v, n));
    assert_value(st, "a", ct_at(1000), "two");
    assert_true(store_get_clocktime(st, "a", 1, &ct));
    assert_int_equal(ct, ct_at(1000));
    store_close(st);
}

static void test_update(void **state)
{
    (void)state;
    static const struct {
        uint32_t existing;   /* 0 = absent */
        uint32_t incoming;
        bool stored;
    } cases[] = {
        { 0, 1000, true },       /* absent → stored */
        { 1000, 2000, true },    /* newer replaces */
        { 2000, 1000, false },   /* older refused */
        { 1000, 1000, false },   /* equal refused */
    };
    store *st = open_named("update.tch");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t v[64];
        char key[16];
        snprintf(key, sizeof(key), "u%zu", i);
        if (cases[i].existing != 0) {
            size_t n = make_value(v, ct_at(cases[i].existing), "old");
            assert_true(store_put(st, key, strlen(key), v, n));
        }
        size_t n = make_value(v, ct_at(cases[i].incoming), "new");
        assert_int_equal(store_update(st, key, strlen(key), v, n), cases[i].stored);
        if (cases[i].stored)
            assert_value(st, key, ct_at(cases[i].incoming), "new");
        else
            assert_value(st, key, ct_at(cases[i].existing), "old");
    }
    /* a stored value shorter than 8 bytes is always replaced */
    assert_true(store_put(st, "short", 5, "abc", 3));
    uint8_t v[64];
    size_t n = make_value(v, ct_at(5), "x");
    assert_true(store_update(st, "short", 5, v, n));
    assert_value(st, "short", ct_at(5), "x");
    /* an incoming value shorter than 8 bytes is refused */
    assert_false(store_update(st, "tiny", 4, "abc", 3));
    store_close(st);
}

static void test_tombstone(void **state)
{
    (void)state;
    uint8_t v[64];
    store *st = open_named("tomb.tch");
    size_t n = make_value(v, ct_at(1000), "live");
    assert_true(store_put(st, "k", 1, v, n));
    assert_true(store_remove(st, "k", 1, ct_at(2000)));

    size_t vlen = 0;
    uint8_t *got = store_get(st, "k", 1, &vlen);
    assert_non_null(got);
    assert_int_equal(vlen, TOMBSTONE_LEN);
    assert_int_equal(be64_get(got), ct_at(2000));
    free(got);
    clocktime_t ct;
    assert_true(store_get_clocktime(st, "k", 1, &ct));
    assert_int_equal(ct, ct_at(2000));

    /* an older set does not resurrect; an equal/older delete is refused */
    n = make_value(v, ct_at(1500), "stale");
    assert_false(store_update(st, "k", 1, v, n));
    assert_false(store_remove(st, "k", 1, ct_at(2000)));
    assert_false(store_remove(st, "k", 1, ct_at(1000)));
    /* a newer set resurrects */
    n = make_value(v, ct_at(3000), "again");
    assert_true(store_update(st, "k", 1, v, n));
    assert_value(st, "k", ct_at(3000), "again");

    /* remove of an absent key inserts the tombstone and answers true (§4.3) */
    assert_true(store_remove(st, "absent", 6, ct_at(100)));
    got = store_get(st, "absent", 6, &vlen);
    assert_non_null(got);
    assert_int_equal(vlen, TOMBSTONE_LEN);
    free(got);
    assert_int_equal(store_count(st), 2);
    store_close(st);
}

static void test_cas(void **state)
{
    (void)state;
    uint8_t v[64];
    store *st = open_named("cas.tch");
    size_t n = make_value(v, clocktime_make(BASE_SEC + 1000, 7), "orig");
    assert_true(store_put(st, "c", 1, v, n));

    n = make_value(v, ct_at(2000), "mismatch");
    assert_false(store_cas(st, "c", 1, v, n, clocktime_make(BASE_SEC + 1000, 8)));
    assert_value(st, "c", clocktime_make(BASE_SEC + 1000, 7), "orig");

    n = make_value(v, ct_at(2000), "match");
    assert_true(store_cas(st, "c", 1, v, n, clocktime_make(BASE_SEC + 1000, 7)));
    assert_value(st, "c", ct_at(2000), "match");

    /* absent key: stored (TC putproc semantics, §4.4) */
    n = make_value(v, ct_at(3000), "fresh");
    assert_true(store_cas(st, "none", 4, v, n, 12345));
    assert_value(st, "none", ct_at(3000), "fresh");

    /* a tombstone matches on its clocktime too */
    assert_true(store_remove(st, "c", 1, ct_at(2500)));
    n = make_value(v, ct_at(2600), "revived");
    assert_false(store_cas(st, "c", 1, v, n, ct_at(2000)));
    assert_true(store_cas(st, "c", 1, v, n, ct_at(2500)));
    assert_value(st, "c", ct_at(2600), "revived");

    /* short stored value: failure */
    assert_true(store_put(st, "s", 1, "ab", 2));
    assert_false(store_cas(st, "s", 1, v, n, 0));
    store_close(st);
}

struct iter_ctx {
    int seen_a, seen_b, seen_other;
    store *st;
    int stop_after;   /* 0 = never stop */
    int calls;
};

static bool iter_fn(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    struct iter_ctx *c = ud;
    c->calls++;
    assert_true(vlen >= DBVALUE_HEADER_LEN);
    if (klen == 1 && memcmp(key, "A", 1) == 0) {
        c->seen_a++;
        /* erasing the current record from inside fn is allowed */
        assert_true(store_erase(c->st, key, klen));
    } else if (klen == 1 && memcmp(key, "B", 1) == 0) {
        c->seen_b++;
    } else {
        c->seen_other++;
    }
    (void)val;
    return c->stop_after == 0 || c->calls < c->stop_after;
}

static void test_iterate(void **state)
{
    (void)state;
    uint8_t v[64];
    store *st = open_named("iter.tch");
    size_t n = make_value(v, ct_at(1000), "a");
    assert_true(store_put(st, "A", 1, v, n));
    n = make_value(v, ct_at(1000), "b");
    assert_true(store_put(st, "B", 1, v, n));
    assert_true(store_remove(st, "C", 1, ct_at(500)));     /* old tombstone */
    assert_true(store_remove(st, "D", 1, ct_at(2000)));    /* young tombstone */
    uint8_t nine[9] = { 0 };
    be64_put(nine, ct_at(400));
    assert_true(store_put(st, "E", 1, nine, sizeof(nine)));  /* 9-byte tombstone, old */
    assert_true(store_put(st, "F", 1, "xyz", 3));            /* invalid short value */
    assert_int_equal(store_count(st), 6);

    /* purge_limit 0: only short values purged, tombstones skipped */
    struct iter_ctx c = { .st = st };
    uint64_t visited = store_iterate(st, 0, iter_fn, &c);
    assert_int_equal(visited, 2);
    assert_int_equal(c.seen_a, 1);
    assert_int_equal(c.seen_b, 1);
    assert_int_equal(c.seen_other, 0);
    /* A erased by fn, F (short) purged; tombstones C, D, E kept (limit 0) */
    assert_int_equal(store_count(st), 4);

    struct iter_ctx c2 = { .st = st };
    visited = store_iterate(st, ct_at(1000), iter_fn, &c2);
    assert_int_equal(visited, 1);
    assert_int_equal(c2.seen_b, 1);
    /* C and E older than the limit: purged; D younger: kept; B live */
    assert_int_equal(store_count(st), 2);
    size_t vlen;
    void *got = store_get(st, "D", 1, &vlen);
    assert_non_null(got);
    free(got);
    assert_null(store_get(st, "C", 1, &vlen));
    assert_null(store_get(st, "E", 1, &vlen));

    /* fn returning false stops the iteration */
    for (int i = 0; i < 5; i++) {
        char key[8];
        snprintf(key, sizeof(key), "x%d", i);
        n = make_value(v, ct_at(1000), "x");
        assert_true(store_put(st, key, strlen(key), v, n));
    }
    struct iter_ctx c3 = { .st = st, .stop_after = 2 };
    visited = store_iterate(st, 0, iter_fn, &c3);
    assert_int_equal(c3.calls, 2);
    assert_int_equal(visited, 2);
    store_close(st);
}

/* store_iterate_all: records seen, by first key byte, and the length fn was given. */
struct all_ctx {
    int seen[128];
    size_t len[128];
};

static bool all_fn(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    struct all_ctx *c = ud;
    (void)val;
    assert_int_equal(klen, 1);
    unsigned char k = *(const unsigned char *)key;
    assert_true(k < 128);
    c->seen[k]++;
    c->len[k] = vlen;
    return true;
}

static void test_iterate_all(void **state)
{
    (void)state;
    uint8_t v[64];
    store *st = open_named("iterall.tch");
    size_t n = make_value(v, ct_at(1000), "live");
    assert_true(store_put(st, "L", 1, v, n));                  /* live */
    assert_true(store_remove(st, "Y", 1, ct_at(2000)));        /* young 8-byte tombstone */
    assert_true(store_remove(st, "O", 1, ct_at(500)));         /* old 8-byte tombstone */
    uint8_t nine[9] = { 0 };
    be64_put(nine, ct_at(2500));
    assert_true(store_put(st, "N", 1, nine, sizeof(nine)));   /* young 9-byte tombstone */
    be64_put(nine, ct_at(400));
    assert_true(store_put(st, "M", 1, nine, sizeof(nine)));   /* old 9-byte tombstone */
    assert_true(store_put(st, "S", 1, "xyz", 3));             /* invalid short value */
    assert_int_equal(store_count(st), 6);

    /* purge_limit 0: every tombstone goes to fn and counts; the short value is purged */
    struct all_ctx c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_iterate_all(st, 0, all_fn, &c), 5);
    assert_int_equal(c.seen['L'], 1);
    assert_int_equal(c.len['L'], n);
    assert_int_equal(c.seen['Y'], 1);
    assert_int_equal(c.len['Y'], TOMBSTONE_LEN);
    assert_int_equal(c.seen['O'], 1);
    assert_int_equal(c.seen['N'], 1);
    assert_int_equal(c.len['N'], 9);
    assert_int_equal(c.seen['M'], 1);
    assert_int_equal(c.seen['S'], 0);
    assert_int_equal(store_count(st), 5);

    /* a purge limit: tombstones older than it are purged and not passed to fn; younger
     * tombstones and live values are */
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_iterate_all(st, ct_at(1000), all_fn, &c), 3);
    assert_int_equal(c.seen['L'], 1);
    assert_int_equal(c.seen['Y'], 1);
    assert_int_equal(c.seen['N'], 1);
    assert_int_equal(c.seen['O'], 0);
    assert_int_equal(c.seen['M'], 0);
    assert_int_equal(store_count(st), 3);
    size_t vlen;
    assert_null(store_get(st, "O", 1, &vlen));
    assert_null(store_get(st, "M", 1, &vlen));

    /* store_iterate over the same records still skips the tombstones */
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_iterate(st, 0, all_fn, &c), 1);
    assert_int_equal(c.seen['L'], 1);
    assert_int_equal(c.seen['Y'] + c.seen['N'], 0);
    store_close(st);
}

#define GKEY_LEN 100

static void gkey(char *out, int i)
{
    memset(out, 'g', GKEY_LEN);
    snprintf(out, GKEY_LEN, "key%03d", i);
    out[strlen(out)] = 'g';   /* keep a fixed length of GKEY_LEN */
}

static void test_garbage_memory_limit(void **state)
{
    (void)state;
    uint8_t v[64];
    char key[GKEY_LEN];
    store *st = open_named("garbage.tch");
    /* -gN 0, -gX 3600, -gS 1 KiB: entries are 8 + 100 bytes, so the 10th overflows */
    store_set_garbage(st, 0, 3600, 1);
    for (int i = 0; i < 12; i++) {
        gkey(key, i);
        size_t n = make_value(v, ct_at(100), "live");
        assert_true(store_put(st, key, GKEY_LEN, v, n));
    }
    assert_int_equal(store_count(st), 12);
    for (int i = 0; i < 9; i++) {
        gkey(key, i);
        assert_true(store_remove(st, key, GKEY_LEN, ct_at(1000 + 10 * (uint32_t)i)));
    }
    assert_int_equal(store_count(st), 12);   /* 9 entries = 972 bytes fit */
    /* key 1 gets a newer live value: its garbage entry must not delete it */
    gkey(key, 1);
    size_t n = make_value(v, ct_at(1017), "back");
    assert_true(store_update(st, key, GKEY_LEN, v, n));

    for (int i = 9; i < 12; i++) {
        gkey(key, i);
        assert_true(store_remove(st, key, GKEY_LEN, ct_at(1000 + 10 * (uint32_t)i)));
    }
    /* entries 0, 1, 2 popped: tombstones 0 and 2 physically removed, key 1 kept */
    assert_int_equal(store_count(st), 10);
    size_t vlen;
    gkey(key, 0);
    assert_null(store_get(st, key, GKEY_LEN, &vlen));
    gkey(key, 2);
    assert_null(store_get(st, key, GKEY_LEN, &vlen));
    gkey(key, 1);
    void *got = store_get(st, key, GKEY_LEN, &vlen);
    assert_non_null(got);
    assert_int_equal(vlen, 14);
    free(got);
    store_close(st);
}

static void test_garbage_young_kept(void **state)
{
    (void)state;
    char key[GKEY_LEN];
    store *st = open_named("garbage2.tch");
    /* -gN 60: memory pressure pops entries younger than 60 s without deleting */
    store_set_garbage(st, 60, 3600, 1);
    for (int i = 0; i < 12; i++) {
        gkey(key, i);
        assert_true(store_remove(st, key, GKEY_LEN, ct_at(1000 + (uint32_t)i)));
    }
    assert_int_equal(store_count(st), 12);
    /* a much later delete: the queue front (popped for memory) is now older than gN */
    gkey(key, 50);
    assert_true(store_remove(st, key, GKEY_LEN, ct_at(2000)));
    assert_int_equal(store_count(st), 12);   /* 3 young popped earlier stay; 1 old goes */
    store_close(st);
}

static void test_garbage_max_age(void **state)
{
    (void)state;
    char key[GKEY_LEN];
    store *st = open_named("garbage3.tch");
    /* large memory budget; -gX 50: entries older than 50 s go on the next delete */
    store_set_garbage(st, 10, 50, 2048);
    for (int i = 0; i < 3; i++) {
        gkey(key, i);
        assert_true(store_remove(st, key, GKEY_LEN, ct_at(1000 + (uint32_t)i)));
    }
    assert_int_equal(store_count(st), 3);
    gkey(key, 3);
    assert_true(store_remove(st, key, GKEY_LEN, ct_at(1040)));
    assert_int_equal(store_count(st), 4);     /* nothing older than 1040 - 50 */
    gkey(key, 3);
    assert_true(store_remove(st, key, GKEY_LEN, ct_at(1046)));  /* re-delete, newer */
    assert_int_equal(store_count(st), 4);
    gkey(key, 4);
    assert_true(store_remove(st, key, GKEY_LEN, ct_at(1094)));
    /* limit 1044: 0, 1, 2 go; the 1040 entry cannot delete key 3's 1046 tombstone
     * (stored clocktime newer); the 1046 entry is not old enough yet */
    assert_int_equal(store_count(st), 2);
    /* min > max is lowered to max: with min 100, max 50 the max rule still applies */
    store_set_garbage(st, 100, 50, 0);
    gkey(key, 5);
    assert_true(store_remove(st, key, GKEY_LEN, ct_at(1150)));
    /* memory pressure (limit 0) with min lowered to 50: 3 (1046) and 4 (1094) are older
     * than 1100 and go; 5 is popped but its tombstone stays.  Unlowered (min 100, limit
     * 1050) key 4 would stay. */
    assert_int_equal(store_count(st), 1);
    store_close(st);
}

static void test_backup(void **state)
{
    (void)state;
    uint8_t v[64];
    store *st = open_named("src.tch");
    for (int i = 0; i < 50; i++) {
        char key[16];
        snprintf(key, sizeof(key), "b%d", i);
        size_t n = make_value(v, ct_at(1000 + (uint32_t)i), key);
        assert_true(store_put(st, key, strlen(key), v, n));
    }
    assert_true(store_remove(st, "b0", 2, ct_at(5000)));
    char dst[512], err[256];
    path_in_dir(dst, sizeof(dst), "src.tch-20090101");
    assert_int_equal(store_backup(st, dst, err, sizeof(err)), 0);
    assert_false(file_exists("src.tch-20090101.tmp"));
    store_close(st);

    TCHDB *db = tchdbnew();
    assert_true(tchdbopen(db, dst, HDBOREADER));
    assert_int_equal(tchdbrnum(db), 50);
    int sz;
    void *got = tchdbget(db, "b7", 2, &sz);
    assert_non_null(got);
    assert_int_equal(sz, 12);
    assert_int_equal(be64_get(got), ct_at(1007));
    free(got);
    got = tchdbget(db, "b0", 2, &sz);
    assert_non_null(got);
    assert_int_equal(sz, 8);
    free(got);
    tchdbclose(db);
    tchdbdel(db);

    /* failure: unwritable destination */
    st = open_named("src.tch");
    assert_int_equal(store_backup(st, "/nonexistent-dir/b.tch", err, sizeof(err)), -1);
    assert_true(err[0] != '\0');
    store_close(st);
}

/* A backup taken while the records are rewritten: a grown record moves to another
 * offset, possibly one the dump has passed, yet every record present throughout must be
 * in the backup at a version at least as new as at the start (issue 9: the backup no
 * longer holds the store lock across the copy). */
#define BK_KEYS 20000
#define BK_PADS 5000

struct backup_run {
    store *st;
    char dst[512];
    char err[256];
    int rc;
    atomic_bool done;
};

static void *backup_thread(void *arg)
{
    struct backup_run *r = arg;
    r->rc = store_backup(r->st, r->dst, r->err, sizeof(r->err));
    atomic_store(&r->done, true);
    return NULL;
}

static void test_backup_during_writes_holds_every_record(void **state)
{
    (void)state;
    static uint8_t big[600];
    store *st = open_named("busy.tch");
    char key[32];
    /* large records first in the file: erased during the backup, their space is
     * reused by the grown records, behind the dump's cursor */
    memset(big, 'p', sizeof(big));
    for (int i = 0; i < BK_PADS; i++) {
        snprintf(key, sizeof(key), "pad%d", i);
        be64_put(big, ct_at(10));
        assert_true(store_put(st, key, strlen(key), big, sizeof(big)));
    }
    for (int i = 0; i < BK_KEYS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        size_t n = make_value(big, ct_at(10), key);
        assert_true(store_put(st, key, strlen(key), big, n));
    }
    struct backup_run r = { .st = st };
    path_in_dir(r.dst, sizeof(r.dst), "busy.tch-bk");
    atomic_init(&r.done, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, backup_thread, &r), 0);
    /* rewrite keys from both ends, grown (so they move), and add new ones, until the
     * backup ends (bounded) */
    int rewritten = 0;
    memset(big, 'x', sizeof(big));
    for (int i = 0; i < BK_KEYS && !atomic_load(&r.done); i++, rewritten++) {
        int j = i % 2 == 0 ? i / 2 : BK_KEYS - 1 - i / 2;
        snprintf(key, sizeof(key), "k%d", j);
        be64_put(big, ct_at(20));
        big[8] = big[9] = 0;
        assert_true(store_put(st, key, strlen(key), big, sizeof(big)));
        if (i < BK_PADS) {
            snprintf(key, sizeof(key), "pad%d", i);
            assert_true(store_erase(st, key, strlen(key)));
        } else {
            snprintf(key, sizeof(key), "new%d", i);
            assert_true(store_put(st, key, strlen(key), big, sizeof(big)));
        }
    }
    pthread_join(th, NULL);
    if (r.rc != 0)
        fail_msg("backup failed: %s", r.err);
    store_close(st);
    print_message("backup overlapped %d rewrites\n", rewritten);

    TCHDB *db = tchdbnew();
    assert_true(tchdbopen(db, r.dst, HDBOREADER));
    for (int i = 0; i < BK_KEYS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        int sz;
        uint8_t *got = tchdbget(db, key, (int)strlen(key), &sz);
        if (got == NULL)
            fail_msg("%s missing from the backup", key);
        assert_true(sz >= 10);
        assert_true(be64_get(got) == ct_at(10) || be64_get(got) == ct_at(20));
        free(got);
    }
    tchdbclose(db);
    tchdbdel(db);
}

/* flush_all (protocol-additions.md §1.2) no longer walks the database in one go: the
 * store hides every flushed item the moment the flush begins, and a write made after
 * that survives even when its version is below the flush moment (clock skew between
 * servers), both before and after the walk has passed its record. */
static bool count_fn(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    (void)key;
    (void)klen;
    (void)val;
    (void)vlen;
    (*(int *)ud)++;
    return true;
}

static void test_flush_hides_items_at_once_and_keeps_later_writes(void **state)
{
    (void)state;
    uint8_t v[64];
    store *st = open_named("flush.tch");
    char key[16];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "f%d", i);
        size_t n = make_value(v, ct_at(100 + (uint32_t)i), key);
        assert_true(store_put(st, key, strlen(key), v, n));
    }
    size_t n = make_value(v, ct_at(2000), "future");
    assert_true(store_put(st, "future", 6, v, n));   /* newer than the flush moment */

    store_flush_begin(st, ct_at(1000));
    /* hidden at once: reads see the flush tombstone, the record's version + 1 clock */
    size_t vlen = 0;
    uint8_t *got = store_get(st, "f5", 2, &vlen);
    assert_non_null(got);
    assert_int_equal(vlen, TOMBSTONE_LEN);
    assert_int_equal(be64_get(got), clocktime_make(BASE_SEC + 105, 1));
    free(got);
    clocktime_t ct;
    assert_true(store_get_clocktime(st, "f6", 2, &ct));
    assert_int_equal(ct, clocktime_make(BASE_SEC + 106, 1));
    /* a replicated write from a coordinator whose clock is behind ours: below the flush
     * moment but newer than the tombstone, so it is kept */
    n = make_value(v, ct_at(500), "skew");
    assert_true(store_update(st, "f7", 2, v, n));
    n = make_value(v, ct_at(900), "fresh");
    assert_true(store_update(st, "new", 3, v, n));
    /* an older copy (a replace stream) of a flushed record is refused */
    n = make_value(v, ct_at(108), "f8");
    assert_false(store_update(st, "f8", 2, v, n));
    got = store_get(st, "f8", 2, &vlen);
    assert_int_equal(vlen, TOMBSTONE_LEN);
    free(got);

    /* iterations (the replace copy) never see a flushed record live */
    int live = 0;
    uint64_t visited = store_iterate(st, 0, count_fn, &live);
    assert_int_equal(visited, 3);                  /* f7, new, future */

    uint64_t flushed = 0;
    int steps = 0;
    while (store_flush_step(st, 7, 60.0, &flushed))
        assert_true(++steps < 1000);
    assert_true(steps > 5);                        /* it walked in steps */
    assert_int_equal(flushed, 100);                /* f0..f99, each once */
    assert_value(st, "f7", ct_at(500), "skew");
    assert_value(st, "new", ct_at(900), "fresh");
    assert_value(st, "future", ct_at(2000), "future");
    got = store_get(st, "f99", 3, &vlen);
    assert_int_equal(vlen, TOMBSTONE_LEN);
    assert_int_equal(be64_get(got), clocktime_make(BASE_SEC + 199, 1));
    free(got);
    /* the flush is over: a later write below the old flush moment is a plain write */
    n = make_value(v, ct_at(600), "again");
    assert_true(store_update(st, "f7b", 3, v, n));
    assert_value(st, "f7b", ct_at(600), "again");

    /* a second flush while the first walks covers what was written in between */
    store_flush_begin(st, ct_at(3000));
    assert_true(store_flush_step(st, 1, 60.0, &flushed));       /* walking */
    n = make_value(v, ct_at(2500), "between");
    assert_true(store_update(st, "mid", 3, v, n));
    store_flush_begin(st, ct_at(4000));
    got = store_get(st, "mid", 3, &vlen);
    assert_int_equal(vlen, TOMBSTONE_LEN);
    free(got);
    while (store_flush_step(st, 1000, 60.0, &flushed))
        ;
    assert_false(store_flush_step(st, 1000, 60.0, &flushed));   /* nothing left to do */
    got = store_get(st, "future", 6, &vlen);
    assert_int_equal(vlen, TOMBSTONE_LEN);
    free(got);
    store_close(st);
}

struct orig_ctx { int n; bool ok; };

static bool orig_fn(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    struct orig_ctx *c = ud;
    c->n++;
    c->ok = klen == 8 + 5 && memcmp((const uint8_t *)key + 8, "hello", 5) == 0 &&
            dbkey_hash(key) != 0 && vlen == 15 && memcmp((const uint8_t *)val + 10, "world", 5) == 0;
    return true;
}

static void test_original_layout(void **state)
{
    (void)state;
    char p[512];
    path_in_dir(p, sizeof(p), "orig.tch");
    uint8_t key[8 + 5];
    dbkey_make(key, "hello", 5);
    uint8_t val[15];
    be64_put(val, clocktime_make(1228310155, 62));
    val[8] = 0;
    val[9] = 0;
    memcpy(val + 10, "world", 5);

    TCHDB *db = tchdbnew();
    assert_true(tchdbopen(db, p, HDBOWRITER | HDBOCREAT));
    assert_true(tchdbput(db, key, sizeof(key), val, sizeof(val)));
    tchdbclose(db);
    tchdbdel(db);

    store *st = open_named("orig.tch");
    size_t vlen;
    uint8_t *got = store_get(st, key, sizeof(key), &vlen);
    assert_non_null(got);
    assert_int_equal(vlen, sizeof(val));
    assert_memory_equal(got, val, sizeof(val));
    free(got);
    clocktime_t ct;
    assert_true(store_get_clocktime(st, key, sizeof(key), &ct));
    assert_int_equal(ct, clocktime_make(1228310155, 62));
    struct orig_ctx c = { 0, false };
    assert_int_equal(store_iterate(st, 0, orig_fn, &c), 1);
    assert_int_equal(c.n, 1);
    assert_true(c.ok);
    store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_reopen),
        cmocka_unit_test(test_suffix_parsing),
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_tombstone),
        cmocka_unit_test(test_cas),
        cmocka_unit_test(test_iterate),
        cmocka_unit_test(test_iterate_all),
        cmocka_unit_test(test_garbage_memory_limit),
        cmocka_unit_test(test_garbage_young_kept),
        cmocka_unit_test(test_garbage_max_age),
        cmocka_unit_test(test_backup),
        cmocka_unit_test(test_backup_during_writes_holds_every_record),
        cmocka_unit_test(test_flush_hides_items_at_once_and_keeps_later_writes),
        cmocka_unit_test(test_original_layout),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
