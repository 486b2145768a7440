/* test/unit/router/test_tls.c - TLS contexts, handshakes, failure classes, XFCC.
 *
 * Both ends run in this process over a non-blocking socketpair: crouter's
 * side through router/tls.h, the peer either crouter's front context or a
 * plain OpenSSL server standing in for a backend. Handshakes are stepped
 * alternately until both finish or one fails, so nothing blocks or sleeps.
 * Certificates come from certs.h (in memory, made per run).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common/defs.h"
#include "router/tls.h"
#include "unit/router/certs.h"

static test_cert_t ca, other_ca, app, client, front_a, front_b;

static int setup_certs(void **state)
{
    (void)state;
    ca = test_cert_make("test ca", NULL, NULL);
    other_ca = test_cert_make("other ca", NULL, NULL);
    app = test_cert_make("app", "DNS:app.internal,DNS:*.apps.internal,IP:127.0.0.1", &ca);
    client = test_cert_make("router instance", "DNS:router.internal", &ca);
    front_a = test_cert_make("a.example", "DNS:a.example", &ca);
    front_b = test_cert_make("b.example", "DNS:b.example,DNS:*.b.example", &ca);
    return 0;
}

static int teardown_certs(void **state)
{
    (void)state;
    test_cert_free(&ca);
    test_cert_free(&other_ca);
    test_cert_free(&app);
    test_cert_free(&client);
    test_cert_free(&front_a);
    test_cert_free(&front_b);
    return 0;
}

static void set_str(char **field, const char *v)
{
    free(*field);
    *field = strdup(v);
}

static cr_config_t *backend_cfg(const char *ca_pem, bool skip, bool with_client_cert)
{
    cr_config_t *cfg = cr_config_defaults();
    set_str(&cfg->ca_certs, ca_pem ? ca_pem : "");
    cfg->skip_ssl_validation = skip;
    if (with_client_cert) {
        set_str(&cfg->backends_cert_chain, client.cert_pem);
        set_str(&cfg->backends_private_key, client.key_pem);
    }
    return cfg;
}

/* A backend: OpenSSL server with cert, optionally requiring a client
 * certificate signed by ca. */
static SSL_CTX *backend_ctx(const test_cert_t *cert, bool require_client_cert, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate(ctx, cert->x509), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, cert->key), 1);
    if (max_version)
        SSL_CTX_set_max_proto_version(ctx, max_version);
    if (require_client_cert) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca.x509);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
}

typedef struct pair {
    int fds[2];                   /* [0] crouter's side, [1] the peer */
} pair_t;

static void pair_open(pair_t *p)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fds), 0);
}

static void pair_close(pair_t *p)
{
    close(p->fds[0]);
    close(p->fds[1]);
}

/* Steps crouter's client handshake and the peer's until both are done or
 * crouter's side fails. Returns crouter's last step result. */
