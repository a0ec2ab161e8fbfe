/* kumolog.c - viewer of the binary "logpack" log (tools.md §6, framing cli.md §10). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logic/addr.h"
#include "logic/xmalloc.h"

/* No real record comes near this; larger lengths are corruption, not a partial write. */
#define MAX_RECORD (256u << 20)
#define MAX_DEPTH 32              /* msgpack-c's own nesting limit */
#define FOLLOW_POLL_NS 200000000L /* -f: check for growth every 0.2 s */

static const char USAGE[] =
    "Usage: kumolog [options] <logfile.mpac>\n"
    "    -t, --tail\n"
    "    -h, --head\n"
    "    -f, --follow\n"
    "    -n, --lines [-]N\n";

/* ================================================================ growable string */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_grow(sbuf *s, size_t more)
{
    if (s->len + more + 1 <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->len + more + 1)
        cap *= 2;
    s->p = xrealloc(s->p, cap);
    s->cap = cap;
}

static void sb_add(sbuf *s, const char *p, size_t n)
{
    sb_grow(s, n);
    memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void sb_puts(sbuf *s, const char *p) { sb_add(s, p, strlen(p)); }

static void sb_printf(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *s, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_add(s, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Take the string out of s (caller frees); s is reset. */
static char *sb_take(sbuf *s)
{
    char *p = s->p != NULL ? s->p : xstrdup("");
    s->p = NULL;
    s->len = s->cap = 0;
    return p;
}

/* ================================================================ Ruby 1.8 inspect */

/* String#inspect of Ruby 1.8 with $KCODE=NONE: bytes outside 0x20-0x7e are escaped. */
static void inspect_str(sbuf *s, const uint8_t *p, size_t n)
{
    sb_add(s, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        char esc[8];
        if (c == '"' || c == '\\' ||
            (c == '#' && i + 1 < n && (p[i + 1] == '$' || p[i + 1] == '@' || p[i + 1] == '{'))) {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_add(s, esc, 2);
        } else if (c >= 0x20 && c < 0x7f) {
            sb_add(s, (const char *)&c, 1);
        } else {
            const char *named = NULL;
            switch (c) {
            case '\n': named = "\\n"; break;
            case '\r': named = "\\r"; break;
            case '\t': named = "\\t"; break;
            case '\f': named = "\\f"; break;
            case '\v': named = "\\v"; break;
            case '\b': named = "\\b"; break;
            case '\a': named = "\\a"; break;
            case 033: named = "\\e"; break;
            }
            if (named != NULL) {
                sb_puts(s, named);
            } else {
                snprintf(esc, sizeof(esc), "\\%03o", c);
                sb_puts(s, esc);
            }
        }
    }
    sb_add(s, "\"", 1);
}

/* Float#to_s of Ruby 1.8 (flo_to_s). */
static void inspect_float(sbuf *s, double v)
{
    if (isnan(v)) { sb_puts(s, "NaN"); return; }
    if (isinf(v)) { sb_puts(s, v < 0 ? "-Infinity" : "Infinity"); return; }
    char buf[64];
    snprintf(buf, sizeof(buf), "%#.15g", v);
    char *e = strchr(buf, 'e');
    if (e == NULL)
        e = buf + strlen(buf);
    if (!(e[-1] >= '0' && e[-1] <= '9')) {
        snprintf(buf, sizeof(buf), "%#.14e", v);
        e = strchr(buf, 'e');
        if (e == NULL)
            e = buf + strlen(buf);
    }
    char *p = e;
    while (p - buf >= 2 && p[-1] == '0' && p[-2] >= '0' && p[-2] <= '9')
        p--;
    memmove(p, e, strlen(e) + 1);
    sb_puts(s, buf);
}

static void inspect(sbuf *s, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: sb_puts(s, "nil"); break;
    case MSGPACK_OBJECT_BOOLEAN: sb_puts(s, o->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: sb_printf(s, "%" PRIu64, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: sb_printf(s, "%" PRId64, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: inspect_float(s, o->via.f64); break;
    case MSGPACK_OBJECT_STR: inspect_str(s, (const uint8_t *)o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: inspect_str(s, (const uint8_t *)o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_EXT: inspect_str(s, (const uint8_t *)o->via.ext.ptr, o->via.ext.size); break;
    case MSGPACK_OBJECT_ARRAY:
        sb_puts(s, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i > 0)
                sb_puts(s, ", ");
            inspect(s, &o->via.array.ptr[i]);
        }
        sb_puts(s, "]");
        break;
    case MSGPACK_OBJECT_MAP:
        sb_puts(s, "{");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i > 0)
                sb_puts(s, ", ");
            inspect(s, &o->via.map.ptr[i].key);
            sb_puts(s, "=>");
            inspect(s, &o->via.map.ptr[i].val);
        }
        sb_puts(s, "}");
        break;
    default:
        sb_puts(s, "nil");
        break;
    }
}

static bool obj_bytes(const msgpack_object *o, const uint8_t **p, size_t *n)
{
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = (const uint8_t *)o->via.str.ptr;
        *n = o->via.str.size;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        *p = (const uint8_t *)o->via.bin.ptr;
        *n = o->via.bin.size;
        return true;
    }
    return false;
}

/* tools.md §6.1: inspect form, but a string whose inspect is just itself in quotes is
 * shown bare. */
static void show_value(sbuf *s, const msgpack_object *o)
{
    const uint8_t *p;
    size_t n;
    if (obj_bytes(o, &p, &n)) {
        sbuf tmp = { 0 };
        inspect_str(&tmp, p, n);
        if (tmp.len == n + 2)
            sb_add(s, (const char *)p, n);
        else
            sb_add(s, tmp.p, tmp.len);
        free(tmp.p);
        return;
    }
    inspect(s, o);
}

/* ================================================================ conversions */

/* The name of a code: its 4 big-endian bytes with the zero bytes removed. */
static void code_name(uint64_t code, char out[5])
{
    size_t j = 0;
    for (int i = 3; i >= 0; i--) {
        char c = (char)(code >> (i * 8));
        if (c != '\0')
            out[j++] = c;
    }
    out[j] = '\0';
}

static bool obj_int(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX)
            return false;
        *v = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return true;
    }
    return false;
}

static bool fmt_time(sbuf *s, int64_t sec)
{
    time_t t = (time_t)sec;
    struct tm tm;
    char buf[64];
    if ((int64_t)t != sec || localtime_r(&t, &tm) == NULL)
        return false;
    if (strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) == 0)
        return false;
    sb_puts(s, buf);
    return true;
}

