/* test/unit/config/test_config.c - YAML loading, defaults and validation.
 *
 * Inputs are small YAML strings loaded with the name "t.yml", so expected
 * error messages read "t.yml:<line>: <key>: ...". The two shipped configs
 * (config/crouter.yml, config/gorouter-example.yml) are found relative to
 * this source file, so the test needs no working directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#define S_NS 1000000000LL
#define MIB (1024u * 1024u)

static char err[512];

static cr_config_t *load(const char *yaml)
{
    memset(err, 'x', sizeof err - 1);
    err[sizeof err - 1] = '\0';
    cr_config_t *cfg = cr_config_load_string(yaml, strlen(yaml), "t.yml", err, sizeof err);
    if (!cfg)
        fail_msg("load failed: %s\n--- input ---\n%s", err, yaml);
    assert_string_equal(err, ""); /* cleared on success */
    return cfg;
}

/* Expects the load to fail with a message containing want. */
static void assert_load_fails(const char *yaml, const char *want)
{
    err[0] = '\0';
    cr_config_t *cfg = cr_config_load_string(yaml, strlen(yaml), "t.yml", err, sizeof err);
    if (cfg) {
        cr_config_destroy(cfg);
        fail_msg("load succeeded, wanted \"%s\"\n--- input ---\n%s", want, yaml);
    }
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static bool has_warning(const cr_config_t *cfg, const char *want)
{
    for (size_t i = 0; i < cfg->warnings_len; i++)
        if (strstr(cfg->warnings[i], want))
            return true;
    return false;
}

static uint32_t ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (uint32_t)n;
}

/* Path of a file in the repository's config/ folder. */
static void repo_config_path(char *out, size_t cap, const char *file)
{
    snprintf(out, cap, "%s", __FILE__);
    for (int up = 0; up < 4; up++) { /* test_config.c, config, unit, test */
        char *slash = strrchr(out, '/');
        assert_non_null(slash);
        *slash = '\0';
    }
    size_t len = strlen(out);
    snprintf(out + len, cap - len, "/config/%s", file);
}

static void assert_all_defaults(const cr_config_t *c)
{
    assert_int_equal(c->port, 8081);
    assert_int_equal(c->workers, ncpus());
    assert_true(c->workers >= 1);
    assert_int_equal(c->endpoint_timeout_ns, 60 * S_NS);
    assert_int_equal(c->endpoint_dial_timeout_ns, 5 * S_NS);
    assert_int_equal(c->frontend_idle_timeout_ns, 900 * S_NS);
    assert_int_equal(c->read_header_timeout_ns, 30 * S_NS);
    assert_int_equal(c->busy_poll_ns, 50 * 1000);
    assert_false(c->splice_request_bodies);
    assert_int_equal(c->max_request_header_bytes, MIB);
    assert_int_equal(c->max_request_headers, 200);
    assert_false(c->disable_keep_alives);
    assert_int_equal(c->backends_max_conns, 0);
    assert_int_equal(c->backends_max_attempts, 3);
    assert_int_equal(c->balancing_algorithm, CR_LB_ROUND_ROBIN);
    assert_false(c->empty_pool_response_code_503);
    assert_int_equal(c->empty_pool_timeout_ns, 0);
    assert_int_equal(c->drain_wait_ns, 0);
    assert_int_equal(c->drain_timeout_ns, 60 * S_NS);

    assert_int_equal(c->sticky_session_cookie_names_len, 1);
    assert_string_equal(c->sticky_session_cookie_names[0], "JSESSIONID");
    assert_false(c->sticky_sessions_for_auth_negotiate);
    assert_false(c->secure_cookies);

    assert_int_equal(c->nats_hosts_len, 1);
    assert_string_equal(c->nats_hosts[0].hostname, "localhost");
    assert_int_equal(c->nats_hosts[0].port, 4222);
    assert_string_equal(c->nats_user, "");
    assert_string_equal(c->nats_pass, "");
    assert_false(c->nats_tls_enabled);
    assert_string_equal(c->nats_ca_certs, "");
    assert_string_equal(c->nats_cert_chain, "");
    assert_string_equal(c->nats_private_key, "");
    assert_int_equal(c->droplet_stale_threshold_ns, 120 * S_NS);
    assert_int_equal(c->prune_stale_droplets_interval_ns, 30 * S_NS);
    assert_int_equal(c->start_response_delay_interval_ns, 5 * S_NS);
    assert_int_equal(c->publish_start_message_interval_ns, 30 * S_NS);
    assert_false(c->suspend_pruning_if_nats_unavailable);

    assert_string_equal(c->status_host, "0.0.0.0");
    assert_int_equal(c->status_port, 8080);
    assert_string_equal(c->status_user, "");
    assert_string_equal(c->status_pass, "");
    assert_int_equal(c->status_routes_port, 8082);

    assert_string_equal(c->access_log_file, "");
    assert_string_equal(c->logging_level, "info");
    assert_string_equal(c->pid_file, "");
    assert_int_equal(c->index, 0);
    assert_string_equal(c->zone, "");
    assert_int_equal(c->warnings_len, 0);
}

/* ---- defaults ----------------------------------------------------------- */

static void test_defaults_match_gorouter_with_crouter_differences(void **state)
{
    (void)state;
    cr_config_t *c = cr_config_defaults();
    assert_all_defaults(c);
    cr_config_destroy(c);
}

