/* test/unit/common/test_log.c - level parsing and the log rate limiter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Runs cr_log with stderr pointed at a temp file; returns what it wrote. */
static char *capture_log_line(const char *route)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    cr_log(CR_LOG_INFO, "registry", "route-registered route=%s", route);
    dup2(saved, STDERR_FILENO);
    close(saved);
    static char out[4096];
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return out;
}

/* Issue 7: a route (or instance id) from NATS JSON may carry CR/LF; logged
 * raw it would end the line and forge a second event. */
static void test_issue7_control_bytes_in_a_message_are_escaped_one_line_per_event(void **state)
{
    (void)state;
    const char *out = capture_log_line("evil.example.com\r\n2026-01-01T00:00:00.000000Z error main: forged\x01\x7f\t");
    assert_non_null(strstr(out, " info  registry: route-registered route=evil.example.com\\r\\n2026-01-01T00:00:00"
                                ".000000Z error main: forged\\x01\\x7f\\t\n"));
    assert_non_null(strchr(out, '\n'));
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out)); /* exactly one line */
    assert_null(strchr(out, '\r'));

    /* A message longer than the line is cut, still as one line. */
    char big[5000];
    memset(big, '\n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    out = capture_log_line(big);
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out));
    assert_true(strlen(out) <= 2048);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_level_names_parse_case_insensitively),
        cmocka_unit_test(test_level_threshold_filters_lower_levels),
        cmocka_unit_test(test_ratelimit_allows_one_line_per_interval_and_counts_the_rest),
        cmocka_unit_test(test_xmemdup0_terminates_and_copies_embedded_bytes),
        cmocka_unit_test(test_issue7_control_bytes_in_a_message_are_escaped_one_line_per_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
