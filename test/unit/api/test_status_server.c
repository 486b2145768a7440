/* test/unit/api/test_status_server.c - the status API over real loopback HTTP.
 *
 * Starts the status server on ephemeral ports with a registry populated
 * directly (no NATS, no router) and checks each endpoint with libcurl:
 * health, basic auth, the exact /routes JSON, /varz, /metrics, the routes
 * listener's address, and 404s.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "api/status_server.h"
#include "common/defs.h"

#define USER "router-status"
#define PASS "s3cret:pa ss"

typedef struct fixture {
    cr_config_t cfg;
    cr_registry_t *reg;
    cr_status_server_t *srv;
} fixture_t;

typedef struct reply {
    long status;
    char *body;                   /* owned, NUL-terminated */
    size_t body_len;
    char *headers;                /* owned, raw header block */
    size_t headers_len;
} reply_t;

static size_t append(char **dst, size_t *len, const char *src, size_t n)
{
    *dst = realloc(*dst, *len + n + 1);
    memcpy(*dst + *len, src, n);
    *len += n;
    (*dst)[*len] = '\0';
    return n;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    reply_t *r = arg;
    return append(&r->body, &r->body_len, p, size * n);
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    reply_t *r = arg;
    return append(&r->headers, &r->headers_len, p, size * n);
}

/* GETs http://127.0.0.1:port/path, with basic auth when userpwd is set. */
static reply_t get(uint16_t port, const char *path, const char *userpwd)
{
    reply_t r = {0};
    append(&r.body, &r.body_len, "", 0);
    append(&r.headers, &r.headers_len, "", 0);
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)port, path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (userpwd) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, userpwd);
    }
    CURLcode rc = curl_easy_perform(c);
    assert_int_equal(rc, CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    return r;
}

static void reply_free(reply_t *r)
{
    free(r->body);
    free(r->headers);
}

static void register_ep(cr_registry_t *reg, cr_register_msg_t *m, const char *uri)
{
    char *uris[1] = {(char *)uri};
    m->uris = uris;
    m->uris_len = 1;
    assert_int_equal(cr_registry_register(reg, m, 1000), 0);
}

static void populate(cr_registry_t *reg)
{
    cr_register_msg_t m = {.host = "10.0.0.4", .port = 80, .lb_algo = -1};
    register_ep(reg, &m, "*.wild.com");

    m = (cr_register_msg_t){.host = "10.0.0.1", .port = 8080, .private_instance_id = "id-1",
                            .availability_zone = "z1", .lb_algo = -1};
    register_ep(reg, &m, "App1.Example.com");

    m = (cr_register_msg_t){.host = "10.0.0.2", .port = 8080, .has_tags = true, .lb_algo = -1};
    register_ep(reg, &m, "app1.example.com");

    cr_tag_t tags[2] = {{.key = "component", .value = "x"}, {.key = "a", .value = "<b&>"}};
    m = (cr_register_msg_t){.host = "10.0.0.3",
                            .port = 9000,
                            .tls_port = 9443,
                            .private_instance_id = "id-3",
                            .route_service_url = "https://rs.example.com",
                            .server_cert_domain_san = "san",
                            .isolation_segment = "seg",
                            .tags = tags,
                            .tags_len = 2,
                            .has_tags = true,
                            .stale_threshold_in_seconds = 60,
                            .lb_algo = CR_LB_LEAST_CONNECTION};
    register_ep(reg, &m, "app2.example.com/path");
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->cfg.status_host = "127.0.0.1";
    f->cfg.status_port = 0;
    f->cfg.status_routes_port = 0;
    f->cfg.status_user = USER;
    f->cfg.status_pass = PASS;
    f->cfg.index = 2;
    f->cfg.start_response_delay_interval_ns = 0;
    f->cfg.droplet_stale_threshold_ns = 120 * CR_NS_PER_SEC;

    cr_registry_options_t opts = {.droplet_stale_threshold_ns = 120 * CR_NS_PER_SEC,
                                  .default_lb_algo = CR_LB_ROUND_ROBIN};
    f->reg = cr_registry_create(&opts);
    assert_non_null(f->reg);
    populate(f->reg);

    char err[256] = "";
    cr_status_sources_t src = {.cfg = &f->cfg, .registry = f->reg};
    f->srv = cr_status_server_start(&src, err, sizeof err);
    if (!f->srv)
        fprintf(stderr, "start failed: %s\n", err);
    assert_non_null(f->srv);
    assert_int_not_equal(cr_status_server_port(f->srv), 0);
    assert_int_not_equal(cr_status_server_routes_port(f->srv), 0);
    assert_int_not_equal(cr_status_server_port(f->srv), cr_status_server_routes_port(f->srv));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cr_status_server_stop(f->srv);
    cr_registry_destroy(f->reg);
    free(f);
    return 0;
}

