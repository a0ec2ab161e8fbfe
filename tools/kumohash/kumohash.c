/* kumohash.c - consistent-hashing simulator: key hashes, slot lists and the ring (tools.md §5). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logic/addr.h"
#include "logic/hashspace.h"
#include "logic/xmalloc.h"
#include "tools/common/toolrpc.h"

/* The original's server list falls back to the MANAGER port although its usage text
 * promises 19800 (tools.md §1, §5).  Kept: scripts depend on the printed labels. */
#define KUMOHASH_SERVER_LIST_PORT 19700

static void usage(void)
{
    /* stdout and exit 1, as the Ruby tool */
    fputs("Usage: kumohash server-address[:port=19800] ... -- command [options]\n"
          "       kumohash -m manager-address[:port=19700] command [options]\n"
          "command:\n"
          "   hash  keys...              calculate hash of keys\n"
          "   assign  keys...            calculate assign node\n"
          "   dump                       dump hash space\n", stdout);
    exit(1);
}

/* A ring plus one display label per node (index = hs.nodes index). */
struct ring {
    hashspace hs;
    char **labels;      /* "host:port" as the user typed it, or the formatted address */
};

static void ring_destroy(struct ring *r)
{
    for (size_t i = 0; i < r->hs.nnodes; i++)
        free(r->labels[i]);
    free(r->labels);
    hashspace_destroy(&r->hs);
}

/* Labels for a ring whose nodes came off the wire: the address as "ip:port". */
static void ring_label_addresses(struct ring *r)
{
    r->labels = xcalloc(r->hs.nnodes ? r->hs.nnodes : 1, sizeof(char *));
    for (size_t i = 0; i < r->hs.nnodes; i++) {
        char buf[KADDR_STRLEN];
        r->labels[i] = xstrdup(kaddr_format(&r->hs.nodes[i].addr, buf));
    }
}

static const char *label_of(const struct ring *r, const hs_node *n)
{
    return r->labels[n - r->hs.nodes];
}

static void print_hash(const char *key)
{
    printf("%016llx  %s\n", (unsigned long long)hs_hash(key, strlen(key)), key);
}

/* `assign`: the hash line, then the first three distinct nodes clockwise; fault nodes
 * are listed like active ones (tools.md §5, hashing.md §2.3). */
static void print_assign(const struct ring *r, char **keys, int nkeys)
{
    for (int k = 0; k < nkeys; k++) {
        const hs_node *slot[HS_REPLICAS];
        size_t n = hashspace_assign(&r->hs, hs_hash(keys[k], strlen(keys[k])), slot);
        print_hash(keys[k]);
        for (size_t i = 0; i < n; i++)
            printf("  %zu: %s\n", i, label_of(r, slot[i]));
    }
}

/* `dump`: every virtual node in ascending position order, 128 per server. */
static void print_dump(const struct ring *r)
{
    for (size_t i = 0; i < r->hs.nring; i++)
        printf("%016llx  %s\n", (unsigned long long)r->hs.ring[i].pos,
               r->labels[r->hs.ring[i].node]);
}

/* Offline mode: "host[:port]" split at the FIRST ':' (tools.md §1); the name is resolved
 * to build the 6-byte dump but printed as typed.  All servers are active. */
static int build_server_list(struct ring *r, char **servers, int nservers)
{
    hashspace_init(&r->hs);
    r->labels = xcalloc(nservers ? (size_t)nservers : 1, sizeof(char *));
    for (int i = 0; i < nservers; i++) {
        char *host = xstrdup(servers[i]);
        char *colon = strchr(host, ':');
        char label[512], err[256];
        unsigned long port = KUMOHASH_SERVER_LIST_PORT;
        kaddr a;

        if (colon != NULL) {
            char *end;
            *colon = '\0';
            port = strtoul(colon + 1, &end, 10);
            if (colon[1] == '\0' || *end != '\0' || colon[1] == '-' || port > 65535) {
                fprintf(stderr, "kumohash: invalid port number: %s\n", colon + 1);
                free(host);
                return -1;
            }
        }
        /* host has no ':' left, so this only resolves it and applies the port */
        if (kaddr_parse_connect(&a, host, (uint16_t)port, err, sizeof(err)) != 0) {
            fprintf(stderr, "kumohash: %s\n", err);
            free(host);
            return -1;
        }
        snprintf(label, sizeof(label), "%s:%s", host,
                 colon ? colon + 1 : "19700");
        r->labels[r->hs.nnodes] = xstrdup(label);
        hashspace_add_node(&r->hs, &a, true);
        free(host);
    }
    return 0;
}

/* -m mode: the manager's attached nodes (active and fault) in whs order, via
 * GetNodesInfo (tools.md §5).  Kept separate from the offline path so the RPC side can
 * evolve with tools/common/toolrpc. */
static int run_manager_mode(const char *manager, const char *cmd, char **keys, int nkeys)
{
    char err[512];
    struct ring r;
    kaddr *newcomers = NULL;
    size_t nnew = 0;
    toolrpc *c = toolrpc_connect(manager, TOOLRPC_MANAGER_PORT, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "kumohash: %s\n", err);
        return 1;
    }
    hashspace_init(&r.hs);
    if (toolrpc_get_nodes_info(c, &r.hs, &newcomers, &nnew, err, sizeof(err)) != 0) {
        fprintf(stderr, "kumohash: %s\n", err);
        toolrpc_close(c);
        hashspace_destroy(&r.hs);
        return 1;
    }
    toolrpc_close(c);
    free(newcomers);
    ring_label_addresses(&r);
    if (strcmp(cmd, "dump") == 0)
        print_dump(&r);
    else
        print_assign(&r, keys, nkeys);
    ring_destroy(&r);
    return 0;
}

int main(int argc, char **argv)
{
    const char *manager = NULL;
    char **servers = NULL, **rest;
    int nservers = 0, nrest;

    if (argc < 2)
        usage();
    if (strcmp(argv[1], "-m") == 0) {
        if (argc < 3)
            usage();
        manager = argv[2];
        rest = argv + 3;
        nrest = argc - 3;
    } else {
        /* every argument before the first "--" is a server; without "--" there is no
         * command and the usage follows */
        int i = 1;
        while (i < argc && strcmp(argv[i], "--") != 0)
            i++;
        servers = argv + 1;
        nservers = i - 1;
        rest = argv + (i < argc ? i + 1 : argc);
        nrest = argc - (i < argc ? i + 1 : argc);
    }
    if (nrest < 1)
        usage();

    const char *cmd = rest[0];
    char **args = rest + 1;
    int nargs = nrest - 1;

    if (strcmp(cmd, "hash") == 0) {
        /* needs no ring: -m is ignored (reference-outputs.md) */
        if (nargs == 0)
            usage();
        for (int i = 0; i < nargs; i++)
            print_hash(args[i]);
        return 0;
    }
    if (strcmp(cmd, "dump") == 0 || strcmp(cmd, "assign") == 0) {
        bool dump = cmd[0] == 'd';
        if (dump ? nargs != 0 : nargs == 0)
            usage();
        if (manager != NULL)
            return run_manager_mode(manager, cmd, args, nargs);

        struct ring r;
        if (build_server_list(&r, servers, nservers) != 0) {
            ring_destroy(&r);
            return 1;
        }
        if (dump)
            print_dump(&r);
        else
            print_assign(&r, args, nargs);
        ring_destroy(&r);
        return 0;
    }
    printf("unknown command %s\n\n", cmd);
    usage();
    return 1;
}
