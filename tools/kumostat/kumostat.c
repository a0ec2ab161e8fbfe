/* kumostat.c - one server's status and counters, or every active server's through the
 * manager with -m (tools.md §3). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logic/clocktime.h"
#include "logic/hashspace.h"
#include "logic/kwire.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"
#include "tools/common/toolrpc.h"

static const char *prog = "kumostat";

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: kumostat server-address[:port=%d] command\n"
            "       kumostat -m manager-address[:port=%d] command\n"
            "command:\n"
            "   pid                        get pid of server process\n"
            "   uptime                     get uptime\n"
            "   time                       get UNIX time\n"
            "   version                    get version\n"
            "   cmd_get                    get number of get requests\n"
            "   cmd_set                    get number of set requests\n"
            "   cmd_delete                 get number of delete requests\n"
            "   items                      get number of stored items\n"
            "   stats                      get statistics like memcached's 'stats' command\n"
            "   rhs                        get rhs (routing table for Get)\n"
            "   whs                        get whs (routing table for Set/Delete)\n"
            "   hscheck                    check if rhs == whs\n"
            "   replstat                   get replace status\n"
            "   set_delay                  maximize throughput at the expense of latency\n"
            "   unset_delay                minimize latency at the expense of throughput\n",
            TOOLRPC_SERVER_PORT, TOOLRPC_MANAGER_PORT);
}

enum cmd_kind {
    CMD_VALUE,     /* one GetStatus, print the value */
    CMD_STATS,
    CMD_SEED,      /* rhs / whs */
    CMD_HSCHECK,
    CMD_REPLSTAT,
    CMD_DELAY,     /* SetConfig [0, bool] */
};

struct command {
    const char *name;
    enum cmd_kind kind;
    uint32_t code;     /* GetStatus code, or the SetConfig bool */
};

static const struct command commands[] = {
    { "pid", CMD_VALUE, STATUS_PID },
    { "uptime", CMD_VALUE, STATUS_UPTIME },
    { "time", CMD_VALUE, STATUS_TIME },
    { "version", CMD_VALUE, STATUS_VERSION },
    { "cmd_get", CMD_VALUE, STATUS_CMD_GET },
    { "cmd_set", CMD_VALUE, STATUS_CMD_SET },
    { "cmd_delete", CMD_VALUE, STATUS_CMD_DELETE },
    { "items", CMD_VALUE, STATUS_ITEMS },
    { "stats", CMD_STATS, 0 },
    { "rhs", CMD_SEED, STATUS_RHS },
    { "whs", CMD_SEED, STATUS_WHS },
    { "hscheck", CMD_HSCHECK, 0 },
    { "replstat", CMD_REPLSTAT, STATUS_REPLSTAT },
    { "set_delay", CMD_DELAY, 0 },     /* clear TCP_NODELAY */
    { "unset_delay", CMD_DELAY, 1 },   /* set TCP_NODELAY */
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Outcome of one RPC: the result, an RPC error (rendered), or a transport failure; the
 * values are those of toolrpc_call_checked(). */
enum outcome { TRANSPORT = -1, OK = 0, RPC_ERROR = 1 };

typedef struct query {
    toolrpc *c;
    char err[300];     /* "error <value>" or the transport message */
} query;

static enum outcome finish(query *q, const msgpack_object **result)
{
    return (enum outcome)toolrpc_call_checked(q->c, result, q->err, sizeof(q->err));
}

/* GetStatus [code] (wire.md §9). */
static enum outcome get_status(query *q, uint32_t code, const msgpack_object **result)
{
    return (enum outcome)toolrpc_get_status(q->c, code, result, q->err, sizeof(q->err));
}

/* Ruby 1.8 `puts v`: to_s, except nil which prints "nil". */
static void put_value(FILE *out, const msgpack_object *v)
{
    char buf[1024];
    if (kwire_is_nil(v))
        fputs("nil", out);
    else
        fputs(toolrpc_format_value(v, false, buf, sizeof(buf)), out);
}

/* rhs/whs display: same shape as kumoctl status (tools.md §3). */
static bool put_seed(FILE *out, const msgpack_object *v)
{
    hashspace hs;
    char tbuf[64], abuf[KADDR_STRLEN];
    hashspace_init(&hs);
    if (!kwire_get_seed(v, &hs)) {
        hashspace_destroy(&hs);
        return false;
    }
    fprintf(out, "hash space timestamp:\n  %s clock %u\nnode:\n",
            toolrpc_format_time(clocktime_sec(hs.clocktime), tbuf, sizeof(tbuf)),
            clocktime_clock(hs.clocktime));
    for (size_t i = 0; i < hs.nnodes; i++)
        fprintf(out, "  %s  (%s)\n", kaddr_format(&hs.nodes[i].addr, abuf),
                hs.nodes[i].active ? "active" : "fault");
    hashspace_destroy(&hs);
    return true;
}

/* Run one command against one server, writing its whole output to out (a memory stream,
 * so that an RPC error mid-way replaces the output instead of following half of it). */
static enum outcome run_command(query *q, const struct command *cmd, FILE *out)
{
    static const struct { uint32_t code; const char *label; } stats[] = {
        { STATUS_PID, "pid" }, { STATUS_UPTIME, "uptime" }, { STATUS_TIME, "time" },
        { STATUS_CMD_GET, "cmd_get" }, { STATUS_CMD_SET, "cmd_set" },
        { STATUS_CMD_DELETE, "cmd_delete" }, { STATUS_ITEMS, "curr_items" },
    };
    const msgpack_object *r;
    enum outcome o;
    msgpack_packer *pk;

    switch (cmd->kind) {
    case CMD_VALUE:
        if ((o = get_status(q, cmd->code, &r)) != OK)
            return o;
        put_value(out, r);
        fputc('\n', out);
        return OK;
    case CMD_STATS:
        for (size_t i = 0; i < sizeof(stats) / sizeof(stats[0]); i++) {
            if ((o = get_status(q, stats[i].code, &r)) != OK)
                return o;
            fprintf(out, "STAT %s ", stats[i].label);
            put_value(out, r);
            fputc('\n', out);
        }
        fputs("END\n", out);
        return OK;
    case CMD_SEED:
        if ((o = get_status(q, cmd->code, &r)) != OK)
            return o;
        if (!put_seed(out, r)) {
            snprintf(q->err, sizeof(q->err), "malformed hash space");
            return RPC_ERROR;
        }
        return OK;
    case CMD_HSCHECK: {
        /* Ruby `rhs == whs`: nodes, flags and timestamp.  The first result lives in the
         * connection's buffer only until the next call, so keep a private copy. */
        if ((o = get_status(q, STATUS_RHS, &r)) != OK)
            return o;
        msgpack_sbuffer sb;
        msgpack_packer tmp;
        msgpack_unpacked rhs;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&tmp, &sb, msgpack_sbuffer_write);
        msgpack_pack_object(&tmp, *r);
        msgpack_unpacked_init(&rhs);
        if (msgpack_unpack_next(&rhs, sb.data, sb.size, NULL) != MSGPACK_UNPACK_SUCCESS) {
            snprintf(q->err, sizeof(q->err), "malformed hash space");
            o = RPC_ERROR;
        } else if ((o = get_status(q, STATUS_WHS, &r)) == OK) {
            fprintf(out, "%s\n", toolrpc_value_equal(&rhs.data, r) ? "true" : "false");
        }
        msgpack_unpacked_destroy(&rhs);
        msgpack_sbuffer_destroy(&sb);
        return o;
    }
    case CMD_REPLSTAT: {
        uint64_t st;
        if ((o = get_status(q, STATUS_REPLSTAT, &r)) != OK)
            return o;
        if (!kwire_get_u64(r, &st)) {
            put_value(out, r);     /* not a bit mask: show it as it came */
            fputc('\n', out);
            return OK;
        }
        fprintf(out, "%s\n", toolrpc_replstat_name(st));
        return OK;
    }
    case CMD_DELAY:
    default:
        /* vectors.md #63: SetConfig [0, false] for set_delay */
        pk = toolrpc_request(q->c, SRV_SET_CONFIG, 2);
        msgpack_pack_uint64(pk, CONF_TCP_NODELAY);
        if (cmd->code)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        if ((o = finish(q, &r)) != OK)
            return o;
        put_value(out, r);
        fputc('\n', out);
        return OK;
    }
}