static void test_empty_or_comment_only_file_gives_all_defaults(void **state)
{
    (void)state;
    const char *inputs[] = {"", "\n\n", "# nothing here\n", "---\n", "--- ~\n", "null\n", "{}\n"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        cr_config_t *c = load(inputs[i]);
        assert_all_defaults(c);
        cr_config_destroy(c);
    }
}

static void test_null_value_keeps_the_default(void **state)
{
    (void)state;
    cr_config_t *c = load("port:\nendpoint_timeout: ~\nstatus:\nnats:\n  hosts: null\n"
                          "sticky_session_cookie_names:\nlogging:\n  level: NULL\n");
    assert_all_defaults(c);
    cr_config_destroy(c);
}

static void test_destroy_accepts_null(void **state)
{
    (void)state;
    cr_config_destroy(NULL);
}

/* ---- every key ---------------------------------------------------------- */

static void test_every_key_is_read_into_its_field(void **state)
{
    (void)state;
    cr_config_t *c = load("port: 80\n"
                          "workers: 3\n"
                          "endpoint_timeout: 2m\n"
                          "endpoint_dial_timeout: 250ms\n"
                          "frontend_idle_timeout: 1h\n"
                          "read_header_timeout: 7s\n"
                          "max_request_header_bytes: 65536\n"
                          "max_request_headers: 50\n"
                          "disable_keep_alives: true\n"
                          "backends:\n"
                          "  max_conns: 500\n"
                          "  max_attempts: 5\n"
                          "balancing_algorithm: least-connection\n"
                          "empty_pool_response_code_503: true\n"
                          "empty_pool_timeout: 10s\n"
                          "drain_wait: 20s\n"
                          "drain_timeout: 300s\n"
                          "sticky_session_cookie_names: [JSESSIONID, SESSION]\n"
                          "sticky_sessions_for_auth_negotiate: true\n"
                          "secure_cookies: yes\n"
                          "nats:\n"
                          "  user: nats-user\n"
                          "  pass: 'p@ss: word'\n"
                          "  hosts:\n"
                          "  - hostname: nats1.internal\n"
                          "    port: 4224\n"
                          "droplet_stale_threshold: 90s\n"
                          "prune_stale_droplets_interval: 0\n"
                          "start_response_delay_interval: 20s\n"
                          "publish_start_message_interval: 1m\n"
                          "suspend_pruning_if_nats_unavailable: true\n"
                          "status:\n"
                          "  host: 127.0.0.1\n"
                          "  port: 9080\n"
                          "  user: router-status\n"
                          "  pass: \"secret\"\n"
                          "  routes:\n"
                          "    port: 9082\n"
                          "access_log:\n"
                          "  file: /var/log/access.log\n"
                          "logging:\n"
                          "  level: warn\n"
                          "pid_file: /run/crouter.pid\n"
                          "index: 7\n"
                          "zone: z2\n");
    assert_int_equal(c->port, 80);
    assert_int_equal(c->workers, 3);
    assert_int_equal(c->endpoint_timeout_ns, 120 * S_NS);
    assert_int_equal(c->endpoint_dial_timeout_ns, 250 * 1000000LL);
    assert_int_equal(c->frontend_idle_timeout_ns, 3600 * S_NS);
    assert_int_equal(c->read_header_timeout_ns, 7 * S_NS);
    assert_int_equal(c->max_request_header_bytes, 65536);
    assert_int_equal(c->max_request_headers, 50);
    assert_true(c->disable_keep_alives);
    assert_int_equal(c->backends_max_conns, 500);
    assert_int_equal(c->backends_max_attempts, 5);
    assert_int_equal(c->balancing_algorithm, CR_LB_LEAST_CONNECTION);
    assert_true(c->empty_pool_response_code_503);
    assert_int_equal(c->empty_pool_timeout_ns, 10 * S_NS);
    assert_int_equal(c->drain_wait_ns, 20 * S_NS);
    assert_int_equal(c->drain_timeout_ns, 300 * S_NS);
    assert_int_equal(c->sticky_session_cookie_names_len, 2);
    assert_string_equal(c->sticky_session_cookie_names[0], "JSESSIONID");
    assert_string_equal(c->sticky_session_cookie_names[1], "SESSION");
    assert_true(c->sticky_sessions_for_auth_negotiate);
    assert_true(c->secure_cookies);
    assert_string_equal(c->nats_user, "nats-user");
    assert_string_equal(c->nats_pass, "p@ss: word");
    assert_int_equal(c->nats_hosts_len, 1);
    assert_string_equal(c->nats_hosts[0].hostname, "nats1.internal");
    assert_int_equal(c->nats_hosts[0].port, 4224);
    assert_int_equal(c->droplet_stale_threshold_ns, 90 * S_NS);
    assert_int_equal(c->prune_stale_droplets_interval_ns, 0);
    assert_int_equal(c->start_response_delay_interval_ns, 20 * S_NS);
    assert_int_equal(c->publish_start_message_interval_ns, 60 * S_NS);
    assert_true(c->suspend_pruning_if_nats_unavailable);
    assert_string_equal(c->status_host, "127.0.0.1");
    assert_int_equal(c->status_port, 9080);
    assert_string_equal(c->status_user, "router-status");
    assert_string_equal(c->status_pass, "secret");
    assert_int_equal(c->status_routes_port, 9082);
    assert_string_equal(c->access_log_file, "/var/log/access.log");
    assert_string_equal(c->logging_level, "warn");
    assert_string_equal(c->pid_file, "/run/crouter.pid");
    assert_int_equal(c->index, 7);
    assert_string_equal(c->zone, "z2");
    assert_int_equal(c->warnings_len, 0);
    cr_config_destroy(c);
}

