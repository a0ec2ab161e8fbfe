/* daemon.h - process plumbing shared by the daemons: -d daemonize with pid file (cli.md
 * §7), listening sockets, and the signal set of cli.md §8. */
#ifndef KUMO_DAEMON_H
#define KUMO_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "logic/addr.h"
#include "logic/cmdline.h"

struct ev_loop;

/* The option lines every daemon's usage ends with, from -k to the version footer
 * (cli.md §2, reference-outputs.md §3, byte for byte).  clock is the -Ci default as a
 * string literal ("2", or "8" for the server); append to the daemon's own lines. */
#define DAEMON_USAGE_COMMON(clock) \
    "  -k  <number=2>    --keepalive-interval     keepalive interval in seconds\n" \
    "  -Ys <number=10>   --connect-timeout        connect timeout time in seconds\n" \
    "  -Yn <number=4>    --connect-retry-limit    connect retry limit\n" \
    "  -Ci <number=" clock ">    --clock-interval         clock interval in seconds\n" \
    "  -TW <number=2>    --write-threads          number of threads for asynchronous writing\n" \
    "  -TR <number=8>    --read-threads           number of threads for asynchronous reading\n" \
    "  -o  <path.log>    --log                    output logs to the file\n" \
    "  -g  <path.mpac>   --binary-log             enable binary log\n" \
    "  -v                --verbose\n" \
    "  -d  <path.pid>    --daemon\n" \
    "\n" \
    "  v0.4.13 revision \n" \
    "\n"

/* Format usage_fmt (one "%s": argv[0], or fallback when argv[0] is missing) and parse
 * argv against opts.  -h/--help prints the usage to stdout and exits 0 (DECISIONS.md §2);
 * a parse error goes through cmdline_fail (usage, "error: ...", exit 1).  Returns the
 * formatted usage for the caller's later cmdline_fail calls (release with free()). */
char *daemon_cmdline(int argc, char **argv, const cmdline_opt *opts,
                     const char *usage_fmt, const char *fallback);

/* daemon_listen_tcp, or cmdline_fail(usage, "bind failed"...) on error (cli.md §3-§5:
 * a listen error is reported like an option error). */
int daemon_listen_or_fail(const kaddr *addr, const char *usage);

/* The start-up sequence after the sockets (cli.md §7): open the text log (-o, -v; colour
 * only in the foreground without -o), daemonize when -d (stdio to /dev/null only when -o
 * gives the log a file), open the binary log (-g, after the fork), ignore SIGPIPE.
 * Returns 0, or -1 after printing "error: can't open log file" to stderr (exit 1 then);
 * a binary log that cannot be opened ends in daemon_fail. */
int daemon_startup(const char *log_path, bool verbose, const char *pidfile,
                   const char *binlog_path);

/* Periodic work of a daemon, called with arg. */
typedef void (*daemon_timer_fn)(void *arg);

/* Run loop until SIGINT/SIGTERM ("end" is logged), with SIGHUP logging "SIGHUP" and
 * reopening the binary and text logs for logrotate (cli.md §8), tick every 0.5 s
 * (algorithms.md §1) and keepalive every fixed 2 s whatever -k says (algorithms.md §1,
 * §3).  Every watcher it started is stopped again before it returns. */
void daemon_run(struct ev_loop *loop, daemon_timer_fn tick, daemon_timer_fn keepalive,
                void *arg);

/* Double fork, setsid, write the pid (no newline) to pidfile.  When redirect_stdio,
 * stdin/stdout/stderr go to /dev/null.  Returns in the grandchild.  The original process
 * stays until the grandchild calls daemon_ready (then exits 0) or daemon_fail / dies
 * (then prints the error on its stderr and exits 1). */
void daemon_start(const char *pidfile, bool redirect_stdio);

/* Start-up is complete: release the waiting first process of -d (no-op without -d).
 * daemon_run calls it. */
void daemon_ready(void);

/* A start-up failure: log "fmt", report "error: fmt" on the caller's stderr (through
 * the -d report channel when daemonized), remove the pid file written by -d, exit 1. */
void daemon_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Create a non-blocking TCP listening socket bound to addr (SO_REUSEADDR, backlog 1024).
 * Returns the fd, or -1 with err = "socket failed" / "bind failed" / "listen failed". */
int daemon_listen_tcp(const kaddr *addr, char *err, size_t errlen);

/* Make fd non-blocking and set TCP_NODELAY.  Returns 0 or -1. */
int daemon_socket_setup(int fd);

#endif
