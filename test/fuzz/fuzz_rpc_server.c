/* fuzz_rpc_server.c - libFuzzer harness for kumo-server's RPC port: the input is what one
 * client sends on one connection (then it half-closes), to a real server (fuzz_server.h)
 * with a real store.  mpscan, the RPC reader, the envelope and handshake checks and the
 * dispatch of every method (data, replication, manager-to-server, status) run as in
 * production; a connection that starts with a cluster handshake ([2, addr, role]) is a
 * cluster connection, as the manager's and peer servers' are.  The corpus
 * (test/fuzz/corpus/rpc_server) holds valid messages of every method, most from the
 * original's golden vectors. */
#include "fuzz_server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_server_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_exchange(loop, fuzz_connect(rpc_port), data, size);
    fuzz_server_after();
    return 0;
}