static void test_every_logging_level_is_accepted(void **state)
{
    (void)state;
    const char *levels[] = {"debug", "info", "warn", "error", "fatal"};
    for (size_t i = 0; i < 5; i++) {
        char yaml[64];
        snprintf(yaml, sizeof yaml, "logging:\n  level: %s\n", levels[i]);
        cr_config_t *c = load(yaml);
        assert_string_equal(c->logging_level, levels[i]);
        cr_config_destroy(c);
    }
}

static void test_booleans_accept_true_false_yes_no_only(void **state)
{
    (void)state;
    const char *yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES"};
    const char *no[] = {"false", "False", "FALSE", "no", "No", "NO"};
    for (size_t i = 0; i < 6; i++) {
        char yaml[64];
        snprintf(yaml, sizeof yaml, "secure_cookies: %s\n", yes[i]);
        cr_config_t *c = load(yaml);
        assert_true(c->secure_cookies);
        cr_config_destroy(c);
        snprintf(yaml, sizeof yaml, "disable_keep_alives: %s\n", no[i]);
        c = load(yaml);
        assert_false(c->disable_keep_alives);
        cr_config_destroy(c);
    }
    assert_load_fails("secure_cookies: maybe\n", "t.yml:1: secure_cookies: expected true or false");
    assert_load_fails("secure_cookies: 1\n", "secure_cookies: expected true or false");
    assert_load_fails("secure_cookies: \"true\"\n", "secure_cookies: expected true or false, got the string");
    assert_load_fails("secure_cookies: [true]\n", "secure_cookies: expected true or false, got a list");
}

static void test_integers_accept_hex_and_plus_sign(void **state)
{
    (void)state;
    cr_config_t *c = load("port: 0x1F90\nindex: +4\nworkers: 0o10\n");
    assert_int_equal(c->port, 8080);
    assert_int_equal(c->index, 4);
    assert_int_equal(c->workers, 8);
    cr_config_destroy(c);
}

static void test_durations_accept_bare_zero_and_quoted_strings(void **state)
{
    (void)state;
    cr_config_t *c = load("drain_wait: 0\nempty_pool_timeout: \"1m30s\"\nendpoint_timeout: '0'\n"
                          "droplet_stale_threshold: 1.5m\n");
    assert_int_equal(c->drain_wait_ns, 0);
    assert_int_equal(c->empty_pool_timeout_ns, 90 * S_NS);
    assert_int_equal(c->endpoint_timeout_ns, 0);
    assert_int_equal(c->droplet_stale_threshold_ns, 90 * S_NS);
    cr_config_destroy(c);
}

/* ---- errors ------------------------------------------------------------- */

static void test_string_for_a_port_names_file_line_and_key(void **state)
{
    (void)state;
    assert_load_fails("index: 1\nport: abc\n", "t.yml:2: port: expected an integer, got \"abc\"");
    assert_load_fails("status:\n  port: \"8080\"\n", "t.yml:2: status.port: expected an integer, got the string");
    assert_load_fails("status:\n  routes:\n    port: {a: 1}\n", "t.yml:3: status.routes.port: expected an integer, got a map");
    assert_load_fails("port: 80.5\n", "t.yml:1: port: expected an integer");
}

static void test_port_above_65535_is_rejected(void **state)
{
    (void)state;
    assert_load_fails("port: 65536\n", "t.yml:1: port: 65536 is out of range (0..65535)");
    assert_load_fails("status:\n  port: 99999999999999999999999\n", "t.yml:2: status.port:");
    cr_config_t *c = load("port: 65535\n");
    assert_int_equal(c->port, 65535);
    cr_config_destroy(c);
}

static void test_negative_numbers_are_rejected(void **state)
{
    (void)state;
    assert_load_fails("port: -1\n", "t.yml:1: port: -1 is out of range");
    assert_load_fails("workers: -2\n", "t.yml:1: workers: -2 is out of range");
    assert_load_fails("backends:\n  max_attempts: -1\n", "t.yml:2: backends.max_attempts: -1 is out of range");
    assert_load_fails("backends:\n  max_conns: -5\n", "t.yml:2: backends.max_conns:");
    assert_load_fails("max_request_header_bytes: -1\n", "t.yml:1: max_request_header_bytes:");
    assert_load_fails("index: -9223372036854775809\n", "t.yml:1: index:");
}

static void test_invalid_duration_names_key_line_and_value(void **state)
{
    (void)state;
    assert_load_fails("port: 80\n\nendpoint_timeout: 5x\n", "t.yml:3: endpoint_timeout: invalid duration \"5x\"");
    assert_load_fails("drain_timeout: \"\"\n", "t.yml:1: drain_timeout: invalid duration \"\"");
    assert_load_fails("drain_wait: true\n", "t.yml:1: drain_wait: invalid duration");
    assert_load_fails("drain_wait: [1s]\n", "t.yml:1: drain_wait: expected a duration");
    assert_load_fails("droplet_stale_threshold: 1e3s\n", "droplet_stale_threshold: invalid duration");
}

