/* test/unit/router/test_cookie.c - Cookie iteration and lookup, Set-Cookie parsing.
 *
 * Inputs sit at the end of a guarded page (guarded.h) so an over-read faults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guarded.h"
#include "router/cookie.h"

static void assert_slice(const char *s, size_t len, const char *expect)
{
    assert_int_equal(len, strlen(expect));
    if (len)
        assert_memory_equal(s, expect, len);
}

/* Collects up to 8 pairs of a Cookie value into names/values. */
static size_t collect(const char *v, cr_cookie_t *out, size_t max)
{
    size_t len = strlen(v), n = 0;
    const char *pos = guarded_put(v, len), *end = pos + len;
    while (n < max && cr_cookie_next(&pos, end, &out[n]))
        n++;
    assert_false(cr_cookie_next(&pos, end, &out[0]) && n < max);
    return n;
}

static void test_cookie_pairs_are_split_and_trimmed(void **state)
{
    (void)state;
    cr_cookie_t c[8];
    assert_int_equal(collect(" a=1;b = 2 ;\tc=three words\t; d=", c, 8), 4);
    assert_slice(c[0].name, c[0].name_len, "a");
    assert_slice(c[0].value, c[0].value_len, "1");
    assert_slice(c[1].name, c[1].name_len, "b");
    assert_slice(c[1].value, c[1].value_len, "2");
    assert_slice(c[2].value, c[2].value_len, "three words");
    assert_slice(c[3].name, c[3].name_len, "d");
    assert_int_equal(c[3].value_len, 0);
}

static void test_cookie_quotes_removed(void **state)
{
    (void)state;
    cr_cookie_t c[8];
    assert_int_equal(collect("a=\"quoted value\"; b=\"\"; c=\"; d=x\"y", c, 8), 4);
    assert_slice(c[0].value, c[0].value_len, "quoted value");
    assert_int_equal(c[1].value_len, 0);
    assert_slice(c[2].value, c[2].value_len, "\"");
    assert_slice(c[3].value, c[3].value_len, "x\"y");
}

static void test_cookie_pairs_without_equals_or_name_skipped(void **state)
{
    (void)state;
    cr_cookie_t c[8];
    assert_int_equal(collect("flag; =nameless; ;;a=1; other", c, 8), 1);
    assert_slice(c[0].name, c[0].name_len, "a");
    assert_int_equal(collect("", c, 8), 0);
    assert_int_equal(collect(" ; ; ", c, 8), 0);
}

static void test_cookie_value_may_contain_equals(void **state)
{
    (void)state;
    cr_cookie_t c[8];
    assert_int_equal(collect("tok=a=b==", c, 8), 1);
    assert_slice(c[0].value, c[0].value_len, "a=b==");
}

static void test_cookie_find_first_occurrence_across_headers(void **state)
{
    (void)state;
    static const char buf[] = "JSESSIONID=first; x=1" "__VCAP_ID__=v1; JSESSIONID=second" "jsessionid=lower";
    const char *g = guarded_put(buf, sizeof(buf) - 1);
    cr_http_header_t h[4] = {
        { .name = "Accept", .name_len = 6, .value = g, .value_len = 21 },
        { .name = "cookie", .name_len = 6, .value = g + 21, .value_len = 33 },
        { .name = "Cookie", .name_len = 6, .value = g, .value_len = 21 },
        { .name = "COOKIE", .name_len = 6, .value = g + 54, .value_len = 16 },
    };
    cr_cookie_t c;
    assert_true(cr_cookie_find(h, 4, "JSESSIONID", 10, &c));
    assert_slice(c.value, c.value_len, "second");
    assert_true(cr_cookie_find(h, 4, "__VCAP_ID__", 11, &c));
    assert_slice(c.value, c.value_len, "v1");
    assert_true(cr_cookie_find(h, 4, "jsessionid", 10, &c));
    assert_slice(c.value, c.value_len, "lower");
    assert_true(cr_cookie_find(h, 4, "x", 1, &c));
    assert_slice(c.value, c.value_len, "1");
    assert_false(cr_cookie_find(h, 4, "JSESSION", 8, &c));
    assert_false(cr_cookie_find(h, 1, "JSESSIONID", 10, &c));
    assert_false(cr_cookie_find(h, 0, "x", 1, &c));
}

