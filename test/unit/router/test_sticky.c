/* test/unit/router/test_sticky.c - JSESSIONID + __VCAP_ID__ affinity, request and response side. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "router/sticky.h"

static char *default_names[] = {"JSESSIONID"};

static cr_sticky_config_t config(void)
{
    cr_sticky_config_t cfg = {.cookie_names = default_names, .cookie_names_len = 1,
                              .auth_negotiate = false, .secure_cookies = false};
    return cfg;
}

static uint32_t make_headers(cr_http_header_t *hs, const char *const *kv)
{
    uint32_t n = 0;
    for (; kv[0]; kv += 2, n++) {
        hs[n].name = kv[0];
        hs[n].name_len = (uint32_t)strlen(kv[0]);
        hs[n].value = kv[1];
        hs[n].value_len = (uint32_t)strlen(kv[1]);
    }
    return n;
}

/* --- request side -------------------------------------------------------- */

static cr_sticky_request_t from_request(const cr_sticky_config_t *cfg, const char *const *kv)
{
    cr_http_header_t hs[16];
    cr_http_request_t req;
    memset(&req, 0, sizeof(req));
    req.headers = hs;
    req.headers_len = make_headers(hs, kv);
    cr_sticky_request_t out;
    cr_sticky_from_request(cfg, &req, &out);
    return out;
}

static void assert_id(const cr_sticky_request_t *r, const char *id)
{
    assert_non_null(r->instance_id);
    assert_int_equal(r->instance_id_len, strlen(id));
    assert_memory_equal(r->instance_id, id, strlen(id));
}

static void test_request_with_session_and_vcap_cookies_asks_for_instance(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    static const char *const kv[] = {"Cookie", "JSESSIONID=abc; __VCAP_ID__=inst-1", NULL};
    cr_sticky_request_t r = from_request(&cfg, kv);
    assert_id(&r, "inst-1");
    assert_false(r.must_be_sticky);
}

static void test_vcap_without_session_cookie_is_not_sticky(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    static const char *const kv[] = {"Cookie", "__VCAP_ID__=inst-1; other=1", NULL};
    cr_sticky_request_t r = from_request(&cfg, kv);
    assert_null(r.instance_id);
    assert_false(r.must_be_sticky);
}

static void test_session_without_vcap_is_not_sticky(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    static const char *const kv[] = {"Cookie", "JSESSIONID=abc", NULL};
    assert_null(from_request(&cfg, kv).instance_id);
}

static void test_cookies_are_found_across_several_cookie_headers(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    static const char *const kv[] = {"Cookie", "a=1; __VCAP_ID__=inst-2", "Accept", "*/*",
                                     "cookie", "JSESSIONID=x", NULL};
    cr_sticky_request_t r = from_request(&cfg, kv);
    assert_id(&r, "inst-2");
}

static void test_duplicate_vcap_cookies_first_wins(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    static const char *const kv[] = {"Cookie", "__VCAP_ID__=first; JSESSIONID=s",
                                     "Cookie", "__VCAP_ID__=second", NULL};
    cr_sticky_request_t r = from_request(&cfg, kv);
    assert_id(&r, "first");
}

static void test_quoted_and_spaced_vcap_value_is_unquoted(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    static const char *const kv[] = {"Cookie", "  JSESSIONID = s ;  __VCAP_ID__ = \"inst-3\" ",
                                     NULL};
    cr_sticky_request_t r = from_request(&cfg, kv);
    assert_id(&r, "inst-3");
}

static void test_empty_vcap_value_is_not_sticky(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    static const char *const kv[] = {"Cookie", "JSESSIONID=s; __VCAP_ID__=", NULL};
    assert_null(from_request(&cfg, kv).instance_id);
}

static void test_session_cookie_names_are_case_sensitive_and_configurable(void **state)
{
    (void)state;
    static char *names[] = {"SESSION", "PHPSESSID"};
    cr_sticky_config_t cfg = {.cookie_names = names, .cookie_names_len = 2};
    static const char *const jsession[] = {"Cookie", "JSESSIONID=s; __VCAP_ID__=i", NULL};
    assert_null(from_request(&cfg, jsession).instance_id);
    static const char *const php[] = {"Cookie", "PHPSESSID=s; __VCAP_ID__=i", NULL};
    assert_id((cr_sticky_request_t[]){from_request(&cfg, php)}, "i");
    static const char *const lower[] = {"Cookie", "phpsessid=s; __VCAP_ID__=i", NULL};
    assert_null(from_request(&cfg, lower).instance_id);
}

