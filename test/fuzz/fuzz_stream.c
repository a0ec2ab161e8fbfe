/* fuzz_stream.c - libFuzzer harness for kumo-server's replace streams (wire.md §10) on a
 * real server with a real store (fuzz_server.h).  The first input byte picks the side:
 *   0: the receiver.  The server is told to pull an offer (stream_pull_start, what a
 *      ReplaceOffer does) from the harness's listener; the harness accepts and sends the
 *      rest of the input zlib-compressed, so the fuzzer mutates the msgpack [key, value]
 *      pairs the server inflates, vets (mpscan), unpacks and applies store-if-newer;
 *   1: the receiver again, the rest sent as is: corrupt and truncated zlib streams;
 *   2: the sender: the rest goes to the server's -L port (the 23-byte header, then
 *      acknowledgements).
 * The corpus (test/fuzz/corpus/stream) holds valid streams, the original's among them. */
#include <zlib.h>

#include "fuzz_server.h"
#include "server/stream.h"

static int sender_fd;
static uint16_t sender_port;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_server_setup();
    sender_fd = fuzz_listen(&sender_port);
    return 0;
}

/* The server's pulling connection to the harness's listener, or -1. */
static int accept_puller(void)
{
    kaddr sender;
    kaddr_set_ipv4(&sender, 0x7f000001, sender_port);
    stream_pull_start(server_streams(srv), &sender);
    for (int i = 0; i < 1000; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        int fd = accept(sender_fd, NULL, NULL);
        if (fd >= 0) {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            return fd;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            perror("fuzz_stream: accept");
            abort();
        }
        usleep(100);
    }
    fprintf(stderr, "fuzz_stream: the server never connected to pull the stream\n");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] % 3;
    data++;
    size--;
    if (mode == 2) {
        fuzz_exchange(loop, fuzz_connect(stream_port), data, size);
    } else if (mode == 1) {
        fuzz_exchange(loop, accept_puller(), data, size);
    } else {
        uLongf zlen = compressBound((uLong)size);
        uint8_t *z = malloc(zlen);
        if (z == NULL || compress(z, &zlen, data, (uLong)size) != Z_OK)
            abort();
        fuzz_exchange(loop, accept_puller(), z, zlen);
        free(z);
    }
    fuzz_server_after();
    return 0;
}
