/* router/sticky.h - gorouter's session affinity: JSESSIONID + __VCAP_ID__.
 *
 * Request side: with one of the configured session cookies AND a
 * __VCAP_ID__ cookie, the request asks for the instance named by
 * __VCAP_ID__; with sticky_sessions_for_auth_negotiate and an
 * "Authorization: Negotiate" header, __VCAP_ID__ alone must be honoured.
 * Response side: decides whether to add a Set-Cookie: __VCAP_ID__ and with
 * which attributes (mirroring the session cookie), never when the backend
 * set one itself. Values are copied into headers only after checking them,
 * so an id cannot inject attributes or header lines. Pure functions.
 */
#ifndef CR_ROUTER_STICKY_H
#define CR_ROUTER_STICKY_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "registry/endpoint_types.h"
#include "router/http1.h"

#define CR_VCAP_COOKIE "__VCAP_ID__"

typedef struct cr_sticky_config {
    char *const *cookie_names;    /* borrowed from the config */
    size_t cookie_names_len;
    bool auth_negotiate;
    bool secure_cookies;
} cr_sticky_config_t;

void cr_sticky_config_from(const cr_config_t *cfg, cr_sticky_config_t *out);

typedef struct cr_sticky_request {
    const char *instance_id;      /* slice of the request's __VCAP_ID__ value; NULL = not sticky */
    size_t instance_id_len;
    bool must_be_sticky;          /* Negotiate: no other instance may serve it */
} cr_sticky_request_t;

void cr_sticky_from_request(const cr_sticky_config_t *cfg, const cr_http_request_t *req,
                            cr_sticky_request_t *out);

typedef struct cr_sticky_response_ctx {
    const cr_sticky_config_t *cfg;
    const cr_sticky_request_t *request;   /* what the request asked for */
    const cr_http_response_t *resp;
    const cr_endpoint_t *endpoint;        /* the instance that served it */
    const char *context_path;             /* cookie Path; "" = "/" */
    bool over_tls;                        /* the client request came over TLS: force Secure on failover cookies */
} cr_sticky_response_ctx_t;

/* Writes zero or one "Set-Cookie: __VCAP_ID__=...\r\n" line into out.
 * Returns its length (0 = none to add) or CR_ETOOBIG. */
int cr_sticky_response_cookie(const cr_sticky_response_ctx_t *ctx, char *out, size_t cap);

#endif