static void test_negotiate_authorization_with_vcap_must_be_sticky(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    cfg.auth_negotiate = true;
    static const char *const kv[] = {"Authorization", "nEgOtIaTe YIIFz", "Cookie",
                                     "__VCAP_ID__=inst-4", NULL};
    cr_sticky_request_t r = from_request(&cfg, kv);
    assert_id(&r, "inst-4");
    assert_true(r.must_be_sticky);

    cfg.auth_negotiate = false;
    r = from_request(&cfg, kv);
    assert_null(r.instance_id);
    assert_false(r.must_be_sticky);
}

static void test_other_authorization_schemes_are_not_must_be_sticky(void **state)
{
    (void)state;
    cr_sticky_config_t cfg = config();
    cfg.auth_negotiate = true;
    static const char *const kv[] = {"Authorization", "Basic Zm9v", "Cookie",
                                     "__VCAP_ID__=i; JSESSIONID=s", NULL};
    cr_sticky_request_t r = from_request(&cfg, kv);
    assert_id(&r, "i");
    assert_false(r.must_be_sticky);
}

/* --- response side ------------------------------------------------------- */

typedef struct scenario {
    cr_sticky_config_t cfg;
    cr_sticky_request_t request;
    cr_endpoint_t ep;
    cr_http_header_t hs[16];
    cr_http_response_t resp;
    const char *context_path;
    bool over_tls;
    char out[1024];
} scenario_t;

static void scenario_init(scenario_t *s, const char *req_id, const char *pid,
                          const char *const *resp_kv)
{
    memset(s, 0, sizeof(*s));
    s->cfg = config();
    s->request.instance_id = req_id;
    s->request.instance_id_len = req_id ? strlen(req_id) : 0;
    s->ep.addr = "10.0.0.1:8080";
    s->ep.private_instance_id = (char *)pid;
    s->resp.status = 200;
    s->resp.headers = s->hs;
    s->resp.headers_len = make_headers(s->hs, resp_kv);
    s->context_path = "";
}

/* The Set-Cookie line, or NULL when none is added. */
static const char *run(scenario_t *s)
{
    cr_sticky_response_ctx_t ctx = {.cfg = &s->cfg, .request = &s->request, .resp = &s->resp,
                                    .endpoint = &s->ep, .context_path = s->context_path,
                                    .over_tls = s->over_tls};
    int n = cr_sticky_response_cookie(&ctx, s->out, sizeof(s->out) - 1);
    assert_true(n >= 0);
    if (n == 0)
        return NULL;
    s->out[n] = '\0';
    /* Exactly one line. */
    assert_ptr_equal(strstr(s->out, "\r\n"), s->out + n - 2);
    return s->out;
}

static const char *cookie_for(const char *req_id, const char *set_cookie)
{
    static scenario_t s;
    const char *kv[] = {"Set-Cookie", set_cookie, NULL};
    const char *none[] = {NULL};
    scenario_init(&s, req_id, "inst-1", set_cookie ? kv : none);
    return run(&s);
}

