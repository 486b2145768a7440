/* test/unit/router/test_errors.c - the router's own error responses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "router/errors.h"

typedef struct resp {
    char buf[4096];
    int len;
    const char *body;             /* after the blank line */
} resp_t;

static void write_err(resp_t *r, cr_proxy_error_t err, const char *detail, const char *reason,
                      bool keep_alive)
{
    r->len = cr_proxy_error_write(err, detail, detail ? strlen(detail) : 0, reason, keep_alive,
                                  r->buf, sizeof(r->buf) - 1);
    assert_true(r->len > 0);
    r->buf[r->len] = '\0';
    const char *blank = strstr(r->buf, "\r\n\r\n");
    assert_non_null(blank);
    r->body = blank + 4;
}

/* True when the head holds exactly the line "line\r\n". */
static bool has_line(const resp_t *r, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\r\n%s\r\n", line);
    const char *blank = strstr(r->buf, "\r\n\r\n");
    const char *hit = strstr(r->buf, want);
    return hit && hit <= blank;
}

static bool has_header(const resp_t *r, const char *name)
{
    char want[128];
    snprintf(want, sizeof(want), "\r\n%s:", name);
    const char *blank = strstr(r->buf, "\r\n\r\n");
    const char *hit = strstr(r->buf, want);
    return hit && hit < blank;
}

static void assert_content_length_matches_body(const resp_t *r)
{
    const char *cl = strstr(r->buf, "\r\nContent-Length: ");
    assert_non_null(cl);
    long n = strtol(cl + 18, NULL, 10);
    assert_int_equal(n, (long)strlen(r->body));
}

static void assert_plain_text_headers(const resp_t *r)
{
    assert_true(has_line(r, "Content-Type: text/plain; charset=utf-8"));
    assert_true(has_line(r, "X-Content-Type-Options: nosniff"));
    assert_true(has_header(r, "Date"));
    assert_content_length_matches_body(r);
}

static void test_unknown_route_is_404_with_host_in_body(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_UNKNOWN_ROUTE, "foo.example.com:8080", NULL, true);
    assert_memory_equal(r.buf, "HTTP/1.1 404 Not Found\r\n", 24);
    assert_plain_text_headers(&r);
    assert_true(has_line(&r, "X-Cf-Routererror: unknown_route"));
    assert_true(has_line(&r, "Cache-Control: no-cache, no-store"));
    assert_false(has_header(&r, "Connection"));
    assert_string_equal(r.body,
                        "404 Not Found: Requested route ('foo.example.com:8080') does not exist.\n");
}

static void test_empty_host_is_400_cacheable_for_two_seconds(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_EMPTY_HOST, NULL, NULL, false);
    assert_memory_equal(r.buf, "HTTP/1.1 400 Bad Request\r\n", 26);
    assert_plain_text_headers(&r);
    assert_true(has_line(&r, "X-Cf-Routererror: empty_host"));
    assert_true(has_line(&r, "Cache-Control: public,max-age=2"));
    assert_true(has_line(&r, "Connection: close"));
    assert_string_equal(r.body, "400 Bad Request: Request had empty Host header\n");
}

static void test_invalid_app_instance_header_is_400(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_INVALID_APP_INSTANCE, NULL, NULL, true);
    assert_memory_equal(r.buf, "HTTP/1.1 400 Bad Request\r\n", 26);
    assert_plain_text_headers(&r);
    assert_true(has_line(&r, "X-Cf-Routererror: invalid_cf_app_instance_header"));
    assert_true(has_line(&r, "Cache-Control: no-cache, no-store"));
    assert_string_equal(r.body, "400 Bad Request: Invalid X-CF-App-Instance Header\n");
}

static void test_unknown_instance_fills_index_guid_and_host_from_nul_separated_detail(void **state)
{
    (void)state;
    static const char detail[] = "3\0app-guid\0app.example.com";
    resp_t r;
    r.len = cr_proxy_error_write(CR_PERR_UNKNOWN_INSTANCE, detail, sizeof(detail) - 1, NULL, true,
                                 r.buf, sizeof(r.buf) - 1);
    assert_true(r.len > 0);
    r.buf[r.len] = '\0';
    r.body = strstr(r.buf, "\r\n\r\n") + 4;
    assert_memory_equal(r.buf, "HTTP/1.1 400 Bad Request\r\n", 26);
    assert_plain_text_headers(&r);
    assert_true(has_line(&r, "X-Cf-Routererror: unknown_route"));
    assert_string_equal(r.body, "400 Bad Request: Requested instance ('3') with guid ('app-guid') "
                                "does not exist for route ('app.example.com')\n");
}

