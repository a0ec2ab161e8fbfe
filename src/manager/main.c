/* main.c - kumo-manager: options, start-up, signals and the event loop (cli.md §3, §7, §8). */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>

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
    "  -Ws <number=1>            --watch-timeout  heartbeat deadline in sec. (kumofs-c)\n"
    "  -Wn <number=2>            --watch-misses   missed heartbeats before fault, 0 = off\n"
    "  -Wr <number=4>            --watch-recover  heartbeats before auto re-attach\n"
    DAEMON_USAGE_COMMON("2");

static void on_tick(void *arg)
{
    manager_tick(arg);
}

static void on_keepalive(void *arg)
{
    manager_keepalive(arg);
}

int main(int argc, char **argv)
{
    kaddr listen_addr = {0}, partner = {0};
    bool auto_replace = false, verbose = false;
    unsigned short replace_delay = 4, retry_limit = 4, write_threads = 2, read_threads = 8;
    unsigned long keepalive_interval = 2;
    double connect_timeout = 10, clock_interval = 2, watch_timeout = 1.0;
    unsigned short watch_misses = 2, watch_recover = 4;
    const char *logfile = NULL, *binlog = NULL, *pidfile = NULL;

    /* cli.md §2, §3.  -k, -TW and -TR are accepted and have no effect. */
    const cmdline_opt opts[] = {
        { "-l", "--listen", CMDLINE_CONNECT, &listen_addr, true, MANAGER_DEFAULT_PORT, NULL },
        { "-p", "--partner", CMDLINE_CONNECT, &partner, false, MANAGER_DEFAULT_PORT, NULL },
        { "-a", "--auto-replace", CMDLINE_BOOL, &auto_replace, false, 0, NULL },
        { "-Rs", "--replace-delay", CMDLINE_USHORT, &replace_delay, false, 0, NULL },
        { "-Ws", "--watch-timeout", CMDLINE_DOUBLE, &watch_timeout, false, 0, NULL },
        { "-Wn", "--watch-misses", CMDLINE_USHORT, &watch_misses, false, 0, NULL },
        { "-Wr", "--watch-recover", CMDLINE_USHORT, &watch_recover, false, 0, NULL },
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

    char *usage = daemon_cmdline(argc, argv, opts, usage_fmt, "kumo-manager");
    if (watch_misses > 0 && !(watch_timeout >= 0.05))
        cmdline_fail(usage, "-Ws must be at least 0.05");

    /* DECISIONS.md §4: bind exactly the -l address (the original bound INADDR_ANY) */
    int fd = daemon_listen_or_fail(&listen_addr, usage);

    if (daemon_startup(logfile, verbose, pidfile, binlog) != 0) {
        free(usage);
        return 1;
    }

    struct ev_loop *loop = ev_default_loop(0);
    if (loop == NULL)
        daemon_fail("can't initialise the event loop");

    manager_config cfg = {
        .self = listen_addr,
        .partner = partner,
        .auto_replace = auto_replace,
        .replace_delay = replace_delay,
        .connect_timeout = connect_timeout,
        .connect_retry_limit = retry_limit,
        .clock_interval = clock_interval,
        .watch_timeout = watch_timeout,
        .watch_misses = watch_misses,
        .watch_recover = watch_recover,
    };
    manager *mgr = manager_new(loop, &cfg);
    manager_listen_fd(mgr, fd);

    char abuf[KADDR_STRLEN];
    log_info("start manager %s", kaddr_format(&listen_addr, abuf));
    binlog_manager_start(&listen_addr, &partner);

    daemon_run(loop, on_tick, on_keepalive, mgr);

    manager_free(mgr);
    free(usage);
    (void)keepalive_interval;
    (void)write_threads;
    (void)read_threads;
    binlog_close();
    return 0;
}
