/* fuzz_rpc_manager.c - libFuzzer harness for kumo-manager's RPC port: the input is what one
 * client sends on one connection (then it half-closes), to a real manager.  mpscan, the
 * RPC reader, handshakes and the dispatch of every manager method (keepalives and
 * newcomers from servers, hash-space requests, partner sync and replace election, the
 * kumoctl admin commands) run as in production.  The manager's identity is the golden
 * vectors' 127.0.0.1:47700 and its partner 127.0.0.1:47701, neither reachable but its own
 * listener (fuzz_net.h), so the original's captured messages mean what they meant there.
 * The corpus (test/fuzz/corpus/rpc_manager) holds valid messages of every method. */
#include "fuzz_net.h"
#include "logic/addr.h"
#include "logic/log.h"
#include "manager/manager.h"

static struct ev_loop *loop;
static manager *mgr;
static uint16_t port;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_open("/dev/null", false, false);
    int fd = fuzz_listen(&port);
    fuzz_map_port(47700, port);
    manager_config cfg = {.auto_replace = false, .replace_delay = 1, .connect_timeout = 1,
                          .connect_retry_limit = 1, .clock_interval = 0.5};
    kaddr_set_ipv4(&cfg.self, 0x7f000001, 47700);
    kaddr_set_ipv4(&cfg.partner, 0x7f000001, 47701);
    loop = ev_default_loop(0);
    mgr = manager_new(loop, &cfg);
    manager_listen_fd(mgr, fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned n;
    fuzz_exchange(loop, fuzz_connect(port), data, size);
    manager_tick(mgr);
    if (++n % 16 == 0)
        manager_keepalive(mgr);     /* sessions that keep failing are dropped */
    return 0;
}
