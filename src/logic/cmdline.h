/* cmdline.h - the daemons' option parser, compatible with the original's (cli.md §1):
 * exact-token options with short and long names, values in the next token, optional
 * booleans, typed numbers, connect/listen addresses, required options. */
#ifndef KUMO_CMDLINE_H
#define KUMO_CMDLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/addr.h"

enum cmdline_type {
    CMDLINE_BOOL,        /* optional value true/yes/on, false/no/off (bool *) */
    CMDLINE_STRING,      /* const char ** (points into argv) */
    CMDLINE_DOUBLE,      /* double * ("double is expected: x") */
    CMDLINE_USHORT,      /* unsigned short * ("unsigned short is expected: x") */
    CMDLINE_UINT,        /* unsigned int * */
    CMDLINE_ULONG,       /* unsigned long * */
    CMDLINE_CONNECT,     /* kaddr *, connect-style, default port in .port */
    CMDLINE_LISTEN,      /* kaddr *, listen-style, default port in .port */
};

typedef struct cmdline_opt {
    const char *shortname;   /* "-l" */
    const char *longname;    /* "--listen" */
    enum cmdline_type type;
    void *value;             /* where the parsed value goes (keeps its default if unset) */
    bool required;           /* reported in "required but not set: ..." if missing */
    uint16_t port;           /* default port for address options */
    bool *was_set;           /* optional: set to true when the option appears */
} cmdline_opt;

/* Parse argv[1..] against opts (terminated by an entry with shortname NULL).
 * "-h"/"--help" return CMDLINE_HELP.  On error returns CMDLINE_ERROR and writes the
 * message of cli.md §1.2 (without the "error: " prefix) to err. */
enum { CMDLINE_OK = 0, CMDLINE_ERROR = -1, CMDLINE_HELP = 1 };
int cmdline_parse(int argc, char **argv, const cmdline_opt *opts, char *err, size_t errlen);

/* The common failure path: print usage to stdout, "error: <msg>" to stderr, exit(1). */
void cmdline_fail(const char *usage, const char *msg) __attribute__((noreturn));

#endif
