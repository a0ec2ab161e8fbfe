/* metaconn.c - memcached meta commands on the text port: parse one request line (and an
 * ms data block), run it through the gateway, format the reply in request order. */
#include "gateway/metaconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/memtext.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"

#define MC_OPAQUE_MAX 32          /* memcached: longer O tokens are refused */
#define MC_RET_MAX 16             /* return flags kept per request */
#define MC_TOKENS_MAX 24          /* memcached's MAX_TOKENS */
#define MC_B64_KEY_MAX (((MC_KEY_MAX + 2) / 3) * 4)

#define E_FORMAT "CLIENT_ERROR bad command line format"
#define E_FLAG "CLIENT_ERROR invalid flag"
#define E_DUP "CLIENT_ERROR duplicate flag"
#define E_BADFLAG "CLIENT_ERROR invalid or duplicate flag"   /* md and ma say only this */
#define E_TOKEN "CLIENT_ERROR bad token in command line format"
#define E_OPAQUE "CLIENT_ERROR opaque token too long"
#define E_KEY64 "CLIENT_ERROR error decoding key"
#define E_MS_MODE "CLIENT_ERROR invalid mode for ms M token"
#define E_MA_MODE "CLIENT_ERROR invalid mode for ma M token"
#define E_CHUNK "CLIENT_ERROR bad data chunk"
#define E_TOO_LARGE "SERVER_ERROR object too large for cache"
#define E_LINE "CLIENT_ERROR line too long"
#define E_NON_NUMERIC "CLIENT_ERROR cannot increment or decrement non-numeric value"

/* One meta request, kept until its reply is written. */
typedef struct meta_req {
    char cmd;                      /* 'g' 's' 'd' 'a' 'e' */
    char key[MC_KEY_MAX];     /* decoded key */
    size_t klen;
    char rkey[MC_B64_KEY_MAX];     /* the key as the client wrote it (echoed by k) */
    size_t rklen;
    bool b64;
    char opaque[MC_OPAQUE_MAX];
    size_t olen;
    char ret[MC_RET_MAX];          /* flags that return something, in request order */
    unsigned nret;
    bool quiet, value;
    bool has_ttl;                  /* T */
    int64_t ttl;
    uint32_t flags;                /* ms F */
    char mode;                     /* ms: S E A P R; ma: I D */
    bool has_cas;                  /* C */
    uint64_t cas;
    bool has_n;                    /* ma N: create on miss with this TTL */
    int64_t n_ttl;
    uint64_t initial, delta;       /* ma J, D */
    uint8_t step;                  /* ma: 0 incr, 1 creating, 2 incr after a lost create */
} meta_req;

typedef struct meta_slot {
    frontconn_slot base;           /* first: frontconn hands it back as frontconn_slot */
    meta_req *m;
} meta_slot;

size_t metaconn_slot_size(void)
{
    return sizeof(meta_slot);
}

bool metaconn_is_meta(const char *buf, size_t len)
{
    if (len < 3 || buf[0] != 'm' || !strchr("gsdane", buf[1]) || buf[1] == '\0')
        return false;
    return buf[2] == ' ' || buf[2] == '\r' || buf[2] == '\n';
}

/* ------------------------------------------------------------------ helpers */

static void put_str(nbuf *b, const char *s)
{
    nbuf_append(b, s, strlen(s));
}

static void put_u64(nbuf *b, char flag, uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, " %c%llu", flag, (unsigned long long)v);
    nbuf_append(b, tmp, (size_t)n);
}

static void put_line(frontconn *c, const char *s)
{
    nbuf *b = frontconn_reply_buf(c);
    put_str(b, s);
    nbuf_append(b, "\r\n", 2);
}

static int b64_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

/* Standard base64 with padding; false on bad input or if out (cap bytes) is too small. */
static bool b64_decode(const char *in, size_t n, char *out, size_t cap, size_t *outlen)
{
    size_t o = 0;
    if (n == 0 || n % 4 != 0)
        return false;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char ch = (unsigned char)in[i + j];
            if (ch == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad || (v[j] = b64_val(ch)) < 0) {
                return false;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        char bytes[3] = {(char)(w >> 16), (char)(w >> 8), (char)w};
        for (int j = 0; j < 3 - pad; j++) {
            if (o >= cap)
                return false;
            out[o++] = bytes[j];
        }
    }
    *outlen = o;
    return true;
}

