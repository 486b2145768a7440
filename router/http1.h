/* router/http1.h - strict, zero-copy HTTP/1.1 message-head parser and chunked scanner (RFC 9112).
 *
 * The parsers return slices into the caller's buffer; nothing is copied or
 * allocated. A head is parsed once its terminating empty line is present
 * (the caller asks again with more bytes on CR_AGAIN), and is bounded by
 * cr_http_limits_t. What request smuggling needs is rejected with CR_EBAD:
 * both Content-Length and Transfer-Encoding, differing duplicate
 * Content-Length, a signed or non-decimal Content-Length, Transfer-Encoding
 * other than a final "chunked", obs-fold, bare CR or bare LF, NUL and other
 * control bytes, whitespace before the colon, non-token header names and
 * methods, and invalid chunk sizes. Pure functions; any thread.
 */
#ifndef CR_ROUTER_HTTP1_H
#define CR_ROUTER_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/defs.h"

typedef struct cr_http_header {
    const char *name;
    const char *value;            /* leading and trailing whitespace trimmed */
    uint32_t name_len;
    uint32_t value_len;
} cr_http_header_t;

typedef enum {
    CR_HTTP_BODY_NONE = 0,        /* no body */
    CR_HTTP_BODY_LENGTH,          /* content_length bytes */
    CR_HTTP_BODY_CHUNKED,         /* chunked; find its end with cr_chunked_scan() */
    CR_HTTP_BODY_UNTIL_CLOSE,     /* responses only: read until the peer closes */
} cr_http_body_kind_t;

typedef struct cr_http_limits {
    uint32_t max_head_bytes;      /* request line/status line + headers + final CRLF */
    uint32_t max_headers;         /* also the capacity of the caller's header array */
} cr_http_limits_t;

typedef struct cr_http_request {
    const char *method;
    const char *target;           /* request-target as received */
    const char *path;             /* origin-form target or the path of an absolute-form one,
                                     query included ("/" when absolute-form has none) */
    const char *authority;        /* absolute-form authority; NULL otherwise */
    const char *host;             /* authority when absolute-form, else the Host header; NULL if none */
    cr_http_header_t *headers;    /* the caller's array; headers_len used */
    int64_t content_length;       /* with CR_HTTP_BODY_LENGTH */
    uint32_t method_len, target_len, path_len, authority_len, host_len;
    uint32_t headers_len;
    uint32_t head_len;            /* bytes of the head including the final CRLF */
    cr_http_body_kind_t body_kind;
    uint8_t version_minor;        /* HTTP/1.0 or HTTP/1.1 */
    bool keep_alive;              /* from the version and Connection tokens */
    bool upgrade;                 /* Connection lists "upgrade" and an Upgrade header is present */
    bool expect_continue;         /* Expect: 100-continue */
    bool has_host_header;         /* a Host header was present (even if empty) */
} cr_http_request_t;

typedef struct cr_http_response {
    const char *reason;
    cr_http_header_t *headers;
    int64_t content_length;
    uint32_t reason_len;
    uint32_t headers_len;
    uint32_t head_len;
    uint16_t status;
    cr_http_body_kind_t body_kind; /* NONE for 1xx, 204, 304 and HEAD requests */
    uint8_t version_minor;
    bool keep_alive;              /* the backend lets the connection be reused */
} cr_http_response_t;

/* Parses a request head at buf[0..len). headers is the caller's array of
 * lim->max_headers entries. Returns head_len (> 0) when complete, CR_AGAIN
 * when more bytes are needed, CR_ETOOBIG when the head exceeds
 * max_head_bytes or max_headers (answer 431), CR_EBAD when malformed
 * (answer 400 and close). */
int cr_http1_parse_request(const char *buf, size_t len, const cr_http_limits_t *lim,
                           cr_http_header_t *headers, cr_http_request_t *out);

/* Parses a response head. request_was_head: the request was HEAD (no body
 * whatever the headers say). Same returns as cr_http1_parse_request; any
 * limit error is CR_EBAD here (answer 502). */
int cr_http1_parse_response(const char *buf, size_t len, const cr_http_limits_t *lim,
                            cr_http_header_t *headers, bool request_was_head,
                            cr_http_response_t *out);

/* The first header named name (case-insensitive), or NULL. */
const cr_http_header_t *cr_http_find_header(const cr_http_header_t *headers, uint32_t n,
                                            const char *name, size_t name_len);

/* Case-insensitive ASCII comparison of a slice with a NUL-terminated lower-case literal. */
bool cr_http_token_eq(const char *s, size_t len, const char *lower_literal);

/* Incremental scanner of a chunked body that is forwarded as is: it finds
 * where the body (last chunk and trailers included) ends and validates the
 * framing. Zero-initialise or call cr_chunked_init(). */
typedef struct cr_chunked {
    uint64_t remaining;           /* data bytes left in the current chunk */
    uint64_t data_bytes;          /* total data bytes seen */
    uint32_t line_len;            /* bytes of the current size/trailer line */
    uint8_t state;                /* private */
    uint8_t digits;               /* private */
} cr_chunked_t;

void cr_chunked_init(cr_chunked_t *c);

/* Feeds buf[0..len). Returns the number of bytes that belong to the body
 * when it ended inside buf (the rest is the next message), CR_AGAIN when all
 * len bytes belong to the body and more is to come, CR_EBAD on bad framing
 * (chunk size overflow, non-hex digits, missing CRLF, oversized line). */
int64_t cr_chunked_scan(cr_chunked_t *c, const char *buf, size_t len);

#endif