static void test_cookie_oversized_value(void **state)
{
    (void)state;
    size_t big = 1 << 20;
    char *v = malloc(big + 16);
    assert_non_null(v);
    memcpy(v, "k=", 2);
    memset(v + 2, 'v', big);
    memcpy(v + 2 + big, "; z=1", 6);
    cr_cookie_t c[8];
    assert_int_equal(collect(v, c, 8), 2);
    assert_int_equal(c[0].value_len, big);
    assert_slice(c[1].name, c[1].name_len, "z");
    free(v);
}

static int set_cookie(const char *v, cr_set_cookie_t *sc)
{
    return cr_set_cookie_parse(guarded_put(v, strlen(v)), strlen(v), sc);
}

static void test_set_cookie_all_attributes(void **state)
{
    (void)state;
    cr_set_cookie_t sc;
    assert_int_equal(set_cookie("JSESSIONID=abc123; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Max-Age=3600; "
                                "Path=/app; Domain=.example.com; Secure; HttpOnly; Partitioned; SameSite=Strict",
                                &sc), 0);
    assert_slice(sc.cookie.name, sc.cookie.name_len, "JSESSIONID");
    assert_slice(sc.cookie.value, sc.cookie.value_len, "abc123");
    assert_slice(sc.expires, sc.expires_len, "Wed, 21 Oct 2015 07:28:00 GMT");
    assert_true(sc.has_max_age);
    assert_int_equal(sc.max_age, 3600);
    assert_slice(sc.path, sc.path_len, "/app");
    assert_slice(sc.domain, sc.domain_len, ".example.com");
    assert_true(sc.secure);
    assert_true(sc.http_only);
    assert_true(sc.partitioned);
    assert_int_equal(sc.same_site, CR_SAMESITE_STRICT);
}

static void test_set_cookie_minimal(void **state)
{
    (void)state;
    cr_set_cookie_t sc;
    assert_int_equal(set_cookie("a=", &sc), 0);
    assert_slice(sc.cookie.name, sc.cookie.name_len, "a");
    assert_int_equal(sc.cookie.value_len, 0);
    assert_null(sc.expires);
    assert_null(sc.path);
    assert_null(sc.domain);
    assert_false(sc.has_max_age);
    assert_false(sc.secure);
    assert_false(sc.http_only);
    assert_false(sc.partitioned);
    assert_int_equal(sc.same_site, CR_SAMESITE_UNSET);
}

static void test_set_cookie_attributes_case_insensitive(void **state)
{
    (void)state;
    cr_set_cookie_t sc;
    assert_int_equal(set_cookie("a=\"q\" ;  SECURE ; httponly;samesite = lax; PATH=/; max-age=0", &sc), 0);
    assert_slice(sc.cookie.value, sc.cookie.value_len, "q");
    assert_true(sc.secure);
    assert_true(sc.http_only);
    assert_int_equal(sc.same_site, CR_SAMESITE_LAX);
    assert_slice(sc.path, sc.path_len, "/");
    assert_true(sc.has_max_age);
    assert_int_equal(sc.max_age, 0);
}

static void test_set_cookie_samesite_values(void **state)
{
    (void)state;
    cr_set_cookie_t sc;
    assert_int_equal(set_cookie("a=1; SameSite=None", &sc), 0);
    assert_int_equal(sc.same_site, CR_SAMESITE_NONE);
    assert_int_equal(set_cookie("a=1; SameSite=bogus", &sc), 0);
    assert_int_equal(sc.same_site, CR_SAMESITE_UNSET);
    assert_int_equal(set_cookie("a=1; SameSite", &sc), 0);
    assert_int_equal(sc.same_site, CR_SAMESITE_UNSET);
    assert_int_equal(set_cookie("a=1; SameSite=Lax; SameSite=Strict", &sc), 0);
    assert_int_equal(sc.same_site, CR_SAMESITE_STRICT);
}