static cr_tls_step_t drive_client(SSL *ours, SSL *peer, cr_tls_failure_t *f)
{
    cr_tls_step_t st = CR_TLS_WANT_WRITE;
    bool peer_done = false, peer_failed = false;
    for (int i = 0; i < 200; i++) {
        if (st != CR_TLS_DONE)
            st = cr_tls_connect_step(ours, f);
        if (st == CR_TLS_FAILED)
            return st;
        if (!peer_done && !peer_failed) {
            int r = SSL_do_handshake(peer);
            if (r == 1)
                peer_done = true;
            else {
                int e = SSL_get_error(peer, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    peer_failed = true;
                ERR_clear_error();
            }
        }
        if (st == CR_TLS_DONE && (peer_done || peer_failed))
            return st;
    }
    return st;
}

static SSL *peer_ssl(SSL_CTX *ctx, int fd)
{
    SSL *s = SSL_new(ctx);
    SSL_set_fd(s, fd);
    SSL_set_accept_state(s);
    return s;
}

/* Reads through crouter's side until bytes arrive or it fails. */
static ssize_t read_some(SSL *ours, SSL *peer, char *buf, size_t cap)
{
    for (int i = 0; i < 200; i++) {
        cr_tls_step_t want;
        ssize_t n = cr_tls_read(ours, buf, cap, &want);
        if (n != CR_AGAIN)
            return n;
        /* Let the peer process what we sent (tickets, alerts). */
        char tmp[64];
        size_t got;
        if (SSL_read_ex(peer, tmp, sizeof(tmp), &got) != 1)
            ERR_clear_error();
    }
    return CR_AGAIN;
}

/* --- To backends ------------------------------------------------------------ */

static void test_backend_with_valid_san_handshakes_and_moves_data(void **state)
{
    (void)state;
    cr_config_t *cfg = backend_cfg(ca.cert_pem, false, false);
    char err[256] = "";
    cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
    assert_non_null(tc);
    SSL_CTX *bctx = backend_ctx(&app, false, 0);
    pair_t p;
    pair_open(&p);
    cr_tls_failure_t f = {0};
    SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], "app.internal", 1, &f);
    assert_non_null(ours);
    SSL *peer = peer_ssl(bctx, p.fds[1]);
    assert_int_equal(drive_client(ours, peer, &f), CR_TLS_DONE);
    /* Head and body go out as one record, read back by the backend. */
    cr_tls_step_t want;
    ssize_t n = cr_tls_write2(ours, "GET / HTTP/1.1\r\n\r\n", 18, "body", 4, &want);
    assert_int_equal(n, 22);
    char buf[64];
    size_t got = 0;
    assert_int_equal(SSL_read_ex(peer, buf, sizeof(buf), &got), 1);
    assert_int_equal(got, 22);
    assert_memory_equal(buf, "GET / HTTP/1.1\r\n\r\nbody", 22);
    assert_int_equal(SSL_write(peer, "HTTP/1.1 200 OK\r\n", 17), 17);
    n = read_some(ours, peer, buf, sizeof(buf));
    assert_int_equal(n, 17);
    /* Nothing more: the read wants more input. */
    assert_int_equal(cr_tls_read(ours, buf, sizeof(buf), &want), CR_AGAIN);
    assert_int_equal(want, CR_TLS_WANT_READ);
    /* The peer's close_notify is the end of the stream. */
    SSL_shutdown(peer);
    assert_int_equal(cr_tls_read(ours, buf, sizeof(buf), &want), 0);
    cr_tls_close(ours);
    SSL_free(peer);
    pair_close(&p);
    SSL_CTX_free(bctx);
    cr_tls_client_destroy(tc);
    cr_config_destroy(cfg);
}

static void test_wildcard_and_ip_sans_match(void **state)
{
    (void)state;
    cr_config_t *cfg = backend_cfg(ca.cert_pem, false, false);
    char err[256];
    cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
    SSL_CTX *bctx = backend_ctx(&app, false, 0);
    static const char *const names[] = {"x.apps.internal", "127.0.0.1"};
    for (size_t i = 0; i < 2; i++) {
        pair_t p;
        pair_open(&p);
        cr_tls_failure_t f = {0};
        SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], names[i], 2 + i, &f);
        SSL *peer = peer_ssl(bctx, p.fds[1]);
        if (drive_client(ours, peer, &f) != CR_TLS_DONE)
            fail_msg("%s: %s", names[i], f.reason);
        cr_tls_close(ours);
        SSL_free(peer);
        pair_close(&p);
    }
    SSL_CTX_free(bctx);
    cr_tls_client_destroy(tc);
    cr_config_destroy(cfg);
}

