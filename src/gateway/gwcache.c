/* gwcache.c - the local read cache (-lc) on a Tokyo Cabinet abstract database. */
#include "gateway/gwcache.h"

#include <stdlib.h>
#include <tcadb.h>

#include "logic/clocktime.h"
#include "logic/record.h"

struct gwcache {
    TCADB *db;
};

gwcache *gwcache_open(const char *name, const char **err)
{
    TCADB *db = tcadbnew();
    if (!tcadbopen(db, name)) {
        tcadbdel(db);
        *err = "cannot open the Tokyo Cabinet database";
        return NULL;
    }
    gwcache *c = malloc(sizeof *c);
    if (!c) {
        tcadbclose(db);
        tcadbdel(db);
        *err = "out of memory";
        return NULL;
    }
    c->db = db;
    return c;
}

void gwcache_close(gwcache *c)
{
    if (!c)
        return;
    tcadbclose(c->db);
    tcadbdel(c->db);
    free(c);
}

void *gwcache_get(gwcache *c, const void *key, size_t klen, size_t *len)
{
    int n = 0;
    void *v = tcadbget(c->db, key, (int)klen, &n);
    if (v && !dbvalue_is_live((size_t)n)) {      /* shorter than the header: ignored */
        free(v);
        v = NULL;
    }
    *len = v ? (size_t)n : 0;
    return v;
}

void gwcache_put_if_newer(gwcache *c, const void *key, size_t klen, const void *val,
                          size_t vlen)
{
    if (!dbvalue_is_live(vlen))
        return;
    size_t oldlen;
    void *old = gwcache_get(c, key, klen, &oldlen);
    bool newer = !old || clocktime_less(dbvalue_clocktime(old), dbvalue_clocktime(val));
    free(old);
    if (newer)
        tcadbput(c->db, key, (int)klen, val, (int)vlen);
}
