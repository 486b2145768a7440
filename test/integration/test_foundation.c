/* test/integration/test_foundation.c - issue 2 end to end: NATS-fed registry,
 * status API, router.start/greet, pruning, NATS restarts, crouterctl.
 *
 * One nats-server (with protocol tracing, so a router.start published while
 * no test client is connected can still be seen in its log) is shared by
 * the file; each test starts the crouter it needs and its teardown stops
 * it, failing the test when crouter does not exit cleanly (a crash or an
 * ASan/LSan report at exit).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testsupport.h"

static ts_nats_t g_nats;

typedef struct {
    ts_crouter_t cr;
    bool started;
    natsConnection *nc;
    ts_nats_t extra_nats;   /* a second server some tests start */
} fx_t;

static int group_setup(void **state)
{
    (void)state;
    return ts_nats_start(&g_nats, true);
}

static int group_teardown(void **state)
{
    (void)state;
    ts_nats_stop(&g_nats);
    return 0;
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    f->nc = ts_nats_connect(&g_nats);
    *state = f;
    return f->nc ? 0 : -1;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    int rc = 0;
    if (f->started) {
        if (!ts_crouter_stop_clean(&f->cr, 10000)) {
            fprintf(stderr, "crouter exit status 0x%x after SIGTERM (expected exit 0)\n", (unsigned)f->cr.exit_status);
            rc = -1;
        }
    }
    ts_nats_close(f->nc);
    if (f->extra_nats.pid > 0)
        ts_nats_stop(&f->extra_nats);
    free(f);
    return rc;
}

static void start_crouter(fx_t *f, const char *extra_yaml)
{
    f->started = true;
    assert_int_equal(ts_crouter_start(&f->cr, &g_nats, extra_yaml), 0);
}

static char *userpwd(const ts_crouter_t *cr)
{
    static char buf[80];
    snprintf(buf, sizeof buf, "%s:%s", cr->user, cr->pass);
    return buf;
}

static bool is_uuid(const char *s)
{
    regex_t re;
    regcomp(&re, "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", REG_EXTENDED | REG_NOSUB);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* Checks a router.start / router.greet payload: compact JSON with gorouter's
 * keys in gorouter's order. Returns the id (malloc'd). */
static char *check_start_payload(const char *data, size_t len, unsigned index, long min_reg_s, long prune_s)
{
    json_error_t err;
    json_t *j = json_loadb(data, len, 0, &err);
    if (!j)
        fail_msg("router.start/greet payload is not JSON: %.*s (%s)", (int)len, data, err.text);
    assert_true(json_is_object(j));
    const char *want_keys[] = {"id", "hosts", "minimumRegisterIntervalInSeconds", "pruneThresholdInSeconds"};
    assert_int_equal(json_object_size(j), 4);
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val) {
        (void)val;
        assert_string_equal(key, want_keys[i]);
        i++;
    }
    const char *id = json_string_value(json_object_get(j, "id"));
    assert_non_null(id);
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%u-", index);
    assert_true(strncmp(id, prefix, strlen(prefix)) == 0);
    if (!is_uuid(id + strlen(prefix)))
        fail_msg("router id '%s' is not <index>-<uuid>", id);
    json_t *hosts = json_object_get(j, "hosts");
    assert_true(json_is_array(hosts));
    assert_true(json_array_size(hosts) >= 1);
    unsigned char addr[16];
    const char *h0 = json_string_value(json_array_get(hosts, 0));
    assert_non_null(h0);
    assert_true(inet_pton(AF_INET, h0, addr) == 1 || inet_pton(AF_INET6, h0, addr) == 1);
    assert_true(json_is_integer(json_object_get(j, "minimumRegisterIntervalInSeconds")));
    assert_int_equal(json_integer_value(json_object_get(j, "minimumRegisterIntervalInSeconds")), min_reg_s);
    assert_true(json_is_integer(json_object_get(j, "pruneThresholdInSeconds")));
    assert_int_equal(json_integer_value(json_object_get(j, "pruneThresholdInSeconds")), prune_s);
    char *out = strdup(id);
    json_decref(j);
    return out;
}

/* ------------------------------------------------------------------ /health */

