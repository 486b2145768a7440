/* test/unit/router/test_rewrite_persistence.c - session persistence's request cookie edits
 * (router/rewrite.c, issue 5).
 *
 * Each test rewrites a request twice: once with the edit asked for
 * (indirect insert strips crouter's cookie, prefix mode cuts the identity
 * off the app's cookie) and once, without any edit, from the same request
 * whose Cookie headers were edited by hand. The two heads must be equal
 * byte for byte, so nothing but the edited pair changes. The response side
 * leaves out the backend Set-Cookie lines persistence replaces (drop_mask).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "router/rewrite.h"

#define MAX_HEADERS 16
#define ID "AAECAwQFBgc" /* 11 base64url characters: a prefix-mode identity */

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

static void make_request(cr_http_request_t *req, cr_http_header_t *hs, const char *const *kv)
{
    memset(req, 0, sizeof(*req));
    req->method = "GET";
    req->method_len = 3;
    req->target = "/cart";
    req->target_len = 5;
    req->path = req->target;
    req->path_len = req->target_len;
    req->headers = hs;
    req->headers_len = make_headers(hs, kv);
    req->version_minor = 1;
    req->keep_alive = true;
    req->has_host_header = true;
    req->host = "app.example.com";
    req->host_len = 15;
}

static int rewrite(const char *const *kv, const char *cookie, bool strip, bool unprefix,
                   char *out, size_t cap)
{
    cr_http_header_t hs[MAX_HEADERS];
    cr_http_request_t req;
    make_request(&req, hs, kv);
    cr_request_rewrite_t rw = {
        .req = &req,
        .client_ip = "192.168.1.5",
        .request_id = "6f1c3a52-8b9e-4d0a-9c1e-2b3f4a5d6e7f",
        .received_at_ms = 1700000000123,
        .upstream_keep_alive = true,
        .cookie_name = cookie,
        .cookie_name_len = cookie ? strlen(cookie) : 0,
        .cookie_strip = strip,
        .cookie_unprefix = unprefix,
    };
    int n = cr_rewrite_request_head(&rw, out, cap);
    assert_true(n > 0);
    out[n] = '\0';
    return n;
}

/* The head rewritten with the edit equals the head of `expected` (the same
 * headers, Cookie edited by hand) rewritten with none. */
static void check(const char *const *sent, const char *const *expected, const char *cookie,
                  bool strip, bool unprefix)
{
    static char got[4096], want[4096];
    rewrite(sent, cookie, strip, unprefix, got, sizeof got - 1);
    rewrite(expected, NULL, false, false, want, sizeof want - 1);
    assert_string_equal(got, want);
}

#define H(...) ((const char *const[]){"Host", "app.example.com", __VA_ARGS__, NULL})

static void test_strip_removes_crouters_cookie_first_middle_last_and_only(void **state)
{
    (void)state;
    check(H("Cookie", "CROUTERID=abc; a=1; b=2"), H("Cookie", "a=1; b=2"), "CROUTERID", true,
          false);
    check(H("Cookie", "a=1; CROUTERID=abc; b=2"), H("Cookie", "a=1; b=2"), "CROUTERID", true,
          false);
    check(H("Cookie", "a=1; b=2; CROUTERID=abc"), H("Cookie", "a=1; b=2"), "CROUTERID", true,
          false);
    /* The only pair: the header goes away. */
    check(H("Cookie", "CROUTERID=abc", "Accept", "*/*"), H("Accept", "*/*"), "CROUTERID", true,
          false);
}

static void test_strip_keeps_the_other_pairs_byte_for_byte(void **state)
{
    (void)state;
    /* Odd spacing, empty pairs, attributes-like text and a quoted value
     * all go through as sent. */
    check(H("Cookie", "a=1;b=\"x y\";;  CROUTERID=abc ;c"), H("Cookie", "a=1;b=\"x y\" ;c"),
          "CROUTERID", true, false);
    check(H("Cookie", "a=1;b=2"), H("Cookie", "a=1;b=2"), "CROUTERID", true, false);
    check(H("cookie", "a=1 ;  b=2"), H("cookie", "a=1 ;  b=2"), "CROUTERID", true, false);
    /* Names match exactly: case, prefixes and suffixes differ. */
    check(H("Cookie", "crouterid=1; XCROUTERID=2; CROUTERIDX=3; CROUTERID=4"),
          H("Cookie", "crouterid=1; XCROUTERID=2; CROUTERIDX=3"), "CROUTERID", true, false);
    /* Every pair of the name goes. */
    check(H("Cookie", "CROUTERID=1; a=1; CROUTERID=2; CROUTERID=3; b=2; CROUTERID=4"),
          H("Cookie", "a=1; b=2"), "CROUTERID", true, false);
}

