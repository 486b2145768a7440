/* test/unit/router/test_rewrite.c - heads sent to the backend and to the client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "router/rewrite.h"

#define RID "6f1c3a52-8b9e-4d0a-9c1e-2b3f4a5d6e7f"

/* Fills headers from "Name", "value" pairs (NULL-terminated). */
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

static void make_request(cr_http_request_t *req, cr_http_header_t *hs, const char *method,
                         const char *target, const char *const *kv)
{
    memset(req, 0, sizeof(*req));
    req->method = method;
    req->method_len = (uint32_t)strlen(method);
    req->target = target;
    req->target_len = (uint32_t)strlen(target);
    req->path = target;
    req->path_len = req->target_len;
    req->headers = hs;
    req->headers_len = make_headers(hs, kv);
    req->version_minor = 1;
    req->keep_alive = true;
    for (uint32_t i = 0; i < req->headers_len; i++)
        if (strcasecmp(hs[i].name, "host") == 0) {
            req->has_host_header = true;
            req->host = hs[i].value;
            req->host_len = hs[i].value_len;
        }
}

static cr_endpoint_t endpoint(const char *app, const char *index, const char *id)
{
    cr_endpoint_t ep;
    memset(&ep, 0, sizeof(ep));
    ep.addr = "10.1.2.3:61000";
    ep.host = "10.1.2.3";
    ep.port = 61000;
    ep.app = (char *)app;
    ep.private_instance_index = (char *)index;
    ep.private_instance_id = (char *)id;
    return ep;
}

static cr_request_rewrite_t rewrite_of(const cr_http_request_t *req, const cr_endpoint_t *ep)
{
    cr_request_rewrite_t rw = {
        .req = req,
        .client_ip = "192.168.1.5",
        .endpoint = ep,
        .request_id = RID,
        .received_at_ms = 1700000000123,
        .over_tls = false,
        .upstream_keep_alive = true,
    };
    return rw;
}

static char out[8192];

static const char *rewrite_req(const cr_request_rewrite_t *rw)
{
    int n = cr_rewrite_request_head(rw, out, sizeof(out) - 1);
    assert_true(n > 0);
    out[n] = '\0';
    return out;
}

static bool has_line(const char *head, const char *line)
{
    char want[1024];
    snprintf(want, sizeof(want), "\r\n%s\r\n", line);
    return strstr(head, want) != NULL;
}

static bool has_name(const char *head, const char *name)
{
    char want[256];
    snprintf(want, sizeof(want), "\r\n%s:", name);
    return strcasestr(head, want) != NULL;
}

static int count_name(const char *head, const char *name)
{
    char want[256];
    snprintf(want, sizeof(want), "\r\n%s:", name);
    int c = 0;
    for (const char *p = head; (p = strcasestr(p, want)) != NULL; p++)
        c++;
    return c;
}

/* --- request ------------------------------------------------------------ */

static void test_typical_request_is_rewritten_exactly(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "app.example.com", "User-Agent", "curl/8.5.0",
                                     "Accept", "*/*", "X-Forwarded-For", "10.0.0.1",
                                     "Connection", "keep-alive", NULL};
    cr_http_header_t hs[16];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/path?q=1", kv);
    cr_endpoint_t ep = endpoint("app-guid", "2", "inst-1");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    assert_string_equal(rewrite_req(&rw), "GET /path?q=1 HTTP/1.1\r\n"
                                          "Host: app.example.com\r\n"
                                          "User-Agent: curl/8.5.0\r\n"
                                          "Accept: */*\r\n"
                                          "X-Forwarded-For: 10.0.0.1, 192.168.1.5\r\n"
                                          "X-Forwarded-Proto: http\r\n"
                                          "X-Request-Start: 1700000000123\r\n"
                                          "X-Vcap-Request-Id: " RID "\r\n"
                                          "X-CF-ApplicationID: app-guid\r\n"
                                          "X-CF-InstanceIndex: 2\r\n"
                                          "X-CF-InstanceID: inst-1\r\n"
                                          "\r\n");
}

static void test_xff_headers_are_joined_into_one_line_with_client_ip_last(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", "X-Forwarded-For", "1.1.1.1, 2.2.2.2",
                                     "Accept", "a", "x-forwarded-for", "3.3.3.3", NULL};
    cr_http_header_t hs[16];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_int_equal(count_name(h, "X-Forwarded-For"), 1);
    assert_true(has_line(h, "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 192.168.1.5"));
}