static void test_san_mismatch_is_503_hostname(void **state)
{
    (void)state;
    cr_config_t *cfg = backend_cfg(ca.cert_pem, false, false);
    char err[256];
    cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
    SSL_CTX *bctx = backend_ctx(&app, false, 0);
    pair_t p;
    pair_open(&p);
    cr_tls_failure_t f = {0};
    SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], "other.internal", 5, &f);
    SSL *peer = peer_ssl(bctx, p.fds[1]);
    assert_int_equal(drive_client(ours, peer, &f), CR_TLS_FAILED);
    assert_int_equal(f.kind, CR_PERR_TLS_HOSTNAME);
    assert_int_equal(cr_proxy_error_info(f.kind)->status, 503);
    if (!strstr(f.reason, "x509: certificate is valid for app.internal"))
        fail_msg("reason: %s", f.reason);
    assert_non_null(strstr(f.reason, "not other.internal"));
    /* A wildcard covers one label only. */
    cr_tls_close(ours);
    SSL_free(peer);
    pair_close(&p);
    pair_open(&p);
    ours = cr_tls_client_ssl_new(tc, p.fds[0], "a.b.apps.internal", 6, &f);
    peer = peer_ssl(bctx, p.fds[1]);
    assert_int_equal(drive_client(ours, peer, &f), CR_TLS_FAILED);
    assert_int_equal(f.kind, CR_PERR_TLS_HOSTNAME);
    cr_tls_close(ours);
    SSL_free(peer);
    pair_close(&p);
    SSL_CTX_free(bctx);
    cr_tls_client_destroy(tc);
    cr_config_destroy(cfg);
}

static void test_untrusted_ca_is_526_and_skip_validation_accepts_it(void **state)
{
    (void)state;
    SSL_CTX *bctx = backend_ctx(&app, false, 0);
    for (int skip = 0; skip < 2; skip++) {
        cr_config_t *cfg = backend_cfg(other_ca.cert_pem, skip, false);
        char err[256];
        cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
        assert_non_null(tc);
        pair_t p;
        pair_open(&p);
        cr_tls_failure_t f = {0};
        SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], "app.internal", 7, &f);
        SSL *peer = peer_ssl(bctx, p.fds[1]);
        cr_tls_step_t st = drive_client(ours, peer, &f);
        if (skip) {
            assert_int_equal(st, CR_TLS_DONE);
        } else {
            assert_int_equal(st, CR_TLS_FAILED);
            assert_int_equal(f.kind, CR_PERR_TLS_UNTRUSTED);
            assert_int_equal(cr_proxy_error_info(f.kind)->status, 526);
            assert_string_equal(f.reason, "x509: certificate signed by unknown authority");
        }
        cr_tls_close(ours);
        SSL_free(peer);
        pair_close(&p);
        cr_tls_client_destroy(tc);
        cr_config_destroy(cfg);
    }
    SSL_CTX_free(bctx);
}

static void test_plain_http_reply_is_525_not_tls(void **state)
{
    (void)state;
    cr_config_t *cfg = backend_cfg(ca.cert_pem, false, false);
    char err[256];
    cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
    pair_t p;
    pair_open(&p);
    cr_tls_failure_t f = {0};
    SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], "app.internal", 8, &f);
    assert_int_equal(cr_tls_connect_step(ours, &f), CR_TLS_WANT_READ);
    const char *resp = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";
    assert_int_equal(write(p.fds[1], resp, strlen(resp)), (ssize_t)strlen(resp));
    assert_int_equal(cr_tls_connect_step(ours, &f), CR_TLS_FAILED);
    assert_int_equal(f.kind, CR_PERR_TLS_HANDSHAKE);
    assert_int_equal(cr_proxy_error_info(f.kind)->status, 525);
    assert_string_equal(f.reason, "tls: first record does not look like a TLS handshake");
    cr_tls_close(ours);
    pair_close(&p);
    cr_tls_client_destroy(tc);
    cr_config_destroy(cfg);
}

static void test_close_during_handshake_is_525_eof(void **state)
{
    (void)state;
    cr_config_t *cfg = backend_cfg(ca.cert_pem, false, false);
    char err[256];
    cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
    pair_t p;
    pair_open(&p);
    cr_tls_failure_t f = {0};
    SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], "app.internal", 9, &f);
    assert_int_equal(cr_tls_connect_step(ours, &f), CR_TLS_WANT_READ);
    shutdown(p.fds[1], SHUT_RDWR);
    assert_int_equal(cr_tls_connect_step(ours, &f), CR_TLS_FAILED);
    assert_int_equal(f.kind, CR_PERR_TLS_HANDSHAKE);
    assert_string_equal(f.reason, "EOF");
    cr_tls_timeout_failure(&f);
    assert_int_equal(f.kind, CR_PERR_TLS_HANDSHAKE);
    cr_tls_close(ours);
    pair_close(&p);
    cr_tls_client_destroy(tc);
    cr_config_destroy(cfg);
}

