/* test/unit/router/test_http1.c - the HTTP/1.1 head parser: forms, framing, limits, smuggling.
 *
 * Every input is placed at the end of a guarded page (guarded.h) so an
 * over-read faults. The smuggling probes are an X-macro list: each becomes
 * its own named test, and `test_http1 --write-corpus DIR` writes each probe's
 * raw bytes to DIR/<name> as seeds for fuzz_http_request.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "guarded.h"
#include "router/http1.h"

#define MAX_HEADERS 16
#define MAX_BYTES   1024

static cr_http_header_t hdrs[MAX_HEADERS];
static cr_http_request_t req;
static cr_http_response_t resp;

static int parse_lim(const char *s, size_t len, uint32_t max_bytes, uint32_t max_headers)
{
    cr_http_limits_t lim = { .max_head_bytes = max_bytes, .max_headers = max_headers };
    const char *g = guarded_put(s, len);
    int rc = cr_http1_parse_request(g, len, &lim, hdrs, &req);
    if (rc > 0) {
        /* Slices must point into the guarded copy. */
        assert_true(req.method >= g && req.method + req.method_len <= g + len);
        assert_true(req.path != NULL);
        for (uint32_t i = 0; i < req.headers_len; i++)
            assert_true(hdrs[i].value >= g && hdrs[i].value + hdrs[i].value_len <= g + len);
    }
    return rc;
}

static int parse_n(const char *s, size_t len)
{
    return parse_lim(s, len, MAX_BYTES, MAX_HEADERS);
}

static int parse(const char *s)
{
    return parse_n(s, strlen(s));
}

static int parse_resp_n(const char *s, size_t len, bool head)
{
    cr_http_limits_t lim = { .max_head_bytes = MAX_BYTES, .max_headers = MAX_HEADERS };
    return cr_http1_parse_response(guarded_put(s, len), len, &lim, hdrs, head, &resp);
}

static int parse_resp(const char *s, bool head)
{
    return parse_resp_n(s, strlen(s), head);
}

static void assert_slice(const char *s, size_t len, const char *expect)
{
    assert_non_null(s);
    assert_int_equal(len, strlen(expect));
    assert_memory_equal(s, expect, len);
}

/* ---- valid requests ---- */

static void test_origin_form_get_parses_all_fields(void **state)
{
    (void)state;
    const char *s = "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    assert_int_equal(parse(s), (int)strlen(s));
    assert_slice(req.method, req.method_len, "GET");
    assert_slice(req.target, req.target_len, "/a/b?x=1");
    assert_slice(req.path, req.path_len, "/a/b?x=1");
    assert_null(req.authority);
    assert_slice(req.host, req.host_len, "example.com");
    assert_int_equal(req.headers_len, 2);
    assert_slice(hdrs[1].name, hdrs[1].name_len, "Accept");
    assert_slice(hdrs[1].value, hdrs[1].value_len, "*/*");
    assert_int_equal(req.head_len, strlen(s));
    assert_int_equal(req.body_kind, CR_HTTP_BODY_NONE);
    assert_int_equal(req.version_minor, 1);
    assert_true(req.keep_alive);
    assert_false(req.upgrade);
    assert_false(req.expect_continue);
    assert_true(req.has_host_header);
}

static void test_header_values_are_ows_trimmed(void **state)
{
    (void)state;
    assert_true(parse("GET / HTTP/1.1\r\nHost:a\r\nX-A: \t v a l \t \r\nX-B:\r\nX-C:   \r\n\r\n") > 0);
    assert_slice(hdrs[0].value, hdrs[0].value_len, "a");
    assert_slice(hdrs[1].value, hdrs[1].value_len, "v a l");
    assert_int_equal(hdrs[2].value_len, 0);
    assert_int_equal(hdrs[3].value_len, 0);
}

static void test_obs_text_allowed_in_values(void **state)
{
    (void)state;
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n") > 0);
    assert_slice(hdrs[1].value, hdrs[1].value_len, "caf\xc3\xa9 \xff");
}

static void test_absolute_form_sets_authority_host_and_path(void **state)
{
    (void)state;
    assert_true(parse("GET http://app.example.com:8080/p?q=1 HTTP/1.1\r\nHost: app.example.com:8080\r\n\r\n") > 0);
    assert_slice(req.authority, req.authority_len, "app.example.com:8080");
    assert_slice(req.host, req.host_len, "app.example.com:8080");
    assert_slice(req.path, req.path_len, "/p?q=1");
    assert_slice(req.target, req.target_len, "http://app.example.com:8080/p?q=1");
}

