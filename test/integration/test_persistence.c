/* test/integration/test_persistence.c - issue 5 end to end: session persistence modes.
 *
 * Three backends (s1, s2, s3, private_instance_id inst-s1...) behind three
 * crouters on one nats-server, all with the same secret:
 *   g_a, g_b  allow per-route policies; used together for the learn table
 *             shared over NATS;
 *   g_c       allow_route_session_persistence: false (refusal).
 * Each case registers the backends on its own host with a per-route
 * options.session_persistence, so the cases do not disturb each other. The
 * backends echo the request (headers as they saw them) and set the cookies
 * a query asks for (/cookie?set=...).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testsupport.h"

static ts_nats_t g_nats;
static natsConnection *g_nc;
static ts_crouter_t g_a, g_b, g_c;
static ts_backend_t g_s[3];

static const char *CONFIG = "session_persistence:\n  secret: it-secret-0123456789abcdef\n";

static int group_setup(void **state)
{
    (void)state;
    if (ts_nats_start(&g_nats, false) != 0 || !(g_nc = ts_nats_connect(&g_nats)))
        return -1;
    const char *names[3] = {"s1", "s2", "s3"};
    for (int i = 0; i < 3; i++)
        if (ts_backend_start(&g_s[i], names[i], NULL) != 0)
            return -1;
    char refuse[256];
    snprintf(refuse, sizeof refuse, "%sallow_route_session_persistence: false\n", CONFIG);
    if (ts_crouter_spawn(&g_a, &g_nats, CONFIG) != 0 || ts_crouter_spawn(&g_b, &g_nats, CONFIG) != 0 ||
        ts_crouter_spawn(&g_c, &g_nats, refuse) != 0)
        return -1;
    ts_crouter_t *all[3] = {&g_a, &g_b, &g_c};
    for (int i = 0; i < 3; i++)
        if (!ts_crouter_wait_healthy(all[i], 20000)) {
            ts_print_file_tail("crouter log", all[i]->log_path, 8000);
            return -1;
        }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    ts_crouter_t *all[3] = {&g_a, &g_b, &g_c};
    for (int i = 0; i < 3; i++) {
        if (!ts_crouter_stop_clean(all[i], 15000))
            rc = -1;
    }
    ts_nats_close(g_nc);
    for (int i = 0; i < 3; i++)
        ts_backend_stop(&g_s[i]);
    ts_nats_stop(&g_nats);
    return rc;
}

/* --------------------------------------------------------------- helpers */

/* The register message of backend i on uri with a session_persistence
 * object (JSON text, or NULL for none). */
static void publish(const char *subject, int i, const char *uri, const char *persist)
{
    char msg[1024];
    snprintf(msg, sizeof msg,
             "{\"host\":\"127.0.0.1\",\"port\":%u,\"uris\":[\"%s\"],\"app\":\"app-guid\","
             "\"private_instance_id\":\"inst-%s\",\"private_instance_index\":\"%d\"%s%s%s}",
             (unsigned)g_s[i].port, uri, g_s[i].name, i,
             persist ? ",\"options\":{\"session_persistence\":" : "", persist ? persist : "",
             persist ? "}" : "");
    assert_int_equal(ts_nats_publish(g_nc, subject, msg, strlen(msg)), 0);
}

/* Registers the backends in mask on uri with the policy, waits on every router. */
static void reg(const char *uri, unsigned mask, const char *persist)
{
    size_t n = 0;
    for (int i = 0; i < 3; i++)
        if (mask & (1u << i)) {
            publish("router.register", i, uri, persist);
            n++;
        }
    ts_crouter_t *all[3] = {&g_a, &g_b, &g_c};
    for (int i = 0; i < 3; i++)
        if (!ts_crouter_wait_route(all[i], uri, n, 15000))
            fail_msg("route %s never had %zu endpoints", uri, n);
}

static void unreg(const char *uri, int i, const char *persist, size_t left)
{
    publish("router.unregister", i, uri, persist);
    ts_crouter_t *all[3] = {&g_a, &g_b, &g_c};
    for (int k = 0; k < 3; k++)
        if (!ts_crouter_wait_route(all[k], uri, left, 15000))
            fail_msg("route %s never had %zu endpoints", uri, left);
}

typedef struct got {
    long status;
    char backend[8];
    char set_cookie[256];        /* the Set-Cookie line for the asked name, "" = none */
    char value[128];             /* its value */
    char seen_cookie[256];       /* the Cookie header the backend saw, "" = none */
    char cache_control[128];
    char router_error[64];
    bool vcap;                   /* a __VCAP_ID__ cookie was set */
} got_t;

