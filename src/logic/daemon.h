/* daemon.h - process plumbing shared by the daemons: -d daemonize with pid file (cli.md
 * §7), listening sockets, and the signal set of cli.md §8. */
#ifndef KUMO_DAEMON_H
#define KUMO_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "logic/addr.h"

/* Double fork, setsid, write the pid (no newline) to pidfile.  When redirect_stdio,
 * stdin/stdout/stderr go to /dev/null.  Returns in the grandchild; on a pid file error
 * prints "can't open pid file: ..." and exits 1. */
void daemon_start(const char *pidfile, bool redirect_stdio);

/* Create a non-blocking TCP listening socket bound to addr (SO_REUSEADDR, backlog 1024).
 * Returns the fd, or -1 with err = "socket failed" / "bind failed" / "listen failed". */
int daemon_listen_tcp(const kaddr *addr, char *err, size_t errlen);

/* Make fd non-blocking and set TCP_NODELAY.  Returns 0 or -1. */
int daemon_socket_setup(int fd);

#endif
