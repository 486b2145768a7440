/* router/rewrite.h - builds the heads crouter sends: to the backend and to the client.
 *
 * Header rewriting happens by copying slices of the parsed head into an
 * output buffer, dropping and adding lines; no strings are rebuilt.
 * Request to backend (gorouter's rules): X-Forwarded-For appended with the
 * client address; X-Forwarded-Proto set when absent; X-Request-Start (epoch
 * ms) when absent; X-Vcap-Request-Id replaced; X-CF-ApplicationID,
 * X-CF-InstanceIndex, X-CF-InstanceID always set (client values dropped);
 * X-CF-App-Instance removed; hop-by-hop headers (Connection and the tokens
 * it lists, Keep-Alive, Proxy-*, TE, Trailer, Upgrade unless upgrading)
 * removed; Transfer-Encoding/Content-Length kept as the framing is forwarded
 * as is. Response to client: hop-by-hop removed, X-Vcap-Request-Id added if
 * the backend set none, Connection set from crouter's own keep-alive choice,
 * extra lines (Set-Cookie from stickiness) appended.
 * Pure functions; any thread.
 */
#ifndef CR_ROUTER_REWRITE_H
#define CR_ROUTER_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/endpoint_types.h"
#include "router/http1.h"

typedef struct cr_request_rewrite {
    const cr_http_request_t *req;
    const char *client_ip;        /* NUL-terminated, for X-Forwarded-For */
    const cr_endpoint_t *endpoint;
    const char *request_id;       /* 36-character UUID */
    int64_t received_at_ms;       /* epoch ms, for X-Request-Start */
    bool over_tls;                /* X-Forwarded-Proto when absent */
    bool upstream_keep_alive;     /* false: send "Connection: close" */
    /* forwarded_client_cert (issue 6): leave out the client's
     * X-Forwarded-Client-Cert lines; then set one to xfcc_value when not
     * NULL (base64 of the client certificate's DER, from the TLS front). */
    bool drop_xfcc;
    const char *xfcc_value;
    size_t xfcc_value_len;
    /* Session persistence: one cookie of the Cookie headers edited on the
     * way (every pair of that name). NULL = Cookie headers go as sent. */
    const char *cookie_name;
    size_t cookie_name_len;
    bool cookie_strip;            /* remove the pair (insert with indirect) */
    bool cookie_unprefix;         /* cut a "<11 base64url>~" prefix off its value (prefix mode) */
} cr_request_rewrite_t;

/* Writes the backend-bound head into out. Returns its length, or CR_ETOOBIG
 * when cap is too small. */
int cr_rewrite_request_head(const cr_request_rewrite_t *rw, char *out, size_t cap);

typedef struct cr_response_rewrite {
    const cr_http_response_t *resp;
    const char *request_id;       /* added as X-Vcap-Request-Id when the backend set none */
    bool client_keep_alive;       /* crouter keeps the client connection after this response */
    bool upgrade;                 /* a 101: keep Connection/Upgrade as sent */
    uint8_t client_version_minor; /* HTTP/1.0 clients get HTTP/1.0-correct Connection headers */
    const char *extra;            /* complete "Name: value\r\n" lines to append, or NULL */
    size_t extra_len;
    const uint64_t *drop_mask;    /* bit i (word i / 64) set: response header i is left out
                                     (its replacement is in extra); borrowed, at least
                                     resp->headers_len bits; NULL = none */
} cr_response_rewrite_t;

/* Writes the client-bound head into out. Returns its length or CR_ETOOBIG. */
int cr_rewrite_response_head(const cr_response_rewrite_t *rw, char *out, size_t cap);

#endif
