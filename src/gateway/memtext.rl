/* memtext.rl - memcached text protocol request parser: a ragel machine reads the command
 * line once (command word + tokens), then C checks each command's shape as memcached 1.6. */
#include "gateway/memtext.h"

#include <string.h>

/* A get line holds up to MEMTEXT_MAX_KEYS keys of MC_KEY_MAX bytes, which is far
 * more than MEMTEXT_LINE_MAX; memcached likewise lets only multigets grow past its line
 * buffer.  Other commands are held to MEMTEXT_LINE_MAX. */
#define GET_LINE_MAX (MEMTEXT_LINE_MAX + MEMTEXT_MAX_KEYS * (MC_KEY_MAX + 1))

/* gat carries the exptime before its keys, so one spare slot beyond the key limit;
 * a second one lets us tell "exactly the limit" from "too many". */
#define TOK_CAP (MEMTEXT_MAX_KEYS + 2)

#define MSG_ERROR "ERROR"
#define MSG_BAD_FORMAT "CLIENT_ERROR bad command line format"
#define MSG_BAD_DELETE "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
#define MSG_BAD_DELTA "CLIENT_ERROR invalid numeric delta argument"
#define MSG_BAD_EXPTIME "CLIENT_ERROR invalid exptime argument"
#define MSG_BAD_CHUNK "CLIENT_ERROR bad data chunk"
#define MSG_TOO_LARGE "SERVER_ERROR object too large for cache"
#define MSG_LINE_TOO_LONG "CLIENT_ERROR line too long"

typedef struct token {
    const char *ptr;
    size_t len;
} token;

/* What the ragel pass over one command line found. */
typedef struct line_scan {
    bool have_cmd;                 /* the command word was recognised */
    bool failed;                   /* the machine hit a byte no request can contain */
    enum memtext_cmd cmd;
    token toks[TOK_CAP];           /* arguments after the command word */
    size_t ntoks;                  /* may exceed TOK_CAP; only TOK_CAP are stored */
    const char *args_end;          /* end of the last argument, stored or not */
    size_t nl;                     /* index of the terminating '\n', if found */
    bool have_nl;
} line_scan;

%%{
    machine memtext;

    action tok_start { tok_p = p; }
    action tok_end {
        if (ls->ntoks < TOK_CAP) {
            ls->toks[ls->ntoks].ptr = tok_p;
            ls->toks[ls->ntoks].len = (size_t)(p - tok_p);
        }
        ls->ntoks++;
        ls->args_end = p;
    }
    action eol {
        ls->nl = (size_t)(p - buf);
        ls->have_nl = true;
        fbreak;
    }

    action c_get { ls->cmd = MEMTEXT_GET; ls->have_cmd = true; }
    action c_gets { ls->cmd = MEMTEXT_GETS; ls->have_cmd = true; }
    action c_gat { ls->cmd = MEMTEXT_GAT; ls->have_cmd = true; }
    action c_gats { ls->cmd = MEMTEXT_GATS; ls->have_cmd = true; }
    action c_set { ls->cmd = MEMTEXT_SET; ls->have_cmd = true; }
    action c_add { ls->cmd = MEMTEXT_ADD; ls->have_cmd = true; }
    action c_replace { ls->cmd = MEMTEXT_REPLACE; ls->have_cmd = true; }
    action c_append { ls->cmd = MEMTEXT_APPEND; ls->have_cmd = true; }
    action c_prepend { ls->cmd = MEMTEXT_PREPEND; ls->have_cmd = true; }
    action c_cas { ls->cmd = MEMTEXT_CAS; ls->have_cmd = true; }
    action c_delete { ls->cmd = MEMTEXT_DELETE; ls->have_cmd = true; }
    action c_incr { ls->cmd = MEMTEXT_INCR; ls->have_cmd = true; }
    action c_decr { ls->cmd = MEMTEXT_DECR; ls->have_cmd = true; }
    action c_touch { ls->cmd = MEMTEXT_TOUCH; ls->have_cmd = true; }
    action c_flush_all { ls->cmd = MEMTEXT_FLUSH_ALL; ls->have_cmd = true; }
    action c_stats { ls->cmd = MEMTEXT_STATS; ls->have_cmd = true; }
    action c_version { ls->cmd = MEMTEXT_VERSION; ls->have_cmd = true; }
    action c_verbosity { ls->cmd = MEMTEXT_VERBOSITY; ls->have_cmd = true; }
    action c_quit { ls->cmd = MEMTEXT_QUIT; ls->have_cmd = true; }

    # Command words are case-sensitive in memcached.  The leaving actions fire only
    # when a separator or the line end follows, so "getx" or "gets" never match "get".
    command =
          "get" %c_get | "gets" %c_gets | "gat" %c_gat | "gats" %c_gats
        | "set" %c_set | "add" %c_add | "replace" %c_replace
        | "append" %c_append | "prepend" %c_prepend | "cas" %c_cas
        | "delete" %c_delete | "incr" %c_incr | "decr" %c_decr | "touch" %c_touch
        | "flush_all" %c_flush_all | "stats" %c_stats | "version" %c_version
        | "verbosity" %c_verbosity | "quit" %c_quit;

    # memcached splits on runs of spaces and drops one "\r" before the "\n"; a lone
    # "\r" elsewhere is a control byte no valid token may hold.
    arg = ( any - [ \r\n] )+ >tok_start %tok_end;
    main := ' '* command ( ' '+ arg )* ' '* '\r'? '\n' @eol;

    write data noerror nofinal noentry;
}%%

