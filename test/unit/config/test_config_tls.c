/* test/unit/config/test_config_tls.c - the TLS and PROXY protocol keys (issue 6).
 *
 * PEM values are generated per run (test/unit/router/certs.h) and written
 * into YAML block scalars; errors must name the key, e.g.
 * "tls_pem[0].cert_chain: invalid PEM".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "unit/router/certs.h"

static test_cert_t ca, leaf_a, leaf_b;
static char err[512];

static int setup(void **state)
{
    (void)state;
    ca = test_cert_make("ca", NULL, NULL);
    leaf_a = test_cert_make("a.example", "DNS:a.example", &ca);
    leaf_b = test_cert_make("b.example", "DNS:b.example", &ca);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_cert_free(&ca);
    test_cert_free(&leaf_a);
    test_cert_free(&leaf_b);
    return 0;
}

/* Appends pem as a YAML block scalar ("|\n" then each line indented). */
static void put_block(char *out, size_t cap, const char *pem, int indent)
{
    size_t len = strlen(out);
    len += (size_t)snprintf(out + len, cap - len, "|\n");
    const char *p = pem;
    while (*p && len < cap) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        len += (size_t)snprintf(out + len, cap - len, "%*s%.*s\n", indent, "", (int)n, p);
        p = nl ? nl + 1 : p + n;
    }
}

static void cat(char *out, size_t cap, const char *s)
{
    strncat(out, s, cap - strlen(out) - 1);
}

static cr_config_t *load(const char *yaml)
{
    err[0] = '\0';
    cr_config_t *cfg = cr_config_load_string(yaml, strlen(yaml), "t.yml", err, sizeof err);
    if (!cfg)
        fail_msg("load failed: %s", err);
    return cfg;
}

