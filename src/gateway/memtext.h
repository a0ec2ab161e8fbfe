/* memtext.h - the memcached text protocol request parser (a ragel state machine,
 * memtext.rl).  It parses one request at a time out of a caller-owned input buffer and
 * never blocks: with too few bytes it asks for more.  Covers the memcached 1.6 command
 * set of DECISIONS.md §3. */
#ifndef KUMO_MEMTEXT_H
#define KUMO_MEMTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/proto.h"     /* MC_KEY_MAX */

#define MEMTEXT_MAX_KEYS 256       /* keys in one parsed get/gets/gat line; more: STREAM */
#define MEMTEXT_LINE_MAX 8192      /* a command line longer than this without "\n" is an error */

enum memtext_cmd {
    MEMTEXT_GET, MEMTEXT_GETS, MEMTEXT_GAT, MEMTEXT_GATS,
    MEMTEXT_SET, MEMTEXT_ADD, MEMTEXT_REPLACE, MEMTEXT_APPEND, MEMTEXT_PREPEND, MEMTEXT_CAS,
    MEMTEXT_DELETE, MEMTEXT_INCR, MEMTEXT_DECR, MEMTEXT_TOUCH,
    MEMTEXT_FLUSH_ALL, MEMTEXT_STATS, MEMTEXT_VERSION, MEMTEXT_VERBOSITY, MEMTEXT_QUIT,
};

typedef struct memtext_key {
    const char *ptr;               /* borrowed from the input buffer */
    size_t len;
} memtext_key;

/* One parsed request.  All pointers borrow the buffer passed to memtext_parse and stay
 * valid until the caller consumes/moves those bytes. */
typedef struct memtext_request {
    enum memtext_cmd cmd;
    memtext_key keys[MEMTEXT_MAX_KEYS];  /* get/gets/gat/gats: all keys; others: keys[0] */
    unsigned nkeys;
    uint32_t flags;                /* storage commands */
    int64_t exptime;               /* storage commands, touch, gat/gats; flush_all delay */
    uint64_t cas;                  /* cas */
    uint64_t delta;                /* incr/decr */
    uint32_t verbosity;            /* verbosity level */
    const char *data;              /* storage commands: the data block (without "\r\n") */
    size_t datalen;
    const char *args;              /* stats: the argument text after "stats " (may be empty) */
    size_t argslen;
    bool noreply;
    bool has_delay;                /* flush_all with an explicit delay */
} memtext_request;

enum memtext_status {
    MEMTEXT_NEED_MORE = 0,         /* incomplete: call again with more bytes */
    MEMTEXT_OK = 1,                /* *req filled; *consumed bytes belong to it */
    MEMTEXT_ERROR = 2,             /* *consumed bytes are a bad request; answer *errmsg */
    MEMTEXT_CLOSE = 3,             /* an unknown command whose last word starts "HTTP/":
                                    * memcached closes the connection without a reply */
    MEMTEXT_STREAM = 4,            /* get/gets/gat/gats with more than MEMTEXT_MAX_KEYS keys
                                    * or a line not ended within MEMTEXT_LINE_MAX bytes: the
                                    * caller reads the keys itself from *consumed on (req
                                    * has cmd and, for gat/gats, exptime), see textconn.c */
};

/* Parse one request from buf[0..len).
 * OK: req describes the request, *consumed is its total length (line + data block).
 * NEED_MORE: *consumed is 0 and *need (if non-NULL) the total bytes required when known
 *   (e.g. line parsed, data block pending), else 0.
 * ERROR: *errmsg is the full reply line memcached sends, without "\r\n": "ERROR",
 *   "CLIENT_ERROR bad command line format", "CLIENT_ERROR bad data chunk", ...; *consumed
 *   is how much input to drop (the bad line; for a bad data chunk also the data block,
 *   as memcached does; for a storage line whose <bytes> is valid but whose key, flags,
 *   exptime or cas is not, also the data block, so a value never runs as a command --
 *   that error waits for the block with NEED_MORE) so the connection keeps working.
 *   req->cmd and req->noreply are set as far as the line was understood (memcached sends
 *   no error reply to a noreply request).  A line longer than MEMTEXT_LINE_MAX without
 *   "\n" is an ERROR ("CLIENT_ERROR line too long") with *consumed = len (caller should
 *   then keep discarding until the next "\n"; see memtext_skip_line -- or, for a storage
 *   command (req->cmd), close: its data block could not be told from commands);
 *   get/gets/gat/gats lines stream instead (MEMTEXT_STREAM).  A storage line that is
 *   whole in buf is taken at any length.
 * max_value: largest accepted data block; a larger one gives ERROR with
 *   "SERVER_ERROR object too large for cache", *consumed = the command line, and *need =
 *   the bytes of the data block (+2) the caller must still discard as they arrive. For all
 *   other ERRORs *need is 0. */
enum memtext_status memtext_parse(const char *buf, size_t len, size_t max_value,
                                  memtext_request *req, size_t *consumed, size_t *need,
                                  const char **errmsg);

/* Bytes up to and including the next "\n" in buf[0..len), or 0 if there is none. */
size_t memtext_skip_line(const char *buf, size_t len);

#endif