/* One request through cr; headers NULL-terminated (may be NULL). */
static void request(CURL *curl, const ts_crouter_t *cr, const char *host, const char *path,
                    const char *const headers[], const char *cookie_name, got_t *g)
{
    ts_req_t rq = {.host = host, .path = path ? path : "/"};
    for (size_t i = 0; headers && headers[i] && i < 23; i++)
        rq.headers[i] = headers[i];
    ts_resp_t r;
    memset(g, 0, sizeof *g);
    assert_int_equal(ts_http(curl, cr->port, &rq, &r), 0);
    g->status = r.status;
    const char *b = ts_resp_header(&r, "X-Backend");
    snprintf(g->backend, sizeof g->backend, "%s", b ? b : "");
    const char *sc = cookie_name ? ts_resp_set_cookie(&r, cookie_name) : NULL;
    if (sc) {
        snprintf(g->set_cookie, sizeof g->set_cookie, "%s", sc);
        const char *eq = strchr(sc, '=');
        size_t n = strcspn(eq + 1, ";");
        snprintf(g->value, sizeof g->value, "%.*s", (int)n, eq + 1);
    }
    g->vcap = ts_resp_set_cookie(&r, "__VCAP_ID__") != NULL;
    const char *cc = ts_resp_header(&r, "Cache-Control");
    snprintf(g->cache_control, sizeof g->cache_control, "%s", cc ? cc : "");
    const char *re = ts_resp_header(&r, "X-Cf-Routererror");
    snprintf(g->router_error, sizeof g->router_error, "%s", re ? re : "");
    json_t *echo = ts_resp_json(&r);
    if (echo) {
        const char *seen = ts_echo_header(echo, "Cookie");
        snprintf(g->seen_cookie, sizeof g->seen_cookie, "%s", seen ? seen : "");
        json_decref(echo);
    }
    ts_resp_free(&r);
}

static void get(const ts_crouter_t *cr, const char *host, const char *cookie_header,
                const char *cookie_name, got_t *g)
{
    const char *h[2] = {cookie_header, NULL};
    request(NULL, cr, host, "/", h, cookie_name, g);
}

static uint64_t varz_persist(const ts_crouter_t *cr, const char *key)
{
    json_t *v = ts_crouter_varz(cr);
    assert_non_null(v);
    json_t *o = json_object_get(json_object_get(v, "session_persistence"), key);
    uint64_t n = o ? (uint64_t)json_integer_value(o) : 0;
    json_decref(v);
    return n;
}

/* A first request without a cookie: insert mode answers with crouter's cookie. */
static void fresh_session(const ts_crouter_t *cr, const char *host, const char *name, got_t *g)
{
    get(cr, host, NULL, name, g);
    assert_int_equal(g->status, 200);
    if (!g->value[0])
        fail_msg("no %s cookie from %s", name, host);
}

/* ------------------------------------------------------------------ insert */

static void test_insert_sticky_and_indirect(void **state)
{
    (void)state;
    const char *host = "insert.persist.test";
    reg(host, 7, "{\"mode\":\"insert\",\"cookie\":\"SRV\"}");
    got_t first, g;
    fresh_session(&g_a, host, "SRV", &first);
    assert_non_null(strstr(first.set_cookie, "Path=/"));
    assert_non_null(strstr(first.set_cookie, "HttpOnly"));
    assert_false(first.vcap);
    char cookie[256];
    snprintf(cookie, sizeof cookie, "Cookie: a=1; SRV=%s; b=2", first.value);
    for (int i = 0; i < 50; i++) {
        get(&g_a, host, cookie, "SRV", &g);
        assert_int_equal(g.status, 200);
        assert_string_equal(g.backend, first.backend);
        assert_string_equal(g.set_cookie, "");  /* a valid cookie is not set again */
        assert_string_equal(g.seen_cookie, "a=1; b=2"); /* indirect: stripped */
    }
    /* The other router with the same secret honours the cookie. */
    get(&g_b, host, cookie, "SRV", &g);
    assert_string_equal(g.backend, first.backend);
    /* A request carrying only crouter's cookie reaches the backend without a Cookie header. */
    snprintf(cookie, sizeof cookie, "Cookie: SRV=%s", first.value);
    get(&g_a, host, cookie, "SRV", &g);
    assert_string_equal(g.seen_cookie, "");
}

