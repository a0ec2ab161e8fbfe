/* kumotop.c - live view of the servers' counters, rates, items, clock and replace state
 * (tools.md §4): full-screen with ncurses on a terminal, plain text snapshots otherwise. */
#include <curses.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "logic/addr.h"
#include "logic/clocktime.h"
#include "logic/hashspace.h"
#include "logic/kwire.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"
#include "tools/common/toolrpc.h"

static const char *prog = "kumotop";

/* The original waited 0.5 s for a connection; a node that does not answer within that
 * time is shown as down instead of freezing the screen for every other node. */
#define NODE_CONNECT_TIMEOUT_MS 500
#define NODE_CALL_TIMEOUT_MS 1000

#define LINE_MAX_COLS 1024

static void usage(FILE *out)
{
    /* exact text of the original (reference-outputs.md); our options are in kumotop(1) */
    fprintf(out,
            "Usage: kumotop server-address[:port=%d] ...\n"
            "       kumotop -m manager-address[:port=%d]\n",
            TOOLRPC_SERVER_PORT, TOOLRPC_MANAGER_PORT);
}

/* One watched server: its connection (kept across refreshes, reopened after an error) and
 * the previous sample the rates are computed from. */
typedef struct node {
    char label[KADDR_STRLEN + 256];  /* "host:port" as given, or from the manager */
    char target[KADDR_STRLEN + 256]; /* what toolrpc_connect() gets (server mode) */
    kaddr ka;                        /* the address (manager mode) */
    bool by_kaddr;
    toolrpc *c;                      /* NULL when not connected */

    bool ok;                         /* the last sample succeeded */
    char err[300];                   /* why it did not */
    uint64_t get, set, del, items;
    clocktime_t clocktime;
    bool has_replstat;
    uint64_t replstat;
    double rget, rset, rdel;         /* per second since the previous good sample */

    /* tools.md §4: the previous sample starts at the epoch with zero counters, so the
     * first rates are ~0 (counter / seconds since 1970), as in the original */
    uint64_t pget, pset, pdel;
    double ptime;
} node;

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* GetStatus [code].  0 with *result borrowed until the next call, -1 with n->err set. */
static int get_status(node *n, uint32_t code, const msgpack_object **result)
{
    return toolrpc_get_status(n->c, code, result, n->err, sizeof(n->err)) == 0 ? 0 : -1;
}

static int get_u64(node *n, uint32_t code, uint64_t *v)
{
    const msgpack_object *r;
    if (get_status(n, code, &r) != 0)
        return -1;
    if (!kwire_get_u64(r, v)) {
        snprintf(n->err, sizeof(n->err), "unexpected reply to GetStatus %u", code);
        return -1;
    }
    return 0;
}

/* Refresh one node: GetStatus 4, 5, 6, 7, 8, 11 on its persistent connection.  Any failure
 * closes the connection (retried on the next refresh) and marks the node down. */
static void node_sample(node *n)
{
    if (n->c == NULL) {
        n->c = n->by_kaddr ? toolrpc_connect_kaddr(&n->ka, n->err, sizeof(n->err))
                           : toolrpc_connect(n->target, TOOLRPC_SERVER_PORT, n->err, sizeof(n->err));
        if (n->c == NULL) {
            n->ok = false;
            return;
        }
        toolrpc_set_timeout(n->c, NODE_CALL_TIMEOUT_MS);
    }
    uint64_t get, set, del, items, ct;
    if (get_u64(n, STATUS_CMD_GET, &get) != 0 || get_u64(n, STATUS_CMD_SET, &set) != 0 ||
        get_u64(n, STATUS_CMD_DELETE, &del) != 0 || get_u64(n, STATUS_ITEMS, &items) != 0 ||
        get_u64(n, STATUS_CLOCKTIME, &ct) != 0) {
        toolrpc_close(n->c);
        n->c = NULL;
        n->ok = false;
        return;
    }
    /* replace status is shown as "?" when the server does not give a number (tools.md §4) */
    const msgpack_object *r;
    n->has_replstat = get_status(n, STATUS_REPLSTAT, &r) == 0 && kwire_get_u64(r, &n->replstat);

    double now = now_sec();
    double elapsed = now - n->ptime;
    if (elapsed <= 0)
        elapsed = 1e-9;
    /* counters may go down when a server restarts: the original shows the negative rate */
    n->rget = ((double)get - (double)n->pget) / elapsed;
    n->rset = ((double)set - (double)n->pset) / elapsed;
    n->rdel = ((double)del - (double)n->pdel) / elapsed;
    n->pget = get;
    n->pset = set;
    n->pdel = del;
    n->ptime = now;
    n->get = get;
    n->set = set;
    n->del = del;
    n->items = items;
    n->clocktime = ct;
    n->ok = true;
}

