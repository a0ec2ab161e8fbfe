/* kumolog.c - viewer of the binary "logpack" log (tools.md §6, framing cli.md §10). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logic/xmalloc.h"
#include "tools/kumolog/logfmt.h"

/* No real record comes near this; larger lengths are corruption, not a partial write. */
#define MAX_RECORD (256u << 20)
#define FOLLOW_POLL_NS 200000000L /* -f: check for growth every 0.2 s */

static const char USAGE[] =
    "Usage: kumolog [options] <logfile.mpac>\n"
    "    -t, --tail\n"
    "    -h, --head\n"
    "    -f, --follow\n"
    "    -n, --lines [-]N\n";

/* ================================================================ input */

typedef struct reader {
    int fd;
    bool follow;         /* -f on a regular file: poll for growth at EOF */
    bool eof;            /* the last read returned 0 */
    uint8_t *buf;        /* bytes [base, base + len) of the input */
    size_t len, cap;
    uint64_t base;
    uint64_t consumed;   /* bytes read from fd (truncation check) */
} reader;

static size_t avail(const reader *rd, uint64_t off)
{
    uint64_t end = rd->base + rd->len;
    return off < end ? (size_t)(end - off) : 0;
}

static const uint8_t *at(const reader *rd, uint64_t off)
{
    return rd->buf + (off - rd->base);
}

/* Read once more, keeping the bytes from offset keep on.  >0 read, 0 EOF. */
static ssize_t fill(reader *rd, uint64_t keep)
{
    if (rd->eof)
        return 0;
    if (keep > rd->base) {
        size_t drop = (size_t)(keep - rd->base);
        if (drop > rd->len)
            drop = rd->len;
        memmove(rd->buf, rd->buf + drop, rd->len - drop);
        rd->len -= drop;
        rd->base += drop;
    }
    if (rd->cap - rd->len < 65536) {
        rd->cap = rd->cap ? rd->cap * 2 : 131072;
        rd->buf = xrealloc(rd->buf, rd->cap);
    }
    for (;;) {
        ssize_t r = read(rd->fd, rd->buf + rd->len, rd->cap - rd->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* a read error ends the input like EOF does: print what we have */
            rd->eof = true;
            return 0;
        }
        rd->len += (size_t)r;
        rd->consumed += (uint64_t)r;
        return r;
    }
}

/* ================================================================ output modes */

enum mode { MODE_ALL, MODE_TAIL_LAST, MODE_TAIL_SKIP, MODE_HEAD_FIRST, MODE_HEAD_BUTLAST };

typedef struct sink {
    enum mode mode;
    long long n;           /* |N| */
    long long count;       /* records seen (skip / head) */
    char **q;              /* ring of lines (tail last N / head all-but-last N) */
    size_t qcap, qhead, qlen;
} sink;

