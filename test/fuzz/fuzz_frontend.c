/* fuzz_frontend.c - libFuzzer harness for the whole memcached front ends of kumo-gateway:
 * the text port (classic and meta commands), the binary port and the cloudy port, with
 * the real connection machinery (frontconn), real sockets and a real event loop.  The
 * first input byte picks the port; the rest is what a client sends before it half-closes.
 * The gateway has no servers and no retries, so every request fails at once and its
 * reply (SERVER_ERROR, status 0x0084, ...) is formatted; the parsers, the reply FIFO, the
 * streamed multi-get, swallowing, draining and closing run as in production. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/binconn.h"
#include "gateway/gateway.h"
#include "gateway/gwstats.h"
#include "gateway/textconn.h"
#include "logic/log.h"

#include "fuzz_io.h"

static struct ev_loop *loop;
static gateway *gw;
static gwstats stats;
static int ports[3];

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        abort();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    *port = ntohs(a.sin_port);
    return fd;
}

static void setup(void)
{
    loop = ev_default_loop(0);
    gateway_config gc = {.get_retry = 0, .set_retry = 0, .delete_retry = 0,
                         .renew_threshold = 4, .connect_timeout = 1, .connect_retry_limit = 1,
                         .clock_interval = 0.1};
    gw = gateway_new(loop, &gc);     /* no manager, never started: no hash space */
    gwstats_init(&stats);
    textconn_config tc = {.item_size_max = 4096};
    binconn_config bc = {.item_size_max = 4096};
    binconn_config cc = {.item_size_max = 4096, .cloudy = true};
    textconn_listen(loop, listen_any(&ports[0]), gw, &stats, &tc);
    binconn_listen(loop, listen_any(&ports[1]), gw, &stats, &bc);
    binconn_listen(loop, listen_any(&ports[2]), gw, &stats, &cc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_open("/dev/null", false, false);     /* every request fails: keep it quiet */
    setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fd = fuzz_connect((uint16_t)ports[data[0] % 3]);
    fuzz_exchange(loop, fd, data + 1, size - 1);
    return 0;
}
