/* kumo-mkdb.c - write a kumo-server database of N synthetic records, for the size
 * benchmark (scripts/bench-size.sh): what a server that took N sets of the gateway would
 * hold, made in minutes instead of hours.  Not installed.
 *
 *   kumo-mkdb PATH N [VALUE_BYTES=200] [PREFIX=k]
 *
 * Keys are PREFIX-0 .. PREFIX-(N-1); each value is the original's raw payload form
 * (meta 0, storage.md §2.3: what kumofs 0.4.13's gateway wrote for flags 0 and no
 * expiry), "PREFIX-i=" followed by 'v' up to VALUE_BYTES, so a reader can check it.  The
 * database gets Tokyo Cabinet's default tuning, as kumo-server creates it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tcutil.h>
#include <tchdb.h>

#include "logic/clocktime.h"
#include "logic/record.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PATH N [VALUE_BYTES=200] [PREFIX=k]\n", argv[0]);
        return 1;
    }
    const char *path = argv[1];
    unsigned long long n = strtoull(argv[2], NULL, 10);
    size_t vsize = argc > 3 ? strtoul(argv[3], NULL, 10) : 200;
    const char *prefix = argc > 4 ? argv[4] : "k";
    TCHDB *db = tchdbnew();
    tchdbsetxmsiz(db, 1LL << 30);
    if (!tchdbopen(db, path, HDBOWRITER | HDBOCREAT | HDBOTRUNC)) {
        fprintf(stderr, "%s: %s\n", path, tchdberrmsg(tchdbecode(db)));
        return 1;
    }
    uint8_t key[300], val[DBVALUE_HEADER_LEN + 65536];
    if (vsize > sizeof(val) - DBVALUE_HEADER_LEN)
        vsize = sizeof(val) - DBVALUE_HEADER_LEN;
    clocktime_t ct = clocktime_make(1000000000u, 1);   /* 2001: older than any real write */
    be64_put(val, ct);
    be16_put(val + 8, 0);
    for (unsigned long long i = 0; i < n; i++) {
        char user[256];
        int klen = snprintf(user, sizeof(user), "%s-%llu", prefix, i);
        dbkey_make(key, user, (size_t)klen);
        uint8_t *payload = val + DBVALUE_HEADER_LEN;
        int h = snprintf((char *)payload, vsize + 1, "%s=", user);
        if ((size_t)h < vsize)
            memset(payload + h, 'v', vsize - (size_t)h);
        if (!tchdbput(db, key, DBKEY_HASH_LEN + klen, val, (int)(DBVALUE_HEADER_LEN + vsize))) {
            fprintf(stderr, "put: %s\n", tchdberrmsg(tchdbecode(db)));
            return 1;
        }
        if (i % 1000000 == 999999)
            fprintf(stderr, "%llu records\n", i + 1);
    }
    if (!tchdbclose(db)) {
        fprintf(stderr, "close: %s\n", tchdberrmsg(tchdbecode(db)));
        return 1;
    }
    tchdbdel(db);
    return 0;
}