static void test_strip_edits_each_of_several_cookie_headers(void **state)
{
    (void)state;
    check(H("Cookie", "a=1; CROUTERID=x", "Accept", "*/*", "Cookie", "CROUTERID=y",
            "Cookie", "b=2", "Cookie", "CROUTERID=z; c=3"),
          H("Cookie", "a=1", "Accept", "*/*", "Cookie", "b=2", "Cookie", "c=3"), "CROUTERID",
          true, false);
}

static void test_unprefix_restores_the_apps_value_first_middle_last(void **state)
{
    (void)state;
    check(H("Cookie", "JSESSIONID=" ID "~s3cr3t; a=1"), H("Cookie", "JSESSIONID=s3cr3t; a=1"),
          "JSESSIONID", false, true);
    check(H("Cookie", "a=1; JSESSIONID=" ID "~s3cr3t; b=2"),
          H("Cookie", "a=1; JSESSIONID=s3cr3t; b=2"), "JSESSIONID", false, true);
    check(H("Cookie", "a=1;JSESSIONID=" ID "~s3~cr3t"), H("Cookie", "a=1;JSESSIONID=s3~cr3t"),
          "JSESSIONID", false, true);
    /* A quoted value keeps its quotes. */
    check(H("Cookie", "JSESSIONID=\"" ID "~s3cr3t\""), H("Cookie", "JSESSIONID=\"s3cr3t\""),
          "JSESSIONID", false, true);
    /* Nothing after the prefix: an empty value, as the app set it. */
    check(H("Cookie", "JSESSIONID=" ID "~"), H("Cookie", "JSESSIONID="), "JSESSIONID", false,
          true);
}

static void test_unprefix_leaves_values_without_a_prefix_and_other_cookies(void **state)
{
    (void)state;
    /* Not 11 base64url characters then '~'. */
    check(H("Cookie", "JSESSIONID=short~x; JSESSIONID=AAECAwQFBg!~x; JSESSIONID=" ID "x"),
          H("Cookie", "JSESSIONID=short~x; JSESSIONID=AAECAwQFBg!~x; JSESSIONID=" ID "x"),
          "JSESSIONID", false, true);
    /* Another cookie with a prefix-shaped value is not touched. */
    check(H("Cookie", "OTHER=" ID "~v; JSESSIONID=" ID "~w"),
          H("Cookie", "OTHER=" ID "~v; JSESSIONID=w"), "JSESSIONID", false, true);
}

static void test_unprefix_edits_each_of_several_cookie_headers(void **state)
{
    (void)state;
    check(H("Cookie", "JSESSIONID=" ID "~one", "Cookie", "a=1", "Cookie",
            "b=2; JSESSIONID=" ID "~two"),
          H("Cookie", "JSESSIONID=one", "Cookie", "a=1", "Cookie", "b=2; JSESSIONID=two"),
          "JSESSIONID", false, true);
}

static void test_without_a_cookie_name_cookie_headers_go_as_sent(void **state)
{
    (void)state;
    check(H("Cookie", "CROUTERID=abc;a=1", "Cookie", "JSESSIONID=" ID "~x"),
          H("Cookie", "CROUTERID=abc;a=1", "Cookie", "JSESSIONID=" ID "~x"), NULL, false, false);
}