static bool parse_u64(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)p[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool parse_i32(const char *p, size_t n, int64_t *out)
{
    bool neg = n > 0 && p[0] == '-';
    uint64_t v;
    if (!parse_u64(p + neg, n - neg, &v) || v > (uint64_t)INT32_MAX + neg)
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

/* The item's remaining time to live as mg's t flag prints it: -1 never expires. */
static int64_t ttl_left(const gateway *gw, uint32_t exptime)
{
    if (exptime == 0)
        return -1;
    (void)gw;
    int64_t left = (int64_t)exptime - (int64_t)time(NULL);   /* the second, as the set */
    return left > 0 ? left : 0;
}

/* The return flags that a miss echoes (memcached: O and k). */
static void put_echo(nbuf *b, const meta_req *m)
{
    for (unsigned i = 0; i < m->nret; i++) {
        if (m->ret[i] == 'O') {
            nbuf_append(b, " O", 2);
            nbuf_append(b, m->opaque, m->olen);
        } else if (m->ret[i] == 'k') {
            nbuf_append(b, " k", 2);
            nbuf_append(b, m->rkey, m->rklen);
            if (m->b64)
                nbuf_append(b, " b", 2);
        }
    }
}

/* Return flags for a found item (it may be NULL when only a CAS is known: ms, ma). */
static void put_ret(nbuf *b, const meta_req *m, const gateway *gw,
                    const gateway_item *it, uint64_t cas)
{
    for (unsigned i = 0; i < m->nret; i++) {
        switch (m->ret[i]) {
        case 'c': put_u64(b, 'c', cas); break;
        case 'f': if (it) put_u64(b, 'f', it->flags); break;
        case 's': if (it) put_u64(b, 's', it->len); break;
        case 't':
            if (it) {
                char tmp[32];
                int n = snprintf(tmp, sizeof tmp, " t%lld", (long long)ttl_left(gw, it->exptime));
                nbuf_append(b, tmp, (size_t)n);
            }
            break;
        case 'O':
            nbuf_append(b, " O", 2);
            nbuf_append(b, m->opaque, m->olen);
            break;
        case 'k':
            nbuf_append(b, " k", 2);
            nbuf_append(b, m->rkey, m->rklen);
            if (m->b64)
                nbuf_append(b, " b", 2);
            break;
        }
    }
}

/* A status line with the echo flags (miss-style), unless quiet hides it. */
static void put_status(nbuf *b, const meta_req *m, const char *code)
{
    put_str(b, code);
    put_echo(b, m);
    nbuf_append(b, "\r\n", 2);
}

/* ------------------------------------------------------------------ slots */

static meta_slot *slot_new(frontconn *c, meta_req *m)
{
    meta_slot *s = (meta_slot *)frontconn_slot_new(c);
    s->m = m;
    return s;
}

/* Release the request; false when the client is gone (the slot is released too). */
static bool slot_alive(meta_slot *s)
{
    if (frontconn_slot_alive(&s->base))
        return true;
    free(s->m);
    return false;
}

static void slot_done(meta_slot *s)
{
    free(s->m);
    s->m = NULL;
    frontconn_slot_complete(&s->base);
}

/* The listener's ud starts with its metaconn_env (textconn.c). */
static const gateway *slot_gw(meta_slot *s)
{
    return ((const metaconn_env *)frontconn_ud(s->base.conn))->gw;
}

/* ------------------------------------------------------------------ completions */

/* mg / me: the item (or NULL on a miss) and how it was found. */
static void get_reply(meta_slot *s, int status, const gateway_item *it)
{
    meta_req *m = s->m;
    nbuf *b = frontconn_slot_target(&s->base);
    const gateway *gw = slot_gw(s);
    if (status == GATEWAY_FAILED) {
        put_str(b, "SERVER_ERROR get failed\r\n");
    } else if (!it) {
        if (!m->quiet || m->cmd == 'e')
            put_status(b, m, "EN");
    } else if (m->cmd == 'e') {
        char tmp[160];
        int n = snprintf(tmp, sizeof tmp, " exp=%lld la=0 cas=%llu fetch=no cls=1 size=%zu\r\n",
                         (long long)ttl_left(gw, it->exptime), (unsigned long long)it->cas,
                         it->len);
        put_str(b, "ME ");
        nbuf_append(b, m->rkey, m->rklen);
        nbuf_append(b, tmp, (size_t)n);
    } else if (m->value) {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "VA %zu", it->len);
        nbuf_reserve(b, (size_t)n + 200 + it->len);
        nbuf_append(b, tmp, (size_t)n);
        put_ret(b, m, gw, it, it->cas);
        nbuf_append(b, "\r\n", 2);
        nbuf_append(b, it->data, it->len);
        nbuf_append(b, "\r\n", 2);
    } else {
        put_str(b, "HD");
        put_ret(b, m, gw, it, it->cas);
        nbuf_append(b, "\r\n", 2);
    }
    slot_done(s);
}

static void get_done(void *ud, int status, const gateway_value *v, const char *key, size_t klen)
{
    meta_slot *s = ud;
    gwstats *st = frontconn_stats(s->base.conn);
    gateway_item it;
    bool hit = status == GATEWAY_OK && gateway_item_decode(slot_gw(s), v, &it);
    if (s->m && s->m->cmd == 'g') {
        st->get_hits += hit;
        st->get_misses += !hit;
    }
    if (!slot_alive(s))
        return;
    get_reply(s, status, hit ? &it : NULL);
}

static void gat_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    meta_slot *s = ud;
    gwstats *st = frontconn_stats(s->base.conn);
    st->touch_hits += status == GATEWAY_OK;
    st->touch_misses += status != GATEWAY_OK;
    if (!slot_alive(s))
        return;
    gateway_value gv;
    gateway_item it;
    if (status == GATEWAY_OK && value && gateway_value_parse(value, vlen, &gv) &&
        gateway_item_decode_any(slot_gw(s), &gv, &it)) {
        get_reply(s, status, &it);
        return;
    }
    if (status == GATEWAY_OK) {       /* a server that does not return the value */
        gateway_get((gateway *)slot_gw(s), s->m->key, s->m->klen, get_done, s);
        return;
    }
    get_reply(s, status == GATEWAY_FAILED ? status : GATEWAY_MISS, NULL);
}

