/* test/integration/test_proxy.c - issue 3 end to end: the HTTP/1.1 data path.
 *
 * One nats-server, one main crouter (short endpoint_timeout, 8 KiB header
 * limit) and a handful of fake backends are shared by the file; tests use
 * their own host names so they do not see each other's routes. Tests that
 * need another configuration (empty-pool 503 mode with max_conns 1 and no
 * backend keep-alive; timeouts; SIGTERM and SIGUSR1 drains) use g_lim or
 * start their own crouter. Every router-made error is checked
 * for its status, exact body, Content-Type, nosniff and X-Cf-Routererror.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testsupport.h"

#define MAIN_CONFIG                        \
    "droplet_stale_threshold: 120s\n"      \
    "prune_stale_droplets_interval: 1s\n"  \
    "endpoint_timeout: 3s\n"               \
    "endpoint_dial_timeout: 1s\n"          \
    "max_request_header_bytes: 8192\n"     \
    "backends:\n"                          \
    "  max_attempts: 3\n"

#define LIMITS_CONFIG                      \
    "empty_pool_response_code_503: true\n" \
    "empty_pool_timeout: 60s\n"            \
    "disable_keep_alives: true\n"          \
    "backends:\n"                          \
    "  max_conns: 1\n"

static ts_nats_t g_nats;
static natsConnection *g_nc;
static ts_crouter_t g_cr;       /* main router */
static ts_crouter_t g_lim;      /* empty-pool 503 + max_conns 1 */
static ts_backend_t g_b[3];     /* b1, b2, b3 */
static ts_backend_t g_smug;     /* only the smuggling probes reach it */

static const char *APP_GUID = "4c2b8e2a-1f0b-4f3e-9a55-0123456789ab";

