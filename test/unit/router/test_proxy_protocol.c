/* test/unit/router/test_proxy_protocol.c - PROXY protocol v1/v2 parsing.
 *
 * Every input is put right before an unmapped page (guarded.h), so a read
 * past the end faults. Each prefix of a valid header must say CR_AGAIN.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "common/defs.h"
#include "router/proxy_protocol.h"
#include "unit/router/guarded.h"

static int parse(const void *data, size_t len, cr_proxy_header_t *h)
{
    return cr_proxy_protocol_parse(guarded_put(data, len), len, h);
}

static int parse_str(const char *s, cr_proxy_header_t *h)
{
    return parse(s, strlen(s), h);
}

static void assert_every_prefix_needs_more(const void *data, size_t len)
{
    cr_proxy_header_t h;
    for (size_t i = 1; i < len; i++)
        assert_int_equal(parse(data, i, &h), CR_AGAIN);
}

static const char v2_sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* Builds a v2 header: sig, ver_cmd, fam, len, body. Returns its length. */
static size_t v2(unsigned char *out, uint8_t ver_cmd, uint8_t fam, const void *body, uint16_t len)
{
    memcpy(out, v2_sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (unsigned char)(len >> 8);
    out[15] = (unsigned char)len;
    if (len)
        memcpy(out + 16, body, len);
    return 16u + len;
}

static void test_v1_tcp4_gives_source_and_consumes_the_line(void **state)
{
    (void)state;
    const char *in = "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
    cr_proxy_header_t h;
    int n = parse_str(in, &h);
    assert_int_equal(n, (int)strlen("PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n"));
    assert_int_equal(h.version, 1);
    assert_true(h.has_addr);
    assert_int_equal(h.src.sa.sa_family, AF_INET);
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET, &h.src.in.sin_addr, ip, sizeof(ip));
    assert_string_equal(ip, "203.0.113.7");
    assert_int_equal(ntohs(h.src.in.sin_port), 51234);
    assert_int_equal(ntohs(h.dst.in.sin_port), 443);
    assert_int_equal(h.addr_len, sizeof(struct sockaddr_in));
    assert_every_prefix_needs_more(in, (size_t)n);
}

static void test_v1_tcp6(void **state)
{
    (void)state;
    cr_proxy_header_t h;
    const char *in = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    assert_int_equal(parse_str(in, &h), (int)strlen(in));
    assert_int_equal(h.src.sa.sa_family, AF_INET6);
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &h.src.in6.sin6_addr, ip, sizeof(ip));
    assert_string_equal(ip, "2001:db8::1");
    assert_int_equal(ntohs(h.src.in6.sin6_port), 65535);
}

static void test_v1_unknown_keeps_the_socket_address(void **state)
{
    (void)state;
    cr_proxy_header_t h;
    assert_int_equal(parse_str("PROXY UNKNOWN\r\n", &h), 15);
    assert_false(h.has_addr);
    const char *in = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_int_equal(parse_str(in, &h), (int)strlen(in));
    assert_false(h.has_addr);
}

static void test_v1_malformed_lines_are_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",          /* LF without CR */
        "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",       /* double space */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",       /* trailing space */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",          /* missing port */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",      /* extra field */
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",          /* short address */
        "PROXY TCP4 ::1 ::1 1 2\r\n",                /* v6 under TCP4 */
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",        /* v4 under TCP6 */
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",    /* port range */
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",       /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",       /* sign */
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",        /* protocol */
        "PROXY \r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",      /* control byte */
    };
    cr_proxy_header_t h;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse_str(bad[i], &h) != CR_EBAD)
            fail_msg("accepted: %s", bad[i]);
    }
}

static void test_v1_without_line_end_within_107_bytes_is_rejected(void **state)
{
    (void)state;
    char in[200];
    memset(in, '1', sizeof(in));
    memcpy(in, "PROXY TCP4 ", 11);
    cr_proxy_header_t h;
    assert_int_equal(parse(in, 106, &h), CR_AGAIN);
    assert_int_equal(parse(in, 107, &h), CR_EBAD);
    assert_int_equal(parse(in, sizeof(in), &h), CR_EBAD);
}

static void test_no_header_consumes_nothing(void **state)
{
    (void)state;
    cr_proxy_header_t h;
    assert_int_equal(parse_str("GET / HTTP/1.1\r\n\r\n", &h), 0);
    assert_int_equal(parse_str("PUT / HTTP/1.1\r\n\r\n", &h), 0);
    assert_int_equal(parse_str("PROXZ", &h), 0);
    const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00};
    assert_int_equal(parse(hello, sizeof(hello), &h), 0);
    assert_int_equal(parse_str("\r\n\r\nX", &h), 0);
    /* Prefixes of either signature need more. */
    assert_int_equal(parse_str("PRO", &h), CR_AGAIN);
    assert_int_equal(parse_str("\r\n\r", &h), CR_AGAIN);
    assert_int_equal(parse("", 0, &h), CR_AGAIN);
}