static void test_bare_nonzero_number_is_not_a_duration(void **state)
{
    (void)state;
    assert_load_fails("endpoint_timeout: 60\n", "t.yml:1: endpoint_timeout: invalid duration 60");
    assert_load_fails("endpoint_timeout: 1.5\n", "t.yml:1: endpoint_timeout: invalid duration");
    assert_load_fails("drain_wait: -0x10\n", "t.yml:1: drain_wait: invalid duration");
}

static void test_negative_duration_is_rejected(void **state)
{
    (void)state;
    assert_load_fails("endpoint_timeout: -5s\n", "t.yml:1: endpoint_timeout: duration must not be negative");
}

static void test_invalid_balancing_algorithm_is_rejected(void **state)
{
    (void)state;
    assert_load_fails("balancing_algorithm: random\n",
                      "t.yml:1: balancing_algorithm: invalid balancing algorithm \"random\"");
    assert_load_fails("balancing_algorithm: [round-robin]\n", "t.yml:1: balancing_algorithm: expected a string");
}

static void test_invalid_logging_level_is_rejected(void **state)
{
    (void)state;
    assert_load_fails("logging:\n  level: verbose\n", "t.yml:2: logging.level: invalid level \"verbose\"");
    assert_load_fails("logging:\n  level: INFO\n", "t.yml:2: logging.level: invalid level");
    assert_load_fails("logging:\n  level: warning\n", "logging.level: invalid level");
}

static void test_map_where_a_list_is_expected_is_rejected(void **state)
{
    (void)state;
    assert_load_fails("sticky_session_cookie_names:\n  a: b\n",
                      "t.yml:2: sticky_session_cookie_names: expected a list of cookie names, got a map");
    assert_load_fails("sticky_session_cookie_names: JSESSIONID\n", "t.yml:1: sticky_session_cookie_names: expected a list");
    assert_load_fails("nats:\n  hosts:\n    hostname: x\n", "t.yml:3: nats.hosts: expected a list");
}

static void test_scalar_or_list_where_a_section_is_expected_is_rejected(void **state)
{
    (void)state;
    assert_load_fails("status: 8080\n", "t.yml:1: status: expected a map, got \"8080\"");
    assert_load_fails("backends: []\n", "t.yml:1: backends: expected a map, got a list");
    assert_load_fails("status:\n  routes: 8082\n", "t.yml:2: status.routes: expected a map");
    /* gorouter's pre-2016 format listed NATS servers directly under nats. */
    assert_load_fails("nats:\n- host: 127.0.0.1\n  port: 4222\n", "t.yml:2: nats: expected a map, got a list");
}

static void test_strings_reject_maps_and_nul_bytes(void **state)
{
    (void)state;
    assert_load_fails("zone: {a: 1}\n", "t.yml:1: zone: expected a string, got a map");
    assert_load_fails("pid_file: \"/run/x\\0y\"\n", "t.yml:1: pid_file: string contains a NUL byte");
    cr_config_t *c = load("zone: 3\nstatus:\n  pass: 12345\n");
    assert_string_equal(c->zone, "3"); /* like yaml.v3, any scalar fills a string */
    assert_string_equal(c->status_pass, "12345");
    cr_config_destroy(c);
}

static void test_yaml_syntax_error_names_the_line(void **state)
{
    (void)state;
    assert_load_fails("port: 80\nstatus:\n  port: [8080\n", "t.yml:");
    assert_load_fails("port: 80\nindex: 1\n  bad: indent\n", "t.yml:3: invalid YAML");
    assert_load_fails("a: \"unterminated\n", "invalid YAML");
    assert_load_fails("\t- tab\n", "invalid YAML");
}

static void test_top_level_must_be_a_map(void **state)
{
    (void)state;
    assert_load_fails("just a string\n", "t.yml:1: the top level must be a map of keys");
    assert_load_fails("- port: 80\n", "t.yml:1: the top level must be a map of keys, got a list");
}

static void test_duplicate_key_is_rejected_with_both_lines(void **state)
{
    (void)state;
    assert_load_fails("port: 80\nindex: 1\nport: 81\n", "t.yml:3: (top level): mapping key \"port\" already defined at line 1");
    assert_load_fails("status:\n  port: 1\n  user: a\n  port: 2\n", "t.yml:4: status: mapping key \"port\" already defined at line 2");
}

static void test_error_buffer_may_be_small_or_absent(void **state)
{
    (void)state;
    char small[8];
    assert_null(cr_config_load_string("port: x\n", 8, "t.yml", small, sizeof small));
    assert_string_equal(small, "t.yml:1");
    assert_null(cr_config_load_string("port: x\n", 8, "t.yml", NULL, 0));
    assert_null(cr_config_load_string("port: x\n", 8, "t.yml", small, 0));
}

/* ---- unknown keys ------------------------------------------------------- */

