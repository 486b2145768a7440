/* router/tls.h - TLS for crouter (OpenSSL 3): to backends and on the front door.
 *
 * Two contexts built once from the config at start and shared by every
 * worker (SSL_CTX is safe for concurrent SSL_new):
 *   - cr_tls_client_t, for endpoints registered with tls_port: the CA store
 *     (system store plus ca_certs), skip_ssl_validation, the client
 *     certificate backends.cert_chain/private_key (mutual TLS), hostname
 *     verification against the endpoint's server_cert_domain_san, and a
 *     session cache keyed by endpoint address and name, so redials resume.
 *   - cr_tls_server_t, for the ssl_port listeners: one certificate per
 *     tls_pem entry picked by SNI (the first is the default), TLS versions,
 *     cipher suites, client certificate validation.
 * Connections are non-blocking: handshake, read and write report
 * CR_TLS_WANT_READ / CR_TLS_WANT_WRITE, which the worker maps to its epoll
 * readiness flags. A failed backend handshake is classified into gorouter's
 * answers (525, 526, 503, 496) with a Go-like reason.
 *
 * Threads: create/destroy from the main thread; everything else from any
 * worker (the session cache takes a mutex, once per new backend connection).
 */
#ifndef CR_ROUTER_TLS_H
#define CR_ROUTER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "config/config.h"
#include "router/errors.h"

#define CR_TLS_REASON_CAP 160

typedef enum {
    CR_TLS_DONE = 0,              /* the handshake completed */
    CR_TLS_WANT_READ,             /* call again when the socket is readable */
    CR_TLS_WANT_WRITE,            /* call again when the socket is writable */
    CR_TLS_FAILED,                /* failed; see the failure */
} cr_tls_step_t;

/* Why a TLS exchange with a backend failed: the router's answer and the
 * reason in X-Cf-Routererror ("endpoint_failure (<reason>)"). */
typedef struct cr_tls_failure {
    cr_proxy_error_t kind;        /* CR_PERR_TLS_* or CR_PERR_ENDPOINT_FAILURE */
    char reason[CR_TLS_REASON_CAP];
} cr_tls_failure_t;

/* --- To backends ------------------------------------------------------------- */

typedef struct cr_tls_client cr_tls_client_t;

/* Builds the backend context from cfg (ca_certs, skip_ssl_validation,
 * backends.cert_chain/private_key). NULL with a message in err on failure. */
cr_tls_client_t *cr_tls_client_create(const cr_config_t *cfg, char *err, size_t err_cap);
/* Accepts NULL. Every SSL made from it must be freed first. */
void cr_tls_client_destroy(cr_tls_client_t *tc);

/* A client SSL on the connected (or connecting) socket fd for an endpoint
 * whose certificate must name san (server_cert_domain_san; also sent as
 * SNI unless it is an IP address). session_key identifies the endpoint
 * (cr_tls_session_key of its address and san): a session saved under it is
 * offered for resumption. Returns NULL and fills *fail when the endpoint
 * cannot be verified (no san and validation on, as Go refuses) or OpenSSL
 * fails. The caller owns the SSL (SSL_free; the fd stays the caller's). */
SSL *cr_tls_client_ssl_new(cr_tls_client_t *tc, int fd, const char *san, uint64_t session_key,
                           cr_tls_failure_t *fail);

/* The session cache key for an endpoint: a hash of its address and san. */
uint64_t cr_tls_session_key(const char *addr, const char *san);

/* Drops the session saved under key (after a failed resumption attempt). */
void cr_tls_client_forget_session(cr_tls_client_t *tc, uint64_t session_key);

/* Sessions currently cached (tests, /varz). */
size_t cr_tls_client_cached_sessions(cr_tls_client_t *tc);

/* Advances a client handshake. On CR_TLS_FAILED, *fail says which answer
 * gorouter gives: not TLS or handshake failure -> TLS_HANDSHAKE (525),
 * untrusted or expired certificate -> TLS_UNTRUSTED (526), SAN mismatch ->
 * TLS_HOSTNAME (503), our certificate refused -> TLS_CERT_REQUIRED (496). */
