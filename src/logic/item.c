/* item.c - the memcached item inside a record's payload and memcached's
 * read-modify-write rules (doc/storage-format.md, doc/protocol-additions.md §1.1). */
#include "logic/item.h"

#include <stdio.h>
#include <string.h>

#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"

#define U64_DIGITS_MAX 20                          /* "18446744073709551615" */

static bool has_magic(const uint8_t *p, size_t len, const char *magic)
{
    return len >= ITEM_MAGIC_LEN && memcmp(p, magic, ITEM_MAGIC_LEN) == 0;
}

/* Does a payload starting with these bytes read as one of our tagged forms? */
static bool starts_tagged(const uint8_t *p, size_t len)
{
    return has_magic(p, len, ITEM_MAGIC) || has_magic(p, len, ITEM_MAGIC_TOUCHED);
}

bool item_decode(uint16_t meta, const uint8_t *p, size_t len, unsigned layout, item *it)
{
    it->flags = 0;
    it->exptime = 0;
    it->cas = 0;
    /* The magic marks the tagged forms whatever the meta (0 too: an original coordinator
     * sends its replicas meta 0); not meta 1, whose flags may be anything. */
    if (meta != ITEM_META_V1 && len >= ITEM_TOUCHED_HEADER_LEN
        && has_magic(p, len, ITEM_MAGIC_TOUCHED)) {
        it->flags = be32_get(p + ITEM_MAGIC_LEN);
        it->exptime = be32_get(p + ITEM_MAGIC_LEN + 4);
        it->cas = be64_get(p + ITEM_TAGGED_HEADER_LEN);
        p += ITEM_TOUCHED_HEADER_LEN;
        len -= ITEM_TOUCHED_HEADER_LEN;
    } else if (meta != ITEM_META_V1 && len >= ITEM_TAGGED_HEADER_LEN
               && has_magic(p, len, ITEM_MAGIC)) {
        it->flags = be32_get(p + ITEM_MAGIC_LEN);
        it->exptime = be32_get(p + ITEM_MAGIC_LEN + 4);
        p += ITEM_TAGGED_HEADER_LEN;
        len -= ITEM_TAGGED_HEADER_LEN;
    } else if (meta == ITEM_META_V1 || meta == ITEM_META_TAGGED) {
        /* meta 2 without its magic is never written: read it like the first form */
        if (len < ITEM_V1_HEADER_LEN)
            return false;
        it->flags = be32_get(p);
        it->exptime = be32_get(p + 4);
        p += ITEM_V1_HEADER_LEN;
        len -= ITEM_V1_HEADER_LEN;
    } else {
        /* storage.md §2.4: the original's prefixes, as -E / -F say; unknown meta values
         * are read the same way (storage.md §2.3: meta is opaque to the original) */
        if (layout & ITEM_RAW_EXPTIME) {
            if (len < 4)
                return false;
            it->exptime = be32_get(p);
            p += 4;
            len -= 4;
        }
        if (layout & ITEM_RAW_FLAGS) {
            if (len < 2)
                return false;
            it->flags = be16_get(p);
            p += 2;
            len -= 2;
        }
    }
    it->data = p;
    it->len = len;
    return true;
}

size_t item_encode_header(uint32_t flags, uint32_t exptime, uint64_t cas,
                          const uint8_t *head, size_t headlen, unsigned layout,
                          uint16_t *meta, uint8_t hdr[ITEM_HEADER_MAX])
{
    if (cas != 0) {
        memcpy(hdr, ITEM_MAGIC_TOUCHED, ITEM_MAGIC_LEN);
        be32_put(hdr + ITEM_MAGIC_LEN, flags);
        be32_put(hdr + ITEM_MAGIC_LEN + 4, exptime);
        be64_put(hdr + ITEM_TAGGED_HEADER_LEN, cas);
        *meta = ITEM_META_TOUCHED;
        return ITEM_TOUCHED_HEADER_LEN;
    }
    bool raw = !(layout & ITEM_RAW_NEVER)
        && (flags == 0 || ((layout & ITEM_RAW_FLAGS) && flags <= 0xffff))
        && (exptime == 0 || (layout & ITEM_RAW_EXPTIME));
    if (raw) {
        size_t n = 0;
        if (layout & ITEM_RAW_EXPTIME) {
            be32_put(hdr, exptime);
            n += 4;
        }
        if (layout & ITEM_RAW_FLAGS) {
            be16_put(hdr + n, (uint16_t)flags);
            n += 2;
        }
        /* the payload must not start with a magic, or it would read as tagged */
        uint8_t start[ITEM_HEADER_MAX + ITEM_MAGIC_LEN];
        memcpy(start, hdr, n);
        size_t take = headlen < ITEM_MAGIC_LEN ? headlen : ITEM_MAGIC_LEN;
        if (take)
            memcpy(start + n, head, take);
        if (!starts_tagged(start, n + take)) {
            *meta = ITEM_META_RAW;
            return n;
        }
    }
    memcpy(hdr, ITEM_MAGIC, ITEM_MAGIC_LEN);
    be32_put(hdr + ITEM_MAGIC_LEN, flags);
    be32_put(hdr + ITEM_MAGIC_LEN + 4, exptime);
    *meta = ITEM_META_TAGGED;
    return ITEM_TAGGED_HEADER_LEN;
}

