/* test/integration/test_sticky.c - issue 4 end to end: JSESSIONID + __VCAP_ID__.
 *
 * Three backends (s1, s2, s3 with private_instance_id inst-s1...) sit
 * behind three crouters on one nats-server:
 *   g_r1, g_r2  default sticky config (JSESSIONID), used together for the
 *               "two routers honour each other's cookies" case;
 *   g_r3        sticky_session_cookie_names [MYSESSION, OTHER],
 *               secure_cookies: true, sticky_sessions_for_auth_negotiate.
 * The backends set whatever cookies and headers a request's query asks for
 * (/cookie?set=..., /header?h=...), so each test picks its response.
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
#include <strings.h>
#include <sys/wait.h>

#include "testsupport.h"

static ts_nats_t g_nats;
static natsConnection *g_nc;
static ts_crouter_t g_r1, g_r2, g_r3;
static ts_backend_t g_s[3];

static const char *APP_GUID = "0d3f8c1e-5a6b-4c7d-8e9f-a0b1c2d3e4f5";

static int group_setup(void **state)
{
    (void)state;
    if (ts_nats_start(&g_nats, false) != 0 || !(g_nc = ts_nats_connect(&g_nats)))
        return -1;
    const char *names[3] = {"s1", "s2", "s3"};
    for (int i = 0; i < 3; i++)
        if (ts_backend_start(&g_s[i], names[i], NULL) != 0)
            return -1;
    if (ts_crouter_spawn(&g_r1, &g_nats, NULL) != 0 || ts_crouter_spawn(&g_r2, &g_nats, NULL) != 0 ||
        ts_crouter_spawn(&g_r3, &g_nats,
                         "sticky_session_cookie_names:\n- MYSESSION\n- OTHER\n"
                         "secure_cookies: true\nsticky_sessions_for_auth_negotiate: true\n") != 0)
        return -1;
    ts_crouter_t *all[3] = {&g_r1, &g_r2, &g_r3};
    for (int i = 0; i < 3; i++) {
        if (!ts_crouter_wait_healthy(all[i], 20000)) {
            ts_print_file_tail("crouter config", all[i]->config_path, 4000);
            ts_print_file_tail("crouter log", all[i]->log_path, 8000);
            return -1;
        }
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    ts_crouter_t *all[3] = {&g_r1, &g_r2, &g_r3};
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

static int check_alive(void **state)
{
    (void)state;
    if (!ts_crouter_alive(&g_r1) || !ts_crouter_alive(&g_r2) || !ts_crouter_alive(&g_r3)) {
        fprintf(stderr, "a shared crouter is no longer running\n");
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- helpers */

/* 0..2 for s1..s3; fails the test for anything else (no backend, an error). */
static int backend_index(const char *backend)
{
    if (strlen(backend) != 2 || backend[0] != 's' || backend[1] < '1' || backend[1] > '3')
        fail_msg("response not from s1..s3 (X-Backend '%s')", backend);
    return backend[1] - '1';
}

static const char *id_of(const char *backend)
{
    static char buf[48];
    snprintf(buf, sizeof buf, "inst-%.32s", backend);
    return buf;
}

/* Registers all three backends (or those in mask) on uri, waits on every router. */
static void reg_all(const char *uri, const char *key, unsigned mask)
{
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        if (!(mask & (1u << i)))
            continue;
        char idx[4];
        snprintf(idx, sizeof idx, "%d", i);
        ts_route_t r = {.port = g_s[i].port, .uris = {uri}, .private_instance_id = id_of(g_s[i].name),
                        .app = APP_GUID, .private_instance_index = idx};
        assert_int_equal(ts_nats_register(g_nc, &r), 0);
        n++;
    }
    ts_crouter_t *all[3] = {&g_r1, &g_r2, &g_r3};
    for (int i = 0; i < 3; i++)
        if (!ts_crouter_wait_route(all[i], key, n, 5000))
            fail_msg("route %s never had %zu endpoints", key, n);
}

static void urlenc(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (; *in && o + 4 < cap; in++) {
        unsigned char ch = (unsigned char)*in;
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", ch);
    }
    out[o] = '\0';
}

/* Path that makes the backend answer with the given Set-Cookie lines
 * (NULL-terminated) and extra header lines. */