static void test_health_503_before_start_delay_then_200(void **state)
{
    fx_t *f = *state;
    int64_t t0 = ts_now_ms();
    f->started = true;
    assert_int_equal(ts_crouter_spawn(&f->cr, &g_nats, "start_response_delay_interval: 2s\n"), 0);

    long first_status = 0;
    int64_t t_ok = 0;
    ts_resp_t r;
    int64_t deadline = t0 + 20000;
    while (ts_now_ms() < deadline) {
        assert_true(ts_crouter_alive(&f->cr));
        ts_req_t req = {.path = "/health", .timeout_ms = 1000};
        if (ts_http(NULL, f->cr.status_port, &req, &r) == 0) {
            if (!first_status) {
                first_status = r.status;
                if (r.status == 503)
                    assert_int_equal(r.body_len, 0);
            }
            if (r.status == 200) {
                t_ok = ts_now_ms();
                assert_string_equal(r.body, "ok\n");
                ts_resp_free(&r);
                break;
            }
            assert_int_equal(r.status, 503);
        }
        ts_resp_free(&r);
        ts_sleep_ms(25);
    }
    assert_int_equal(first_status, 503);
    assert_true(t_ok != 0);
    /* healthy no earlier than start_response_delay_interval after spawn */
    if (t_ok - t0 < 2000)
        fail_msg("/health was 200 after %lld ms, before the 2s start_response_delay_interval",
                 (long long)(t_ok - t0));

    assert_int_equal(ts_get(f->cr.status_port, NULL, "/healthz", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    ts_resp_free(&r);
}

static void test_health_503_while_nats_unreachable_then_200(void **state)
{
    fx_t *f = *state;
    uint16_t nats_port = ts_free_port();
    char extra[200];
    snprintf(extra, sizeof extra, "nats:\n  hosts:\n  - hostname: 127.0.0.1\n    port: %u\n", nats_port);
    f->started = true;
    assert_int_equal(ts_crouter_spawn(&f->cr, NULL, extra), 0);

    /* Unlike gorouter, crouter keeps running without NATS, reporting 503. */
    int64_t until = ts_now_ms() + 2500;
    long seen = 0;
    while (ts_now_ms() < until) {
        assert_true(ts_crouter_alive(&f->cr));
        ts_resp_t r;
        if (ts_get(f->cr.status_port, NULL, "/health", &r) == 0) {
            assert_int_equal(r.status, 503);
            seen++;
        }
        ts_resp_free(&r);
        ts_sleep_ms(50);
    }
    assert_true(seen > 0);

    assert_int_equal(ts_nats_start_on_port(&f->extra_nats, nats_port, false), 0);
    assert_true(ts_crouter_wait_healthy(&f->cr, 15000));
}

/* ------------------------------------------------------------------ /routes */

static void expect_401(uint16_t port, const char *path, const char *up)
{
    ts_req_t req = {.path = path, .userpwd = up};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, port, &req, &r), 0);
    if (r.status != 401)
        fail_msg("GET %s on port %u with auth '%s': status %ld, want 401", path, port, up ? up : "(none)", r.status);
    const char *wa = ts_resp_header(&r, "WWW-Authenticate");
    assert_non_null(wa);
    assert_true(strncmp(wa, "Basic", 5) == 0);
    ts_resp_free(&r);
}

static void test_routes_requires_basic_auth(void **state)
{
    fx_t *f = *state;
    start_crouter(f, NULL);
    char wrong[80];
    snprintf(wrong, sizeof wrong, "%s:not-the-password", f->cr.user);
    uint16_t ports[] = {f->cr.routes_port, f->cr.status_port};
    for (size_t i = 0; i < 2; i++) {
        expect_401(ports[i], "/routes", NULL);
        expect_401(ports[i], "/routes", wrong);
        expect_401(ports[i], "/routes", "nobody:");
        ts_req_t req = {.path = "/routes", .userpwd = userpwd(&f->cr)};
        ts_resp_t r;
        assert_int_equal(ts_http(NULL, ports[i], &req, &r), 0);
        assert_int_equal(r.status, 200);
        const char *ct = ts_resp_header(&r, "Content-Type");
        assert_non_null(ct);
        assert_true(strncmp(ct, "application/json", 16) == 0);
        json_t *j = ts_resp_json(&r);
        assert_true(json_is_object(j));
        json_decref(j);
        ts_resp_free(&r);
    }
    expect_401(f->cr.status_port, "/varz", NULL);
    expect_401(f->cr.status_port, "/varz", wrong);
    expect_401(f->cr.status_port, "/metrics", NULL);
    /* /health needs no credentials */
    ts_resp_t r;
    assert_int_equal(ts_get(f->cr.status_port, NULL, "/health", &r), 0);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
}