static void test_insert_keepalive_carries_several_sessions(void **state)
{
    (void)state;
    const char *host = "insert.persist.test";
    got_t s1, s2, g;
    fresh_session(&g_a, host, "SRV", &s1);
    for (int i = 0; i < 6; i++) {
        fresh_session(&g_a, host, "SRV", &s2);
        if (strcmp(s1.backend, s2.backend) != 0)
            break;
    }
    assert_string_not_equal(s1.backend, s2.backend);
    CURL *curl = curl_easy_init();
    char c1[256], c2[256];
    snprintf(c1, sizeof c1, "Cookie: SRV=%s", s1.value);
    snprintf(c2, sizeof c2, "Cookie: SRV=%s", s2.value);
    for (int i = 0; i < 20; i++) {
        const char *h[2] = {i % 2 ? c2 : c1, NULL};
        request(curl, &g_a, host, "/", h, "SRV", &g);
        assert_string_equal(g.backend, i % 2 ? s2.backend : s1.backend);
    }
    curl_easy_cleanup(curl);
}

static void test_insert_not_indirect_backend_sees_cookie(void **state)
{
    (void)state;
    const char *host = "direct.persist.test";
    reg(host, 7, "{\"mode\":\"insert\",\"indirect\":false,\"secure\":true,\"same_site\":\"Lax\","
                 "\"max_age\":\"1h\",\"domain\":\"persist.test\"}");
    got_t first, g;
    fresh_session(&g_a, host, "CROUTERID", &first);
    assert_non_null(strstr(first.set_cookie, "Secure"));
    assert_non_null(strstr(first.set_cookie, "SameSite=Lax"));
    assert_non_null(strstr(first.set_cookie, "Max-Age=3600"));
    assert_non_null(strstr(first.set_cookie, "Domain=persist.test"));
    char cookie[256], want[256];
    snprintf(cookie, sizeof cookie, "Cookie: CROUTERID=%s", first.value);
    snprintf(want, sizeof want, "CROUTERID=%s", first.value);
    get(&g_a, host, cookie, "CROUTERID", &g);
    assert_string_equal(g.backend, first.backend);
    assert_string_equal(g.seen_cookie, want);
}

static void test_insert_forged_and_tampered_cookies_rebalanced(void **state)
{
    (void)state;
    const char *host = "insert.persist.test";
    got_t first, g;
    fresh_session(&g_a, host, "SRV", &first);
    uint64_t rejected0 = varz_persist(&g_a, "rejected");
    /* Flip one character of the MAC, of the identity, and a made-up value. */
    char tampered[3][128];
    snprintf(tampered[0], sizeof tampered[0], "%s", first.value);
    tampered[0][strlen(tampered[0]) - 2] ^= 1;
    snprintf(tampered[1], sizeof tampered[1], "%s", first.value);
    tampered[1][4] = tampered[1][4] == 'A' ? 'B' : 'A';
    snprintf(tampered[2], sizeof tampered[2], "AQAAAAAAAAAAAQAAAAAAAAAAAAAAAAAA");
    for (int t = 0; t < 3; t++) {
        bool other = false;
        char cookie[256];
        snprintf(cookie, sizeof cookie, "Cookie: SRV=%.127s", tampered[t]);
        for (int i = 0; i < 9; i++) {
            get(&g_a, host, cookie, "SRV", &g);
            assert_int_equal(g.status, 200);
            if (!g.value[0])
                fail_msg("tampered cookie %d was honoured (no new cookie)", t);
            assert_string_not_equal(g.value, tampered[t]);
            other |= strcmp(g.backend, first.backend) != 0;
        }
        assert_true(other); /* balanced as usual, not pinned */
    }
    assert_true(varz_persist(&g_a, "rejected") >= rejected0 + 27);
}

static void test_insert_fallback_on_and_off(void **state)
{
    (void)state;
    const char *on = "fb-on.persist.test", *off = "fb-off.persist.test";
    const char *pon = "{\"mode\":\"insert\"}";
    const char *poff = "{\"mode\":\"insert\",\"fallback\":false}";
    reg(on, 7, pon);
    reg(off, 7, poff);
    got_t s_on, s_off, g;
    fresh_session(&g_a, on, "CROUTERID", &s_on);
    fresh_session(&g_a, off, "CROUTERID", &s_off);
    char c_on[256], c_off[256];
    snprintf(c_on, sizeof c_on, "Cookie: CROUTERID=%s", s_on.value);
    snprintf(c_off, sizeof c_off, "Cookie: CROUTERID=%s", s_off.value);
    unreg(on, s_on.backend[1] - '1', pon, 2);
    unreg(off, s_off.backend[1] - '1', poff, 2);
    /* fallback on: another endpoint and a new cookie. */
    get(&g_a, on, c_on, "CROUTERID", &g);
    assert_int_equal(g.status, 200);
    assert_string_not_equal(g.backend, s_on.backend);
    assert_true(g.value[0] != '\0');
    /* fallback off: 503, every time. */
    for (int i = 0; i < 3; i++) {
        get(&g_a, off, c_off, "CROUTERID", &g);
        assert_int_equal(g.status, 503);
        assert_string_equal(g.router_error, "session_endpoint_unavailable");
    }
    /* ... but a forged cookie is never "genuine": re-balanced, even with fallback off. */
    get(&g_a, off, "Cookie: CROUTERID=forged-value", "CROUTERID", &g);
    assert_int_equal(g.status, 200);
    assert_true(g.value[0] != '\0');
}