static void cookie_path(char *out, size_t cap, const char *base, const char *const cookies[], const char *header)
{
    size_t o = 0;
    char enc[1024];
    int n = snprintf(out, cap, "%s?x=1", base);
    for (size_t i = 0; n >= 0 && (size_t)n < cap - o && cookies && cookies[i]; i++) {
        o += (size_t)n;
        urlenc(enc, sizeof enc, cookies[i]);
        n = snprintf(out + o, cap - o, "&set=%s", enc);
    }
    if (n >= 0 && (size_t)n < cap - o && header) {
        o += (size_t)n;
        urlenc(enc, sizeof enc, header);
        n = snprintf(out + o, cap - o, "&h=%s", enc);
    }
    if (n < 0 || (size_t)n >= cap - o)
        fail_msg("cookie_path: %zu bytes are too few for the request path", cap);
}

typedef struct {
    char value[256];
    bool has_path;
    char path[128];
    bool has_domain;
    bool has_expires;
    char expires[64];
    bool has_max_age;
    char max_age[32];
    bool secure, http_only, partitioned;
    bool has_samesite;
    char samesite[16];
} cookie_t;

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    size_t k = 0;
    while (isspace((unsigned char)s[k]))
        k++;
    memmove(s, s + k, strlen(s + k) + 1);
}

/* Parses "name=value; Attr; Attr=v" (the part after "Set-Cookie:"). */
static void parse_set_cookie(const char *line, cookie_t *c)
{
    memset(c, 0, sizeof *c);
    char *dup = strdup(line), *save = NULL;
    char *part = strtok_r(dup, ";", &save);
    char *eq = part ? strchr(part, '=') : NULL;
    if (eq) {
        snprintf(c->value, sizeof c->value, "%s", eq + 1);
        trim(c->value);
    }
    while ((part = strtok_r(NULL, ";", &save))) {
        trim(part);
        char *v = strchr(part, '=');
        if (v)
            *v++ = '\0';
        if (strcasecmp(part, "Path") == 0 && v) {
            c->has_path = true;
            snprintf(c->path, sizeof c->path, "%s", v);
        } else if (strcasecmp(part, "Domain") == 0) {
            c->has_domain = true;
        } else if (strcasecmp(part, "Expires") == 0 && v) {
            c->has_expires = true;
            snprintf(c->expires, sizeof c->expires, "%s", v);
        } else if (strcasecmp(part, "Max-Age") == 0 && v) {
            c->has_max_age = true;
            snprintf(c->max_age, sizeof c->max_age, "%s", v);
        } else if (strcasecmp(part, "Secure") == 0) {
            c->secure = true;
        } else if (strcasecmp(part, "HttpOnly") == 0) {
            c->http_only = true;
        } else if (strcasecmp(part, "Partitioned") == 0) {
            c->partitioned = true;
        } else if (strcasecmp(part, "SameSite") == 0 && v) {
            c->has_samesite = true;
            snprintf(c->samesite, sizeof c->samesite, "%s", v);
        }
    }
    free(dup);
}

typedef struct {
    char backend[32];
    long status;
    bool has_vcap;
    int n_vcap;
    cookie_t vcap;
    char vcap_raw[512];
    char router_error[128];
    char cookie_seen[1024];   /* Cookie header the backend received */
} result_t;

/* One request through router port; cookie (may be NULL) is sent as the Cookie header. */
static void request(uint16_t port, const char *host, const char *path, const char *cookie, const char *extra_header,
                    result_t *out)
{
    memset(out, 0, sizeof *out);
    char cookie_line[1024];
    ts_req_t req = {.host = host, .path = path};
    size_t h = 0;
    if (cookie) {
        snprintf(cookie_line, sizeof cookie_line, "Cookie: %s", cookie);
        req.headers[h++] = cookie_line;
    }
    if (extra_header)
        req.headers[h++] = extra_header;
    ts_resp_t r;
    ts_http(NULL, port, &req, &r);
    out->status = r.status;
    const char *b = ts_resp_header(&r, "X-Backend");
    snprintf(out->backend, sizeof out->backend, "%s", b ? b : "");
    const char *re = ts_resp_header(&r, "X-Cf-Routererror");
    snprintf(out->router_error, sizeof out->router_error, "%s", re ? re : "");
    for (size_t i = 0; i < ts_resp_header_count(&r, "Set-Cookie"); i++) {
        const char *v = ts_resp_header_nth(&r, "Set-Cookie", i);
        if (strncmp(v, "__VCAP_ID__=", 12) == 0) {
            out->n_vcap++;
            if (!out->has_vcap) {
                out->has_vcap = true;
                snprintf(out->vcap_raw, sizeof out->vcap_raw, "%s", v);
                parse_set_cookie(v, &out->vcap);
            }
        }
    }
    json_t *echo = ts_resp_json(&r);
    if (echo) {
        const char *c = ts_echo_header(echo, "Cookie");
        snprintf(out->cookie_seen, sizeof out->cookie_seen, "%s", c ? c : "");
        json_decref(echo);
    }
    ts_resp_free(&r);
}

