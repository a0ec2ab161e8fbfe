/* test_addr.c - address dumps, ordering, sockaddr conversion and cli.md §1.1 parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "logic/addr.h"

static void test_dump(void **state)
{
    (void)state;
    kaddr a;
    /* wire.md §7.1: 127.0.0.1:19801 → 4d 59 7f 00 00 01 */
    static const uint8_t want[] = { 0x4d, 0x59, 0x7f, 0x00, 0x00, 0x01 };
    kaddr_set_ipv4(&a, 0x7f000001, 19801);
    assert_int_equal(a.len, 6);
    assert_memory_equal(a.raw, want, 6);
    assert_int_equal(kaddr_port(&a), 19801);
    assert_false(kaddr_is_null(&a));

    static const uint8_t want2[] = { 0x4d, 0x58, 0xc0, 0xa8, 0x00, 0x65 };
    kaddr_set_ipv4(&a, 0xc0a80065, 19800);
    assert_memory_equal(a.raw, want2, 6);

    static const struct { size_t len; int rc; } t[] = {
        { 0, -1 }, { 5, -1 }, { 6, 0 }, { 7, -1 }, { 21, -1 }, { 22, 0 }, { 23, -1 },
    };
    uint8_t buf[32];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i + 1);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        kaddr b;
        assert_int_equal(kaddr_from_dump(&b, buf, t[i].len), t[i].rc);
        if (t[i].rc == 0) {
            assert_int_equal(b.len, t[i].len);
            assert_memory_equal(b.raw, buf, t[i].len);
            assert_int_equal(kaddr_port(&b), 0x0102);
        }
    }

    kaddr z;
    memset(&z, 0, sizeof(z));
    assert_true(kaddr_is_null(&z));
    assert_int_equal(kaddr_port(&z), 0);
    kaddr_set_ipv4(&a, 0x7f000001, 0);
    assert_true(kaddr_is_null(&a));           /* port 0: not connectable */
}

static void test_order(void **state)
{
    (void)state;
    kaddr a, b, c, d;
    kaddr_set_ipv4(&a, 0x7f000001, 19801);
    kaddr_set_ipv4(&b, 0x7f000001, 19802);
    kaddr_set_ipv4(&c, 0x01000001, 19802);    /* lower IP, higher port than a */
    uint8_t v6[22] = { 0 };
    kaddr_from_dump(&d, v6, 22);

    assert_true(kaddr_cmp(&a, &b) < 0);
    assert_true(kaddr_cmp(&b, &a) > 0);
    assert_true(kaddr_cmp(&a, &c) < 0);       /* port bytes compare first */
    assert_true(kaddr_cmp(&c, &b) < 0);
    assert_true(kaddr_cmp(&b, &d) < 0);       /* shorter dumps first */
    assert_int_equal(kaddr_cmp(&a, &a), 0);
    assert_true(kaddr_eq(&a, &a));
    assert_false(kaddr_eq(&a, &b));
    kaddr a2 = a;
    assert_true(kaddr_eq(&a, &a2));
}

static void test_format(void **state)
{
    (void)state;
    char buf[KADDR_STRLEN];
    kaddr a;
    kaddr_set_ipv4(&a, 0x7f000001, 19801);
    assert_string_equal(kaddr_format(&a, buf), "127.0.0.1:19801");
    kaddr_set_ipv4(&a, 0xc0a80065, 0);
    assert_string_equal(kaddr_format(&a, buf), "192.168.0.101:0");
    memset(&a, 0, sizeof(a));
    assert_string_equal(kaddr_format(&a, buf), "0.0.0.0:0");

    struct sockaddr_in6 s6;
    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    s6.sin6_port = htons(19801);
    s6.sin6_addr = in6addr_loopback;
    assert_int_equal(kaddr_from_sockaddr(&a, (struct sockaddr *)&s6), 0);
    assert_int_equal(a.len, 22);
    assert_string_equal(kaddr_format(&a, buf), "[::1]:19801");
}

