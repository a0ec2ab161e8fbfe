/* mpscan.c - incremental msgpack structure check that runs ahead of msgpack-c's unpacker,
 * so announced lengths cannot make the unpacker allocate beyond a per-message limit.
 *
 * msgpack-c allocates count * sizeof(msgpack_object) as soon as it reads an array or map
 * header, before any element arrives: five bytes (dd ff ff ff ff) ask for 96 GiB.  The
 * scanner keeps a lower bound of the message's size (bytes passed + the least number of
 * bytes the announced structure still needs: one per pending object, the full payload of
 * a pending string) and refuses a header the moment that bound exceeds the cap. */
#include "rpc/mpscan.h"

#include <assert.h>

enum {
    ST_HEADER,   /* next byte is a type byte */
    ST_ARG,      /* next byte is part of a big-endian length/count */
    ST_SKIP      /* next bytes are payload (string body, number, ext) */
};

enum { K_RAW, K_EXT, K_ARRAY, K_MAP };   /* what an ST_ARG length announces */

/* Type bytes 0xc0..0xdf (msgpack spec "formats"): what follows each. */
enum { OP_DONE, OP_BAD, OP_ARG, OP_SKIP };
static const struct {
    uint8_t op;
    uint8_t n;       /* OP_ARG: length bytes; OP_SKIP: payload bytes */
    uint8_t kind;    /* OP_ARG: K_* */
} formats[32] = {
    [0x00] = { OP_DONE, 0, 0 },         /* nil */
    [0x01] = { OP_BAD, 0, 0 },          /* never used */
    [0x02] = { OP_DONE, 0, 0 },         /* false */
    [0x03] = { OP_DONE, 0, 0 },         /* true */
    [0x04] = { OP_ARG, 1, K_RAW },      /* bin 8/16/32 */
    [0x05] = { OP_ARG, 2, K_RAW },
    [0x06] = { OP_ARG, 4, K_RAW },
    [0x07] = { OP_ARG, 1, K_EXT },      /* ext 8/16/32 */
    [0x08] = { OP_ARG, 2, K_EXT },
    [0x09] = { OP_ARG, 4, K_EXT },
    [0x0a] = { OP_SKIP, 4, 0 },         /* float 32 */
    [0x0b] = { OP_SKIP, 8, 0 },         /* float 64 */
    [0x0c] = { OP_SKIP, 1, 0 },         /* uint 8/16/32/64 */
    [0x0d] = { OP_SKIP, 2, 0 },
    [0x0e] = { OP_SKIP, 4, 0 },
    [0x0f] = { OP_SKIP, 8, 0 },
    [0x10] = { OP_SKIP, 1, 0 },         /* int 8/16/32/64 */
    [0x11] = { OP_SKIP, 2, 0 },
    [0x12] = { OP_SKIP, 4, 0 },
    [0x13] = { OP_SKIP, 8, 0 },
    [0x14] = { OP_SKIP, 1 + 1, 0 },     /* fixext 1/2/4/8/16: type byte + data */
    [0x15] = { OP_SKIP, 1 + 2, 0 },
    [0x16] = { OP_SKIP, 1 + 4, 0 },
    [0x17] = { OP_SKIP, 1 + 8, 0 },
    [0x18] = { OP_SKIP, 1 + 16, 0 },
    [0x19] = { OP_ARG, 1, K_RAW },      /* str 8/16/32 */
    [0x1a] = { OP_ARG, 2, K_RAW },
    [0x1b] = { OP_ARG, 4, K_RAW },
    [0x1c] = { OP_ARG, 2, K_ARRAY },    /* array 16/32 */
    [0x1d] = { OP_ARG, 4, K_ARRAY },
    [0x1e] = { OP_ARG, 2, K_MAP },      /* map 16/32 */
    [0x1f] = { OP_ARG, 4, K_MAP },
};

void mpscan_init(mpscan *s, size_t max_message, uint32_t max_elems)
{
    assert(max_message >= 1 && max_message <= UINT32_MAX &&
           "mpscan_init: max_message out of range");
    *s = (mpscan){ .max_message = (uint32_t)max_message, .max_elems = max_elems };
    s->state = ST_HEADER;
    s->owed = 1;   /* the next message is at least its type byte */
}

const char *mpscan_strerror(enum mpscan_error e)
{
    switch (e) {
    case MPSCAN_OK: return "ok";
    case MPSCAN_BAD_BYTE: return "invalid type byte";
    case MPSCAN_TOO_LARGE: return "announced size over the message limit";
    case MPSCAN_TOO_MANY: return "too many elements announced";
    case MPSCAN_TOO_DEEP: return "nested too deep";
    }
    return "?";
}