static bool conv_time(sbuf *s, const msgpack_object *o)
{
    int64_t v;
    if (obj_int(o, &v))
        return fmt_time(s, v);
    if ((o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64) &&
        isfinite(o->via.f64) && o->via.f64 < 9.2e18 && o->via.f64 > -9.2e18) {
        int64_t t = (int64_t)o->via.f64;   /* floor without libm */
        if ((double)t > o->via.f64)
            t--;
        return fmt_time(s, t);
    }
    return false;
}

static bool conv_addr(sbuf *s, const msgpack_object *o)
{
    const uint8_t *p;
    size_t n;
    kaddr a;
    if (!obj_bytes(o, &p, &n) || kaddr_from_dump(&a, p, n) != 0)
        return false;
    char buf[KADDR_STRLEN];
    if (n == KADDR_IPV4_LEN)   /* kaddr_format would print an all-zero dump specially */
        snprintf(buf, sizeof(buf), "%u.%u.%u.%u:%u", p[2], p[3], p[4], p[5],
                 (unsigned)(p[0] << 8 | p[1]));
    else
        kaddr_format(&a, buf);
    sb_puts(s, buf);
    return true;
}

static bool conv_clocktime(sbuf *s, const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    if (!fmt_time(s, (int64_t)(o->via.u64 >> 32)))
        return false;
    sb_printf(s, " clock %" PRIu32, (uint32_t)o->via.u64);
    return true;
}

static bool conv_none(sbuf *s, const msgpack_object *o)
{
    show_value(s, o);
    return true;
}

typedef bool (*conv_fn)(sbuf *s, const msgpack_object *o);

typedef struct rename_rule {
    const char *key;       /* key as logged */
    const char *shown;     /* displayed key */
    conv_fn conv;
} rename_rule;

typedef struct record_rules {
    const char *names[3];  /* record names sharing these rules */
    unsigned version;
    rename_rule rules[9];
} record_rules;

/* tools.md §6.1, the conversion table. */
static const record_rules RULES[] = {
    { { "SM" }, 2, { { "time", "time", conv_time }, { "addr", "address", conv_addr },
                     { "Padd", "partner", conv_addr } } },
    { { "SS" }, 2, { { "time", "time", conv_time }, { "addr", "address", conv_addr },
                     { "db", "database", conv_none }, { "mgr1", "manager1", conv_addr },
                     { "mgr2", "manager2", conv_addr }, { "sadd", "stream_listen", conv_addr },
                     { "tmpd", "tmp_dir", conv_none }, { "bkup", "backup_prefix", conv_none } } },
    { { "SW" }, 2, { { "time", "time", conv_time }, { "mgr1", "manager1", conv_addr },
                     { "mgr2", "manager2", conv_addr } } },
    { { "eP", "nS", "lS" }, 2, { { "addr", "address", conv_addr } } },
    { { "eP", "nS", "lS" }, 3, { { "addr", "address", conv_addr }, { "time", "time", conv_time } } },
    { { "ers" }, 3, { { "to", "to", conv_addr }, { "cktm", "clocktime", conv_clocktime } } },
    { { "erd" }, 3, { { "to", "to", conv_addr } } },
    { { "eg", "es", "ed" }, 3, { { "time", "time", conv_time } } },
    { { "ers" }, 4, { { "to", "to", conv_addr }, { "cktm", "clocktime", conv_clocktime },
                      { "time", "time", conv_time } } },
    { { "erd" }, 4, { { "to", "to", conv_addr }, { "time", "time", conv_time } } },
};

