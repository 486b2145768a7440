/* test/unit/router/test_chunked.c - the chunked-body scanner: framing, limits, splits.
 *
 * Each body is fed whole, in two pieces split at every offset, and one byte
 * at a time, each piece at the end of a guarded page; all three must agree
 * on where the body ends (or that it is bad).
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

/* Feeds s[0..len) in pieces cut at the offsets in cuts[0..ncuts) (ascending).
 * Returns the body end as an offset into s, CR_AGAIN or CR_EBAD. */
static int64_t scan_cuts(const char *s, size_t len, const size_t *cuts, size_t ncuts,
                         uint64_t *data_bytes)
{
    cr_chunked_t c;
    cr_chunked_init(&c);
    size_t from = 0;
    int64_t rc = CR_AGAIN;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        rc = cr_chunked_scan(&c, guarded_put(s + from, to - from), to - from);
        if (rc >= 0) {
            rc += (int64_t)from;
            break;
        }
        if (rc == CR_EBAD)
            break;
        assert_int_equal(rc, CR_AGAIN);
        from = to;
    }
    if (data_bytes)
        *data_bytes = c.data_bytes;
    return rc;
}

/* Scans whole, split at every offset, and byte by byte; asserts they agree
 * and returns the common result. */
static int64_t scan_every_way(const char *s, size_t len)
{
    uint64_t whole_data = 0, data = 0;
    int64_t whole = scan_cuts(s, len, NULL, 0, &whole_data);
    for (size_t cut = 0; cut <= len; cut++) {
        int64_t rc = scan_cuts(s, len, &cut, 1, &data);
        if (rc != whole)
            fail_msg("split at %zu: %lld, whole: %lld", cut, (long long)rc, (long long)whole);
        if (whole >= 0)
            assert_int_equal(data, whole_data);
    }
    static size_t cuts[1 << 16];
    assert_true(len <= CR_ARRAY_LEN(cuts));
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    int64_t rc = scan_cuts(s, len, cuts, len ? len - 1 : 0, &data);
    if (rc != whole)
        fail_msg("byte by byte: %lld, whole: %lld", (long long)rc, (long long)whole);
    return whole;
}

static int64_t scan_str(const char *s)
{
    return scan_every_way(s, strlen(s));
}

static void test_single_chunk_body(void **state)
{
    (void)state;
    const char *s = "5\r\nhello\r\n0\r\n\r\n";
    assert_int_equal(scan_str(s), (int64_t)strlen(s));
    uint64_t data;
    assert_int_equal(scan_cuts(s, strlen(s), NULL, 0, &data), (int64_t)strlen(s));
    assert_int_equal(data, 5);
}

static void test_empty_body_is_just_last_chunk(void **state)
{
    (void)state;
    assert_int_equal(scan_str("0\r\n\r\n"), 5);
    assert_int_equal(scan_str("000\r\n\r\n"), 7);
}

static void test_several_chunks_with_mixed_case_hex(void **state)
{
    (void)state;
    const char *s = "a\r\n0123456789\r\nB\r\nhello world\r\n1\r\n!\r\n0\r\n\r\n";
    assert_int_equal(scan_str(s), (int64_t)strlen(s));
    uint64_t data;
    scan_cuts(s, strlen(s), NULL, 0, &data);
    assert_int_equal(data, 22);
}

static void test_data_may_contain_crlf_and_binary(void **state)
{
    (void)state;
    static const char s[] = "6\r\n\r\n\0\n\r\xff\r\n0\r\n\r\n";
    assert_int_equal(scan_every_way(s, sizeof(s) - 1), (int64_t)sizeof(s) - 1);
}

static void test_chunk_extensions_accepted(void **state)
{
    (void)state;
    const char *s = "5;name=value;flag\r\nhello\r\n3;q=\"a b\"\r\nabc\r\n0;last\r\n\r\n";
    assert_int_equal(scan_str(s), (int64_t)strlen(s));
}

static void test_trailers_accepted(void **state)
{
    (void)state;
    const char *s = "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\nX-B: 1 2\r\n\r\n";
    assert_int_equal(scan_str(s), (int64_t)strlen(s));
}