static void test_row_no_sticky_id_session_set_adds_cookie(void **state)
{
    (void)state;
    assert_string_equal(cookie_for(NULL, "JSESSIONID=abc"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly\r\n");
}

static void test_row_no_sticky_id_no_session_adds_nothing(void **state)
{
    (void)state;
    assert_null(cookie_for(NULL, NULL));
    assert_null(cookie_for(NULL, "other=1"));
}

static void test_row_sticky_same_instance_with_session_refreshes(void **state)
{
    (void)state;
    assert_string_equal(cookie_for("inst-1", "JSESSIONID=abc; Secure"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; Secure\r\n");
}

static void test_row_sticky_same_instance_without_session_adds_nothing(void **state)
{
    (void)state;
    assert_null(cookie_for("inst-1", NULL));
}

static void test_row_failover_without_session_gets_default_attributes(void **state)
{
    (void)state;
    assert_string_equal(cookie_for("inst-gone", NULL),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly\r\n");
    /* The request may name an address ("host:port"), gorouter's quirk. */
    assert_string_equal(cookie_for("10.0.0.1:8080", NULL),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly\r\n");
}

static void test_row_failover_with_session_copies_attributes(void **state)
{
    (void)state;
    assert_string_equal(cookie_for("inst-gone", "JSESSIONID=x; SameSite=Lax; Max-Age=100"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; Max-Age=100; HttpOnly; "
                        "SameSite=Lax\r\n");
}

static void test_row_backend_set_vcap_is_left_alone(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie", "JSESSIONID=abc", "Set-Cookie",
                                     "__VCAP_ID__=backend-choice; Path=/", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", kv);
    assert_null(run(&s));
    scenario_init(&s, "inst-gone", "inst-1", kv);
    assert_null(run(&s));
    s.cfg.auth_negotiate = true;
    static const char *const neg[] = {"WWW-Authenticate", "Negotiate", "Set-Cookie",
                                      " __VCAP_ID__ =x", NULL};
    scenario_init(&s, NULL, "inst-1", neg);
    s.cfg.auth_negotiate = true;
    assert_null(run(&s));
}

static void test_endpoint_without_private_instance_id_gets_nothing(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie", "JSESSIONID=abc", NULL};
    scenario_t s;
    scenario_init(&s, "inst-gone", NULL, kv);
    assert_null(run(&s));
    scenario_init(&s, "inst-gone", "", kv);
    assert_null(run(&s));
}

static void test_all_attributes_are_mirrored_in_go_order(void **state)
{
    (void)state;
    assert_string_equal(
        cookie_for(NULL, "JSESSIONID=abc; Path=/app; Domain=example.com; "
                         "Expires=Wed, 21 Oct 2099 07:28:00 GMT; Max-Age=3600; Secure; HttpOnly; "
                         "SameSite=None; Partitioned"),
        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; Expires=Wed, 21 Oct 2099 07:28:00 GMT; "
        "Max-Age=3600; HttpOnly; Secure; SameSite=None; Partitioned\r\n");
}

static void test_samesite_values_are_mirrored_and_unknown_omitted(void **state)
{
    (void)state;
    assert_string_equal(cookie_for(NULL, "JSESSIONID=a; samesite=strict"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; SameSite=Strict\r\n");
    assert_string_equal(cookie_for(NULL, "JSESSIONID=a; SameSite=Lax"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; SameSite=Lax\r\n");
    assert_string_equal(cookie_for(NULL, "JSESSIONID=a; SameSite=None; Secure"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; Secure; "
                        "SameSite=None\r\n");
    assert_string_equal(cookie_for(NULL, "JSESSIONID=a; SameSite=Bogus"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly\r\n");
}

static void test_httponly_is_always_set(void **state)
{
    (void)state;
    assert_non_null(strstr(cookie_for(NULL, "JSESSIONID=a"), "; HttpOnly"));
    assert_non_null(strstr(cookie_for(NULL, "JSESSIONID=a; HttpOnly"), "; HttpOnly"));
}

static void test_max_age_is_copied_whatever_its_sign(void **state)
{
    (void)state;
    assert_string_equal(cookie_for(NULL, "JSESSIONID=a; Max-Age=86400"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; Max-Age=86400; HttpOnly\r\n");
    /* Deleting the session deletes __VCAP_ID__ (Go writes any deletion as 0). */
    assert_string_equal(cookie_for("inst-1", "JSESSIONID=; Max-Age=0"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; Max-Age=0; HttpOnly\r\n");
    assert_string_equal(cookie_for("inst-1", "JSESSIONID=; Max-Age=-1"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; Max-Age=0; HttpOnly\r\n");
}

static void test_expires_future_and_past_are_copied(void **state)
{
    (void)state;
    assert_string_equal(cookie_for(NULL, "JSESSIONID=a; Expires=Fri, 01 Jan 2100 00:00:00 GMT"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; "
                        "Expires=Fri, 01 Jan 2100 00:00:00 GMT; HttpOnly\r\n");
    assert_string_equal(cookie_for("inst-1", "JSESSIONID=; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; "
                        "Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly\r\n");
}

static void test_partitioned_is_mirrored(void **state)
{
    (void)state;
    assert_string_equal(cookie_for(NULL, "JSESSIONID=a; Secure; Partitioned"),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; Secure; "
                        "Partitioned\r\n");
}

static void test_first_session_cookie_gives_the_attributes(void **state)
{
    (void)state;
    static char *names[] = {"JSESSIONID", "SESSION"};
    static const char *const kv[] = {"Set-Cookie", "other=1; Secure", "Set-Cookie",
                                     "SESSION=a; SameSite=Strict", "Set-Cookie",
                                     "JSESSIONID=b; Secure; SameSite=Lax", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", kv);
    s.cfg.cookie_names = names;
    s.cfg.cookie_names_len = 2;
    assert_string_equal(run(&s),
                        "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; SameSite=Strict\r\n");
}

static void test_custom_cookie_names_replace_jsessionid(void **state)
{
    (void)state;
    static char *names[] = {"PHPSESSID"};
    static const char *const php[] = {"Set-Cookie", "PHPSESSID=a", NULL};
    static const char *const java[] = {"Set-Cookie", "JSESSIONID=a", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", php);
    s.cfg.cookie_names = names;
    assert_non_null(run(&s));
    scenario_init(&s, NULL, "inst-1", java);
    s.cfg.cookie_names = names;
    assert_null(run(&s));
}

static void test_context_path_becomes_cookie_path(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie", "JSESSIONID=a; Path=/other", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", kv);
    s.context_path = "/app/v1";
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/app/v1; HttpOnly\r\n");
    scenario_init(&s, NULL, "inst-1", kv);
    s.context_path = NULL;
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly\r\n");
}

static void test_secure_cookies_forces_secure(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie", "JSESSIONID=a", NULL};
    static const char *const none[] = {NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", kv);
    s.cfg.secure_cookies = true;
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; Secure\r\n");
    scenario_init(&s, "inst-gone", "inst-1", none);
    s.cfg.secure_cookies = true;
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; Secure\r\n");
}

static void test_failover_cookie_over_tls_is_secure_but_copied_one_follows_session(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie", "JSESSIONID=a", NULL};
    static const char *const none[] = {NULL};
    scenario_t s;
    scenario_init(&s, "inst-gone", "inst-1", none);
    s.over_tls = true;
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly; Secure\r\n");
    scenario_init(&s, "inst-gone", "inst-1", kv);
    s.over_tls = true;
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/; HttpOnly\r\n");
}

static void test_negotiate_response_sets_strict_short_cookie_ignoring_session(void **state)
{
    (void)state;
    static const char *const kv[] = {"WWW-Authenticate", "Negotiate oRQwEqADCgEAoQsGCSqGSIb3",
                                     "Set-Cookie", "JSESSIONID=a; Secure; Max-Age=9999", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", kv);
    s.cfg.auth_negotiate = true;
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/; Max-Age=60; HttpOnly; "
                                 "SameSite=Strict\r\n");
    /* A stale sticky id: re-issued. */
    scenario_init(&s, "inst-old", "inst-1", kv);
    s.cfg.auth_negotiate = true;
    assert_non_null(strstr(run(&s), "Max-Age=60"));
    /* Already on that instance: nothing, even with a session cookie. */
    scenario_init(&s, "inst-1", "inst-1", kv);
    s.cfg.auth_negotiate = true;
    assert_null(run(&s));
    /* Mode off: an ordinary session-cookie mirror. */
    scenario_init(&s, NULL, "inst-1", kv);
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/; Max-Age=9999; "
                                 "HttpOnly; Secure\r\n");
}

static void test_negotiate_cookie_with_secure_cookies_is_secure(void **state)
{
    (void)state;
    static const char *const kv[] = {"www-authenticate", "negotiate", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", kv);
    s.cfg.auth_negotiate = true;
    s.cfg.secure_cookies = true;
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/; Max-Age=60; HttpOnly; "
                                 "Secure; SameSite=Strict\r\n");
}

static void test_instance_id_with_crlf_cannot_inject_a_header(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie", "JSESSIONID=a", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "id\r\nX: y", kv);
    const char *line = run(&s);
    assert_null(strstr(line, "\r\nX"));
    assert_string_equal(line, "Set-Cookie: __VCAP_ID__=\"idX: y\"; Path=/; HttpOnly\r\n");
}

static void test_instance_id_with_semicolon_cannot_inject_attributes(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie", "JSESSIONID=a", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "a; Domain=evil", kv);
    const char *line = run(&s);
    assert_null(strstr(line, "; Domain"));
    assert_string_equal(line, "Set-Cookie: __VCAP_ID__=\"a Domain=evil\"; Path=/; HttpOnly\r\n");
    scenario_init(&s, NULL, "q\"u\\o\x7f\x01te", kv);
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=quote; Path=/; HttpOnly\r\n");
    scenario_init(&s, NULL, "\r\n;\"", kv);
    assert_null(run(&s));
}

static void test_copied_attributes_and_path_cannot_inject(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie",
                                     "JSESSIONID=a; Expires=Fri, 01 Jan 2100\x01 00:00:00 GMT",
                                     NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", kv);
    s.context_path = "/p;Domain=evil\r\n";
    assert_string_equal(run(&s), "Set-Cookie: __VCAP_ID__=inst-1; Path=/pDomain=evil; "
                                 "Expires=Fri, 01 Jan 2100 00:00:00 GMT; HttpOnly\r\n");
}

static void test_small_buffer_is_etoobig(void **state)
{
    (void)state;
    static const char *const kv[] = {"Set-Cookie", "JSESSIONID=a; Secure; SameSite=Lax", NULL};
    scenario_t s;
    scenario_init(&s, NULL, "inst-1", kv);
    cr_sticky_response_ctx_t ctx = {.cfg = &s.cfg, .request = &s.request, .resp = &s.resp,
                                    .endpoint = &s.ep, .context_path = ""};
    int n = cr_sticky_response_cookie(&ctx, s.out, sizeof(s.out));
    assert_true(n > 0);
    for (int cap = 0; cap < n; cap++) {
        char *buf = malloc((size_t)cap + 1);
        assert_int_equal(cr_sticky_response_cookie(&ctx, buf, (size_t)cap), CR_ETOOBIG);
        free(buf);
    }
    char exact[256];
    assert_int_equal(cr_sticky_response_cookie(&ctx, exact, (size_t)n), n);
}

static void test_config_from_copies_the_sticky_keys(void **state)
{
    (void)state;
    cr_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.sticky_session_cookie_names = default_names;
    cfg.sticky_session_cookie_names_len = 1;
    cfg.sticky_sessions_for_auth_negotiate = true;
    cfg.secure_cookies = true;
    cr_sticky_config_t out;
    cr_sticky_config_from(&cfg, &out);
    assert_ptr_equal(out.cookie_names, default_names);
    assert_int_equal(out.cookie_names_len, 1);
    assert_true(out.auth_negotiate);
    assert_true(out.secure_cookies);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_with_session_and_vcap_cookies_asks_for_instance),
        cmocka_unit_test(test_vcap_without_session_cookie_is_not_sticky),
        cmocka_unit_test(test_session_without_vcap_is_not_sticky),
        cmocka_unit_test(test_cookies_are_found_across_several_cookie_headers),
        cmocka_unit_test(test_duplicate_vcap_cookies_first_wins),
        cmocka_unit_test(test_quoted_and_spaced_vcap_value_is_unquoted),
        cmocka_unit_test(test_empty_vcap_value_is_not_sticky),
        cmocka_unit_test(test_session_cookie_names_are_case_sensitive_and_configurable),
        cmocka_unit_test(test_negotiate_authorization_with_vcap_must_be_sticky),
        cmocka_unit_test(test_other_authorization_schemes_are_not_must_be_sticky),
        cmocka_unit_test(test_row_no_sticky_id_session_set_adds_cookie),
        cmocka_unit_test(test_row_no_sticky_id_no_session_adds_nothing),
        cmocka_unit_test(test_row_sticky_same_instance_with_session_refreshes),
        cmocka_unit_test(test_row_sticky_same_instance_without_session_adds_nothing),
        cmocka_unit_test(test_row_failover_without_session_gets_default_attributes),
        cmocka_unit_test(test_row_failover_with_session_copies_attributes),
        cmocka_unit_test(test_row_backend_set_vcap_is_left_alone),
        cmocka_unit_test(test_endpoint_without_private_instance_id_gets_nothing),
        cmocka_unit_test(test_all_attributes_are_mirrored_in_go_order),
        cmocka_unit_test(test_samesite_values_are_mirrored_and_unknown_omitted),
        cmocka_unit_test(test_httponly_is_always_set),
        cmocka_unit_test(test_max_age_is_copied_whatever_its_sign),
        cmocka_unit_test(test_expires_future_and_past_are_copied),
        cmocka_unit_test(test_partitioned_is_mirrored),
        cmocka_unit_test(test_first_session_cookie_gives_the_attributes),
        cmocka_unit_test(test_custom_cookie_names_replace_jsessionid),
        cmocka_unit_test(test_context_path_becomes_cookie_path),
        cmocka_unit_test(test_secure_cookies_forces_secure),
        cmocka_unit_test(test_failover_cookie_over_tls_is_secure_but_copied_one_follows_session),
        cmocka_unit_test(test_negotiate_response_sets_strict_short_cookie_ignoring_session),
        cmocka_unit_test(test_negotiate_cookie_with_secure_cookies_is_secure),
        cmocka_unit_test(test_instance_id_with_crlf_cannot_inject_a_header),
        cmocka_unit_test(test_instance_id_with_semicolon_cannot_inject_attributes),
        cmocka_unit_test(test_copied_attributes_and_path_cannot_inject),
        cmocka_unit_test(test_small_buffer_is_etoobig),
        cmocka_unit_test(test_config_from_copies_the_sticky_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