/* ms/md: HD (quiet: nothing) or the failure code. */
static void store_reply(meta_slot *s, int status, clocktime_t ct)
{
    meta_req *m = s->m;
    nbuf *b = frontconn_slot_target(&s->base);
    if (status == GATEWAY_OK) {
        if (!m->quiet) {
            put_str(b, "HD");
            put_ret(b, m, slot_gw(s), NULL, ct);
            nbuf_append(b, "\r\n", 2);
        }
    } else if (status == GATEWAY_FAILED) {
        put_str(b, m->cmd == 'd' ? "SERVER_ERROR delete failed\r\n" : "SERVER_ERROR store failed\r\n");
    } else {
        const char *code = status == GATEWAY_EXISTS ? "EX"
                         : status == GATEWAY_NOT_STORED ? "NS" : "NF";
        put_status(b, m, code);
    }
    slot_done(s);
}

static void set_done(void *ud, int status, clocktime_t ct)
{
    meta_slot *s = ud;
    gwstats *st = frontconn_stats(s->base.conn);
    if (s->m && s->m->cmd == 'd') {
        st->delete_hits += status == GATEWAY_OK;
        st->delete_misses += status != GATEWAY_OK;
    } else {
        st->total_items += status == GATEWAY_OK;
    }
    if (slot_alive(s))
        store_reply(s, status, ct);
}

static void update_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    meta_slot *s = ud;
    frontconn_stats(s->base.conn)->total_items += status == GATEWAY_OK;
    if (slot_alive(s))
        store_reply(s, status, ct);
}

