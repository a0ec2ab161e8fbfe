/* daemon.c - process plumbing shared by the daemons: options, start-up, pid file, listen
 * sockets, signals and the periodic timers. */
#include "logic/daemon.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logic/binlog.h"
#include "logic/log.h"
#include "logic/xmalloc.h"

/* The start-up report channel of -d: the grandchild writes one 0 byte when it is
 * ready, or the text of its start-up error; the original process waits for it so that
 * its exit status and stderr tell the truth (issue: a server whose database could not
 * be opened used to exit 0 with the message lost on a closed stderr). */
static int ready_fd = -1;
static char *written_pidfile;    /* removed again if start-up fails */

static _Noreturn void fail_report(const char *line);

/* The first process of -d: wait for the grandchild's report, then exit with it. */
static _Noreturn void wait_for_report(int fd)
{
    char buf[512];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof(buf) - 1)
            break;
    }
    if (len >= 1 && buf[0] == '\0')
        _exit(0);
    buf[len] = '\0';
    if (len == 0)
        fprintf(stderr, "error: the daemon exited during start-up\n");
    else
        fprintf(stderr, "%s\n", buf);
    _exit(1);
}

void daemon_start(const char *pidfile, bool redirect_stdio)
{
    /* cli.md §7: classic double fork; no chdir, no umask change.  The caller of -d
     * exits 0 once the daemon reported ready (daemon_ready), 1 if start-up failed. */
    int p[2];
    if (pipe(p) != 0) {
        fprintf(stderr, "error: pipe failed: %s\n", strerror(errno));
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork failed: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(p[1]);
        wait_for_report(p[0]);
    }
    close(p[0]);
    ready_fd = p[1];
    fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
    setsid();
    pid = fork();
    if (pid < 0)
        daemon_fail("fork failed: %s", strerror(errno));
    if (pid > 0)
        _exit(0);

    if (pidfile != NULL) {
        FILE *f = fopen(pidfile, "w");
        if (f == NULL) {
            char line[300];
            snprintf(line, sizeof(line), "can't open pid file: %s", strerror(errno));
            fail_report(line);   /* cli.md §7: this text, exit 1 */
        }
        /* decimal, no trailing newline (observed on the original) */
        fprintf(f, "%d", (int)getpid());
        fclose(f);
        written_pidfile = xstrdup(pidfile);
    }

    if (redirect_stdio) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, STDIN_FILENO);
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            if (fd > STDERR_FILENO)
                close(fd);
        }
    }
}

void daemon_ready(void)
{
    if (ready_fd < 0)
        return;
    static const char ok = '\0';
    while (write(ready_fd, &ok, 1) < 0 && errno == EINTR)
        ;
    close(ready_fd);
    ready_fd = -1;
    free(written_pidfile);       /* from now on the pid file stays (cli.md §7) */
    written_pidfile = NULL;
}

/* Report a start-up failure (line: the whole text, no newline) and exit 1. */
static _Noreturn void fail_report(const char *line)
{
    if (log_has_file())
        log_error("%s", line);
    size_t n = strlen(line);
    if (ready_fd < 0 || write(ready_fd, line, n) != (ssize_t)n)
        fprintf(stderr, "%s\n", line);
    if (written_pidfile != NULL)
        unlink(written_pidfile);
    exit(1);
}

void daemon_fail(const char *fmt, ...)
{
    char line[480] = "error: ";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + 7, sizeof(line) - 7, fmt, ap);
    va_end(ap);
    fail_report(line);
}

int daemon_listen_tcp(const kaddr *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t slen = kaddr_to_sockaddr(addr, &ss);
    if (slen == 0) {
        /* an unset address cannot be bound; report it like the original's bind error */
        snprintf(err, errlen, "bind failed");
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket failed");
        return -1;
    }
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0) {
        snprintf(err, errlen, "setsockopt failed");
        close(fd);
        return -1;
    }
    /* DECISIONS.md §4: bind exactly the address we were told, never 0.0.0.0 on our own. */
    if (bind(fd, (struct sockaddr *)&ss, slen) != 0) {
        snprintf(err, errlen, "bind failed");
        close(fd);
        return -1;
    }
    if (listen(fd, 1024) != 0) {   /* cli.md §6: backlog 1024 */
        snprintf(err, errlen, "listen failed");
        close(fd);
        return -1;
    }
    return fd;
}