static void test_insert_nocache(void **state)
{
    (void)state;
    const char *host = "nocache.persist.test";
    reg(host, 7, "{\"mode\":\"insert\",\"nocache\":true}");
    got_t first, g;
    fresh_session(&g_a, host, "CROUTERID", &first);
    assert_string_equal(first.cache_control, "no-cache=\"set-cookie\"");
    char cookie[256];
    snprintf(cookie, sizeof cookie, "Cookie: CROUTERID=%s", first.value);
    get(&g_a, host, cookie, "CROUTERID", &g);
    assert_string_equal(g.set_cookie, "");
    assert_string_equal(g.cache_control, ""); /* no cookie set: cacheable as the app says */
}

static void test_insert_max_idle_and_max_life(void **state)
{
    (void)state;
    const char *idle = "idle.persist.test", *life = "life.persist.test";
    reg(idle, 7, "{\"mode\":\"insert\",\"max_idle\":\"4s\",\"fallback\":false}");
    reg(life, 7, "{\"mode\":\"insert\",\"max_life\":\"2s\",\"fallback\":false}");
    got_t si, sl, g;
    fresh_session(&g_a, idle, "CROUTERID", &si);
    fresh_session(&g_a, life, "CROUTERID", &sl);
    char ci[256], cl[256];
    snprintf(cl, sizeof cl, "Cookie: CROUTERID=%s", sl.value);
    /* Use within max_idle keeps the session alive past 4 s (times are whole
     * seconds, and a loaded machine may stall a request by a second or two);
     * max_life ends the other one after 2 s whatever its use. */
    char cur[128];
    snprintf(cur, sizeof cur, "%s", si.value);
    int64_t start = ts_now_ms();
    while (ts_now_ms() - start < 4300) {
        ts_sleep_ms(1000);
        snprintf(ci, sizeof ci, "Cookie: CROUTERID=%s", cur);
        get(&g_a, idle, ci, "CROUTERID", &g);
        assert_int_equal(g.status, 200);
        assert_string_equal(g.backend, si.backend);
        if (g.value[0])
            snprintf(cur, sizeof cur, "%s", g.value); /* last-seen refreshed */
    }
    uint64_t rejected0 = varz_persist(&g_a, "rejected");
    get(&g_a, life, cl, "CROUTERID", &g);
    assert_int_equal(g.status, 200); /* expired: re-balanced even with fallback off */
    assert_true(g.value[0] && strcmp(g.value, sl.value) != 0);
    assert_int_equal(varz_persist(&g_a, "rejected"), rejected0 + 1);
    /* An idle session past max_idle is over too. */
    ts_sleep_ms(5100);
    snprintf(ci, sizeof ci, "Cookie: CROUTERID=%s", cur);
    get(&g_a, idle, ci, "CROUTERID", &g);
    assert_int_equal(g.status, 200);
    assert_int_equal(varz_persist(&g_a, "rejected"), rejected0 + 2);
}

/* ----------------------------------------------------------- rewrite, prefix */

static void test_rewrite_overwrites_app_cookie(void **state)
{
    (void)state;
    const char *host = "rewrite.persist.test";
    reg(host, 7, "{\"mode\":\"rewrite\",\"cookie\":\"route\"}");
    got_t g, first;
    /* The app sets no cookie: nothing added. */
    get(&g_a, host, NULL, "route", &g);
    assert_string_equal(g.set_cookie, "");
    const char *h[1] = {NULL};
    request(NULL, &g_a, host, "/cookie?set=route%3Dapp-value%3B%20Path%3D%2Fapp", h, "route",
            &first);
    assert_true(first.value[0] != '\0');
    assert_string_not_equal(first.value, "app-value");
    assert_non_null(strstr(first.set_cookie, "; Path=/app"));
    char cookie[256];
    snprintf(cookie, sizeof cookie, "Cookie: route=%s", first.value);
    for (int i = 0; i < 50; i++) {
        get(&g_a, host, cookie, "route", &g);
        assert_string_equal(g.backend, first.backend);
    }
}