static void too_large_done(void *ud, int status, clocktime_t ct)
{
    meta_slot *s = ud;
    if (!slot_alive(s))
        return;
    put_str(frontconn_slot_target(&s->base), E_TOO_LARGE "\r\n");
    slot_done(s);
}

static void arith_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen);

static bool wants_ret(const meta_req *m, char f)
{
    return memchr(m->ret, f, m->nret) != NULL;
}

/* With N, a missing item is created with J in the same server step, so a request
 * pipelined behind this one sees it (a server that cannot answers NOT_FOUND, and then
 * arith_done creates it with a second request).  t asks for the whole item back (its
 * exptime); T replaces the exptime. */
static void arith_send(meta_slot *s)
{
    meta_req *m = s->m;
    unsigned op = m->mode == 'D' ? GATEWAY_DECR : GATEWAY_INCR;
    char num[24];
    int n = 0;
    int64_t exptime = 0;
    if (m->has_n && m->step == 0) {
        n = snprintf(num, sizeof num, "%llu", (unsigned long long)m->initial);
        op |= GATEWAY_UPD_CREATE;
        exptime = m->n_ttl;
    }
    if (m->has_ttl) {
        op |= GATEWAY_UPD_TTL;
        exptime = m->ttl;
    }
    if (wants_ret(m, 't'))
        op |= GATEWAY_UPD_VALUE;
    gateway_update((gateway *)slot_gw(s), op, m->key, m->klen, 0, exptime, n ? num : NULL,
                   (size_t)n, m->delta, false, arith_done, s);
}

/* The success reply: the number (it: the whole item when t asked for it, else NULL). */
static void arith_value(meta_slot *s, const char *num, size_t n, clocktime_t ct,
                        const gateway_item *it)
{
    meta_req *m = s->m;
    nbuf *b = frontconn_slot_target(&s->base);
    if (m->quiet) {
        /* memcached's ma q hides the success reply, value included */
    } else if (m->value) {
        char tmp[32];
        int k = snprintf(tmp, sizeof tmp, "VA %zu", n);
        nbuf_append(b, tmp, (size_t)k);
        put_ret(b, m, slot_gw(s), it, ct);
        nbuf_append(b, "\r\n", 2);
        nbuf_append(b, num, n);
        nbuf_append(b, "\r\n", 2);
    } else {
        put_str(b, "HD");
        put_ret(b, m, slot_gw(s), it, ct);
        nbuf_append(b, "\r\n", 2);
    }
    slot_done(s);
}

static void arith_done(void *ud, int status, clocktime_t ct, const char *value, size_t vlen)
{
    meta_slot *s = ud;
    meta_req *m = s->m;
    bool created = status == GATEWAY_CREATED;
    if (created)
        status = GATEWAY_OK;
    if (m && m->step == 0) {
        gwstats *st = frontconn_stats(s->base.conn);
        bool decr = m->mode == 'D';
        *(decr ? &st->decr_hits : &st->incr_hits) += status == GATEWAY_OK;
        *(decr ? &st->decr_misses : &st->incr_misses) += status == GATEWAY_NOT_FOUND;
    }
    if (!slot_alive(s))
        return;
    nbuf *b = frontconn_slot_target(&s->base);
    if (m->step == 1) {                    /* the create of the initial value came back */
        if (status == GATEWAY_OK) {
            char num[24];
            int n = snprintf(num, sizeof num, "%llu", (unsigned long long)m->initial);
            m->quiet = false;
            gateway_item it = {.exptime = 0, .cas = ct};
            it.exptime = m->n_ttl > 0 ? (uint32_t)(time(NULL) + m->n_ttl) : 0;
            arith_value(s, num, (size_t)n, ct, &it);
            return;
        }
        if (status == GATEWAY_NOT_STORED) {   /* created meanwhile: count on it */
            m->step = 2;
            arith_send(s);
            return;
        }
    } else if (status == GATEWAY_OK) {
        if (created)
            m->quiet = false;              /* memcached reports a created item even with q */
        gateway_value gv;
        gateway_item it;
        if (wants_ret(m, 't') && gateway_value_parse(value, vlen, &gv) &&
            gateway_item_decode_any(slot_gw(s), &gv, &it)) {
            arith_value(s, (const char *)it.data, it.len, ct, &it);
            return;
        }
        arith_value(s, value, vlen, ct, NULL);
        return;
    } else if (status == GATEWAY_NOT_FOUND && m->step == 0 && m->has_n) {
        char num[24];
        int n = snprintf(num, sizeof num, "%llu", (unsigned long long)m->initial);
        m->step = 1;
        gateway_update((gateway *)slot_gw(s), GATEWAY_ADD, m->key, m->klen, 0, m->n_ttl, num,
                       (size_t)n, 0, false, arith_done, s);
        return;
    }
    if (status == GATEWAY_NON_NUMERIC)
        put_str(b, E_NON_NUMERIC "\r\n");
    else if (status == GATEWAY_FAILED)
        put_str(b, "SERVER_ERROR incr/decr failed\r\n");
    else
        put_status(b, m, status == GATEWAY_EXISTS ? "EX" : status == GATEWAY_NOT_STORED ? "NS" : "NF");
    slot_done(s);
}