static char *route_entry_compact(const ts_crouter_t *cr, const char *key)
{
    json_t *routes = ts_crouter_routes(cr);
    assert_non_null(routes);
    json_t *eps = json_object_get(routes, key);
    if (!eps) {
        char *all = json_dumps(routes, JSON_COMPACT);
        fail_msg("route '%s' missing from /routes: %s", key, all);
    }
    char *s = json_dumps(eps, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(routes);
    return s;
}

static void test_routes_json_exact_fields_for_registered_endpoints(void **state)
{
    fx_t *f = *state;
    start_crouter(f, "droplet_stale_threshold: 120s\n");
    ts_route_t full = {.port = 61001, .uris = {"Routes-Json.Example.com/some/path"}, .app = "app-guid-1",
                       .private_instance_id = "pid-1", .private_instance_index = "0",
                       .stale_threshold_in_seconds = 30, .tags_json = "{\"component\":\"dea\"}"};
    ts_route_t bare = {.port = 61002, .uris = {"bare.example.com"}};
    ts_route_t lb = {.port = 61003, .uris = {"lb.example.com"}, .lb_algo = "least-connection", .tags_json = "{}"};
    assert_int_equal(ts_nats_register(f->nc, &full), 0);
    assert_int_equal(ts_nats_register(f->nc, &bare), 0);
    assert_int_equal(ts_nats_register(f->nc, &lb), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "routes-json.example.com/some/path", 1, 5000));
    assert_true(ts_crouter_wait_route(&f->cr, "bare.example.com", 1, 5000));
    assert_true(ts_crouter_wait_route(&f->cr, "lb.example.com", 1, 5000));

    char *s = route_entry_compact(&f->cr, "routes-json.example.com/some/path");
    assert_string_equal(s, "[{\"address\":\"127.0.0.1:61001\",\"availability_zone\":\"\",\"protocol\":\"http1\","
                           "\"tls\":false,\"ttl\":30,\"tags\":{\"component\":\"dea\"},"
                           "\"private_instance_id\":\"pid-1\"}]");
    free(s);
    s = route_entry_compact(&f->cr, "bare.example.com");
    assert_string_equal(s, "[{\"address\":\"127.0.0.1:61002\",\"availability_zone\":\"\",\"protocol\":\"http1\","
                           "\"tls\":false,\"ttl\":120,\"tags\":null}]");
    free(s);
    s = route_entry_compact(&f->cr, "lb.example.com");
    assert_string_equal(s, "[{\"address\":\"127.0.0.1:61003\",\"availability_zone\":\"\",\"protocol\":\"http1\","
                           "\"tls\":false,\"ttl\":120,\"tags\":{},\"load_balancing_algorithm\":\"least-connection\"}]");
    free(s);

    /* re-registering the same address with a new instance id replaces it in place */
    ts_route_t bare2 = bare;
    bare2.private_instance_id = "pid-new";
    assert_int_equal(ts_nats_register(f->nc, &bare2), 0);
    ts_route_t second = {.port = 61004, .uris = {"bare.example.com"}};
    assert_int_equal(ts_nats_register(f->nc, &second), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "bare.example.com", 2, 5000));
    s = route_entry_compact(&f->cr, "bare.example.com");
    assert_string_equal(s, "[{\"address\":\"127.0.0.1:61002\",\"availability_zone\":\"\",\"protocol\":\"http1\","
                           "\"tls\":false,\"ttl\":120,\"tags\":null,\"private_instance_id\":\"pid-new\"},"
                           "{\"address\":\"127.0.0.1:61004\",\"availability_zone\":\"\",\"protocol\":\"http1\","
                           "\"tls\":false,\"ttl\":120,\"tags\":null}]");
    free(s);

    /* unregister removes by address, whatever the instance id says */
    ts_route_t unreg = bare;
    unreg.private_instance_id = "some-other-id";
    assert_int_equal(ts_nats_unregister(f->nc, &unreg), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "bare.example.com", 1, 5000));
    assert_int_equal(ts_nats_unregister(f->nc, &second), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "bare.example.com", 0, 5000));
}