static int group_setup(void **state)
{
    (void)state;
    if (ts_nats_start(&g_nats, false) != 0)
        return -1;
    g_nc = ts_nats_connect(&g_nats);
    if (!g_nc)
        return -1;
    const char *names[3] = {"b1", "b2", "b3"};
    for (int i = 0; i < 3; i++)
        if (ts_backend_start(&g_b[i], names[i], NULL) != 0)
            return -1;
    if (ts_backend_start(&g_smug, "smug", NULL) != 0)
        return -1;
    if (ts_crouter_start(&g_cr, &g_nats, MAIN_CONFIG) != 0)
        return -1;
    if (ts_crouter_start(&g_lim, &g_nats, LIMITS_CONFIG) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    ts_crouter_t *crs[2] = {&g_cr, &g_lim};
    for (int i = 0; i < 2; i++) {
        if (crs[i]->pid <= 0 && crs[i]->exit_status == -1)
            continue;
        if (!ts_crouter_stop_clean(crs[i], 15000)) {
            fprintf(stderr, "crouter exit status 0x%x after SIGTERM (expected exit 0)\n", (unsigned)crs[i]->exit_status);
            rc = -1;
        }
    }
    ts_nats_close(g_nc);
    for (int i = 0; i < 3; i++)
        ts_backend_stop(&g_b[i]);
    ts_backend_stop(&g_smug);
    ts_nats_stop(&g_nats);
    return rc;
}

/* Fails the test at once if a shared router died in an earlier test. */
static int check_alive(void **state)
{
    (void)state;
    if (!ts_crouter_alive(&g_cr) || !ts_crouter_alive(&g_lim)) {
        fprintf(stderr, "a shared crouter is no longer running\n");
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- helpers */

static void reg(const char *uri, const ts_backend_t *b, const char *pid, const char *app, const char *idx)
{
    ts_route_t r = {.port = b->port, .uris = {uri}, .private_instance_id = pid, .app = app,
                    .private_instance_index = idx};
    assert_int_equal(ts_nats_register(g_nc, &r), 0);
}

static void unreg(const char *uri, const ts_backend_t *b)
{
    ts_route_t r = {.port = b->port, .uris = {uri}};
    assert_int_equal(ts_nats_unregister(g_nc, &r), 0);
}

static void reg_port(const char *uri, uint16_t port)
{
    ts_route_t r = {.port = port, .uris = {uri}};
    assert_int_equal(ts_nats_register(g_nc, &r), 0);
}

static void wait_route(const ts_crouter_t *cr, const char *key, size_t n)
{
    if (!ts_crouter_wait_route(cr, key, n, 5000))
        fail_msg("route %s never had %zu endpoint(s) in /routes", key, n);
}

/* GET through the router; returns the X-Backend that answered (static
 * buffer, "" when none) and fails unless the status is want_status. */
static const char *hit(uint16_t port, const char *host, const char *path, long want_status)
{
    static char name[32];
    ts_resp_t r;
    ts_get(port, host, path, &r);
    if (r.status != want_status)
        fail_msg("GET %s%s: status %ld (curl %d), want %ld; body: %s", host, path, r.status, r.curl_code,
                 want_status, r.body ? r.body : "");
    const char *b = ts_resp_header(&r, "X-Backend");
    snprintf(name, sizeof name, "%s", b ? b : "");
    ts_resp_free(&r);
    return name;
}

/* Checks a router-made error response. */
static void check_router_error(const ts_resp_t *r, long status, const char *router_error, const char *body)
{
    if (r->status != status)
        fail_msg("status %ld, want %ld (body: %s)", r->status, status, r->body ? r->body : "");
    const char *re = ts_resp_header(r, "X-Cf-Routererror");
    if (!re || strcmp(re, router_error) != 0)
        fail_msg("X-Cf-Routererror '%s', want '%s'", re ? re : "(none)", router_error);
    if (body)
        assert_string_equal(r->body, body);
    const char *ct = ts_resp_header(r, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "text/plain; charset=utf-8");
    const char *nosniff = ts_resp_header(r, "X-Content-Type-Options");
    assert_non_null(nosniff);
    assert_string_equal(nosniff, "nosniff");
    assert_null(ts_resp_header(r, "X-Backend"));
}

static void check_endpoint_failure(const ts_resp_t *r)
{
    if (r->status != 502)
        fail_msg("status %ld, want 502 (body: %s)", r->status, r->body ? r->body : "");
    const char *re = ts_resp_header(r, "X-Cf-Routererror");
    if (!re || strncmp(re, "endpoint_failure", 16) != 0)
        fail_msg("X-Cf-Routererror '%s', want endpoint_failure (...)", re ? re : "(none)");
    assert_string_equal(r->body, "502 Bad Gateway: Registered endpoint failed to handle the request.\n");
    assert_string_equal(ts_resp_header(r, "Content-Type"), "text/plain; charset=utf-8");
    assert_null(ts_resp_header(r, "X-Backend"));
}

/* Polls until a backend's request count exceeds base. */
static bool wait_count_above(const ts_backend_t *b, long base, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    do {
        if (ts_backend_count(b, NULL) > base)
            return true;
        ts_sleep_ms(10);
    } while (ts_now_ms() < deadline);
    return false;
}

typedef struct {
    uint16_t port;
    const char *host;
    const char *path;
    ts_resp_t resp;
    int rc;
    pthread_t t;
} bg_req_t;

static void *bg_main(void *arg)
{
    bg_req_t *b = arg;
    ts_req_t req = {.host = b->host, .path = b->path, .timeout_ms = 20000};
    b->rc = ts_http(NULL, b->port, &req, &b->resp);
    return NULL;
}

static void bg_start(bg_req_t *b, uint16_t port, const char *host, const char *path)
{
    memset(b, 0, sizeof *b);
    b->port = port;
    b->host = host;
    b->path = path;
    assert_int_equal(pthread_create(&b->t, NULL, bg_main, b), 0);
}

static void bg_join(bg_req_t *b)
{
    pthread_join(b->t, NULL);
}

/* ---------------------------------------------------------------- routing */

static void test_routes_by_host_case_insensitive_port_ignored(void **state)
{
    (void)state;
    reg("Case-Host.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_cr, "case-host.example.com", 1);
    assert_string_equal(hit(g_cr.port, "case-host.example.com", "/", 200), "b1");
    assert_string_equal(hit(g_cr.port, "CASE-HOST.EXAMPLE.COM", "/", 200), "b1");
    assert_string_equal(hit(g_cr.port, "Case-Host.example.com:8080", "/x?y=1", 200), "b1");
    hit(g_cr.port, "case-host.example.org", "/", 404);
    hit(g_cr.port, "other.case-host.example.com", "/", 404);
}

static void test_context_paths_longest_whole_segment_match(void **state)
{
    (void)state;
    reg("ctx.example.com", &g_b[0], NULL, NULL, NULL);
    reg("ctx.example.com/app", &g_b[1], NULL, NULL, NULL);
    reg("ctx.example.com/app/deep", &g_b[2], NULL, NULL, NULL);
    wait_route(&g_cr, "ctx.example.com", 1);
    wait_route(&g_cr, "ctx.example.com/app", 1);
    wait_route(&g_cr, "ctx.example.com/app/deep", 1);
    struct {
        const char *path;
        const char *backend;
    } cases[] = {
        {"/", "b1"},           {"/other", "b1"},        {"/app", "b2"},          {"/app/", "b2"},
        {"/app/x?q=1", "b2"},  {"/application", "b1"},  {"/APP/x", "b2"},        {"/app/deep", "b3"},
        {"/app/deep/x", "b3"}, {"/app/deeper", "b2"},   {"/app?x=/deep", "b2"},  {"/apps/deep", "b1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = hit(g_cr.port, "ctx.example.com", cases[i].path, 200);
        if (strcmp(got, cases[i].backend) != 0)
            fail_msg("path %s went to %s, want %s", cases[i].path, got, cases[i].backend);
    }
    /* the request target reaches the backend as sent */
    ts_resp_t r;
    assert_int_equal(ts_get(g_cr.port, "ctx.example.com", "/app/x?q=1&r=%20", &r), 0);
    json_t *echo = ts_resp_json(&r);
    assert_non_null(echo);
    assert_string_equal(ts_echo_str(echo, "target"), "/app/x?q=1&r=%20");
    json_decref(echo);
    ts_resp_free(&r);
}

static void test_wildcard_routes_match_subdomains_exact_wins(void **state)
{
    (void)state;
    reg("*.wild.example.com", &g_b[0], NULL, NULL, NULL);
    reg("exact.wild.example.com", &g_b[1], NULL, NULL, NULL);
    wait_route(&g_cr, "*.wild.example.com", 1);
    wait_route(&g_cr, "exact.wild.example.com", 1);
    assert_string_equal(hit(g_cr.port, "a.wild.example.com", "/", 200), "b1");
    assert_string_equal(hit(g_cr.port, "A.B.Wild.Example.com", "/p", 200), "b1");
    assert_string_equal(hit(g_cr.port, "exact.wild.example.com", "/", 200), "b2");
    hit(g_cr.port, "wild.example.com", "/", 404);
}

static void test_round_robin_spreads_requests_evenly(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        reg("rr.example.com", &g_b[i], NULL, NULL, NULL);
    wait_route(&g_cr, "rr.example.com", 3);
    int counts[3] = {0};
    char prev[32] = "";
    CURL *c = curl_easy_init();
    for (int i = 0; i < 30; i++) {
        ts_req_t req = {.host = "rr.example.com", .path = "/"};
        ts_resp_t r;
        assert_int_equal(ts_http(c, g_cr.port, &req, &r), 0);
        assert_int_equal(r.status, 200);
        const char *b = ts_resp_header(&r, "X-Backend");
        assert_non_null(b);
        if (strcmp(b, prev) == 0)
            fail_msg("request %d went to %s again: not round-robin", i, b);
        snprintf(prev, sizeof prev, "%s", b);
        if (strcmp(b, "b1") && strcmp(b, "b2") && strcmp(b, "b3"))
            fail_msg("request %d answered by unexpected backend %s", i, b);
        counts[b[1] - '1']++;
        ts_resp_free(&r);
    }
    curl_easy_cleanup(c);
    for (int i = 0; i < 3; i++)
        if (counts[i] != 10)
            fail_msg("round-robin over 3 endpoints, 30 requests: b1=%d b2=%d b3=%d", counts[0], counts[1],
                     counts[2]);
}

static void test_least_connection_prefers_idle_endpoint(void **state)
{
    (void)state;
    ts_route_t r1 = {.port = g_b[0].port, .uris = {"lc.example.com"}, .lb_algo = "least-connection"};
    ts_route_t r2 = {.port = g_b[1].port, .uris = {"lc.example.com"}, .lb_algo = "least-connection"};
    assert_int_equal(ts_nats_register(g_nc, &r1), 0);
    assert_int_equal(ts_nats_register(g_nc, &r2), 0);
    wait_route(&g_cr, "lc.example.com", 2);
    long c1 = ts_backend_count(&g_b[0], NULL), c2 = ts_backend_count(&g_b[1], NULL);
    bg_req_t slow;
    bg_start(&slow, g_cr.port, "lc.example.com", "/slow?ms=2000");
    int64_t deadline = ts_now_ms() + 3000;
    const char *busy = NULL, *idle = NULL;
    while (!busy && ts_now_ms() < deadline) {
        if (ts_backend_count(&g_b[0], NULL) > c1) {
            busy = "b1";
            idle = "b2";
        } else if (ts_backend_count(&g_b[1], NULL) > c2) {
            busy = "b2";
            idle = "b1";
        } else {
            ts_sleep_ms(10);
        }
    }
    if (!busy) {
        bg_join(&slow);
        ts_resp_free(&slow.resp);
        fail_msg("the slow request reached no backend");
    }
    for (int i = 0; i < 10; i++) {
        const char *got = hit(g_cr.port, "lc.example.com", "/", 200);
        if (strcmp(got, idle) != 0) {
            bg_join(&slow);
            ts_resp_free(&slow.resp);
            fail_msg("least-connection sent request %d to %s, which has a request in flight", i, got);
        }
    }
    bg_join(&slow);
    assert_int_equal(slow.resp.status, 200);
    assert_string_equal(ts_resp_header(&slow.resp, "X-Backend"), busy);
    ts_resp_free(&slow.resp);
}

static void test_unregister_takes_effect(void **state)
{
    (void)state;
    reg("unreg.example.com", &g_b[0], NULL, NULL, NULL);
    reg("unreg.example.com", &g_b[1], NULL, NULL, NULL);
    wait_route(&g_cr, "unreg.example.com", 2);
    unreg("unreg.example.com", &g_b[0]);
    wait_route(&g_cr, "unreg.example.com", 1);
    for (int i = 0; i < 10; i++)
        assert_string_equal(hit(g_cr.port, "unreg.example.com", "/", 200), "b2");
    unreg("unreg.example.com", &g_b[1]);
    wait_route(&g_cr, "unreg.example.com", 0);
    ts_resp_t r;
    assert_int_equal(ts_get(g_cr.port, "unreg.example.com", "/", &r), 0);
    check_router_error(&r, 404, "unknown_route",
                       "404 Not Found: Requested route ('unreg.example.com') does not exist.\n");
    ts_resp_free(&r);
}

static void test_prune_takes_effect(void **state)
{
    (void)state;
    ts_route_t r = {.port = g_b[2].port, .uris = {"prune.example.com"}, .stale_threshold_in_seconds = 1};
    assert_int_equal(ts_nats_register(g_nc, &r), 0);
    wait_route(&g_cr, "prune.example.com", 1);
    assert_string_equal(hit(g_cr.port, "prune.example.com", "/", 200), "b3");
    int64_t deadline = ts_now_ms() + 6000;
    long status = 200;
    while (status == 200 && ts_now_ms() < deadline) {
        ts_resp_t resp;
        ts_get(g_cr.port, "prune.example.com", "/", &resp);
        status = resp.status;
        if (status != 200)
            check_router_error(&resp, 404, "unknown_route",
                               "404 Not Found: Requested route ('prune.example.com') does not exist.\n");
        ts_resp_free(&resp);
        if (status == 200)
            ts_sleep_ms(100);
    }
    if (status == 200)
        fail_msg("endpoint with a 1s TTL still served 6s after its only registration");
}

/* ------------------------------------------------------------ router errors */

static void test_unknown_route_404(void **state)
{
    (void)state;
    ts_resp_t r;
    assert_int_equal(ts_get(g_cr.port, "nope.example.com", "/some/path", &r), 0);
    check_router_error(&r, 404, "unknown_route",
                       "404 Not Found: Requested route ('nope.example.com') does not exist.\n");
    ts_resp_free(&r);
    assert_int_equal(ts_get(g_cr.port, "nope.example.com:8080", "/", &r), 0);
    check_router_error(&r, 404, "unknown_route",
                       "404 Not Found: Requested route ('nope.example.com:8080') does not exist.\n");
    ts_resp_free(&r);
}

static void raw_request(uint16_t port, const char *data, ts_resp_t *out)
{
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, port), 0);
    assert_int_equal(ts_conn_send_str(&c, data), 0);
    if (ts_conn_read_response(&c, out, false, 5000) != 0)
        fail_msg("no complete response to: %s", data);
    ts_conn_close(&c);
}

static void test_empty_host_400(void **state)
{
    (void)state;
    ts_resp_t r;
    raw_request(g_cr.port, "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n", &r);
    check_router_error(&r, 400, "empty_host", "400 Bad Request: Request had empty Host header\n");
    ts_resp_free(&r);
    raw_request(g_cr.port, "GET / HTTP/1.0\r\n\r\n", &r);
    check_router_error(&r, 400, "empty_host", "400 Bad Request: Request had empty Host header\n");
    ts_resp_free(&r);
}

static void test_empty_pool_503_no_endpoints(void **state)
{
    (void)state;
    reg("emptypool.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_lim, "emptypool.example.com", 1);
    assert_string_equal(hit(g_lim.port, "emptypool.example.com", "/", 200), "b1");
    unreg("emptypool.example.com", &g_b[0]);
    int64_t deadline = ts_now_ms() + 5000;
    ts_resp_t r = {0};
    for (;;) {
        assert_int_equal(ts_get(g_lim.port, "emptypool.example.com", "/", &r), 0);
        if (r.status != 200 || ts_now_ms() > deadline)
            break;
        ts_resp_free(&r);
        ts_sleep_ms(20);
    }
    check_router_error(&r, 503, "no_endpoints",
                       "503 Service Unavailable: Requested route ('emptypool.example.com') has no available "
                       "endpoints.\n");
    ts_resp_free(&r);
    /* a route that never existed is still a 404 */
    assert_int_equal(ts_get(g_lim.port, "never.example.com", "/", &r), 0);
    check_router_error(&r, 404, "unknown_route",
                       "404 Not Found: Requested route ('never.example.com') does not exist.\n");
    ts_resp_free(&r);
}

static void test_connection_limit_reached_503(void **state)
{
    (void)state;
    reg("connlimit.example.com", &g_b[1], NULL, NULL, NULL);
    wait_route(&g_lim, "connlimit.example.com", 1);
    long base = ts_backend_count(&g_b[1], NULL);
    bg_req_t slow;
    bg_start(&slow, g_lim.port, "connlimit.example.com", "/slow?ms=2000");
    if (!wait_count_above(&g_b[1], base, 3000)) {
        bg_join(&slow);
        ts_resp_free(&slow.resp);
        fail_msg("slow request never reached the backend");
    }
    ts_resp_t r;
    ts_get(g_lim.port, "connlimit.example.com", "/", &r);
    long status = r.status;
    if (status == 503)
        check_router_error(&r, 503, "Connection Limit Reached",
                           "503 Service Unavailable: Requested route ('connlimit.example.com') has reached the "
                           "connection limit.\n");
    ts_resp_free(&r);
    bg_join(&slow);
    assert_int_equal(slow.resp.status, 200);
    ts_resp_free(&slow.resp);
    if (status != 503)
        fail_msg("second request with max_conns 1 and one busy endpoint: status %ld, want 503", status);
    /* the slot is free again */
    assert_string_equal(hit(g_lim.port, "connlimit.example.com", "/", 200), "b2");
}

static void test_endpoint_failure_502_dead_backend(void **state)
{
    (void)state;
    uint16_t dead = ts_free_port();
    reg_port("dead.example.com", dead);
    wait_route(&g_cr, "dead.example.com", 1);
    ts_resp_t r;
    assert_int_equal(ts_get(g_cr.port, "dead.example.com", "/", &r), 0);
    check_endpoint_failure(&r);
    ts_resp_free(&r);
}

static void test_backend_reset_malformed_timeout_close_mid_body(void **state)
{
    (void)state;
    reg("badbackend.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_cr, "badbackend.example.com", 1);
    ts_resp_t r;
    assert_int_equal(ts_get(g_cr.port, "badbackend.example.com", "/reset", &r), 0);
    check_endpoint_failure(&r);
    ts_resp_free(&r);
    assert_int_equal(ts_get(g_cr.port, "badbackend.example.com", "/malformed", &r), 0);
    check_endpoint_failure(&r);
    ts_resp_free(&r);

    int64_t t0 = ts_now_ms();
    assert_int_equal(ts_get(g_cr.port, "badbackend.example.com", "/hang", &r), 0);
    int64_t took = ts_now_ms() - t0;
    check_endpoint_failure(&r);
    ts_resp_free(&r);
    if (took < 2900 || took > 8000)
        fail_msg("a backend that never answers got its 502 after %lld ms (endpoint_timeout 3s)", (long long)took);

    /* headers already went out: the client must see a truncated body, never a complete one */
    ts_get(g_cr.port, "badbackend.example.com", "/close-mid-body", &r);
    if (r.curl_code == CURLE_OK && r.status == 200)
        fail_msg("a body cut at 1000 of 100000 bytes reached the client as complete (%zu bytes)", r.body_len);
    assert_true(r.body_len < 100000);
    ts_resp_free(&r);

    assert_string_equal(hit(g_cr.port, "badbackend.example.com", "/", 200), "b1");
}

static void test_app_instance_header_routing_and_errors(void **state)
{
    (void)state;
    reg("appinst.example.com", &g_b[0], "ai-0", APP_GUID, "0");
    reg("appinst.example.com", &g_b[1], "ai-1", APP_GUID, "1");
    reg("appinst.example.com", &g_b[2], "ai-2", APP_GUID, "2");
    wait_route(&g_cr, "appinst.example.com", 3);
    char hdr[128];
    snprintf(hdr, sizeof hdr, "X-Cf-App-Instance: %s:1", APP_GUID);
    for (int i = 0; i < 10; i++) {
        ts_req_t req = {.host = "appinst.example.com", .headers = {hdr}};
        ts_resp_t r;
        assert_int_equal(ts_http(NULL, g_cr.port, &req, &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(ts_resp_header(&r, "X-Backend"), "b2");
        json_t *echo = ts_resp_json(&r);
        assert_int_equal(ts_echo_header_count(echo, "X-Cf-App-Instance"), 0);
        json_decref(echo);
        ts_resp_free(&r);
    }
    const char *bad[] = {"X-Cf-App-Instance: nonsense", "X-Cf-App-Instance: 4C2B8E2A-1F0B-4F3E-9A55-0123456789AB:1",
                         "X-Cf-App-Instance: 4c2b8e2a-1f0b-4f3e-9a55-0123456789ab:", "X-Cf-App-Instance: :1",
                         "X-Cf-App-Instance: 4c2b8e2a-1f0b-4f3e-9a55-0123456789ab:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ts_req_t req = {.host = "appinst.example.com", .headers = {bad[i]}};
        ts_resp_t r;
        assert_int_equal(ts_http(NULL, g_cr.port, &req, &r), 0);
        check_router_error(&r, 400, "invalid_cf_app_instance_header",
                           "400 Bad Request: Invalid X-CF-App-Instance Header\n");
        ts_resp_free(&r);
    }
    snprintf(hdr, sizeof hdr, "X-Cf-App-Instance: %s:99", APP_GUID);
    ts_req_t req = {.host = "appinst.example.com", .headers = {hdr}};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, g_cr.port, &req, &r), 0);
    char body[256];
    snprintf(body, sizeof body,
             "400 Bad Request: Requested instance ('99') with guid ('%s') does not exist for route "
             "('appinst.example.com')\n", APP_GUID);
    check_router_error(&r, 400, "unknown_route", body);
    ts_resp_free(&r);
}

/* ---------------------------------------------------------------- retries */

static void test_retries_one_dead_endpoint_all_200(void **state)
{
    (void)state;
    reg("retry.example.com", &g_b[0], NULL, NULL, NULL);
    reg_port("retry.example.com", ts_free_port());
    wait_route(&g_cr, "retry.example.com", 2);
    for (int i = 0; i < 20; i++)
        assert_string_equal(hit(g_cr.port, "retry.example.com", "/", 200), "b1");
    /* a refused connection is retried for any method, body included */
    for (int i = 0; i < 6; i++) {
        ts_req_t req = {.host = "retry.example.com", .path = "/post", .body = "payload", .body_len = 7};
        ts_resp_t r;
        assert_int_equal(ts_http(NULL, g_cr.port, &req, &r), 0);
        assert_int_equal(r.status, 200);
        json_t *echo = ts_resp_json(&r);
        assert_int_equal(json_integer_value(json_object_get(echo, "body_len")), 7);
        json_decref(echo);
        ts_resp_free(&r);
    }
}

static void test_retries_all_dead_502(void **state)
{
    (void)state;
    uint16_t dead[2] = {ts_free_port(), ts_free_port()};
    reg_port("alldead.example.com", dead[0]);
    reg_port("alldead.example.com", dead[1]);
    wait_route(&g_cr, "alldead.example.com", 2);
    for (int i = 0; i < 3; i++) {
        ts_resp_t r;
        assert_int_equal(ts_get(g_cr.port, "alldead.example.com", "/all-dead", &r), 0);
        check_endpoint_failure(&r);
        ts_resp_free(&r);
    }
    /* The access log names the backend the failed exchange tried last (as
     * gorouter does), not "-". */
    char want[2][64];
    for (int i = 0; i < 2; i++)
        snprintf(want[i], sizeof want[i], "\"127.0.0.1:%u\" x_forwarded_for:", (unsigned)dead[i]);
    bool found = false;
    for (int64_t deadline = ts_now_ms() + 5000; !found && ts_now_ms() < deadline;) {
        char *log = ts_read_file(g_cr.access_log_path, NULL);
        for (char *line = log ? strstr(log, "GET /all-dead ") : NULL; line && !found;
             line = strstr(line + 1, "GET /all-dead ")) {
            char *end = strchr(line, '\n');
            size_t len = end ? (size_t)(end - line) : strlen(line);
            char *l = strndup(line, len);
            found = (strstr(l, want[0]) || strstr(l, want[1])) && strstr(l, "x_cf_routererror:\"endpoint_failure");
            free(l);
        }
        free(log);
        if (!found)
            ts_sleep_ms(50);
    }
    if (!found)
        fail_msg("no access log line for /all-dead names a dead backend with endpoint_failure");
}

/* ---------------------------------------------------------------- headers */

static bool is_uuid(const char *s)
{
    regex_t re;
    regcomp(&re, "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", REG_EXTENDED | REG_NOSUB);
    bool ok = s && regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

static void test_headers_added_for_backend_and_response(void **state)
{
    (void)state;
    reg("hdr.example.com", &g_b[0], "hdr-pid", "hdr-app", "4");
    reg("hdr-nopid.example.com", &g_b[1], NULL, NULL, NULL);
    wait_route(&g_cr, "hdr.example.com", 1);
    wait_route(&g_cr, "hdr-nopid.example.com", 1);

    int64_t before = ts_wall_ms();
    ts_req_t req = {.host = "hdr.example.com",
                    .headers = {"X-Forwarded-For: 10.1.2.3", "X-Vcap-Request-Id: client-supplied",
                                "X-CF-InstanceID: evil", "X-CF-ApplicationID: evil", "X-CF-InstanceIndex: 99",
                                "X-Custom: kept"}};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, g_cr.port, &req, &r), 0);
    int64_t after = ts_wall_ms();
    assert_int_equal(r.status, 200);
    json_t *echo = ts_resp_json(&r);
    assert_non_null(echo);
    assert_string_equal(ts_echo_header(echo, "X-Forwarded-For"), "10.1.2.3, 127.0.0.1");
    assert_int_equal(ts_echo_header_count(echo, "X-Forwarded-For"), 1);
    assert_string_equal(ts_echo_header(echo, "X-Forwarded-Proto"), "http");
    const char *xrs = ts_echo_header(echo, "X-Request-Start");
    assert_non_null(xrs);
    long long start = atoll(xrs);
    if (start < before - 5 || start > after + 5)
        fail_msg("X-Request-Start %s not within [%lld, %lld] (epoch ms)", xrs, (long long)before, (long long)after);
    const char *vcap = ts_echo_header(echo, "X-Vcap-Request-Id");
    if (!is_uuid(vcap))
        fail_msg("backend saw X-Vcap-Request-Id '%s', want a fresh UUID", vcap ? vcap : "(none)");
    assert_int_equal(ts_echo_header_count(echo, "X-Vcap-Request-Id"), 1);
    const char *resp_vcap = ts_resp_header(&r, "X-Vcap-Request-Id");
    assert_non_null(resp_vcap);
    assert_string_equal(resp_vcap, vcap);
    assert_string_equal(ts_echo_header(echo, "X-Cf-Applicationid"), "hdr-app");
    assert_int_equal(ts_echo_header_count(echo, "X-Cf-Applicationid"), 1);
    assert_string_equal(ts_echo_header(echo, "X-Cf-Instanceindex"), "4");
    assert_int_equal(ts_echo_header_count(echo, "X-Cf-Instanceindex"), 1);
    assert_string_equal(ts_echo_header(echo, "X-Cf-Instanceid"), "hdr-pid");
    assert_int_equal(ts_echo_header_count(echo, "X-Cf-Instanceid"), 1);
    assert_string_equal(ts_echo_header(echo, "X-Custom"), "kept");
    assert_string_equal(ts_echo_header(echo, "Host"), "hdr.example.com");
    json_decref(echo);
    ts_resp_free(&r);

    /* without a private_instance_id the instance id is host:port; client XFP and X-Request-Start pass */
    ts_req_t req2 = {.host = "hdr-nopid.example.com",
                     .headers = {"X-Forwarded-Proto: https", "X-Request-Start: 1234567890123"}};
    assert_int_equal(ts_http(NULL, g_cr.port, &req2, &r), 0);
    assert_int_equal(r.status, 200);
    echo = ts_resp_json(&r);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", g_b[1].port);
    assert_string_equal(ts_echo_header(echo, "X-Cf-Instanceid"), addr);
    assert_string_equal(ts_echo_header(echo, "X-Forwarded-Proto"), "https");
    assert_string_equal(ts_echo_header(echo, "X-Request-Start"), "1234567890123");
    assert_string_equal(ts_echo_header(echo, "X-Forwarded-For"), "127.0.0.1");
    json_decref(echo);
    ts_resp_free(&r);
}

/* TE is hop-by-hop; like Go's ReverseProxy, "TE: trailers" alone may be
 * re-announced, so the probe uses another coding. */
static void test_hop_by_hop_headers_stripped(void **state)
{
    (void)state;
    reg("hop.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(&g_cr, "hop.example.com", 1);
    ts_req_t req = {.host = "hop.example.com",
                    .headers = {"Connection: keep-alive, X-Hop-Listed", "X-Hop-Listed: secret", "Keep-Alive: timeout=5",
                                "TE: gzip", "Proxy-Authorization: Basic Zm9vOmJhcg==", "Proxy-Connection: keep-alive",
                                "Trailer: X-Trailer", "Upgrade: h2c", "X-End-To-End: stays"}};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, g_cr.port, &req, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *echo = ts_resp_json(&r);
    assert_non_null(echo);
    const char *gone[] = {"X-Hop-Listed", "Keep-Alive", "TE", "Proxy-Authorization", "Proxy-Connection", "Trailer",
                          "Upgrade"};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        if (ts_echo_header_count(echo, gone[i]) != 0)
            fail_msg("hop-by-hop header %s reached the backend (%s)", gone[i], ts_echo_header(echo, gone[i]));
    const char *conn = ts_echo_header(echo, "Connection");
    if (conn && strcasestr(conn, "x-hop-listed"))
        fail_msg("client's Connection tokens reached the backend: %s", conn);
    assert_string_equal(ts_echo_header(echo, "X-End-To-End"), "stays");
    json_decref(echo);
    ts_resp_free(&r);
}

static void test_access_log_line_has_gorouter_fields(void **state)
{
    (void)state;
    reg("alog.example.com", &g_b[0], "alog-pid", "alog-app", "3");
    wait_route(&g_cr, "alog.example.com", 1);
    ts_req_t req = {.host = "alog.example.com", .path = "/logged?q=1", .body = "abcd", .body_len = 4,
                    .headers = {"User-Agent: it-agent", "Referer: http://ref.example.com/"}};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, g_cr.port, &req, &r), 0);
    assert_int_equal(r.status, 200);
    char vcap[64];
    snprintf(vcap, sizeof vcap, "%s", ts_resp_header(&r, "X-Vcap-Request-Id"));
    size_t resp_len = r.body_len;
    ts_resp_free(&r);
    char *line = NULL;
    int64_t deadline = ts_now_ms() + 5000;
    while (!line && ts_now_ms() < deadline) {
        char *log = ts_read_file(g_cr.access_log_path, NULL);
        char *p = log ? strstr(log, vcap) : NULL;
        if (p) {
            char *s = p, *e = strchr(p, '\n');
            while (s > log && s[-1] != '\n')
                s--;
            if (e)
                line = strndup(s, (size_t)(e - s));
        }
        free(log);
        if (!line)
            ts_sleep_ms(50);
    }
    if (!line)
        fail_msg("no access log line with vcap_request_id %s in %s", vcap, g_cr.access_log_path);
    char pattern[1024];
    snprintf(pattern, sizeof pattern,
             "^alog\\.example\\.com - \\[[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{9}Z\\] "
             "\"POST /logged\\?q=1 HTTP/1\\.1\" 200 4 %zu \"http://ref\\.example\\.com/\" \"it-agent\" "
             "\"127\\.0\\.0\\.1:[0-9]+\" \"127\\.0\\.0\\.1:%u\" x_forwarded_for:\"127\\.0\\.0\\.1\" "
             "x_forwarded_proto:\"http\" vcap_request_id:\"%s\" response_time:[0-9]+\\.[0-9]{6} "
             "gorouter_time:[0-9]+\\.[0-9]{6} app_id:\"alog-app\" app_index:\"3\" instance_id:\"alog-pid\" "
             "x_cf_routererror:\"-\"$",
             resp_len, g_b[0].port, vcap);
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, line, 0, NULL, 0) == 0;
    regfree(&re);
    if (!ok)
        fail_msg("access log line not in gorouter's format:\n%s", line);
    free(line);
}

/* ------------------------------------------------------------- connections */

static void test_keepalive_1000_requests_one_connection(void **state)
{
    (void)state;
    reg("ka.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_cr, "ka.example.com", 1);
    hit(g_cr.port, "ka.example.com", "/warm", 200);
    ts_req_t creq = {.path = "/count"};
    ts_resp_t cr;
    assert_int_equal(ts_http(NULL, g_b[0].port, &creq, &cr), 0);
    json_t *cj = ts_resp_json(&cr);
    long conns_before = (long)json_integer_value(json_object_get(cj, "connections"));
    json_decref(cj);
    ts_resp_free(&cr);

    CURL *c = curl_easy_init();
    long connects = 0;
    for (int i = 0; i < 1000; i++) {
        ts_req_t req = {.host = "ka.example.com", .path = "/ka"};
        ts_resp_t r;
        if (ts_http(c, g_cr.port, &req, &r) != 0 || r.status != 200)
            fail_msg("keep-alive request %d: status %ld curl %d", i, r.status, r.curl_code);
        connects += r.connects;
        ts_resp_free(&r);
    }
    curl_easy_cleanup(c);
    if (connects != 1)
        fail_msg("1000 keep-alive requests used %ld client connections, want 1", connects);

    assert_int_equal(ts_http(NULL, g_b[0].port, &creq, &cr), 0);
    cj = ts_resp_json(&cr);
    long conns_after = (long)json_integer_value(json_object_get(cj, "connections"));
    json_decref(cj);
    ts_resp_free(&cr);
    /* the /count probes themselves are 2 connections; crouter should reuse its backend connections */
    if (conns_after - conns_before - 1 > 4)
        fail_msg("1000 sequential requests opened %ld backend connections (keep-alive to backends is on)",
                 conns_after - conns_before - 1);
}

static void test_pipelined_requests_answered_in_order(void **state)
{
    (void)state;
    reg("pipe.example.com", &g_b[1], NULL, NULL, NULL);
    wait_route(&g_cr, "pipe.example.com", 1);
    char all[4096] = "";
    size_t len = 0;
    for (int i = 0; i < 10; i++) {
        if (i == 5)
            len += (size_t)snprintf(all + len, sizeof all - len,
                                    "POST /p%d HTTP/1.1\r\nHost: pipe.example.com\r\nContent-Length: 5\r\n\r\nhello", i);
        else
            len += (size_t)snprintf(all + len, sizeof all - len, "GET /p%d HTTP/1.1\r\nHost: pipe.example.com\r\n\r\n",
                                    i);
    }
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, g_cr.port), 0);
    assert_int_equal(ts_conn_send(&c, all, len), 0);
    for (int i = 0; i < 10; i++) {
        ts_resp_t r;
        if (ts_conn_read_response(&c, &r, false, 5000) != 0)
            fail_msg("pipelined response %d missing", i);
        assert_int_equal(r.status, 200);
        json_t *echo = ts_resp_json(&r);
        assert_non_null(echo);
        char want[8];
        snprintf(want, sizeof want, "/p%d", i);
        assert_string_equal(ts_echo_str(echo, "target"), want);
        assert_int_equal(json_integer_value(json_object_get(echo, "body_len")), i == 5 ? 5 : 0);
        json_decref(echo);
        ts_resp_free(&r);
    }
    ts_conn_close(&c);
}

#define MIB16 (16u * 1024 * 1024)

static void test_16mib_upload_chunked_and_content_length_checksums(void **state)
{
    (void)state;
    reg("big.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(&g_cr, "big.example.com", 1);
    char want_fnv[24];
    snprintf(want_fnv, sizeof want_fnv, "%016llx", (unsigned long long)ts_pattern_fnv(MIB16));
    for (int chunked = 1; chunked >= 0; chunked--) {
        ts_req_t req = {.host = "big.example.com", .path = "/sum", .upload_pattern_len = MIB16,
                        .chunked_upload = chunked, .timeout_ms = 60000};
        ts_resp_t r;
        if (ts_http(NULL, g_cr.port, &req, &r) != 0 || r.status != 200)
            fail_msg("16 MiB %s upload: status %ld curl %d", chunked ? "chunked" : "content-length", r.status,
                     r.curl_code);
        json_t *echo = ts_resp_json(&r);
        assert_non_null(echo);
        assert_int_equal(json_integer_value(json_object_get(echo, "body_len")), MIB16);
        assert_string_equal(ts_echo_str(echo, "body_fnv"), want_fnv);
        json_decref(echo);
        ts_resp_free(&r);
    }
}

static void test_16mib_download_chunked_and_content_length_checksums(void **state)
{
    (void)state;
    reg("big.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(&g_cr, "big.example.com", 1);
    uint64_t want = ts_pattern_fnv(MIB16);
    const char *paths[2] = {"/download?bytes=16777216&chunked=1", "/download?bytes=16777216"};
    for (int i = 0; i < 2; i++) {
        ts_req_t req = {.host = "big.example.com", .path = paths[i], .sink_checksum = true, .timeout_ms = 60000};
        ts_resp_t r;
        if (ts_http(NULL, g_cr.port, &req, &r) != 0 || r.status != 200)
            fail_msg("GET %s: status %ld curl %d", paths[i], r.status, r.curl_code);
        assert_int_equal(r.body_len, MIB16);
        assert_true(r.body_fnv == want);
        if (i == 0) {
            const char *te = ts_resp_header(&r, "Transfer-Encoding");
            assert_non_null(te);
            assert_true(strcasecmp(te, "chunked") == 0);
        } else {
            const char *cl = ts_resp_header(&r, "Content-Length");
            assert_non_null(cl);
            assert_string_equal(cl, "16777216");
        }
        ts_resp_free(&r);
    }
}

static long backend_connections(const ts_backend_t *b); /* below */

/* Sends a POST /sum with pad_bytes of X-Pad header and body_len pattern
 * bytes, framed by before and after (whole requests, may be ""), in one
 * write on c. */
static void send_upload_between(ts_conn_t *c, const char *before, size_t pad_bytes, uint64_t body_len,
                                const char *after)
{
    size_t bl = strlen(before), al = strlen(after);
    size_t cap = bl + pad_bytes + 256 + body_len + al;
    unsigned char *msg = malloc(cap);
    assert_non_null(msg);
    memcpy(msg, before, bl);
    size_t n = bl;
    n += (size_t)snprintf((char *)msg + n, cap - n, "POST /sum HTTP/1.1\r\nHost: splice.example.com\r\nX-Pad: ");
    memset(msg + n, 'p', pad_bytes);
    n += pad_bytes;
    n += (size_t)snprintf((char *)msg + n, cap - n, "\r\nContent-Length: %llu\r\n\r\n",
                          (unsigned long long)body_len);
    ts_pattern_fill(msg + n, 0, body_len);
    n += body_len;
    memcpy(msg + n, after, al);
    assert_int_equal(ts_conn_send(c, msg, n + al), 0);
    free(msg);
}

/* Reads one echo response from c: status 200, target, body length and FNV. */
static void expect_echo(ts_conn_t *c, const char *target, uint64_t body_len)
{
    ts_resp_t r;
    assert_int_equal(ts_conn_read_response(c, &r, false, 30000), 0);
    assert_int_equal(r.status, 200);
    json_t *echo = ts_resp_json(&r);
    assert_non_null(echo);
    assert_string_equal(ts_echo_str(echo, "target"), target);
    assert_int_equal(json_integer_value(json_object_get(echo, "body_len")), body_len);
    if (body_len > 0) {
        char want_fnv[24];
        snprintf(want_fnv, sizeof want_fnv, "%016llx", (unsigned long long)ts_pattern_fnv(body_len));
        assert_string_equal(ts_echo_str(echo, "body_fnv"), want_fnv);
    }
    json_decref(echo);
    ts_resp_free(&r);
}

/* Large Content-Length bodies between plain sockets: downloads are spliced
 * through a pipe (router/splice.c), uploads copied through a 64 KiB bulk
 * buffer, or spliced too with splice_request_bodies: true. On one client
 * connection to cr: a 4 MiB download, a 4 MiB upload with a small GET
 * pipelined behind it in the same write (the body must end at its
 * Content-Length and leave the GET for the next exchange), then a small
 * request and another download. Every body is checked, the backend
 * connection is reused throughout, and crouter keeps its pipe pooled
 * afterwards. */
static void large_bodies_on_one_connection(const ts_crouter_t *cr, const char *label)
{
    reg("splice.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(cr, "splice.example.com", 1);
    const uint64_t len = 4u * 1024 * 1024;
    ts_conn_t c;
    ts_resp_t r;
    /* Warm one pooled backend connection, then count from there. */
    hit(cr->port, "splice.example.com", "/warm", 200);
    long conns0 = backend_connections(&g_b[2]);
    assert_int_equal(ts_conn_open(&c, cr->port), 0);
    assert_int_equal(ts_conn_send_str(&c, "GET /download?bytes=4194304 HTTP/1.1\r\n"
                                          "Host: splice.example.com\r\n\r\n"), 0);
    assert_int_equal(ts_conn_read_response(&c, &r, false, 30000), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, len);
    assert_true(r.body_fnv == ts_pattern_fnv(len));
    ts_resp_free(&r);

    send_upload_between(&c, "", 0, len, "GET /after-upload HTTP/1.1\r\nHost: splice.example.com\r\n\r\n");
    expect_echo(&c, "/sum", len);
    expect_echo(&c, "/after-upload", 0);

    assert_int_equal(ts_conn_send_str(&c, "GET /download?bytes=1048576 HTTP/1.1\r\n"
                                          "Host: splice.example.com\r\n\r\n"), 0);
    assert_int_equal(ts_conn_read_response(&c, &r, false, 30000), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 1048576);
    assert_true(r.body_fnv == ts_pattern_fnv(1048576));
    ts_resp_free(&r);
    ts_conn_close(&c);

    long conns1 = backend_connections(&g_b[2]);
    int pipes = ts_count_pipe_fds(cr->pid);
    printf("proxy (%s): 4 MiB down, 4 MiB up + pipelined GET, 1 MiB down on one connection: "
           "backend connections +%ld, crouter pipe fds %d\n", label, conns1 - conns0 - 1, pipes);
    /* /count itself is one connection; the exchanges above reused one. */
    assert_true(conns1 - conns0 - 1 <= 1);
    assert_true(pipes >= 2);
}


static void test_large_bodies_keep_alive_reuse_and_pipelining(void **state)
{
    (void)state;
    large_bodies_on_one_connection(&g_cr, "upload copied");
}

/* The same with spliced uploads, on a crouter of its own: an upload first,
 * which leaves its pipe (two fds) pooled, then the sequence. */
static void test_spliced_uploads_keep_alive_reuse_and_pipelining(void **state)
{
    (void)state;
    ts_crouter_t spl;
    assert_int_equal(ts_crouter_start(&spl, &g_nats, "splice_request_bodies: true\n"), 0);
    reg("splice.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(&spl, "splice.example.com", 1);
    int pipes0 = ts_count_pipe_fds(spl.pid);
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, spl.port), 0);
    send_upload_between(&c, "", 0, 1u << 20, "");
    expect_echo(&c, "/sum", 1u << 20);
    ts_conn_close(&c);
    assert_int_equal(ts_count_pipe_fds(spl.pid), pipes0 + 2);
    large_bodies_on_one_connection(&spl, "upload spliced");
    assert_true(ts_crouter_stop_clean(&spl, 15000));
}

/* The bulk buffer of a copied upload is set up where the head is parsed:
 * with a request before it in the same buffer (the head is moved to the
 * front first), and with a 20 KiB head that already needed a bigger buffer
 * (default max_request_header_bytes, so a crouter of its own). Every
 * request is answered in order and every body arrives whole. */
static void test_large_upload_behind_pipelined_request_and_after_big_head(void **state)
{
    (void)state;
    ts_crouter_t cr;
    assert_int_equal(ts_crouter_start(&cr, &g_nats, NULL), 0);
    reg("splice.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(&cr, "splice.example.com", 1);
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, cr.port), 0);
    send_upload_between(&c, "GET /first HTTP/1.1\r\nHost: splice.example.com\r\n\r\n", 0, 3u << 20,
                        "GET /after HTTP/1.1\r\nHost: splice.example.com\r\n\r\n");
    expect_echo(&c, "/first", 0);
    expect_echo(&c, "/sum", 3u << 20);
    expect_echo(&c, "/after", 0);
    send_upload_between(&c, "", 20 * 1024, 256 * 1024, "GET /after-big-head HTTP/1.1\r\nHost: splice.example.com\r\n\r\n");
    expect_echo(&c, "/sum", 256 * 1024);
    expect_echo(&c, "/after-big-head", 0);
    ts_conn_close(&c);
    assert_true(ts_crouter_stop_clean(&cr, 15000));
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atol(line + 6);
    if (f)
        fclose(f);
    return kib;
}

/* Backpressure through the splice path: a client that stops reading a
 * 64 MiB download for a second leaves crouter's memory where it was (the
 * backend waits; at most a pipe and the socket buffers hold bytes), and
 * then gets every byte. Its own crouter with endpoint_timeout 60s: the
 * suite's 5 s would cut the download (as gorouter's endpoint_timeout does)
 * when a sanitizer build on a loaded machine needs longer. */
static void test_spliced_download_to_stalled_client_holds_no_body(void **state)
{
    (void)state;
    ts_crouter_t cr;
    assert_int_equal(ts_crouter_start(&cr, &g_nats, "endpoint_timeout: 60s\n"), 0);
    reg("splice.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(&cr, "splice.example.com", 1);
    const uint64_t len = 64u * 1024 * 1024;
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, cr.port), 0);
    long rss0 = rss_kib(cr.pid);
    assert_int_equal(ts_conn_send_str(&c, "GET /download?bytes=67108864 HTTP/1.1\r\n"
                                          "Host: splice.example.com\r\n\r\n"), 0);
    ts_sleep_ms(1000);
    long rss1 = rss_kib(cr.pid);
    ts_resp_t r;
    assert_int_equal(ts_conn_read_response(&c, &r, false, 60000), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, len);
    assert_true(r.body_fnv == ts_pattern_fnv(len));
    ts_resp_free(&r);
    ts_conn_close(&c);
    printf("proxy: 64 MiB download, client stalled 1 s: crouter RSS %ld -> %ld KiB while stalled\n", rss0, rss1);
    assert_true(rss1 - rss0 < 8 * 1024);
    assert_true(ts_crouter_stop_clean(&cr, 15000));
}

typedef struct {
    ts_conn_t *c;
    uint64_t len;
    int rc;
} writer_t;

static void *chunk_writer(void *arg)
{
    writer_t *w = arg;
    unsigned char buf[65536];
    char hdr[32];
    w->rc = 0;
    for (uint64_t off = 0; off < w->len && !w->rc;) {
        size_t n = (size_t)((w->len - off) < 40000 ? (w->len - off) : 40000);
        ts_pattern_fill(buf, off, n);
        snprintf(hdr, sizeof hdr, "%zx\r\n", n);
        if (ts_conn_send_str(w->c, hdr) || ts_conn_send(w->c, buf, n) || ts_conn_send_str(w->c, "\r\n"))
            w->rc = -1;
        off += n;
    }
    if (!w->rc && ts_conn_send_str(w->c, "0\r\n\r\n"))
        w->rc = -1;
    return NULL;
}

static void test_streaming_echo_both_directions(void **state)
{
    (void)state;
    reg("big.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(&g_cr, "big.example.com", 1);
    const uint64_t len = 4u * 1024 * 1024;
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, g_cr.port), 0);
    assert_int_equal(ts_conn_send_str(&c, "POST /echo HTTP/1.1\r\nHost: big.example.com\r\n"
                                          "Transfer-Encoding: chunked\r\n\r\n"), 0);
    writer_t w = {&c, len, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, chunk_writer, &w), 0);
    ts_resp_t r;
    int rc = ts_conn_read_response(&c, &r, false, 30000);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, len);
    assert_true(r.body_fnv == ts_pattern_fnv(len));
    ts_resp_free(&r);
    ts_conn_close(&c);
}

