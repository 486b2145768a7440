/* test/integration/test_nats_tls.c - issue 7 (security): TLS to NATS.
 *
 * Certificates are made at test time with the openssl CLI in the run's temp
 * dir: a CA, a server certificate for 127.0.0.1 (IP SAN) signed by it, a
 * client certificate signed by it, and an unrelated second CA. nats-server
 * runs with --tls (server authentication only) or --tlsverify (clients must
 * present a certificate from the CA). crouter gets gorouter's keys
 * nats.tls_enabled, nats.ca_certs, nats.cert_chain and nats.private_key as
 * PEM text in its YAML; the test's publisher is a nats.c TLS client.
 *
 * What must hold: registrations arrive over TLS and route traffic; with
 * --tlsverify a router without a client certificate never connects while
 * one with it does; a router that trusts another CA never connects (the
 * server certificate is really verified) yet keeps running, and connects by
 * itself once the server presents a certificate from the CA it trusts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <openssl/crypto.h>

#include "testsupport.h"

typedef struct {
    char ca_pem[512], ca_key[512];
    char other_ca_pem[512], other_ca_key[512];
    char server_pem[512], server_key[512];
    char other_server_pem[512], other_server_key[512]; /* signed by the other CA */
    char client_pem[512], client_key[512];
    char *ca_text, *other_ca_text, *client_text, *client_key_text; /* owned */
} certs_t;

static certs_t g_certs;
static ts_backend_t g_backend;

/* An EC P-256 key and a self-signed CA certificate. */
static int make_ca(const char *pem, const char *key, const char *cn)
{
    char subj[128];
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    const char *a[] = {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", key, "-out", pem, "-days", "2", "-subj", subj,
                       "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign", NULL};
    return ts_openssl(a);
}

