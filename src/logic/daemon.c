/* daemon.c - process plumbing shared by the daemons: daemonizing, pid file, listen sockets. */
#include "logic/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void daemon_start(const char *pidfile, bool redirect_stdio)
{
    /* cli.md §7: classic double fork; the caller of -d gets 0 once the first fork
     * succeeded.  No chdir, no umask change. */
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork failed: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0)
        _exit(0);
    setsid();
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork failed: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0)
        _exit(0);

    if (pidfile != NULL) {
        FILE *f = fopen(pidfile, "w");
        if (f == NULL) {
            fprintf(stderr, "can't open pid file: %s\n", strerror(errno));
            exit(1);
        }
        /* decimal, no trailing newline (observed on the original) */
        fprintf(f, "%d", (int)getpid());
        fclose(f);
    }

    if (redirect_stdio) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, STDIN_FILENO);
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            if (fd > STDERR_FILENO)
                close(fd);
        }
    }
}

int daemon_listen_tcp(const kaddr *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t slen = kaddr_to_sockaddr(addr, &ss);
    if (slen == 0) {
        /* an unset address cannot be bound; report it like the original's bind error */
        snprintf(err, errlen, "bind failed");
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket failed");
        return -1;
    }
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0) {
        snprintf(err, errlen, "setsockopt failed");
        close(fd);
        return -1;
    }
    /* DECISIONS.md §4: bind exactly the address we were told, never 0.0.0.0 on our own. */
    if (bind(fd, (struct sockaddr *)&ss, slen) != 0) {
        snprintf(err, errlen, "bind failed");
        close(fd);
        return -1;
    }
    if (listen(fd, 1024) != 0) {   /* cli.md §6: backlog 1024 */
        snprintf(err, errlen, "listen failed");
        close(fd);
        return -1;
    }
    return fd;
}

int daemon_socket_setup(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -1;
    int on = 1;
    /* request/response RPC: small messages must not wait for Nagle */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0)
        return -1;
    return 0;
}