/* ------------------------------------------------------------------ layout */

enum layout { ONE_LINE, TWO_LINES };

/* tools.md §4: one line per node from 130 columns on. */
static enum layout layout_for(int cols)
{
    return cols - 1 >= 129 ? ONE_LINE : TWO_LINES;
}

static int lines_per_node(enum layout l)
{
    return l == ONE_LINE ? 1 : 2;
}

#define ONE_FMT "%23s %9s %9s %9s %8s %8s %8s %8s %10s %20s %8s %8s"
#define TWO_FMT1 "%22s%9s%9s%9s%10s %19s %8s"
#define TWO_FMT2 "%22s%9s%9s%9s%10s %19s"
#define STATUS_WIDTH 8

static void header(enum layout l, char out[2][LINE_MAX_COLS])
{
    if (l == ONE_LINE) {
        snprintf(out[0], LINE_MAX_COLS, ONE_FMT, "address", "#Get", "#Set", "#Del", "Get/s",
                 "Set/s", "Del/s", "QPS", "items", "time", "clock", "status");
        out[1][0] = '\0';
    } else {
        snprintf(out[0], LINE_MAX_COLS, TWO_FMT1, "address", "#Get", "#Set", "#Del", "items",
                 "time", "status");
        snprintf(out[1], LINE_MAX_COLS, TWO_FMT2, "", "Get/s", "Set/s", "Del/s", "QPS", "clock");
    }
}

static const char *replstat_name(const node *n)
{
    if (!n->has_replstat)
        return "?";
    /* same first-match order as kumostat replstat (tools.md §3) */
    return toolrpc_replstat_name(n->replstat);
}

/* A down node: the address, the error message from the #Get column on (as the original
 * does), and "down" in the status column so it stands out.  width = full line width. */
static void down_line(const node *n, int addr_width, int width, char *out)
{
    char msg[LINE_MAX_COLS];
    int len = snprintf(msg, sizeof(msg), "%*s %9s", addr_width, n->label, n->err);
    int room = width - STATUS_WIDTH - 1;    /* where the status column starts */
    if (len > room)
        len = room;
    snprintf(out, LINE_MAX_COLS, "%-*.*s %*s", room, len, msg, STATUS_WIDTH, "down");
}

