/* addr.c - cluster node addresses: wire dumps, sockaddr conversion, command-line parsing. */
#include "logic/addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logic/xmalloc.h"

void kaddr_set_ipv4(kaddr *a, uint32_t ip, uint16_t port)
{
    /* wire.md §7.1: port big-endian, then the IPv4 address in network order */
    memset(a, 0, sizeof(*a));
    a->len = KADDR_IPV4_LEN;
    a->raw[0] = (uint8_t)(port >> 8);
    a->raw[1] = (uint8_t)port;
    a->raw[2] = (uint8_t)(ip >> 24);
    a->raw[3] = (uint8_t)(ip >> 16);
    a->raw[4] = (uint8_t)(ip >> 8);
    a->raw[5] = (uint8_t)ip;
}

int kaddr_from_dump(kaddr *a, const void *dump, size_t len)
{
    if (len != KADDR_IPV4_LEN && len != KADDR_IPV6_LEN)
        return -1;
    memset(a, 0, sizeof(*a));
    a->len = (uint8_t)len;
    memcpy(a->raw, dump, len);
    return 0;
}

bool kaddr_is_null(const kaddr *a)
{
    return a->len == 0 || kaddr_port(a) == 0;
}

uint16_t kaddr_port(const kaddr *a)
{
    if (a->len == 0)
        return 0;
    return (uint16_t)((a->raw[0] << 8) | a->raw[1]);
}

int kaddr_cmp(const kaddr *a, const kaddr *b)
{
    /* wire.md §7.1: shorter dumps first, then memcmp (port bytes before IP bytes) */
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return memcmp(a->raw, b->raw, a->len);
}

bool kaddr_eq(const kaddr *a, const kaddr *b)
{
    return a->len == b->len && memcmp(a->raw, b->raw, a->len) == 0;
}

socklen_t kaddr_to_sockaddr(const kaddr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->len == KADDR_IPV4_LEN) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_port, a->raw, 2);      /* both already network order */
        memcpy(&sin->sin_addr, a->raw + 2, 4);
        return sizeof(*sin);
    }
    if (a->len == KADDR_IPV6_LEN) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        uint32_t scope;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_port, a->raw, 2);
        memcpy(&sin6->sin6_addr, a->raw + 2, 16);
        memcpy(&scope, a->raw + 18, 4);         /* sender's byte order (wire.md §7.1) */
        sin6->sin6_scope_id = scope;
        return sizeof(*sin6);
    }
    return 0;
}

int kaddr_from_sockaddr(kaddr *a, const struct sockaddr *sa)
{
    memset(a, 0, sizeof(*a));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        a->len = KADDR_IPV4_LEN;
        memcpy(a->raw, &sin->sin_port, 2);
        memcpy(a->raw + 2, &sin->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        uint32_t scope = sin6->sin6_scope_id;
        a->len = KADDR_IPV6_LEN;
        memcpy(a->raw, &sin6->sin6_port, 2);
        memcpy(a->raw + 2, &sin6->sin6_addr, 16);
        memcpy(a->raw + 18, &scope, 4);
        return 0;
    }
    return -1;
}

char *kaddr_format(const kaddr *a, char buf[KADDR_STRLEN])
{
    char ip[INET6_ADDRSTRLEN];
    if (a->len == KADDR_IPV4_LEN) {
        inet_ntop(AF_INET, a->raw + 2, ip, sizeof(ip));
        snprintf(buf, KADDR_STRLEN, "%s:%u", ip, kaddr_port(a));
    } else if (a->len == KADDR_IPV6_LEN) {
        inet_ntop(AF_INET6, a->raw + 2, ip, sizeof(ip));
        snprintf(buf, KADDR_STRLEN, "[%s]:%u", ip, kaddr_port(a));
    } else {
        snprintf(buf, KADDR_STRLEN, "0.0.0.0:0");
    }
    return buf;
}

/* A decimal 16-bit port: digits only, value <= 65535. */
static bool parse_port(const char *s, uint16_t *port)
{
    unsigned long v = 0;
    if (*s == '\0')
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return false;
    }
    *port = (uint16_t)v;
    return true;
}

/* cli.md §1.1: getaddrinfo, first IPv4 result; the two resolution error messages. */
static int resolve_ipv4(const char *host, uint32_t *ip, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "can't resolve host name (%s): %s", gai_strerror(rc), host);
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            *ip = ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr);
            freeaddrinfo(res);
            return 0;
        }
    }
    freeaddrinfo(res);
    snprintf(err, errlen, "can't resolve host name (no suitable family): %s", host);
    return -1;
}

/* Resolve host[0..hostlen) and build the address. */
static int build(kaddr *a, const char *host, size_t hostlen, uint16_t port, char *err, size_t errlen)
{
    char *h = xmalloc(hostlen + 1);
    uint32_t ip = 0;
    int rc;
    memcpy(h, host, hostlen);
    h[hostlen] = '\0';
    rc = resolve_ipv4(h, &ip, err, errlen);
    free(h);
    if (rc == 0)
        kaddr_set_ipv4(a, ip, port);
    return rc;
}

int kaddr_parse_connect(kaddr *a, const char *s, uint16_t default_port, char *err, size_t errlen)
{
    /* "host" or "host:port", split at the last ':' */
    const char *colon = strrchr(s, ':');
    uint16_t port = default_port;
    if (colon != NULL) {
        if (!parse_port(colon + 1, &port)) {
            snprintf(err, errlen, "invalid port number: %s", colon + 1);
            return -1;
        }
        return build(a, s, (size_t)(colon - s), port, err, errlen);
    }
    return build(a, s, strlen(s), port, err, errlen);
}

int kaddr_parse_listen(kaddr *a, const char *s, uint16_t default_port, char *err, size_t errlen)
{
    const char *colon = strrchr(s, ':');
    uint16_t port = default_port;
    if (colon != NULL) {
        if (strchr(s, ':') != colon) {
            /* an IPv6 literal: unusable in the IPv4-only build (cli.md §1.1) */
            snprintf(err, errlen, "invalid address: %s", s);
            return -1;
        }
        if (!parse_port(colon + 1, &port)) {
            snprintf(err, errlen, "invalid port number: %s", colon + 1);
            return -1;
        }
        if (colon == s) {
            kaddr_set_ipv4(a, INADDR_ANY, port);
            return 0;
        }
        return build(a, s, (size_t)(colon - s), port, err, errlen);
    }
    if (parse_port(s, &port)) {
        kaddr_set_ipv4(a, INADDR_ANY, port);
        return 0;
    }
    return build(a, s, strlen(s), default_port, err, errlen);
}