/* A key and a certificate signed by ca_pem/ca_key, with the extensions in ext. */
static int make_leaf_by(const char *ca_pem, const char *ca_key, const char *pem, const char *key,
                        const char *cn, const char *ext, const char *serial)
{
    char csr[512], extfile[512], subj[128];
    ts_tmp_path(csr, sizeof csr, cn, ".csr");
    ts_tmp_path(extfile, sizeof extfile, cn, ".ext");
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    FILE *f = fopen(extfile, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", ext);
    fclose(f);
    const char *req[] = {"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", csr, "-subj", subj, NULL};
    const char *sign[] = {"x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                          "-set_serial", serial, "-days", "2", "-out", pem, "-extfile", extfile, NULL};
    return ts_openssl(req) == 0 && ts_openssl(sign) == 0 ? 0 : -1;
}

/* A leaf signed by the test CA. */
static int make_leaf(const char *pem, const char *key, const char *cn, const char *ext, const char *serial)
{
    return make_leaf_by(g_certs.ca_pem, g_certs.ca_key, pem, key, cn, ext, serial);
}

static int group_setup(void **state)
{
    (void)state;
    certs_t *c = &g_certs;
    ts_tmp_path(c->ca_pem, sizeof c->ca_pem, "ca", ".pem");
    ts_tmp_path(c->ca_key, sizeof c->ca_key, "ca", ".key");
    ts_tmp_path(c->other_ca_pem, sizeof c->other_ca_pem, "other-ca", ".pem");
    ts_tmp_path(c->other_ca_key, sizeof c->other_ca_key, "other-ca", ".key");
    ts_tmp_path(c->other_server_pem, sizeof c->other_server_pem, "other-server", ".pem");
    ts_tmp_path(c->other_server_key, sizeof c->other_server_key, "other-server", ".key");
    ts_tmp_path(c->server_pem, sizeof c->server_pem, "server", ".pem");
    ts_tmp_path(c->server_key, sizeof c->server_key, "server", ".key");
    ts_tmp_path(c->client_pem, sizeof c->client_pem, "client", ".pem");
    ts_tmp_path(c->client_key, sizeof c->client_key, "client", ".key");
    if (make_ca(c->ca_pem, c->ca_key, "crouter-test-ca") != 0 ||
        make_ca(c->other_ca_pem, c->other_ca_key, "crouter-other-ca") != 0 ||
        make_leaf(c->server_pem, c->server_key, "nats-server",
                  "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth", "1001") != 0 ||
        make_leaf(c->client_pem, c->client_key, "crouter-client", "extendedKeyUsage=clientAuth", "1002") != 0 ||
        make_leaf_by(c->other_ca_pem, c->other_ca_key, c->other_server_pem, c->other_server_key,
                     "other-nats-server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
                     "2001") != 0)
        return -1;
    c->ca_text = ts_read_file(c->ca_pem, NULL);
    c->other_ca_text = ts_read_file(c->other_ca_pem, NULL);
    c->client_text = ts_read_file(c->client_pem, NULL);
    c->client_key_text = ts_read_file(c->client_key, NULL);
    if (!c->ca_text || !c->other_ca_text || !c->client_text || !c->client_key_text)
        return -1;
    return ts_backend_start(&g_backend, "tls-app", NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    ts_backend_stop(&g_backend);
    free(g_certs.ca_text);
    free(g_certs.other_ca_text);
    free(g_certs.client_text);
    free(g_certs.client_key_text);
    return 0;
}

/* Appends "  key: |\n" and the PEM text indented by four spaces. */
static void yaml_pem(char *out, size_t cap, const char *key, const char *pem)
{
    size_t len = strlen(out);
    len += (size_t)snprintf(out + len, cap - len, "  %s: |\n", key);
    for (const char *p = pem; *p && len < cap;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l)
            len += (size_t)snprintf(out + len, cap - len, "    %.*s\n", (int)l, p);
        p += l + (nl ? 1 : 0);
    }
}

/* crouter's YAML: TLS to nats port, trusting ca, with the client
 * certificate when with_client_cert. */
static char *tls_yaml(uint16_t port, const char *ca, bool with_client_cert)
{
    size_t cap = 16384;
    char *y = calloc(1, cap);
    snprintf(y, cap, "nats:\n  tls_enabled: true\n");
    yaml_pem(y, cap, "ca_certs", ca);
    if (with_client_cert) {
        yaml_pem(y, cap, "cert_chain", g_certs.client_text);
        yaml_pem(y, cap, "private_key", g_certs.client_key_text);
    }
    size_t len = strlen(y);
    snprintf(y + len, cap - len, "  hosts:\n  - hostname: 127.0.0.1\n    port: %u\n", port);
    return y;
}

/* nats-server with TLS; verify_clients adds --tlsverify --tlscacert. */
static void start_tls_nats(ts_nats_t *n, bool verify_clients)
{
    static const char *args_tls[8], *args_verify[10];
    const certs_t *c = &g_certs;
    const char *const base[] = {"--tls", "--tlscert", c->server_pem, "--tlskey", c->server_key};
    for (size_t i = 0; i < 5; i++)
        args_tls[i] = args_verify[i] = base[i];
    args_tls[5] = NULL;
    args_verify[5] = "--tlsverify";
    args_verify[6] = "--tlscacert";
    args_verify[7] = c->ca_pem;
    args_verify[8] = NULL;
    assert_int_equal(ts_nats_start_with_args(n, ts_free_port(), verify_clients ? args_verify : args_tls), 0);
}

/* A nats.c publisher over TLS trusting ca_text (with the client certificate). */
static natsConnection *tls_publisher_trusting(const ts_nats_t *n, const char *ca_text)
{
    char url[64];
    snprintf(url, sizeof url, "tls://127.0.0.1:%u", n->port);
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    assert_int_equal(natsOptions_Create(&o), NATS_OK);
    assert_int_equal(natsOptions_SetURL(o, url), NATS_OK);
    assert_int_equal(natsOptions_SetSecure(o, true), NATS_OK);
    assert_int_equal(natsOptions_SetCATrustedCertificates(o, ca_text), NATS_OK);
    assert_int_equal(natsOptions_SetCertificatesChain(o, g_certs.client_text, g_certs.client_key_text), NATS_OK);
    natsStatus s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK)
        fail_msg("TLS publisher cannot connect to %s: %s (%s)", url, natsStatus_GetText(s), nats_GetLastError(NULL));
    return nc;
}

static natsConnection *tls_publisher(const ts_nats_t *n)
{
    return tls_publisher_trusting(n, g_certs.ca_text);
}

static void register_and_route(ts_crouter_t *cr, natsConnection *pub, const char *uri)
{
    ts_route_t r = {.port = g_backend.port, .uris = {uri}, .private_instance_id = "tls-1"};
    assert_int_equal(ts_nats_register(pub, &r), 0);
    assert_true(ts_crouter_wait_route(cr, uri, 1, 10000));
    ts_resp_t resp;
    assert_int_equal(ts_get(cr->port, uri, "/over-tls", &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_string_equal(ts_resp_header(&resp, "X-Backend"), "tls-app");
    ts_resp_free(&resp);
}

static const char *varz_nats_server(const ts_crouter_t *cr, char *out, size_t cap)
{
    json_t *v = ts_crouter_varz(cr);
    assert_non_null(v);
    const char *s = json_string_value(json_object_get(v, "nats_server"));
    snprintf(out, cap, "%s", s ? s : "(absent)");
    json_decref(v);
    return out;
}

/* For hold_ms the router must stay up and unconnected: /varz nats_connected
 * false and /health 503 throughout (a refused server certificate never stops
 * crouter; its supervisor keeps recreating the connection). */
static void assert_never_connects(ts_crouter_t *cr, int hold_ms)
{
    int64_t deadline = ts_now_ms() + hold_ms;
    int polls = 0;
    while (ts_now_ms() < deadline) {
        if (!ts_crouter_alive(cr)) {
            char *log = ts_read_file(cr->log_path, NULL);
            fail_msg("crouter exited although NATS trouble must not stop it:\n%s", log ? log : "");
        }
        json_t *v = ts_crouter_varz(cr);
        if (v) {
            polls++;
            if (json_is_true(json_object_get(v, "nats_connected")))
                fail_msg("crouter connected to NATS although it must not (server %s)",
                         json_string_value(json_object_get(v, "nats_server")));
            json_decref(v);
        }
        ts_resp_t h;
        if (ts_get(cr->status_port, NULL, "/health", &h) == 0)
            assert_int_equal(h.status, 503);
        ts_resp_free(&h);
        ts_sleep_ms(200);
    }
    assert_true(polls > 3);
}

static void stop_clean(ts_crouter_t *cr)
{
    int st = ts_crouter_stop(cr, 10000);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_register_over_tls_routes_traffic(void **state)
{
    (void)state;
    ts_nats_t n;
    start_tls_nats(&n, false);
    char *y = tls_yaml(n.port, g_certs.ca_text, false);
    ts_crouter_t cr;
    int64_t t0 = ts_now_ms();
    assert_int_equal(ts_crouter_start(&cr, NULL, y), 0);
    int64_t healthy_ms = ts_now_ms() - t0;
    char srv[160];
    varz_nats_server(&cr, srv, sizeof srv);
    if (strncmp(srv, "tls://127.0.0.1:", 16) != 0)
        fail_msg("/varz nats_server=\"%s\", expected a tls:// URL", srv);
    natsConnection *pub = tls_publisher(&n);
    register_and_route(&cr, pub, "tls.example.com");
    printf("nats tls: crouter healthy over TLS after %lld ms, server %s, route served\n",
           (long long)healthy_ms, srv);
    ts_nats_close(pub);
    stop_clean(&cr);
    ts_nats_stop(&n);
    free(y);
}

static void test_tlsverify_requires_the_client_certificate(void **state)
{
    (void)state;
    ts_nats_t n;
    start_tls_nats(&n, true);
    char *no_cert = tls_yaml(n.port, g_certs.ca_text, false);
    char *with_cert = tls_yaml(n.port, g_certs.ca_text, true);

    ts_crouter_t bare;
    assert_int_equal(ts_crouter_spawn(&bare, NULL, no_cert), 0);
    ts_crouter_t cert;
    assert_int_equal(ts_crouter_start(&cert, NULL, with_cert), 0);
    natsConnection *pub = tls_publisher(&n);
    register_and_route(&cert, pub, "mtls.example.com");

    assert_never_connects(&bare, 3000);
    json_t *routes = ts_crouter_routes(&bare);
    assert_non_null(routes);
    assert_null(json_object_get(routes, "mtls.example.com"));
    json_decref(routes);
    printf("nats tls: --tlsverify: router with client certificate connected and routed; "
           "router without one stayed disconnected for 3 s\n");

    ts_nats_close(pub);
    stop_clean(&bare);
    stop_clean(&cert);
    ts_nats_stop(&n);
    free(no_cert);
    free(with_cert);
}

static void test_server_certificate_from_another_ca_is_refused_until_it_is_right(void **state)
{
    (void)state;
    ts_nats_t n;
    start_tls_nats(&n, false);
    char *y = tls_yaml(n.port, g_certs.other_ca_text, false);
    ts_crouter_t cr;
    assert_int_equal(ts_crouter_spawn(&cr, NULL, y), 0);
    assert_never_connects(&cr, 3000);
    char *log = ts_read_file(cr.log_path, NULL);
    assert_non_null(log);
    assert_non_null(strstr(log, "recreating it in"));
    free(log);

    /* The server now presents a certificate from the CA the router trusts:
     * the supervisor's next attempt connects, with no restart of crouter. */
    uint16_t port = n.port;
    ts_nats_stop(&n);
    const char *const args[] = {"--tls", "--tlscert", g_certs.other_server_pem, "--tlskey",
                                g_certs.other_server_key, NULL};
    assert_int_equal(ts_nats_start_with_args(&n, port, args), 0);
    int64_t t0 = ts_now_ms();
    bool connected = false;
    while (!connected && ts_now_ms() - t0 < 30000) {
        json_t *v = ts_crouter_varz(&cr);
        connected = v && json_is_true(json_object_get(v, "nats_connected"));
        json_decref(v);
        if (!connected)
            ts_sleep_ms(200);
    }
    assert_true(connected);
    printf("nats tls: router trusting another CA stayed up and disconnected for 3 s, "
           "then connected %lld ms after the server's certificate was fixed\n",
           (long long)(ts_now_ms() - t0));
    natsConnection *pub = tls_publisher_trusting(&n, g_certs.other_ca_text);
    register_and_route(&cr, pub, "recovered.example.com");
    ts_nats_close(pub);
    stop_clean(&cr);
    ts_nats_stop(&n);
    free(y);
}

int main(void)
{
    /* nats.c 3.4's nats_Close() (called by ts_finish) frees a libssl global
     * stack that OpenSSL's own atexit cleanup then frees again once libcurl
     * has initialised OpenSSL too: a segfault at exit. crouter does not use
     * libcurl, so only this process needs OpenSSL's atexit cleanup off. */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
    ts_init("nats_tls");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_over_tls_routes_traffic),
        cmocka_unit_test(test_tlsverify_requires_the_client_certificate),
        cmocka_unit_test(test_server_certificate_from_another_ca_is_refused_until_it_is_right),
    };
    return ts_finish(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
