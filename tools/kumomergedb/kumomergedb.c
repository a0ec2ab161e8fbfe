/* kumomergedb.c - merge server databases/backups into one, newest version per key
 * (tools.md §7, storage.md §7). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logic/log.h"
#include "logic/record.h"
#include "logic/xmalloc.h"
#include "server/store.h"

typedef struct merge_ctx {
    store *dst;
    uint64_t merged;   /* cumulative over all sources, as the original prints them */
    uint64_t total;
    bool failed;       /* a write into dst failed: stop, exit non-zero */
} merge_ctx;

/* store_iterate hands over live values only (>= 10 bytes; tombstones skipped and, with
 * purge limit 0, never purged), which is exactly what gets counted. */
static bool merge_one(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    merge_ctx *m = ud;
    m->total++;
    if (klen < DBKEY_HASH_LEN)
        return true;
    if (store_update(m->dst, key, klen, val, vlen)) {
        m->merged++;
        return true;
    }
    /* store_update says false both for "kept the newer record" and for a storage error;
     * tell them apart by the rule itself: a record that should have replaced failed. */
    size_t oldlen = 0;
    void *old = store_get(m->dst, key, klen, &oldlen);
    bool failed = record_should_replace(old, oldlen, dbvalue_clocktime(val));
    free(old);
    if (failed) {
        m->failed = true;
        return false;
    }
    return true;
}

static void usage(FILE *out, const char *prog)
{
    fprintf(out, "usage: %s <dst.tch> <src.tch>...\n", prog);
}

int main(int argc, char **argv)
{
    const char *prog = argv[0] != NULL ? argv[0] : "kumomergedb";
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        usage(stdout, prog);   /* DECISIONS.md §2: --help exits 0 */
        return 0;
    }
    if (argc < 4) {
        usage(stderr, prog);
        return 1;
    }
    /* store.c reports storage failures through the text log: send them to stderr */
    log_open("/dev/stderr", false, false);

    int nsrc = argc - 2;
    store **src = xcalloc((size_t)nsrc, sizeof(*src));
    store *dst = NULL;
    char err[512];
    int rc = 1;
    /* sources first, then the destination, as the original opens them */
    for (int i = 0; i < nsrc; i++) {
        src[i] = store_open(argv[2 + i], err, sizeof(err));
        if (src[i] == NULL) {
            fprintf(stderr, "%s: %s\n", prog, err);
            goto out;
        }
    }
    dst = store_open(argv[1], err, sizeof(err));
    if (dst == NULL) {
        fprintf(stderr, "%s: %s\n", prog, err);
        goto out;
    }

    merge_ctx m = { .dst = dst };
    for (int i = 0; i < nsrc; i++) {
        printf("merging %s...", argv[2 + i]);
        fflush(stdout);
        store_iterate(src[i], 0, merge_one, &m);
        if (m.failed) {
            printf("\n");
            fflush(stdout);
            fprintf(stderr, "%s: writing to %s failed\n", prog, argv[1]);
            goto out;
        }
        printf("  merged %llu records of %llu records\n",
               (unsigned long long)m.merged, (unsigned long long)m.total);
    }
    printf("closing %s...\n", argv[1]);
    fflush(stdout);
    rc = 0;
out:
    for (int i = 0; i < nsrc; i++)
        if (src[i] != NULL)
            store_close(src[i]);
    if (dst != NULL)
        store_close(dst);
    if (rc == 0) {
        printf("done.\n");
        fflush(stdout);
    }
    free(src);
    return rc;
}