static void test_prefix_round_trip_invisible_to_backend(void **state)
{
    (void)state;
    const char *host = "prefix.persist.test";
    reg(host, 7, "{\"mode\":\"prefix\"}");
    got_t first, g;
    const char *h[1] = {NULL};
    request(NULL, &g_a, host, "/cookie?set=JSESSIONID%3Dabc123%3B%20HttpOnly", h, "JSESSIONID",
            &first);
    assert_int_equal((int)strlen(first.value), 11 + 1 + 6);
    assert_int_equal(first.value[11], '~');
    assert_string_equal(first.value + 12, "abc123");
    assert_non_null(strstr(first.set_cookie, "; HttpOnly"));
    assert_false(first.vcap);
    char cookie[256];
    snprintf(cookie, sizeof cookie, "Cookie: x=y; JSESSIONID=%s", first.value);
    for (int i = 0; i < 50; i++) {
        get(&g_a, host, cookie, "JSESSIONID", &g);
        assert_string_equal(g.backend, first.backend);
        assert_string_equal(g.seen_cookie, "x=y; JSESSIONID=abc123");
    }
}

/* ------------------------------------------------------------------- learn */

static void test_learn_shared_by_two_routers(void **state)
{
    (void)state;
    const char *host = "learn.persist.test";
    reg(host, 7, "{\"mode\":\"learn\"}");
    got_t first, g;
    const char *h[1] = {NULL};
    request(NULL, &g_a, host, "/cookie?set=JSESSIONID%3Dlearned-1", h, "JSESSIONID", &first);
    assert_string_equal(first.value, "learned-1"); /* the client sees the app's cookie only */
    const char *cookie = "Cookie: JSESSIONID=learned-1";
    for (int i = 0; i < 50; i++) {
        get(&g_a, host, cookie, "JSESSIONID", &g);
        assert_string_equal(g.backend, first.backend);
        assert_string_equal(g.seen_cookie, "JSESSIONID=learned-1");
    }
    /* The binding reaches the other router over NATS (eventually). */
    int64_t deadline = ts_now_ms() + 15000;
    int streak = 0;
    while (streak < 20) {
        get(&g_b, host, cookie, "JSESSIONID", &g);
        if (strcmp(g.backend, first.backend) == 0)
            streak++;
        else if (streak > 0)
            fail_msg("router b lost the binding after %d hits", streak);
        if (ts_now_ms() > deadline)
            fail_msg("router b never learned the binding");
    }
    /* An unknown session value is balanced as usual. */
    bool other = false;
    for (int i = 0; i < 6; i++) {
        get(&g_a, host, "Cookie: JSESSIONID=never-seen", "JSESSIONID", &g);
        other |= strcmp(g.backend, first.backend) != 0;
    }
    assert_true(other);
}

/* ------------------------------------------------------ source_ip, header */

static void spread_by_header(const char *host, const char *fmt, bool expect_spread)
{
    char first_of[40][8];
    bool seen[3] = {false, false, false};
    got_t g;
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < 40; i++) {
            char hdr[96];
            snprintf(hdr, sizeof hdr, fmt, i);
            const char *h[2] = {hdr, NULL};
            request(NULL, &g_a, host, "/", h, NULL, &g);
            assert_int_equal(g.status, 200);
            if (rep == 0)
                snprintf(first_of[i], sizeof first_of[i], "%s", g.backend);
            else
                assert_string_equal(g.backend, first_of[i]); /* each key keeps its endpoint */
            seen[g.backend[1] - '1'] = true;
        }
    }
    int used = seen[0] + seen[1] + seen[2];
    if (expect_spread)
        assert_true(used >= 2);
    else
        assert_int_equal(used, 1);
}

static void test_source_ip_trusted_and_untrusted_xff(void **state)
{
    (void)state;
    reg("ip-trusted.persist.test", 7,
        "{\"mode\":\"source_ip\",\"trusted_proxies\":[\"127.0.0.1/32\"]}");
    reg("ip-untrusted.persist.test", 7, "{\"mode\":\"source_ip\"}");
    /* Trusted peer: the X-Forwarded-For client decides. */
    spread_by_header("ip-trusted.persist.test", "X-Forwarded-For: 10.0.%d.7", true);
    /* Untrusted: XFF is ignored, every request is 127.0.0.1's. */
    spread_by_header("ip-untrusted.persist.test", "X-Forwarded-For: 10.0.%d.7", false);
    /* A trusted proxy in the chain is skipped: the client is left of it. */
    got_t a, b;
    const char *h1[2] = {"X-Forwarded-For: 10.9.9.9", NULL};
    const char *h2[2] = {"X-Forwarded-For: 10.9.9.9, 127.0.0.1", NULL};
    request(NULL, &g_a, "ip-trusted.persist.test", "/", h1, NULL, &a);
    request(NULL, &g_a, "ip-trusted.persist.test", "/", h2, NULL, &b);
    assert_string_equal(a.backend, b.backend);
}