static void test_unknown_key_is_a_warning_not_an_error(void **state)
{
    (void)state;
    cr_config_t *c = load("port: 80\n"
                          "router_group: \"\"\n"
                          "route_services_secret: s3cret\n"
                          "status:\n"
                          "  tls:\n"
                          "    port: 8443\n"
                          "  routes:\n"
                          "    port: 9082\n"
                          "    tls: false\n"
                          "oauth:\n"
                          "- cert_chain: abc\n"
                          "  private_key: def\n");
    assert_int_equal(c->port, 80);
    assert_int_equal(c->status_routes_port, 9082);
    assert_int_equal(c->warnings_len, 5);
    assert_string_equal(c->warnings[0], "unknown key 'router_group' (line 2)");
    assert_string_equal(c->warnings[1], "unknown key 'route_services_secret' (line 3)");
    assert_string_equal(c->warnings[2], "unknown key 'status.tls.port' (line 6)");
    assert_string_equal(c->warnings[3], "unknown key 'status.routes.tls' (line 9)");
    assert_string_equal(c->warnings[4], "unknown key 'oauth' (line 10)");
    cr_config_destroy(c);
}

static void test_deep_unknown_maps_and_lists_do_not_crash(void **state)
{
    (void)state;
    char yaml[8192];
    size_t o = 0;
    o += (size_t)snprintf(yaml + o, sizeof yaml - o, "deep:\n");
    for (int i = 1; i < 40; i++)
        o += (size_t)snprintf(yaml + o, sizeof yaml - o, "%*sk%d:\n", i * 2, "", i);
    o += (size_t)snprintf(yaml + o, sizeof yaml - o, "%*sleaf: [1, [2, [3, {a: [b]}]]]\n", 80, "");
    snprintf(yaml + o, sizeof yaml - o, "flow: [[[[[[[[[[{}]]]]]]]]]]\nport: 99\n");
    cr_config_t *c = load(yaml);
    assert_int_equal(c->port, 99);
    assert_true(has_warning(c, "unknown key 'deep.k1.k2."));
    assert_true(has_warning(c, "unknown key 'flow'"));
    cr_config_destroy(c);
}

static void test_dotted_key_cannot_spoof_a_nested_key(void **state)
{
    (void)state;
    cr_config_t *c = load("\"status.port\": 1\n");
    assert_int_equal(c->status_port, 8080);
    assert_true(has_warning(c, "unknown key 'status.port' (line 1)"));
    cr_config_destroy(c);
}

static void test_warnings_are_capped(void **state)
{
    (void)state;
    size_t cap = 400 * 16;
    char *yaml = malloc(cap);
    size_t o = 0;
    for (int i = 0; i < 400; i++)
        o += (size_t)snprintf(yaml + o, cap - o, "unknown%d: 1\n", i);
    cr_config_t *c = load(yaml);
    assert_true(c->warnings_len > 100 && c->warnings_len <= 201);
    assert_true(has_warning(c, "are not reported"));
    cr_config_destroy(c);
    free(yaml);
}

/* ---- lists -------------------------------------------------------------- */

static void test_nats_hosts_list_is_read_in_order(void **state)
{
    (void)state;
    cr_config_t *c = load("nats:\n"
                          "  hosts:\n"
                          "  - hostname: 10.0.0.1\n"
                          "    port: 4222\n"
                          "  - {hostname: nats.internal, port: 4224}\n"
                          "  - hostname: no-port.internal\n");
    assert_int_equal(c->nats_hosts_len, 3);
    assert_string_equal(c->nats_hosts[0].hostname, "10.0.0.1");
    assert_int_equal(c->nats_hosts[0].port, 4222);
    assert_string_equal(c->nats_hosts[1].hostname, "nats.internal");
    assert_int_equal(c->nats_hosts[1].port, 4224);
    assert_string_equal(c->nats_hosts[2].hostname, "no-port.internal");
    assert_int_equal(c->nats_hosts[2].port, 4222); /* NATS's standard port */
    cr_config_destroy(c);
}

static void test_nats_host_errors_name_the_item(void **state)
{
    (void)state;
    assert_load_fails("nats:\n  hosts:\n  - port: 4222\n", "t.yml:3: nats.hosts[0]: hostname is missing");
    assert_load_fails("nats:\n  hosts:\n  - hostname: a\n  - hostname: b\n    port: 70000\n",
                      "t.yml:5: nats.hosts[1].port: 70000 is out of range (1..65535)");
    assert_load_fails("nats:\n  hosts:\n  - hostname: a\n    port: 0\n", "nats.hosts[0].port: 0 is out of range");
    assert_load_fails("nats:\n  hosts:\n  - nats.internal:4222\n", "t.yml:3: nats.hosts[0]: expected a map");
    assert_load_fails("nats:\n  hosts: []\n", "t.yml:2: nats.hosts: must list at least one host");
    assert_load_fails("nats:\n  hosts:\n  - hostname: [a]\n", "t.yml:3: nats.hosts[0].hostname: expected a string");
}