static void test_unknown_instance_with_missing_parts_leaves_them_empty(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_UNKNOWN_INSTANCE, "7", NULL, true);
    assert_string_equal(r.body, "400 Bad Request: Requested instance ('7') with guid ('') does not "
                                "exist for route ('')\n");
    assert_content_length_matches_body(&r);
}

static void test_headers_too_large_is_431_with_empty_body_and_close(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_HEADERS_TOO_LARGE, "host", NULL, true);
    assert_memory_equal(r.buf, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46);
    assert_true(has_line(&r, "X-Cf-Routererror: max-request-size-exceeded"));
    assert_true(has_line(&r, "Content-Length: 0"));
    assert_true(has_line(&r, "Connection: close"));
    assert_false(has_header(&r, "Content-Type"));
    assert_string_equal(r.body, "");
}

static void test_no_endpoints_is_503_cacheable(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_NO_ENDPOINTS, "app.example.com", NULL, true);
    assert_memory_equal(r.buf, "HTTP/1.1 503 Service Unavailable\r\n", 34);
    assert_plain_text_headers(&r);
    assert_true(has_line(&r, "X-Cf-Routererror: no_endpoints"));
    assert_true(has_line(&r, "Cache-Control: public,max-age=2"));
    assert_string_equal(
        r.body, "503 Service Unavailable: Requested route ('app.example.com') has no available "
                "endpoints.\n");
}

static void test_connection_limit_is_503_without_cache_control(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_CONN_LIMIT, "app.example.com", NULL, true);
    assert_memory_equal(r.buf, "HTTP/1.1 503 Service Unavailable\r\n", 34);
    assert_plain_text_headers(&r);
    assert_true(has_line(&r, "X-Cf-Routererror: Connection Limit Reached"));
    assert_false(has_header(&r, "Cache-Control"));
    assert_string_equal(
        r.body, "503 Service Unavailable: Requested route ('app.example.com') has reached the "
                "connection limit.\n");
}

static void test_endpoint_failure_is_502_with_reason_in_header(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_ENDPOINT_FAILURE, "app.example.com", "dial tcp: connection refused",
              true);
    assert_memory_equal(r.buf, "HTTP/1.1 502 Bad Gateway\r\n", 26);
    assert_plain_text_headers(&r);
    assert_true(has_line(&r, "X-Cf-Routererror: endpoint_failure (dial tcp: connection refused)"));
    assert_string_equal(r.body,
                        "502 Bad Gateway: Registered endpoint failed to handle the request.\n");
}

static void test_endpoint_failure_without_reason_has_bare_kind(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_ENDPOINT_FAILURE, NULL, NULL, true);
    assert_true(has_line(&r, "X-Cf-Routererror: endpoint_failure"));
}

static void test_bad_request_has_no_router_error_and_always_closes(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_BAD_REQUEST, NULL, NULL, true);
    assert_memory_equal(r.buf, "HTTP/1.1 400 Bad Request\r\n", 26);
    assert_plain_text_headers(&r);
    assert_false(has_header(&r, "X-Cf-Routererror"));
    assert_true(has_line(&r, "Connection: close"));
    assert_string_equal(r.body, "400 Bad Request: malformed request\n");
}

static void test_client_closed_is_499_context_canceled(void **state)
{
    (void)state;
    const cr_proxy_error_info_t *info = cr_proxy_error_info(CR_PERR_CLIENT_CLOSED);
    assert_int_equal(info->status, 499);
    char v[64];
    assert_int_equal(cr_proxy_error_router_error(CR_PERR_CLIENT_CLOSED, NULL, v, sizeof(v)),
                     strlen("endpoint_failure (context canceled)"));
    assert_string_equal(v, "endpoint_failure (context canceled)");
}

static void test_every_kind_has_status_text_and_counter_name(void **state)
{
    (void)state;
    for (int k = CR_PERR_BAD_REQUEST; k < CR_PERR__COUNT; k++) {
        const cr_proxy_error_info_t *info = cr_proxy_error_info((cr_proxy_error_t)k);
        assert_true(info->status >= 400 && info->status < 600);
        assert_non_null(info->status_text);
        assert_non_null(info->counter_name);
        char buf[2048];
        int n = cr_proxy_error_write((cr_proxy_error_t)k, "h", 1, "r", true, buf, sizeof(buf));
        assert_true(n > 0);
        char code[8];
        snprintf(code, sizeof(code), "%u", info->status);
        assert_memory_equal(buf + 9, code, 3);
    }
    assert_int_equal(cr_proxy_error_info((cr_proxy_error_t)999)->status, 0);
}

