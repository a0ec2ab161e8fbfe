/* main.c - kumo-server: options (cli.md §4), start-up, signals and the event loop. */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>

#include "logic/cmdline.h"
#include "logic/daemon.h"
#include "logic/binlog.h"
#include "logic/log.h"
#include "server/server.h"
#include "server/store.h"

/* Usage text verbatim from reference-outputs.md §3 (the missing '=' in the first line's
 * "-p <addr[:port19700]>" is the original's). */
static const char usage_fmt[] =
    "usage: %s -m <addr[:port=19700]> -p <addr[:port19700]> -l <addr[:port=19800]> -s <path.tch>\n"
    "\n"
    "  -l  <addr[:port=19800]>   --listen         listen address\n"
    "  -L  <port=19900>          --stream-listen  listen port for replacing stream\n"
    "  -f  <dir=/tmp>            --offer-tmp      path to temporary directory for replacing\n"
    "  -s  <path.tch>            --store          path to database\n"
    "  -m  <addr[:port=19700]>   --manager1       address of manager 1\n"
    "  -p  <addr[:port=19700]>   --manager2       address of manager 2\n"
    "  -S  <number=20>        --replicate-set-retry    replicate set retry limit\n"
    "  -D  <number=20>        --replicate-delete-retry replicate delete retry limit\n"
    "  -M  <number=0>        --replace-memory-limit   Memory map limit size\n"
    "  -gN <seconds=60>       --garbage-min-time       minimum time to maintenance deleted key\n"
    "  -gX <seconds=3600>     --garbage-max-time       maximum time to maintenance deleted key\n"
    "  -gS <kilobytes=2048>   --garbage-mem-limit      maximum memory usage to memory deleted key\n"
    DAEMON_USAGE_COMMON("8");

/* Parsed command line with the defaults of cli.md §2 and §4. */
typedef struct options {
    kaddr listen, mgr1, mgr2;
    unsigned short stream_port;     /* -L */
    const char *tmpdir;             /* -f */
    const char *store;              /* -s */
    unsigned short set_retry, delete_retry, mem_limit;   /* -S -D -M */
    unsigned int gc_min, gc_max;    /* -gN -gX */
    unsigned long gc_mem;           /* -gS KiB */
    unsigned long keepalive;        /* -k: accepted, no effect */
    double connect_timeout, clock_interval;   /* -Ys -Ci */
    unsigned short retry_limit, write_threads, read_threads;   /* -Yn -TW -TR */
    const char *log_path, *binlog_path, *pidfile;   /* -o -g -d */
    bool verbose;
} options;

static void on_tick(void *arg)
{
    server_tick(arg);
}

static void on_keepalive(void *arg)
{
    (void)arg;   /* server_tick sends the KeepAlives every 0.5 s (the manager lease) */
}