static void q_push(sink *s, char *line)
{
    if (s->qlen == s->qcap) {
        size_t ncap = s->qcap ? s->qcap * 2 : 16;
        char **nq = xmalloc(ncap * sizeof(*nq));
        for (size_t i = 0; i < s->qlen; i++)
            nq[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = nq;
        s->qcap = ncap;
        s->qhead = 0;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = line;
    s->qlen++;
}

static char *q_pop(sink *s)
{
    char *line = s->q[s->qhead];
    s->qhead = (s->qhead + 1) % s->qcap;
    s->qlen--;
    return line;
}

static void emit(const char *line)
{
    fputs(line, stdout);
    fputc('\n', stdout);
}

/* One record's line; takes ownership. */
static void sink_put(sink *s, char *line)
{
    switch (s->mode) {
    case MODE_ALL:
        emit(line);
        break;
    case MODE_TAIL_LAST:
        q_push(s, line);
        if ((long long)s->qlen > s->n)
            free(q_pop(s));
        return;
    case MODE_TAIL_SKIP:
        if (s->count++ >= s->n)
            emit(line);
        break;
    case MODE_HEAD_FIRST:
        emit(line);
        if (++s->count >= s->n) {
            free(line);
            fflush(stdout);
            exit(0);
        }
        break;
    case MODE_HEAD_BUTLAST:
        q_push(s, line);
        if ((long long)s->qlen > s->n) {
            char *first = q_pop(s);
            emit(first);
            free(first);
        }
        return;
    }
    free(line);
}

/* The input is exhausted for now: tail mode prints its last N (and, under -f, prints
 * everything that follows directly, like tail -f). */
static void sink_idle(sink *s)
{
    if (s->mode == MODE_TAIL_LAST) {
        while (s->qlen > 0) {
            char *line = q_pop(s);
            emit(line);
            free(line);
        }
        s->mode = MODE_ALL;
    }
    fflush(stdout);
}

static void sink_end(sink *s)
{
    sink_idle(s);
    while (s->qlen > 0)          /* head all-but-last: the held-back lines are dropped */
        free(q_pop(s));
    free(s->q);
}

/* ================================================================ the scan */

enum check { CHECK_OK, CHECK_BAD, CHECK_SHORT };

static enum check check_at(const reader *rd, uint64_t off, char **line, uint64_t *next)
{
    size_t a = avail(rd, off);
    if (a < 4)
        return CHECK_SHORT;
    const uint8_t *p = at(rd, off);
    uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (n > MAX_RECORD)
        return CHECK_BAD;
    if (a - 4 < n)
        return CHECK_SHORT;
    if (!logfmt_decode(p + 4, n, line))
        return CHECK_BAD;
    *next = off + 4 + n;
    return CHECK_OK;
}

/* -f: wait for the file to grow.  Returns true if it was truncated (start over). */
static bool wait_growth(reader *rd, sink *s)
{
    sink_idle(s);
    struct timespec ts = { 0, FOLLOW_POLL_NS };
    nanosleep(&ts, NULL);
    rd->eof = false;
    struct stat st;
    if (fstat(rd->fd, &st) == 0 && (uint64_t)st.st_size < rd->consumed) {
        /* truncated in place (logrotate copytruncate): read it again from the start */
        lseek(rd->fd, 0, SEEK_SET);
        rd->len = 0;
        rd->base = 0;
        rd->consumed = 0;
        return true;
    }
    return false;
}

/* A complete valid record at some offset in (from, buffered end]?  Used when the input
 * ends inside a record: a hit means the length field was corrupt, not the file short. */
static bool find_buffered(const reader *rd, uint64_t from, uint64_t *found)
{
    uint64_t end = rd->base + rd->len;
    uint64_t next;
    for (uint64_t p = from; p + 4 <= end; p++) {
        if (check_at(rd, p, NULL, &next) == CHECK_OK) {
            *found = p;
            return true;
        }
    }
    return false;
}

static void recover_msg(uint64_t bad)
{
    printf("recover at %" PRIu64 "\n", bad + 1);
}

static void run(reader *rd, sink *s)
{
    uint64_t pos = 0;
    for (;;) {
        char *line = NULL;
        uint64_t next, found;
        switch (check_at(rd, pos, &line, &next)) {
        case CHECK_OK:
            sink_put(s, line);
            pos = next;
            continue;
        case CHECK_SHORT:
            if (fill(rd, pos) > 0)
                continue;
            if (find_buffered(rd, pos + 1, &found)) {
                recover_msg(pos);
                pos = found;
                continue;
            }
            if (!rd->follow)
                return;                   /* truncated last record: stop cleanly */
            if (wait_growth(rd, s))
                pos = 0;
            continue;
        case CHECK_BAD:
            break;
        }

        /* Resync byte by byte (tools.md §6).  Candidates that run past the end of the
         * input are retried once more data arrives under -f. */
        recover_msg(pos);
        uint64_t p = pos + 1;
        uint64_t first_short = UINT64_MAX;
        for (;;) {
            uint64_t keep = first_short < p ? first_short : p;
            enum check c = check_at(rd, p, NULL, &next);
            if (c == CHECK_OK)
                break;
            if (c == CHECK_SHORT) {
                if (fill(rd, keep) > 0)
                    continue;
                if (avail(rd, p) == 0) {
                    if (!rd->follow)
                        return;
                    if (wait_growth(rd, s)) {
                        p = 0;
                        first_short = UINT64_MAX;
                        break;
                    }
                    if (first_short != UINT64_MAX)
                        p = first_short;
                    first_short = UINT64_MAX;
                    continue;
                }
                if (first_short == UINT64_MAX)
                    first_short = p;
            }
            p++;
        }
        pos = p;
    }
}

/* ================================================================ options */

static void invalid(const char *what, const char *arg)
{
    fprintf(stderr, "kumolog: %s: %s\n", what, arg);
    exit(1);
}

/* OptionParser's Integer: decimal, 0x hex, 0b binary, 0 octal, optional sign. */
static bool parse_int(const char *s, long long *v)
{
    const char *p = s;
    int sign = 1, base = 10;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B')) {
        base = 2;
        p += 2;
    } else if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    } else if (p[0] == '0' && p[1] != '\0') {
        base = 8;
        p += 1;
    }
    if (*p == '\0' || *p == '-' || *p == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long u = strtoull(p, &end, base);
    if (*end != '\0')
        return false;
    if (errno == ERANGE || u > (unsigned long long)LLONG_MAX)
        u = (unsigned long long)LLONG_MAX;   /* a huge N means "everything" anyway */
    *v = sign * (long long)u;
    return true;
}

typedef struct opts {
    bool tail, head, follow;
    long long lines;
    const char *file;
    int nfiles;
} opts;

static void set_lines(opts *o, const char *val, const char *as_typed)
{
    long long v;
    if (!parse_int(val, &v))
        invalid("invalid argument", as_typed);
    o->lines = v;
}

/* --lines / -n with a separate argument: Ruby's "placed" optional argument takes the
 * next word only if it does not start with '-' and is an integer. */
static int lines_next(opts *o, int i, int argc, char **argv)
{
    long long v;
    if (i + 1 < argc && argv[i + 1][0] != '-' && parse_int(argv[i + 1], &v)) {
        o->lines = v;
        return i + 1;
    }
    return i;   /* no argument: N keeps its value */
}

static void parse_options(opts *o, int argc, char **argv)
{
    static const char *const longs[] = { "tail", "head", "follow", "lines" };
    bool only_files = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_files || a[0] != '-' || a[1] == '\0') {
            o->nfiles++;
            if (o->file == NULL)
                o->file = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_files = true;
            continue;
        }
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nl = eq != NULL ? (size_t)(eq - name) : strlen(name);
            const char *opt = NULL;
            int hits = 0;
            for (size_t k = 0; k < 4; k++) {
                if (strlen(longs[k]) == nl && strncmp(longs[k], name, nl) == 0) {
                    opt = longs[k];
                    hits = 1;
                    break;
                }
                if (nl > 0 && strncmp(longs[k], name, nl) == 0) {
                    opt = longs[k];
                    hits++;
                }
            }
            if (hits != 1) {
                opt = NULL;
                if (hits == 0 && nl > 0 && strncmp("help", name, nl) == 0 && nl <= 4)
                    opt = "help";
                else if (hits > 1)
                    invalid("ambiguous option", a);
            }
            if (opt == NULL)
                invalid("invalid option", a);
            if (strcmp(opt, "lines") == 0) {
                if (eq != NULL)
                    set_lines(o, eq + 1, a);
                else
                    i = lines_next(o, i, argc, argv);
                continue;
            }
            if (eq != NULL)
                invalid("needless argument", a);
            if (strcmp(opt, "help") == 0) {
                fputs(USAGE, stdout);
                exit(0);
            }
            if (strcmp(opt, "tail") == 0)
                o->tail = true;
            else if (strcmp(opt, "head") == 0)
                o->head = true;
            else
                o->follow = true;
            continue;
        }
        /* short options, bundled: -tf, -tn5 */
        for (char *c = a + 1; *c != '\0'; c++) {
            if (*c == 't') {
                o->tail = true;
            } else if (*c == 'h') {
                o->head = true;
            } else if (*c == 'f') {
                o->follow = true;
            } else if (*c == 'n') {
                if (c[1] != '\0')
                    set_lines(o, c + 1, a);
                else
                    i = lines_next(o, i, argc, argv);
                break;
            } else {
                char bad[3] = { '-', *c, '\0' };
                invalid("invalid option", bad);
            }
        }
    }
}