/* First request on a route with the backend setting session_cookie: returns
 * the __VCAP_ID__ value issued (and which backend served). */
static void start_session(uint16_t port, const char *host, const char *session_cookie, char *vcap_out,
                          char *backend_out)
{
    const char *cookies[] = {session_cookie, NULL};
    char path[1024];
    cookie_path(path, sizeof path, "/cookie", cookies, NULL);
    result_t r;
    request(port, host, path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    if (!r.has_vcap)
        fail_msg("backend set '%s' but no __VCAP_ID__ came back", session_cookie);
    assert_string_equal(r.vcap.value, id_of(r.backend));
    strcpy(vcap_out, r.vcap.value);
    strcpy(backend_out, r.backend);
}

/* ------------------------------------------------------------------ tests */

typedef struct {
    const char *set_cookie;
    bool secure;
    const char *samesite;     /* NULL = absent */
    const char *max_age;      /* NULL = absent; "<=0" = a deletion */
    const char *expires;      /* NULL = absent */
    bool partitioned;
} attr_case_t;

static void test_vcap_cookie_mirrors_session_cookie_attributes(void **state)
{
    (void)state;
    reg_all("attrs.example.com", "attrs.example.com", 7);
    static const attr_case_t cases[] = {
        {"JSESSIONID=abc", false, NULL, NULL, NULL, false},
        {"JSESSIONID=abc; Secure", true, NULL, NULL, NULL, false},
        {"JSESSIONID=abc; HttpOnly", false, NULL, NULL, NULL, false},
        {"JSESSIONID=abc; SameSite=Lax", false, "Lax", NULL, NULL, false},
        {"JSESSIONID=abc; SameSite=Strict", false, "Strict", NULL, NULL, false},
        {"JSESSIONID=abc; SameSite=None; Secure", true, "None", NULL, NULL, false},
        {"JSESSIONID=abc; Max-Age=3600", false, NULL, "3600", NULL, false},
        {"JSESSIONID=abc; Expires=Wed, 21 Oct 2037 07:28:00 GMT", false, NULL, NULL, "Wed, 21 Oct 2037 07:28:00 GMT",
         false},
        {"JSESSIONID=abc; Secure; Partitioned", true, NULL, NULL, NULL, true},
        {"JSESSIONID=; Max-Age=0", false, NULL, "<=0", NULL, false},
        {"JSESSIONID=abc; Max-Age=-1", false, NULL, "<=0", NULL, false},
        {"JSESSIONID=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT", false, NULL, NULL, "Thu, 01 Jan 1970 00:00:00 GMT",
         false},
        {"JSESSIONID=abc; Path=/foo; Domain=example.com; Secure; HttpOnly; SameSite=Strict; Max-Age=100; Partitioned",
         true, "Strict", "100", NULL, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const attr_case_t *c = &cases[i];
        const char *cookies[] = {c->set_cookie, NULL};
        char path[1024];
        cookie_path(path, sizeof path, "/cookie", cookies, NULL);
        result_t r;
        request(g_r1.port, "attrs.example.com", path, NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        if (!r.has_vcap)
            fail_msg("case '%s': no __VCAP_ID__", c->set_cookie);
        if (r.n_vcap != 1)
            fail_msg("case '%s': %d __VCAP_ID__ cookies", c->set_cookie, r.n_vcap);
        const cookie_t *v = &r.vcap;
        const char *want_id = id_of(r.backend);
        if (strcmp(v->value, want_id) != 0)
            fail_msg("case '%s': __VCAP_ID__=%s, served by %s", c->set_cookie, v->value, want_id);
        if (!v->has_path || strcmp(v->path, "/") != 0)
            fail_msg("case '%s': Path '%s', want /: %s", c->set_cookie, v->path, r.vcap_raw);
        if (!v->http_only)
            fail_msg("case '%s': no HttpOnly: %s", c->set_cookie, r.vcap_raw);
        if (v->secure != c->secure)
            fail_msg("case '%s': Secure %d, want %d: %s", c->set_cookie, v->secure, c->secure, r.vcap_raw);
        if (v->has_domain)
            fail_msg("case '%s': Domain copied: %s", c->set_cookie, r.vcap_raw);
        if (v->partitioned != c->partitioned)
            fail_msg("case '%s': Partitioned %d, want %d: %s", c->set_cookie, v->partitioned, c->partitioned,
                     r.vcap_raw);
        if (c->samesite ? (!v->has_samesite || strcmp(v->samesite, c->samesite) != 0) : v->has_samesite)
            fail_msg("case '%s': SameSite '%s': %s", c->set_cookie, v->samesite, r.vcap_raw);
        if (!c->max_age) {
            if (v->has_max_age)
                fail_msg("case '%s': unexpected Max-Age: %s", c->set_cookie, r.vcap_raw);
        } else if (strcmp(c->max_age, "<=0") == 0) {
            if (!v->has_max_age || atoi(v->max_age) > 0)
                fail_msg("case '%s': session cookie deleted but __VCAP_ID__ not: %s", c->set_cookie, r.vcap_raw);
        } else if (!v->has_max_age || strcmp(v->max_age, c->max_age) != 0) {
            fail_msg("case '%s': Max-Age '%s', want %s: %s", c->set_cookie, v->max_age, c->max_age, r.vcap_raw);
        }
        if (c->expires ? (!v->has_expires || strcmp(v->expires, c->expires) != 0) : v->has_expires)
            fail_msg("case '%s': Expires '%s': %s", c->set_cookie, v->expires, r.vcap_raw);
    }
}

static void test_sticky_50_requests_reach_same_instance(void **state)
{
    (void)state;
    reg_all("stick.example.com", "stick.example.com", 7);
    char vcap[256], backend[32];
    start_session(g_r1.port, "stick.example.com", "JSESSIONID=sess-50", vcap, backend);
    char cookie[512];
    snprintf(cookie, sizeof cookie, "JSESSIONID=sess-50; __VCAP_ID__=%s", vcap);
    for (int i = 0; i < 50; i++) {
        result_t r;
        request(g_r1.port, "stick.example.com", "/plain", cookie, NULL, &r);
        assert_int_equal(r.status, 200);
        if (strcmp(r.backend, backend) != 0)
            fail_msg("sticky request %d went to %s, session lives on %s", i, r.backend, backend);
        if (r.has_vcap)
            fail_msg("sticky hit without a session cookie in the response got a new __VCAP_ID__: %s", r.vcap_raw);
        if (!strstr(r.cookie_seen, vcap))
            fail_msg("backend did not receive the __VCAP_ID__ cookie: '%s'", r.cookie_seen);
    }
    /* a sticky hit whose response refreshes the session cookie refreshes __VCAP_ID__ (same value) */
    const char *cookies[] = {"JSESSIONID=sess-50; SameSite=Lax", NULL};
    char path[512];
    cookie_path(path, sizeof path, "/cookie", cookies, NULL);
    result_t r;
    request(g_r1.port, "stick.example.com", path, cookie, NULL, &r);
    assert_string_equal(r.backend, backend);
    assert_true(r.has_vcap);
    assert_string_equal(r.vcap.value, vcap);
    assert_string_equal(r.vcap.samesite, "Lax");

    /* without __VCAP_ID__ the same session cookie is plain round-robin */
    int seen[3] = {0};
    for (int i = 0; i < 30; i++) {
        request(g_r1.port, "stick.example.com", "/plain", "JSESSIONID=sess-50", NULL, &r);
        assert_int_equal(r.status, 200);
        seen[backend_index(r.backend)]++;
    }
    int distinct = (seen[0] > 0) + (seen[1] > 0) + (seen[2] > 0);
    if (distinct < 3)
        fail_msg("control without __VCAP_ID__ did not spread: s1=%d s2=%d s3=%d", seen[0], seen[1], seen[2]);
}

static void test_instance_unregistered_another_serves_with_new_vcap_id(void **state)
{
    (void)state;
    reg_all("failover.example.com", "failover.example.com", 7);
    char vcap[256], backend[32];
    start_session(g_r1.port, "failover.example.com", "JSESSIONID=fo", vcap, backend);
    int gone = backend_index(backend);
    ts_route_t u = {.port = g_s[gone].port, .uris = {"failover.example.com"}};
    assert_int_equal(ts_nats_unregister(g_nc, &u), 0);
    assert_true(ts_crouter_wait_route(&g_r1, "failover.example.com", 2, 5000));

    char cookie[512];
    snprintf(cookie, sizeof cookie, "JSESSIONID=fo; __VCAP_ID__=%s", vcap);
    result_t r;
    request(g_r1.port, "failover.example.com", "/plain", cookie, NULL, &r);
    assert_int_equal(r.status, 200);
    if (strcmp(r.backend, backend) == 0)
        fail_msg("unregistered instance %s still served", backend);
    if (!r.has_vcap)
        fail_msg("session moved from %s to %s but no new __VCAP_ID__ was set", backend, r.backend);
    assert_string_equal(r.vcap.value, id_of(r.backend));
    assert_string_equal(r.vcap.path, "/");
    assert_true(r.vcap.http_only);
    assert_false(r.vcap.secure);
    assert_false(r.vcap.has_max_age);
    assert_false(r.vcap.has_samesite);
    assert_false(r.vcap.has_expires);

    char moved[32], newid[256];
    strcpy(moved, r.backend);
    strcpy(newid, r.vcap.value);
    snprintf(cookie, sizeof cookie, "JSESSIONID=fo; __VCAP_ID__=%s", newid);
    for (int i = 0; i < 10; i++) {
        request(g_r1.port, "failover.example.com", "/plain", cookie, NULL, &r);
        assert_string_equal(r.backend, moved);
        assert_false(r.has_vcap);
    }
}

static void test_vcap_id_alone_is_not_sticky(void **state)
{
    (void)state;
    reg_all("alone.example.com", "alone.example.com", 7);
    const char *cookies[] = {"__VCAP_ID__=inst-s1", "SOMETHING=else; __VCAP_ID__=inst-s1"};
    for (int k = 0; k < 2; k++) {
        int seen[3] = {0};
        for (int i = 0; i < 30; i++) {
            result_t r;
            request(g_r1.port, "alone.example.com", "/plain", cookies[k], NULL, &r);
            assert_int_equal(r.status, 200);
            seen[backend_index(r.backend)]++;
            if (r.has_vcap)
                fail_msg("non-sticky request got a __VCAP_ID__: %s", r.vcap_raw);
        }
        if (seen[0] == 30 || (seen[1] == 0 && seen[2] == 0))
            fail_msg("Cookie '%s' alone was treated as sticky: s1=%d s2=%d s3=%d", cookies[k], seen[0], seen[1],
                     seen[2]);
    }
}

static void test_custom_cookie_names(void **state)
{
    (void)state;
    reg_all("custom.example.com", "custom.example.com", 7);
    /* MYSESSION is a session cookie on r3; JSESSIONID is not */
    char vcap[256], backend[32];
    start_session(g_r3.port, "custom.example.com", "MYSESSION=m1", vcap, backend);
    const char *cookies[] = {"JSESSIONID=j1", NULL};
    char path[512];
    cookie_path(path, sizeof path, "/cookie", cookies, NULL);
    result_t r;
    request(g_r3.port, "custom.example.com", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    if (r.has_vcap)
        fail_msg("JSESSIONID is not configured on this router but got __VCAP_ID__: %s", r.vcap_raw);

    /* any configured name (OTHER) plus __VCAP_ID__ is sticky */
    char cookie[512];
    snprintf(cookie, sizeof cookie, "OTHER=o; __VCAP_ID__=%s", vcap);
    for (int i = 0; i < 20; i++) {
        request(g_r3.port, "custom.example.com", "/plain", cookie, NULL, &r);
        if (strcmp(r.backend, backend) != 0)
            fail_msg("OTHER + __VCAP_ID__ request %d went to %s, want %s", i, r.backend, backend);
    }
    /* JSESSIONID + __VCAP_ID__ is not sticky there */
    snprintf(cookie, sizeof cookie, "JSESSIONID=j; __VCAP_ID__=%s", vcap);
    int other = 0;
    for (int i = 0; i < 12; i++) {
        request(g_r3.port, "custom.example.com", "/plain", cookie, NULL, &r);
        other += strcmp(r.backend, backend) != 0;
    }
    if (other == 0)
        fail_msg("JSESSIONID made requests sticky on a router configured with [MYSESSION, OTHER]");
}

static void test_context_path_route_sets_cookie_path(void **state)
{
    (void)state;
    reg_all("ctxsticky.example.com/app", "ctxsticky.example.com/app", 3);
    reg_all("ctxsticky.example.com", "ctxsticky.example.com", 4);
    const char *cookies[] = {"JSESSIONID=c; Path=/", NULL};
    char path[512];
    cookie_path(path, sizeof path, "/app/login", cookies, NULL);
    result_t r;
    request(g_r1.port, "ctxsticky.example.com", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(strcmp(r.backend, "s1") == 0 || strcmp(r.backend, "s2") == 0);
    assert_true(r.has_vcap);
    assert_string_equal(r.vcap.path, "/app");
    cookie_path(path, sizeof path, "/other", cookies, NULL);
    request(g_r1.port, "ctxsticky.example.com", path, NULL, NULL, &r);
    assert_string_equal(r.backend, "s3");
    assert_true(r.has_vcap);
    assert_string_equal(r.vcap.path, "/");
}

static void test_secure_cookies_forces_secure(void **state)
{
    (void)state;
    reg_all("secure.example.com", "secure.example.com", 7);
    const char *cookies[] = {"MYSESSION=s; SameSite=Lax", NULL};
    char path[512];
    cookie_path(path, sizeof path, "/cookie", cookies, NULL);
    result_t r;
    request(g_r3.port, "secure.example.com", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.has_vcap);
    if (!r.vcap.secure)
        fail_msg("secure_cookies: true but __VCAP_ID__ lacks Secure: %s", r.vcap_raw);
    assert_string_equal(r.vcap.samesite, "Lax");
    assert_true(r.vcap.http_only);
}

static void test_backend_set_vcap_id_left_alone(void **state)
{
    (void)state;
    reg_all("ownvcap.example.com", "ownvcap.example.com", 7);
    const char *cookies[] = {"JSESSIONID=a", "__VCAP_ID__=mine; Path=/", NULL};
    char path[512];
    cookie_path(path, sizeof path, "/cookie", cookies, NULL);
    result_t r;
    request(g_r1.port, "ownvcap.example.com", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    if (r.n_vcap != 1)
        fail_msg("backend set its own __VCAP_ID__ and the response has %d of them", r.n_vcap);
    assert_string_equal(r.vcap.value, "mine");
}

static void test_auth_negotiate_keeps_instance(void **state)
{
    (void)state;
    reg_all("negotiate.example.com", "negotiate.example.com", 7);
    /* WWW-Authenticate: Negotiate in the response pins the instance: Max-Age=60, SameSite=Strict */
    char path[512];
    cookie_path(path, sizeof path, "/header", NULL, "WWW-Authenticate: Negotiate abcdef");
    result_t r;
    request(g_r3.port, "negotiate.example.com", path, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    if (!r.has_vcap)
        fail_msg("Negotiate challenge without a session cookie got no __VCAP_ID__");
    assert_string_equal(r.vcap.value, id_of(r.backend));
    assert_string_equal(r.vcap.max_age, "60");
    assert_string_equal(r.vcap.samesite, "Strict");
    assert_true(r.vcap.http_only);
    assert_true(r.vcap.secure);
    char pinned[32], vcap[256];
    strcpy(pinned, r.backend);
    strcpy(vcap, r.vcap.value);

    /* Authorization: Negotiate + __VCAP_ID__ (no session cookie) is sticky */
    char cookie[300];
    snprintf(cookie, sizeof cookie, "__VCAP_ID__=%s", vcap);
    for (int i = 0; i < 20; i++) {
        request(g_r3.port, "negotiate.example.com", "/plain", cookie, "Authorization: Negotiate YIIabc", &r);
        assert_int_equal(r.status, 200);
        if (strcmp(r.backend, pinned) != 0)
            fail_msg("Negotiate request %d went to %s, pinned to %s", i, r.backend, pinned);
    }
    /* ... and must be: an unknown instance is an error, not another instance */
    request(g_r3.port, "negotiate.example.com", "/plain", "__VCAP_ID__=no-such-instance",
            "Authorization: Negotiate YIIabc", &r);
    if (r.backend[0])
        fail_msg("must-be-sticky request for an unknown instance was served by %s", r.backend);
    assert_int_equal(r.status, 502);
    assert_true(strncmp(r.router_error, "endpoint_failure", 16) == 0);

    /* without sticky_sessions_for_auth_negotiate (r1) the same request is plain load balancing */
    int other = 0;
    for (int i = 0; i < 12; i++) {
        request(g_r1.port, "negotiate.example.com", "/plain", cookie, "Authorization: Negotiate YIIabc", &r);
        assert_int_equal(r.status, 200);
        other += strcmp(r.backend, pinned) != 0;
    }
    if (other == 0)
        fail_msg("Negotiate stickiness applied on a router where it is off");
}

static void test_two_routers_honour_each_others_cookies(void **state)
{
    (void)state;
    reg_all("two.example.com", "two.example.com", 7);
    ts_crouter_t *from[2] = {&g_r1, &g_r2}, *to[2] = {&g_r2, &g_r1};
    for (int k = 0; k < 2; k++) {
        char vcap[256], backend[32];
        start_session(from[k]->port, "two.example.com", "JSESSIONID=two", vcap, backend);
        char cookie[512];
        snprintf(cookie, sizeof cookie, "JSESSIONID=two; __VCAP_ID__=%s", vcap);
        for (int i = 0; i < 20; i++) {
            result_t r;
            request(to[k]->port, "two.example.com", "/plain", cookie, NULL, &r);
            if (strcmp(r.backend, backend) != 0)
                fail_msg("cookie from router %d: request %d on the other router went to %s, want %s", k + 1, i,
                         r.backend, backend);
            assert_false(r.has_vcap);
        }
    }
}

static void test_app_instance_header_wins_over_cookies(void **state)
{
    (void)state;
    reg_all("aiwins.example.com", "aiwins.example.com", 7);
    char hdr[128];
    snprintf(hdr, sizeof hdr, "X-Cf-App-Instance: %s:2", APP_GUID);
    for (int i = 0; i < 5; i++) {
        result_t r;
        request(g_r1.port, "aiwins.example.com", "/plain", "JSESSIONID=x; __VCAP_ID__=inst-s1", hdr, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.backend, "s3");
    }
}

static void test_hostile_vcap_id_value_is_never_echoed(void **state)
{
    (void)state;
    reg_all("hostile.example.com", "hostile.example.com", 7);
    const char *cookies[] = {
        "JSESSIONID=a; __VCAP_ID__=\"inst-s1; Domain=evil.example\"",
        "JSESSIONID=a; __VCAP_ID__=evil%0d%0aX-Injected:%201",
        "JSESSIONID=a; __VCAP_ID__=inst-s1,Domain=evil.example",
    };
    for (size_t i = 0; i < sizeof cookies / sizeof cookies[0]; i++) {
        ts_req_t req = {.host = "hostile.example.com", .path = "/plain"};
        char line[512];
        snprintf(line, sizeof line, "Cookie: %s", cookies[i]);
        req.headers[0] = line;
        ts_resp_t r;
        assert_int_equal(ts_http(NULL, g_r1.port, &req, &r), 0);
        assert_int_equal(r.status, 200);
        assert_null(ts_resp_header(&r, "X-Injected"));
        for (size_t k = 0; k < ts_resp_header_count(&r, "Set-Cookie"); k++) {
            const char *v = ts_resp_header_nth(&r, "Set-Cookie", k);
            if (strstr(v, "evil"))
                fail_msg("request cookie value reached a Set-Cookie: %s", v);
        }
        const char *vc = ts_resp_set_cookie(&r, "__VCAP_ID__");
        if (vc) {
            cookie_t c;
            parse_set_cookie(vc, &c);
            assert_string_equal(c.value, id_of(ts_resp_header(&r, "X-Backend")));
        }
        ts_resp_free(&r);
    }
}

int main(void)
{
    ts_init("sticky");
#define T(fn) cmocka_unit_test_setup(fn, check_alive)
    const struct CMUnitTest tests[] = {
        T(test_vcap_cookie_mirrors_session_cookie_attributes),
        T(test_sticky_50_requests_reach_same_instance),
        T(test_instance_unregistered_another_serves_with_new_vcap_id),
        T(test_vcap_id_alone_is_not_sticky),
        T(test_custom_cookie_names),
        T(test_context_path_route_sets_cookie_path),
        T(test_secure_cookies_forces_secure),
        T(test_backend_set_vcap_id_left_alone),
        T(test_auth_negotiate_keeps_instance),
        T(test_two_routers_honour_each_others_cookies),
        T(test_app_instance_header_wins_over_cookies),
        T(test_hostile_vcap_id_value_is_never_echoed),
    };
#undef T
    return ts_finish(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