int main(int argc, char **argv)
{
    options o = {
        .stream_port = 19900, .tmpdir = "/tmp",
        .set_retry = 20, .delete_retry = 20, .mem_limit = 0,
        .gc_min = 60, .gc_max = 3600, .gc_mem = 2048,
        .keepalive = 2, .connect_timeout = 10, .clock_interval = 8,
        .retry_limit = 4, .write_threads = 2, .read_threads = 8,
    };
    const cmdline_opt opts[] = {
        { "-l", "--listen", CMDLINE_CONNECT, &o.listen, true, 19800, NULL },
        { "-L", "--stream-listen", CMDLINE_USHORT, &o.stream_port, false, 0, NULL },
        { "-f", "--offer-tmp", CMDLINE_STRING, &o.tmpdir, false, 0, NULL },
        { "-s", "--store", CMDLINE_STRING, &o.store, true, 0, NULL },
        { "-m", "--manager1", CMDLINE_CONNECT, &o.mgr1, true, 19700, NULL },
        { "-p", "--manager2", CMDLINE_CONNECT, &o.mgr2, false, 19700, NULL },
        { "-S", "--replicate-set-retry", CMDLINE_USHORT, &o.set_retry, false, 0, NULL },
        { "-D", "--replicate-delete-retry", CMDLINE_USHORT, &o.delete_retry, false, 0, NULL },
        { "-M", "--replace-memory-limit", CMDLINE_USHORT, &o.mem_limit, false, 0, NULL },
        { "-gN", "--garbage-min-time", CMDLINE_UINT, &o.gc_min, false, 0, NULL },
        { "-gX", "--garbage-max-time", CMDLINE_UINT, &o.gc_max, false, 0, NULL },
        { "-gS", "--garbage-mem-limit", CMDLINE_ULONG, &o.gc_mem, false, 0, NULL },
        { "-k", "--keepalive-interval", CMDLINE_ULONG, &o.keepalive, false, 0, NULL },
        { "-Ys", "--connect-timeout", CMDLINE_DOUBLE, &o.connect_timeout, false, 0, NULL },
        { "-Yn", "--connect-retry-limit", CMDLINE_USHORT, &o.retry_limit, false, 0, NULL },
        { "-Ci", "--clock-interval", CMDLINE_DOUBLE, &o.clock_interval, false, 0, NULL },
        { "-TW", "--write-threads", CMDLINE_USHORT, &o.write_threads, false, 0, NULL },
        { "-TR", "--read-threads", CMDLINE_USHORT, &o.read_threads, false, 0, NULL },
        { "-o", "--log", CMDLINE_STRING, &o.log_path, false, 0, NULL },
        { "-g", "--binary-log", CMDLINE_STRING, &o.binlog_path, false, 0, NULL },
        { "-v", "--verbose", CMDLINE_BOOL, &o.verbose, false, 0, NULL },
        { "-d", "--daemon", CMDLINE_STRING, &o.pidfile, false, 0, NULL },
        { NULL, NULL, 0, NULL, false, 0, NULL },
    };

    char *usage = daemon_cmdline(argc, argv, opts, usage_fmt, "kumo-server");

    /* cli.md §4 start-up order: RPC socket, stream socket, -m/-p check, logger, daemon. */
    int rpc_fd = daemon_listen_or_fail(&o.listen, usage);
    kaddr stream_addr = o.listen;    /* the -l IP with the -L port (wire.md §1) */
    stream_addr.raw[0] = (uint8_t)(o.stream_port >> 8);
    stream_addr.raw[1] = (uint8_t)o.stream_port;
    int stream_fd = daemon_listen_or_fail(&stream_addr, usage);
    if (o.mgr2.len != 0 && kaddr_eq(&o.mgr1, &o.mgr2))
        cmdline_fail(usage, "-m and -p must be different");

    if (daemon_startup(o.log_path, o.verbose, o.pidfile, o.binlog_path) != 0) {
        free(usage);
        return 1;
    }

    char err[256];
    store *st = store_open(o.store, err, sizeof(err));
    if (st == NULL)
        daemon_fail("%s", err);
    store_set_garbage(st, o.gc_min, o.gc_max, o.gc_mem);

    server_config cfg = {
        .self = o.listen,
        .stream_addr = stream_addr,
        .mgr1 = o.mgr1,
        .mgr2 = o.mgr2,
        .store_spec = o.store,
        .tmpdir = o.tmpdir,
        .set_retry = o.set_retry,
        .delete_retry = o.delete_retry,
        .mem_limit_mib = o.mem_limit,
        .garbage_max_sec = o.gc_max,
        .connect_timeout = o.connect_timeout,
        .connect_retry_limit = o.retry_limit,
        .clock_interval = o.clock_interval,
    };
    struct ev_loop *loop = ev_default_loop(0);
    server *srv = server_new(loop, st, &cfg);

    char abuf[KADDR_STRLEN];
    log_info("start server %s", kaddr_format(&o.listen, abuf));
    binlog_server_start(&o.listen, o.store, &o.mgr1, &o.mgr2, &stream_addr, o.tmpdir);
    server_start(srv, rpc_fd, stream_fd);

    daemon_run(loop, on_tick, on_keepalive, srv);

    server_free(srv);
    store_close(st);                 /* nothing acknowledged is lost (DECISIONS.md §4) */
    binlog_close();
    free(usage);
    return 0;
}