int main(int argc, char **argv)
{
    opts o = { .lines = 10 };
    parse_options(&o, argc, argv);
    if (o.nfiles != 1) {
        fputs(USAGE, stdout);
        return 1;
    }

    reader rd = { .fd = -1 };
    if (strcmp(o.file, "-") == 0) {
        rd.fd = STDIN_FILENO;
    } else {
        rd.fd = open(o.file, O_RDONLY | O_CLOEXEC);
        if (rd.fd < 0) {
            fprintf(stderr, "kumolog: %s: %s\n", o.file, strerror(errno));
            return 1;
        }
    }
    struct stat st;
    /* -f polls a regular file for growth; a pipe simply blocks in read() until EOF */
    rd.follow = o.follow && fstat(rd.fd, &st) == 0 && S_ISREG(st.st_mode);

    sink s = { .mode = MODE_ALL };
    if (o.tail) {
        s.mode = o.lines > 0 ? MODE_TAIL_LAST : MODE_TAIL_SKIP;
        s.n = o.lines > 0 ? o.lines : -o.lines;
    } else if (o.head) {
        s.mode = o.lines > 0 ? MODE_HEAD_FIRST : MODE_HEAD_BUTLAST;
        s.n = o.lines > 0 ? o.lines : -o.lines;
    }

    run(&rd, &s);
    sink_end(&s);
    free(rd.buf);
    if (rd.fd != STDIN_FILENO)
        close(rd.fd);
    return 0;
}