/* ------------------------------------------------------- router.start/greet */

static void test_router_start_on_connect_and_greet_reply(void **state)
{
    fx_t *f = *state;
    natsSubscription *sub = NULL;
    assert_int_equal(natsConnection_SubscribeSync(&sub, f->nc, "router.start"), NATS_OK);
    assert_int_equal(natsConnection_FlushTimeout(f->nc, 2000), NATS_OK);

    start_crouter(f, "index: 3\ndroplet_stale_threshold: 7s\nprune_stale_droplets_interval: 1s\n");

    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, sub, 10000);
    if (s != NATS_OK)
        fail_msg("no router.start within 10s of crouter start: %s", natsStatus_GetText(s));
    char *start_id = check_start_payload(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 3, 1, 7);
    natsMsg_Destroy(m);

    natsMsg *reply = NULL;
    s = natsConnection_RequestString(&reply, f->nc, "router.greet", "", 5000);
    if (s != NATS_OK)
        fail_msg("no reply to router.greet: %s", natsStatus_GetText(s));
    char *greet_id = check_start_payload(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 3, 1, 7);
    assert_string_equal(start_id, greet_id);
    /* compact, as gorouter's json.Marshal */
    assert_null(memchr(natsMsg_GetData(reply), ' ', (size_t)natsMsg_GetDataLength(reply)));
    natsMsg_Destroy(reply);

    /* a second greet gets the same id (fixed for the process) */
    s = natsConnection_RequestString(&reply, f->nc, "router.greet", "", 5000);
    assert_int_equal(s, NATS_OK);
    char *again = check_start_payload(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 3, 1, 7);
    assert_string_equal(again, start_id);
    natsMsg_Destroy(reply);
    free(again);
    free(start_id);
    free(greet_id);
    natsSubscription_Destroy(sub);
}

/* Polls the (traced) nats-server log for a router.start publish carrying id. */
static bool wait_start_in_trace(const ts_nats_t *n, const char *id, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    do {
        char *log = ts_read_file(n->log_path, NULL);
        bool found = false;
        if (log) {
            const char *p = strstr(log, "PUB router.start");
            found = p && strstr(p, id);
            free(log);
        }
        if (found)
            return true;
        ts_sleep_ms(50);
    } while (ts_now_ms() < deadline);
    return false;
}

static void test_nats_restart_start_published_routes_survive_new_registrations_work(void **state)
{
    fx_t *f = *state;
    natsSubscription *sub = NULL;
    assert_int_equal(natsConnection_SubscribeSync(&sub, f->nc, "router.start"), NATS_OK);
    assert_int_equal(natsConnection_FlushTimeout(f->nc, 2000), NATS_OK);
    /* no periodic router.start: the one after the restart must come from the reconnect */
    start_crouter(f, "droplet_stale_threshold: 120s\npublish_start_message_interval: 0\n");
    natsMsg *m = NULL;
    assert_int_equal(natsSubscription_NextMsg(&m, sub, 10000), NATS_OK);
    char *id = check_start_payload(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, 1, 120);
    natsMsg_Destroy(m);
    natsSubscription_Destroy(sub);

    ts_route_t before = {.port = 61101, .uris = {"survives.example.com"}, .private_instance_id = "s-1"};
    assert_int_equal(ts_nats_register(f->nc, &before), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "survives.example.com", 1, 5000));

    assert_int_equal(ts_nats_restart(&g_nats), 0);
    /* crouter announces itself again on the new server (seen in its trace) */
    if (!wait_start_in_trace(&g_nats, id, 20000))
        fail_msg("no router.start with id %s after the NATS restart", id);
    free(id);
    assert_true(ts_crouter_alive(&f->cr));

    /* the registry survived the outage */
    json_t *routes = ts_crouter_routes(&f->cr);
    assert_non_null(routes);
    assert_int_equal(json_array_size(json_object_get(routes, "survives.example.com")), 1);
    json_decref(routes);

    /* registrations after the reconnect are applied */
    assert_true(ts_nats_wait_connected(f->nc, 10000));
    ts_route_t after = {.port = 61102, .uris = {"after-restart.example.com"}};
    assert_int_equal(ts_nats_register(f->nc, &after), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "after-restart.example.com", 1, 10000));
    assert_int_equal(ts_nats_unregister(f->nc, &before), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "survives.example.com", 0, 5000));
}