cr_tls_step_t cr_tls_connect_step(SSL *ssl, cr_tls_failure_t *fail);

/* The failure for a handshake that did not finish within the dial timeout. */
void cr_tls_timeout_failure(cr_tls_failure_t *fail);

/* After a failed cr_tls_read on a backend before any response byte: the
 * failure when the backend sent a TLS alert (with TLS 1.3 a refused client
 * certificate shows up here, after the handshake), else false. */
bool cr_tls_alert_failure(SSL *ssl, cr_tls_failure_t *fail);

/* --- On the front ------------------------------------------------------------- */

typedef struct cr_tls_server cr_tls_server_t;

/* Builds the front context from cfg (tls_pem, versions, cipher_suites,
 * client_cert_validation, client_ca_certs and ca_certs). NULL with a
 * message in err on failure. */
cr_tls_server_t *cr_tls_server_create(const cr_config_t *cfg, char *err, size_t err_cap);
void cr_tls_server_destroy(cr_tls_server_t *ts);

/* A server SSL on an accepted socket. The caller owns it. NULL on failure. */
SSL *cr_tls_server_ssl_new(cr_tls_server_t *ts, int fd);

/* Advances a server handshake. On CR_TLS_FAILED a short reason for the log
 * goes to reason (may be NULL). */
cr_tls_step_t cr_tls_accept_step(SSL *ssl, char *reason, size_t reason_cap);

/* --- Data ------------------------------------------------------------------- */

/* Reads up to len bytes. Returns the bytes read (> 0), 0 at the end of the
 * stream (close_notify or TCP EOF), CR_AGAIN with *want set to
 * CR_TLS_WANT_READ or CR_TLS_WANT_WRITE, or -EPROTO / -errno on error. */
ssize_t cr_tls_read(SSL *ssl, char *buf, size_t len, cr_tls_step_t *want);

/* Writes a then b as far as the connection takes them (one record when
 * they fit). Returns bytes taken from a+b (> 0), CR_AGAIN with *want set,
 * or -EPROTO / -errno. A retry after CR_AGAIN must offer the same bytes
 * again (more may follow them). */
ssize_t cr_tls_write2(SSL *ssl, const char *a, size_t alen, const char *b, size_t blen,
                      cr_tls_step_t *want);

/* Whether a readable idle connection only carried TLS records with no
 * application data (session tickets): true = still usable. */
bool cr_tls_idle_still_usable(SSL *ssl);

/* Sends close_notify without waiting, then frees. Accepts NULL. */
void cr_tls_close(SSL *ssl);

/* --- X-Forwarded-Client-Cert ------------------------------------------------ */

typedef enum {
    CR_XFCC_KEEP = 0,             /* forward the client's header as sent */
    CR_XFCC_REMOVE,               /* drop it */
    CR_XFCC_REPLACE,              /* drop it and set the client certificate */
} cr_xfcc_action_t;

/* gorouter's forwarded_client_cert: always_forward keeps; forward keeps
 * only with a client certificate (mTLS), else removes; sanitize_set
 * replaces with the certificate when there is one, else removes. */
cr_xfcc_action_t cr_tls_xfcc_action(cr_xfcc_mode_t mode, bool has_client_cert);

/* Base64 (standard, no line breaks) of DER bytes, as gorouter writes the
 * header (the PEM body without its armour). Returns the length written
 * (NUL-terminated) or CR_ETOOBIG. */
int cr_tls_xfcc_encode(const unsigned char *der, size_t der_len, char *out, size_t cap);

/* The header value for the peer's leaf certificate on a server SSL.
 * Returns its length, 0 when the client sent no certificate, or
 * CR_ETOOBIG. */
int cr_tls_xfcc_value(SSL *ssl, char *out, size_t cap);

#endif
