/* test_cmdline.c - the option parser's messages and values (cli.md §1) and the daemon
 * plumbing (cli.md §7, listen sockets). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "logic/cmdline.h"
#include "logic/daemon.h"

/* An option table shaped like kumo-server's (cli.md §4). */
struct server_args {
    kaddr listen, mgr1, mgr2;
    const char *store, *tmpdir;
    unsigned short stream_port, set_retry;
    unsigned int gmin;
    unsigned long gmem, keepalive;
    double conn_timeout;
    bool verbose, mgr2_set;
};

static int run(struct server_args *a, const char *line, char *err, size_t errlen)
{
    const cmdline_opt opts[] = {
        { "-l", "--listen", CMDLINE_CONNECT, &a->listen, true, 19800, NULL },
        { "-L", "--stream-listen", CMDLINE_USHORT, &a->stream_port, false, 0, NULL },
        { "-f", "--offer-tmp", CMDLINE_STRING, &a->tmpdir, false, 0, NULL },
        { "-s", "--store", CMDLINE_STRING, &a->store, true, 0, NULL },
        { "-m", "--manager1", CMDLINE_CONNECT, &a->mgr1, true, 19700, NULL },
        { "-p", "--manager2", CMDLINE_CONNECT, &a->mgr2, false, 19700, &a->mgr2_set },
        { "-S", "--replicate-set-retry", CMDLINE_USHORT, &a->set_retry, false, 0, NULL },
        { "-gN", "--garbage-min-time", CMDLINE_UINT, &a->gmin, false, 0, NULL },
        { "-gS", "--garbage-mem-limit", CMDLINE_ULONG, &a->gmem, false, 0, NULL },
        { "-k", "--keepalive-interval", CMDLINE_ULONG, &a->keepalive, false, 0, NULL },
        { "-Ys", "--connect-timeout", CMDLINE_DOUBLE, &a->conn_timeout, false, 0, NULL },
        { "-v", "--verbose", CMDLINE_BOOL, &a->verbose, false, 0, NULL },
        { "-t", "--text", CMDLINE_LISTEN, &a->listen, false, 11411, NULL },
        { NULL, NULL, CMDLINE_BOOL, NULL, false, 0, NULL },
    };
    /* split line at spaces into argv (argv[0] = program name); static because string
     * options point into argv and are checked after we return */
    static char buf[512];
    snprintf(buf, sizeof(buf), "%s", line);
    char *argv[64];
    int argc = 0;
    argv[argc++] = "kumo-server";
    for (char *tok = strtok(buf, " "); tok != NULL; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    return cmdline_parse(argc, argv, opts, err, errlen);
}

static void defaults(struct server_args *a)
{
    memset(a, 0, sizeof(*a));
    a->stream_port = 19900;
    a->tmpdir = "/tmp";
    a->set_retry = 20;
    a->gmin = 60;
    a->gmem = 2048;
    a->keepalive = 2;
    a->conn_timeout = 10;
}

#define REQ "-l 127.0.0.1 -s db.tch -m 127.0.0.1 "

static void test_messages(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        int rc;
        const char *msg;
    } cases[] = {
        { "", CMDLINE_ERROR, "required but not set: -s, -m, -l" },
        { "-s x", CMDLINE_ERROR, "required but not set: -m, -l" },
        { "--store x --listen 127.0.0.1", CMDLINE_ERROR, "required but not set: -m" },
        { REQ, CMDLINE_OK, NULL },
        { REQ "extra", CMDLINE_ERROR, "unexpected argument: extra" },
        { REQ "--store=x", CMDLINE_ERROR, "unexpected argument: --store=x" },
        { REQ "-vS", CMDLINE_ERROR, "unexpected argument: -vS" },
        { REQ "--", CMDLINE_ERROR, "unexpected argument: --" },
        { "-s", CMDLINE_ERROR, "argument error `-s': string is required." },
        { REQ "--offer-tmp", CMDLINE_ERROR, "argument error `--offer-tmp': string is required." },
        { REQ "-S", CMDLINE_ERROR, "argument error `-S': numeric value is required." },
        { REQ "-Ys", CMDLINE_ERROR, "argument error `-Ys': numeric value is required." },
        { REQ "-Ys abc", CMDLINE_ERROR, "argument error `-Ys': double is expected: abc" },
        { REQ "-Ys inf", CMDLINE_ERROR, "argument error `-Ys': double is expected: inf" },
        { REQ "-S 70000", CMDLINE_ERROR, "argument error `-S': unsigned short is expected: 70000" },
        { REQ "-S 65536", CMDLINE_ERROR, "argument error `-S': unsigned short is expected: 65536" },
        { REQ "-S 12x", CMDLINE_ERROR, "argument error `-S': unsigned short is expected: 12x" },
        { REQ "-gN 4294967296", CMDLINE_ERROR,
          "argument error `-gN': unsigned int is expected: 4294967296" },
        { REQ "-k 1.5", CMDLINE_ERROR, "argument error `-k': unsigned long is expected: 1.5" },
        { REQ "-gS 18446744073709551616", CMDLINE_ERROR,
          "argument error `-gS': unsigned long is expected: 18446744073709551616" },
        { "-l", CMDLINE_ERROR, "argument error `-l': network address is required." },
        { REQ "-t", CMDLINE_ERROR, "argument error `-t': network address is required." },
        { "-l 127.0.0.1:abc", CMDLINE_ERROR, "argument error `-l': invalid port number: abc" },
        { "--listen 127.0.0.1:99999", CMDLINE_ERROR,
          "argument error `--listen': invalid port number: 99999" },
        { REQ "-p nosuchhost.invalid", CMDLINE_ERROR,
          "argument error `-p': can't resolve host name (Name or service not known): nosuchhost.invalid" },
        /* the error of the first bad option wins over missing required options */
        { "-S x", CMDLINE_ERROR, "argument error `-S': unsigned short is expected: x" },
        { REQ "-h", CMDLINE_HELP, NULL },
        { "--help", CMDLINE_HELP, NULL },
        { "-S x --help", CMDLINE_HELP, NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct server_args a;
        char err[256] = "";
        defaults(&a);
        int rc = run(&a, cases[i].line, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("case %zu \"%s\": rc %d, want %d (err: %s)", i, cases[i].line, rc,
                     cases[i].rc, err);
        if (cases[i].msg != NULL && strcmp(err, cases[i].msg) != 0)
            fail_msg("case %zu \"%s\": got \"%s\", want \"%s\"", i, cases[i].line, err,
                     cases[i].msg);
    }
}

static void test_values(void **state)
{
    (void)state;
    struct server_args a;
    char err[256] = "";
    defaults(&a);
    assert_int_equal(run(&a, REQ "-L 19901 -f /var/tmp -S 0 -gN 120 -gS 4096 -Ys 1.5 "
                             "-p 127.0.0.2:19701 -s second.tch", err, sizeof(err)), CMDLINE_OK);
    char buf[KADDR_STRLEN];
    assert_string_equal(kaddr_format(&a.listen, buf), "127.0.0.1:19800");
    assert_string_equal(kaddr_format(&a.mgr1, buf), "127.0.0.1:19700");
    assert_string_equal(kaddr_format(&a.mgr2, buf), "127.0.0.2:19701");
    assert_true(a.mgr2_set);
    assert_int_equal(a.stream_port, 19901);
    assert_string_equal(a.tmpdir, "/var/tmp");
    assert_string_equal(a.store, "second.tch");   /* last value wins */
    assert_int_equal(a.set_retry, 0);
    assert_int_equal(a.gmin, 120);
    assert_int_equal(a.gmem, 4096);
    assert_true(a.conn_timeout == 1.5);
    assert_false(a.verbose);

    /* defaults are kept when unset */
    defaults(&a);
    assert_int_equal(run(&a, REQ, err, sizeof(err)), CMDLINE_OK);
    assert_int_equal(a.stream_port, 19900);
    assert_int_equal(a.set_retry, 20);
    assert_false(a.mgr2_set);
    assert_true(a.conn_timeout == 10);

    /* the value is the next token even if it starts with '-'; negatives wrap like C++ */
    defaults(&a);
    assert_int_equal(run(&a, REQ "-S -1 -gN -2 -f -v", err, sizeof(err)), CMDLINE_OK);
    assert_int_equal(a.set_retry, 65535);
    assert_int_equal(a.gmin, 4294967294u);
    assert_string_equal(a.tmpdir, "-v");
    assert_false(a.verbose);
    defaults(&a);
    assert_int_equal(run(&a, REQ "-S 65535 -Ys -2.5e1", err, sizeof(err)), CMDLINE_OK);
    assert_int_equal(a.set_retry, 65535);
    assert_true(a.conn_timeout == -25.0);
}

static void test_bool(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        int rc;
        bool verbose;
    } cases[] = {
        { REQ "-v", CMDLINE_OK, true },
        { REQ "--verbose", CMDLINE_OK, true },
        { REQ "-v true", CMDLINE_OK, true },
        { REQ "-v yes", CMDLINE_OK, true },
        { REQ "-v on", CMDLINE_OK, true },
        { REQ "-v false", CMDLINE_OK, false },
        { REQ "-v no", CMDLINE_OK, false },
        { REQ "-v off", CMDLINE_OK, false },
        { REQ "-v -S 3", CMDLINE_OK, true },       /* not consumed: next option parsed */
        { REQ "-v maybe", CMDLINE_ERROR, true },   /* not consumed → unexpected argument */
        { REQ "-v off -v", CMDLINE_OK, true },     /* last wins */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct server_args a;
        char err[256] = "";
        defaults(&a);
        int rc = run(&a, cases[i].line, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("case %zu \"%s\": rc %d (err: %s)", i, cases[i].line, rc, err);
        if (rc == CMDLINE_OK && a.verbose != cases[i].verbose)
            fail_msg("case %zu \"%s\": verbose %d", i, cases[i].line, a.verbose);
        if (rc == CMDLINE_ERROR)
            assert_string_equal(err, "unexpected argument: maybe");
    }
}

static void test_fail_exits(void **state)
{
    (void)state;
    int out[2], errp[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(errp), 0);
    fflush(NULL);   /* the child's exit() must not repeat our buffered output */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(errp[1], STDERR_FILENO);
        cmdline_fail("usage: x\n", "bind failed");
    }
    close(out[1]);
    close(errp[1]);
    char o[128] = "", e[128] = "";
    assert_true(read(out[0], o, sizeof(o) - 1) > 0);
    assert_true(read(errp[0], e, sizeof(e) - 1) > 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_string_equal(o, "usage: x\n");
    assert_string_equal(e, "error: bind failed\n");
    close(out[0]);
    close(errp[0]);
}

static void test_listen_tcp(void **state)
{
    (void)state;
    kaddr a;
    char err[64] = "";
    kaddr_set_ipv4(&a, 0x7f000001, 0);
    int fd = daemon_listen_tcp(&a, err, sizeof(err));
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);

    /* bound to exactly 127.0.0.1 (DECISIONS.md §4) */
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    assert_int_equal(ntohl(sin.sin_addr.s_addr), 0x7f000001);
    uint16_t port = ntohs(sin.sin_port);
    assert_true(port != 0);

    /* the same port again: bind failed */
    kaddr_set_ipv4(&a, 0x7f000001, port);
    assert_int_equal(daemon_listen_tcp(&a, err, sizeof(err)), -1);
    assert_string_equal(err, "bind failed");

    /* accept a connection and set it up */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
    int s = -1;
    for (int i = 0; i < 100 && s < 0; i++) {
        s = accept(fd, NULL, NULL);
        if (s < 0)
            usleep(10000);
    }
    assert_true(s >= 0);
    assert_int_equal(daemon_socket_setup(s), 0);
    assert_true(fcntl(s, F_GETFL) & O_NONBLOCK);
    assert_int_equal(daemon_socket_setup(-1), -1);
    close(s);
    close(c);
    close(fd);
}

/* Run daemon_start in a forked child; the grandchild then reports ready (or fails with
 * fail_msg) and exits.  Checks the caller's exit status against want_status and returns
 * what the caller and the daemon wrote to stderr. */
static void run_daemon(const char *pidfile, const char *fail_msg, int want_status,
                       char *errbuf, size_t errlen)
{
    int errp[2];
    assert_int_equal(pipe(errp), 0);
    fflush(NULL);   /* the child's exit() must not repeat our buffered output */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(errp[0]);
        dup2(errp[1], STDERR_FILENO);
        close(errp[1]);
        daemon_start(pidfile, false);
        if (fail_msg != NULL)
            daemon_fail("%s", fail_msg);
        daemon_ready();
        _exit(0);
    }
    close(errp[1]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    /* the caller of -d waits for the daemon's start-up report and exits with it */
    assert_int_equal(WEXITSTATUS(status), want_status);
    /* read until every copy of the pipe (grandchild included) is closed */
    size_t off = 0;
    ssize_t n;
    while (off + 1 < errlen && (n = read(errp[0], errbuf + off, errlen - 1 - off)) > 0)
        off += (size_t)n;
    errbuf[off] = '\0';
    close(errp[0]);
}

static void test_daemon_start(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_cmdline.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char pidfile[128];
    snprintf(pidfile, sizeof(pidfile), "%s/kumo.pid", dir);

    char errbuf[256];
    run_daemon(pidfile, NULL, 0, errbuf, sizeof(errbuf));
    assert_string_equal(errbuf, "");
    FILE *f = fopen(pidfile, "r");
    assert_non_null(f);
    char buf[32] = "";
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    assert_true(n > 0);
    assert_null(strchr(buf, '\n'));   /* no trailing newline (cli.md §7) */
    assert_true(atoi(buf) > 1);

    char bad[160];
    snprintf(bad, sizeof(bad), "%s/missing/kumo.pid", dir);
    run_daemon(bad, NULL, 1, errbuf, sizeof(errbuf));
    assert_string_equal(errbuf, "can't open pid file: No such file or directory\n");

    /* a start-up failure after the fork reaches the caller's stderr, and the pid file
     * it wrote is gone again */
    unlink(pidfile);
    run_daemon(pidfile, "store: no such file", 1, errbuf, sizeof(errbuf));
    assert_string_equal(errbuf, "error: store: no such file\n");
    assert_int_equal(access(pidfile, F_OK), -1);

    unlink(pidfile);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_fail_exits),
        cmocka_unit_test(test_listen_tcp),
        cmocka_unit_test(test_daemon_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