static void assert_load_fails(const char *yaml, const char *want)
{
    err[0] = '\0';
    cr_config_t *cfg = cr_config_load_string(yaml, strlen(yaml), "t.yml", err, sizeof err);
    if (cfg) {
        cr_config_destroy(cfg);
        fail_msg("load succeeded, wanted an error containing \"%s\"", want);
    }
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static void test_tls_defaults_follow_gorouter(void **state)
{
    (void)state;
    cr_config_t *cfg = cr_config_defaults();
    assert_false(cfg->enable_ssl);
    assert_int_equal(cfg->ssl_port, 443);
    assert_int_equal(cfg->tls_pem_len, 0);
    assert_int_equal(cfg->min_tls_version, 0x0303);
    assert_int_equal(cfg->max_tls_version, 0x0304);
    assert_int_equal(cfg->client_cert_validation, CR_CLIENT_CERT_REQUEST);
    assert_int_equal(cfg->forwarded_client_cert, CR_XFCC_ALWAYS_FORWARD);
    assert_false(cfg->disable_http);
    assert_string_equal(cfg->ca_certs, "");
    assert_false(cfg->skip_ssl_validation);
    assert_string_equal(cfg->backends_cert_chain, "");
    assert_false(cfg->enable_proxy);
    assert_non_null(strstr(cfg->cipher_suites, "ECDHE-RSA-AES128-GCM-SHA256"));
    cr_config_destroy(cfg);
}

static void test_every_tls_key_loads(void **state)
{
    (void)state;
    static char y[64 * 1024];
    y[0] = '\0';
    cat(y, sizeof y, "enable_ssl: true\nssl_port: 8443\ntls_pem:\n- cert_chain: ");
    put_block(y, sizeof y, leaf_a.cert_pem, 4);
    cat(y, sizeof y, "  private_key: ");
    put_block(y, sizeof y, leaf_a.key_pem, 4);
    cat(y, sizeof y, "- cert_chain: ");
    put_block(y, sizeof y, leaf_b.cert_pem, 4);
    cat(y, sizeof y, "  private_key: ");
    put_block(y, sizeof y, leaf_b.key_pem, 4);
    cat(y, sizeof y, "min_tls_version: TLSv1.3\nmax_tls_version: TLSv1.3\n"
                     "cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:ECDHE-ECDSA-AES256-GCM-SHA384\n"
                     "client_cert_validation: require\nforwarded_client_cert: sanitize_set\n"
                     "disable_http: true\nskip_ssl_validation: true\nenable_proxy: true\n"
                     "client_ca_certs: ");
    put_block(y, sizeof y, ca.cert_pem, 2);
    cat(y, sizeof y, "ca_certs:\n- ");
    put_block(y, sizeof y, ca.cert_pem, 2);
    cat(y, sizeof y, "- ");
    put_block(y, sizeof y, leaf_a.cert_pem, 2);
    cat(y, sizeof y, "backends:\n  max_conns: 5\n  cert_chain: ");
    put_block(y, sizeof y, leaf_b.cert_pem, 4);
    cat(y, sizeof y, "  private_key: ");
    put_block(y, sizeof y, leaf_b.key_pem, 4);
    cr_config_t *cfg = load(y);
    assert_true(cfg->enable_ssl);
    assert_int_equal(cfg->ssl_port, 8443);
    assert_int_equal(cfg->tls_pem_len, 2);
    assert_string_equal(cfg->tls_pem[0].cert_chain, leaf_a.cert_pem);
    assert_string_equal(cfg->tls_pem[1].private_key, leaf_b.key_pem);
    assert_int_equal(cfg->min_tls_version, 0x0304);
    assert_int_equal(cfg->client_cert_validation, CR_CLIENT_CERT_REQUIRE);
    assert_int_equal(cfg->forwarded_client_cert, CR_XFCC_SANITIZE_SET);
    assert_true(cfg->disable_http);
    assert_true(cfg->skip_ssl_validation);
    assert_true(cfg->enable_proxy);
    assert_string_equal(cfg->client_ca_certs, ca.cert_pem);
    /* The list is joined into one bundle holding both. */
    assert_non_null(strstr(cfg->ca_certs, ca.cert_pem));
    assert_non_null(strstr(cfg->ca_certs, leaf_a.cert_pem));
    assert_string_equal(cfg->backends_cert_chain, leaf_b.cert_pem);
    assert_string_equal(cfg->backends_private_key, leaf_b.key_pem);
    assert_int_equal(cfg->backends_max_conns, 5);
    assert_int_equal(cfg->warnings_len, 0);
    cr_config_destroy(cfg);
}

static void test_ca_certs_as_one_string(void **state)
{
    (void)state;
    static char y[16 * 1024];
    y[0] = '\0';
    cat(y, sizeof y, "ca_certs: ");
    put_block(y, sizeof y, ca.cert_pem, 2);
    cr_config_t *cfg = load(y);
    assert_string_equal(cfg->ca_certs, ca.cert_pem);
    cr_config_destroy(cfg);
}

static void test_bad_pem_names_the_key(void **state)
{
    (void)state;
    static char y[16 * 1024];
    assert_load_fails("ca_certs: [\"not a certificate\"]\n", "ca_certs: item 0: invalid PEM");
    assert_load_fails("ca_certs: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"\n",
                      "ca_certs: invalid PEM");
    assert_load_fails("client_ca_certs: junk\n", "client_ca_certs: invalid PEM");
    assert_load_fails("backends:\n  private_key: junk\n", "backends.private_key: invalid PEM");
    assert_load_fails("tls_pem:\n- cert_chain: junk\n  private_key: junk\n",
                      "tls_pem[0].cert_chain: invalid PEM");
    y[0] = '\0';
    cat(y, sizeof y, "tls_pem:\n- cert_chain: ");
    put_block(y, sizeof y, leaf_a.cert_pem, 4);
    cat(y, sizeof y, "  private_key: junk\n");
    assert_load_fails(y, "tls_pem[0].private_key: invalid PEM");
    y[0] = '\0';
    cat(y, sizeof y, "tls_pem:\n- cert_chain: ");
    put_block(y, sizeof y, leaf_a.cert_pem, 4);
    cat(y, sizeof y, "  private_key: ");
    put_block(y, sizeof y, leaf_b.key_pem, 4);
    assert_load_fails(y, "tls_pem[0].private_key: does not match");
    assert_load_fails("tls_pem:\n- cert_chain: x\n", "tls_pem[0].cert_chain: invalid PEM");
    assert_load_fails("tls_pem: {}\n", "tls_pem: expected a list");
}

static void test_tls_rules_between_keys(void **state)
{
    (void)state;
    static char y[16 * 1024];
    assert_load_fails("enable_ssl: true\n", "tls_pem: enable_ssl needs");
    assert_load_fails("disable_http: true\n", "disable_http: needs enable_ssl");
    assert_load_fails("min_tls_version: TLSv1.3\nmax_tls_version: TLSv1.2\n",
                      "min_tls_version: is above max_tls_version");
    y[0] = '\0';
    cat(y, sizeof y, "backends:\n  cert_chain: ");
    put_block(y, sizeof y, leaf_a.cert_pem, 4);
    assert_load_fails(y, "backends.private_key: backends.cert_chain and backends.private_key go together");
}

static void test_enumerated_values_are_checked(void **state)
{
    (void)state;
    assert_load_fails("min_tls_version: TLSv1.4\n", "min_tls_version: invalid TLS version \"TLSv1.4\"");
    assert_load_fails("client_cert_validation: maybe\n", "client_cert_validation: invalid value");
    assert_load_fails("forwarded_client_cert: always\n", "forwarded_client_cert: invalid value");
    assert_load_fails("cipher_suites: NOT-A-CIPHER\n", "cipher_suites: unknown cipher suite");
    assert_load_fails("cipher_suites: TLS_NOT_A_SUITE\n", "cipher_suites: unknown cipher suite");
    assert_load_fails("ssl_port: 70000\n", "ssl_port: 70000 is out of range");
    cr_config_t *cfg = load("min_tls_version: TLSv1.0\nclient_cert_validation: none\n"
                            "forwarded_client_cert: forward\n");
    assert_int_equal(cfg->min_tls_version, 0x0301);
    assert_int_equal(cfg->client_cert_validation, CR_CLIENT_CERT_NONE);
    assert_int_equal(cfg->forwarded_client_cert, CR_XFCC_FORWARD);
    cr_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_defaults_follow_gorouter),
        cmocka_unit_test(test_every_tls_key_loads),
        cmocka_unit_test(test_ca_certs_as_one_string),
        cmocka_unit_test(test_bad_pem_names_the_key),
        cmocka_unit_test(test_tls_rules_between_keys),
        cmocka_unit_test(test_enumerated_values_are_checked),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