static void test_nats_tls_keys_take_pem_block_scalars(void **state)
{
    (void)state;
    cr_config_t *c = load("nats:\n"
                          "  tls_enabled: true\n"
                          "  ca_certs: |\n"
                          "    -----BEGIN CERTIFICATE-----\n"
                          "    MIIBca\n"
                          "    -----END CERTIFICATE-----\n"
                          "  cert_chain: |\n"
                          "    -----BEGIN CERTIFICATE-----\n"
                          "    MIIBcc\n"
                          "    -----END CERTIFICATE-----\n"
                          "  private_key: |\n"
                          "    -----BEGIN PRIVATE KEY-----\n"
                          "    MIIBpk\n"
                          "    -----END PRIVATE KEY-----\n"
                          "  hosts:\n"
                          "  - hostname: 127.0.0.1\n");
    assert_true(c->nats_tls_enabled);
    assert_string_equal(c->nats_ca_certs, "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n");
    assert_string_equal(c->nats_cert_chain, "-----BEGIN CERTIFICATE-----\nMIIBcc\n-----END CERTIFICATE-----\n");
    assert_string_equal(c->nats_private_key, "-----BEGIN PRIVATE KEY-----\nMIIBpk\n-----END PRIVATE KEY-----\n");
    assert_int_equal(c->warnings_len, 0);
    cr_config_destroy(c);
    assert_load_fails("nats:\n  tls_enabled: yes please\n", "t.yml:2: nats.tls_enabled");
}

static void test_nats_host_unknown_key_is_a_warning(void **state)
{
    (void)state;
    cr_config_t *c = load("nats:\n  hosts:\n  - hostname: a\n    tls: true\n");
    assert_true(has_warning(c, "unknown key 'nats.hosts[0].tls' (line 4)"));
    cr_config_destroy(c);
}

static void test_cookie_names_list_replaces_the_default(void **state)
{
    (void)state;
    cr_config_t *c = load("sticky_session_cookie_names:\n- SESSION\n- JSESSIONID\n- SESSION\n");
    assert_int_equal(c->sticky_session_cookie_names_len, 2); /* a set, as in gorouter */
    assert_string_equal(c->sticky_session_cookie_names[0], "SESSION");
    assert_string_equal(c->sticky_session_cookie_names[1], "JSESSIONID");
    cr_config_destroy(c);

    c = load("sticky_session_cookie_names: []\n");
    assert_int_equal(c->sticky_session_cookie_names_len, 0);
    cr_config_destroy(c);

    assert_load_fails("sticky_session_cookie_names:\n- A\n- [B]\n",
                      "t.yml:3: sticky_session_cookie_names: item 1: expected a non-empty cookie name, got a list");
    assert_load_fails("sticky_session_cookie_names: [\"\"]\n", "sticky_session_cookie_names: item 0:");
    assert_load_fails("sticky_session_cookie_names: [~]\n", "item 0: expected a non-empty cookie name, got null");
}

/* ---- derived values ----------------------------------------------------- */

static void test_max_request_header_bytes_zero_or_huge_becomes_one_mib(void **state)
{
    (void)state;
    const char *inputs[] = {"max_request_header_bytes: 0\n", "max_request_header_bytes: 2097152\n",
                            "max_request_header_bytes: 5000000000\n",
                            "max_request_header_bytes: 99999999999999999999999\n"};
    for (size_t i = 0; i < 4; i++) {
        cr_config_t *c = load(inputs[i]);
        assert_int_equal(c->max_request_header_bytes, MIB);
        cr_config_destroy(c);
    }
    cr_config_t *c = load("max_request_header_bytes: 1048575\n");
    assert_int_equal(c->max_request_header_bytes, MIB - 1);
    cr_config_destroy(c);
}

static void test_zero_limits_take_their_defaults(void **state)
{
    (void)state;
    cr_config_t *c = load("max_request_headers: 0\nbackends:\n  max_attempts: 0\nworkers: 0\n");
    assert_int_equal(c->max_request_headers, 200);
    assert_int_equal(c->backends_max_attempts, 1);
    assert_int_equal(c->workers, ncpus());
    cr_config_destroy(c);
}

static void test_stale_threshold_is_raised_to_start_response_delay(void **state)
{
    (void)state;
    cr_config_t *c = load("droplet_stale_threshold: 10s\nstart_response_delay_interval: 20s\n");
    assert_int_equal(c->droplet_stale_threshold_ns, 20 * S_NS);
    cr_config_destroy(c);
    c = load("droplet_stale_threshold: 30s\nstart_response_delay_interval: 20s\n");
    assert_int_equal(c->droplet_stale_threshold_ns, 30 * S_NS);
    cr_config_destroy(c);
}

static void test_drain_timeout_zero_follows_endpoint_timeout(void **state)
{
    (void)state;
    cr_config_t *c = load("endpoint_timeout: 15s\n");
    assert_int_equal(c->drain_timeout_ns, 15 * S_NS);
    cr_config_destroy(c);
    c = load("endpoint_timeout: 15s\ndrain_timeout: 0\n");
    assert_int_equal(c->drain_timeout_ns, 15 * S_NS);
    cr_config_destroy(c);
}

static void test_splice_request_bodies_is_a_bool(void **state)
{
    (void)state;
    cr_config_t *c = load("splice_request_bodies: true\n");
    assert_true(c->splice_request_bodies);
    cr_config_destroy(c);
    assert_load_fails("splice_request_bodies: often\n", "t.yml:1: splice_request_bodies: expected true or false");
}

