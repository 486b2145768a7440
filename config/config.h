/* config/config.h - crouter's configuration: gorouter's YAML keys and defaults.
 *
 * cr_config_load_file() reads a gorouter-style YAML file, fills every default,
 * validates, and returns an immutable cr_config_t that the rest of the router
 * borrows for its whole life. Unknown keys are collected as warnings (gorouter
 * configs carry many keys crouter does not implement); a wrong type or value
 * is an error whose message names the key and the line.
 *
 * Durations are Go-style strings ("120s", "5m", "500ms", "1h30m"); a bare 0 is
 * accepted (as yaml.v3 does), other bare numbers are an error. All durations
 * are stored in nanoseconds.
 */
#ifndef CR_CONFIG_CONFIG_H
#define CR_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/persistence.h"

typedef enum {
    CR_LB_ROUND_ROBIN = 0,
    CR_LB_LEAST_CONNECTION,
} cr_lb_algo_t;

typedef struct {
    char *hostname; /* owned */
    uint16_t port;
} cr_nats_host_t;

/* client_cert_validation: how the TLS front asks for client certificates. */
typedef enum {
    CR_CLIENT_CERT_NONE = 0,      /* "none": never asked for */
    CR_CLIENT_CERT_REQUEST,       /* "request": asked for, verified when given */
    CR_CLIENT_CERT_REQUIRE,       /* "require": the handshake fails without a valid one */
} cr_client_cert_validation_t;

/* forwarded_client_cert: what happens to X-Forwarded-Client-Cert. */
typedef enum {
    CR_XFCC_ALWAYS_FORWARD = 0,   /* the client's header passes unchanged */
    CR_XFCC_FORWARD,              /* passes only when the client sent a certificate (mTLS) */
    CR_XFCC_SANITIZE_SET,         /* removed; set to the client certificate when there is one */
} cr_xfcc_mode_t;

/* One tls_pem entry: a certificate chain and its key, both PEM text. */
typedef struct {
    char *cert_chain;             /* owned */
    char *private_key;            /* owned */
} cr_tls_pem_t;