/* ------------------------------------------------------------------ pruning */

static void test_prune_after_droplet_stale_threshold(void **state)
{
    fx_t *f = *state;
    start_crouter(f, "droplet_stale_threshold: 2s\nprune_stale_droplets_interval: 1s\n"
                     "start_response_delay_interval: 1s\n");
    ts_route_t stale = {.port = 61201, .uris = {"stale.example.com"}};
    ts_route_t fresh = {.port = 61202, .uris = {"fresh.example.com"}};
    int64_t t_reg = ts_now_ms();
    assert_int_equal(ts_nats_register(f->nc, &stale), 0);
    assert_int_equal(ts_nats_register(f->nc, &fresh), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "stale.example.com", 1, 1500));
    assert_true(ts_crouter_wait_route(&f->cr, "fresh.example.com", 1, 1500));

    /* Poll first, then heartbeat: a heartbeat can re-create a pruned route,
     * so the poll must come between a prune and the next heartbeat. Runs
     * 1.5 s past the stale route's pruning so several cycles see fresh. */
    int64_t last_beat = ts_now_ms(), t_gone = 0;
    while (ts_now_ms() < (t_gone ? t_gone + 1500 : t_reg + 8000)) {
        json_t *routes = ts_crouter_routes(&f->cr);
        assert_non_null(routes);
        bool stale_there = json_object_get(routes, "stale.example.com") != NULL;
        bool fresh_there = json_object_get(routes, "fresh.example.com") != NULL;
        json_decref(routes);
        if (!fresh_there)
            fail_msg("a route re-registered every 500 ms was pruned (threshold 2s)");
        if (!stale_there && !t_gone)
            t_gone = ts_now_ms();
        if (ts_now_ms() - last_beat >= 500) {
            assert_int_equal(ts_nats_register(f->nc, &fresh), 0);
            last_beat = ts_now_ms();
        }
        ts_sleep_ms(50);
    }
    if (!t_gone)
        fail_msg("stale route not pruned within 8s (threshold 2s, interval 1s)");
    if (t_gone - t_reg < 2000)
        fail_msg("route pruned after %lld ms, before the 2s threshold", (long long)(t_gone - t_reg));
}

static void test_prune_honours_shorter_stale_threshold_in_seconds(void **state)
{
    fx_t *f = *state;
    start_crouter(f, "droplet_stale_threshold: 60s\nprune_stale_droplets_interval: 1s\n");
    ts_route_t shortttl = {.port = 61211, .uris = {"short-ttl.example.com"}, .stale_threshold_in_seconds = 1};
    ts_route_t longttl = {.port = 61212, .uris = {"long-ttl.example.com"}, .stale_threshold_in_seconds = 600};
    int64_t t_reg = ts_now_ms();
    assert_int_equal(ts_nats_register(f->nc, &shortttl), 0);
    assert_int_equal(ts_nats_register(f->nc, &longttl), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "long-ttl.example.com", 1, 2000));
    /* ttl is clamped to droplet_stale_threshold */
    json_t *routes = ts_crouter_routes(&f->cr);
    json_t *ep = json_array_get(json_object_get(routes, "long-ttl.example.com"), 0);
    assert_int_equal(json_integer_value(json_object_get(ep, "ttl")), 60);
    json_decref(routes);
    assert_true(ts_crouter_wait_route(&f->cr, "short-ttl.example.com", 0, 6000));
    assert_true(ts_now_ms() - t_reg >= 1000);
    assert_true(ts_crouter_wait_route(&f->cr, "long-ttl.example.com", 1, 100));
}

/* ------------------------------------------------------- malformed messages */