static void test_header_mode_with_source_ip_fallback(void **state)
{
    (void)state;
    const char *host = "header.persist.test";
    reg(host, 7, "{\"mode\":\"header\",\"header\":\"X-User\",\"fallback_to\":\"source_ip\"}");
    spread_by_header(host, "X-User: user-%d", true);
    /* No header: by source address, which is always 127.0.0.1 here. */
    got_t first, g;
    get(&g_a, host, NULL, NULL, &first);
    for (int i = 0; i < 20; i++) {
        get(&g_a, host, NULL, NULL, &g);
        assert_string_equal(g.backend, first.backend);
    }
}

/* --------------------------------------------------- override and refusal */

static void test_route_override_shown_and_refused(void **state)
{
    (void)state;
    const char *host = "insert.persist.test";
    /* Router a: the override is in effect and /routes shows it. */
    json_t *routes = ts_crouter_routes(&g_a);
    assert_non_null(routes);
    json_t *eps = json_object_get(routes, host);
    assert_true(json_array_size(eps) == 3);
    json_t *sp = json_object_get(json_array_get(eps, 0), "session_persistence");
    assert_non_null(sp);
    assert_string_equal(json_string_value(json_object_get(sp, "mode")), "insert");
    assert_null(json_object_get(sp, "secret"));
    json_decref(routes);
    /* Router c refuses overrides: gorouter's behaviour, no crouter cookie. */
    routes = ts_crouter_routes(&g_c);
    assert_non_null(routes);
    eps = json_object_get(routes, host);
    assert_null(json_object_get(json_array_get(eps, 0), "session_persistence"));
    json_decref(routes);
    got_t g;
    const char *h[1] = {NULL};
    request(NULL, &g_c, host, "/cookie?set=JSESSIONID%3Dx", h, "SRV", &g);
    assert_int_equal(g.status, 200);
    assert_string_equal(g.set_cookie, "");
    assert_true(g.vcap);
    /* ... while on router a the same response gets no __VCAP_ID__. */
    request(NULL, &g_a, host, "/cookie?set=JSESSIONID%3Dx", h, "SRV", &g);
    assert_false(g.vcap);
}

/* An invalid override: counted on /varz, logged, and the
 * endpoint still registered and served with the default policy (vcap);
 * a valid one on the refusing router: counted as refused, endpoint served. */
static void test_invalid_or_refused_route_policy_still_registers_the_endpoint(void **state)
{
    (void)state;
    const char *host = "invalid-policy.persist.test";
    uint64_t rej_a = varz_persist(&g_a, "route_policies_rejected");
    uint64_t ref_c = varz_persist(&g_c, "route_policies_refused");
    reg(host, 1, "{\"mode\":\"sticky\",\"cookie\":\"SRV\"}");
    assert_int_equal(varz_persist(&g_a, "route_policies_rejected"), rej_a + 1);
    assert_int_equal(varz_persist(&g_c, "route_policies_refused"), ref_c + 1);
    char *log = ts_read_file(g_a.log_path, NULL);
    assert_non_null(log);
    const char *line = strstr(log, "invalid session_persistence in register message");
    assert_non_null(line);
    assert_non_null(strstr(line, host));
    assert_non_null(strstr(line, "session_persistence.mode"));
    free(log);
    ts_crouter_t *all[2] = {&g_a, &g_c};
    for (int r = 0; r < 2; r++) {
        json_t *routes = ts_crouter_routes(all[r]);
        assert_non_null(routes);
        json_t *eps = json_object_get(routes, host);
        assert_int_equal(json_array_size(eps), 1);
        assert_null(json_object_get(json_array_get(eps, 0), "session_persistence"));
        json_decref(routes);
        got_t g;
        const char *h[1] = {NULL};
        request(NULL, all[r], host, "/cookie?set=JSESSIONID%3Dx", h, "SRV", &g);
        assert_int_equal(g.status, 200);
        assert_string_equal(g.backend, "s1");
        assert_string_equal(g.set_cookie, ""); /* no crouter cookie ... */
        assert_true(g.vcap);                   /* ... gorouter's rule instead */
    }
}

/* ------------------------------------------- gaps closed after the first round */

