/* main.c - kumo-gateway: options, start-up, signals and the event loop (cli.md §5). */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "gateway/binconn.h"
#include "gateway/gwcache.h"
#include "gateway/gateway.h"
#include "gateway/gwstats.h"
#include "gateway/textconn.h"
#include "logic/binlog.h"
#include "logic/cmdline.h"
#include "logic/daemon.h"
#include "logic/log.h"

/* Verbatim from reference-outputs.md §3 (program name = argv[0]). */
static const char usage_fmt[] =
    "usage: %s -m <addr[:port]> -p <addr[:port]> [-t port] [-b port] [-c port]\n"
    "\n"
    "  -m  <addr[:port=19700]>   --manager1        address of manager 1\n"
    "  -p  <addr[:port=19700]>   --manager2        address of manager 2\n"
    "  -lc                       --local-cache     local cache (Tokyo Cabinet abstract database)\n"
    "  -t  <[addr:]port=11411>   --memproto-text   memcached text protocol listen port\n"
    "  -b  <[addr:]port=11511>   --memproto-binary memcached binary protocol listen port\n"
    "  -c  <[addr:]port=11611>   --cloudy          asynchronous memcached binary protocol listen port\n"
    "  -F                --memproto-save-flag     save flags on memcached protocol\n"
    "  -E                --memproto-save-expire   save expire time on memcached protocol\n"
    "  -As               --async-replicate-set    send response without waiting replication on set\n"
    "  -Ad               --async-replicate-delete send response without waiting replication on delete\n"
    "  -G  <number=5>    --get-retry              get retry limit\n"
    "  -S  <number=20>   --set-retry              set retry limit\n"
    "  -D  <number=20>   --delete-retry           delete retry limit\n"
    "  -rn <number=4>    --renew-threshold        hash space renew threshold\n"
    "  -k <string>       --key-prefix             add prefix to keys automatically\n"
    "  -Rt <number=2>    --request-timeout        answer every request within sec., 0 = off (kumofs-c)\n"
    "  -At <number=0.2>  --attempt-timeout        min. deadline of one get attempt in sec.\n"
    "  -Ax <number=1>    --attempt-timeout-max    max. deadline of one get attempt in sec.\n"
    DAEMON_USAGE_COMMON("2");

typedef struct gw_options {
    kaddr manager1, manager2;
    const char *local_cache;
    kaddr text, binary, cloudy;
    bool text_set, binary_set, cloudy_set;
    bool save_flag, save_expire, async_set, async_delete;
    unsigned short get_retry, set_retry, delete_retry, renew_threshold;
    const char *key_prefix;
    unsigned long keepalive;
    double connect_timeout;
    unsigned short connect_retry_limit;
    double clock_interval;
    unsigned short write_threads, read_threads;
    const char *log_path, *binary_log, *pidfile;
    bool verbose;
    unsigned long item_size_max;    /* our addition: -x / --item-size-max */
    double request_timeout, attempt_min, attempt_max;   /* ours: -Rt -At -Ax */
} gw_options;

static void on_tick(void *arg)
{
    gateway_tick(arg);
}

static void on_keepalive(void *arg)
{
    gateway_keepalive(arg);
}