static void test_expect_100_continue(void **state)
{
    (void)state;
    reg("cont.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_cr, "cont.example.com", 1);
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, g_cr.port), 0);
    assert_int_equal(ts_conn_send_str(&c, "POST /sum HTTP/1.1\r\nHost: cont.example.com\r\nContent-Length: 11\r\n"
                                          "Expect: 100-continue\r\n\r\n"), 0);
    ts_resp_t r;
    if (ts_conn_read_response(&c, &r, true, 3000) != 0)
        fail_msg("no interim response within 3s to Expect: 100-continue (body withheld)");
    assert_int_equal(r.status, 100);
    ts_resp_free(&r);
    assert_int_equal(ts_conn_send_str(&c, "hello world"), 0);
    assert_int_equal(ts_conn_read_response(&c, &r, false, 5000), 0);
    assert_int_equal(r.status, 200);
    json_t *echo = ts_resp_json(&r);
    assert_non_null(echo);
    assert_int_equal(json_integer_value(json_object_get(echo, "body_len")), 11);
    json_decref(echo);
    ts_resp_free(&r);
    ts_conn_close(&c);
}

static void test_websocket_upgrade_echo_outlives_endpoint_timeout(void **state)
{
    (void)state;
    reg("ws.example.com", &g_b[1], NULL, NULL, NULL);
    wait_route(&g_cr, "ws.example.com", 1);
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, g_cr.port), 0);
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    char req[512];
    snprintf(req, sizeof req,
             "GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key);
    assert_int_equal(ts_conn_send_str(&c, req), 0);
    ts_resp_t r;
    assert_int_equal(ts_conn_read_response(&c, &r, true, 5000), 0);
    assert_int_equal(r.status, 101);
    const char *up = ts_resp_header(&r, "Upgrade");
    assert_non_null(up);
    assert_true(strcasecmp(up, "websocket") == 0);
    char accept[32];
    ts_ws_accept(key, accept);
    assert_string_equal(ts_resp_header(&r, "Sec-WebSocket-Accept"), accept);
    ts_resp_free(&r);

    char got[64];
    assert_int_equal(ts_conn_send_str(&c, "ping-1234"), 0);
    assert_int_equal(ts_conn_read_exact(&c, got, 9, 5000), 0);
    assert_memory_equal(got, "ping-1234", 9);

    const size_t big = 256 * 1024;
    unsigned char *out = malloc(big), *in = malloc(big);
    ts_pattern_fill(out, 7, big);
    assert_int_equal(ts_conn_send(&c, out, big), 0);
    assert_int_equal(ts_conn_read_exact(&c, in, big, 10000), 0);
    assert_memory_equal(in, out, big);
    free(out);
    free(in);

    /* endpoint_timeout (3s) does not apply to tunnels */
    ts_sleep_ms(3600);
    assert_int_equal(ts_conn_send_str(&c, "still-there"), 0);
    assert_int_equal(ts_conn_read_exact(&c, got, 11, 5000), 0);
    assert_memory_equal(got, "still-there", 11);
    ts_conn_close(&c);
}

