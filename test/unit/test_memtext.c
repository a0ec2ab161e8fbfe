/* test_memtext.c - the memcached text request parser: every command, split and pipelined
 * input, limits, and memcached's exact error replies (DECISIONS.md §3). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/memtext.h"

#define MIB (1024u * 1024u)
#define ALL ((size_t)-1)           /* expected consumed: the whole input */

#define E_BAD "CLIENT_ERROR bad command line format"
#define E_USAGE "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
#define E_DELTA "CLIENT_ERROR invalid numeric delta argument"
#define E_EXPT "CLIENT_ERROR invalid exptime argument"
#define E_CHUNK "CLIENT_ERROR bad data chunk"
#define E_LARGE "SERVER_ERROR object too large for cache"

/* One request and what the parser must make of it.  Fields left out must come back
 * zero/NULL, so every case also checks that nothing leaks between fields. */
typedef struct pcase {
    const char *name;
    const char *in;
    size_t inlen;                  /* 0: strlen(in) */
    size_t max_value;              /* 0: 1 MiB */
    enum memtext_status st;
    size_t consumed;               /* ALL: inlen */
    size_t need;
    const char *err;               /* ERROR: the exact reply line */
    enum memtext_cmd cmd;
    unsigned nkeys;
    const char *key0;
    const char *keylast;           /* NULL: same as key0 */
    uint32_t flags;
    int64_t exptime;
    uint64_t cas;
    uint64_t delta;
    uint32_t verbosity;
    const char *data;              /* NULL: no data block */
    size_t datalen;                /* 0 with data: strlen(data) */
    const char *args;
    bool noreply;
    bool has_delay;
} pcase;