static void node_lines(const node *n, enum layout l, char out[2][LINE_MAX_COLS])
{
    char hdr[2][LINE_MAX_COLS];
    header(l, hdr);
    out[1][0] = '\0';
    if (!n->ok) {
        down_line(n, l == ONE_LINE ? 23 : 22, (int)strlen(hdr[0]), out[0]);
        return;
    }
    char f[10][32], tbuf[32];
    time_t sec = (time_t)clocktime_sec(n->clocktime);
    struct tm tm;
    localtime_r(&sec, &tm);
    strftime(tbuf, sizeof(tbuf), "%Y-%m-%d %H:%M:%S", &tm);
    /* rates are truncated toward zero like Ruby's to_i */
    snprintf(f[0], sizeof(f[0]), "%llu", (unsigned long long)n->get);
    snprintf(f[1], sizeof(f[1]), "%llu", (unsigned long long)n->set);
    snprintf(f[2], sizeof(f[2]), "%llu", (unsigned long long)n->del);
    snprintf(f[3], sizeof(f[3]), "%lld", (long long)n->rget);
    snprintf(f[4], sizeof(f[4]), "%lld", (long long)n->rset);
    snprintf(f[5], sizeof(f[5]), "%lld", (long long)n->rdel);
    snprintf(f[6], sizeof(f[6]), "%lld", (long long)(n->rget + n->rset + n->rdel));
    snprintf(f[7], sizeof(f[7]), "%llu", (unsigned long long)n->items);
    snprintf(f[8], sizeof(f[8]), "%u", clocktime_clock(n->clocktime));
    if (l == ONE_LINE) {
        snprintf(out[0], LINE_MAX_COLS, ONE_FMT, n->label, f[0], f[1], f[2], f[3], f[4], f[5],
                 f[6], f[7], tbuf, f[8], replstat_name(n));
    } else {
        snprintf(out[0], LINE_MAX_COLS, TWO_FMT1, n->label, f[0], f[1], f[2], f[7], tbuf,
                 replstat_name(n));
        snprintf(out[1], LINE_MAX_COLS, TWO_FMT2, "", f[3], f[4], f[5], f[6], f[8]);
    }
}

/* ------------------------------------------------------------------ screens */

typedef struct options {
    bool batch;          /* -b: plain text even on a terminal */
    double delay;        /* -d: seconds between refreshes */
    long count;          /* -n: refreshes before exiting, 0 = until q / killed */
} options;

static void sample_all(node *nodes, size_t nn)
{
    for (size_t i = 0; i < nn; i++)
        node_sample(&nodes[i]);
}

