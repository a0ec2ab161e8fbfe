/* toolrpc.h - blocking msgpack-RPC client and shared helpers of the admin tools (tools.md §1). */
#ifndef KUMO_TOOLRPC_H
#define KUMO_TOOLRPC_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/addr.h"
#include "logic/hashspace.h"

#define TOOLRPC_MANAGER_PORT 19700
#define TOOLRPC_SERVER_PORT 19800

#define TOOLRPC_CONNECT_TIMEOUT_MS 10000   /* the Ruby tools had none; we do not hang forever */
#define TOOLRPC_RECV_TIMEOUT_MS 30000      /* SetConfig walks every fd below RLIMIT_NOFILE */

/* One plain ("subsystem") TCP connection to a manager or server.  Opaque. */
typedef struct toolrpc toolrpc;

/* Connect to "host" or "host:port" (split at the FIRST ':', tools.md §1; the port string is
 * handed to getaddrinfo as is, so a service name works as in Ruby).  An empty host means
 * 0.0.0.0.  Every resolved address is tried in order.  Returns a connection to release with
 * toolrpc_close(), or NULL with a one-line message in err (e.g.
 * `Connection refused - connect(2) for "127.0.0.1" port 39899`). */
toolrpc *toolrpc_connect(const char *addr, unsigned default_port, char *err, size_t errlen);

/* Connect to an address received on the wire (e.g. a node of GetNodesInfo). */
toolrpc *toolrpc_connect_kaddr(const kaddr *a, char *err, size_t errlen);

/* Process-wide connect timeout for the following toolrpc_connect*() calls (default
 * TOOLRPC_CONNECT_TIMEOUT_MS); kumotop uses the original's 0.5 s so that a dead node
 * does not freeze the screen. */
void toolrpc_set_connect_timeout(int ms);

/* Send/receive timeout of each toolrpc_call() on c (default TOOLRPC_RECV_TIMEOUT_MS). */
void toolrpc_set_timeout(toolrpc *c, int ms);

/* Close the socket and free everything, including objects lent by toolrpc_call(). */
void toolrpc_close(toolrpc *c);

/* Start a request [0, msgid, method, params]: returns a packer into which the caller packs
 * exactly nparams objects (byte strings only through kwire_pack_raw), then calls
 * toolrpc_call().  The packer is borrowed until then. */
msgpack_packer *toolrpc_request(toolrpc *c, uint32_t method, uint32_t nparams);

/* Send the request started by toolrpc_request() and wait for the response carrying its
 * msgid; incoming requests (e.g. the manager's HashSpacePush) and responses with other
 * msgids are skipped.  Returns 0 when the response arrived: *error (nil on success) and
 * *result are borrowed until the next toolrpc_request()/toolrpc_close().  Returns -1 on a
 * transport failure (peer closed, timeout, bad msgpack); see toolrpc_errmsg(). */
int toolrpc_call(toolrpc *c, const msgpack_object **error, const msgpack_object **result);

/* The message of the last transport failure ("" if none).  Borrowed from c. */
const char *toolrpc_errmsg(const toolrpc *c);

/* toolrpc_call() with the outcome rendered as both tools show it: returns 0 with *result
 * borrowed as toolrpc_call() lends it; 1 when the peer answered with an error (err =
 * "error <value>", Ruby's to_s); -1 on a transport failure (err = toolrpc_errmsg()). */
int toolrpc_call_checked(toolrpc *c, const msgpack_object **result, char *err, size_t errlen);

/* GetStatus [code] (server method 97, wire.md §9) through toolrpc_call_checked(). */
int toolrpc_get_status(toolrpc *c, uint32_t code, const msgpack_object **result, char *err,
                       size_t errlen);

/* The name of a GetStatus REPLSTAT bit mask, first match wins (wire.md §9, tools.md §3):
 * "inactive", "Deleting", "Copying", "WAIT" or "ready". */
const char *toolrpc_replstat_name(uint64_t st);

/* True for a lone -h/--help argument (both tools print their usage and exit 0). */
bool toolrpc_wants_help(int argc, char **argv);

/* Connect to the manager at addr (default port TOOLRPC_MANAGER_PORT), fetch its whs with
 * toolrpc_get_nodes_info() into whs (initialised by the caller, destroyed by the caller
 * whatever the outcome), drop the newcomers and close.  Returns 0; 1 on an RPC error
 * (err = "error <value>"); -1 on a connect/transport failure or a malformed result. */
int toolrpc_fetch_whs(const char *addr, hashspace *whs, char *err, size_t errlen);

/* GetNodesInfo (manager method 99): the manager's whs (nodes in seed order, ring built)
 * into whs (initialised by the caller), and the newcomers into a malloc'ed array
 * (*newcomers, release with free(); may be NULL when *nnew is 0).  Returns 0; 1 if the
 * manager answered with an error (rendered into err as "error <value>"); -1 on a transport
 * failure or malformed result (message in err). */
int toolrpc_get_nodes_info(toolrpc *c, hashspace *whs, kaddr **newcomers, size_t *nnew,
                           char *err, size_t errlen);

/* Ruby 1.8 Time#to_s of unix seconds in the local time zone, "%a %b %d %H:%M:%S %z %Y"
 * (tools.md §2.1), e.g. "Wed Dec 03 22:15:55 +0900 2008".  Returns buf. */
char *toolrpc_format_time(uint32_t sec, char *buf, size_t len);

/* Ruby's rendering of a decoded msgpack value: to_s (puts, "error #{e}") when inspect is
 * false, inspect (p) when true: nil -> "" / "nil", strings bare / double-quoted with
 * escapes, arrays concatenated / "[a, b]".  Writes a NUL-terminated, possibly truncated
 * string to buf and returns buf. */
char *toolrpc_format_value(const msgpack_object *o, bool inspect, char *buf, size_t len);

/* Deep equality as Ruby's == on the decoded values (any string form equals any other). */
bool toolrpc_value_equal(const msgpack_object *a, const msgpack_object *b);

#endif