static const struct { const char *name, *msg; } MESSAGES[] = {
    { "SM", "Manager start" }, { "SS", "Server start" }, { "SW", "Gateway start" },
    { "eP", "unknown partner" }, { "nS", "new server" }, { "lS", "lost server" },
    { "ers", "replicate-set failed" }, { "erd", "replicate-delete failed" },
    { "eg", "Get failed" }, { "es", "Set failed" }, { "ed", "Delete failed" },
};

static const record_rules *find_rules(const char *name, const msgpack_object *ver)
{
    if (ver->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return NULL;
    for (size_t i = 0; i < sizeof(RULES) / sizeof(RULES[0]); i++) {
        if (RULES[i].version != ver->via.u64)
            continue;
        for (size_t j = 0; j < 3 && RULES[i].names[j] != NULL; j++)
            if (strcmp(RULES[i].names[j], name) == 0)
                return &RULES[i];
    }
    return NULL;
}

/* ================================================================ one record → one line */

typedef struct field {
    char *key;
    char *val;
    bool int_key;
    uint64_t code;
    size_t rank;     /* position before sorting, see field_cmp */
} field;

/* The original sorts (stably) by the first character of the displayed key only, over
 * its hash in which the converted keys were re-inserted at the end in rule order.  That
 * is what puts `to` before `time` in ers.4 (tools.md §6.1 examples); emulate it. */
static int field_cmp(const void *a, const void *b)
{
    const field *x = a, *y = b;
    unsigned char cx = (unsigned char)x->key[0], cy = (unsigned char)y->key[0];
    if (cx != cy)
        return cx < cy ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* The line of tools.md §6.1 for a valid record o = [name, version, map]; caller frees. */
static char *format_record(const msgpack_object *o)
{
    const msgpack_object *nm = &o->via.array.ptr[0];
    const msgpack_object *ver = &o->via.array.ptr[1];
    const msgpack_object *map = &o->via.array.ptr[2];
    char name[5];
    code_name(nm->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? nm->via.u64 : (uint64_t)nm->via.i64, name);
    sbuf vs = { 0 };
    inspect(&vs, ver);
    char *version = sb_take(&vs);

    sbuf msg = { 0 };
    for (size_t i = 0; i < sizeof(MESSAGES) / sizeof(MESSAGES[0]); i++)
        if (strcmp(MESSAGES[i].name, name) == 0)
            sb_puts(&msg, MESSAGES[i].msg);
    if (msg.len == 0)
        sb_printf(&msg, "%s.%s", name, version);

    const record_rules *rr = find_rules(name, ver);
    uint32_t n = map->via.map.size;
    field *fs = xcalloc(n ? n : 1, sizeof(*fs));
    size_t nf = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        const msgpack_object *v = &map->via.map.ptr[i].val;
        field f = { 0 };
        conv_fn conv = conv_none;
        sbuf ks = { 0 };
        if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER || k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
            char kn[5];
            f.int_key = true;
            f.code = k->via.u64 & 0xffffffffu;
            code_name(f.code, kn);
            const char *shown = kn;
            f.rank = i;
            for (size_t r = 0; rr != NULL && r < 9 && rr->rules[r].key != NULL; r++) {
                if (strcmp(rr->rules[r].key, kn) == 0) {
                    shown = rr->rules[r].shown;
                    conv = rr->rules[r].conv;
                    f.rank = (size_t)n + r;
                }
            }
            sb_puts(&ks, shown);
        } else {
            inspect(&ks, k);
            f.rank = i;
        }
        sbuf val = { 0 };
        bool ok = conv(&val, v);
        f.key = sb_take(&ks);
        f.val = sb_take(&val);
        /* a Ruby Hash keeps one entry per key: the first position, the last value */
        size_t dup = nf;
        for (size_t j = 0; f.int_key && j < nf; j++)
            if (fs[j].int_key && fs[j].code == f.code)
                dup = j;
        if (dup < nf) {
            free(fs[dup].key);
            free(fs[dup].val);
            if (ok) {
                if (fs[dup].rank < n)
                    f.rank = fs[dup].rank;   /* a Ruby Hash keeps the first position */
                fs[dup] = f;
            } else {
                memmove(&fs[dup], &fs[dup + 1], (nf - dup - 1) * sizeof(*fs));
                nf--;
                free(f.key);
                free(f.val);
            }
        } else if (ok) {
            fs[nf++] = f;
        } else {
            free(f.key);   /* a failed conversion drops the field */
            free(f.val);
        }
    }
    /* ranks are unique, so qsort's instability does not matter */
    qsort(fs, nf, sizeof(*fs), field_cmp);

    sbuf line = { 0 };
    sb_printf(&line, "%s.", name);
    sb_puts(&line, version);
    sb_puts(&line, "  ");
    sb_puts(&line, msg.p);
    for (size_t i = msg.len; i < 15; i++)
        sb_add(&line, " ", 1);
    sb_puts(&line, "  ");
    for (size_t i = 0; i < nf; i++) {
        if (i > 0)
            sb_puts(&line, "  ");
        sb_puts(&line, fs[i].key);
        sb_puts(&line, "=[");
        sb_puts(&line, fs[i].val);
        sb_puts(&line, "]");
        free(fs[i].key);
        free(fs[i].val);
    }
    free(fs);
    free(msg.p);
    free(version);
    return sb_take(&line);
}

