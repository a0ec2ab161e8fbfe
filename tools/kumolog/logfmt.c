/* logfmt.c - kumolog record decoding: msgpack validation, field renames and conversions,
 * and the output line (tools.md §6.1). */
#include "tools/kumolog/logfmt.h"

#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logic/addr.h"
#include "logic/xmalloc.h"

#define MAX_DEPTH 32              /* msgpack-c's own nesting limit */

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

/* tools.md §6 (declared in logfmt.h). */
bool logfmt_decode(const uint8_t *p, size_t n, char **line)
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
