/* router/proxy_protocol.h - the PROXY protocol header (HAProxy spec, v1 and v2).
 *
 * A load balancer in front of crouter (enable_proxy: true) prefixes each
 * connection with the client's real address. The parser reads that prefix
 * from the start of the connection's first bytes and reports how many bytes
 * it took; the HTTP (or TLS) stream starts right after them. As with
 * gorouter's listener, a connection without the prefix is accepted as is.
 * Pure functions; any thread.
 */
#ifndef CR_ROUTER_PROXY_PROTOCOL_H
#define CR_ROUTER_PROXY_PROTOCOL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* v1 lines are at most 107 bytes; v2 headers are 16 bytes plus a length
 * field, capped here (TLVs from cloud load balancers stay well below). */
#define CR_PROXY_V1_MAX     107
#define CR_PROXY_V2_MAX     4096

typedef struct cr_proxy_header {
    uint8_t version;              /* 1 or 2 */
    bool has_addr;                /* false: LOCAL (v2) or UNKNOWN (v1): keep the socket's peer */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } src, dst;                   /* valid when has_addr; ports in network order */
    socklen_t addr_len;           /* sizeof the family's sockaddr when has_addr */
} cr_proxy_header_t;

/* Parses a PROXY header at the start of buf[0, len). Returns the header's
 * length in bytes (> 0; *out filled), 0 when buf does not start with a
 * PROXY header (nothing consumed: the connection has none), CR_AGAIN when
 * buf is a proper prefix of one (read more), or CR_EBAD when it starts like
 * one but is malformed or over the limits above. Never reads beyond len. */
int cr_proxy_protocol_parse(const char *buf, size_t len, cr_proxy_header_t *out);

#endif
