/* test/soak/valgrind_scenario.c - issue 7: a short real scenario for a
 * crouter running under valgrind (scripts/valgrind.sh sets CROUTER_BIN to a
 * wrapper that runs `valgrind --leak-check=full --error-exitcode=1 ...
 * crouter`).
 *
 * nats-server, two fake backends, a dead port. A few hundred requests:
 * keep-alive GETs, uploads (Content-Length and chunked), downloads, unknown
 * hosts (404), a dead endpoint (502), sticky sessions (JSESSIONID +
 * __VCAP_ID__), a WebSocket upgrade with echo, a malformed request (400), a
 * client that leaves mid-upload, registration churn and the status API
 * with good and wrong credentials. Then SIGTERM: crouter must exit 0,
 * which under the wrapper means valgrind found no error and no definite
 * leak. valgrind's summary lines are printed from crouter's log.
 *
 * Runs without valgrind too (then it is just a smoke test of the scenario).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>

#include "testsupport.h"

static void expect_status(uint16_t port, ts_req_t *req, long want, CURL *reuse)
{
    ts_resp_t r;
    ts_http(reuse, port, req, &r);
    if (r.status != want)
        fail_msg("%s %s (Host %s): status %ld, want %ld", req->method ? req->method : "GET",
                 req->path ? req->path : "/", req->host ? req->host : "-", r.status, want);
    ts_resp_free(&r);
}

static void websocket_echo(uint16_t port)
{
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, port), 0);
    assert_int_equal(ts_conn_send_str(&c, "GET /chat HTTP/1.1\r\nHost: vg.example.com\r\nUpgrade: websocket\r\n"
                                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                          "Sec-WebSocket-Version: 13\r\n\r\n"),
                     0);
    ts_resp_t r;
    assert_int_equal(ts_conn_read_response(&c, &r, true, 20000), 0);
    assert_int_equal(r.status, 101);
    ts_resp_free(&r);
    for (int i = 0; i < 5; i++) {
        char got[16];
        assert_int_equal(ts_conn_send_str(&c, "ping-1234"), 0);
        assert_int_equal(ts_conn_read_exact(&c, got, 9, 20000), 0);
        assert_memory_equal(got, "ping-1234", 9);
    }
    ts_conn_close(&c);
}

static void raw_exchange(uint16_t port, const char *data, long want_status)
{
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, port), 0);
    assert_int_equal(ts_conn_send_str(&c, data), 0);
    ts_resp_t r;
    memset(&r, 0, sizeof r);
    if (want_status) {
        assert_int_equal(ts_conn_read_response(&c, &r, false, 20000), 0);
        assert_int_equal(r.status, want_status);
    }
    ts_resp_free(&r);
    ts_conn_close(&c);
}

static void test_scenario_then_sigterm_exits_clean(void **state)
{
    (void)state;
    ts_nats_t nats;
    assert_int_equal(ts_nats_start(&nats, false), 0);
    natsConnection *nc = ts_nats_connect(&nats);
    assert_non_null(nc);
    ts_backend_t b1, b2;
    assert_int_equal(ts_backend_start(&b1, "vg1", NULL), 0);
    assert_int_equal(ts_backend_start(&b2, "vg2", NULL), 0);
    ts_crouter_t cr;
    /* valgrind makes start-up and every request slow: generous timeouts */
    assert_int_equal(ts_crouter_spawn(&cr, &nats, "endpoint_timeout: 30s\nendpoint_dial_timeout: 5s\n"
                                                  "drain_timeout: 30s\nworkers: 2\n"),
                     0);
    if (!ts_crouter_wait_healthy(&cr, 120000))
        fail_msg("crouter under %s never became healthy", ts_crouter_bin());
    fprintf(stderr, "crouter (%s) healthy\n", ts_crouter_bin());

    ts_route_t r1 = {.port = b1.port, .uris = {"vg.example.com"}, .app = "vg-app", .private_instance_id = "vg-1",
                     .private_instance_index = "0"};
    ts_route_t r2 = {.port = b2.port, .uris = {"vg.example.com"}, .app = "vg-app", .private_instance_id = "vg-2",
                     .private_instance_index = "1"};
    ts_route_t dead = {.port = ts_free_port(), .uris = {"dead.example.com"}};
    assert_int_equal(ts_nats_register(nc, &r1), 0);
    assert_int_equal(ts_nats_register(nc, &r2), 0);
    assert_int_equal(ts_nats_register(nc, &dead), 0);
    assert_true(ts_crouter_wait_route(&cr, "vg.example.com", 2, 30000));
    assert_true(ts_crouter_wait_route(&cr, "dead.example.com", 1, 30000));

    long requests = 0;
    /* keep-alive GETs on one handle */
    CURL *ka = curl_easy_init();
    for (int i = 0; i < 150; i++, requests++) {
        ts_req_t req = {.host = "vg.example.com", .path = "/ka", .timeout_ms = 30000};
        expect_status(cr.port, &req, 200, ka);
    }
    /* uploads and downloads */
    for (int i = 0; i < 10; i++, requests += 3) {
        ts_req_t up = {.host = "vg.example.com", .path = "/up", .upload_pattern_len = 100000,
                       .chunked_upload = i % 2 == 0, .timeout_ms = 30000};
        expect_status(cr.port, &up, 200, ka);
        ts_req_t dl = {.host = "vg.example.com", .path = "/download?bytes=200000&chunked=1", .sink_checksum = true,
                       .timeout_ms = 30000};
        expect_status(cr.port, &dl, 200, ka);
        ts_req_t echo = {.host = "vg.example.com", .path = "/echo", .body = "hello", .body_len = 5,
                         .timeout_ms = 30000};
        expect_status(cr.port, &echo, 200, ka);
    }
    curl_easy_cleanup(ka);
    /* errors: unknown host, dead endpoint, bad request, too-big head */
    for (int i = 0; i < 40; i++, requests++) {
        char host[64];
        snprintf(host, sizeof host, "nobody%d.example.com", i);
        ts_req_t req = {.host = host, .timeout_ms = 30000};
        expect_status(cr.port, &req, 404, NULL);
    }
    for (int i = 0; i < 10; i++, requests++) {
        ts_req_t req = {.host = "dead.example.com", .timeout_ms = 30000};
        expect_status(cr.port, &req, 502, NULL);
    }
    for (int i = 0; i < 10; i++, requests++)
        raw_exchange(cr.port, "POST / HTTP/1.1\r\nHost: vg.example.com\r\nContent-Length: 5\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n", 400);
    /* a client that leaves mid-upload */
    for (int i = 0; i < 10; i++, requests++)
        raw_exchange(cr.port, "POST /up HTTP/1.1\r\nHost: vg.example.com\r\nContent-Length: 100000\r\n\r\npartial", 0);
    /* sticky: the backend sets JSESSIONID, crouter adds __VCAP_ID__, the
     * client sends both back and stays on that instance */
    for (int i = 0; i < 10; i++) {
        ts_req_t first = {.host = "vg.example.com", .path = "/cookie?set=JSESSIONID%3Ds1", .timeout_ms = 30000};
        ts_resp_t r;
        assert_int_equal(ts_http(NULL, cr.port, &first, &r), 0);
        requests++;
        const char *vcap = ts_resp_set_cookie(&r, "__VCAP_ID__");
        assert_non_null(vcap);
        char cookie[128];
        snprintf(cookie, sizeof cookie, "Cookie: JSESSIONID=s1; %.*s", (int)strcspn(vcap, ";"), vcap);
        const char *backend = ts_resp_header(&r, "X-Backend");
        char want[16];
        snprintf(want, sizeof want, "%s", backend ? backend : "");
        ts_resp_free(&r);
        for (int k = 0; k < 5; k++, requests++) {
            ts_req_t again = {.host = "vg.example.com", .headers = {cookie}, .timeout_ms = 30000};
            assert_int_equal(ts_http(NULL, cr.port, &again, &r), 0);
            assert_int_equal(r.status, 200);
            assert_string_equal(ts_resp_header(&r, "X-Backend"), want);
            ts_resp_free(&r);
        }
    }
    /* WebSocket upgrades */
    for (int i = 0; i < 5; i++, requests++)
        websocket_echo(cr.port);
    /* registration churn and the status API */
    for (int i = 0; i < 20; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "churn%d.example.com", i);
        ts_route_t c = {.port = b1.port, .uris = {uri}};
        assert_int_equal(ts_nats_register(nc, &c), 0);
        assert_int_equal(ts_nats_unregister(nc, &c), 0);
    }
    assert_int_equal(ts_nats_unregister(nc, &dead), 0);
    assert_true(ts_crouter_wait_route(&cr, "dead.example.com", 0, 30000));
    char good[80];
    snprintf(good, sizeof good, "%s:%s", cr.user, cr.pass);
    const char *paths[] = {"/routes", "/varz", "/metrics"};
    for (int i = 0; i < 3; i++) {
        ts_req_t ok = {.path = paths[i], .userpwd = good, .timeout_ms = 30000};
        expect_status(cr.status_port, &ok, 200, NULL);
        ts_req_t bad = {.path = paths[i], .userpwd = "router-status:wrong", .timeout_ms = 30000};
        expect_status(cr.status_port, &bad, 401, NULL);
    }
    fprintf(stderr, "scenario: %ld proxied requests done, stopping crouter with SIGTERM\n", requests);

    int st = ts_crouter_stop(&cr, 120000);
    ts_nats_close(nc);
    ts_backend_stop(&b1);
    ts_backend_stop(&b2);
    ts_nats_stop(&nats);

    char *log = ts_read_file(cr.log_path, NULL);
    assert_non_null(log);
    bool under_valgrind = strstr(ts_crouter_bin(), "valgrind") != NULL, clean_summary = false;
    for (char *line = log; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, "ERROR SUMMARY") || strstr(line, "definitely lost") || strstr(line, "indirectly lost") ||
            strstr(line, "possibly lost") || strstr(line, "still reachable") || strstr(line, "in use at exit"))
            fprintf(stderr, "%s\n", line);
        clean_summary = clean_summary || strstr(line, "ERROR SUMMARY: 0 errors") != NULL;
        line = nl ? nl + 1 : NULL;
    }
    free(log);
    if (under_valgrind && !clean_summary)
        fail_msg("no \"ERROR SUMMARY: 0 errors\" from valgrind in crouter's log");
    if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("crouter exit status 0x%x after SIGTERM (valgrind exits 1 on an error or a definite leak)",
                 (unsigned)st);
}

int main(void)
{
    ts_init("valgrind");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scenario_then_sigterm_exits_clean),
    };
    return ts_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
