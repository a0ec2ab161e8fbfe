/* kumoctl.c - cluster administration through the manager: status, attach, detach, replace,
 * backup, auto-replace (tools.md §2). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logic/clocktime.h"
#include "logic/hashspace.h"
#include "logic/kwire.h"
#include "logic/proto.h"
#include "tools/common/toolrpc.h"

static const char *prog = "kumoctl";

/* The usage text of tools.md §2; the backup default is today's local date. */
static void usage(FILE *out)
{
    char today[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(today, sizeof(today), "%Y%m%d", &tm);
    fprintf(out,
            "Usage: kumoctl address[:port=%d] command [options]\n"
            "command:\n"
            "   status                     get status\n"
            "   attach                     attach all new servers and start replace\n"
            "   attach-noreplace           attach all new servers\n"
            "   detach                     detach all fault servers and start replace\n"
            "   detach-noreplace           detach all fault servers\n"
            "   replace                    start replace without attach/detach\n"
            "   full-replace               start full-replace (repair consistency)\n"
            "   backup  [suffix=%s]  create backup with specified suffix\n"
            "   enable-auto-replace        enable auto replace\n"
            "   disable-auto-replace       disable auto replace\n",
            TOOLRPC_MANAGER_PORT, today);
}

enum cmd_kind {
    CMD_STATUS,
    CMD_BOOL,      /* one bool parameter */
    CMD_REPLACE,   /* StartReplace [] (plain) */
    CMD_BACKUP,
};

struct command {
    const char *name;
    enum cmd_kind kind;
    uint32_t method;
    bool arg;      /* the bool parameter of CMD_BOOL */
};

static const struct command commands[] = {
    { "status", CMD_STATUS, MGR_GET_NODES_INFO, false },
    { "stat", CMD_STATUS, MGR_GET_NODES_INFO, false },
    { "attach", CMD_BOOL, MGR_ATTACH_NEW_SERVERS, true },
    { "attach-noreplace", CMD_BOOL, MGR_ATTACH_NEW_SERVERS, false },
    { "detach", CMD_BOOL, MGR_DETACH_FAULT_SERVERS, true },
    { "detach-noreplace", CMD_BOOL, MGR_DETACH_FAULT_SERVERS, false },
    /* the seed HowTo ("Removing fault servers") says `kumoctl svr1 remove`; an addition */
    { "remove", CMD_BOOL, MGR_DETACH_FAULT_SERVERS, true },
    { "replace", CMD_REPLACE, MGR_START_REPLACE, false },
    { "full-replace", CMD_BOOL, MGR_START_REPLACE, true },
    { "backup", CMD_BACKUP, MGR_CREATE_BACKUP, false },
    { "enable-auto-replace", CMD_BOOL, MGR_SET_AUTO_REPLACE, true },
    { "disable-auto-replace", CMD_BOOL, MGR_SET_AUTO_REPLACE, false },
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* tools.md §2.1: the exact status report. */
static int do_status(toolrpc *c)
{
    hashspace whs;
    kaddr *newcomers;
    size_t nnew;
    char err[300], tbuf[64], abuf[KADDR_STRLEN];

    hashspace_init(&whs);
    int r = toolrpc_get_nodes_info(c, &whs, &newcomers, &nnew, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        hashspace_destroy(&whs);
        return 1;
    }
    printf("hash space timestamp:\n");
    printf("  %s clock %u\n", toolrpc_format_time(clocktime_sec(whs.clocktime), tbuf, sizeof(tbuf)),
           clocktime_clock(whs.clocktime));
    printf("attached node:\n");
    for (size_t i = 0; i < whs.nnodes; i++)
        printf("  %s  (%s)\n", kaddr_format(&whs.nodes[i].addr, abuf),
               whs.nodes[i].active ? "active" : "fault");
    printf("not attached node:\n");
    for (size_t i = 0; i < nnew; i++)
        printf("  %s\n", kaddr_format(&newcomers[i], abuf));
    free(newcomers);
    hashspace_destroy(&whs);
    return 0;
}

/* Send the prepared request and print the result as Ruby's `p` does. */
static int finish_call(toolrpc *c)
{
    const msgpack_object *e, *r;
    char buf[1024];
    if (toolrpc_call(c, &e, &r) != 0) {
        fprintf(stderr, "%s: %s\n", prog, toolrpc_errmsg(c));
        return 1;
    }
    if (!kwire_is_nil(e)) {
        /* tools.md §1: "error <value>", exit 1 */
        fflush(stdout);
        fprintf(stderr, "%s: error %s\n", prog, toolrpc_format_value(e, false, buf, sizeof(buf)));
        return 1;
    }
    printf("%s\n", toolrpc_format_value(r, true, buf, sizeof(buf)));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc < 3) {
        usage(stdout);
        return 1;
    }
    const char *addr = argv[1];
    const char *name = argv[2];
    int nextra = argc - 3;
    const struct command *cmd = find_command(name);
    if (cmd == NULL) {
        printf("unknown command %s\n\n", name);
        usage(stdout);
        return 1;
    }
    if (nextra > (cmd->kind == CMD_BACKUP ? 1 : 0)) {
        usage(stdout);
        return 1;
    }

    char today[16];
    const char *suffix = today;    /* backup: argument, or today's local %Y%m%d */
    if (nextra == 1) {
        suffix = argv[3];
    } else {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(today, sizeof(today), "%Y%m%d", &tm);
    }

    char err[300];
    toolrpc *c = toolrpc_connect(addr, TOOLRPC_MANAGER_PORT, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 1;
    }

    int rc;
    msgpack_packer *pk;
    switch (cmd->kind) {
    case CMD_STATUS:
        rc = do_status(c);
        break;
    case CMD_BOOL:
        pk = toolrpc_request(c, cmd->method, 1);
        if (cmd->arg)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        rc = finish_call(c);
        break;
    case CMD_REPLACE:
        toolrpc_request(c, cmd->method, 0);   /* vectors.md #109: StartReplace [] */
        rc = finish_call(c);
        break;
    case CMD_BACKUP:
    default:
        printf("suffix=%s\n", suffix);
        pk = toolrpc_request(c, cmd->method, 1);
        kwire_pack_raw(pk, suffix, strlen(suffix));   /* vectors.md #96 */
        rc = finish_call(c);
        break;
    }
    toolrpc_close(c);
    fflush(stdout);
    return rc;
}