/* ---------------------------------------------------------------- hostile */

#define SMUG_TAIL "GET /smuggled HTTP/1.1\r\nHost: smug.example.com\r\n\r\n"

typedef struct {
    const char *name;
    const char *data;
    bool head_level;   /* rejected from the head alone: 400, backend sees nothing */
} probe_t;

static const probe_t PROBES[] = {
    {"CL+TE", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
              "0\r\n\r\n" SMUG_TAIL, true},
    {"TE+CL", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"
              "0\r\n\r\n" SMUG_TAIL, true},
    {"TE xchunked", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding: xchunked\r\n\r\n"
                    "0\r\n\r\n" SMUG_TAIL, true},
    {"TE space before colon", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding : chunked\r\n\r\n"
                              "0\r\n\r\n" SMUG_TAIL, true},
    {"TE chunked not last", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                            "0\r\n\r\n" SMUG_TAIL, true},
    {"TE two headers", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding: chunked\r\n"
                       "Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" SMUG_TAIL, true},
    {"TE vertical tab", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding:\x0b" "chunked\r\n\r\n"
                        "0\r\n\r\n" SMUG_TAIL, true},
    {"TE obs-fold", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
                    "0\r\n\r\n" SMUG_TAIL, true},
    {"duplicate CL", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nContent-Length: 5\r\nContent-Length: 51\r\n\r\n"
                     "hello" SMUG_TAIL, true},
    {"CL list", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nContent-Length: 5, 51\r\n\r\nhello" SMUG_TAIL, true},
    {"CL plus sign", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nContent-Length: +5\r\n\r\nhello" SMUG_TAIL, true},
    {"CL negative", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nContent-Length: -1\r\n\r\n" SMUG_TAIL, true},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: smug.example.com\r\nX-Folded: a\r\n b\r\n\r\n" SMUG_TAIL, true},
    {"bare CR", "GET / HTTP/1.1\r\nHost: smug.example.com\r\nX-Bare: a\rb\r\n\r\n" SMUG_TAIL, true},
    {"space in header name", "GET / HTTP/1.1\r\nHost: smug.example.com\r\nX Bad: 1\r\n\r\n" SMUG_TAIL, true},
    {"bad chunk size", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "zz\r\n" SMUG_TAIL, false},
    {"chunk size overflow", "POST / HTTP/1.1\r\nHost: smug.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "fffffffffffffffffff1\r\n" SMUG_TAIL, false},
};

static void test_smuggling_probes_rejected_backend_sees_no_second_request(void **state)
{
    (void)state;
    reg("smug.example.com", &g_smug, NULL, NULL, NULL);
    wait_route(&g_cr, "smug.example.com", 1);
    /* control: a body that merely contains a request is just a body */
    long sm0 = 0, n0 = ts_backend_count(&g_smug, &sm0);
    ts_req_t ctl = {.host = "smug.example.com", .path = "/sum", .body = SMUG_TAIL, .body_len = strlen(SMUG_TAIL)};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, g_cr.port, &ctl, &r), 0);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
    long sm1 = 0, n1 = ts_backend_count(&g_smug, &sm1);
    assert_int_equal(n1 - n0, 1);
    assert_int_equal(sm1 - sm0, 0);

    for (size_t i = 0; i < sizeof PROBES / sizeof PROBES[0]; i++) {
        const probe_t *p = &PROBES[i];
        long smb = 0, nb = ts_backend_count(&g_smug, &smb);
        ts_conn_t c;
        assert_int_equal(ts_conn_open(&c, g_cr.port), 0);
        ts_conn_send_str(&c, p->data);
        int rc = ts_conn_read_response(&c, &r, false, 5000);
        long status = rc == 0 ? r.status : 0;
        ts_resp_free(&r);
        size_t extra = 0;
        bool closed = ts_conn_wait_closed(&c, 5000, &extra);
        ts_conn_close(&c);
        long sma = 0, na = ts_backend_count(&g_smug, &sma);
        if (sma != smb)
            fail_msg("probe '%s': the backend saw the smuggled request", p->name);
        if (p->head_level) {
            if (status != 400)
                fail_msg("probe '%s': status %ld, want 400", p->name, status);
            if (na != nb)
                fail_msg("probe '%s': the backend saw %ld request(s), want none", p->name, na - nb);
        } else if (status == 200 || (status != 0 && status < 400)) {
            fail_msg("probe '%s': status %ld, want an error or a closed connection", p->name, status);
        }
        if (!closed)
            fail_msg("probe '%s': connection left open after the rejection", p->name);
        if (extra)
            fail_msg("probe '%s': %zu more bytes (a second response?) after the rejection", p->name, extra);
    }
    assert_string_equal(hit(g_cr.port, "smug.example.com", "/", 200), "smug");
}

static void test_oversized_headers_431(void **state)
{
    (void)state;
    reg("big-head.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_cr, "big-head.example.com", 1);
    size_t cap = 64 * 1024;
    char *req = malloc(cap);
    /* under the 8 KiB limit: fine */
    int n = snprintf(req, cap, "GET / HTTP/1.1\r\nHost: big-head.example.com\r\nX-Big: ");
    memset(req + n, 'a', 4000);
    snprintf(req + n + 4000, cap - (size_t)n - 4000, "\r\nConnection: close\r\n\r\n");
    ts_resp_t r;
    raw_request(g_cr.port, req, &r);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);

    /* one 10000-byte header */
    n = snprintf(req, cap, "GET / HTTP/1.1\r\nHost: big-head.example.com\r\nX-Big: ");
    memset(req + n, 'a', 10000);
    snprintf(req + n + 10000, cap - (size_t)n - 10000, "\r\n\r\n");
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, g_cr.port), 0);
    ts_conn_send_str(&c, req);
    assert_int_equal(ts_conn_read_response(&c, &r, false, 5000), 0);
    if (r.status != 431)
        fail_msg("10000-byte header with max_request_header_bytes 8192: status %ld, want 431", r.status);
    const char *re = ts_resp_header(&r, "X-Cf-Routererror");
    assert_non_null(re);
    assert_string_equal(re, "max-request-size-exceeded");
    ts_resp_free(&r);
    assert_true(ts_conn_wait_closed(&c, 5000, NULL));
    ts_conn_close(&c);

    /* 300 small headers (over the default max_request_headers) */
    n = snprintf(req, cap, "GET / HTTP/1.1\r\nHost: big-head.example.com\r\n");
    for (int i = 0; i < 300; i++)
        n += snprintf(req + n, cap - (size_t)n, "X-H%d: v\r\n", i);
    snprintf(req + n, cap - (size_t)n, "\r\n");
    assert_int_equal(ts_conn_open(&c, g_cr.port), 0);
    ts_conn_send_str(&c, req);
    assert_int_equal(ts_conn_read_response(&c, &r, false, 5000), 0);
    if (r.status != 431)
        fail_msg("300 headers: status %ld, want 431", r.status);
    ts_resp_free(&r);
    ts_conn_close(&c);
    free(req);
}