static void test_pipelined_data_after_body_is_not_consumed(void **state)
{
    (void)state;
    const char *body = "5\r\nhello\r\n0\r\nT: 1\r\n\r\n";
    char s[256];
    snprintf(s, sizeof(s), "%sGET /next HTTP/1.1\r\nHost: a\r\n\r\n", body);
    assert_int_equal(scan_str(s), (int64_t)strlen(body));
}

static void test_scan_after_end_returns_zero(void **state)
{
    (void)state;
    cr_chunked_t c;
    cr_chunked_init(&c);
    assert_int_equal(cr_chunked_scan(&c, guarded_put("0\r\n\r\nXYZ", 8), 8), 5);
    assert_int_equal(cr_chunked_scan(&c, guarded_put("XYZ", 3), 3), 0);
}

static void test_error_is_sticky(void **state)
{
    (void)state;
    cr_chunked_t c;
    cr_chunked_init(&c);
    assert_int_equal(cr_chunked_scan(&c, guarded_put("x", 1), 1), CR_EBAD);
    assert_int_equal(cr_chunked_scan(&c, guarded_put("0\r\n\r\n", 5), 5), CR_EBAD);
}

static void test_incomplete_body_is_again(void **state)
{
    (void)state;
    assert_int_equal(scan_str("5\r\nhel"), CR_AGAIN);
    assert_int_equal(scan_str("5\r\nhello\r\n0\r\n"), CR_AGAIN);
    assert_int_equal(scan_str("5\r\nhello\r\n0\r\nX: 1\r\n"), CR_AGAIN);
    assert_int_equal(scan_str(""), CR_AGAIN);
}

static void test_fifteen_hex_digits_fit(void **state)
{
    (void)state;
    cr_chunked_t c;
    cr_chunked_init(&c);
    assert_int_equal(cr_chunked_scan(&c, guarded_put("fffffffffffffff\r\nab", 19), 19), CR_AGAIN);
    assert_int_equal(c.remaining, 0xfffffffffffffffULL - 2);
    assert_int_equal(c.data_bytes, 2);
}

static void test_size_overflow_is_bad(void **state)
{
    (void)state;
    assert_int_equal(scan_str("10000000000000000\r\n"), CR_EBAD);
    assert_int_equal(scan_str("ffffffffffffffff\r\n"), CR_EBAD);
    assert_int_equal(scan_str("0000000000000005\r\nhello\r\n0\r\n\r\n"), CR_EBAD);
}

static void test_bad_size_digits_are_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "g\r\n", "\r\n", " 5\r\nhello\r\n0\r\n\r\n", "5 \r\nhello\r\n0\r\n\r\n",
        "5\t\r\nhello\r\n0\r\n\r\n", "-5\r\n", "+5\r\n", "0x5\r\n", "5 ;ext\r\n",
        ";ext\r\n", "5\r\r\n",
    };
    for (size_t i = 0; i < CR_ARRAY_LEN(bad); i++) {
        if (scan_str(bad[i]) != CR_EBAD)
            fail_msg("accepted %s", bad[i]);
    }
}