static void test_edited_head_over_cap_is_etoobig(void **state)
{
    (void)state;
    const char *const *kv = H("Cookie", "a=1; CROUTERID=abc; b=2");
    static char full[4096];
    int n = rewrite(kv, "CROUTERID", true, false, full, sizeof full - 1);
    cr_http_header_t hs[MAX_HEADERS];
    cr_http_request_t req;
    make_request(&req, hs, kv);
    cr_request_rewrite_t rw = {
        .req = &req,
        .client_ip = "192.168.1.5",
        .request_id = "6f1c3a52-8b9e-4d0a-9c1e-2b3f4a5d6e7f",
        .received_at_ms = 1700000000123,
        .upstream_keep_alive = true,
        .cookie_name = "CROUTERID",
        .cookie_name_len = 9,
        .cookie_strip = true,
    };
    for (int cap = 0; cap < n; cap++) {
        char *buf = malloc((size_t)cap + 1);
        assert_int_equal(cr_rewrite_request_head(&rw, buf, (size_t)cap), CR_ETOOBIG);
        free(buf);
    }
}

static void test_response_leaves_out_every_header_in_the_drop_mask(void **state)
{
    (void)state;
    /* 70 headers, so the mask spans two words: Set-Cookie at 0, 2 and 66
     * are replaced by the extra lines; the rest go as sent. */
    static cr_http_header_t hs[70];
    static char names[70][16];
    memset(hs, 0, sizeof hs);
    for (int i = 0; i < 70; i++) {
        bool sc = i == 0 || i == 2 || i == 66 || i == 67;
        snprintf(names[i], sizeof names[i], sc ? "Set-Cookie" : "X-H%d", i);
        hs[i].name = names[i];
        hs[i].name_len = (uint32_t)strlen(names[i]);
        hs[i].value = sc ? (i == 67 ? "other=1" : "JSESSIONID=v") : "x";
        hs[i].value_len = (uint32_t)strlen(hs[i].value);
    }
    cr_http_response_t resp;
    memset(&resp, 0, sizeof resp);
    resp.status = 200;
    resp.reason = "OK";
    resp.reason_len = 2;
    resp.headers = hs;
    resp.headers_len = 70;
    resp.version_minor = 1;
    resp.keep_alive = true;
    resp.body_kind = CR_HTTP_BODY_LENGTH;
    uint64_t drop[4] = {(1ull << 0) | (1ull << 2), 1ull << 2, 0, 0};
    static const char extra[] = "Set-Cookie: JSESSIONID=p~v\r\n";
    cr_response_rewrite_t rw = {.resp = &resp, .client_keep_alive = true,
                                .client_version_minor = 1, .extra = extra,
                                .extra_len = sizeof extra - 1, .drop_mask = drop};
    static char got[8192];
    int n = cr_rewrite_response_head(&rw, got, sizeof got - 1);
    assert_true(n > 0);
    got[n] = '\0';
    assert_null(strstr(got, "JSESSIONID=v"));
    assert_non_null(strstr(got, "\r\nSet-Cookie: other=1\r\n"));
    assert_non_null(strstr(got, "\r\nX-H1: x\r\nX-H3: x\r\n"));
    assert_non_null(strstr(got, "\r\nX-H65: x\r\nSet-Cookie: other=1\r\nX-H68: x\r\n"));
    assert_non_null(strstr(got, "\r\nSet-Cookie: JSESSIONID=p~v\r\n\r\n"));
    /* Without a mask every header goes. */
    rw.drop_mask = NULL;
    n = cr_rewrite_response_head(&rw, got, sizeof got - 1);
    assert_true(n > 0);
    got[n] = '\0';
    assert_non_null(strstr(got, "HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=v\r\nX-H1: x\r\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strip_removes_crouters_cookie_first_middle_last_and_only),
        cmocka_unit_test(test_strip_keeps_the_other_pairs_byte_for_byte),
        cmocka_unit_test(test_strip_edits_each_of_several_cookie_headers),
        cmocka_unit_test(test_unprefix_restores_the_apps_value_first_middle_last),
        cmocka_unit_test(test_unprefix_leaves_values_without_a_prefix_and_other_cookies),
        cmocka_unit_test(test_unprefix_edits_each_of_several_cookie_headers),
        cmocka_unit_test(test_without_a_cookie_name_cookie_headers_go_as_sent),
        cmocka_unit_test(test_edited_head_over_cap_is_etoobig),
        cmocka_unit_test(test_response_leaves_out_every_header_in_the_drop_mask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