int main(int argc, char **argv)
{
    gw_options o = {
        .get_retry = 5, .set_retry = 20, .delete_retry = 20, .renew_threshold = 4,
        .keepalive = 2, .connect_timeout = 10, .connect_retry_limit = 4,
        .clock_interval = 2, .write_threads = 2, .read_threads = 8,
        .item_size_max = TEXTCONN_ITEM_SIZE_MAX_DEFAULT,
        .request_timeout = 2.0, .attempt_min = 0.2, .attempt_max = 1.0,
    };
    const cmdline_opt opts[] = {
        {"-m", "--manager1", CMDLINE_CONNECT, &o.manager1, true, 19700, NULL},
        {"-p", "--manager2", CMDLINE_CONNECT, &o.manager2, false, 19700, NULL},
        {"-lc", "--local-cache", CMDLINE_STRING, &o.local_cache, false, 0, NULL},
        {"-t", "--memproto-text", CMDLINE_LISTEN, &o.text, false, 11411, &o.text_set},
        {"-b", "--memproto-binary", CMDLINE_LISTEN, &o.binary, false, 11511, &o.binary_set},
        {"-c", "--cloudy", CMDLINE_LISTEN, &o.cloudy, false, 11611, &o.cloudy_set},
        {"-F", "--memproto-save-flag", CMDLINE_BOOL, &o.save_flag, false, 0, NULL},
        {"-E", "--memproto-save-expire", CMDLINE_BOOL, &o.save_expire, false, 0, NULL},
        {"-As", "--async-replicate-set", CMDLINE_BOOL, &o.async_set, false, 0, NULL},
        {"-Ad", "--async-replicate-delete", CMDLINE_BOOL, &o.async_delete, false, 0, NULL},
        {"-G", "--get-retry", CMDLINE_USHORT, &o.get_retry, false, 0, NULL},
        {"-S", "--set-retry", CMDLINE_USHORT, &o.set_retry, false, 0, NULL},
        {"-D", "--delete-retry", CMDLINE_USHORT, &o.delete_retry, false, 0, NULL},
        {"-rn", "--renew-threshold", CMDLINE_USHORT, &o.renew_threshold, false, 0, NULL},
        {"-k", "--key-prefix", CMDLINE_STRING, &o.key_prefix, false, 0, NULL},
        /* cli.md §2: in the gateway only the long form reaches the keepalive option */
        {"--keepalive-interval", "--keepalive-interval", CMDLINE_ULONG, &o.keepalive, false, 0, NULL},
        {"-Ys", "--connect-timeout", CMDLINE_DOUBLE, &o.connect_timeout, false, 0, NULL},
        {"-Yn", "--connect-retry-limit", CMDLINE_USHORT, &o.connect_retry_limit, false, 0, NULL},
        {"-Ci", "--clock-interval", CMDLINE_DOUBLE, &o.clock_interval, false, 0, NULL},
        {"-TW", "--write-threads", CMDLINE_USHORT, &o.write_threads, false, 0, NULL},
        {"-TR", "--read-threads", CMDLINE_USHORT, &o.read_threads, false, 0, NULL},
        {"-o", "--log", CMDLINE_STRING, &o.log_path, false, 0, NULL},
        {"-g", "--binary-log", CMDLINE_STRING, &o.binary_log, false, 0, NULL},
        {"-v", "--verbose", CMDLINE_BOOL, &o.verbose, false, 0, NULL},
        {"-d", "--daemon", CMDLINE_STRING, &o.pidfile, false, 0, NULL},
        {"-x", "--item-size-max", CMDLINE_ULONG, &o.item_size_max, false, 0, NULL},
        {"-Rt", "--request-timeout", CMDLINE_DOUBLE, &o.request_timeout, false, 0, NULL},
        {"-At", "--attempt-timeout", CMDLINE_DOUBLE, &o.attempt_min, false, 0, NULL},
        {"-Ax", "--attempt-timeout-max", CMDLINE_DOUBLE, &o.attempt_max, false, 0, NULL},
        {NULL, NULL, 0, NULL, false, 0, NULL},
    };

    char *usage = daemon_cmdline(argc, argv, opts, usage_fmt, "kumo-gateway");

    /* cli.md §5 start-up order: listen sockets, then validation */
    int text_fd = o.text_set ? daemon_listen_or_fail(&o.text, usage) : -1;
    int binary_fd = o.binary_set ? daemon_listen_or_fail(&o.binary, usage) : -1;
    int cloudy_fd = o.cloudy_set ? daemon_listen_or_fail(&o.cloudy, usage) : -1;
    if (!o.text_set && !o.binary_set && !o.cloudy_set)
        cmdline_fail(usage, "-t, -b or -c is required");
    if (o.item_size_max == 0)
        cmdline_fail(usage, "-x must be at least 1");
    if (o.request_timeout < 0 || !(o.attempt_min > 0) || o.attempt_max < o.attempt_min)
        cmdline_fail(usage, "-Rt must be >= 0 and 0 < -At <= -Ax");

    if (daemon_startup(o.log_path, o.verbose, o.pidfile, o.binary_log) != 0) {
        free(usage);
        return 1;
    }

    gwcache *cache = NULL;
    if (o.local_cache) {
        const char *why = NULL;
        if (!(cache = gwcache_open(o.local_cache, &why))) {
            fprintf(stderr, "kumo-gateway: -lc %s: %s\n", o.local_cache, why);
            free(usage);
            return 1;
        }
    }

    struct ev_loop *loop = ev_default_loop(0);

    gateway_config gc = {
        .manager1 = o.manager1,
        .manager2 = o.manager2,
        .key_prefix = o.key_prefix,
        .get_retry = o.get_retry,
        .set_retry = o.set_retry,
        .delete_retry = o.delete_retry,
        .renew_threshold = o.renew_threshold,
        .async_delete = o.async_delete,
        .save_flag = o.save_flag,
        .save_expire = o.save_expire,
        .connect_timeout = o.connect_timeout,
        .connect_retry_limit = o.connect_retry_limit,
        .clock_interval = o.clock_interval,
        .cache = cache,
        .request_timeout = o.request_timeout,
        .attempt_min = o.attempt_min,
        .attempt_max = o.attempt_max,
    };
    gateway *gw = gateway_new(loop, &gc);
    binlog_gateway_start(&o.manager1, &o.manager2);

    /* one set of memcached stats for the whole gateway, whichever listener counts */
    static gwstats stats;
    gwstats_init(&stats);
    gwstats_start(&stats, loop, gw);

    textconn_listener *text = NULL;
    if (text_fd >= 0) {
        textconn_config tc = {.item_size_max = o.item_size_max};
        text = textconn_listen(loop, text_fd, gw, &stats, &tc);
    }
    binconn_listener *binary = NULL;
    if (binary_fd >= 0) {
        binconn_config bc = {.item_size_max = o.item_size_max};
        binary = binconn_listen(loop, binary_fd, gw, &stats, &bc);
    }
    binconn_listener *cloudy = NULL;
    if (cloudy_fd >= 0) {
        binconn_config cc = {.item_size_max = o.item_size_max, .cloudy = true};
        cloudy = binconn_listen(loop, cloudy_fd, gw, &stats, &cc);
    }
    gateway_start(gw);

    daemon_run(loop, on_tick, on_keepalive, gw);

    gwstats_stop(&stats);
    /* the gateway first: requests in flight complete into the still-open connections */
    gateway_free(gw);
    textconn_listener_free(text);
    binconn_listener_free(binary);
    binconn_listener_free(cloudy);
    gwcache_close(cache);
    binlog_close();
    free(usage);
    return 0;
}