/* ------------------------------------------------------------------ parsing */

typedef struct tok {
    const char *p;
    size_t n;
} tok;

/* The flags each command accepts; the rest answer "invalid flag" (memcached's answer to
 * a flag it does not know).  Flags a replicated store cannot honour are left out: see
 * doc/protocol-additions.md. */
static const char *allowed_flags(char cmd)
{
    switch (cmd) {
    case 'g': return "bcfkOqstvT";
    case 's': return "bcCFkOqTM";
    case 'd': return "bkOq";
    case 'a': return "bcDJkMNOqtTv";
    default: return "b";             /* me */
    }
}

/* Parse the flags of m; returns NULL or the error line. */
static const char *parse_flags(meta_req *m, const tok *t, size_t nt)
{
    uint64_t seen[2] = {0, 0};
    const char *allowed = allowed_flags(m->cmd);
    /* memcached's wording differs per command: md and ma have one message for every
     * bad flag; ms reports a bad F number as a bad line */
    bool one_msg = m->cmd == 'd' || m->cmd == 'a';
    const char *e_flag = one_msg ? E_BADFLAG : E_FLAG;
    const char *e_dup = one_msg ? E_BADFLAG : E_DUP;
    const char *e_token = one_msg ? E_BADFLAG : E_TOKEN;
    for (size_t i = 0; i < nt; i++) {
        unsigned char f = (unsigned char)t[i].p[0];
        const char *arg = t[i].p + 1;
        size_t alen = t[i].n - 1;
        if (f < 64 || f >= 192 || !strchr(allowed, f))
            return e_flag;
        uint64_t bit = 1ull << ((f - 64) & 63);
        if (seen[(f - 64) >> 6] & bit)
            return e_dup;
        seen[(f - 64) >> 6] |= bit;
        uint64_t u;
        switch (f) {
        case 'b': m->b64 = true; break;
        case 'q': m->quiet = true; break;
        case 'v': m->value = true; break;
        case 'O':
            if (alen > MC_OPAQUE_MAX)
                return E_OPAQUE;
            memcpy(m->opaque, arg, alen);
            m->olen = alen;
            break;
        case 'T':
            if (!parse_i32(arg, alen, &m->ttl))
                return e_token;
            m->has_ttl = true;
            break;
        case 'N':
            if (!parse_i32(arg, alen, &m->n_ttl))
                return e_token;
            m->has_n = true;
            break;
        case 'F':
            if (!parse_u64(arg, alen, &u) || u > UINT32_MAX)
                return m->cmd == 's' ? E_FORMAT : e_token;
            m->flags = (uint32_t)u;
            break;
        case 'C':
            if (!parse_u64(arg, alen, &m->cas))
                return e_token;
            m->has_cas = true;
            break;
        case 'J':
            if (!parse_u64(arg, alen, &m->initial))
                return e_token;
            break;
        case 'D':
            if (!parse_u64(arg, alen, &m->delta))
                return e_token;
            break;
        case 'M':
            if (alen < 1)
                return m->cmd == 's' ? E_MS_MODE : E_MA_MODE;
            if (m->cmd == 's') {
                char md = arg[0];
                if (!strchr("SEAPR", md) || md == '\0')
                    return E_MS_MODE;
                m->mode = md;
            } else {
                char md = arg[0];
                if (md == 'I' || md == '+')
                    m->mode = 'I';
                else if (md == 'D' || md == '-')
                    m->mode = 'D';
                else
                    return E_MA_MODE;
            }
            break;
        default: break;
        }
        if (strchr("cfkOst", f) && m->nret < MC_RET_MAX && !(m->cmd == 'a' && f == 's'))
            m->ret[m->nret++] = (char)f;
    }
    return NULL;
}