static const char expected_routes[] =
    "{\"*.wild.com\":[{\"address\":\"10.0.0.4:80\",\"availability_zone\":\"\",\"protocol\":\"http1\","
    "\"tls\":false,\"ttl\":120,\"tags\":null}],"
    "\"app1.example.com\":["
    "{\"address\":\"10.0.0.1:8080\",\"availability_zone\":\"z1\",\"protocol\":\"http1\",\"tls\":false,"
    "\"ttl\":120,\"tags\":null,\"private_instance_id\":\"id-1\"},"
    "{\"address\":\"10.0.0.2:8080\",\"availability_zone\":\"\",\"protocol\":\"http1\",\"tls\":false,"
    "\"ttl\":120,\"tags\":{}}],"
    "\"app2.example.com/path\":[{\"address\":\"10.0.0.3:9443\",\"availability_zone\":\"\","
    "\"protocol\":\"http1\",\"tls\":true,\"ttl\":60,\"route_service_url\":\"https://rs.example.com\","
    "\"tags\":{\"a\":\"\\u003cb\\u0026\\u003e\",\"component\":\"x\"},\"isolation_segment\":\"seg\","
    "\"private_instance_id\":\"id-3\",\"server_cert_domain_san\":\"san\","
    "\"load_balancing_algorithm\":\"least-connection\"}]}\n";

static bool has_header(const reply_t *r, const char *line)
{
    return strcasestr(r->headers, line) != NULL;
}

static void test_health_is_503_with_empty_body_when_nats_never_connected(void **state)
{
    fixture_t *f = *state;
    const char *paths[] = {"/health", "/healthz"};
    for (size_t i = 0; i < 2; i++) {
        reply_t r = get(cr_status_server_port(f->srv), paths[i], NULL);
        assert_int_equal(r.status, 503);
        assert_int_equal(r.body_len, 0);
        assert_true(has_header(&r, "Cache-Control: private, max-age=0\r\n"));
        assert_true(has_header(&r, "Expires: 0\r\n"));
        reply_free(&r);
    }
    assert_false(cr_status_server_is_healthy(f->srv));

    reply_t r = get(cr_status_server_port(f->srv),
                    "/is-process-alive-do-not-use-for-loadbalancing", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    reply_free(&r);

    cr_status_server_set_draining(f->srv, true);
    assert_false(cr_status_server_is_healthy(f->srv));
    cr_status_server_set_draining(f->srv, false);
}

static void test_routes_without_auth_is_401_with_challenge(void **state)
{
    fixture_t *f = *state;
    reply_t r = get(cr_status_server_port(f->srv), "/routes", NULL);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.body, "401 Unauthorized\n");
    assert_true(has_header(&r, "WWW-Authenticate: Basic realm=\"crouter\"\r\n"));
    reply_free(&r);
}

static void test_wrong_credentials_are_401(void **state)
{
    fixture_t *f = *state;
    const char *bad[] = {USER ":wrong", USER ":" PASS "x", USER ":s3cret", "x" USER ":" PASS,
                         ":" PASS, USER ":"};
    for (size_t i = 0; i < CR_ARRAY_LEN(bad); i++) {
        reply_t r = get(cr_status_server_port(f->srv), "/routes", bad[i]);
        assert_int_equal(r.status, 401);
        reply_free(&r);
    }
}

static void test_routes_json_is_exact_sorted_and_in_gorouter_field_order(void **state)
{
    fixture_t *f = *state;
    reply_t r = get(cr_status_server_port(f->srv), "/routes", USER ":" PASS);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: application/json\r\n"));
    assert_string_equal(r.body, expected_routes);
    reply_free(&r);
}

static void test_routes_port_serves_routes_with_the_same_auth(void **state)
{
    fixture_t *f = *state;
    uint16_t port = cr_status_server_routes_port(f->srv);
    reply_t r = get(port, "/routes", USER ":" PASS);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, expected_routes);
    reply_free(&r);

    r = get(port, "/routes", NULL);
    assert_int_equal(r.status, 401);
    reply_free(&r);

    r = get(port, "/varz", USER ":" PASS);
    assert_int_equal(r.status, 404);
    reply_free(&r);
}