static void sleep_sec(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = { .tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Not a terminal (or -b): one snapshot in the one-line layout per refresh, snapshots
 * separated by an empty line, flushed each time so a pipe sees it at once. */
static int run_plain(node *nodes, size_t nn, const options *o)
{
    char lines[2][LINE_MAX_COLS];
    for (long k = 0; o->count == 0 || k < o->count; k++) {
        double start = now_sec();
        sample_all(nodes, nn);
        if (k > 0)
            putchar('\n');
        header(ONE_LINE, lines);
        puts(lines[0]);
        for (size_t i = 0; i < nn; i++) {
            node_lines(&nodes[i], ONE_LINE, lines);
            puts(lines[0]);
        }
        if (fflush(stdout) != 0)
            return 1;
        if (o->count == 0 || k + 1 < o->count)
            sleep_sec(o->delay - (now_sec() - start));
    }
    return 0;
}

static void draw(node *nodes, size_t nn)
{
    char lines[2][LINE_MAX_COLS];
    enum layout l = layout_for(COLS);
    int per = lines_per_node(l);
    erase();
    header(l, lines);
    for (int j = 0; j < per; j++)
        mvaddnstr(j, 0, lines[j], COLS);
    for (size_t i = 0; i < nn; i++) {
        node_lines(&nodes[i], l, lines);
        int row = (int)(1 + i) * per;   /* tools.md §4: node i starts at row (1+i)*lines */
        for (int j = 0; j < per; j++)
            if (row + j < LINES && lines[j][0] != '\0')
                mvaddnstr(row + j, 0, lines[j], COLS);
    }
    move(LINES - 1, 0);
    refresh();
}

/* Full screen: redraw every delay and on any key press; q quits. */
static int run_curses(node *nodes, size_t nn, const options *o)
{
    if (initscr() == NULL) {
        fprintf(stderr, "%s: cannot initialise the terminal\n", prog);
        return 1;
    }
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    curs_set(0);
    long k = 0;
    int rc = 0;
    for (;;) {
        double start = now_sec();
        sample_all(nodes, nn);
        draw(nodes, nn);
        if (o->count > 0 && ++k >= o->count)
            break;
        /* wait for the rest of the interval, or less if a key comes (the original redraws
         * at once on a key press) */
        int left = (int)((o->delay - (now_sec() - start)) * 1000);
        timeout(left > 0 ? left : 0);
        int ch = getch();
        if (ch == 'q' || ch == 'Q')
            break;
    }
    endwin();
    return rc;
}

/* ------------------------------------------------------------------ node lists */

static void node_from_arg(node *n, const char *arg)
{
    memset(n, 0, sizeof(*n));
    snprintf(n->target, sizeof(n->target), "%s", arg);
    /* tools.md §1: split at the first ':'; the label is "host:port" with the default */
    if (strchr(arg, ':') != NULL)
        snprintf(n->label, sizeof(n->label), "%s", arg);
    else
        snprintf(n->label, sizeof(n->label), "%s:%d", arg, TOOLRPC_SERVER_PORT);
    snprintf(n->err, sizeof(n->err), "not yet sampled");
}

/* -m: all attached nodes (active and fault), whs order, fetched once (tools.md §4). */
static node *nodes_from_manager(const char *addr, size_t *nn)
{
    char err[300], abuf[KADDR_STRLEN];
    hashspace whs;
    hashspace_init(&whs);
    if (toolrpc_fetch_whs(addr, &whs, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        hashspace_destroy(&whs);
        return NULL;
    }
    node *nodes = xcalloc(whs.nnodes ? whs.nnodes : 1, sizeof(*nodes));
    for (size_t i = 0; i < whs.nnodes; i++) {
        nodes[i].ka = whs.nodes[i].addr;
        nodes[i].by_kaddr = true;
        snprintf(nodes[i].label, sizeof(nodes[i].label), "%s", kaddr_format(&whs.nodes[i].addr, abuf));
        snprintf(nodes[i].err, sizeof(nodes[i].err), "not yet sampled");
    }
    *nn = whs.nnodes;
    hashspace_destroy(&whs);
    return nodes;
}

/* Our options come before the original's arguments: -b, -d SECONDS, -n COUNT. */
static int parse_options(int argc, char **argv, options *o)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (strcmp(a, "-b") == 0) {
            o->batch = true;
        } else if (strcmp(a, "-d") == 0 && i + 1 < argc) {
            o->delay = strtod(argv[++i], &end);
            if (*end != '\0' || end == argv[i] || !(o->delay >= 0.05 && o->delay <= 3600))
                return -1;
        } else if (strcmp(a, "-n") == 0 && i + 1 < argc) {
            o->count = strtol(argv[++i], &end, 10);
            if (*end != '\0' || end == argv[i] || o->count < 1)
                return -1;
        } else {
            break;
        }
    }
    return i;
}

int main(int argc, char **argv)
{
    if (toolrpc_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    options o = { .batch = false, .delay = 0.5, .count = 0 };
    int first = parse_options(argc, argv, &o);
    if (first < 0 || first >= argc) {
        usage(stdout);
        return 1;
    }

    node *nodes;
    size_t nn;
    if (strcmp(argv[first], "-m") == 0) {
        if (argc - first != 2) {
            usage(stdout);
            return 1;
        }
        nodes = nodes_from_manager(argv[first + 1], &nn);
        if (nodes == NULL)
            return 1;
    } else {
        nn = (size_t)(argc - first);
        nodes = xcalloc(nn, sizeof(*nodes));
        for (size_t i = 0; i < nn; i++)
            node_from_arg(&nodes[i], argv[first + (int)i]);
    }

    toolrpc_set_connect_timeout(NODE_CONNECT_TIMEOUT_MS);
    /* curses needs the terminal both ways: keys come from stdin */
    bool tty = isatty(STDOUT_FILENO) && isatty(STDIN_FILENO);
    int rc = (o.batch || !tty) ? run_plain(nodes, nn, &o) : run_curses(nodes, nn, &o);
    for (size_t i = 0; i < nn; i++)
        toolrpc_close(nodes[i].c);
    free(nodes);
    return rc;
}