static void test_xff_absent_is_the_client_ip(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", NULL};
    cr_http_header_t hs[4];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    assert_true(has_line(rewrite_req(&rw), "X-Forwarded-For: 192.168.1.5"));
}

/* forwarded_client_cert (issue 6): kept as sent, dropped, or replaced. */
static void test_xfcc_is_kept_dropped_or_replaced(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", "X-Forwarded-Client-Cert", "forged",
                                     "x-forwarded-client-cert", "forged2", NULL};
    cr_http_header_t hs[8];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_int_equal(count_name(h, "X-Forwarded-Client-Cert"), 2);
    rw.drop_xfcc = true;
    h = rewrite_req(&rw);
    assert_false(has_name(h, "X-Forwarded-Client-Cert"));
    rw.xfcc_value = "TUlJQmNlcnQ=";
    rw.xfcc_value_len = 12;
    h = rewrite_req(&rw);
    assert_int_equal(count_name(h, "X-Forwarded-Client-Cert"), 1);
    assert_true(has_line(h, "X-Forwarded-Client-Cert: TUlJQmNlcnQ="));
    assert_null(strstr(h, "forged"));
}

static void test_client_cf_headers_and_request_id_are_replaced(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h",
                                     "X-Vcap-Request-Id", "client-chosen",
                                     "X-CF-ApplicationID", "forged-app",
                                     "x-cf-instanceindex", "99",
                                     "X-Cf-InstanceId", "forged-id",
                                     "X-CF-App-Instance", "guid:1",
                                     NULL};
    cr_http_header_t hs[16];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("app-guid", "1", "inst-9");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_null(strstr(h, "client-chosen"));
    assert_null(strstr(h, "forged"));
    assert_null(strstr(h, "99"));
    assert_false(has_name(h, "X-CF-App-Instance"));
    assert_int_equal(count_name(h, "X-Vcap-Request-Id"), 1);
    assert_int_equal(count_name(h, "X-CF-ApplicationID"), 1);
    assert_int_equal(count_name(h, "X-CF-InstanceIndex"), 1);
    assert_int_equal(count_name(h, "X-CF-InstanceID"), 1);
    assert_true(has_line(h, "X-Vcap-Request-Id: " RID));
    assert_true(has_line(h, "X-CF-ApplicationID: app-guid"));
    assert_true(has_line(h, "X-CF-InstanceIndex: 1"));
    assert_true(has_line(h, "X-CF-InstanceID: inst-9"));
}

static void test_instance_id_falls_back_to_host_port_and_empty_index_is_sent(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", NULL};
    cr_http_header_t hs[4];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint(NULL, NULL, NULL);
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_true(has_line(h, "X-CF-ApplicationID: "));
    assert_true(has_line(h, "X-CF-InstanceIndex: "));
    assert_true(has_line(h, "X-CF-InstanceID: 10.1.2.3:61000"));
}

static void test_hop_by_hop_headers_are_dropped(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h",
                                     "Connection", "keep-alive",
                                     "Keep-Alive", "timeout=5",
                                     "Proxy-Connection", "keep-alive",
                                     "Proxy-Authorization", "Basic Zm9vOmJhcg==",
                                     "Proxy-Authenticate", "Basic",
                                     "TE", "gzip",
                                     "Trailer", "X-Checksum",
                                     "Upgrade", "websocket",
                                     "Accept", "x",
                                     NULL};
    cr_http_header_t hs[16];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_false(has_name(h, "Connection"));
    assert_false(has_name(h, "Keep-Alive"));
    assert_false(has_name(h, "Proxy-Connection"));
    assert_false(has_name(h, "Proxy-Authorization"));
    assert_false(has_name(h, "Proxy-Authenticate"));
    assert_false(has_name(h, "TE"));
    assert_false(has_name(h, "Trailer"));
    assert_false(has_name(h, "Upgrade"));
    assert_true(has_line(h, "Accept: x"));
}