static void test_missing_san_is_refused_unless_validation_is_skipped(void **state)
{
    (void)state;
    for (int skip = 0; skip < 2; skip++) {
        cr_config_t *cfg = backend_cfg(ca.cert_pem, skip, false);
        char err[256];
        cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
        cr_tls_failure_t f = {0};
        SSL *ours = cr_tls_client_ssl_new(tc, 0, "", 10, &f);
        if (skip) {
            assert_non_null(ours);
            cr_tls_close(ours);
        } else {
            assert_null(ours);
            assert_int_equal(f.kind, CR_PERR_ENDPOINT_FAILURE);
            assert_non_null(strstr(f.reason, "ServerName"));
        }
        cr_tls_client_destroy(tc);
        cr_config_destroy(cfg);
    }
}

static void test_mtls_backend_gets_the_client_certificate(void **state)
{
    (void)state;
    SSL_CTX *bctx = backend_ctx(&app, true, 0);
    for (int with = 0; with < 2; with++) {
        cr_config_t *cfg = backend_cfg(ca.cert_pem, false, with);
        char err[256];
        cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
        assert_non_null(tc);
        pair_t p;
        pair_open(&p);
        cr_tls_failure_t f = {0};
        SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], "app.internal", 11, &f);
        SSL *peer = peer_ssl(bctx, p.fds[1]);
        /* TLS 1.3: the client finishes first; the server's verdict follows. */
        assert_int_equal(drive_client(ours, peer, &f), CR_TLS_DONE);
        cr_tls_step_t want;
        assert_int_equal(cr_tls_write2(ours, "GET /", 5, NULL, 0, &want), 5);
        char buf[64];
        size_t got = 0;
        int r = SSL_read_ex(peer, buf, sizeof(buf), &got);
        if (with) {
            assert_int_equal(r, 1);
            X509 *seen = SSL_get0_peer_certificate(peer);
            assert_non_null(seen);
            assert_int_equal(X509_cmp(seen, client.x509), 0);
        } else {
            assert_int_equal(r, 0);
            ERR_clear_error();
            ssize_t n = read_some(ours, peer, buf, sizeof(buf));
            assert_true(n < 0);
            assert_true(cr_tls_alert_failure(ours, &f));
            assert_int_equal(f.kind, CR_PERR_TLS_CERT_REQUIRED);
            assert_int_equal(cr_proxy_error_info(f.kind)->status, 496);
            assert_non_null(strstr(f.reason, "remote error: tls: "));
        }
        cr_tls_close(ours);
        SSL_free(peer);
        pair_close(&p);
        cr_tls_client_destroy(tc);
        cr_config_destroy(cfg);
    }
    SSL_CTX_free(bctx);
}

static void test_sessions_are_resumed_per_endpoint(void **state)
{
    (void)state;
    cr_config_t *cfg = backend_cfg(ca.cert_pem, false, false);
    char err[256];
    cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
    SSL_CTX *bctx = backend_ctx(&app, false, 0);
    uint64_t key = cr_tls_session_key("10.0.0.1:443", "app.internal");
    assert_int_not_equal(key, cr_tls_session_key("10.0.0.1:443", "other.internal"));
    assert_int_not_equal(key, cr_tls_session_key("10.0.0.2:443", "app.internal"));
    for (int round = 0; round < 3; round++) {
        pair_t p;
        pair_open(&p);
        cr_tls_failure_t f = {0};
        SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], "app.internal", key, &f);
        SSL *peer = peer_ssl(bctx, p.fds[1]);
        assert_int_equal(drive_client(ours, peer, &f), CR_TLS_DONE);
        assert_int_equal(SSL_session_reused(ours), round > 0);
        /* Tickets arrive after the handshake: read to take them in. */
        assert_int_equal(SSL_write(peer, "x", 1), 1);
        char buf[8];
        assert_int_equal(read_some(ours, peer, buf, sizeof(buf)), 1);
        assert_int_equal(cr_tls_client_cached_sessions(tc), 1);
        cr_tls_close(ours);
        SSL_free(peer);
        pair_close(&p);
    }
    cr_tls_client_forget_session(tc, key);
    assert_int_equal(cr_tls_client_cached_sessions(tc), 0);
    SSL_CTX_free(bctx);
    cr_tls_client_destroy(tc);
    cr_config_destroy(cfg);
}