static void test_prefix_and_rewrite_edit_every_set_cookie_of_the_name(void **state)
{
    (void)state;
    const char *ph = "prefix-multi.persist.test", *rh = "rewrite-multi.persist.test";
    reg(ph, 7, "{\"mode\":\"prefix\"}");
    reg(rh, 7, "{\"mode\":\"rewrite\",\"cookie\":\"SRV\"}");
    ts_req_t rq = {.host = ph,
                   .path = "/cookie?set=JSESSIONID%3Done%3B%20Path%3D%2Fa"
                           "&set=other%3Dx&set=JSESSIONID%3Dtwo%3B%20Path%3D%2Fb"};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, g_a.port, &rq, &r), 0);
    assert_int_equal(r.status, 200);
    size_t n = ts_resp_header_count(&r, "Set-Cookie");
    assert_int_equal(n, 3);
    int prefixed = 0;
    char tok[16] = "";
    for (size_t i = 0; i < n; i++) {
        const char *v = ts_resp_header_nth(&r, "Set-Cookie", i);
        if (strncmp(v, "other=x", 7) == 0)
            continue;
        assert_int_equal(strncmp(v, "JSESSIONID=", 11), 0);
        assert_int_equal(v[11 + 11], '~');
        if (!tok[0])
            snprintf(tok, sizeof tok, "%.11s", v + 11);
        assert_int_equal(strncmp(v + 11, tok, 11), 0); /* the same endpoint */
        assert_true(strcmp(v + 23, "one; Path=/a") == 0 || strcmp(v + 23, "two; Path=/b") == 0);
        prefixed++;
    }
    assert_int_equal(prefixed, 2);
    ts_resp_free(&r);

    rq.host = rh;
    rq.path = "/cookie?set=SRV%3Da%3B%20Path%3D%2Fa&set=SRV%3Db%3B%20Path%3D%2Fb";
    assert_int_equal(ts_http(NULL, g_a.port, &rq, &r), 0);
    assert_int_equal(ts_resp_header_count(&r, "Set-Cookie"), 2);
    const char *v0 = ts_resp_header_nth(&r, "Set-Cookie", 0);
    const char *v1 = ts_resp_header_nth(&r, "Set-Cookie", 1);
    size_t l0 = strcspn(v0, ";"), l1 = strcspn(v1, ";");
    assert_true(l0 > 6 && l0 == l1 && strncmp(v0, v1, l0) == 0); /* one crouter value */
    assert_true(strncmp(v0, "SRV=a;", 6) != 0 && strncmp(v1, "SRV=b;", 6) != 0);
    assert_true(strstr(v0, "; Path=/a") || strstr(v1, "; Path=/a"));
    assert_true(strstr(v0, "; Path=/b") || strstr(v1, "; Path=/b"));
    ts_resp_free(&r);
}

/* Requests from 127.0.0.1 without a key all reach one backend. */
static void same_backend_without_key(const char *host, const char *cookie_header, char *out,
                                     size_t cap)
{
    got_t first, g;
    get(&g_a, host, cookie_header, NULL, &first);
    assert_int_equal(first.status, 200);
    for (int i = 0; i < 20; i++) {
        get(&g_a, host, cookie_header, NULL, &g);
        assert_string_equal(g.backend, first.backend);
    }
    snprintf(out, cap, "%s", first.backend);
}

static void test_insert_and_learn_fall_back_to_source_ip(void **state)
{
    (void)state;
    const char *ih = "insert-ip.persist.test", *lh = "learn-ip.persist.test";
    reg(ih, 7, "{\"mode\":\"insert\",\"fallback_to\":\"source_ip\"}");
    reg(lh, 7, "{\"mode\":\"learn\",\"fallback_to\":\"source_ip\"}");
    char bi[8], bl[8];
    /* insert: no cookie, so by source address; each answer names it. */
    same_backend_without_key(ih, NULL, bi, sizeof bi);
    got_t g;
    fresh_session(&g_a, ih, "CROUTERID", &g);
    assert_string_equal(g.backend, bi);
    assert_true(g.value[0] != '\0');
    /* A forged cookie counts as none: source address again. */
    same_backend_without_key(ih, "Cookie: CROUTERID=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAA", bi,
                             sizeof bi);
    assert_string_equal(g.backend, bi);
    /* learn: no session value, or one never learned, is hashed by address. */
    same_backend_without_key(lh, NULL, bl, sizeof bl);
    char again[8];
    same_backend_without_key(lh, "Cookie: JSESSIONID=never-learned", again, sizeof again);
    assert_string_equal(again, bl);
}