static void test_headers_listed_in_connection_are_dropped_but_framing_is_kept(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h",
                                     "X-Secret", "s1",
                                     "Connection", "close, X-Secret ,x-other,,Content-Length, Host",
                                     "X-Other", "s2",
                                     "Content-Length", "5",
                                     "X-Kept", "k",
                                     "Connection", "X-Later",
                                     "x-later", "s3",
                                     NULL};
    cr_http_header_t hs[16];
    cr_http_request_t req;
    make_request(&req, hs, "POST", "/", kv);
    req.body_kind = CR_HTTP_BODY_LENGTH;
    req.content_length = 5;
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_null(strstr(h, "s1"));
    assert_null(strstr(h, "s2"));
    assert_null(strstr(h, "s3"));
    assert_true(has_line(h, "X-Kept: k"));
    assert_true(has_line(h, "Content-Length: 5"));
    assert_true(has_line(h, "Host: h"));
}

static void test_many_connection_tokens_are_all_honoured(void **state)
{
    (void)state;
    char list[2048] = "";
    for (int i = 0; i < 60; i++) {
        char t[16];
        snprintf(t, sizeof(t), "%sX-H%d", i ? ", " : "", i);
        strcat(list, t);
    }
    static const char *names[] = {"X-H0", "X-H31", "X-H32", "X-H59"};
    const char *kv[] = {"Host", "h", "Connection", list, names[0], "v0", names[1], "v31",
                        names[2], "v32", names[3], "v59", "X-H60", "kept", NULL};
    cr_http_header_t hs[16];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    for (size_t i = 0; i < CR_ARRAY_LEN(names); i++)
        assert_false(has_name(h, names[i]));
    assert_true(has_line(h, "X-H60: kept"));
}

static void test_xff_listed_in_connection_is_replaced_by_client_ip(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", "Connection", "X-Forwarded-For",
                                     "X-Forwarded-For", "6.6.6.6", NULL};
    cr_http_header_t hs[8];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_true(has_line(h, "X-Forwarded-For: 192.168.1.5"));
    assert_null(strstr(h, "6.6.6.6"));
}

static void test_upgrade_keeps_upgrade_header_and_sends_connection_upgrade(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", "Connection", "Upgrade", "Upgrade", "websocket",
                                     "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==",
                                     "Sec-WebSocket-Version", "13", NULL};
    cr_http_header_t hs[8];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/ws", kv);
    req.upgrade = true;
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    rw.upstream_keep_alive = false;
    const char *h = rewrite_req(&rw);
    assert_true(has_line(h, "Upgrade: websocket"));
    assert_true(has_line(h, "Connection: Upgrade"));
    assert_int_equal(count_name(h, "Connection"), 1);
    assert_true(has_line(h, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="));
}

static void test_te_trailers_is_forwarded_and_trailer_kept_for_chunked(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", "TE", "gzip, trailers",
                                     "Transfer-Encoding", "chunked", "Trailer", "X-Sum", NULL};
    cr_http_header_t hs[8];
    cr_http_request_t req;
    make_request(&req, hs, "POST", "/", kv);
    req.body_kind = CR_HTTP_BODY_CHUNKED;
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_true(has_line(h, "TE: trailers"));
    assert_null(strstr(h, "gzip"));
    assert_true(has_line(h, "Transfer-Encoding: chunked"));
    assert_true(has_line(h, "Trailer: X-Sum"));
}

static void test_client_forwarded_proto_and_request_start_are_kept(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", "X-Forwarded-Proto", "https",
                                     "X-Request-Start", "42", NULL};
    cr_http_header_t hs[8];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_int_equal(count_name(h, "X-Forwarded-Proto"), 1);
    assert_true(has_line(h, "X-Forwarded-Proto: https"));
    assert_int_equal(count_name(h, "X-Request-Start"), 1);
    assert_true(has_line(h, "X-Request-Start: 42"));
}

static void test_forwarded_proto_is_https_over_tls(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", NULL};
    cr_http_header_t hs[4];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    rw.over_tls = true;
    assert_true(has_line(rewrite_req(&rw), "X-Forwarded-Proto: https"));
}

static void test_connection_close_when_upstream_keep_alive_is_off(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", "Connection", "keep-alive", NULL};
    cr_http_header_t hs[4];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    rw.upstream_keep_alive = false;
    const char *h = rewrite_req(&rw);
    assert_int_equal(count_name(h, "Connection"), 1);
    assert_true(has_line(h, "Connection: close"));
}