uint8_t *item_value_new(uint32_t flags, uint32_t exptime, uint64_t cas, const void *a,
                        size_t alen, const void *b, size_t blen, unsigned layout, size_t *len)
{
    uint8_t head[ITEM_MAGIC_LEN];
    size_t hlen = 0;
    for (size_t i = 0; i < alen && hlen < ITEM_MAGIC_LEN; i++)
        head[hlen++] = ((const uint8_t *)a)[i];
    for (size_t i = 0; i < blen && hlen < ITEM_MAGIC_LEN; i++)
        head[hlen++] = ((const uint8_t *)b)[i];
    uint8_t hdr[ITEM_HEADER_MAX];
    uint16_t meta;
    size_t n = item_encode_header(flags, exptime, cas, head, hlen, layout, &meta, hdr);
    *len = DBVALUE_HEADER_LEN + n + alen + blen;
    uint8_t *v = xmalloc(*len);
    be64_put(v, 0);
    be16_put(v + 8, meta);
    memcpy(v + DBVALUE_HEADER_LEN, hdr, n);
    if (alen > 0)
        memcpy(v + DBVALUE_HEADER_LEN + n, a, alen);
    if (blen > 0)
        memcpy(v + DBVALUE_HEADER_LEN + n + alen, b, blen);
    return v;
}

/* memcached's incr/decr operand: 1..20 decimal digits that fit in 64 bits. */
static bool parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > U64_DIGITS_MAX)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

uint32_t item_apply(uint32_t op, uint32_t uflags, uint64_t arg, const item *cur,
                    clocktime_t cur_ct, const item *req, unsigned layout, uint8_t **out,
                    size_t *outlen)
{
    *out = NULL;
    switch (op) {
    case UPDATE_OP_ADD:
        if (cur != NULL)
            return UPDATE_NOT_STORED;
        break;
    case UPDATE_OP_REPLACE:
        if (cur == NULL)
            return UPDATE_NOT_STORED;
        break;
    case UPDATE_OP_CAS:
        if (cur == NULL)
            return UPDATE_NOT_FOUND;
        /* exact compare, like Set's CAS; a touched item keeps its earlier CAS */
        if (item_cas(cur, cur_ct) != arg)
            return UPDATE_EXISTS;
        break;
    case UPDATE_OP_APPEND:
    case UPDATE_OP_PREPEND:
        if (cur == NULL)
            return UPDATE_NOT_STORED;
        /* memcached: the existing item keeps its flags and exptime */
        if (op == UPDATE_OP_APPEND)
            *out = item_value_new(cur->flags, cur->exptime, 0, cur->data, cur->len,
                                  req->data, req->len, layout, outlen);
        else
            *out = item_value_new(cur->flags, cur->exptime, 0, req->data, req->len,
                                  cur->data, cur->len, layout, outlen);
        return UPDATE_STORED;
    case UPDATE_OP_INCR:
    case UPDATE_OP_DECR: {
        if (cur == NULL && (uflags & UPDATE_FLAG_CREATE)) {
            /* created with the initial number, in the same step */
            *out = item_value_new(req->flags, req->exptime, 0, req->data, req->len, NULL, 0,
                                  layout, outlen);
            return UPDATE_CREATED;
        }
        if (cur == NULL)
            return UPDATE_NOT_FOUND;
        uint64_t n;
        if (!parse_u64(cur->data, cur->len, &n))
            return UPDATE_NON_NUMERIC;
        if (op == UPDATE_OP_INCR)
            n += arg;                              /* wraps at 2^64 as memcached */
        else
            n = n > arg ? n - arg : 0;             /* decr floors at 0 */
        char digits[U64_DIGITS_MAX + 1];
        int dlen = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)n);
        uint32_t exptime = (uflags & UPDATE_FLAG_TTL) ? req->exptime : cur->exptime;
        *out = item_value_new(cur->flags, exptime, 0, digits, (size_t)dlen, NULL, 0, layout,
                              outlen);
        return UPDATE_STORED;
    }
    case UPDATE_OP_TOUCH:
        if (cur == NULL)
            return UPDATE_NOT_FOUND;
        /* memcached keeps the CAS unique across touch, gat and gats, while the record
         * needs a new version to replicate: the CAS travels in the touched form */
        *out = item_value_new(cur->flags, req->exptime, item_cas(cur, cur_ct), cur->data,
                              cur->len, NULL, 0, layout, outlen);
        return UPDATE_STORED;
    default:
        return UPDATE_NOT_STORED;
    }
    /* ADD/REPLACE/CAS store the request's item */
    *out = item_value_new(req->flags, req->exptime, 0, req->data, req->len, NULL, 0, layout,
                          outlen);
    return UPDATE_STORED;
}
