/* main.c - kumo-manager: options, start-up, signals and the event loop (cli.md §3, §7, §8). */
#include <ev.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logic/addr.h"
#include "logic/cmdline.h"
#include "logic/daemon.h"
#include "logic/binlog.h"
#include "logic/log.h"
#include "manager/manager.h"

#define MANAGER_DEFAULT_PORT 19700

/* reference-outputs.md §3, verbatim apart from the program name. */
static const char usage_fmt[] =
    "usage: %s -l <addr[:port=19700]> -p <addr[:port=19700]>\n"
    "\n"
    "  -p  <addr[:port=19700]>   --partner        master-slave replication partner\n"
    "  -a                        --auto-replace   enable auto replacing\n"
    "  -Rs <number=4>            --replace-delay  delay time of auto replacing in sec.\n"
    "  -k  <number=2>    --keepalive-interval     keepalive interval in seconds\n"
    "  -Ys <number=10>   --connect-timeout        connect timeout time in seconds\n"
    "  -Yn <number=4>    --connect-retry-limit    connect retry limit\n"
    "  -Ci <number=2>    --clock-interval         clock interval in seconds\n"
    "  -TW <number=2>    --write-threads          number of threads for asynchronous writing\n"
    "  -TR <number=8>    --read-threads           number of threads for asynchronous reading\n"
    "  -o  <path.log>    --log                    output logs to the file\n"
    "  -g  <path.mpac>   --binary-log             enable binary log\n"
    "  -v                --verbose\n"
    "  -d  <path.pid>    --daemon\n"
    "\n"
    "  v0.4.13 revision \n"
    "\n";

static manager *the_manager;

static void on_signal_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    log_info("end");
    ev_break(loop, EVBREAK_ALL);
}

static void on_signal_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    log_info("SIGHUP");
    binlog_reopen();
    log_reopen();
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    manager_tick(the_manager);
}

static void on_keepalive(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    manager_keepalive(the_manager);
}

int main(int argc, char **argv)
{
    const char *prog = argc > 0 ? argv[0] : "kumo-manager";
    size_t ulen = sizeof usage_fmt + strlen(prog);
    char *usage = malloc(ulen);
    if (usage == NULL)
        return 1;
    snprintf(usage, ulen, usage_fmt, prog);

    kaddr listen_addr = {0}, partner = {0};
    bool auto_replace = false, verbose = false;
    unsigned short replace_delay = 4, retry_limit = 4, write_threads = 2, read_threads = 8;
    unsigned long keepalive_interval = 2;
    double connect_timeout = 10, clock_interval = 2;
    const char *logfile = NULL, *binlog = NULL, *pidfile = NULL;

    /* cli.md §2, §3.  -k, -TW and -TR are accepted and have no effect. */
    const cmdline_opt opts[] = {
        { "-l", "--listen", CMDLINE_CONNECT, &listen_addr, true, MANAGER_DEFAULT_PORT, NULL },
        { "-p", "--partner", CMDLINE_CONNECT, &partner, false, MANAGER_DEFAULT_PORT, NULL },
        { "-a", "--auto-replace", CMDLINE_BOOL, &auto_replace, false, 0, NULL },
        { "-Rs", "--replace-delay", CMDLINE_USHORT, &replace_delay, false, 0, NULL },
        { "-k", "--keepalive-interval", CMDLINE_ULONG, &keepalive_interval, false, 0, NULL },
        { "-Ys", "--connect-timeout", CMDLINE_DOUBLE, &connect_timeout, false, 0, NULL },
        { "-Yn", "--connect-retry-limit", CMDLINE_USHORT, &retry_limit, false, 0, NULL },
        { "-Ci", "--clock-interval", CMDLINE_DOUBLE, &clock_interval, false, 0, NULL },
        { "-TW", "--write-threads", CMDLINE_USHORT, &write_threads, false, 0, NULL },
        { "-TR", "--read-threads", CMDLINE_USHORT, &read_threads, false, 0, NULL },
        { "-o", "--log", CMDLINE_STRING, &logfile, false, 0, NULL },
        { "-g", "--binary-log", CMDLINE_STRING, &binlog, false, 0, NULL },
        { "-v", "--verbose", CMDLINE_BOOL, &verbose, false, 0, NULL },
        { "-d", "--daemon", CMDLINE_STRING, &pidfile, false, 0, NULL },
        { NULL, NULL, 0, NULL, false, 0, NULL },
    };

    char err[256];
    int rc = cmdline_parse(argc, argv, opts, err, sizeof err);
    if (rc == CMDLINE_HELP) {
        /* our decision (DECISIONS.md §2): --help prints usage and succeeds */
        fputs(usage, stdout);
        free(usage);
        return 0;
    }
    if (rc != CMDLINE_OK)
        cmdline_fail(usage, err);

    /* DECISIONS.md §4: bind exactly the -l address (the original bound INADDR_ANY) */
    int fd = daemon_listen_tcp(&listen_addr, err, sizeof err);
    if (fd < 0)
        cmdline_fail(usage, err);

    if (log_open(logfile, verbose, logfile == NULL && pidfile == NULL) != 0) {
        fprintf(stderr, "error: can't open log file %s\n", logfile);
        return 1;
    }
    if (pidfile != NULL)
        daemon_start(pidfile, logfile != NULL);
    if (binlog != NULL && binlog_open(binlog) != 0) {
        fprintf(stderr, "error: can't open binary log %s: %s\n", binlog, strerror(errno));
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(0);
    if (loop == NULL) {
        fprintf(stderr, "error: can't initialise the event loop\n");
        return 1;
    }

    manager_config cfg = {
        .self = listen_addr,
        .partner = partner,
        .auto_replace = auto_replace,
        .replace_delay = replace_delay,
        .connect_timeout = connect_timeout,
        .connect_retry_limit = retry_limit,
        .clock_interval = clock_interval,
    };
    the_manager = manager_new(loop, &cfg);
    manager_listen_fd(the_manager, fd);

    char abuf[KADDR_STRLEN];
    log_info("start manager %s", kaddr_format(&listen_addr, abuf));
    binlog_manager_start(&listen_addr, &partner);

    ev_signal sigint, sigterm, sighup;
    ev_signal_init(&sigint, on_signal_stop, SIGINT);
    ev_signal_init(&sigterm, on_signal_stop, SIGTERM);
    ev_signal_init(&sighup, on_signal_hup, SIGHUP);
    ev_signal_start(loop, &sigint);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sighup);

    /* algorithms.md §1: the 0.5 s tick and the fixed 2 s keepalive */
    ev_timer tick, keepalive;
    ev_timer_init(&tick, on_tick, 0.5, 0.5);
    ev_timer_init(&keepalive, on_keepalive, 2.0, 2.0);
    ev_timer_start(loop, &tick);
    ev_timer_start(loop, &keepalive);

    ev_run(loop, 0);

    ev_timer_stop(loop, &tick);
    ev_timer_stop(loop, &keepalive);
    ev_signal_stop(loop, &sigint);
    ev_signal_stop(loop, &sigterm);
    ev_signal_stop(loop, &sighup);
    manager_free(the_manager);
    the_manager = NULL;
    free(usage);
    (void)keepalive_interval;
    (void)write_threads;
    (void)read_threads;
    binlog_close();
    return 0;
}