typedef struct cr_config {
    /* proxy */
    uint16_t port;                       /* port: 8081 */
    uint32_t workers;                    /* workers: 0 in YAML = one per core; resolved here (>= 1) */
    int64_t endpoint_timeout_ns;         /* endpoint_timeout: 60s */
    int64_t endpoint_dial_timeout_ns;    /* endpoint_dial_timeout: 5s */
    int64_t frontend_idle_timeout_ns;    /* frontend_idle_timeout: 900s */
    int64_t read_header_timeout_ns;      /* read_header_timeout: 30s (gorouter 0 = none; crouter defends slowloris) */
    bool splice_request_bodies;          /* splice_request_bodies: false (crouter only); true = large uploads go through a pipe */
    int64_t busy_poll_ns;                /* busy_poll: 50us (crouter only); 0 = a worker always blocks in epoll_wait */
    uint32_t max_request_header_bytes;   /* max_request_header_bytes: 0 => 1 MiB; clamped to 1 MiB */
    uint32_t max_request_headers;        /* max_request_headers: 0 => 200 */
    bool disable_keep_alives;            /* disable_keep_alives: false (unlike gorouter: keep-alive to backends on) */
    uint32_t backends_max_conns;         /* backends.max_conns: 0 = unlimited */
    uint32_t backends_max_attempts;      /* backends.max_attempts: 3 (0 => 1) */
    cr_lb_algo_t balancing_algorithm;    /* balancing_algorithm: round-robin | least-connection */
    bool empty_pool_response_code_503;   /* empty_pool_response_code_503: false */
    int64_t empty_pool_timeout_ns;       /* empty_pool_timeout: 0 */
    int64_t drain_wait_ns;               /* drain_wait: 0 */
    int64_t drain_timeout_ns;            /* drain_timeout: 0 => endpoint_timeout */

    /* sticky sessions */
    char **sticky_session_cookie_names;  /* owned; default [JSESSIONID] */
    size_t sticky_session_cookie_names_len;
    bool sticky_sessions_for_auth_negotiate; /* false */
    bool secure_cookies;                 /* false */

    /* session persistence beyond gorouter (issue 5) */
    cr_persist_policy_t session_persistence; /* session_persistence: {mode: vcap, ...} */
    bool allow_route_session_persistence;    /* allow_route_session_persistence: true */

    /* registry and NATS */
    cr_nats_host_t *nats_hosts;          /* owned; default [{localhost, 4222}] */
    size_t nats_hosts_len;
    char *nats_user;                     /* owned, "" when unset */
    char *nats_pass;                     /* owned, "" when unset */
    bool nats_tls_enabled;               /* nats.tls_enabled: false; tls:// to every host */
    char *nats_ca_certs;                 /* owned, nats.ca_certs: PEM text, "" = system trust store */
    char *nats_cert_chain;               /* owned, nats.cert_chain: PEM text of the client certificate, "" = none */
    char *nats_private_key;              /* owned, nats.private_key: PEM text of its key, "" = none */
    int64_t droplet_stale_threshold_ns;  /* droplet_stale_threshold: 120s; raised to start_response_delay_interval if smaller */
    int64_t prune_stale_droplets_interval_ns; /* prune_stale_droplets_interval: 30s; 0 disables pruning */
    int64_t start_response_delay_interval_ns; /* start_response_delay_interval: 5s */
    int64_t publish_start_message_interval_ns; /* publish_start_message_interval: 30s; 0 disables */
    bool suspend_pruning_if_nats_unavailable; /* false */

    /* TLS on the front and to backends, PROXY protocol (issue 6). PEM text is
     * validated at load; an error names the key. */
    bool enable_ssl;                     /* enable_ssl: false */
    uint16_t ssl_port;                   /* ssl_port: 443 */
    cr_tls_pem_t *tls_pem;               /* owned, tls_pem: [{cert_chain, private_key}]; the first is the SNI default */
    size_t tls_pem_len;
    uint16_t min_tls_version;            /* min_tls_version: "TLSv1.2", as the wire version (0x0303) */
    uint16_t max_tls_version;            /* max_tls_version: "TLSv1.3" (0x0304) */
    char *cipher_suites;                 /* owned, cipher_suites: OpenSSL or IANA names, ':'-separated (TLS <= 1.2) */
    cr_client_cert_validation_t client_cert_validation; /* client_cert_validation: request */
    char *client_ca_certs;               /* owned, client_ca_certs: PEM, "" = none (ca_certs are trusted too) */
    cr_xfcc_mode_t forwarded_client_cert;/* forwarded_client_cert: always_forward */
    bool disable_http;                   /* disable_http: false (needs enable_ssl) */
    char *ca_certs;                      /* owned, ca_certs: a list of PEM strings (or one), joined; "" = system store */
    bool skip_ssl_validation;            /* skip_ssl_validation: false */
    char *backends_cert_chain;           /* owned, backends.cert_chain: PEM, "" = no client certificate */
    char *backends_private_key;          /* owned, backends.private_key: PEM */
    bool enable_proxy;                   /* enable_proxy: false; PROXY protocol v1/v2 on the listeners */

    /* status API */
    char *status_host;                   /* status.host: "0.0.0.0" */
    uint16_t status_port;                /* status.port: 8080 */
    char *status_user;                   /* status.user: "" */
    char *status_pass;                   /* status.pass: "" */
    uint16_t status_routes_port;         /* status.routes.port: 8082, bound to 127.0.0.1 */

    /* logs and process */
    char *access_log_file;               /* access_log.file: "" = no access log */
    char *logging_level;                 /* logging.level: "info" (validated) */
    char *pid_file;                      /* pid_file: "" */
    uint32_t index;                      /* index: 0 */
    char *zone;                          /* zone: "" */

    /* Warnings gathered while loading ("unknown key 'x' (line 7)"), owned. */
    char **warnings;
    size_t warnings_len;
} cr_config_t;

/* Returns a config holding every default. Never NULL. Caller owns it. */
cr_config_t *cr_config_defaults(void);

/* Loads and validates a YAML file. On success returns a config the caller
 * owns; on failure returns NULL and writes a one-line message naming the key
 * and line (e.g. "config.yml:12: endpoint_timeout: invalid duration \"5x\"")
 * into err. */
cr_config_t *cr_config_load_file(const char *path, char *err, size_t err_cap);

/* The same from a buffer; name is used in messages (e.g. the file name). */
cr_config_t *cr_config_load_string(const char *yaml, size_t len, const char *name,
                                   char *err, size_t err_cap);

/* Accepts NULL. */
void cr_config_destroy(cr_config_t *cfg);

/* Parses a Go duration ("1h30m", "500ms", "-1.5h", "0"). Units: ns, us, µs,
 * ms, s, m, h. Returns 0 and the value in nanoseconds, or CR_EBAD. */
int cr_duration_parse(const char *s, int64_t *out_ns);

/* "round-robin" / "least-connection" <-> enum. Parse returns 0 or CR_EBAD. */
int cr_lb_algo_parse(const char *s, cr_lb_algo_t *out);
const char *cr_lb_algo_name(cr_lb_algo_t algo);

#endif
