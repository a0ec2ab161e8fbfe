/* fuzz_memtext.c - libFuzzer harness for the memcached text request parser (memtext.rl):
 * parse the input as a stream of requests, as textconn does, with every outcome. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gateway/memtext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static memtext_request req;
    const char *buf = (const char *)data;
    size_t pos = 0;
    /* the value limit varies with the first byte so both sides of it are reached */
    size_t max_value = size > 0 ? (size_t)data[0] * 64 : 1024;
    for (int n = 0; n < 10000 && pos < size; n++) {
        size_t consumed = 0, need = 0;
        const char *err = NULL;
        enum memtext_status st = memtext_parse(buf + pos, size - pos, max_value, &req,
                                               &consumed, &need, &err);
        if (st == MEMTEXT_NEED_MORE)
            break;
        if (consumed == 0 || consumed > size - pos)
            __builtin_trap();            /* the parser must always make progress */
        if (st == MEMTEXT_OK) {
            for (unsigned i = 0; i < req.nkeys; i++)
                if (req.keys[i].ptr < buf + pos || req.keys[i].ptr + req.keys[i].len > buf + size)
                    __builtin_trap();
            if (req.data && (req.data < buf + pos || req.data + req.datalen > buf + size))
                __builtin_trap();
        }
        if (st == MEMTEXT_ERROR && !err)
            __builtin_trap();
        pos += consumed;
        if (st == MEMTEXT_ERROR && need)
            pos += need < size - pos ? need : size - pos;     /* the swallowed block */
        if (st == MEMTEXT_ERROR && !memchr(buf + pos - consumed, '\n', consumed)) {
            size_t skip = memtext_skip_line(buf + pos, size - pos);
            pos = skip ? pos + skip : size;
        }
        if (st == MEMTEXT_STREAM || st == MEMTEXT_CLOSE)
            break;                       /* textconn reads the keys / closes */
    }
    return 0;
}