static void test_v2_tcp4_with_tlvs(void **state)
{
    (void)state;
    unsigned char body[12 + 7];
    unsigned char *a = body;
    a[0] = 198; a[1] = 51; a[2] = 100; a[3] = 9;     /* src */
    a[4] = 10; a[5] = 0; a[6] = 0; a[7] = 2;         /* dst */
    a[8] = 0x1f; a[9] = 0x90;                        /* 8080 */
    a[10] = 0x01; a[11] = 0xbb;                      /* 443 */
    /* A TLV (PP2_TYPE_AUTHORITY "abcd") that is skipped. */
    a[12] = 0x02; a[13] = 0; a[14] = 4; memcpy(a + 15, "abcd", 4);
    unsigned char in[64 + 20];
    size_t n = v2(in, 0x21, 0x11, body, sizeof(body));
    memcpy(in + n, "GET", 3);
    cr_proxy_header_t h;
    assert_int_equal(parse(in, n + 3, &h), (int)n);
    assert_int_equal(h.version, 2);
    assert_true(h.has_addr);
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET, &h.src.in.sin_addr, ip, sizeof(ip));
    assert_string_equal(ip, "198.51.100.9");
    assert_int_equal(ntohs(h.src.in.sin_port), 8080);
    assert_every_prefix_needs_more(in, n);
}

static void test_v2_tcp6(void **state)
{
    (void)state;
    unsigned char body[36] = {0};
    body[0] = 0x20; body[1] = 0x01; body[2] = 0x0d; body[3] = 0xb8; body[15] = 5;
    body[31] = 1;
    body[32] = 0x30; body[33] = 0x39;                /* 12345 */
    unsigned char in[64];
    size_t n = v2(in, 0x21, 0x21, body, sizeof(body));
    cr_proxy_header_t h;
    assert_int_equal(parse(in, n, &h), (int)n);
    assert_int_equal(h.src.sa.sa_family, AF_INET6);
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &h.src.in6.sin6_addr, ip, sizeof(ip));
    assert_string_equal(ip, "2001:db8::5");
    assert_int_equal(ntohs(h.src.in6.sin6_port), 12345);
}

static void test_v2_local_and_unspec_keep_the_socket_address(void **state)
{
    (void)state;
    unsigned char in[64];
    cr_proxy_header_t h;
    size_t n = v2(in, 0x20, 0x00, NULL, 0);          /* LOCAL, health check */
    assert_int_equal(parse(in, n, &h), 16);
    assert_false(h.has_addr);
    unsigned char body[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
    n = v2(in, 0x20, 0x11, body, sizeof(body));      /* LOCAL with addresses: ignored */
    assert_int_equal(parse(in, n, &h), (int)n);
    assert_false(h.has_addr);
    n = v2(in, 0x21, 0x12, body, sizeof(body));      /* UDP */
    assert_int_equal(parse(in, n, &h), (int)n);
    assert_false(h.has_addr);
}

static void test_v2_malformed_headers_are_rejected(void **state)
{
    (void)state;
    unsigned char in[64];
    unsigned char body[36] = {0};
    cr_proxy_header_t h;
    size_t n = v2(in, 0x11, 0x11, body, 12);         /* version 1 in a v2 header */
    assert_int_equal(parse(in, n, &h), CR_EBAD);
    n = v2(in, 0x22, 0x11, body, 12);                /* command 2 */
    assert_int_equal(parse(in, n, &h), CR_EBAD);
    n = v2(in, 0x21, 0x11, body, 11);                /* too short for TCP4 */
    assert_int_equal(parse(in, n, &h), CR_EBAD);
    n = v2(in, 0x21, 0x21, body, 35);                /* too short for TCP6 */
    assert_int_equal(parse(in, n, &h), CR_EBAD);
    n = v2(in, 0x21, 0x41, body, 12);                /* family 4 */
    assert_int_equal(parse(in, n, &h), CR_EBAD);
    n = v2(in, 0x21, 0x13, body, 12);                /* transport 3 */
    assert_int_equal(parse(in, n, &h), CR_EBAD);
    v2(in, 0x21, 0x11, body, 12);
    in[14] = 0x10;                                   /* 4096 + 16: over the cap */
    in[15] = 0x00;
    assert_int_equal(parse(in, 16, &h), CR_EBAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4_gives_source_and_consumes_the_line),
        cmocka_unit_test(test_v1_tcp6),
        cmocka_unit_test(test_v1_unknown_keeps_the_socket_address),
        cmocka_unit_test(test_v1_malformed_lines_are_rejected),
        cmocka_unit_test(test_v1_without_line_end_within_107_bytes_is_rejected),
        cmocka_unit_test(test_no_header_consumes_nothing),
        cmocka_unit_test(test_v2_tcp4_with_tlvs),
        cmocka_unit_test(test_v2_tcp6),
        cmocka_unit_test(test_v2_local_and_unspec_keep_the_socket_address),
        cmocka_unit_test(test_v2_malformed_headers_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