static const pcase cases[] = {
    /* retrieval */
    {"get one key", "get foo\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_GET,
     .nkeys = 1, .key0 = "foo"},
    {"get three keys", "get a bb ccc\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_GET, .nkeys = 3, .key0 = "a", .keylast = "ccc"},
    {"gets two keys", "gets k1 k2\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_GETS, .nkeys = 2, .key0 = "k1", .keylast = "k2"},
    {"get bare LF", "get foo\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_GET,
     .nkeys = 1, .key0 = "foo"},
    {"get runs of spaces", "  get   a  b  \r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_GET, .nkeys = 2, .key0 = "a", .keylast = "b"},
    {"get noreply is a key", "get noreply\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_GET, .nkeys = 1, .key0 = "noreply"},
    {"get utf-8 key", "get k\xc3\xa9y\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_GET, .nkeys = 1, .key0 = "k\xc3\xa9y"},
    {"gat", "gat 100 k1 k2\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_GAT,
     .nkeys = 2, .key0 = "k1", .keylast = "k2", .exptime = 100},
    {"gats negative exptime", "gats -1 k\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_GATS, .nkeys = 1, .key0 = "k", .exptime = -1},

    /* storage */
    {"set", "set k 5 60 3\r\nabc\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .flags = 5, .exptime = 60, .data = "abc"},
    {"set noreply", "set k 0 0 1 noreply\r\nx\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .data = "x", .noreply = true},
    {"set max flags", "set k 4294967295 0 1\r\nx\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .flags = 4294967295u, .data = "x"},
    {"set negative exptime", "set k 0 -1 1\r\nx\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .exptime = -1, .data = "x"},
    {"set empty value", "set k 0 0 0\r\n\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .data = ""},
    {"set unknown 6th token ignored", "set k 0 0 1 junk\r\nx\r\n", .st = MEMTEXT_OK,
     .consumed = ALL, .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .data = "x"},
    {"set data holds CRLF", "set k 0 0 8\r\na\r\nb\r\n\r\n\r\n", .st = MEMTEXT_OK,
     .consumed = ALL, .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .data = "a\r\nb\r\n\r\n"},
    {"set data holds NUL", "set k 0 0 3\r\na\0b\r\n", 18, .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .data = "a\0b", .datalen = 3},
    {"set leaves the next request", "set k 0 0 1\r\nx\r\nget k\r\n", .st = MEMTEXT_OK,
     .consumed = 16, .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k", .data = "x"},
    {"add", "add k 1 2 2\r\nab\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_ADD,
     .nkeys = 1, .key0 = "k", .flags = 1, .exptime = 2, .data = "ab"},
    {"replace", "replace k 0 0 2 noreply\r\nab\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_REPLACE, .nkeys = 1, .key0 = "k", .data = "ab", .noreply = true},
    {"append", "append k 0 0 2\r\nab\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_APPEND, .nkeys = 1, .key0 = "k", .data = "ab"},
    {"prepend", "prepend k 0 0 2\r\nab\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_PREPEND, .nkeys = 1, .key0 = "k", .data = "ab"},
    {"cas", "cas k 1 2 3 18446744073709551615\r\nabc\r\n", .st = MEMTEXT_OK,
     .consumed = ALL, .cmd = MEMTEXT_CAS, .nkeys = 1, .key0 = "k", .flags = 1, .exptime = 2,
     .cas = UINT64_MAX, .data = "abc"},
    {"cas noreply", "cas k 0 0 1 77 noreply\r\nx\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_CAS, .nkeys = 1, .key0 = "k", .cas = 77, .data = "x", .noreply = true},

    /* other commands */
    {"delete", "delete k\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_DELETE,
     .nkeys = 1, .key0 = "k"},
    {"delete noreply", "delete k noreply\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_DELETE, .nkeys = 1, .key0 = "k", .noreply = true},
    {"delete legacy 0", "delete k 0\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_DELETE, .nkeys = 1, .key0 = "k"},
    {"delete legacy 0 noreply", "delete k 0 noreply\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_DELETE, .nkeys = 1, .key0 = "k", .noreply = true},
    {"incr", "incr k 5\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_INCR,
     .nkeys = 1, .key0 = "k", .delta = 5},
    {"decr max noreply", "decr k 18446744073709551615 noreply\r\n", .st = MEMTEXT_OK,
     .consumed = ALL, .cmd = MEMTEXT_DECR, .nkeys = 1, .key0 = "k", .delta = UINT64_MAX,
     .noreply = true},
    {"touch", "touch k 10\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_TOUCH,
     .nkeys = 1, .key0 = "k", .exptime = 10},
    {"touch negative noreply", "touch k -1 noreply\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_TOUCH, .nkeys = 1, .key0 = "k", .exptime = -1, .noreply = true},
    {"flush_all", "flush_all\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_FLUSH_ALL},
    {"flush_all delay", "flush_all 30\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_FLUSH_ALL, .exptime = 30, .has_delay = true},
    {"flush_all noreply", "flush_all noreply\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_FLUSH_ALL, .noreply = true},
    {"flush_all delay noreply", "flush_all 0 noreply\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_FLUSH_ALL, .has_delay = true, .noreply = true},
    {"stats", "stats\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_STATS},
    {"stats slabs", "stats slabs\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_STATS, .args = "slabs"},
    {"stats two args", "stats  detail  dump \r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_STATS, .args = "detail  dump"},
    {"version", "version\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_VERSION},
    {"verbosity", "verbosity 1\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_VERBOSITY, .verbosity = 1},
    {"verbosity noreply", "verbosity 2 noreply\r\n", .st = MEMTEXT_OK, .consumed = ALL,
     .cmd = MEMTEXT_VERBOSITY, .verbosity = 2, .noreply = true},
    {"quit", "quit\r\n", .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_QUIT},

    /* incomplete */
    {"no newline yet", "get foo", .st = MEMTEXT_NEED_MORE},
    {"data block pending", "set k 0 0 10\r\nabc", .st = MEMTEXT_NEED_MORE, .need = 26},
    {"data terminator pending", "set k 0 0 3\r\nabc\r", .st = MEMTEXT_NEED_MORE,
     .need = 18},
    {"bad line waits for its end", "bogus", .st = MEMTEXT_NEED_MORE},

    /* unknown command / wrong argument count: ERROR */
    {"unknown command", "bogus\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"empty line", "\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"empty LF line", "\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"blank line", "   \r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"upper case", "GET foo\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"command prefix", "ge foo\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"command suffix", "getx foo\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"get without key", "get\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"gat without key", "gat 10\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"set too few", "set k 0 0\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = "ERROR"},
    {"set too many", "set k 0 0 1 noreply x\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = "ERROR"},
    {"cas without unique", "cas k 0 0 1\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = "ERROR"},
    {"delete without key", "delete\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = "ERROR"},
    {"delete too many", "delete k 0 noreply x\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = "ERROR"},
    {"incr without value", "incr k\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = "ERROR"},
    {"touch without exptime", "touch k\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = "ERROR"},
    {"flush_all too many", "flush_all 1 noreply x\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = "ERROR"},
    {"verbosity without level", "verbosity\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = "ERROR"},
    {"error drops only its line", "bogus\r\nget k\r\n", .st = MEMTEXT_ERROR, .consumed = 7,
     .err = "ERROR"},

    /* bad numbers */
    {"set bad bytes", "set k 0 0 abc\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_BAD, .cmd = MEMTEXT_SET},
    {"set negative bytes", "set k 0 0 -1\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_BAD, .cmd = MEMTEXT_SET},
    {"set bytes beyond int", "set k 0 0 99999999999\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_BAD, .cmd = MEMTEXT_SET},
    /* the count is good, so the data block goes with the bad line */
    {"set bad flags drops data", "set k abc 0 1\r\nx\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_BAD, .cmd = MEMTEXT_SET},
    {"set flags over 32 bits", "set k 4294967296 0 1\r\nx\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_BAD, .cmd = MEMTEXT_SET},
    {"set negative flags", "set k -1 0 1\r\nx\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_BAD, .cmd = MEMTEXT_SET},
    {"set exptime over 32 bits", "set k 0 2147483648 1\r\nx\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_BAD, .cmd = MEMTEXT_SET},
    {"set bad flags waits for data", "set k x 0 5\r\nab", .st = MEMTEXT_NEED_MORE,
     .need = 20},
    {"cas negative unique", "cas k 0 0 1 -5\r\nx\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_BAD, .cmd = MEMTEXT_CAS},
    {"incr bad delta", "incr k abc\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_DELTA, .cmd = MEMTEXT_INCR},
    {"decr negative delta", "decr k -1\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_DELTA, .cmd = MEMTEXT_DECR},
    {"incr delta overflow", "incr k 18446744073709551616\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_DELTA, .cmd = MEMTEXT_INCR},
    {"touch bad exptime", "touch k soon\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_EXPT, .cmd = MEMTEXT_TOUCH},
    {"gat bad exptime", "gat soon k\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_EXPT, .cmd = MEMTEXT_GAT},
    {"flush_all bad delay", "flush_all later\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_EXPT, .cmd = MEMTEXT_FLUSH_ALL},
    {"verbosity bad level", "verbosity loud\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_BAD, .cmd = MEMTEXT_VERBOSITY},

    /* delete's legacy hold time */
    {"delete nonzero time", "delete k 5\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_USAGE, .cmd = MEMTEXT_DELETE},
    {"delete nonzero time noreply", "delete k 5 noreply\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_USAGE, .cmd = MEMTEXT_DELETE, .noreply = true},
    {"delete noreply then 0", "delete k noreply 0\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_USAGE, .cmd = MEMTEXT_DELETE},

    /* keys */
    {"control byte in get key", "get a\x01" "b\r\n", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_BAD, .cmd = MEMTEXT_GET},
    {"tab in key", "delete a\tb\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = E_BAD,
     .cmd = MEMTEXT_DELETE},
    {"CR inside key", "get a\rb\r\n", .st = MEMTEXT_ERROR, .consumed = ALL, .err = E_BAD,
     .cmd = MEMTEXT_GET},
    {"NUL in key", "get a\0b\r\n", 9, .st = MEMTEXT_ERROR, .consumed = ALL, .err = E_BAD,
     .cmd = MEMTEXT_GET},
    {"DEL in set key drops data", "set k\x7f 0 0 1\r\nx\r\n", .st = MEMTEXT_ERROR,
     .consumed = ALL, .err = E_BAD, .cmd = MEMTEXT_SET},

    /* data blocks */
    {"bad data chunk", "set k 0 0 3\r\nabcXY", .st = MEMTEXT_ERROR, .consumed = ALL,
     .err = E_CHUNK, .cmd = MEMTEXT_SET},
    /* a client that under-counts: line + 3 + 2 go, the stray "\n" is the next (bad) line */
    {"data longer than count", "set k 0 0 3\r\nabcd\r\n", .st = MEMTEXT_ERROR,
     .consumed = 18, .err = E_CHUNK, .cmd = MEMTEXT_SET},
    {"object too large", "set k 0 0 11\r\n", .max_value = 10, .st = MEMTEXT_ERROR,
     .consumed = ALL, .need = 13, .err = E_LARGE, .cmd = MEMTEXT_SET},
    {"object too large noreply", "cas k 0 0 11 1 noreply\r\nhello", .max_value = 10,
     .st = MEMTEXT_ERROR, .consumed = 24, .need = 13, .err = E_LARGE, .cmd = MEMTEXT_CAS,
     .noreply = true},
    {"value at the limit", "set k 0 0 10\r\n0123456789\r\n", .max_value = 10,
     .st = MEMTEXT_OK, .consumed = ALL, .cmd = MEMTEXT_SET, .nkeys = 1, .key0 = "k",
     .data = "0123456789"},
};

static size_t case_len(const pcase *c)
{
    return c->inlen ? c->inlen : strlen(c->in);
}

static void check_key(const memtext_request *req, unsigned i, const char *want,
                      const char *buf, size_t len)
{
    assert_int_equal(req->keys[i].len, strlen(want));
    assert_memory_equal(req->keys[i].ptr, want, strlen(want));
    /* keys borrow the input buffer */
    assert_true(req->keys[i].ptr >= buf && req->keys[i].ptr + req->keys[i].len <= buf + len);
}

static void run_case(const pcase *c)
{
    memtext_request req;
    size_t len = case_len(c);
    size_t consumed = 12345, need = 12345;
    const char *err = "stale";
    /* a private copy so a read past inlen shows up under ASan */
    char *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    memcpy(buf, c->in, len);

    print_message("case: %s\n", c->name);
    enum memtext_status st = memtext_parse(buf, len, c->max_value ? c->max_value : MIB,
                                           &req, &consumed, &need, &err);
    assert_int_equal(st, c->st);
    assert_int_equal(consumed, c->consumed == ALL ? len : c->consumed);
    assert_int_equal(need, c->need);

    if (c->st == MEMTEXT_ERROR) {
        assert_non_null(err);
        assert_string_equal(err, c->err);
        /* a plain ERROR may come before the command is known */
        if (strcmp(c->err, "ERROR") != 0)
            assert_int_equal(req.cmd, c->cmd);
        assert_int_equal(req.noreply, c->noreply);
    }
    if (c->st != MEMTEXT_OK) {
        free(buf);
        return;
    }
    assert_null(err);
    assert_int_equal(req.cmd, c->cmd);
    assert_int_equal(req.nkeys, c->nkeys);
    if (c->nkeys) {
        check_key(&req, 0, c->key0, buf, len);
        check_key(&req, c->nkeys - 1, c->keylast ? c->keylast : c->key0, buf, len);
    }
    assert_int_equal(req.flags, c->flags);
    assert_int_equal(req.exptime, c->exptime);
    assert_int_equal(req.cas, c->cas);
    assert_int_equal(req.delta, c->delta);
    assert_int_equal(req.verbosity, c->verbosity);
    assert_int_equal(req.noreply, c->noreply);
    assert_int_equal(req.has_delay, c->has_delay);
    if (c->data) {
        size_t dl = c->datalen ? c->datalen : strlen(c->data);
        assert_non_null(req.data);
        assert_int_equal(req.datalen, dl);
        assert_memory_equal(req.data, c->data, dl);
        assert_true(req.data >= buf && req.data + dl <= buf + len);
    } else {
        assert_null(req.data);
        assert_int_equal(req.datalen, 0);
    }
    if (c->args) {
        assert_int_equal(req.argslen, strlen(c->args));
        assert_memory_equal(req.args, c->args, strlen(c->args));
    } else {
        assert_int_equal(req.argslen, 0);
    }
    free(buf);
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(&cases[i]);
}

/* Every strict prefix of a valid request needs more; the whole of it parses.  Once the
 * command line is in, *need names the full request length. */
static void test_split(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "get a bb ccc\r\n",
        "gats 5 k\r\n",
        "set k 1 2 5\r\nab\r\nc\r\n",
        "cas k 0 0 1 9 noreply\r\nx\r\n",
        "delete k 0 noreply\r\n",
        "incr k 1\n",
        "flush_all 10\r\n",
        "stats items\r\n",
    };
    for (size_t r = 0; r < sizeof(reqs) / sizeof(reqs[0]); r++) {
        size_t full = strlen(reqs[r]);
        const char *nl = strchr(reqs[r], '\n');
        size_t line = (size_t)(nl - reqs[r]) + 1;
        memtext_request req;
        size_t consumed, need;
        const char *err;
        for (size_t n = 0; n < full; n++) {
            char *buf = malloc(n ? n : 1);
            assert_non_null(buf);
            memcpy(buf, reqs[r], n);
            print_message("split: request %zu, %zu bytes\n", r, n);
            assert_int_equal(memtext_parse(buf, n, MIB, &req, &consumed, &need, &err),
                             MEMTEXT_NEED_MORE);
            assert_int_equal(consumed, 0);
            assert_int_equal(need, n >= line ? full : 0);
            free(buf);
        }
        assert_int_equal(memtext_parse(reqs[r], full, MIB, &req, &consumed, &need, &err),
                         MEMTEXT_OK);
        assert_int_equal(consumed, full);
    }
}

/* Three requests in one read: the caller loops on what is left. */
static void test_pipelined(void **state)
{
    (void)state;
    static const char in[] = "set a 0 0 2\r\nhi\r\nget a b\r\ndelete a noreply\r\nget";
    static const enum memtext_cmd want[] = {MEMTEXT_SET, MEMTEXT_GET, MEMTEXT_DELETE};
    const char *p = in;
    size_t left = sizeof(in) - 1;
    memtext_request req;
    size_t consumed, need;
    const char *err;

    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(memtext_parse(p, left, MIB, &req, &consumed, &need, &err),
                         MEMTEXT_OK);
        assert_int_equal(req.cmd, want[i]);
        p += consumed;
        left -= consumed;
    }
    assert_int_equal(req.noreply, true);
    /* the partial fourth request waits */
    assert_int_equal(left, 3);
    assert_int_equal(memtext_parse(p, left, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_NEED_MORE);
}

/* After an error the stream carries on with the next request. */
static void test_resync_after_errors(void **state)
{
    (void)state;
    static const char in[] =
        "bogus\r\nset k 0 0 2\r\nabXYget a\r\nincr k x\r\nversion\r\n";
    static const enum memtext_status want[] = {
        MEMTEXT_ERROR, MEMTEXT_ERROR, MEMTEXT_OK, MEMTEXT_ERROR, MEMTEXT_OK};
    const char *p = in;
    size_t left = sizeof(in) - 1;
    memtext_request req;
    size_t consumed, need;
    const char *err;

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(memtext_parse(p, left, MIB, &req, &consumed, &need, &err), want[i]);
        assert_true(consumed > 0);
        p += consumed;
        left -= consumed;
    }
    assert_int_equal(req.cmd, MEMTEXT_VERSION);
    assert_int_equal(left, 0);
}

static char *make_set(size_t bytes, size_t *len)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "set big 0 0 %zu\r\n", bytes);
    char *buf = malloc((size_t)n + bytes + 2);
    assert_non_null(buf);
    memcpy(buf, line, (size_t)n);
    for (size_t i = 0; i < bytes; i++)
        buf[(size_t)n + i] = (char)(i * 7);     /* every byte value, CR and LF included */
    memcpy(buf + n + bytes, "\r\n", 2);
    *len = (size_t)n + bytes + 2;
    return buf;
}

static void test_value_limit(void **state)
{
    (void)state;
    memtext_request req;
    size_t consumed, need, len;
    const char *err;

    char *buf = make_set(MIB, &len);
    assert_int_equal(memtext_parse(buf, len, MIB, &req, &consumed, &need, &err), MEMTEXT_OK);
    assert_int_equal(consumed, len);
    assert_int_equal(req.datalen, MIB);
    assert_ptr_equal(req.data, buf + len - MIB - 2);
    /* short by one byte: asks for the whole request */
    assert_int_equal(memtext_parse(buf, len - 1, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_NEED_MORE);
    assert_int_equal(need, len);
    free(buf);

    buf = make_set(MIB + 1, &len);
    size_t line = strlen("set big 0 0 1048577\r\n");
    assert_int_equal(memtext_parse(buf, len, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_ERROR);
    assert_string_equal(err, E_LARGE);
    assert_int_equal(consumed, line);
    assert_int_equal(need, MIB + 1 + 2);
    /* the error does not wait for the block: the line alone is enough */
    assert_int_equal(memtext_parse(buf, line, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_ERROR);
    assert_int_equal(need, MIB + 3);
    free(buf);
}

typedef struct keycase {
    const char *cmd_fmt;           /* %s = the key */
    size_t keylen;
    enum memtext_status st;
} keycase;

static void test_key_length(void **state)
{
    (void)state;
    static const keycase kc[] = {
        {"get %s\r\n", 250, MEMTEXT_OK},
        {"get %s\r\n", 251, MEMTEXT_ERROR},
        {"get a %s b\r\n", 251, MEMTEXT_ERROR},
        {"set %s 0 0 1\r\nx\r\n", 250, MEMTEXT_OK},
        {"set %s 0 0 1\r\nx\r\n", 251, MEMTEXT_ERROR},
        {"delete %s\r\n", 251, MEMTEXT_ERROR},
        {"incr %s 1\r\n", 251, MEMTEXT_ERROR},
        {"touch %s 1\r\n", 251, MEMTEXT_ERROR},
        {"gat 1 %s\r\n", 251, MEMTEXT_ERROR},
    };
    char key[300], buf[400];
    for (size_t i = 0; i < sizeof(kc) / sizeof(kc[0]); i++) {
        memset(key, 'k', kc[i].keylen);
        key[kc[i].keylen] = '\0';
        int n = snprintf(buf, sizeof(buf), kc[i].cmd_fmt, key);
        memtext_request req;
        size_t consumed, need;
        const char *err = NULL;
        print_message("key case %zu\n", i);
        assert_int_equal(memtext_parse(buf, (size_t)n, MIB, &req, &consumed, &need, &err),
                         kc[i].st);
        /* a bad key drops the whole request, data block included */
        assert_int_equal(consumed, (size_t)n);
        if (kc[i].st == MEMTEXT_OK) {
            assert_int_equal(req.keys[0].len, kc[i].keylen);
        } else {
            assert_string_equal(err, E_BAD);
        }
    }
}

static void test_key_count(void **state)
{
    (void)state;
    /* "get" + n keys of "kNNN" */
    for (unsigned n = MEMTEXT_MAX_KEYS; n <= MEMTEXT_MAX_KEYS + 1; n++) {
        char *buf = malloc(8 + (size_t)n * 6);
        assert_non_null(buf);
        size_t len = (size_t)sprintf(buf, "get");
        for (unsigned i = 0; i < n; i++)
            len += (size_t)sprintf(buf + len, " k%03u", i);
        len += (size_t)sprintf(buf + len, "\r\n");
        memtext_request req;
        size_t consumed, need;
        const char *err;
        enum memtext_status st = memtext_parse(buf, len, MIB, &req, &consumed, &need, &err);
        if (n <= MEMTEXT_MAX_KEYS) {
            assert_int_equal(consumed, len);
            assert_int_equal(st, MEMTEXT_OK);
            assert_int_equal(req.nkeys, n);
            assert_memory_equal(req.keys[n - 1].ptr, "k255", 4);
        } else {
            /* no key limit (issue 11): the caller streams the keys after "get" */
            assert_int_equal(st, MEMTEXT_STREAM);
            assert_int_equal(req.cmd, MEMTEXT_GET);
            assert_int_equal(consumed, 3);
        }
        free(buf);
    }
}

/* A multiget of the most keys of the longest length is far past MEMTEXT_LINE_MAX and
 * must still parse; any other command line that long is refused. */
static void test_long_lines(void **state)
{
    (void)state;
    size_t cap = 16 + MEMTEXT_MAX_KEYS * (MC_KEY_MAX + 1);
    char *buf = malloc(cap);
    assert_non_null(buf);
    memtext_request req;
    size_t consumed, need;
    const char *err;

    size_t len = (size_t)sprintf(buf, "get");
    for (unsigned i = 0; i < MEMTEXT_MAX_KEYS; i++) {
        buf[len++] = ' ';
        memset(buf + len, 'a' + (char)(i % 26), MC_KEY_MAX);
        len += MC_KEY_MAX;
    }
    memcpy(buf + len, "\r\n", 2);
    len += 2;
    assert_true(len > MEMTEXT_LINE_MAX);
    assert_int_equal(memtext_parse(buf, len, MIB, &req, &consumed, &need, &err), MEMTEXT_OK);
    assert_int_equal(req.nkeys, MEMTEXT_MAX_KEYS);
    assert_int_equal(consumed, len);
    /* partial and past MEMTEXT_LINE_MAX: streamed from after the command word */
    assert_int_equal(memtext_parse(buf, len - 2, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_STREAM);
    assert_int_equal(consumed, 3);
    /* partial within MEMTEXT_LINE_MAX: still waiting */
    assert_int_equal(memtext_parse(buf, MEMTEXT_LINE_MAX, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_NEED_MORE);
    /* gat streams after its exptime, which must be whole and valid */
    memcpy(buf, "gat 9 ", 6);
    assert_int_equal(memtext_parse(buf, len - 2, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_STREAM);
    assert_int_equal(consumed, 5);
    assert_int_equal(req.exptime, 9);
    assert_int_equal(req.cmd, MEMTEXT_GAT);
    memcpy(buf, "gat x ", 6);
    assert_int_equal(memtext_parse(buf, len - 2, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_ERROR);
    assert_string_equal(err, "CLIENT_ERROR invalid exptime argument");

    /* a non-get line past the limit without "\n": drop all, then skip to the line end */
    memset(buf, 'x', MEMTEXT_LINE_MAX + 10);
    memcpy(buf, "set ", 4);
    assert_int_equal(memtext_parse(buf, MEMTEXT_LINE_MAX + 10, MIB, &req, &consumed, &need,
                                   &err), MEMTEXT_ERROR);
    assert_int_equal(consumed, MEMTEXT_LINE_MAX + 10);
    assert_int_equal(need, 0);
    assert_string_equal(err, "CLIENT_ERROR line too long");
    /* exactly at the limit it still waits for the "\n" */
    assert_int_equal(memtext_parse(buf, MEMTEXT_LINE_MAX, MIB, &req, &consumed, &need, &err),
                     MEMTEXT_NEED_MORE);
    assert_int_equal(req.cmd, MEMTEXT_SET);   /* textconn closes after an unended set */
    /* a whole over-long storage line is parsed like any other (here: too few tokens) */
    memcpy(buf + MEMTEXT_LINE_MAX + 10, "\r\nversion\r\n", 11);
    assert_int_equal(memtext_parse(buf, MEMTEXT_LINE_MAX + 21, MIB, &req, &consumed, &need,
                                   &err), MEMTEXT_ERROR);
    assert_int_equal(consumed, MEMTEXT_LINE_MAX + 12);
    assert_string_equal(err, "ERROR");
    /* the whole over-long line of another command: only that line goes */
    memcpy(buf, "incr", 4);
    assert_int_equal(memtext_parse(buf, MEMTEXT_LINE_MAX + 21, MIB, &req, &consumed, &need,
                                   &err), MEMTEXT_ERROR);
    assert_int_equal(consumed, MEMTEXT_LINE_MAX + 12);
    assert_string_equal(err, "CLIENT_ERROR line too long");
    free(buf);
}

static void test_skip_line(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t want;
    } sk[] = {
        {"", 0}, {"abc", 0}, {"\n", 1}, {"abc\r\nget", 5}, {"x\ny\n", 2},
    };
    for (size_t i = 0; i < sizeof(sk) / sizeof(sk[0]); i++)
        assert_int_equal(memtext_skip_line(sk[i].in, strlen(sk[i].in)), sk[i].want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_resync_after_errors),
        cmocka_unit_test(test_value_limit),
        cmocka_unit_test(test_key_length),
        cmocka_unit_test(test_key_count),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_skip_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