static void test_absolute_form_without_path_gives_slash(void **state)
{
    (void)state;
    assert_true(parse("GET HTTPS://h.example HTTP/1.1\r\n\r\n") > 0);
    assert_slice(req.authority, req.authority_len, "h.example");
    assert_slice(req.path, req.path_len, "/");
    assert_false(req.has_host_header);
}

static void test_absolute_form_rejects_userinfo_empty_authority_and_bare_query(void **state)
{
    (void)state;
    assert_int_equal(parse("GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET http:/// HTTP/1.1\r\nHost: h\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET h/x HTTP/1.1\r\nHost: h\r\n\r\n"), CR_EBAD);
}

static void test_authority_form_only_for_connect(void **state)
{
    (void)state;
    assert_true(parse("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n") > 0);
    assert_slice(req.target, req.target_len, "example.com:443");
    assert_true(parse("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n") > 0);
    assert_int_equal(parse("GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("CONNECT example.com:x HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("CONNECT :443 HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
}

static void test_asterisk_form_only_for_options(void **state)
{
    (void)state;
    assert_true(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
    assert_slice(req.path, req.path_len, "*");
    assert_int_equal(parse("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
}

static void test_any_token_method_accepted(void **state)
{
    (void)state;
    assert_true(parse("PROPFIND /x HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
    assert_slice(req.method, req.method_len, "PROPFIND");
    assert_true(parse("M-SEARCH! /x HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
}

static void test_http10_request(void **state)
{
    (void)state;
    assert_true(parse("GET / HTTP/1.0\r\n\r\n") > 0);
    assert_int_equal(req.version_minor, 0);
    assert_false(req.keep_alive);
    assert_false(req.has_host_header);
    assert_null(req.host);
}

static void test_http11_without_host_reports_no_host_header(void **state)
{
    (void)state;
    assert_true(parse("GET / HTTP/1.1\r\n\r\n") > 0);
    assert_false(req.has_host_header);
    assert_null(req.host);
}

static void test_empty_host_header_is_present_but_empty(void **state)
{
    (void)state;
    assert_true(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n") > 0);
    assert_true(req.has_host_header);
    assert_int_equal(req.host_len, 0);
}

static void test_leading_empty_lines_are_skipped(void **state)
{
    (void)state;
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(parse(s), (int)strlen(s));
    assert_slice(req.method, req.method_len, "GET");
    assert_int_equal(parse("\r\n"), CR_AGAIN);
    assert_int_equal(parse("\r\n\r"), CR_AGAIN);
    assert_int_equal(parse("\r\n\n"), CR_EBAD);
}

static void test_keep_alive_rules(void **state)
{
    (void)state;
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") > 0);
    assert_false(req.keep_alive);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n") > 0);
    assert_false(req.keep_alive);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n") > 0);
    assert_true(req.keep_alive);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") > 0);
    assert_true(req.keep_alive);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: x, Keep-Alive\r\n\r\n") > 0);
    assert_true(req.keep_alive);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: foo\r\n\r\n") > 0);
    assert_false(req.keep_alive);
}

static void test_upgrade_needs_connection_token_and_header(void **state)
{
    (void)state;
    assert_true(parse("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                      "Upgrade: websocket\r\n\r\n") > 0);
    assert_true(req.upgrade);
    assert_true(parse("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n") > 0);
    assert_false(req.upgrade);
    assert_true(parse("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n") > 0);
    assert_false(req.upgrade);
    assert_true(parse("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgraded\r\nUpgrade: x\r\n\r\n") > 0);
    assert_false(req.upgrade);
}

static void test_expect_continue_case_insensitive(void **state)
{
    (void)state;
    assert_true(parse("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n") > 0);
    assert_true(req.expect_continue);
    assert_true(parse("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continued\r\n\r\n") > 0);
    assert_false(req.expect_continue);
}

static void test_content_length_body(void **state)
{
    (void)state;
    assert_true(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n") > 0);
    assert_int_equal(req.body_kind, CR_HTTP_BODY_LENGTH);
    assert_int_equal(req.content_length, 42);
    assert_true(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n") > 0);
    assert_int_equal(req.body_kind, CR_HTTP_BODY_LENGTH);
    assert_int_equal(req.content_length, 0);
    assert_true(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4611686018427387904\r\n\r\n") > 0);
    assert_int_equal(req.content_length, (int64_t)1 << 62);
}

static void test_content_length_equal_duplicates_and_lists_accepted(void **state)
{
    (void)state;
    assert_true(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n") > 0);
    assert_int_equal(req.content_length, 7);
    assert_true(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7 , 7,7\r\n\r\n") > 0);
    assert_int_equal(req.content_length, 7);
}

static void test_chunked_request(void **state)
{
    (void)state;
    assert_true(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n") > 0);
    assert_int_equal(req.body_kind, CR_HTTP_BODY_CHUNKED);
}

static void test_find_header_and_token_eq(void **state)
{
    (void)state;
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5\r\n\r\n") > 0);
    const cr_http_header_t *h = cr_http_find_header(hdrs, req.headers_len, "X-FORWARDED-FOR", 15);
    assert_ptr_equal(h, &hdrs[1]);
    assert_null(cr_http_find_header(hdrs, req.headers_len, "X-Forwarded", 11));
    assert_true(cr_http_token_eq("ChUnKeD", 7, "chunked"));
    assert_false(cr_http_token_eq("chunke", 6, "chunked"));
    assert_false(cr_http_token_eq("chunkedx", 8, "chunked"));
    assert_true(cr_http_token_eq("", 0, ""));
}

static void test_pipelined_requests_parse_one_after_another(void **state)
{
    (void)state;
    const char *s = "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                    "GET /2 HTTP/1.1\r\nHost: b\r\n\r\n"
                    "GET /3 HTTP/1.1\r\nHost: c\r\n\r\n";
    size_t len = strlen(s);
    cr_http_limits_t lim = { .max_head_bytes = MAX_BYTES, .max_headers = MAX_HEADERS };
    const char *g = guarded_put(s, len);
    int n = cr_http1_parse_request(g, len, &lim, hdrs, &req);
    assert_true(n > 0);
    assert_slice(req.path, req.path_len, "/1");
    size_t off = (size_t)n + (size_t)req.content_length;
    n = cr_http1_parse_request(g + off, len - off, &lim, hdrs, &req);
    assert_true(n > 0);
    assert_slice(req.path, req.path_len, "/2");
    off += (size_t)n;
    n = cr_http1_parse_request(g + off, len - off, &lim, hdrs, &req);
    assert_int_equal(n, (int)(len - off));
    assert_slice(req.path, req.path_len, "/3");
    assert_slice(req.host, req.host_len, "c");
}

static void test_every_prefix_of_valid_request_is_again(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "GET /a HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n",
        "\r\nPOST http://h/p HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    };
    for (size_t r = 0; r < CR_ARRAY_LEN(reqs); r++) {
        size_t len = strlen(reqs[r]);
        for (size_t n = 0; n < len; n++)
            assert_int_equal(parse_n(reqs[r], n), CR_AGAIN);
        assert_int_equal(parse_n(reqs[r], len), (int)len);
    }
}

static void test_incomplete_junk_is_rejected_early(void **state)
{
    (void)state;
    assert_int_equal(parse_n("\x16\x03\x01\x02", 4), CR_EBAD); /* TLS ClientHello */
    assert_int_equal(parse("GET\t/"), CR_EBAD);
    assert_int_equal(parse(" GET"), CR_EBAD);
    assert_int_equal(parse("GET /x"), CR_AGAIN);
}

/* ---- rejections, one rule each ---- */

static void test_reject_non_token_method(void **state)
{
    (void)state;
    assert_int_equal(parse("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse(" / HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
}

static void test_reject_bad_version(void **state)
{
    (void)state;
    assert_int_equal(parse("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / http/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET /\r\nHost: a\r\n\r\n"), CR_EBAD);
}

static void test_reject_separator_other_than_single_sp(void **state)
{
    (void)state;
    assert_int_equal(parse("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), CR_EBAD);
}

static void test_reject_control_bytes_in_target(void **state)
{
    (void)state;
    assert_int_equal(parse("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"), CR_EBAD);
}

static void test_reject_whitespace_before_colon(void **state)
{
    (void)state;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), CR_EBAD);
}

static void test_reject_non_token_header_name(void **state)
{
    (void)state;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: 1\r\n\r\n"), CR_EBAD);
}

static void test_reject_obs_fold(void **state)
{
    (void)state;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n"), CR_EBAD);
}

static void test_reject_bare_cr(void **state)
{
    (void)state;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r2\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\rHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"), CR_EBAD);
}

static void test_reject_bare_lf(void **state)
{
    (void)state;
    assert_int_equal(parse("GET / HTTP/1.1\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\n\n"), CR_EBAD);
    /* Rejected as soon as the LF arrives, not when the head is complete. */
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\n"), CR_EBAD);
}

static void test_reject_nul_and_ctl_in_values(void **state)
{
    (void)state;
    static const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    assert_int_equal(parse_n(nul, sizeof(nul) - 1), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n"), CR_EBAD);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n") > 0);
}

/* Concatenates three pieces (the middle one may hold NUL) into buf. */
static size_t build3(char *buf, const char *a, const char *mid, size_t mid_len, const char *b)
{
    size_t n = strlen(a);
    memcpy(buf, a, n);
    memcpy(buf + n, mid, mid_len);
    memcpy(buf + n + mid_len, b, strlen(b));
    return n + mid_len + strlen(b);
}

/* The value and target scanners skip 8 bytes at a time; a bad byte must be
 * found at every offset, and good ones (HTAB, obs-text) must not stop them. */
static void test_bad_byte_found_at_every_offset(void **state)
{
    (void)state;
    char buf[256], val[40];
    static const struct {
        char c;
        bool value_ok, target_ok;
    } bytes[] = {
        { '\x7f', false, false }, { '\x01', false, false }, { '\x1f', false, false },
        { '\0', false, false }, { '\t', true, false }, { ' ', true, false },
        { '\x80', true, true }, { '\xff', true, true }, { '~', true, true },
    };
    for (size_t b = 0; b < CR_ARRAY_LEN(bytes); b++) {
        for (size_t k = 0; k < sizeof(val); k++) {
            memset(val, 'v', sizeof(val));
            val[k] = bytes[b].c;
            size_t n = build3(buf, "GET / HTTP/1.1\r\nHost: a\r\nX: v", val, sizeof(val), "v\r\n\r\n");
            int rc = parse_n(buf, n);
            if (bytes[b].value_ok) {
                assert_int_equal(rc, (int)n);
                assert_int_equal(hdrs[1].value_len, 42);
            } else {
                assert_int_equal(rc, CR_EBAD);
            }
            n = build3(buf, "GET /", val, sizeof(val), "/ HTTP/1.1\r\nHost: a\r\n\r\n");
            rc = parse_n(buf, n);
            assert_int_equal(rc, bytes[b].target_ok ? (int)n : CR_EBAD);
        }
    }
}

static void test_reject_multiple_host_headers(void **state)
{
    (void)state;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), CR_EBAD);
}

static void test_reject_invalid_host_bytes(void **state)
{
    (void)state;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n"), CR_EBAD);
    assert_true(parse("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n") > 0);
}

static void test_reject_te_other_than_single_chunked(void **state)
{
    (void)state;
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), CR_EBAD);
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), CR_EBAD);
}

static void test_reject_te_with_content_length(void **state)
{
    (void)state;
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"), CR_EBAD);
}

static void test_reject_chunked_in_http10(void **state)
{
    (void)state;
    assert_int_equal(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), CR_EBAD);
}

static void test_reject_bad_content_length(void **state)
{
    (void)state;
    static const char *const bad[] = { "+5", "-1", "0x5", "5 5", "5,", ",5", "", "5;", "1e3",
                                       "4611686018427387905", "99999999999999999999999", "5, 6" };
    char buf[256];
    for (size_t i = 0; i < CR_ARRAY_LEN(bad); i++) {
        snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n", bad[i]);
        assert_int_equal(parse(buf), CR_EBAD);
    }
}

static void test_reject_differing_duplicate_content_length(void **state)
{
    (void)state;
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), CR_EBAD);
}

/* ---- limits ---- */

static void test_head_over_max_bytes_is_too_big(void **state)
{
    (void)state;
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t len = strlen(s);
    assert_int_equal(parse_lim(s, len, (uint32_t)len, MAX_HEADERS), (int)len);
    assert_int_equal(parse_lim(s, len, (uint32_t)len - 1, MAX_HEADERS), CR_ETOOBIG);
}

static void test_incomplete_head_at_max_bytes_is_too_big(void **state)
{
    (void)state;
    char buf[200];
    memset(buf, 'x', sizeof(buf));
    memcpy(buf, "GET /", 5);
    assert_int_equal(parse_lim(buf, 99, 100, MAX_HEADERS), CR_AGAIN);
    assert_int_equal(parse_lim(buf, 100, 100, MAX_HEADERS), CR_ETOOBIG);
    assert_int_equal(parse_lim(buf, 200, 100, MAX_HEADERS), CR_ETOOBIG);
}

static void test_too_many_headers_is_too_big(void **state)
{
    (void)state;
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_true(parse_lim(s, strlen(s), MAX_BYTES, 3) > 0);
    assert_int_equal(parse_lim(s, strlen(s), MAX_BYTES, 2), CR_ETOOBIG);
}

static void test_large_header_value_within_limit(void **state)
{
    (void)state;
    static char buf[70000];
    int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(buf + n, 'v', 65536);
    memcpy(buf + n + 65536, "\r\n\r\n", 4);
    size_t len = (size_t)n + 65540;
    assert_int_equal(parse_lim(buf, len, 0, MAX_HEADERS), (int)len);
    assert_int_equal(hdrs[1].value_len, 65536);
    assert_int_equal(parse_lim(buf, len, 65536, MAX_HEADERS), CR_ETOOBIG);
}

/* ---- responses ---- */

static void test_response_content_length(void **state)
{
    (void)state;
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n";
    assert_int_equal(parse_resp(s, false), (int)strlen(s));
    assert_int_equal(resp.status, 200);
    assert_slice(resp.reason, resp.reason_len, "OK");
    assert_int_equal(resp.body_kind, CR_HTTP_BODY_LENGTH);
    assert_int_equal(resp.content_length, 12);
    assert_int_equal(resp.headers_len, 2);
    assert_true(resp.keep_alive);
}

static void test_response_chunked(void **state)
{
    (void)state;
    assert_true(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false) > 0);
    assert_int_equal(resp.body_kind, CR_HTTP_BODY_CHUNKED);
    assert_true(resp.keep_alive);
}

static void test_response_until_close_is_not_keep_alive(void **state)
{
    (void)state;
    assert_true(parse_resp("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", false) > 0);
    assert_int_equal(resp.body_kind, CR_HTTP_BODY_UNTIL_CLOSE);
    assert_false(resp.keep_alive);
}

static void test_response_without_body(void **state)
{
    (void)state;
    static const char *const none[] = {
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
    };
    for (size_t i = 0; i < CR_ARRAY_LEN(none); i++) {
        assert_true(parse_resp(none[i], false) > 0);
        assert_int_equal(resp.body_kind, CR_HTTP_BODY_NONE);
        assert_true(resp.keep_alive);
    }
    assert_true(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true) > 0);
    assert_int_equal(resp.body_kind, CR_HTTP_BODY_NONE);
    assert_int_equal(resp.content_length, 100);
    assert_true(parse_resp("HTTP/1.1 200 OK\r\n\r\n", true) > 0);
    assert_int_equal(resp.body_kind, CR_HTTP_BODY_NONE);
    assert_true(resp.keep_alive);
}

static void test_response_status_line_variants(void **state)
{
    (void)state;
    assert_true(parse_resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false) > 0);
    assert_int_equal(resp.reason_len, 0);
    assert_true(parse_resp("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", false) > 0);
    assert_int_equal(resp.status, 404);
    assert_true(parse_resp("HTTP/1.1 599 Whatever it is \xe2\x9c\x93\r\nContent-Length: 0\r\n\r\n", false) > 0);
    assert_slice(resp.reason, resp.reason_len, "Whatever it is \xe2\x9c\x93");
    assert_true(parse_resp("HTTP/1.1 999 X\r\nContent-Length: 0\r\n\r\n", false) > 0);
    assert_int_equal(resp.status, 999);
    assert_int_equal(parse_resp("HTTP/1.1 099 X\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 20 X\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 2000 X\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1  200 X\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/2 200 X\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 200 O\x01K\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("ICY 200 OK\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTX", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP", false), CR_AGAIN);
}

static void test_response_http10_keep_alive(void **state)
{
    (void)state;
    assert_true(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false) > 0);
    assert_false(resp.keep_alive);
    assert_int_equal(resp.version_minor, 0);
    assert_true(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", false) > 0);
    assert_true(resp.keep_alive);
    assert_true(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", false) > 0);
    assert_false(resp.keep_alive);
}

static void test_response_framing_rejections(void **state)
{
    (void)state;
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\nX: 1\r\n\r\n", false), CR_EBAD);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nX : 1\r\n\r\n", false), CR_EBAD);
}

static void test_response_limits_are_bad(void **state)
{
    (void)state;
    cr_http_limits_t lim = { .max_head_bytes = 20, .max_headers = 1 };
    const char *s = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_int_equal(cr_http1_parse_response(guarded_put(s, strlen(s)), strlen(s), &lim, hdrs, false, &resp), CR_EBAD);
    lim.max_head_bytes = 1000;
    assert_int_equal(cr_http1_parse_response(guarded_put(s, strlen(s)), strlen(s), &lim, hdrs, false, &resp), CR_EBAD);
    lim.max_headers = 2;
    assert_true(cr_http1_parse_response(guarded_put(s, strlen(s)), strlen(s), &lim, hdrs, false, &resp) > 0);
}

static void test_response_every_prefix_is_again(void **state)
{
    (void)state;
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    size_t len = strlen(s);
    for (size_t n = 0; n < len; n++)
        assert_int_equal(parse_resp_n(s, n, false), CR_AGAIN);
    assert_int_equal(parse_resp_n(s, len, false), (int)len);
}

/* ---- smuggling probes ----
 * Outcome P_BAD: CR_EBAD. The others are the safe interpretation the parser
 * must settle on; each is checked by check_outcome(). */
enum { P_BAD, P_NONE, P_CHUNKED, P_LEN5, P_HOST_A };

#define RL_POST "POST / HTTP/1.1\r\nHost: a\r\n"
#define SMUGGLING_PROBES(X)                                                                     \
    X(cl_then_te, RL_POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", P_BAD)     \
    X(te_then_cl, RL_POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", P_BAD)     \
    X(cl_zero_with_te, RL_POST "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", P_BAD) \
    X(te_xchunked, RL_POST "Transfer-Encoding: xchunked\r\n\r\n", P_BAD)                        \
    X(te_chunkedx, RL_POST "Transfer-Encoding: chunkedx\r\n\r\n", P_BAD)                        \
    X(te_space_before_colon, RL_POST "Transfer-Encoding : chunked\r\n\r\n", P_BAD)              \
    X(te_tab_before_colon, RL_POST "Transfer-Encoding\t: chunked\r\n\r\n", P_BAD)               \
    X(te_chunked_identity, RL_POST "Transfer-Encoding: chunked, identity\r\n\r\n", P_BAD)       \
    X(te_identity_chunked, RL_POST "Transfer-Encoding: identity, chunked\r\n\r\n", P_BAD)       \
    X(te_chunked_chunked, RL_POST "Transfer-Encoding: chunked, chunked\r\n\r\n", P_BAD)         \
    X(te_duplicate_headers, RL_POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", P_BAD) \
    X(te_duplicate_identity, RL_POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", P_BAD) \
    X(te_vertical_tab_before, RL_POST "Transfer-Encoding:\x0b" "chunked\r\n\r\n", P_BAD)       \
    X(te_vertical_tab_after, RL_POST "Transfer-Encoding: chunked\x0b\r\n\r\n", P_BAD)           \
    X(te_form_feed, RL_POST "Transfer-Encoding:\x0c" "chunked\r\n\r\n", P_BAD)                 \
    X(te_tab_ows_is_chunked, RL_POST "Transfer-Encoding:\tchunked\t\r\n\r\n", P_CHUNKED)        \
    X(te_uppercase_is_chunked, RL_POST "TRANSFER-ENCODING: CHUNKED\r\n\r\n", P_CHUNKED)         \
    X(te_quoted, RL_POST "Transfer-Encoding: \"chunked\"\r\n\r\n", P_BAD)                       \
    X(te_with_parameter, RL_POST "Transfer-Encoding: chunked;q=1\r\n\r\n", P_BAD)               \
    X(te_empty, RL_POST "Transfer-Encoding: \r\n\r\n", P_BAD)                                   \
    X(te_leading_comma, RL_POST "Transfer-Encoding: , chunked\r\n\r\n", P_BAD)                  \
    X(te_obs_fold_value, RL_POST "Transfer-Encoding:\r\n chunked\r\n\r\n", P_BAD)               \
    X(te_leading_space_line, RL_POST " Transfer-Encoding: chunked\r\n\r\n", P_BAD)              \
    X(te_underscore_lookalike, RL_POST "Transfer_Encoding: chunked\r\n\r\n", P_BAD)            \
    X(cl_underscore_lookalike, RL_POST "CONTENT_LENGTH: 5\r\n\r\n", P_BAD)                      \
    X(te_http10, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", P_BAD)                \
    X(te_bare_cr_value, RL_POST "Transfer-Encoding: chunked\rX: y\r\n\r\n", P_BAD)              \
    X(cl_differing_duplicates, RL_POST "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", P_BAD) \
    X(cl_differing_list, RL_POST "Content-Length: 5, 6\r\n\r\n", P_BAD)                         \
    X(cl_equal_duplicates, RL_POST "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", P_LEN5)    \
    X(cl_plus_sign, RL_POST "Content-Length: +5\r\n\r\n", P_BAD)                                \
    X(cl_minus_one, RL_POST "Content-Length: -1\r\n\r\n", P_BAD)                                \
    X(cl_hex, RL_POST "Content-Length: 0x5\r\n\r\n", P_BAD)                                     \
    X(cl_two_numbers, RL_POST "Content-Length: 5 5\r\n\r\n", P_BAD)                             \
    X(cl_huge, RL_POST "Content-Length: 184467440737095516160\r\n\r\n", P_BAD)                  \
    X(cl_just_over_limit, RL_POST "Content-Length: 4611686018427387905\r\n\r\n", P_BAD)         \
    X(cl_space_before_colon, RL_POST "Content-Length : 5\r\n\r\n", P_BAD)                       \
    X(cl_vertical_tab, RL_POST "Content-Length:\x0b" "5\r\n\r\n", P_BAD)                       \
    X(cl_leading_zeros, RL_POST "Content-Length: 0005\r\n\r\n", P_LEN5)                         \
    X(cl_obs_fold, RL_POST "Content-Length:\r\n 5\r\n\r\n", P_BAD)                              \
    X(obs_fold_any_header, RL_POST "X-Foo: a\r\n b\r\n\r\n", P_BAD)                             \
    X(bare_cr_in_value, RL_POST "X-Foo: a\rb\r\n\r\n", P_BAD)                                   \
    X(bare_cr_line_end, RL_POST "X-Foo: a\rContent-Length: 5\r\n\r\n", P_BAD)                   \
    X(nul_in_name, RL_POST "X-F\0o: a\r\n\r\n", P_BAD)                                          \
    X(nul_in_value, RL_POST "X-Foo: a\0b\r\n\r\n", P_BAD)                                       \
    X(lf_only_request, "POST / HTTP/1.1\nHost: a\nContent-Length: 5\n\n", P_BAD)                \
    X(lf_only_one_line, RL_POST "Content-Length: 5\n\r\n", P_BAD)                               \
    X(lf_only_end, RL_POST "Content-Length: 5\r\n\n", P_BAD)                                    \
    X(request_line_double_space, "POST  / HTTP/1.1\r\nHost: a\r\n\r\n", P_BAD)                  \
    X(request_line_tab, "POST\t/ HTTP/1.1\r\nHost: a\r\n\r\n", P_BAD)                           \
    X(request_line_trailing_space, "POST / HTTP/1.1 \r\nHost: a\r\n\r\n", P_BAD)                \
    X(request_line_target_space, "POST /a b HTTP/1.1\r\nHost: a\r\n\r\n", P_BAD)                \
    X(request_line_http09, "GET /\r\n\r\n", P_BAD)                                              \
    X(two_host_headers, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", P_BAD)                  \
    X(absolute_form_host_mismatch, "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", P_HOST_A)

#define DEFINE_PROBE(name, raw, outcome)                                                     \
    static void test_smuggle_##name(void **state)                                           \
    {                                                                                        \
        (void)state;                                                                         \
        check_outcome(#name, raw, sizeof(raw) - 1, outcome);                                 \
    }

/* Absolute-form with a different Host header is allowed by the parser (RFC
 * 9112 3.2.2: the authority wins); routing then uses req.host, the authority. */
static void check_outcome(const char *name, const char *raw, size_t len, int outcome)
{
    int rc = parse_n(raw, len);
    if (outcome == P_BAD) {
        if (rc != CR_EBAD)
            fail_msg("probe %s: expected CR_EBAD, got %d", name, rc);
        return;
    }
    assert_int_equal(rc, (int)len);
    switch (outcome) {
    case P_NONE:
        assert_int_equal(req.body_kind, CR_HTTP_BODY_NONE);
        break;
    case P_CHUNKED:
        assert_int_equal(req.body_kind, CR_HTTP_BODY_CHUNKED);
        break;
    case P_LEN5:
        assert_int_equal(req.body_kind, CR_HTTP_BODY_LENGTH);
        assert_int_equal(req.content_length, 5);
        break;
    case P_HOST_A:
        assert_slice(req.host, req.host_len, "a");
        break;
    default:
        fail();
    }
}

SMUGGLING_PROBES(DEFINE_PROBE)

struct probe {
    const char *name;
    const char *raw;
    size_t len;
};

#define PROBE_ENTRY(name, raw, outcome) { #name, raw, sizeof(raw) - 1 },
static const struct probe probes[] = { SMUGGLING_PROBES(PROBE_ENTRY) };

static int write_corpus(const char *dir)
{
    char path[4096];
    for (size_t i = 0; i < CR_ARRAY_LEN(probes); i++) {
        snprintf(path, sizeof(path), "%s/smuggle_%s", dir, probes[i].name);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(probes[i].raw, 1, probes[i].len, f) != probes[i].len) {
            perror(path);
            return 1;
        }
        fclose(f);
    }
    printf("wrote %zu probes to %s\n", CR_ARRAY_LEN(probes), dir);
    return 0;
}

#define PROBE_TEST(name, raw, outcome) cmocka_unit_test(test_smuggle_##name),

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_origin_form_get_parses_all_fields),
        cmocka_unit_test(test_header_values_are_ows_trimmed),
        cmocka_unit_test(test_obs_text_allowed_in_values),
        cmocka_unit_test(test_absolute_form_sets_authority_host_and_path),
        cmocka_unit_test(test_absolute_form_without_path_gives_slash),
        cmocka_unit_test(test_absolute_form_rejects_userinfo_empty_authority_and_bare_query),
        cmocka_unit_test(test_authority_form_only_for_connect),
        cmocka_unit_test(test_asterisk_form_only_for_options),
        cmocka_unit_test(test_any_token_method_accepted),
        cmocka_unit_test(test_http10_request),
        cmocka_unit_test(test_http11_without_host_reports_no_host_header),
        cmocka_unit_test(test_empty_host_header_is_present_but_empty),
        cmocka_unit_test(test_leading_empty_lines_are_skipped),
        cmocka_unit_test(test_keep_alive_rules),
        cmocka_unit_test(test_upgrade_needs_connection_token_and_header),
        cmocka_unit_test(test_expect_continue_case_insensitive),
        cmocka_unit_test(test_content_length_body),
        cmocka_unit_test(test_content_length_equal_duplicates_and_lists_accepted),
        cmocka_unit_test(test_chunked_request),
        cmocka_unit_test(test_find_header_and_token_eq),
        cmocka_unit_test(test_pipelined_requests_parse_one_after_another),
        cmocka_unit_test(test_every_prefix_of_valid_request_is_again),
        cmocka_unit_test(test_incomplete_junk_is_rejected_early),
        cmocka_unit_test(test_reject_non_token_method),
        cmocka_unit_test(test_reject_bad_version),
        cmocka_unit_test(test_reject_separator_other_than_single_sp),
        cmocka_unit_test(test_reject_control_bytes_in_target),
        cmocka_unit_test(test_reject_whitespace_before_colon),
        cmocka_unit_test(test_reject_non_token_header_name),
        cmocka_unit_test(test_reject_obs_fold),
        cmocka_unit_test(test_reject_bare_cr),
        cmocka_unit_test(test_reject_bare_lf),
        cmocka_unit_test(test_reject_nul_and_ctl_in_values),
        cmocka_unit_test(test_bad_byte_found_at_every_offset),
        cmocka_unit_test(test_reject_multiple_host_headers),
        cmocka_unit_test(test_reject_invalid_host_bytes),
        cmocka_unit_test(test_reject_te_other_than_single_chunked),
        cmocka_unit_test(test_reject_te_with_content_length),
        cmocka_unit_test(test_reject_chunked_in_http10),
        cmocka_unit_test(test_reject_bad_content_length),
        cmocka_unit_test(test_reject_differing_duplicate_content_length),
        cmocka_unit_test(test_head_over_max_bytes_is_too_big),
        cmocka_unit_test(test_incomplete_head_at_max_bytes_is_too_big),
        cmocka_unit_test(test_too_many_headers_is_too_big),
        cmocka_unit_test(test_large_header_value_within_limit),
        cmocka_unit_test(test_response_content_length),
        cmocka_unit_test(test_response_chunked),
        cmocka_unit_test(test_response_until_close_is_not_keep_alive),
        cmocka_unit_test(test_response_without_body),
        cmocka_unit_test(test_response_status_line_variants),
        cmocka_unit_test(test_response_http10_keep_alive),
        cmocka_unit_test(test_response_framing_rejections),
        cmocka_unit_test(test_response_limits_are_bad),
        cmocka_unit_test(test_response_every_prefix_is_again),
        SMUGGLING_PROBES(PROBE_TEST)
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