static void test_idle_connection_with_only_a_ticket_stays_usable(void **state)
{
    (void)state;
    cr_config_t *cfg = backend_cfg(ca.cert_pem, false, false);
    char err[256];
    cr_tls_client_t *tc = cr_tls_client_create(cfg, err, sizeof(err));
    SSL_CTX *bctx = backend_ctx(&app, false, 0);
    pair_t p;
    pair_open(&p);
    cr_tls_failure_t f = {0};
    SSL *ours = cr_tls_client_ssl_new(tc, p.fds[0], "app.internal", 12, &f);
    SSL *peer = peer_ssl(bctx, p.fds[1]);
    assert_int_equal(drive_client(ours, peer, &f), CR_TLS_DONE);
    /* The server's tickets are pending on the socket: no data. */
    assert_true(cr_tls_idle_still_usable(ours));
    /* Application data on an idle connection: not reusable. */
    assert_int_equal(SSL_write(peer, "junk", 4), 4);
    assert_false(cr_tls_idle_still_usable(ours));
    cr_tls_close(ours);
    SSL_free(peer);
    pair_close(&p);
    SSL_CTX_free(bctx);
    cr_tls_client_destroy(tc);
    cr_config_destroy(cfg);
}

static void test_bad_client_pem_fails_create(void **state)
{
    (void)state;
    cr_config_t *cfg = backend_cfg(ca.cert_pem, false, false);
    set_str(&cfg->backends_cert_chain, client.cert_pem);
    set_str(&cfg->backends_private_key, app.key_pem); /* not its key */
    char err[256] = "";
    assert_null(cr_tls_client_create(cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "backends.cert_chain/private_key"));
    cr_config_destroy(cfg);
}

/* --- On the front ------------------------------------------------------------- */

static cr_config_t *front_cfg(cr_client_cert_validation_t v)
{
    cr_config_t *cfg = cr_config_defaults();
    cfg->tls_pem = calloc(2, sizeof(cr_tls_pem_t));
    cfg->tls_pem[0].cert_chain = strdup(front_a.cert_pem);
    cfg->tls_pem[0].private_key = strdup(front_a.key_pem);
    cfg->tls_pem[1].cert_chain = strdup(front_b.cert_pem);
    cfg->tls_pem[1].private_key = strdup(front_b.key_pem);
    cfg->tls_pem_len = 2;
    cfg->client_cert_validation = v;
    set_str(&cfg->client_ca_certs, ca.cert_pem);
    return cfg;
}

/* A client (curl's role) against crouter's front: returns the step result
 * of the server side; *cn gets the certificate's CN the client saw. */
static cr_tls_step_t front_handshake(cr_tls_server_t *ts, const char *sni, const test_cert_t *cert,
                                     char *cn, size_t cn_cap, char *xfcc, size_t xfcc_cap)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    if (cert) {
        SSL_CTX_use_certificate(cctx, cert->x509);
        SSL_CTX_use_PrivateKey(cctx, cert->key);
    }
    pair_t p;
    pair_open(&p);
    SSL *ours = cr_tls_server_ssl_new(ts, p.fds[0]);
    assert_non_null(ours);
    SSL *cl = SSL_new(cctx);
    SSL_set_fd(cl, p.fds[1]);
    if (sni)
        SSL_set_tlsext_host_name(cl, sni);
    SSL_set_connect_state(cl);
    cr_tls_step_t st = CR_TLS_WANT_READ;
    bool cl_done = false;
    char reason[128];
    for (int i = 0; i < 200 && st != CR_TLS_FAILED && !(st == CR_TLS_DONE && cl_done); i++) {
        if (!cl_done) {
            int r = SSL_do_handshake(cl);
            if (r == 1)
                cl_done = true;
            else
                ERR_clear_error();
        }
        if (st != CR_TLS_DONE)
            st = cr_tls_accept_step(ours, reason, sizeof(reason));
    }
    cn[0] = '\0';
    X509 *seen = SSL_get0_peer_certificate(cl);
    if (seen)
        X509_NAME_get_text_by_NID(X509_get_subject_name(seen), NID_commonName, cn, (int)cn_cap);
    if (xfcc && st == CR_TLS_DONE)
        assert_true(cr_tls_xfcc_value(ours, xfcc, xfcc_cap) >= 0);
    cr_tls_close(ours);
    SSL_free(cl);
    pair_close(&p);
    SSL_CTX_free(cctx);
    return st;
}