static void test_missing_crlf_after_data_is_bad(void **state)
{
    (void)state;
    assert_int_equal(scan_str("5\r\nhelloX\r\n0\r\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("5\r\nhello0\r\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("5\r\nhello\rX"), CR_EBAD);
    assert_int_equal(scan_str("3\r\nhello\r\n0\r\n\r\n"), CR_EBAD); /* size too small */
}

static void test_bare_lf_is_bad(void **state)
{
    (void)state;
    assert_int_equal(scan_str("5\nhello\r\n0\r\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("5\r\nhello\n0\r\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("5\r\nhello\r\n0\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("5\r\nhello\r\n0\r\n\n"), CR_EBAD);
    assert_int_equal(scan_str("0\r\nX: 1\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("5;a\nb\r\nhello\r\n0\r\n\r\n"), CR_EBAD);
}

static void test_control_bytes_in_extension_are_bad(void **state)
{
    (void)state;
    static const char nul[] = "5;a\0b\r\nhello\r\n0\r\n\r\n";
    assert_int_equal(scan_every_way(nul, sizeof(nul) - 1), CR_EBAD);
    assert_int_equal(scan_str("5;a\x7f\r\nhello\r\n0\r\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("5;a\tb\r\nhello\r\n0\r\n\r\n"), (int64_t)strlen("5;a\tb\r\nhello\r\n0\r\n\r\n"));
}

static void test_oversized_size_line_is_bad(void **state)
{
    (void)state;
    static char s[8192];
    strcpy(s, "5;x=");
    memset(s + 4, 'a', 4090);
    strcpy(s + 4094, "\r\nhello\r\n0\r\n\r\n");
    /* Line of 4094 bytes plus CR is within the 4096 limit... */
    cr_chunked_t c;
    cr_chunked_init(&c);
    assert_int_equal(cr_chunked_scan(&c, guarded_put(s, strlen(s)), strlen(s)), (int64_t)strlen(s));
    /* ...two more bytes are not. */
    memset(s + 4, 'a', 4092);
    strcpy(s + 4096, "\r\nhello\r\n0\r\n\r\n");
    cr_chunked_init(&c);
    assert_int_equal(cr_chunked_scan(&c, guarded_put(s, strlen(s)), strlen(s)), CR_EBAD);
}

static void test_oversized_trailers_are_bad(void **state)
{
    (void)state;
    static char s[40000];
    size_t n = 0;
    n += (size_t)sprintf(s + n, "0\r\n");
    while (n < 20000)
        n += (size_t)sprintf(s + n, "X-Trailer: %0100d\r\n", 0);
    sprintf(s + n, "\r\n");
    cr_chunked_t c;
    cr_chunked_init(&c);
    assert_int_equal(cr_chunked_scan(&c, guarded_put(s, strlen(s)), strlen(s)), CR_EBAD);
}

static void test_malformed_trailers_are_bad(void **state)
{
    (void)state;
    assert_int_equal(scan_str("0\r\n X: 1\r\n\r\n"), CR_EBAD);          /* obs-fold */
    assert_int_equal(scan_str("0\r\nX: 1\r\n 2\r\n\r\n"), CR_EBAD);     /* obs-fold */
    assert_int_equal(scan_str("0\r\nX : 1\r\n\r\n"), CR_EBAD);          /* space before colon */
    assert_int_equal(scan_str("0\r\nNoColon\r\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("0\r\n: 1\r\n\r\n"), CR_EBAD);
    assert_int_equal(scan_str("0\r\nX: a\rb\r\n\r\n"), CR_EBAD);        /* bare CR */
    assert_int_equal(scan_str("0\r\nX: a\x01\r\n\r\n"), CR_EBAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_chunk_body),
        cmocka_unit_test(test_empty_body_is_just_last_chunk),
        cmocka_unit_test(test_several_chunks_with_mixed_case_hex),
        cmocka_unit_test(test_data_may_contain_crlf_and_binary),
        cmocka_unit_test(test_chunk_extensions_accepted),
        cmocka_unit_test(test_trailers_accepted),
        cmocka_unit_test(test_pipelined_data_after_body_is_not_consumed),
        cmocka_unit_test(test_scan_after_end_returns_zero),
        cmocka_unit_test(test_error_is_sticky),
        cmocka_unit_test(test_incomplete_body_is_again),
        cmocka_unit_test(test_fifteen_hex_digits_fit),
        cmocka_unit_test(test_size_overflow_is_bad),
        cmocka_unit_test(test_bad_size_digits_are_bad),
        cmocka_unit_test(test_missing_crlf_after_data_is_bad),
        cmocka_unit_test(test_bare_lf_is_bad),
        cmocka_unit_test(test_control_bytes_in_extension_are_bad),
        cmocka_unit_test(test_oversized_size_line_is_bad),
        cmocka_unit_test(test_oversized_trailers_are_bad),
        cmocka_unit_test(test_malformed_trailers_are_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