static bool find_counter(json_t *j, const char *needle, json_int_t *out)
{
    const char *key;
    json_t *v;
    if (!json_is_object(j))
        return false;
    json_object_foreach(j, key, v) {
        if (strstr(key, needle) && json_is_number(v)) {
            *out = (json_int_t)json_number_value(v);
            return true;
        }
        if (json_is_object(v) && find_counter(v, needle, out))
            return true;
    }
    return false;
}

static void test_100_malformed_messages_then_good_one(void **state)
{
    fx_t *f = *state;
    start_crouter(f, NULL);
    static const char *bad[10] = {
        "not json at all",
        "{\"host\":\"127.0.0.1\",\"port\":",
        "[]",
        "{\"host\":\"127.0.0.1\",\"port\":\"80\",\"uris\":[\"malformed.example.com\"]}",
        "{\"host\":\"127.0.0.1\",\"port\":80,\"uris\":\"malformed.example.com\"}",
        "{\"port\":80,\"uris\":[\"malformed.example.com\"]}",
        "{\"host\":\"127.0.0.1\",\"uris\":[\"malformed.example.com\"]}",
        "{\"host\":\"127.0.0.1\",\"port\":80}",
        "{\"host\":\"127.0.0.1\",\"port\":80,\"uris\":[\"malformed.example.com\"],\"private_instance_index\":3}",
        "{\"host\":\"127.0.0.1\",\"port\":80,\"uris\":[\"malformed.example.com\"],\"tags\":{\"a\":1}}",
    };
    for (int i = 0; i < 100; i++)
        assert_int_equal(ts_nats_publish(f->nc, "router.register", bad[i % 10], strlen(bad[i % 10])), 0);
    ts_route_t good = {.port = 61301, .uris = {"good-after-bad.example.com"}};
    assert_int_equal(ts_nats_register(f->nc, &good), 0);
    assert_true(ts_crouter_wait_route(&f->cr, "good-after-bad.example.com", 1, 5000));
    assert_true(ts_crouter_alive(&f->cr));

    json_t *routes = ts_crouter_routes(&f->cr);
    assert_non_null(routes);
    assert_null(json_object_get(routes, "malformed.example.com"));
    assert_int_equal(json_object_size(routes), 1);
    json_decref(routes);

    json_t *varz = ts_crouter_varz(&f->cr);
    assert_non_null(varz);
    json_int_t rejected = -1;
    if (!find_counter(varz, "rejected", &rejected)) {
        char *s = json_dumps(varz, JSON_COMPACT);
        fail_msg("/varz has no *rejected* counter: %s", s);
    }
    assert_int_equal(rejected, 100);
    json_decref(varz);
}

/* ---------------------------------------------------------------- crouterctl */