static void test_front_picks_the_certificate_by_sni_first_is_default(void **state)
{
    (void)state;
    cr_config_t *cfg = front_cfg(CR_CLIENT_CERT_NONE);
    char err[256];
    cr_tls_server_t *ts = cr_tls_server_create(cfg, err, sizeof(err));
    assert_non_null(ts);
    char cn[64];
    assert_int_equal(front_handshake(ts, "b.example", NULL, cn, sizeof(cn), NULL, 0), CR_TLS_DONE);
    assert_string_equal(cn, "b.example");
    assert_int_equal(front_handshake(ts, "x.b.example", NULL, cn, sizeof(cn), NULL, 0), CR_TLS_DONE);
    assert_string_equal(cn, "b.example");
    assert_int_equal(front_handshake(ts, "a.example", NULL, cn, sizeof(cn), NULL, 0), CR_TLS_DONE);
    assert_string_equal(cn, "a.example");
    assert_int_equal(front_handshake(ts, "unknown.example", NULL, cn, sizeof(cn), NULL, 0), CR_TLS_DONE);
    assert_string_equal(cn, "a.example");
    assert_int_equal(front_handshake(ts, NULL, NULL, cn, sizeof(cn), NULL, 0), CR_TLS_DONE);
    assert_string_equal(cn, "a.example");
    cr_tls_server_destroy(ts);
    cr_config_destroy(cfg);
}

static void test_front_require_refuses_a_client_without_certificate(void **state)
{
    (void)state;
    cr_config_t *cfg = front_cfg(CR_CLIENT_CERT_REQUIRE);
    char err[256];
    cr_tls_server_t *ts = cr_tls_server_create(cfg, err, sizeof(err));
    char cn[64], xfcc[4096];
    assert_int_equal(front_handshake(ts, "a.example", NULL, cn, sizeof(cn), NULL, 0), CR_TLS_FAILED);
    xfcc[0] = '\0';
    assert_int_equal(front_handshake(ts, "a.example", &client, cn, sizeof(cn), xfcc, sizeof(xfcc)),
                     CR_TLS_DONE);
    /* XFCC is the base64 DER of the client's leaf. */
    unsigned char *der = NULL;
    int dl = i2d_X509(client.x509, &der);
    char want[4096];
    assert_true(cr_tls_xfcc_encode(der, (size_t)dl, want, sizeof(want)) > 0);
    OPENSSL_free(der);
    assert_string_equal(xfcc, want);
    /* A certificate from another CA fails even in request mode. */
    cr_tls_server_destroy(ts);
    cr_config_destroy(cfg);
    cfg = front_cfg(CR_CLIENT_CERT_REQUEST);
    ts = cr_tls_server_create(cfg, err, sizeof(err));
    test_cert_t stranger = test_cert_make("stranger", NULL, &other_ca);
    assert_int_equal(front_handshake(ts, "a.example", &stranger, cn, sizeof(cn), NULL, 0), CR_TLS_FAILED);
    xfcc[0] = 'x';
    assert_int_equal(front_handshake(ts, "a.example", NULL, cn, sizeof(cn), xfcc, sizeof(xfcc)),
                     CR_TLS_DONE);
    test_cert_free(&stranger);
    cr_tls_server_destroy(ts);
    cr_config_destroy(cfg);
}

