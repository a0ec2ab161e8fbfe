/* fuzz_net.h - what the daemon harnesses (fuzz_rpc_server, fuzz_rpc_manager, fuzz_stream)
 * share: loopback listeners, one client exchange per input, and a connect() that reaches
 * only the harness's own ports.
 *
 * A fuzzed hash space, ReplaceOffer or handshake names arbitrary addresses, and the daemon
 * code dutifully connects to them.  The harness defines connect() (the executable's symbol
 * wins over libc's), so every outgoing connection to anything but a port the harness
 * registered with fuzz_allow_port fails at once with ECONNREFUSED, as a dead peer would:
 * no fuzz input ever sends a byte off this process's loopback ports. */
#ifndef KUMO_FUZZ_NET_H
#define KUMO_FUZZ_NET_H

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fuzz_io.h"

#define FUZZ_MAX_PORTS 8
static struct { uint16_t virt, real; } fuzz_ports[FUZZ_MAX_PORTS];
static int fuzz_nports;

/* 127.0.0.1:virt reaches 127.0.0.1:real (also allowed itself).  The golden vectors name
 * the original's fixed ports (manager 47700, server1 47801 with stream port 47901); the
 * daemons under test listen on free ports and carry those fixed addresses as identity. */
static void fuzz_map_port(uint16_t virt, uint16_t real)
{
    if (fuzz_nports < FUZZ_MAX_PORTS) {
        fuzz_ports[fuzz_nports].virt = virt;
        fuzz_ports[fuzz_nports++].real = real;
    }
}

static void fuzz_allow_port(uint16_t port)
{
    fuzz_map_port(port, port);
}

int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    if (sa != NULL && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in = *(const struct sockaddr_in *)sa;
        if (ntohl(in.sin_addr.s_addr) == INADDR_LOOPBACK)
            for (int i = 0; i < fuzz_nports; i++)
                if (ntohs(in.sin_port) == fuzz_ports[i].virt) {
                    in.sin_port = htons(fuzz_ports[i].real);
                    return (int)syscall(SYS_connect, fd, &in, sizeof in);
                }
    }
    errno = ECONNREFUSED;
    return -1;
}

/* A non-blocking listener on 127.0.0.1 with a free port, allowed for connect(). */
static int fuzz_listen(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("fuzz: listen");
        abort();
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    *port = ntohs(a.sin_port);
    fuzz_allow_port(*port);
    return fd;
}



#endif