static void test_set_cookie_max_age_negative_and_invalid(void **state)
{
    (void)state;
    cr_set_cookie_t sc;
    assert_int_equal(set_cookie("a=1; Max-Age=-1", &sc), 0);
    assert_true(sc.has_max_age);
    assert_int_equal(sc.max_age, -1);
    static const char *const bad[] = { "a=1; Max-Age=abc", "a=1; Max-Age=", "a=1; Max-Age=-",
                                       "a=1; Max-Age=+5", "a=1; Max-Age=1.5", "a=1; Max-Age",
                                       "a=1; Max-Age=99999999999999999999" };
    for (size_t i = 0; i < CR_ARRAY_LEN(bad); i++) {
        assert_int_equal(set_cookie(bad[i], &sc), 0);
        assert_false(sc.has_max_age);
    }
    assert_int_equal(set_cookie("a=1; Max-Age=10; Max-Age=x", &sc), 0);
    assert_true(sc.has_max_age);
    assert_int_equal(sc.max_age, 10);
}

static void test_set_cookie_without_name_is_bad(void **state)
{
    (void)state;
    cr_set_cookie_t sc;
    assert_int_equal(set_cookie("", &sc), CR_EBAD);
    assert_int_equal(set_cookie("novalue", &sc), CR_EBAD);
    assert_int_equal(set_cookie("=v", &sc), CR_EBAD);
    assert_int_equal(set_cookie("  =v; Path=/", &sc), CR_EBAD);
    assert_int_equal(set_cookie("Secure; a=1", &sc), CR_EBAD);
    assert_int_equal(cr_set_cookie_parse(NULL, 0, &sc), CR_EBAD);
}

static void test_set_cookie_unknown_and_empty_attributes_ignored(void **state)
{
    (void)state;
    cr_set_cookie_t sc;
    assert_int_equal(set_cookie("a=1;;; Priority=High; =x; Path=/p;", &sc), 0);
    assert_slice(sc.path, sc.path_len, "/p");
    assert_false(sc.secure);
}

static void test_set_cookie_oversized_value(void **state)
{
    (void)state;
    size_t big = 1 << 20;
    char *v = malloc(big + 32);
    assert_non_null(v);
    memcpy(v, "k=", 2);
    memset(v + 2, 'v', big);
    memcpy(v + 2 + big, "; Path=/x", 10);
    cr_set_cookie_t sc;
    assert_int_equal(set_cookie(v, &sc), 0);
    assert_int_equal(sc.cookie.value_len, big);
    assert_slice(sc.path, sc.path_len, "/x");
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cookie_pairs_are_split_and_trimmed),
        cmocka_unit_test(test_cookie_quotes_removed),
        cmocka_unit_test(test_cookie_pairs_without_equals_or_name_skipped),
        cmocka_unit_test(test_cookie_value_may_contain_equals),
        cmocka_unit_test(test_cookie_find_first_occurrence_across_headers),
        cmocka_unit_test(test_cookie_oversized_value),
        cmocka_unit_test(test_set_cookie_all_attributes),
        cmocka_unit_test(test_set_cookie_minimal),
        cmocka_unit_test(test_set_cookie_attributes_case_insensitive),
        cmocka_unit_test(test_set_cookie_samesite_values),
        cmocka_unit_test(test_set_cookie_max_age_negative_and_invalid),
        cmocka_unit_test(test_set_cookie_without_name_is_bad),
        cmocka_unit_test(test_set_cookie_unknown_and_empty_attributes_ignored),
        cmocka_unit_test(test_set_cookie_oversized_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