static void test_http10_request_goes_upstream_as_http11_with_authority_as_host(void **state)
{
    (void)state;
    static const char *const kv[] = {"Accept", "*/*", NULL};
    cr_http_header_t hs[4];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "http://app.example.com/x", kv);
    req.version_minor = 0;
    req.authority = "app.example.com";
    req.authority_len = 15;
    req.host = req.authority;
    req.host_len = 15;
    req.path = "/x";
    req.path_len = 2;
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_memory_equal(h, "GET /x HTTP/1.1\r\n", 17);
    assert_true(has_line(h, "Host: app.example.com"));
}

/* Issue 7: the backend must see the host crouter routed by. */
static void test_issue7_absolute_form_replaces_the_clients_host_header(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "other.example.com", "Accept", "*/*", NULL};
    cr_http_header_t hs[4];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "http://app.example.com:8080/x?q=1", kv);
    req.authority = "app.example.com:8080";
    req.authority_len = 20;
    req.host = req.authority;
    req.host_len = 20;
    req.path = "/x?q=1";
    req.path_len = 6;
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_memory_equal(h, "GET /x?q=1 HTTP/1.1\r\n", 21);
    assert_int_equal(count_name(h, "Host"), 1);
    assert_true(has_line(h, "Host: app.example.com:8080"));
    assert_false(has_line(h, "Host: other.example.com"));
    assert_true(has_line(h, "Accept: */*"));
}

static void test_registry_values_with_crlf_cannot_inject_lines(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "h", NULL};
    cr_http_header_t hs[4];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("app\r\nX-Evil: 1", "0\n", "id\r\n\r\nGET / HTTP/1.1");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    const char *h = rewrite_req(&rw);
    assert_false(has_name(h, "X-Evil"));
    assert_true(has_line(h, "X-CF-ApplicationID: appX-Evil: 1"));
    assert_true(has_line(h, "X-CF-InstanceID: idGET / HTTP/1.1"));
    /* The head ends exactly once. */
    assert_ptr_equal(strstr(h, "\r\n\r\n") + 4, h + strlen(h));
}

static void test_request_head_over_cap_is_etoobig_at_every_size(void **state)
{
    (void)state;
    static const char *const kv[] = {"Host", "app.example.com", "X-Forwarded-For", "1.2.3.4",
                                     "Cookie", "JSESSIONID=abc", NULL};
    cr_http_header_t hs[8];
    cr_http_request_t req;
    make_request(&req, hs, "GET", "/", kv);
    cr_endpoint_t ep = endpoint("a", "0", "i");
    cr_request_rewrite_t rw = rewrite_of(&req, &ep);
    int n = cr_rewrite_request_head(&rw, out, sizeof(out));
    assert_true(n > 0);
    for (int cap = 0; cap < n; cap++) {
        char *buf = malloc((size_t)cap + 1);
        assert_int_equal(cr_rewrite_request_head(&rw, buf, (size_t)cap), CR_ETOOBIG);
        free(buf);
    }
    char *exact = malloc((size_t)n);
    assert_int_equal(cr_rewrite_request_head(&rw, exact, (size_t)n), n);
    assert_memory_equal(exact, out, (size_t)n);
    free(exact);
}

/* --- response ----------------------------------------------------------- */

static void make_response(cr_http_response_t *resp, cr_http_header_t *hs, uint16_t status,
                          const char *reason, const char *const *kv)
{
    memset(resp, 0, sizeof(*resp));
    resp->status = status;
    resp->reason = reason;
    resp->reason_len = (uint32_t)strlen(reason);
    resp->headers = hs;
    resp->headers_len = make_headers(hs, kv);
    resp->version_minor = 1;
    resp->keep_alive = true;
    resp->body_kind = CR_HTTP_BODY_LENGTH;
}

static const char *rewrite_resp(const cr_response_rewrite_t *rw)
{
    int n = cr_rewrite_response_head(rw, out, sizeof(out) - 1);
    assert_true(n > 0);
    out[n] = '\0';
    return out;
}