static void test_busy_poll_is_a_duration_of_at_most_1ms(void **state)
{
    (void)state;
    cr_config_t *c = load("busy_poll: 200us\n");
    assert_int_equal(c->busy_poll_ns, 200 * 1000);
    cr_config_destroy(c);
    c = load("busy_poll: 0\n");
    assert_int_equal(c->busy_poll_ns, 0);
    cr_config_destroy(c);
    c = load("busy_poll: 1ms\n");
    assert_int_equal(c->busy_poll_ns, 1000 * 1000);
    cr_config_destroy(c);
    assert_load_fails("busy_poll: 2ms\n", "t.yml:1: busy_poll: duration must be at most 1000 us (\"2ms\")");
    assert_load_fails("busy_poll: -1us\n", "t.yml:1: busy_poll: duration must not be negative (\"-1us\")");
}

/* ---- YAML features ------------------------------------------------------ */

static void test_anchors_aliases_and_merge_keys_work(void **state)
{
    (void)state;
    cr_config_t *c = load("x-timeouts: &t 45s\n"
                          "endpoint_timeout: *t\n"
                          "status: &st\n"
                          "  port: 9000\n"
                          "  user: u\n"
                          "backends:\n"
                          "  <<: {max_conns: 10, max_attempts: 4}\n"
                          "  max_attempts: 2\n");
    assert_int_equal(c->endpoint_timeout_ns, 45 * S_NS);
    assert_int_equal(c->status_port, 9000);
    assert_int_equal(c->backends_max_conns, 10);
    assert_int_equal(c->backends_max_attempts, 2); /* own key overrides the merge */
    assert_true(has_warning(c, "unknown key 'x-timeouts'"));
    cr_config_destroy(c);

    assert_load_fails("port: *nope\n", "t.yml:1: unknown anchor 'nope'");
    assert_load_fails("a: &a [*a]\n", "unknown anchor 'a'");
}

