/* test/unit/common/test_log.c - level parsing and the log rate limiter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "common/log.h"
#include "common/xalloc.h"

static void test_level_names_parse_case_insensitively(void **state)
{
    (void)state;
    cr_log_level_t l;
    assert_int_equal(cr_log_level_parse("DEBUG", &l), 0);
    assert_int_equal(l, CR_LOG_DEBUG);
    assert_int_equal(cr_log_level_parse("warning", &l), 0);
    assert_int_equal(l, CR_LOG_WARN);
    assert_int_equal(cr_log_level_parse("error", &l), 0);
    assert_int_equal(l, CR_LOG_ERROR);
    assert_int_equal(cr_log_level_parse("verbose", &l), -1);
}

static void test_level_threshold_filters_lower_levels(void **state)
{
    (void)state;
    cr_log_set_level(CR_LOG_WARN);
    assert_false(cr_log_enabled(CR_LOG_INFO));
    assert_true(cr_log_enabled(CR_LOG_WARN));
    assert_true(cr_log_enabled(CR_LOG_ERROR));
    cr_log_set_level(CR_LOG_INFO);
}

static void test_ratelimit_allows_one_line_per_interval_and_counts_the_rest(void **state)
{
    (void)state;
    cr_log_ratelimit_t rl = {0};
    uint64_t suppressed = 99;
    assert_true(cr_log_ratelimit_allow(&rl, 60 * CR_NS_PER_SEC, &suppressed));
    assert_int_equal(suppressed, 0);
    for (int i = 0; i < 10; i++)
        assert_false(cr_log_ratelimit_allow(&rl, 60 * CR_NS_PER_SEC, &suppressed));
    /* An interval of 0 lets the next line through and reports the 10 skipped. */
    rl.next_allowed_ns = 0;
    assert_true(cr_log_ratelimit_allow(&rl, 60 * CR_NS_PER_SEC, &suppressed));
    assert_int_equal(suppressed, 10);
}

static void test_xmemdup0_terminates_and_copies_embedded_bytes(void **state)
{
    (void)state;
    char *p = cr_xmemdup0("ab\0cd", 5);
    assert_memory_equal(p, "ab\0cd", 5);
    assert_int_equal(p[5], '\0');
    free(p);
    char *q = cr_xstrndup("hello", 3);
    assert_string_equal(q, "hel");
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_level_names_parse_case_insensitively),
        cmocka_unit_test(test_level_threshold_filters_lower_levels),
        cmocka_unit_test(test_ratelimit_allows_one_line_per_interval_and_counts_the_rest),
        cmocka_unit_test(test_xmemdup0_terminates_and_copies_embedded_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