/* Fill m's key from the token (base64 when b is among the flags); NULL or error line. */
static const char *parse_key(meta_req *m, const tok *k)
{
    if (k->n == 0 || k->n > (m->b64 ? MC_B64_KEY_MAX : MC_KEY_MAX))
        return E_FORMAT;
    memcpy(m->rkey, k->p, k->n);
    m->rklen = k->n;
    if (m->b64) {
        if (!b64_decode(k->p, k->n, m->key, sizeof m->key, &m->klen))
            return E_KEY64;
        return NULL;
    }
    for (size_t i = 0; i < k->n; i++) {
        unsigned char ch = (unsigned char)k->p[i];
        if (ch < 0x20 || ch == 0x7f)
            return E_FORMAT;
    }
    memcpy(m->key, k->p, k->n);
    m->klen = k->n;
    return NULL;
}

/* Does the token list hold the b flag?  (The key is decoded before the flags are
 * checked, as memcached reports a bad key first.) */
static bool has_b(const tok *t, size_t nt)
{
    for (size_t i = 0; i < nt; i++)
        if (t[i].n >= 1 && t[i].p[0] == 'b')
            return true;
    return false;
}

static void run(frontconn *c, const metaconn_env *env, meta_req *m, const char *data,
                size_t datalen)
{
    gwstats *st = frontconn_stats(c);
    meta_slot *s = slot_new(c, m);
    switch (m->cmd) {
    case 'g':
        st->cmd_get++;
        if (m->has_ttl) {
            st->cmd_touch++;
            gateway_update(env->gw, GATEWAY_GAT, m->key, m->klen, 0, m->ttl, NULL, 0, 0,
                           false, gat_done, s);
        } else {
            gateway_get(env->gw, m->key, m->klen, get_done, s);
        }
        break;
    case 'e':
        gateway_get(env->gw, m->key, m->klen, get_done, s);
        break;
    case 'd':
        gateway_delete(env->gw, m->key, m->klen, false, set_done, s);
        break;
    case 'a':
        arith_send(s);
        break;
    case 's': {
        st->cmd_set++;
        int64_t ttl = m->has_ttl ? m->ttl : 0;
        unsigned op;
        switch (m->mode) {
        case 'E': op = GATEWAY_ADD; break;
        case 'A': op = GATEWAY_APPEND; break;
        case 'P': op = GATEWAY_PREPEND; break;
        case 'R': op = m->has_cas ? GATEWAY_CAS : GATEWAY_REPLACE; break;
        default: op = m->has_cas ? GATEWAY_CAS : 0; break;
        }
        if (op == 0) {
            uint8_t hdr[GATEWAY_ITEM_HEADER_LEN];
            gateway_item_header(env->gw, m->flags, ttl, hdr);
            gateway_set(env->gw, m->key, m->klen, SET_OP_SET, 0, GATEWAY_META_ITEM, hdr,
                        sizeof hdr, data, datalen, set_done, s);
        } else {
            gateway_update(env->gw, op, m->key, m->klen, m->flags, ttl, data, datalen,
                           m->cas, false, update_done, s);
        }
        break;
    }
    }
}