static void test_crouterctl_register_routes_unregister_round_trip(void **state)
{
    fx_t *f = *state;
    start_crouter(f, NULL);
    const char *ctl = ts_crouterctl_bin();
    char *out = NULL;
    const char *reg[] = {ctl, "--nats-url", g_nats.url, "register", "--uri", "ctl.example.com",
                         "--host", "127.0.0.1", "--port", "61401", "--instance-id", "ctl-1",
                         "--app", "ctl-app", "--index", "2", NULL};
    int rc = ts_run_capture(reg, 15000, &out);
    if (rc != 0)
        fail_msg("crouterctl register exited %d: %s", rc, out ? out : "");
    free(out);
    assert_true(ts_crouter_wait_route(&f->cr, "ctl.example.com", 1, 5000));
    json_t *routes = ts_crouter_routes(&f->cr);
    json_t *ep = json_array_get(json_object_get(routes, "ctl.example.com"), 0);
    assert_string_equal(json_string_value(json_object_get(ep, "address")), "127.0.0.1:61401");
    assert_string_equal(json_string_value(json_object_get(ep, "private_instance_id")), "ctl-1");
    json_decref(routes);

    char status_url[64];
    snprintf(status_url, sizeof status_url, "http://127.0.0.1:%u", f->cr.status_port);
    const char *routes_json[] = {ctl, "--status-url", status_url, "--user", f->cr.user, "--pass", f->cr.pass,
                                 "routes", "--json", NULL};
    rc = ts_run_capture(routes_json, 15000, &out);
    if (rc != 0)
        fail_msg("crouterctl routes --json exited %d: %s", rc, out ? out : "");
    json_t *j = json_loads(out, 0, NULL);
    if (!j)
        fail_msg("crouterctl routes --json printed no JSON: %s", out);
    ep = json_array_get(json_object_get(j, "ctl.example.com"), 0);
    assert_non_null(ep);
    assert_string_equal(json_string_value(json_object_get(ep, "address")), "127.0.0.1:61401");
    json_decref(j);
    free(out);

    const char *routes_table[] = {ctl, "-c", f->cr.config_path, "routes", NULL};
    rc = ts_run_capture(routes_table, 15000, &out);
    if (rc != 0)
        fail_msg("crouterctl -c routes exited %d: %s", rc, out ? out : "");
    assert_non_null(strstr(out, "ctl.example.com"));
    assert_non_null(strstr(out, "127.0.0.1:61401"));
    free(out);

    const char *bad_pass[] = {ctl, "--status-url", status_url, "--user", f->cr.user, "--pass", "wrong",
                              "routes", NULL};
    rc = ts_run_capture(bad_pass, 15000, &out);
    free(out);
    assert_int_not_equal(rc, 0);

    const char *health[] = {ctl, "-c", f->cr.config_path, "health", NULL};
    rc = ts_run_capture(health, 15000, &out);
    if (rc != 0)
        fail_msg("crouterctl health exited %d on a healthy router: %s", rc, out ? out : "");
    free(out);

    const char *unreg[] = {ctl, "--nats-url", g_nats.url, "unregister", "--uri", "ctl.example.com",
                           "--host", "127.0.0.1", "--port", "61401", NULL};
    rc = ts_run_capture(unreg, 15000, &out);
    if (rc != 0)
        fail_msg("crouterctl unregister exited %d: %s", rc, out ? out : "");
    free(out);
    assert_true(ts_crouter_wait_route(&f->cr, "ctl.example.com", 0, 5000));
}

/* gorouter dropped registrations above 131072 pending messages (gorouter#166). */
static void test_burst_of_200000_registrations_not_dropped(void **state)
{
    fx_t *f = *state;
    start_crouter(f, NULL);
    char msg[160];
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(msg, sizeof msg,
                         "{\"host\":\"127.0.0.1\",\"port\":%d,\"uris\":[\"r%d.burst.example.com\"]}",
                         20000 + i % 40000, i);
        if (natsConnection_Publish(f->nc, "router.register", msg, n) != NATS_OK)
            fail_msg("publish %d failed", i);
    }
    assert_int_equal(natsConnection_FlushTimeout(f->nc, 30000), NATS_OK);
    int64_t deadline = ts_now_ms() + 60000;
    json_int_t urls = -1;
    while (ts_now_ms() < deadline) {
        json_t *varz = ts_crouter_varz(&f->cr);
        assert_non_null(varz);
        urls = json_integer_value(json_object_get(varz, "urls"));
        json_decref(varz);
        if (urls >= 200000)
            break;
        ts_sleep_ms(200);
    }
    if (urls != 200000)
        fail_msg("/varz urls=%lld after a burst of 200000 registrations of distinct routes", (long long)urls);
    /* /routes with 200,000 routes takes seconds under ThreadSanitizer */
    assert_true(ts_crouter_wait_route(&f->cr, "r199999.burst.example.com", 1, 30000));
    assert_true(ts_crouter_wait_route(&f->cr, "r0.burst.example.com", 1, 30000));
}

int main(void)
{
    ts_init("foundation");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_health_503_before_start_delay_then_200, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_health_503_while_nats_unreachable_then_200, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_routes_requires_basic_auth, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_routes_json_exact_fields_for_registered_endpoints, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_router_start_on_connect_and_greet_reply, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_prune_after_droplet_stale_threshold, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_prune_honours_shorter_stale_threshold_in_seconds, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_100_malformed_messages_then_good_one, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crouterctl_register_routes_unregister_round_trip, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_burst_of_200000_registrations_not_dropped, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_nats_restart_start_published_routes_survive_new_registrations_work,
                                        fx_setup, fx_teardown),
    };
    return ts_finish(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