/* Query one server over c and print its output after prefix.  Returns 0, or 1 after a
 * transport failure (already reported on stderr). */
static int show(toolrpc *c, const struct command *cmd, const char *prefix)
{
    query q = { .c = c };
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    enum outcome o = run_command(&q, cmd, out);
    fclose(out);
    if (o == TRANSPORT) {
        fflush(stdout);
        fprintf(stderr, "%s: %s\n", prog, q.err);
        free(text);
        return 1;
    }
    fputs(prefix, stdout);
    if (o == RPC_ERROR)
        printf("%s\n\n", q.err);   /* tools.md §3: the message, then an empty result line */
    else
        fwrite(text, 1, len, stdout);
    free(text);
    return 0;
}

/* -m: every ACTIVE node of the manager's whs, in whs order (tools.md §3). */
static int manager_mode(const char *addr, const struct command *cmd)
{
    char err[300], abuf[KADDR_STRLEN], prefix[KADDR_STRLEN + 4];
    hashspace whs;
    hashspace_init(&whs);
    int r = toolrpc_fetch_whs(addr, &whs, err, sizeof(err));
    if (r != 0) {
        if (r > 0) {
            printf("%s\n\n", err);    /* an RPC error is printed, exit 0 (tools.md §3) */
            hashspace_destroy(&whs);
            return 0;
        }
        fprintf(stderr, "%s: %s\n", prog, err);
        hashspace_destroy(&whs);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < whs.nnodes && rc == 0; i++) {
        if (!whs.nodes[i].active)
            continue;
        toolrpc *c = toolrpc_connect_kaddr(&whs.nodes[i].addr, err, sizeof(err));
        if (c == NULL) {
            fflush(stdout);
            fprintf(stderr, "%s: %s\n", prog, err);
            rc = 1;     /* a connection failure aborts the remaining nodes */
            break;
        }
        snprintf(prefix, sizeof(prefix), "%s:  ", kaddr_format(&whs.nodes[i].addr, abuf));
        rc = show(c, cmd, prefix);
        toolrpc_close(c);
    }
    hashspace_destroy(&whs);
    return rc;
}

int main(int argc, char **argv)
{
    if (toolrpc_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    bool mgr = argc >= 2 && strcmp(argv[1], "-m") == 0;
    int first = mgr ? 2 : 1;
    /* exactly two arguments after the optional -m, and a known command; no
     * "unknown command" line here (tools.md §3) */
    const struct command *cmd = argc - first == 2 ? find_command(argv[first + 1]) : NULL;
    if (cmd == NULL) {
        usage(stdout);
        return 1;
    }
    const char *addr = argv[first];

    int rc;
    if (mgr) {
        rc = manager_mode(addr, cmd);
    } else {
        char err[300];
        toolrpc *c = toolrpc_connect(addr, TOOLRPC_SERVER_PORT, err, sizeof(err));
        if (c == NULL) {
            fprintf(stderr, "%s: %s\n", prog, err);
            return 1;
        }
        rc = show(c, cmd, "");
        toolrpc_close(c);
    }
    fflush(stdout);
    return rc;
}
