/* router/errors.h - every error the router answers itself, as one table.
 *
 * Each kind is one entry with the HTTP status, the X-Cf-Routererror value
 * and the text, so the response, the counter and the log line always agree.
 * Bodies have gorouter's shape: "<code> <Status Text>: <message>\n".
 */
#ifndef CR_ROUTER_ERRORS_H
#define CR_ROUTER_ERRORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CR_PERR_NONE = 0,
    CR_PERR_BAD_REQUEST,          /* 400, malformed request (no X-Cf-Routererror) */
    CR_PERR_EMPTY_HOST,           /* 400 empty_host */
    CR_PERR_INVALID_APP_INSTANCE, /* 400 invalid_cf_app_instance_header */
    CR_PERR_UNKNOWN_INSTANCE,     /* 400 unknown_route: X-Cf-App-Instance names no instance */
    CR_PERR_UNKNOWN_ROUTE,        /* 404 unknown_route */
    CR_PERR_HEADERS_TOO_LARGE,    /* 431 max-request-size-exceeded (empty body) */
    CR_PERR_NO_ENDPOINTS,         /* 503 no_endpoints */
    CR_PERR_CONN_LIMIT,           /* 503 Connection Limit Reached */
    CR_PERR_ENDPOINT_FAILURE,     /* 502 endpoint_failure (<reason>) */
    CR_PERR_CLIENT_CLOSED,        /* 499, logged only: the client went away */
    CR_PERR_SESSION_GONE,         /* 503 session_endpoint_unavailable: persistence with fallback: false */
    CR_PERR_TLS_HANDSHAKE,        /* 525 endpoint_failure (<reason>): backend not TLS, or its handshake failed */
    CR_PERR_TLS_UNTRUSTED,        /* 526 endpoint_failure (<reason>): backend certificate untrusted or expired */
    CR_PERR_TLS_HOSTNAME,         /* 503 endpoint_failure (<reason>): certificate not valid for server_cert_domain_san */
    CR_PERR_TLS_CERT_REQUIRED,    /* 496 endpoint_failure (<reason>): the backend rejected crouter's certificate */
    CR_PERR__COUNT
} cr_proxy_error_t;

typedef struct cr_proxy_error_info {
    uint16_t status;
    const char *status_text;      /* "Not Found" */
    const char *router_error;     /* X-Cf-Routererror value, or NULL */
    const char *message_fmt;      /* body message; "%s" is replaced by the detail (host, guid...) */
    const char *cache_control;    /* or NULL */
    const char *counter_name;     /* metric/varz name, e.g. "unknown_route" */
} cr_proxy_error_info_t;

const cr_proxy_error_info_t *cr_proxy_error_info(cr_proxy_error_t err);

/* Writes a complete response (status line, headers, body) into out.
 * detail fills the message's %s (e.g. the Host as sent); reason is appended
 * to endpoint_failure as "endpoint_failure (<reason>)". The response has
 * Connection: close unless keep_alive. Returns bytes written, or
 * CR_ETOOBIG when cap is too small. Values are sanitised: no CR/LF from
 * detail or reason reaches a header. A message with several "%s"
 * (UNKNOWN_INSTANCE: index, guid, host) takes them from detail in order,
 * separated by NUL bytes ("3\0guid\0host", detail_len covering all). */
int cr_proxy_error_write(cr_proxy_error_t err, const char *detail, size_t detail_len,
                         const char *reason, bool keep_alive, char *out, size_t cap);

/* Writes the X-Cf-Routererror value of err ("endpoint_failure (<reason>)"
 * for ENDPOINT_FAILURE, CLIENT_CLOSED and the TLS kinds), sanitised and NUL-terminated,
 * into out, e.g. for the access log. Returns its length (0 when the kind
 * has none), truncating to cap - 1. */
size_t cr_proxy_error_router_error(cr_proxy_error_t err, const char *reason, char *out,
                                   size_t cap);

#endif