static void test_500_garbage_connections_then_normal_service(void **state)
{
    (void)state;
    reg("after-garbage.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_cr, "after-garbage.example.com", 1);
    srand(1234);
    /* 50 idle connections stay open throughout */
    ts_conn_t idle[50];
    for (int i = 0; i < 50; i++)
        assert_int_equal(ts_conn_open(&idle[i], g_cr.port), 0);
    for (int round = 0; round < 10; round++) {
        ts_conn_t cs[50];
        for (int i = 0; i < 50; i++) {
            if (ts_conn_open(&cs[i], g_cr.port) != 0)
                fail_msg("connect %d failed during the garbage run", round * 50 + i);
            unsigned char junk[2048];
            size_t len = 0;
            switch ((round * 50 + i) % 6) {
            case 0:
                len = 1 + (size_t)(rand() % 2000);
                for (size_t k = 0; k < len; k++)
                    junk[k] = (unsigned char)rand();
                break;
            case 1:
                len = (size_t)snprintf((char *)junk, sizeof junk, "GET / HTTP/1.1\r\nHost: after-gar");
                break;
            case 2:
                len = 0;
                break;
            case 3:
                len = (size_t)snprintf((char *)junk, sizeof junk, "\r\n\r\n\r\n\r\n");
                break;
            case 4:
                memcpy(junk, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
                len = 11;
                break;
            default:
                len = (size_t)snprintf((char *)junk, sizeof junk, "GET /%c%c HTTP/1.1\r\nHost: \x01\r\n\r\n", 0, 1);
                break;
            }
            if (len)
                ts_conn_send(&cs[i], junk, len);
        }
        for (int i = 0; i < 50; i++) {
            if (i % 2) {
                struct linger lg = {1, 0};
                setsockopt(cs[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            }
            ts_conn_close(&cs[i]);
        }
    }
    assert_true(ts_crouter_alive(&g_cr));
    for (int i = 0; i < 20; i++)
        assert_string_equal(hit(g_cr.port, "after-garbage.example.com", "/", 200), "b1");
    for (int i = 0; i < 50; i++)
        ts_conn_close(&idle[i]);
    ts_resp_t r;
    assert_int_equal(ts_get(g_cr.status_port, NULL, "/health", &r), 0);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
}

static void test_sigterm_completes_in_flight_request(void **state)
{
    (void)state;
    ts_crouter_t cr;
    assert_int_equal(ts_crouter_start(&cr, &g_nats, "drain_timeout: 10s\n"), 0);
    reg("term.example.com", &g_b[2], NULL, NULL, NULL);
    if (!ts_crouter_wait_route(&cr, "term.example.com", 1, 5000)) {
        ts_crouter_stop(&cr, 5000);
        fail_msg("route not registered on the draining router");
    }
    long base = ts_backend_count(&g_b[2], NULL);
    bg_req_t slow;
    bg_start(&slow, cr.port, "term.example.com", "/slow?ms=1500");
    bool reached = wait_count_above(&g_b[2], base, 5000);
    int64_t t_term = ts_now_ms();
    kill(cr.pid, SIGTERM);
    bg_join(&slow);
    int st = ts_wait_process(cr.pid, 15000);
    int64_t took = ts_now_ms() - t_term;
    if (st == -1)
        st = ts_crouter_stop(&cr, 1000);
    else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        ts_print_file_tail("crouter log", cr.log_path, 8000);
    cr.pid = 0;
    assert_true(reached);
    if (slow.rc != 0 || slow.resp.status != 200)
        fail_msg("in-flight request across SIGTERM: status %ld curl %d, want 200", slow.resp.status,
                 slow.resp.curl_code);
    json_t *echo = ts_resp_json(&slow.resp);
    assert_non_null(echo);
    assert_string_equal(ts_echo_str(echo, "target"), "/slow?ms=1500");
    json_decref(echo);
    ts_resp_free(&slow.resp);
    if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("crouter exit status 0x%x after SIGTERM, want exit 0", (unsigned)st);
    if (took > 10000)
        fail_msg("crouter took %lld ms to exit after SIGTERM with one 1.5s request in flight", (long long)took);
}

static long backend_connections(const ts_backend_t *b)
{
    ts_req_t req = {.path = "/count"};
    ts_resp_t r;
    long n = -1;
    if (ts_http(NULL, b->port, &req, &r) == 0) {
        json_t *j = ts_resp_json(&r);
        n = (long)json_integer_value(json_object_get(j, "connections"));
        json_decref(j);
    }
    ts_resp_free(&r);
    return n;
}

static void test_disable_keep_alives_opens_one_backend_connection_per_request(void **state)
{
    (void)state;
    reg("nokeep.example.com", &g_b[2], NULL, NULL, NULL);
    wait_route(&g_lim, "nokeep.example.com", 1);
    long before = backend_connections(&g_b[2]);
    CURL *c = curl_easy_init();
    for (int i = 0; i < 10; i++) {
        ts_req_t req = {.host = "nokeep.example.com", .path = "/"};
        ts_resp_t r;
        assert_int_equal(ts_http(c, g_lim.port, &req, &r), 0);
        assert_int_equal(r.status, 200);
        ts_resp_free(&r);
    }
    curl_easy_cleanup(c);
    long after = backend_connections(&g_b[2]);
    /* 10 proxied requests + the second /count probe */
    if (after - before != 11)
        fail_msg("disable_keep_alives: 10 requests used %ld backend connections, want 10", after - before - 1);
}

static void test_head_204_304_framing_on_one_connection(void **state)
{
    (void)state;
    reg("framing.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_cr, "framing.example.com", 1);
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, g_cr.port), 0);
    assert_int_equal(ts_conn_send_str(&c, "HEAD /h HTTP/1.1\r\nHost: framing.example.com\r\n\r\n"), 0);
    ts_resp_t r;
    assert_int_equal(ts_conn_read_response(&c, &r, true, 5000), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(ts_resp_header(&r, "Content-Length"));
    assert_true(atol(ts_resp_header(&r, "Content-Length")) > 0);
    ts_resp_free(&r);
    const char *codes[] = {"/status/204", "/status/304", "/status/201"};
    long want[] = {204, 304, 201};
    for (int i = 0; i < 3; i++) {
        char req[128];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: framing.example.com\r\n\r\n", codes[i]);
        assert_int_equal(ts_conn_send_str(&c, req), 0);
        assert_int_equal(ts_conn_read_response(&c, &r, false, 5000), 0);
        assert_int_equal(r.status, want[i]);
        if (want[i] != 201)
            assert_int_equal(r.body_len, 0);
        ts_resp_free(&r);
    }
    /* the connection is still in sync: the next response is the right one */
    assert_int_equal(ts_conn_send_str(&c, "GET /last HTTP/1.1\r\nHost: framing.example.com\r\n\r\n"), 0);
    assert_int_equal(ts_conn_read_response(&c, &r, false, 5000), 0);
    assert_int_equal(r.status, 200);
    json_t *echo = ts_resp_json(&r);
    assert_non_null(echo);
    assert_string_equal(ts_echo_str(echo, "target"), "/last");
    json_decref(echo);
    ts_resp_free(&r);
    ts_conn_close(&c);
}

static void test_absolute_form_target_routes_by_its_host(void **state)
{
    (void)state;
    reg("absform.example.com", &g_b[1], NULL, NULL, NULL);
    wait_route(&g_cr, "absform.example.com", 1);
    ts_resp_t r;
    raw_request(g_cr.port,
                "GET http://absform.example.com/abs?q=1 HTTP/1.1\r\nHost: absform.example.com\r\n"
                "Connection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(ts_resp_header(&r, "X-Backend"), "b2");
    ts_resp_free(&r);
    /* RFC 9112 3.2.2: with an absolute-form target the Host header is ignored */
    raw_request(g_cr.port,
                "GET http://absform.example.com/abs HTTP/1.1\r\nHost: nope.example.com\r\n"
                "Connection: close\r\n\r\n", &r);
    if (r.status != 200)
        fail_msg("absolute-form target with another Host header: status %ld, want 200 from the URI's host",
                 r.status);
    ts_resp_free(&r);
}

static void test_access_log_reopened_on_sighup(void **state)
{
    (void)state;
    reg("hup.example.com", &g_b[0], NULL, NULL, NULL);
    wait_route(&g_cr, "hup.example.com", 1);
    hit(g_cr.port, "hup.example.com", "/before-rotate", 200);
    char rotated[600];
    snprintf(rotated, sizeof rotated, "%s.1", g_cr.access_log_path);
    /* wait until the line is written, then rotate like logrotate does */
    int64_t deadline = ts_now_ms() + 5000;
    bool written = false;
    while (!written && ts_now_ms() < deadline) {
        char *log = ts_read_file(g_cr.access_log_path, NULL);
        written = log && strstr(log, "/before-rotate");
        free(log);
        if (!written)
            ts_sleep_ms(20);
    }
    assert_true(written);
    assert_int_equal(rename(g_cr.access_log_path, rotated), 0);
    assert_int_equal(kill(g_cr.pid, SIGHUP), 0);
    /* lines go to the new file once the reopen has happened */
    bool found = false;
    deadline = ts_now_ms() + 5000;
    while (!found && ts_now_ms() < deadline) {
        hit(g_cr.port, "hup.example.com", "/after-rotate", 200);
        char *log = ts_read_file(g_cr.access_log_path, NULL);
        found = log && strstr(log, "/after-rotate");
        free(log);
        if (!found)
            ts_sleep_ms(50);
    }
    assert_true(ts_crouter_alive(&g_cr));
    if (!found)
        fail_msg("after SIGHUP no access log line reached a new %s", g_cr.access_log_path);
}

static void test_idle_and_read_header_timeouts_close_connections(void **state)
{
    (void)state;
    ts_crouter_t cr;
    assert_int_equal(ts_crouter_start(&cr, &g_nats, "read_header_timeout: 1s\nfrontend_idle_timeout: 3s\n"), 0);
    reg("timeouts.example.com", &g_b[0], NULL, NULL, NULL);
    bool ok = ts_crouter_wait_route(&cr, "timeouts.example.com", 1, 5000);

    /* slowloris: a head that never completes is cut after read_header_timeout */
    ts_conn_t slowloris;
    int64_t t0 = ts_now_ms();
    bool opened = ts_conn_open(&slowloris, cr.port) == 0 &&
                  ts_conn_send_str(&slowloris, "GET / HTTP/1.1\r\nHost: timeouts.example.com\r\nX-Slow: ") == 0;
    bool cut = opened && ts_conn_wait_closed(&slowloris, 5000, NULL);
    int64_t slow_took = ts_now_ms() - t0;
    ts_conn_close(&slowloris);

    /* an idle keep-alive connection is closed after frontend_idle_timeout */
    ts_conn_t idle;
    ts_resp_t r;
    bool idle_ok = ts_conn_open(&idle, cr.port) == 0 &&
                   ts_conn_send_str(&idle, "GET / HTTP/1.1\r\nHost: timeouts.example.com\r\n\r\n") == 0 &&
                   ts_conn_read_response(&idle, &r, false, 5000) == 0 && r.status == 200;
    ts_resp_free(&r);
    int64_t t1 = ts_now_ms();
    bool idle_cut = idle_ok && ts_conn_wait_closed(&idle, 8000, NULL);
    int64_t idle_took = ts_now_ms() - t1;
    ts_conn_close(&idle);

    /* a request waiting for a slow backend is not idle */
    ts_get(cr.port, "timeouts.example.com", "/slow?ms=3500", &r);
    long slow_status = r.status;
    ts_resp_free(&r);

    int st = ts_crouter_stop(&cr, 10000);
    assert_true(ok);
    if (!cut || slow_took < 900 || slow_took > 2500)
        fail_msg("incomplete head: closed=%d after %lld ms (read_header_timeout 1s)", cut, (long long)slow_took);
    assert_true(idle_ok);
    if (!idle_cut || idle_took < 2900 || idle_took > 7000)
        fail_msg("idle keep-alive connection: closed=%d after %lld ms (frontend_idle_timeout 3s)", idle_cut,
                 (long long)idle_took);
    if (slow_status != 200)
        fail_msg("request waiting 3.5s for its backend: status %ld, want 200 (idle timeout is 3s)", slow_status);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_sigusr1_drains_health_503_then_exits(void **state)
{
    (void)state;
    ts_crouter_t cr;
    assert_int_equal(ts_crouter_start(&cr, &g_nats, "drain_wait: 1s\ndrain_timeout: 5s\n"), 0);
    reg("usr1.example.com", &g_b[1], NULL, NULL, NULL);
    bool routed = ts_crouter_wait_route(&cr, "usr1.example.com", 1, 5000);
    long base = ts_backend_count(&g_b[1], NULL);
    bg_req_t slow;
    bg_start(&slow, cr.port, "usr1.example.com", "/slow?ms=1800");
    bool reached = wait_count_above(&g_b[1], base, 5000);
    int64_t t0 = ts_now_ms();
    kill(cr.pid, SIGUSR1);
    long health = 0;
    while (ts_now_ms() < t0 + 800) {
        ts_resp_t r;
        ts_get(cr.status_port, NULL, "/health", &r);
        health = r.status;
        ts_resp_free(&r);
        if (health == 503)
            break;
        ts_sleep_ms(20);
    }
    /* still serving during drain_wait */
    ts_resp_t during;
    ts_get(cr.port, "usr1.example.com", "/", &during);
    long during_status = during.status;
    int64_t during_at = ts_now_ms() - t0;
    ts_resp_free(&during);
    bg_join(&slow);
    int st = ts_wait_process(cr.pid, 12000);
    int64_t took = ts_now_ms() - t0;
    if (st == -1)
        st = ts_crouter_stop(&cr, 1000);
    cr.pid = 0;
    assert_true(routed);
    assert_true(reached);
    if (health != 503)
        fail_msg("/health was %ld within 800 ms of SIGUSR1, want 503", health);
    if (during_at < 1000 && during_status != 200)
        fail_msg("request %lld ms into drain_wait: status %ld, want 200", (long long)during_at, during_status);
    if (slow.resp.status != 200)
        fail_msg("in-flight request across SIGUSR1: status %ld, want 200", slow.resp.status);
    ts_resp_free(&slow.resp);
    if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("crouter exit status 0x%x after SIGUSR1, want exit 0", (unsigned)st);
    if (took < 1000 || took > 9000)
        fail_msg("exit %lld ms after SIGUSR1 (drain_wait 1s, drain_timeout 5s)", (long long)took);
}

int main(void)
{
    ts_init("proxy");
#define T(fn) cmocka_unit_test_setup(fn, check_alive)
    const struct CMUnitTest tests[] = {
        T(test_routes_by_host_case_insensitive_port_ignored),
        T(test_context_paths_longest_whole_segment_match),
        T(test_wildcard_routes_match_subdomains_exact_wins),
        T(test_round_robin_spreads_requests_evenly),
        T(test_least_connection_prefers_idle_endpoint),
        T(test_unregister_takes_effect),
        T(test_prune_takes_effect),
        T(test_unknown_route_404),
        T(test_empty_host_400),
        T(test_empty_pool_503_no_endpoints),
        T(test_connection_limit_reached_503),
        T(test_endpoint_failure_502_dead_backend),
        T(test_backend_reset_malformed_timeout_close_mid_body),
        T(test_app_instance_header_routing_and_errors),
        T(test_retries_one_dead_endpoint_all_200),
        T(test_retries_all_dead_502),
        T(test_headers_added_for_backend_and_response),
        T(test_hop_by_hop_headers_stripped),
        T(test_access_log_line_has_gorouter_fields),
        T(test_keepalive_1000_requests_one_connection),
        T(test_pipelined_requests_answered_in_order),
        T(test_16mib_upload_chunked_and_content_length_checksums),
        T(test_16mib_download_chunked_and_content_length_checksums),
        T(test_large_bodies_keep_alive_reuse_and_pipelining),
        T(test_spliced_uploads_keep_alive_reuse_and_pipelining),
        T(test_large_upload_behind_pipelined_request_and_after_big_head),
        T(test_spliced_download_to_stalled_client_holds_no_body),
        T(test_streaming_echo_both_directions),
        T(test_expect_100_continue),
        T(test_websocket_upgrade_echo_outlives_endpoint_timeout),
        T(test_smuggling_probes_rejected_backend_sees_no_second_request),
        T(test_oversized_headers_431),
        T(test_500_garbage_connections_then_normal_service),
        T(test_sigterm_completes_in_flight_request),
        T(test_disable_keep_alives_opens_one_backend_connection_per_request),
        T(test_head_204_304_framing_on_one_connection),
        T(test_absolute_form_target_routes_by_its_host),
        T(test_access_log_reopened_on_sighup),
        T(test_idle_and_read_header_timeouts_close_connections),
        T(test_sigusr1_drains_health_503_then_exits),
    };
#undef T
    return ts_finish(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