static void test_crlf_in_detail_and_reason_cannot_inject_lines(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_ENDPOINT_FAILURE, "x", "boom\r\nSet-Cookie: evil=1", true);
    assert_false(has_header(&r, "Set-Cookie"));
    assert_true(has_line(&r, "X-Cf-Routererror: endpoint_failure (boom?\?Set-Cookie: evil=1)"));

    write_err(&r, CR_PERR_UNKNOWN_ROUTE, "evil\r\n\r\n<script>\x01\x7f", NULL, true);
    assert_string_equal(r.body,
                        "404 Not Found: Requested route ('evil?\?\?\?<script>?\?') does not exist.\n");
    assert_content_length_matches_body(&r);
    /* Exactly one blank line: the head ends once. */
    assert_null(strstr(r.body, "\r\n"));
}

static void test_router_error_value_truncates_to_cap(void **state)
{
    (void)state;
    char v[12];
    size_t n = cr_proxy_error_router_error(CR_PERR_ENDPOINT_FAILURE, "a long reason\n", v,
                                           sizeof(v));
    assert_int_equal(n, 11);
    assert_string_equal(v, "endpoint_fa");
    char w[64];
    assert_int_equal(cr_proxy_error_router_error(CR_PERR_UNKNOWN_ROUTE, "x", w, sizeof(w)), 13);
    assert_string_equal(w, "unknown_route");
    assert_int_equal(cr_proxy_error_router_error(CR_PERR_BAD_REQUEST, "x", w, sizeof(w)), 0);
    assert_string_equal(w, "");
    assert_int_equal(cr_proxy_error_router_error(CR_PERR_ENDPOINT_FAILURE, "a\rb", w, sizeof(w)),
                     strlen("endpoint_failure (a?b)"));
    assert_string_equal(w, "endpoint_failure (a?b)");
}

static void test_small_buffer_is_etoobig_at_every_size(void **state)
{
    (void)state;
    char full[1024];
    int n = cr_proxy_error_write(CR_PERR_UNKNOWN_ROUTE, "h.example", 9, NULL, false, full,
                                 sizeof(full));
    assert_true(n > 0);
    for (int cap = 0; cap < n; cap++) {
        char buf[1024];
        assert_int_equal(cr_proxy_error_write(CR_PERR_UNKNOWN_ROUTE, "h.example", 9, NULL, false,
                                              buf, (size_t)cap),
                         CR_ETOOBIG);
    }
    char exact[1024];
    assert_int_equal(cr_proxy_error_write(CR_PERR_UNKNOWN_ROUTE, "h.example", 9, NULL, false,
                                          exact, (size_t)n),
                     n);
}

static void test_date_header_is_imf_fixdate(void **state)
{
    (void)state;
    resp_t r;
    write_err(&r, CR_PERR_UNKNOWN_ROUTE, "h", NULL, true);
    const char *d = strstr(r.buf, "\r\nDate: ");
    assert_non_null(d);
    d += 8;
    /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    assert_int_equal(d[3], ',');
    assert_int_equal(d[4], ' ');
    assert_int_equal(d[7], ' ');
    assert_int_equal(d[11], ' ');
    assert_int_equal(d[16], ' ');
    assert_int_equal(d[19], ':');
    assert_int_equal(d[22], ':');
    assert_memory_equal(d + 25, " GMT\r\n", 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_route_is_404_with_host_in_body),
        cmocka_unit_test(test_empty_host_is_400_cacheable_for_two_seconds),
        cmocka_unit_test(test_invalid_app_instance_header_is_400),
        cmocka_unit_test(test_unknown_instance_fills_index_guid_and_host_from_nul_separated_detail),
        cmocka_unit_test(test_unknown_instance_with_missing_parts_leaves_them_empty),
        cmocka_unit_test(test_headers_too_large_is_431_with_empty_body_and_close),
        cmocka_unit_test(test_no_endpoints_is_503_cacheable),
        cmocka_unit_test(test_connection_limit_is_503_without_cache_control),
        cmocka_unit_test(test_endpoint_failure_is_502_with_reason_in_header),
        cmocka_unit_test(test_endpoint_failure_without_reason_has_bare_kind),
        cmocka_unit_test(test_bad_request_has_no_router_error_and_always_closes),
        cmocka_unit_test(test_client_closed_is_499_context_canceled),
        cmocka_unit_test(test_every_kind_has_status_text_and_counter_name),
        cmocka_unit_test(test_crlf_in_detail_and_reason_cannot_inject_lines),
        cmocka_unit_test(test_router_error_value_truncates_to_cap),
        cmocka_unit_test(test_small_buffer_is_etoobig_at_every_size),
        cmocka_unit_test(test_date_header_is_imf_fixdate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