static void test_sockaddr(void **state)
{
    (void)state;
    kaddr a, b;
    struct sockaddr_storage ss;
    kaddr_set_ipv4(&a, 0x7f000001, 19801);
    assert_int_equal(kaddr_to_sockaddr(&a, &ss), sizeof(struct sockaddr_in));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 19801);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);
    assert_int_equal(kaddr_from_sockaddr(&b, (struct sockaddr *)&ss), 0);
    assert_true(kaddr_eq(&a, &b));

    struct sockaddr_in6 s6;
    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    s6.sin6_port = htons(7);
    s6.sin6_addr = in6addr_loopback;
    s6.sin6_scope_id = 3;
    assert_int_equal(kaddr_from_sockaddr(&a, (struct sockaddr *)&s6), 0);
    assert_int_equal(kaddr_to_sockaddr(&a, &ss), sizeof(struct sockaddr_in6));
    assert_memory_equal(&ss, &s6, sizeof(s6));

    memset(&a, 0, sizeof(a));
    assert_int_equal(kaddr_to_sockaddr(&a, &ss), 0);
    struct sockaddr un = { .sa_family = AF_UNIX };
    assert_int_equal(kaddr_from_sockaddr(&a, &un), -1);
}

struct parse_case {
    const char *in;
    uint16_t defport;
    int rc;
    const char *want;       /* formatted address, or the error text */
};

static void run_cases(int (*parse)(kaddr *, const char *, uint16_t, char *, size_t),
                      const struct parse_case *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        kaddr a;
        char err[256] = "", buf[KADDR_STRLEN];
        int rc = parse(&a, t[i].in, t[i].defport, err, sizeof(err));
        if (rc != t[i].rc)
            fail_msg("'%s': rc %d (err '%s')", t[i].in, rc, err);
        if (rc == 0)
            assert_string_equal(kaddr_format(&a, buf), t[i].want);
        else if (strncmp(err, t[i].want, strlen(t[i].want)) != 0)
            fail_msg("'%s': error '%s', want prefix '%s'", t[i].in, err, t[i].want);
    }
}

static void test_parse_connect(void **state)
{
    (void)state;
    static const struct parse_case t[] = {
        { "127.0.0.1:19801", 19700, 0, "127.0.0.1:19801" },
        { "127.0.0.1", 19700, 0, "127.0.0.1:19700" },
        { "localhost:19800", 19700, 0, "127.0.0.1:19800" },
        { "localhost", 19800, 0, "127.0.0.1:19800" },
        { "127.0.0.1:0", 19700, 0, "127.0.0.1:0" },                 /* port 0 accepted */
        { "127.0.0.1:65535", 19700, 0, "127.0.0.1:65535" },
        { "127.0.0.1:65536", 19700, -1, "invalid port number: 65536" },
        { "127.0.0.1:abc", 19700, -1, "invalid port number: abc" },
        { "127.0.0.1:", 19700, -1, "invalid port number: " },
        { "127.0.0.1:-1", 19700, -1, "invalid port number: -1" },
        { "nosuchhost.invalid", 19700, -1, "can't resolve host name (" },
        { "nosuchhost.invalid:1", 19700, -1, "can't resolve host name (" },
    };
    run_cases(kaddr_parse_connect, t, sizeof(t) / sizeof(t[0]));

    /* the failing host is named after the reason */
    kaddr a;
    char err[256];
    assert_int_equal(kaddr_parse_connect(&a, "nosuchhost.invalid", 1, err, sizeof(err)), -1);
    const char *tail = ": nosuchhost.invalid";
    assert_string_equal(err + strlen(err) - strlen(tail), tail);
}

static void test_parse_listen(void **state)
{
    (void)state;
    static const struct parse_case t[] = {
        { "19900", 19800, 0, "0.0.0.0:19900" },
        { ":19900", 19800, 0, "0.0.0.0:19900" },
        { "127.0.0.1:19900", 19800, 0, "127.0.0.1:19900" },
        { "127.0.0.1", 19800, 0, "127.0.0.1:19800" },
        { "localhost", 11211, 0, "127.0.0.1:11211" },
        { "0", 19800, 0, "0.0.0.0:0" },
        { ":abc", 19800, -1, "invalid port number: abc" },
        { "127.0.0.1:99999", 19800, -1, "invalid port number: 99999" },
        { "::1:19900", 19800, -1, "invalid address" },
        { "[::1]:19900", 19800, -1, "invalid address" },
        { "nosuchhost.invalid", 19800, -1, "can't resolve host name (" },
    };
    run_cases(kaddr_parse_listen, t, sizeof(t) / sizeof(t[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_sockaddr),
        cmocka_unit_test(test_parse_connect),
        cmocka_unit_test(test_parse_listen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