/* ragel -G2 jumps between case labels with goto; gcc reads that as fall-through. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"

/* Run the machine over buf[0..len) until the first '\n'.  One pass: after a machine
 * error only memchr looks for the line end. */
static void scan_line(const char *buf, size_t len, line_scan *ls)
{
    const char *p = buf, *pe = buf + len;
    const char *tok_p = buf;
    int cs;

    ls->have_cmd = false;
    ls->failed = false;
    ls->ntoks = 0;
    ls->have_nl = false;
    ls->nl = 0;
    ls->args_end = buf;

    %% write init;
    %% write exec;

    if (!ls->have_nl && cs == 0) {  /* 0 is ragel's error state */
        ls->failed = true;
        const char *nl = memchr(p, '\n', (size_t)(pe - p));
        if (nl) {
            ls->nl = (size_t)(nl - buf);
            ls->have_nl = true;
        }
    }
}

#pragma GCC diagnostic pop

static bool tok_is(const token *t, const char *s)
{
    size_t n = strlen(s);
    return t->len == n && memcmp(t->ptr, s, n) == 0;
}

/* Unsigned decimal, digits only (memcached's safe_strtoull refuses a sign), at most max. */
static bool parse_uint(const token *t, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (t->len == 0)
        return false;
    for (size_t i = 0; i < t->len; i++) {
        unsigned d = (unsigned char)t->ptr[i] - '0';
        if (d > 9 || v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Signed 32-bit decimal as memcached's safe_strtol (exptime is int32 there). */
static bool parse_int32(const token *t, int64_t *out)
{
    token digits = *t;
    bool neg = false;
    uint64_t v;
    if (digits.len > 0 && digits.ptr[0] == '-') {
        neg = true;
        digits.ptr++;
        digits.len--;
    }
    if (!parse_uint(&digits, neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX, &v))
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

/* memcached checks only the length; DECISIONS.md §3 also forbids spaces (impossible
 * after tokenising) and control bytes. */
static bool key_ok(const token *t)
{
    if (t->len == 0 || t->len > MC_KEY_MAX)
        return false;
    for (size_t i = 0; i < t->len; i++) {
        unsigned char c = (unsigned char)t->ptr[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static void set_key(memtext_request *req, const token *t)
{
    req->keys[0].ptr = t->ptr;
    req->keys[0].len = t->len;
    req->nkeys = 1;
}

/* memcached's set_noreply_maybe: the last token decides, whatever it follows. */
static bool last_is_noreply(const line_scan *ls)
{
    return ls->ntoks > 0 && tok_is(&ls->toks[ls->ntoks - 1], "noreply");
}

/* Outcome of checking one command line. */
typedef struct verdict {
    const char *err;               /* NULL: the line is a valid request */
    bool has_data;                 /* a data block follows (dropped with the line on error) */
    uint64_t bytes;                /* its length without "\r\n" */
    bool too_large;                /* bytes > max_value: the caller drops bytes + 2 later */
} verdict;

static verdict check_retrieval(const line_scan *ls, memtext_request *req)
{
    verdict v = {0};
    size_t first = 0;
    bool touch = ls->cmd == MEMTEXT_GAT || ls->cmd == MEMTEXT_GATS;

    if (touch) {
        /* memcached would answer a bare "gat <exptime>" with END; a request without a
         * key is useless, so it is a wrong argument count here. */
        if (ls->ntoks < 2) {
            v.err = MSG_ERROR;
            return v;
        }
        if (!parse_int32(&ls->toks[0], &req->exptime)) {
            v.err = MSG_BAD_EXPTIME;
            return v;
        }
        first = 1;
    } else if (ls->ntoks < 1) {
        v.err = MSG_ERROR;
        return v;
    }
    if (ls->ntoks - first > MEMTEXT_MAX_KEYS) {
        v.err = MSG_BAD_FORMAT;
        return v;
    }
    for (size_t i = first; i < ls->ntoks; i++) {
        if (!key_ok(&ls->toks[i])) {
            v.err = MSG_BAD_FORMAT;
            return v;
        }
        req->keys[req->nkeys].ptr = ls->toks[i].ptr;
        req->keys[req->nkeys].len = ls->toks[i].len;
        req->nkeys++;
    }
    return v;
}

/* set/add/replace/append/prepend <key> <flags> <exptime> <bytes> [noreply]
 * cas <key> <flags> <exptime> <bytes> <cas unique> [noreply] */
static verdict check_storage(const line_scan *ls, memtext_request *req, size_t max_value)
{
    verdict v = {0};
    size_t nfixed = ls->cmd == MEMTEXT_CAS ? 5 : 4;
    uint64_t u;

    /* memcached's WANT_TOKENS_OR: the fixed fields plus one optional token, which sets
     * noreply only if it reads "noreply" (anything else there is ignored). */
    if (ls->ntoks != nfixed && ls->ntoks != nfixed + 1) {
        v.err = MSG_ERROR;
        return v;
    }
    req->noreply = ls->ntoks == nfixed + 1 && last_is_noreply(ls);
    set_key(req, &ls->toks[0]);

    /* Known length: a bad key, flags, exptime or cas still lets us drop the data block
     * too, so a value is never run as a command (memcached drops only the line). */
    if (parse_uint(&ls->toks[3], INT32_MAX - 2, &u) && u <= max_value) {
        v.has_data = true;
        v.bytes = u;
    }
    if (!key_ok(&ls->toks[0])) {
        v.err = MSG_BAD_FORMAT;
        return v;
    }
    if (!parse_uint(&ls->toks[1], UINT32_MAX, &u) || !parse_int32(&ls->toks[2], &req->exptime)) {
        v.err = MSG_BAD_FORMAT;
        return v;
    }
    req->flags = (uint32_t)u;
    if (ls->cmd == MEMTEXT_CAS && !parse_uint(&ls->toks[4], UINT64_MAX, &req->cas)) {
        v.err = MSG_BAD_FORMAT;
        return v;
    }
    /* memcached reads bytes as a signed int and refuses < 0 and > INT_MAX - 2. */
    if (!parse_uint(&ls->toks[3], INT32_MAX - 2, &u)) {
        v.err = MSG_BAD_FORMAT;
        return v;
    }
    v.bytes = u;
    if (u > max_value) {
        v.err = MSG_TOO_LARGE;
        v.too_large = true;
        return v;
    }
    v.has_data = true;
    req->datalen = (size_t)u;
    return v;
}

static verdict check_delete(const line_scan *ls, memtext_request *req)
{
    verdict v = {0};

    if (ls->ntoks < 1 || ls->ntoks > 3) {
        v.err = MSG_ERROR;
        return v;
    }
    if (ls->ntoks > 1) {
        /* Legacy "delete <key> 0 [noreply]": a hold time other than 0 is gone. */
        bool hold_is_zero = tok_is(&ls->toks[1], "0");
        bool noreply = last_is_noreply(ls);
        bool valid = (ls->ntoks == 2 && (hold_is_zero || noreply))
                  || (ls->ntoks == 3 && hold_is_zero && noreply);
        req->noreply = noreply;
        if (!valid) {
            v.err = MSG_BAD_DELETE;
            return v;
        }
    }
    set_key(req, &ls->toks[0]);
    if (!key_ok(&ls->toks[0]))
        v.err = MSG_BAD_FORMAT;
    return v;
}

/* incr/decr <key> <value> [noreply]; touch <key> <exptime> [noreply] */
static verdict check_key_number(const line_scan *ls, memtext_request *req)
{
    verdict v = {0};

    if (ls->ntoks != 2 && ls->ntoks != 3) {
        v.err = MSG_ERROR;
        return v;
    }
    req->noreply = last_is_noreply(ls);
    set_key(req, &ls->toks[0]);
    if (!key_ok(&ls->toks[0])) {
        v.err = MSG_BAD_FORMAT;
        return v;
    }
    if (ls->cmd == MEMTEXT_TOUCH) {
        if (!parse_int32(&ls->toks[1], &req->exptime))
            v.err = MSG_BAD_EXPTIME;
    } else if (!parse_uint(&ls->toks[1], UINT64_MAX, &req->delta)) {
        v.err = MSG_BAD_DELTA;
    }
    return v;
}

static verdict check_other(const line_scan *ls, memtext_request *req)
{
    verdict v = {0};
    uint64_t u;

    switch (ls->cmd) {
    case MEMTEXT_FLUSH_ALL:
        if (ls->ntoks > 2) {
            v.err = MSG_ERROR;
            break;
        }
        req->noreply = last_is_noreply(ls);
        /* as memcached: a first token is a delay unless it is the lone "noreply" */
        if (ls->ntoks != (req->noreply ? 1u : 0u)) {
            if (!parse_int32(&ls->toks[0], &req->exptime))
                v.err = MSG_BAD_EXPTIME;
            else
                req->has_delay = true;
        }
        break;
    case MEMTEXT_VERBOSITY:
        if (ls->ntoks != 1 && ls->ntoks != 2) {
            v.err = MSG_ERROR;
            break;
        }
        req->noreply = last_is_noreply(ls);
        if (!parse_uint(&ls->toks[0], UINT32_MAX, &u))
            v.err = MSG_BAD_FORMAT;
        else
            req->verbosity = (uint32_t)u;
        break;
    case MEMTEXT_STATS:
        if (ls->ntoks > 0) {
            /* everything from the first to the last argument, inner spaces kept */
            req->args = ls->toks[0].ptr;
            req->argslen = (size_t)(ls->args_end - ls->toks[0].ptr);
        }
        break;
    default:
        /* version, quit: memcached ignores any arguments */
        break;
    }
    return v;
}

static verdict check_line(const line_scan *ls, memtext_request *req, size_t max_value)
{
    switch (ls->cmd) {
    case MEMTEXT_GET: case MEMTEXT_GETS: case MEMTEXT_GAT: case MEMTEXT_GATS:
        return check_retrieval(ls, req);
    case MEMTEXT_SET: case MEMTEXT_ADD: case MEMTEXT_REPLACE: case MEMTEXT_APPEND:
    case MEMTEXT_PREPEND: case MEMTEXT_CAS:
        return check_storage(ls, req, max_value);
    case MEMTEXT_DELETE:
        return check_delete(ls, req);
    case MEMTEXT_INCR: case MEMTEXT_DECR: case MEMTEXT_TOUCH:
        return check_key_number(ls, req);
    default:
        return check_other(ls, req);
    }
}

static void reset_request(memtext_request *req)
{
    /* keys[] is left alone: only keys[0..nkeys) are meaningful, and clearing 4 KiB per
     * request would cost more than the parse. */
    req->nkeys = 0;
    req->flags = 0;
    req->exptime = 0;
    req->cas = 0;
    req->delta = 0;
    req->verbosity = 0;
    req->data = NULL;
    req->datalen = 0;
    req->args = NULL;
    req->argslen = 0;
    req->noreply = false;
    req->has_delay = false;
}

/* memcached hangs up on an unknown command whose last space-separated word starts with
 * "HTTP/" ("GET / HTTP/1.0"): a web client talking to a cache. */
static bool looks_like_http(const char *line, size_t nl)
{
    size_t end = nl;
    if (end > 0 && line[end - 1] == '\r')
        end--;
    while (end > 0 && line[end - 1] == ' ')
        end--;
    size_t start = end;
    while (start > 0 && line[start - 1] != ' ')
        start--;
    return end - start >= 5 && memcmp(line + start, "HTTP/", 5) == 0;
}

static bool is_storage(enum memtext_cmd cmd)
{
    return cmd == MEMTEXT_SET || cmd == MEMTEXT_ADD || cmd == MEMTEXT_REPLACE ||
           cmd == MEMTEXT_APPEND || cmd == MEMTEXT_PREPEND || cmd == MEMTEXT_CAS;
}

static bool is_retrieval(enum memtext_cmd cmd)
{
    return cmd == MEMTEXT_GET || cmd == MEMTEXT_GETS || cmd == MEMTEXT_GAT
        || cmd == MEMTEXT_GATS;
}

enum memtext_status memtext_parse(const char *buf, size_t len, size_t max_value,
                                  memtext_request *req, size_t *consumed, size_t *need,
                                  const char **errmsg)
{
    line_scan ls;
    size_t scan_len = len < GET_LINE_MAX + 1 ? len : GET_LINE_MAX + 1;
    size_t dummy_need;

    if (!need)
        need = &dummy_need;
    *consumed = 0;
    *need = 0;
    *errmsg = NULL;
    reset_request(req);

    scan_line(buf, scan_len, &ls);
    req->cmd = ls.have_cmd ? ls.cmd : MEMTEXT_GET;

    /* Retrieval lines have no length or key-count limit: past MEMTEXT_LINE_MAX without
     * a newline, or with more keys than req can hold, the caller streams the keys. */
    if (ls.have_cmd && is_retrieval(ls.cmd) &&
        ((!ls.have_nl && !ls.failed && len > MEMTEXT_LINE_MAX) ||
         (ls.have_nl && !ls.failed && ls.ntoks > MEMTEXT_MAX_KEYS))) {
        size_t at = 0;
        while (at < len && buf[at] == ' ')
            at++;
        while (at < len && buf[at] != ' ')
            at++;                                  /* past the command word */
        if (ls.cmd == MEMTEXT_GAT || ls.cmd == MEMTEXT_GATS) {
            /* the exptime must be whole: a token followed by a space */
            const char *end = ls.ntoks > 0 ? ls.toks[0].ptr + ls.toks[0].len : NULL;
            if (!end || (size_t)(end - buf) >= len || *end != ' ' ||
                !parse_int32(&ls.toks[0], &req->exptime)) {
                *errmsg = ls.ntoks > 0 && end && (size_t)(end - buf) < len && *end == ' '
                          ? MSG_BAD_EXPTIME : MSG_LINE_TOO_LONG;
                *consumed = ls.have_nl ? ls.nl + 1 : len;
                return MEMTEXT_ERROR;
            }
            at = (size_t)(end - buf);
        }
        *consumed = at;
        return MEMTEXT_STREAM;
    }

    size_t limit = ls.have_cmd && is_retrieval(ls.cmd) ? GET_LINE_MAX : MEMTEXT_LINE_MAX;
    /* A whole storage line is taken however long (as memcached): refusing it would leave
     * its data block to be read as commands. */
    bool storage = ls.have_cmd && is_storage(ls.cmd);
    if (!ls.have_nl || (ls.nl > limit && !storage)) {
        if (ls.have_nl) {          /* the whole over-long line is here: drop just it */
            *consumed = ls.nl + 1;
        } else if (len > limit) {  /* caller drops the rest with memtext_skip_line */
            *consumed = len;
        } else {
            return MEMTEXT_NEED_MORE;
        }
        *errmsg = MSG_LINE_TOO_LONG;
        return MEMTEXT_ERROR;
    }

    size_t line_len = ls.nl + 1;
    if (ls.failed && !ls.have_cmd && looks_like_http(buf, ls.nl)) {
        *consumed = line_len;
        return MEMTEXT_CLOSE;
    }
    if (ls.failed) {
        /* Unknown or empty command word: ERROR.  A known command with a stray "\r"
         * inside an argument: a control byte in the line, CLIENT_ERROR. */
        *errmsg = ls.have_cmd ? MSG_BAD_FORMAT : MSG_ERROR;
        *consumed = line_len;
        return MEMTEXT_ERROR;
    }

    verdict v = check_line(&ls, req, max_value);

    if (v.err && !v.has_data) {
        *errmsg = v.err;
        *consumed = line_len;
        /* the data block of a too-large value is still coming; caller drops it */
        if (v.too_large)
            *need = (size_t)v.bytes + 2;
        return MEMTEXT_ERROR;
    }
    if (!v.has_data) {
        *consumed = line_len;
        return MEMTEXT_OK;
    }

    /* A data block follows.  The line is not re-scanned beyond this call: with too few
     * bytes we only report the total so the caller can wait for all of it at once. */
    size_t total = line_len + (size_t)v.bytes + 2;
    if (len < total) {
        *need = total;
        return MEMTEXT_NEED_MORE;
    }
    *consumed = total;
    if (v.err) {
        *errmsg = v.err;
        return MEMTEXT_ERROR;
    }
    /* memcached checks the two bytes after the block and drops line + block + 2 when
     * they are not "\r\n"; the stream resyncs if the client's count was right. */
    if (buf[total - 2] != '\r' || buf[total - 1] != '\n') {
        *errmsg = MSG_BAD_CHUNK;
        return MEMTEXT_ERROR;
    }
    req->data = buf + line_len;
    req->datalen = (size_t)v.bytes;
    return MEMTEXT_OK;
}

size_t memtext_skip_line(const char *buf, size_t len)
{
    const char *nl = memchr(buf, '\n', len);
    return nl ? (size_t)(nl - buf) + 1 : 0;
}