int daemon_socket_setup(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -1;
    int on = 1;
    /* request/response RPC: small messages must not wait for Nagle */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0)
        return -1;
    return 0;
}

char *daemon_cmdline(int argc, char **argv, const cmdline_opt *opts,
                     const char *usage_fmt, const char *fallback)
{
    const char *prog = argc > 0 && argv[0] != NULL ? argv[0] : fallback;
    size_t ulen = strlen(usage_fmt) + strlen(prog) + 1;
    char *usage = xmalloc(ulen);
    snprintf(usage, ulen, usage_fmt, prog);

    char err[256];
    int rc = cmdline_parse(argc, argv, opts, err, sizeof err);
    if (rc == CMDLINE_HELP) {
        /* our decision (DECISIONS.md §2): --help prints usage and succeeds */
        fputs(usage, stdout);
        free(usage);
        exit(0);
    }
    if (rc != CMDLINE_OK)
        cmdline_fail(usage, err);
    return usage;
}

int daemon_listen_or_fail(const kaddr *addr, const char *usage)
{
    char err[128];
    int fd = daemon_listen_tcp(addr, err, sizeof err);
    if (fd < 0)
        cmdline_fail(usage, err);
    return fd;
}

int daemon_startup(const char *log_path, bool verbose, const char *pidfile,
                   const char *binlog_path)
{
    if (log_open(log_path, verbose, log_path == NULL && pidfile == NULL) != 0) {
        fprintf(stderr, "error: can't open log file %s\n", log_path);
        return -1;
    }
    if (pidfile != NULL)
        daemon_start(pidfile, log_path != NULL);
    /* cli.md §5 start-up order: daemonize, then the binary log */
    if (binlog_path != NULL && binlog_open(binlog_path) != 0)
        daemon_fail("can't open binary log %s: %s", binlog_path, strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* The watchers of daemon_run; data points back at it so the callbacks find tick/arg. */
typedef struct run_state {
    daemon_timer_fn tick, keepalive;
    void *arg;
} run_state;

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    log_info("end");
    ev_break(loop, EVBREAK_ALL);
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    log_info("SIGHUP");
    /* cli.md §8: the binary log is reopened for logrotate (and our text log too) */
    if (binlog_reopen() < 0)
        log_error("can't reopen the binary log: %s", strerror(errno));
    log_reopen();
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    run_state *rs = w->data;
    rs->tick(rs->arg);
}

static void on_keepalive(struct ev_loop *loop, ev_timer *w, int revents)
{
    run_state *rs = w->data;
    rs->keepalive(rs->arg);
}

void daemon_run(struct ev_loop *loop, daemon_timer_fn tick, daemon_timer_fn keepalive,
                void *arg)
{
    run_state rs = { .tick = tick, .keepalive = keepalive, .arg = arg };
    daemon_ready();              /* everything opened: -d's first process may exit 0 */

    ev_signal sigint, sigterm, sighup;
    ev_signal_init(&sigint, on_stop, SIGINT);
    ev_signal_init(&sigterm, on_stop, SIGTERM);
    ev_signal_init(&sighup, on_hup, SIGHUP);
    ev_signal_start(loop, &sigint);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sighup);

    ev_timer tick_w, keepalive_w;
    ev_timer_init(&tick_w, on_tick, 0.5, 0.5);
    ev_timer_init(&keepalive_w, on_keepalive, 2.0, 2.0);
    tick_w.data = keepalive_w.data = &rs;
    ev_timer_start(loop, &tick_w);
    ev_timer_start(loop, &keepalive_w);

    ev_run(loop, 0);

    ev_timer_stop(loop, &tick_w);
    ev_timer_stop(loop, &keepalive_w);
    ev_signal_stop(loop, &sigint);
    ev_signal_stop(loop, &sigterm);
    ev_signal_stop(loop, &sighup);
}