/* ================================================================ record validation */

/* Skip one msgpack object in [*pp, end) without allocating; false if malformed or
 * truncated.  Guards msgpack-c against garbage claiming huge arrays while resyncing. */
static bool mp_skip(const uint8_t **pp, const uint8_t *end, int depth)
{
    const uint8_t *p = *pp;
    if (p >= end || depth > MAX_DEPTH)
        return false;
    uint8_t c = *p++;
    size_t avail = (size_t)(end - p);
    uint64_t len = 0, items = 0;   /* payload bytes to skip / nested objects to skip */
#define NEED(n) do { if (avail < (size_t)(n)) return false; } while (0)
#define BE(n) (n == 1 ? p[0] : n == 2 ? (uint64_t)p[0] << 8 | p[1] : \
               (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3])
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
        len = 0;
    } else if (c >= 0x80 && c <= 0x8f) {
        items = 2u * (c & 0x0f);
    } else if (c >= 0x90 && c <= 0x9f) {
        items = c & 0x0f;
    } else if (c >= 0xa0 && c <= 0xbf) {
        len = c & 0x1f;
    } else {
        switch (c) {
        case 0xc4: case 0xd9: NEED(1); len = BE(1); p += 1; break;
        case 0xc5: case 0xda: NEED(2); len = BE(2); p += 2; break;
        case 0xc6: case 0xdb: NEED(4); len = BE(4); p += 4; break;
        case 0xc7: NEED(1); len = BE(1) + 1; p += 1; break;
        case 0xc8: NEED(2); len = BE(2) + 1; p += 2; break;
        case 0xc9: NEED(4); len = BE(4) + 1; p += 4; break;
        case 0xca: len = 4; break;
        case 0xcb: len = 8; break;
        case 0xcc: case 0xd0: len = 1; break;
        case 0xcd: case 0xd1: len = 2; break;
        case 0xce: case 0xd2: len = 4; break;
        case 0xcf: case 0xd3: len = 8; break;
        case 0xd4: len = 2; break;
        case 0xd5: len = 3; break;
        case 0xd6: len = 5; break;
        case 0xd7: len = 9; break;
        case 0xd8: len = 17; break;
        case 0xdc: NEED(2); items = BE(2); p += 2; break;
        case 0xdd: NEED(4); items = BE(4); p += 4; break;
        case 0xde: NEED(2); items = 2 * BE(2); p += 2; break;
        case 0xdf: NEED(4); items = 2 * BE(4); p += 4; break;
        default: return false;   /* 0xc1 is never used */
        }
    }
#undef NEED
#undef BE
    if (len > (uint64_t)(end - p) || items > (uint64_t)(end - p))
        return false;
    p += len;
    for (uint64_t i = 0; i < items; i++)
        if (!mp_skip(&p, end, depth + 1))
            return false;
    *pp = p;
    return true;
}

static bool is_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

/* tools.md §6: valid iff exactly n bytes decode to one [integer, integer, map].  On
 * success the line is formatted into *line (caller frees). */
static bool decode_record(const uint8_t *p, size_t n, char **line)
{
    const uint8_t *q = p;
    if (n == 0 || !mp_skip(&q, p + n, 0) || q != p + n)
        return false;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    bool ok = msgpack_unpack_next(&u, (const char *)p, n, &off) == MSGPACK_UNPACK_SUCCESS &&
              off == n && u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 3 &&
              is_int(&u.data.via.array.ptr[0]) && is_int(&u.data.via.array.ptr[1]) &&
              u.data.via.array.ptr[2].type == MSGPACK_OBJECT_MAP;
    if (ok && line != NULL)
        *line = format_record(&u.data);
    msgpack_unpacked_destroy(&u);
    return ok;
}

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
    if (!decode_record(p + 4, n, line))
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
