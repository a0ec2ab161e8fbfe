/* addr.h - cluster node addresses and their wire dump (wire.md §7.1, cli.md §1.1). */
#ifndef KUMO_ADDR_H
#define KUMO_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define KADDR_IPV4_LEN 6     /* port (2, BE) + IPv4 (4) */
#define KADDR_IPV6_LEN 22    /* port (2, BE) + IPv6 (16) + scope id (4, sender's byte order) */
#define KADDR_STRLEN 64      /* enough for "[ipv6]:port" */

/* An address exactly as it travels: the binary dump.  len 0 = unset ("0.0.0.0:0").
 * Plain data: copy by assignment. */
typedef struct kaddr {
    uint8_t len;                 /* 0, 6 or 22 */
    uint8_t raw[KADDR_IPV6_LEN];
} kaddr;

/* Build an IPv4 address; ip and port in host byte order (127.0.0.1 = 0x7f000001). */
void kaddr_set_ipv4(kaddr *a, uint32_t ip, uint16_t port);

/* Decode a dump received on the wire.  Accepts the 6-byte IPv4 and 22-byte IPv6 forms.
 * Returns 0, or -1 for any other length. */
int kaddr_from_dump(kaddr *a, const void *dump, size_t len);

/* True if the address is unset or its port is 0 ("not connectable"). */
bool kaddr_is_null(const kaddr *a);

/* Port in host byte order (0 when unset). */
uint16_t kaddr_port(const kaddr *a);

/* Total order used for elections and sorting: shorter dumps first, then memcmp. */
int kaddr_cmp(const kaddr *a, const kaddr *b);
bool kaddr_eq(const kaddr *a, const kaddr *b);

/* Fill a sockaddr for connect()/bind().  Returns the length, or 0 if unset. */
socklen_t kaddr_to_sockaddr(const kaddr *a, struct sockaddr_storage *ss);

/* Build from a sockaddr (AF_INET or AF_INET6).  Returns 0 or -1. */
int kaddr_from_sockaddr(kaddr *a, const struct sockaddr *sa);

/* "127.0.0.1:19801" ("0.0.0.0:0" when unset; "[::1]:19801" for IPv6).  Returns buf. */
char *kaddr_format(const kaddr *a, char buf[KADDR_STRLEN]);

/* Parse a connect-style address (cli.md §1.1): "host" or "host:port", split at the last
 * ':'; names resolved to IPv4 with getaddrinfo.  On error returns -1 and writes the
 * cli.md message ("invalid port number: x", "can't resolve host name (...): h") to err. */
int kaddr_parse_connect(kaddr *a, const char *s, uint16_t default_port, char *err, size_t errlen);

/* Parse a listen-style address: "port", ":port", "host" or "host:port" (cli.md §1.1).
 * An INADDR_ANY result is stored as 0.0.0.0.  Same error convention. */
int kaddr_parse_listen(kaddr *a, const char *s, uint16_t default_port, char *err, size_t errlen);

#endif
