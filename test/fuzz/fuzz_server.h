/* fuzz_server.h - a real kumo-server for the daemon harnesses: a Tokyo Cabinet store in a
 * temporary directory, the RPC and stream listeners on free loopback ports, and no manager
 * reachable.  Its cluster identity is the golden vectors' server1 (127.0.0.1:47801, stream
 * port 47901) and its manager the vectors' 127.0.0.1:47700, so the original's captured
 * messages (handshakes, hash spaces naming server1..4) mean what they meant there; the
 * harness's connect() maps 47801/47901 to the real ports and refuses everything else. */
#ifndef KUMO_FUZZ_SERVER_H
#define KUMO_FUZZ_SERVER_H

#include <dirent.h>
#include <string.h>

#include "fuzz_net.h"
#include "logic/log.h"
#include "server/server.h"
#include "server/store.h"

static struct ev_loop *loop;
static server *srv;
static store *st;
static uint16_t rpc_port, stream_port;
static char tmpdir[64];
static char store_path[96];

/* Remove backups (CreateBackup writes "<store>-<suffix>" copies) and stray files. */
static void fuzz_server_sweep(bool all)
{
    DIR *d = opendir(tmpdir);
    if (d == NULL)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (!all && strcmp(e->d_name, "db.tch") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static void fuzz_server_cleanup(void)
{
    fuzz_server_sweep(true);
    rmdir(tmpdir);
}

static void fuzz_server_setup(void)
{
    log_open("/dev/null", false, false);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kumo-fuzz-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_server_cleanup);
    snprintf(store_path, sizeof store_path, "%s/db.tch", tmpdir);
    char err[256];
    st = store_open(store_path, err, sizeof err);
    if (st == NULL) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
    store_set_garbage(st, 60, 3600, 2048);
    int rpc_fd = fuzz_listen(&rpc_port);
    int stream_fd = fuzz_listen(&stream_port);
    fuzz_map_port(47801, rpc_port);
    fuzz_map_port(47901, stream_port);
    server_config cfg = {
        .store_spec = store_path, .tmpdir = tmpdir,
        .set_retry = 2, .delete_retry = 2, .mem_limit_mib = 0, .garbage_max_sec = 3600,
        .connect_timeout = 1, .connect_retry_limit = 1, .clock_interval = 0.5,
    };
    kaddr_set_ipv4(&cfg.self, 0x7f000001, 47801);
    kaddr_set_ipv4(&cfg.stream_addr, 0x7f000001, 47901);
    kaddr_set_ipv4(&cfg.mgr1, 0x7f000001, 47700);
    loop = ev_default_loop(0);
    srv = server_new(loop, st, &cfg);
    server_start(srv, rpc_fd, stream_fd);
    /* Serve at once: both hash spaces hold this server alone (a HashSpaceSync in the
     * input may replace them), so data methods reach the store. */
    hashspace_add_node(server_whs(srv), &cfg.self, true);
    hashspace_add_node(server_rhs(srv), &cfg.self, true);
}

/* After each input: advance the clock, keep the temporary directory small. */
static void fuzz_server_after(void)
{
    static unsigned n;
    server_tick(srv);
    if (++n % 256 == 0)
        fuzz_server_sweep(false);
}

#endif