static void test_typical_response_is_rewritten_exactly(void **state)
{
    (void)state;
    static const char *const kv[] = {"Content-Type", "text/html", "Content-Length", "12",
                                     "Connection", "keep-alive", "Keep-Alive", "timeout=5",
                                     "X-Cf-Proxy-Signature", "sig", NULL};
    cr_http_header_t hs[8];
    cr_http_response_t resp;
    make_response(&resp, hs, 200, "OK", kv);
    static const char extra[] = "Set-Cookie: __VCAP_ID__=i; Path=/; HttpOnly\r\n";
    cr_response_rewrite_t rw = {.resp = &resp, .request_id = RID, .client_keep_alive = true,
                                .client_version_minor = 1, .extra = extra,
                                .extra_len = sizeof(extra) - 1};
    assert_string_equal(rewrite_resp(&rw), "HTTP/1.1 200 OK\r\n"
                                           "Content-Type: text/html\r\n"
                                           "Content-Length: 12\r\n"
                                           "X-Vcap-Request-Id: " RID "\r\n"
                                           "Set-Cookie: __VCAP_ID__=i; Path=/; HttpOnly\r\n"
                                           "\r\n");
}

static void test_response_keeps_backend_request_id(void **state)
{
    (void)state;
    static const char *const kv[] = {"x-vcap-request-id", "backend-id", NULL};
    cr_http_header_t hs[4];
    cr_http_response_t resp;
    make_response(&resp, hs, 204, "No Content", kv);
    cr_response_rewrite_t rw = {.resp = &resp, .request_id = RID, .client_keep_alive = true,
                                .client_version_minor = 1};
    const char *h = rewrite_resp(&rw);
    assert_int_equal(count_name(h, "X-Vcap-Request-Id"), 1);
    assert_true(has_line(h, "x-vcap-request-id: backend-id"));
}

static void test_response_connection_follows_crouter_choice(void **state)
{
    (void)state;
    static const char *const kv[] = {"Connection", "close", "Content-Length", "0", NULL};
    cr_http_header_t hs[4];
    cr_http_response_t resp;
    make_response(&resp, hs, 200, "OK", kv);
    cr_response_rewrite_t rw = {.resp = &resp, .request_id = RID, .client_keep_alive = true,
                                .client_version_minor = 1};
    assert_false(has_name(rewrite_resp(&rw), "Connection"));

    rw.client_keep_alive = false;
    const char *h = rewrite_resp(&rw);
    assert_int_equal(count_name(h, "Connection"), 1);
    assert_true(has_line(h, "Connection: close"));

    rw.client_keep_alive = true;
    rw.client_version_minor = 0;
    h = rewrite_resp(&rw);
    assert_memory_equal(h, "HTTP/1.0 200 OK\r\n", 17);
    assert_true(has_line(h, "Connection: keep-alive"));
}

static void test_response_drops_hop_by_hop_and_listed_headers(void **state)
{
    (void)state;
    static const char *const kv[] = {"Connection", "X-Internal", "X-Internal", "secret",
                                     "Proxy-Authenticate", "Basic", "TE", "trailers",
                                     "Trailer", "X-Sum", "Upgrade", "h2c",
                                     "Transfer-Encoding", "chunked", "Set-Cookie", "a=b", NULL};
    cr_http_header_t hs[16];
    cr_http_response_t resp;
    make_response(&resp, hs, 200, "OK", kv);
    resp.body_kind = CR_HTTP_BODY_LENGTH;
    cr_response_rewrite_t rw = {.resp = &resp, .request_id = RID, .client_keep_alive = true,
                                .client_version_minor = 1};
    const char *h = rewrite_resp(&rw);
    assert_null(strstr(h, "secret"));
    assert_false(has_name(h, "Proxy-Authenticate"));
    assert_false(has_name(h, "TE"));
    assert_false(has_name(h, "Trailer"));
    assert_false(has_name(h, "Upgrade"));
    assert_true(has_line(h, "Transfer-Encoding: chunked"));
    assert_true(has_line(h, "Set-Cookie: a=b"));

    resp.body_kind = CR_HTTP_BODY_CHUNKED;
    assert_true(has_line(rewrite_resp(&rw), "Trailer: X-Sum"));
}

static void test_switching_protocols_keeps_connection_and_upgrade(void **state)
{
    (void)state;
    static const char *const kv[] = {"Upgrade", "websocket", "Connection", "Upgrade",
                                     "Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", NULL};
    cr_http_header_t hs[4];
    cr_http_response_t resp;
    make_response(&resp, hs, 101, "Switching Protocols", kv);
    resp.body_kind = CR_HTTP_BODY_NONE;
    cr_response_rewrite_t rw = {.resp = &resp, .request_id = RID, .client_keep_alive = false,
                                .upgrade = true, .client_version_minor = 1};
    assert_string_equal(rewrite_resp(&rw), "HTTP/1.1 101 Switching Protocols\r\n"
                                           "Upgrade: websocket\r\n"
                                           "Connection: Upgrade\r\n"
                                           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                                           "X-Vcap-Request-Id: " RID "\r\n"
                                           "\r\n");
}