static void test_routes_port_is_bound_to_127_0_0_1_only(void **state)
{
    fixture_t *f = *state;
    /* 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not
     * accept connections addressed to it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons(cr_status_server_routes_port(f->srv)),
                              .sin_addr.s_addr = htonl(0x7f000002)};
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    int saved = errno;
    close(fd);
    assert_int_equal(rc, -1);
    assert_int_equal(saved, ECONNREFUSED);
}

static void test_varz_reports_registry_counts(void **state)
{
    fixture_t *f = *state;
    reply_t r = get(cr_status_server_port(f->srv), "/varz", NULL);
    assert_int_equal(r.status, 401);
    reply_free(&r);

    r = get(cr_status_server_port(f->srv), "/varz", USER ":" PASS);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(r.body, "\"registered_routes\":3"));
    assert_non_null(strstr(r.body, "\"registered_endpoints\":4"));
    assert_non_null(strstr(r.body, "\"index\":2"));
    assert_non_null(strstr(r.body, "\"requests\":0"));
    assert_non_null(strstr(r.body, "\"unknown_route\":0"));
    assert_non_null(strstr(r.body, "\"uptime\":\"0d:0h:0m:"));
    assert_non_null(strstr(r.body, "\"nats_connected\":false"));
    reply_free(&r);
}

static void test_metrics_reports_registry_counts_in_prometheus_format(void **state)
{
    fixture_t *f = *state;
    reply_t r = get(cr_status_server_port(f->srv), "/metrics", USER ":" PASS);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/plain; version=0.0.4\r\n"));
    assert_non_null(strstr(r.body, "# TYPE crouter_registry_routes gauge\ncrouter_registry_routes 3\n"));
    assert_non_null(strstr(r.body, "\ncrouter_registry_endpoints 4\n"));
    assert_non_null(strstr(r.body, "\ncrouter_responses_total{class=\"2xx\"} 0\n"));
    assert_non_null(strstr(r.body, "\ncrouter_router_errors_total{kind=\"unknown_route\"} 0\n"));
    assert_non_null(strstr(r.body, "\ncrouter_healthy 0\n"));
    reply_free(&r);

    r = get(cr_status_server_port(f->srv), "/metrics", NULL);
    assert_int_equal(r.status, 401);
    reply_free(&r);
}

static void test_metrics_lists_the_session_persistence_counters(void **state)
{
    fixture_t *f = *state;
    reply_t r = get(cr_status_server_port(f->srv), "/metrics", USER ":" PASS);
    assert_int_equal(r.status, 200);
    static const char *const names[] = {"requests", "hits",        "rebalanced",
                                        "rejected", "cookies_set", "learned"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char want[160];
        snprintf(want, sizeof want,
                 "# TYPE crouter_session_persistence_%s_total counter\n"
                 "crouter_session_persistence_%s_total 0\n",
                 names[i], names[i]);
        assert_non_null(strstr(r.body, want));
    }
    reply_free(&r);
}

static void test_unknown_path_is_404(void **state)
{
    fixture_t *f = *state;
    const char *paths[] = {"/", "/nope", "/routes/", "/health/x"};
    for (size_t i = 0; i < CR_ARRAY_LEN(paths); i++) {
        reply_t r = get(cr_status_server_port(f->srv), paths[i], USER ":" PASS);
        assert_int_equal(r.status, 404);
        reply_free(&r);
    }
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_is_503_with_empty_body_when_nats_never_connected),
        cmocka_unit_test(test_routes_without_auth_is_401_with_challenge),
        cmocka_unit_test(test_wrong_credentials_are_401),
        cmocka_unit_test(test_routes_json_is_exact_sorted_and_in_gorouter_field_order),
        cmocka_unit_test(test_routes_port_serves_routes_with_the_same_auth),
        cmocka_unit_test(test_routes_port_is_bound_to_127_0_0_1_only),
        cmocka_unit_test(test_varz_reports_registry_counts),
        cmocka_unit_test(test_metrics_reports_registry_counts_in_prometheus_format),
        cmocka_unit_test(test_metrics_lists_the_session_persistence_counters),
        cmocka_unit_test(test_unknown_path_is_404),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return failed;
}