static void test_learn_max_idle_forgets_an_idle_binding(void **state)
{
    (void)state;
    const char *host = "learn-idle.persist.test";
    reg(host, 7, "{\"mode\":\"learn\",\"max_idle\":\"2s\"}");
    got_t first, g;
    const char *h[1] = {NULL};
    request(NULL, &g_a, host, "/cookie?set=JSESSIONID%3Didle-1", h, "JSESSIONID", &first);
    const char *cookie = "Cookie: JSESSIONID=idle-1";
    /* Use more often than max_idle keeps it past 2 s. */
    int64_t start = ts_now_ms();
    while (ts_now_ms() - start < 3000) {
        ts_sleep_ms(500);
        get(&g_a, host, cookie, NULL, &g);
        assert_string_equal(g.backend, first.backend);
    }
    /* Idle for longer: forgotten, so round-robin spreads the requests. */
    uint64_t hits0 = varz_persist(&g_a, "hits");
    ts_sleep_ms(2600);
    bool other = false;
    for (int i = 0; i < 6; i++) {
        get(&g_a, host, cookie, NULL, &g);
        other |= strcmp(g.backend, first.backend) != 0;
    }
    assert_true(other);
    assert_int_equal(varz_persist(&g_a, "hits"), hits0);
}

static void test_learn_from_requests_binds_an_unknown_value(void **state)
{
    (void)state;
    const char *host = "learn-req.persist.test";
    reg(host, 7, "{\"mode\":\"learn\",\"learn_from_requests\":true}");
    /* The app never sets the cookie; the first request that carries a
     * value binds it to the endpoint that answered. */
    const char *cookie = "Cookie: JSESSIONID=from-request-1";
    uint64_t learned0 = varz_persist(&g_a, "learned");
    got_t first, g;
    get(&g_a, host, cookie, NULL, &first);
    assert_int_equal(first.status, 200);
    assert_int_equal(varz_persist(&g_a, "learned"), learned0 + 1);
    for (int i = 0; i < 20; i++) {
        get(&g_a, host, cookie, NULL, &g);
        assert_string_equal(g.backend, first.backend);
    }
    /* Hits are not learned again. */
    assert_int_equal(varz_persist(&g_a, "learned"), learned0 + 1);
}

/* Each counter of /varz's session_persistence object is in /metrics too. */
static void test_metrics_show_the_persistence_counters(void **state)
{
    (void)state;
    char userpwd[80];
    snprintf(userpwd, sizeof userpwd, "%s:%s", g_a.user, g_a.pass);
    ts_req_t rq = {.path = "/metrics", .userpwd = userpwd};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, g_a.status_port, &rq, &r), 0);
    assert_int_equal(r.status, 200);
    static const char *const keys[] = {"requests", "hits",        "rebalanced",
                                       "rejected", "cookies_set", "learned"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "\ncrouter_session_persistence_%s_total ", keys[i]);
        const char *at = strstr(r.body, name);
        assert_non_null(at);
        uint64_t m = strtoull(at + strlen(name), NULL, 10);
        uint64_t v = varz_persist(&g_a, keys[i]);
        assert_true(m > 0); /* the cases before made each of them count */
        assert_true(m <= v);
    }
    ts_resp_free(&r);
}

int main(void)
{
    ts_init("persistence");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_sticky_and_indirect),
        cmocka_unit_test(test_insert_keepalive_carries_several_sessions),
        cmocka_unit_test(test_insert_not_indirect_backend_sees_cookie),
        cmocka_unit_test(test_insert_forged_and_tampered_cookies_rebalanced),
        cmocka_unit_test(test_insert_fallback_on_and_off),
        cmocka_unit_test(test_insert_nocache),
        cmocka_unit_test(test_insert_max_idle_and_max_life),
        cmocka_unit_test(test_rewrite_overwrites_app_cookie),
        cmocka_unit_test(test_prefix_round_trip_invisible_to_backend),
        cmocka_unit_test(test_learn_shared_by_two_routers),
        cmocka_unit_test(test_source_ip_trusted_and_untrusted_xff),
        cmocka_unit_test(test_header_mode_with_source_ip_fallback),
        cmocka_unit_test(test_route_override_shown_and_refused),
        cmocka_unit_test(test_invalid_or_refused_route_policy_still_registers_the_endpoint),
        cmocka_unit_test(test_prefix_and_rewrite_edit_every_set_cookie_of_the_name),
        cmocka_unit_test(test_insert_and_learn_fall_back_to_source_ip),
        cmocka_unit_test(test_learn_max_idle_forgets_an_idle_binding),
        cmocka_unit_test(test_learn_from_requests_binds_an_unknown_value),
        cmocka_unit_test(test_metrics_show_the_persistence_counters),
    };
    int failures = cmocka_run_group_tests_name("persistence", tests, group_setup, group_teardown);
    return ts_finish(failures);
}