enum mpscan_error mpscan_execute(mpscan *s, const void *data, size_t len)
{
    if (s->err != MPSCAN_OK)
        return (enum mpscan_error)s->err;
    const uint8_t *p = data, *end = p + len;
    /* Hot state in locals so the byte loop stays in registers; written back at the end.
     * Invariant checked after every increase of owed: seen + owed <= max_message. Since
     * each byte moves one unit from owed to seen, the sum only changes at headers. */
    unsigned state = s->state;
    uint64_t seen = s->seen, owed = s->owed, skip = s->skip;
    uint32_t arg = s->arg;
    unsigned trail = s->trail;
    unsigned depth = s->depth;
    uint64_t elems = s->elems;
    /* The innermost container's count lives in a register (not left[depth - 1]) while
     * scanning: each small object decrements it, and a memory round trip per byte would
     * dominate header-dense input. */
    uint32_t cur = depth > 0 ? s->left[depth - 1] : 0;
    const uint64_t max = s->max_message;
    enum mpscan_error err = MPSCAN_OK;
    uint64_t slots;    /* objects a container announces: its count, twice that for a map */

    while (p < end) {
        if (state == ST_SKIP) {
            uint64_t k = (uint64_t)(end - p) < skip ? (uint64_t)(end - p) : skip;
            p += k;
            seen += k;
            owed -= k;
            skip -= k;
            if (skip != 0)
                break;   /* used up the input inside the payload */
            goto object_done;
        }
        unsigned b = *p++;
        seen++;
        owed--;
        if (state == ST_ARG) {
            arg = arg << 8 | b;
            if (--trail != 0)
                continue;
            switch (s->kind) {
            case K_RAW:
                if (arg == 0)
                    goto object_done;
                skip = arg;
                goto payload;
            case K_EXT:
                skip = (uint64_t)arg + 1;   /* the ext type byte comes before the data */
                goto payload;
            case K_ARRAY:
                slots = arg;
                goto container;
            default:
                slots = 2 * (uint64_t)arg;
                goto container;
            }
        }
        /* ST_HEADER: one type byte. */
        if (b < 0x80 || b >= 0xe0)
            goto object_done;                   /* positive / negative fixint */
        if (b < 0xa0) {                         /* fixmap 0x80.., fixarray 0x90.. */
            slots = b < 0x90 ? 2 * (b & 0x0f) : b & 0x0f;
            goto container;
        }
        if (b < 0xc0) {                         /* fixstr */
            skip = b & 0x1f;
            if (skip == 0)
                goto object_done;
            goto payload;
        }
        switch (formats[b - 0xc0].op) {
        case OP_DONE:
            goto object_done;
        case OP_BAD:
            err = MPSCAN_BAD_BYTE;
            goto out;
        case OP_SKIP:
            skip = formats[b - 0xc0].n;
            goto payload;
        default:
            trail = formats[b - 0xc0].n;
            s->kind = formats[b - 0xc0].kind;
            arg = 0;
            state = ST_ARG;
            owed += trail;
            if (seen + owed > max) {
                err = MPSCAN_TOO_LARGE;
                goto out;
            }
            continue;
        }

    payload:
        owed += skip;
        if (seen + owed > max) {
            err = MPSCAN_TOO_LARGE;
            goto out;
        }
        state = ST_SKIP;
        continue;

    container:
        /* msgpack-c checks its stack before looking at the count: even an empty container
         * is refused at full depth. */
        if (depth == MPSCAN_MAX_DEPTH) {
            err = MPSCAN_TOO_DEEP;
            goto out;
        }
        owed += slots;
        if (seen + owed > max) {
            err = MPSCAN_TOO_LARGE;
            goto out;
        }
        elems += slots;
        if (elems > s->max_elems) {
            err = MPSCAN_TOO_MANY;
            goto out;
        }
        state = ST_HEADER;
        if (slots != 0) {
            /* fits: slots <= owed <= max_message <= UINT32_MAX */
            if (depth > 0)
                s->left[depth - 1] = cur;
            cur = (uint32_t)slots;
            depth++;
            continue;
        }
        /* fall through: an empty container is a complete object */

    object_done:
        state = ST_HEADER;
        while (depth > 0 && --cur == 0) {      /* that filled the container: it ends too */
            if (--depth > 0)
                cur = s->left[depth - 1];
        }
        if (depth == 0) {                       /* top-level object complete: next message */
            s->ended = s->fed + (uint64_t)(p - (const uint8_t *)data);
            seen = 0;
            owed = 1;
            elems = 0;
        }
    }

out:
    s->fed += (uint64_t)(p - (const uint8_t *)data);
    s->state = (uint8_t)state;
    s->seen = seen;
    s->owed = owed;
    s->skip = skip;
    s->arg = arg;
    s->trail = (uint8_t)trail;
    s->depth = depth;
    if (depth > 0)
        s->left[depth - 1] = cur;
    s->elems = elems;
    s->err = (uint8_t)err;
    return err;
}
