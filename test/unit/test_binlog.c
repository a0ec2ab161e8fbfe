/* test_binlog.c - the binary log: byte-exact framing (cli.md §10), logrotate reopen,
 * key order and versions of every record type. */
#define _GNU_SOURCE 1   /* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "logic/binlog.h"

static char g_dir[64];
static char g_path[128];

static uint32_t fixed_time(void) { return 0x6b0238b5; }

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/test_binlog.XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_path, sizeof(g_path), "%s/log.mpac", g_dir);
    binlog_set_time_source(fixed_time);
    umask(022);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    binlog_close();
    char p[160];
    unlink(g_path);
    snprintf(p, sizeof(p), "%s.1", g_path);
    unlink(p);
    rmdir(g_dir);
    return 0;
}

/* Whole file into a malloc'd buffer. */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        *n = 0;
        return NULL;
    }
    uint8_t *buf = malloc(1 << 20);
    *n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static kaddr ipv4(uint32_t ip, uint16_t port)
{
    kaddr a;
    kaddr_set_ipv4(&a, ip, port);
    return a;
}

static void test_codes(void **state)
{
    (void)state;
    assert_int_equal(binlog_code("SM"), 0x534D);
    assert_int_equal(binlog_code("ers"), 0x657273);
    assert_int_equal(binlog_code("time"), 0x74696D65);
}

