/* fuzz_io.h - the client side shared by the socket harnesses: send one input on a
 * connection, half-close, read everything back while running the daemon's loop, then
 * close abortively. */
#ifndef KUMO_FUZZ_IO_H
#define KUMO_FUZZ_IO_H

#include <errno.h>
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Send data on fd, half-close, read (and drop) until the daemon closes, running loop in
 * between; bounded in rounds.  Then reset the connection (no TIME_WAIT per input) and let
 * the daemon see it. */
static void fuzz_exchange(struct ev_loop *loop, int fd, const uint8_t *data, size_t size)
{
    size_t off = 0;
    bool closed = false, wr_done = false;
    static char sink[65536];
    for (int i = 0; i < 20000 && !closed; i++) {
        if (!wr_done) {
            if (off < size) {
                ssize_t n = write(fd, data + off, size - off);
                if (n > 0)
                    off += (size_t)n;
                else if (n < 0 && errno != EAGAIN)
                    wr_done = true;
            }
            if (off >= size) {
                shutdown(fd, SHUT_WR);
                wr_done = true;
            }
        }
        ev_run(loop, EVRUN_NOWAIT);
        for (;;) {
            ssize_t n = read(fd, sink, sizeof sink);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                closed = true;
                break;
            }
            if (n < 0)
                break;
        }
    }
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    for (int i = 0; i < 100; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

/* A blocking connect to 127.0.0.1:port that survives libFuzzer's -timeout alarm. */
static int fuzz_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons(port)};
    if (fd < 0) {
        perror("fuzz: socket");
        abort();
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int err = errno;
        socklen_t len = sizeof err;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (err == EINTR) {
            while (poll(&p, 1, 1000) < 0 && errno == EINTR)
                ;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        }
        if (err) {
            errno = err;
            perror("fuzz: connect");
            abort();
        }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

#endif