size_t metaconn_parse(frontconn *c, const metaconn_env *env, const char *buf, size_t len,
                      size_t *need)
{
    const char *nl = memchr(buf, '\n', len < MEMTEXT_LINE_MAX + 1 ? len : MEMTEXT_LINE_MAX + 1);
    if (!nl) {
        if (len <= MEMTEXT_LINE_MAX)
            return 0;
        put_line(c, E_LINE);
        /* an unended ms line: where its data block starts is unknown, so close */
        frontconn_set_state(c, buf[1] == 's' ? FRONTCONN_DRAIN : FRONTCONN_SKIPLINE);
        return buf[1] == 's' ? 0 : len;
    }
    size_t line_len = (size_t)(nl - buf) + 1;
    size_t end = line_len - 1;
    if (end > 0 && buf[end - 1] == '\r')
        end--;
    if (buf[1] == 'n') {                        /* mn: a no-op that marks a pipeline's end */
        put_line(c, "MN");
        return line_len;
    }

    tok t[MC_TOKENS_MAX + 1];
    size_t nt = 0;
    for (size_t i = 3; i < end && nt <= MC_TOKENS_MAX;) {
        while (i < end && buf[i] == ' ')
            i++;
        size_t j = i;
        while (j < end && buf[j] != ' ')
            j++;
        if (j > i) {
            t[nt].p = buf + i;
            t[nt].n = j - i;
            nt++;
        }
        i = j;
    }
    char cmd = buf[1];
    if (nt == 0) {                               /* no key: as memcached */
        put_line(c, cmd == 'e' ? E_FORMAT : "ERROR");
        return line_len;
    }

    /* ms <key> <datalen> <flags>*: the data block always goes with the line, even when
     * the line is refused, so a value is never run as a command */
    size_t first_flag = 1;
    uint64_t datalen = 0;
    bool has_data = false;
    if (cmd == 's') {
        if (nt < 2 || !parse_u64(t[1].p, t[1].n, &datalen) || datalen > INT32_MAX - 2) {
            /* memcached answers this and reads on, running whatever data block the client
             * sent as commands; where the block ends is unknown, so hang up instead */
            put_line(c, E_FORMAT);
            frontconn_set_state(c, FRONTCONN_DRAIN);
            return 0;
        }
        has_data = true;
        first_flag = 2;
        if (datalen > env->item_size_max) {
            /* refused before it is buffered; drop the block as it arrives.  A set
             * unlinks the key first, as memcached does. */
            meta_req *m = xcalloc(1, sizeof *m);
            m->cmd = 's';
            const char *err = NULL;
            if (has_b(t + 2, nt - 2))
                m->b64 = true;
            err = parse_key(m, &t[0]);
            if (!err)
                err = parse_flags(m, t + 2, nt - 2);
            if (!err && (m->mode == 0 || m->mode == 'S')) {
                meta_slot *s = slot_new(c, m);
                gateway_delete(env->gw, m->key, m->klen, false, too_large_done, s);
            } else {
                put_line(c, err ? err : E_TOO_LARGE);
                free(m);
            }
            frontconn_swallow(c, (size_t)datalen + 2);
            return line_len;
        }
    }
    size_t total = line_len + (has_data ? (size_t)datalen + 2 : 0);
    if (len < total) {
        *need = total;
        return 0;
    }
    if (nt > MC_TOKENS_MAX) {
        put_line(c, E_FORMAT);
        return total;
    }

    meta_req *m = xcalloc(1, sizeof *m);
    m->cmd = cmd;
    m->delta = 1;
    m->mode = cmd == 'a' ? 'I' : 'S';
    m->b64 = has_b(t + first_flag, nt - first_flag);
    const char *err = parse_key(m, &t[0]);
    if (!err)
        err = parse_flags(m, t + first_flag, nt - first_flag);
    if (!err && has_data && (buf[total - 2] != '\r' || buf[total - 1] != '\n'))
        err = E_CHUNK;
    if (err) {
        put_line(c, err);
        free(m);
        return total;
    }
    run(c, env, m, buf + line_len, (size_t)datalen);
    return total;
}