static void test_empty_reason_gets_the_standard_text(void **state)
{
    (void)state;
    static const char *const kv[] = {NULL};
    cr_http_header_t hs[1];
    cr_http_response_t resp;
    make_response(&resp, hs, 404, "", kv);
    cr_response_rewrite_t rw = {.resp = &resp, .client_keep_alive = true,
                                .client_version_minor = 1};
    assert_string_equal(rewrite_resp(&rw), "HTTP/1.1 404 Not Found\r\n\r\n");
    resp.status = 299;
    assert_string_equal(rewrite_resp(&rw), "HTTP/1.1 299 \r\n\r\n");
}

static void test_response_head_over_cap_is_etoobig_at_every_size(void **state)
{
    (void)state;
    static const char *const kv[] = {"Content-Length", "3", "Server", "x", NULL};
    cr_http_header_t hs[4];
    cr_http_response_t resp;
    make_response(&resp, hs, 200, "OK", kv);
    static const char extra[] = "Set-Cookie: __VCAP_ID__=i\r\n";
    cr_response_rewrite_t rw = {.resp = &resp, .request_id = RID, .client_keep_alive = false,
                                .client_version_minor = 1, .extra = extra,
                                .extra_len = sizeof(extra) - 1};
    int n = cr_rewrite_response_head(&rw, out, sizeof(out));
    assert_true(n > 0);
    for (int cap = 0; cap < n; cap++) {
        char *buf = malloc((size_t)cap + 1);
        assert_int_equal(cr_rewrite_response_head(&rw, buf, (size_t)cap), CR_ETOOBIG);
        free(buf);
    }
    char exact[512];
    assert_int_equal(cr_rewrite_response_head(&rw, exact, (size_t)n), n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typical_request_is_rewritten_exactly),
        cmocka_unit_test(test_xff_headers_are_joined_into_one_line_with_client_ip_last),
        cmocka_unit_test(test_xff_absent_is_the_client_ip),
        cmocka_unit_test(test_xfcc_is_kept_dropped_or_replaced),
        cmocka_unit_test(test_client_cf_headers_and_request_id_are_replaced),
        cmocka_unit_test(test_instance_id_falls_back_to_host_port_and_empty_index_is_sent),
        cmocka_unit_test(test_hop_by_hop_headers_are_dropped),
        cmocka_unit_test(test_headers_listed_in_connection_are_dropped_but_framing_is_kept),
        cmocka_unit_test(test_many_connection_tokens_are_all_honoured),
        cmocka_unit_test(test_xff_listed_in_connection_is_replaced_by_client_ip),
        cmocka_unit_test(test_upgrade_keeps_upgrade_header_and_sends_connection_upgrade),
        cmocka_unit_test(test_te_trailers_is_forwarded_and_trailer_kept_for_chunked),
        cmocka_unit_test(test_client_forwarded_proto_and_request_start_are_kept),
        cmocka_unit_test(test_forwarded_proto_is_https_over_tls),
        cmocka_unit_test(test_connection_close_when_upstream_keep_alive_is_off),
        cmocka_unit_test(test_http10_request_goes_upstream_as_http11_with_authority_as_host),
        cmocka_unit_test(test_issue7_absolute_form_replaces_the_clients_host_header),
        cmocka_unit_test(test_registry_values_with_crlf_cannot_inject_lines),
        cmocka_unit_test(test_request_head_over_cap_is_etoobig_at_every_size),
        cmocka_unit_test(test_typical_response_is_rewritten_exactly),
        cmocka_unit_test(test_response_keeps_backend_request_id),
        cmocka_unit_test(test_response_connection_follows_crouter_choice),
        cmocka_unit_test(test_response_drops_hop_by_hop_and_listed_headers),
        cmocka_unit_test(test_switching_protocols_keeps_connection_and_upgrade),
        cmocka_unit_test(test_empty_reason_gets_the_standard_text),
        cmocka_unit_test(test_response_head_over_cap_is_etoobig_at_every_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