/* reference-outputs.md "kumolog": kumo-manager -l 127.0.0.1:19750, no partner. */
static void test_manager_start_is_byte_exact(void **state)
{
    (void)state;
    static const uint8_t want[44] = {
        0x00, 0x00, 0x00, 0x28, 0x93, 0xcd, 0x53, 0x4d, 0x02, 0x83, 0xce, 0x74, 0x69, 0x6d, 0x65, 0xce,
        0x6b, 0x02, 0x38, 0xb5, 0xce, 0x61, 0x64, 0x64, 0x72, 0xa6, 0x4d, 0x26, 0x7f, 0x00, 0x00, 0x01,
        0xce, 0x50, 0x61, 0x64, 0x64, 0xa6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    assert_int_equal(binlog_open(g_path), 0);
    kaddr self = ipv4(0x7f000001, 19750);
    kaddr none = { 0 };
    binlog_manager_start(&self, &none);
    size_t n;
    uint8_t *got = slurp(g_path, &n);
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(got, want, sizeof(want));
    free(got);

    struct stat st;
    assert_int_equal(stat(g_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
}

static void test_no_log_is_noop(void **state)
{
    (void)state;
    binlog_close();
    assert_false(binlog_is_open());
    binlog_rec r;
    binlog_begin(&r, "SM", 2);
    binlog_add_time(&r);
    assert_int_equal(binlog_commit(&r), -1);
    binlog_new_server(NULL);
    assert_int_equal(access(g_path, F_OK), -1);
}

/* logrotate: the file is renamed, SIGHUP reopens the path and new records go there. */
static void test_reopen_after_rename(void **state)
{
    (void)state;
    char rotated[160];
    snprintf(rotated, sizeof(rotated), "%s.1", g_path);
    assert_int_equal(binlog_open(g_path), 0);
    kaddr a = ipv4(0x7f000001, 19801);
    binlog_new_server(&a);
    assert_int_equal(rename(g_path, rotated), 0);
    binlog_lost_server(&a);                    /* still the old descriptor */
    assert_int_equal(binlog_reopen(), 0);
    binlog_new_server(&a);

    size_t n1, n2;
    uint8_t *old = slurp(rotated, &n1);
    uint8_t *cur = slurp(g_path, &n2);
    assert_non_null(old);
    assert_non_null(cur);
    assert_int_equal(n2, n1 / 2);
    assert_int_equal(cur[0] << 24 | cur[1] << 16 | cur[2] << 8 | cur[3], n2 - 4);
    assert_int_equal(cur[6], 'n');           /* 0x93 0xcd 'n' 'S' */
    assert_int_equal(old[n2 + 6], 'l');
    free(old);
    free(cur);
}

/* Decode every record of the log and compare name, version and key order. */
typedef struct expect {
    const char *name;
    unsigned version;
    const char *keys[9];
} expect;

static void check_records(const expect *ex, size_t nex)
{
    size_t n;
    uint8_t *buf = slurp(g_path, &n);
    assert_non_null(buf);
    size_t off = 0;
    for (size_t i = 0; i < nex; i++) {
        assert_true(off + 4 <= n);
        size_t len = (size_t)buf[off] << 24 | buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3];
        off += 4;
        assert_true(off + len <= n);
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t used = 0;
        assert_int_equal(msgpack_unpack_next(&u, (const char *)buf + off, len, &used),
                         MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(used, len);
        msgpack_object o = u.data;
        assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(o.via.array.size, 3);
        assert_int_equal(o.via.array.ptr[0].via.u64, binlog_code(ex[i].name));
        assert_int_equal(o.via.array.ptr[1].via.u64, ex[i].version);
        msgpack_object m = o.via.array.ptr[2];
        assert_int_equal(m.type, MSGPACK_OBJECT_MAP);
        size_t nk = 0;
        while (ex[i].keys[nk] != NULL)
            nk++;
        assert_int_equal(m.via.map.size, nk);
        for (size_t k = 0; k < nk; k++) {
            assert_int_equal(m.via.map.ptr[k].key.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
            assert_int_equal(m.via.map.ptr[k].key.via.u64, binlog_code(ex[i].keys[k]));
        }
        /* time is always the fixed test clock */
        assert_int_equal(m.via.map.ptr[0].val.via.u64, 0x6b0238b5);
        msgpack_unpacked_destroy(&u);
        off += len;
    }
    assert_int_equal(off, n);
    free(buf);
}

static void test_every_record_key_order(void **state)
{
    (void)state;
    assert_int_equal(binlog_open(g_path), 0);
    kaddr a = ipv4(0x7f000001, 19800), m1 = ipv4(0x7f000001, 19700), m2 = { 0 };
    kaddr s = ipv4(0x7f000001, 19900);
    binlog_manager_start(&a, NULL);
    binlog_server_start(&a, "/var/kumo.tch", &m1, &m2, &s, "/tmp");
    binlog_gateway_start(&m1, &m2);
    binlog_unknown_partner(&a);
    binlog_new_server(&a);
    binlog_lost_server(&a);
    binlog_replicate_set_failed("k", 1, "v", 1, 12345, 7, &a);
    binlog_replicate_delete_failed("k", 1, 12345, &a);
    binlog_get_failed("k", 1, 3);
    binlog_set_failed("k", 1, "v", 1, 1);
    binlog_delete_failed("k", 1, 2);
    static const expect ex[] = {
        { "SM", 2, { "time", "addr", "Padd" } },
        { "SS", 2, { "time", "addr", "db", "mgr1", "mgr2", "sadd", "tmpd", "bkup" } },
        { "SW", 2, { "time", "mgr1", "mgr2" } },
        { "eP", 3, { "time", "addr" } },
        { "nS", 3, { "time", "addr" } },
        { "lS", 3, { "time", "addr" } },
        { "ers", 4, { "time", "key", "val", "hash", "cktm", "to" } },
        { "erd", 4, { "time", "key", "hash", "to" } },
        { "eg", 3, { "time", "key", "err" } },
        { "es", 3, { "time", "key", "val", "err" } },
        { "ed", 3, { "time", "key", "err" } },
    };
    check_records(ex, sizeof(ex) / sizeof(ex[0]));
}

/* The backup prefix is the -s string plus "-", and a missing partner is 6 zero bytes. */
static void test_server_start_values(void **state)
{
    (void)state;
    assert_int_equal(binlog_open(g_path), 0);
    kaddr a = ipv4(0x7f000001, 19800), m1 = ipv4(0x7f000001, 19700);
    binlog_server_start(&a, "/var/kumo.tch#rcnum=10", &m1, NULL, &a, "/tmp");
    size_t n;
    uint8_t *buf = slurp(g_path, &n);
    assert_non_null(buf);
    assert_non_null(memmem(buf, n, "\xb7/var/kumo.tch#rcnum=10-", 24));
    assert_non_null(memmem(buf, n, "mgr2\xa6\0\0\0\0\0\0", 11));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes),
        cmocka_unit_test_setup_teardown(test_manager_start_is_byte_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_log_is_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_after_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_record_key_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_start_values, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