static void test_alias_bomb_fails_quickly(void **state)
{
    (void)state;
    /* Each level merges the previous one ten times: 10^9 pairs if expanded. */
    char yaml[4096];
    size_t o = (size_t)snprintf(yaml, sizeof yaml, "a0: &a0 {x: 1}\n");
    for (int i = 1; i < 10; i++)
        o += (size_t)snprintf(yaml + o, sizeof yaml - o,
                              "a%d: &a%d {<<: [*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d]}\n", i, i,
                              i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    snprintf(yaml + o, sizeof yaml - o, "status: *a9\n");
    err[0] = '\0';
    cr_config_t *c = cr_config_load_string(yaml, strlen(yaml), "t.yml", err, sizeof err);
    assert_null(c);
    assert_non_null(strstr(err, "t.yml:"));
}

static void test_only_the_first_document_counts(void **state)
{
    (void)state;
    cr_config_t *c = load("port: 1\n---\nport: 2\n");
    assert_int_equal(c->port, 1);
    cr_config_destroy(c);
}

static void test_load_string_respects_the_length(void **state)
{
    (void)state;
    const char *yaml = "port: 1234\nport: 1\n";
    cr_config_t *c = cr_config_load_string(yaml, 10, "t.yml", err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->port, 1234);
    cr_config_destroy(c);
}

/* ---- files -------------------------------------------------------------- */

static void test_gorouter_example_loads_with_warnings(void **state)
{
    (void)state;
    char path[4096];
    repo_config_path(path, sizeof path, "gorouter-example.yml");
    cr_config_t *c = cr_config_load_file(path, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(c->port, 80);
    assert_int_equal(c->index, 2);
    assert_string_equal(c->zone, "z1");
    assert_string_equal(c->status_user, "router-status");
    assert_int_equal(c->status_routes_port, 8082);
    assert_int_equal(c->nats_hosts_len, 2);
    assert_string_equal(c->nats_hosts[0].hostname, "nats.service.cf.internal");
    assert_int_equal(c->nats_hosts[1].port, 4224);
    assert_string_equal(c->nats_user, "nats");
    assert_int_equal(c->balancing_algorithm, CR_LB_LEAST_CONNECTION);
    assert_int_equal(c->endpoint_timeout_ns, 900 * S_NS);
    assert_int_equal(c->read_header_timeout_ns, 0);
    assert_int_equal(c->drain_wait_ns, 20 * S_NS);
    assert_int_equal(c->backends_max_conns, 500);
    assert_int_equal(c->sticky_session_cookie_names_len, 2);
    assert_true(c->suspend_pruning_if_nats_unavailable);
    assert_string_equal(c->access_log_file, "/var/vcap/sys/log/gorouter/access.log");
    assert_false(has_warning(c, "tls_pem"));
    assert_int_equal(c->tls_pem_len, 0);
    assert_int_equal(c->forwarded_client_cert, CR_XFCC_SANITIZE_SET);
    assert_true(has_warning(c, "unknown key 'route_services_secret'"));
    assert_true(has_warning(c, "unknown key 'router_group'"));
    assert_true(has_warning(c, "unknown key 'status.tls.port'"));
    assert_true(has_warning(c, "unknown key 'tracing.enable_zipkin'"));
    assert_false(has_warning(c, "nats.tls_enabled"));
    assert_true(c->nats_tls_enabled);
    assert_non_null(strstr(c->nats_ca_certs, "-----BEGIN CERTIFICATE-----\n"));
    assert_string_equal(c->nats_cert_chain, "");
    assert_false(has_warning(c, "more than"));
    cr_config_destroy(c);
}

static void test_shipped_crouter_yml_loads_without_warnings(void **state)
{
    (void)state;
    char path[4096];
    repo_config_path(path, sizeof path, "crouter.yml");
    cr_config_t *c = cr_config_load_file(path, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(c->warnings_len, 0);
    assert_int_equal(c->port, 8081);
    assert_string_equal(c->status_host, "127.0.0.1");
    assert_int_equal(c->status_port, 8080);
    assert_string_equal(c->status_user, "admin");
    assert_string_equal(c->status_pass, "admin");
    assert_int_equal(c->status_routes_port, 8082);
    assert_int_equal(c->nats_hosts_len, 1);
    assert_string_equal(c->nats_hosts[0].hostname, "127.0.0.1");
    assert_int_equal(c->nats_hosts[0].port, 4222);
    assert_string_equal(c->logging_level, "info");
    assert_int_equal(c->workers, ncpus());
    cr_config_destroy(c);
}

static void test_missing_file_error_names_the_path(void **state)
{
    (void)state;
    err[0] = '\0';
    assert_null(cr_config_load_file("/nonexistent/crouter.yml", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/crouter.yml: cannot open"));
}

static void test_file_errors_use_the_path_as_name(void **state)
{
    (void)state;
    char path[] = "/tmp/crouter-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *yaml = "port: 80\nendpoint_timeout: 5x\n";
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    err[0] = '\0';
    assert_null(cr_config_load_file(path, err, sizeof err));
    char want[128];
    snprintf(want, sizeof want, "%s:2: endpoint_timeout: invalid duration \"5x\"", path);
    assert_string_equal(err, want);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_match_gorouter_with_crouter_differences),
        cmocka_unit_test(test_empty_or_comment_only_file_gives_all_defaults),
        cmocka_unit_test(test_null_value_keeps_the_default),
        cmocka_unit_test(test_destroy_accepts_null),
        cmocka_unit_test(test_every_key_is_read_into_its_field),
        cmocka_unit_test(test_every_logging_level_is_accepted),
        cmocka_unit_test(test_booleans_accept_true_false_yes_no_only),
        cmocka_unit_test(test_integers_accept_hex_and_plus_sign),
        cmocka_unit_test(test_durations_accept_bare_zero_and_quoted_strings),
        cmocka_unit_test(test_string_for_a_port_names_file_line_and_key),
        cmocka_unit_test(test_port_above_65535_is_rejected),
        cmocka_unit_test(test_negative_numbers_are_rejected),
        cmocka_unit_test(test_invalid_duration_names_key_line_and_value),
        cmocka_unit_test(test_bare_nonzero_number_is_not_a_duration),
        cmocka_unit_test(test_negative_duration_is_rejected),
        cmocka_unit_test(test_invalid_balancing_algorithm_is_rejected),
        cmocka_unit_test(test_invalid_logging_level_is_rejected),
        cmocka_unit_test(test_map_where_a_list_is_expected_is_rejected),
        cmocka_unit_test(test_scalar_or_list_where_a_section_is_expected_is_rejected),
        cmocka_unit_test(test_strings_reject_maps_and_nul_bytes),
        cmocka_unit_test(test_yaml_syntax_error_names_the_line),
        cmocka_unit_test(test_top_level_must_be_a_map),
        cmocka_unit_test(test_duplicate_key_is_rejected_with_both_lines),
        cmocka_unit_test(test_error_buffer_may_be_small_or_absent),
        cmocka_unit_test(test_unknown_key_is_a_warning_not_an_error),
        cmocka_unit_test(test_deep_unknown_maps_and_lists_do_not_crash),
        cmocka_unit_test(test_dotted_key_cannot_spoof_a_nested_key),
        cmocka_unit_test(test_warnings_are_capped),
        cmocka_unit_test(test_nats_hosts_list_is_read_in_order),
        cmocka_unit_test(test_nats_host_errors_name_the_item),
        cmocka_unit_test(test_nats_host_unknown_key_is_a_warning),
        cmocka_unit_test(test_nats_tls_keys_take_pem_block_scalars),
        cmocka_unit_test(test_cookie_names_list_replaces_the_default),
        cmocka_unit_test(test_max_request_header_bytes_zero_or_huge_becomes_one_mib),
        cmocka_unit_test(test_zero_limits_take_their_defaults),
        cmocka_unit_test(test_stale_threshold_is_raised_to_start_response_delay),
        cmocka_unit_test(test_drain_timeout_zero_follows_endpoint_timeout),
        cmocka_unit_test(test_busy_poll_is_a_duration_of_at_most_1ms),
        cmocka_unit_test(test_splice_request_bodies_is_a_bool),
        cmocka_unit_test(test_anchors_aliases_and_merge_keys_work),
        cmocka_unit_test(test_alias_bomb_fails_quickly),
        cmocka_unit_test(test_only_the_first_document_counts),
        cmocka_unit_test(test_load_string_respects_the_length),
        cmocka_unit_test(test_gorouter_example_loads_with_warnings),
        cmocka_unit_test(test_shipped_crouter_yml_loads_without_warnings),
        cmocka_unit_test(test_missing_file_error_names_the_path),
        cmocka_unit_test(test_file_errors_use_the_path_as_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