static void test_front_honours_min_tls_version(void **state)
{
    (void)state;
    cr_config_t *cfg = front_cfg(CR_CLIENT_CERT_NONE);
    cfg->min_tls_version = 0x0304;
    char err[256];
    cr_tls_server_t *ts = cr_tls_server_create(cfg, err, sizeof(err));
    assert_non_null(ts);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
    pair_t p;
    pair_open(&p);
    SSL *ours = cr_tls_server_ssl_new(ts, p.fds[0]);
    SSL *cl = SSL_new(cctx);
    SSL_set_fd(cl, p.fds[1]);
    SSL_set_connect_state(cl);
    cr_tls_step_t st = CR_TLS_WANT_READ;
    for (int i = 0; i < 50 && st != CR_TLS_FAILED && st != CR_TLS_DONE; i++) {
        if (SSL_do_handshake(cl) != 1)
            ERR_clear_error();
        st = cr_tls_accept_step(ours, NULL, 0);
    }
    assert_int_equal(st, CR_TLS_FAILED);
    cr_tls_close(ours);
    SSL_free(cl);
    pair_close(&p);
    SSL_CTX_free(cctx);
    cr_tls_server_destroy(ts);
    cr_config_destroy(cfg);
}

/* --- X-Forwarded-Client-Cert -------------------------------------------------- */

static void test_xfcc_modes_follow_gorouter(void **state)
{
    (void)state;
    assert_int_equal(cr_tls_xfcc_action(CR_XFCC_ALWAYS_FORWARD, false), CR_XFCC_KEEP);
    assert_int_equal(cr_tls_xfcc_action(CR_XFCC_ALWAYS_FORWARD, true), CR_XFCC_KEEP);
    assert_int_equal(cr_tls_xfcc_action(CR_XFCC_FORWARD, false), CR_XFCC_REMOVE);
    assert_int_equal(cr_tls_xfcc_action(CR_XFCC_FORWARD, true), CR_XFCC_KEEP);
    assert_int_equal(cr_tls_xfcc_action(CR_XFCC_SANITIZE_SET, false), CR_XFCC_REMOVE);
    assert_int_equal(cr_tls_xfcc_action(CR_XFCC_SANITIZE_SET, true), CR_XFCC_REPLACE);
}

static void test_xfcc_encoding_is_plain_base64(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(cr_tls_xfcc_encode((const unsigned char *)"\x00\x01\x02", 3, out, sizeof(out)), 4);
    assert_string_equal(out, "AAEC");
    assert_int_equal(cr_tls_xfcc_encode((const unsigned char *)"ab", 2, out, sizeof(out)), 4);
    assert_string_equal(out, "YWI=");
    assert_int_equal(cr_tls_xfcc_encode((const unsigned char *)"abcdefghijkl", 12, out, sizeof(out)),
                     CR_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_with_valid_san_handshakes_and_moves_data),
        cmocka_unit_test(test_wildcard_and_ip_sans_match),
        cmocka_unit_test(test_san_mismatch_is_503_hostname),
        cmocka_unit_test(test_untrusted_ca_is_526_and_skip_validation_accepts_it),
        cmocka_unit_test(test_plain_http_reply_is_525_not_tls),
        cmocka_unit_test(test_close_during_handshake_is_525_eof),
        cmocka_unit_test(test_missing_san_is_refused_unless_validation_is_skipped),
        cmocka_unit_test(test_mtls_backend_gets_the_client_certificate),
        cmocka_unit_test(test_sessions_are_resumed_per_endpoint),
        cmocka_unit_test(test_idle_connection_with_only_a_ticket_stays_usable),
        cmocka_unit_test(test_bad_client_pem_fails_create),
        cmocka_unit_test(test_front_picks_the_certificate_by_sni_first_is_default),
        cmocka_unit_test(test_front_require_refuses_a_client_without_certificate),
        cmocka_unit_test(test_front_honours_min_tls_version),
        cmocka_unit_test(test_xfcc_modes_follow_gorouter),
        cmocka_unit_test(test_xfcc_encoding_is_plain_base64),
    };
    return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
