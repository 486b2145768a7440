/* test/unit/config/test_duration.c - cr_duration_parse and balancing names.
 *
 * Expected values come from Go's time.ParseDuration, which gorouter uses, so
 * a duration in a gorouter config means the same in crouter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/defs.h"
#include "config/config.h"

#define NS 1LL
#define US (1000 * NS)
#define MS (1000 * US)
#define S (1000 * MS)
#define M (60 * S)
#define H (60 * M)

static void assert_parses(const char *s, int64_t want)
{
    int64_t got = 12345;
    int rc = cr_duration_parse(s, &got);
    if (rc != 0 || got != want)
        fail_msg("\"%s\": rc=%d got=%lld want=%lld", s, rc, (long long)got, (long long)want);
}

static void assert_rejects(const char *s)
{
    int64_t got = 12345;
    int rc = cr_duration_parse(s, &got);
    if (rc != CR_EBAD)
        fail_msg("\"%s\" accepted as %lld", s, (long long)got);
    assert_int_equal(got, 12345); /* untouched on failure */
}

static void test_simple_units_scale_to_nanoseconds(void **state)
{
    (void)state;
    assert_parses("5ns", 5);
    assert_parses("5us", 5 * US);
    assert_parses("5\xc2\xb5s", 5 * US); /* micro sign */
    assert_parses("5\xce\xbcs", 5 * US); /* Greek mu */
    assert_parses("500ms", 500 * MS);
    assert_parses("120s", 120 * S);
    assert_parses("5m", 5 * M);
    assert_parses("2h", 2 * H);
}

static void test_zero_needs_no_unit(void **state)
{
    (void)state;
    assert_parses("0", 0);
    assert_parses("-0", 0);
    assert_parses("+0", 0);
    assert_parses("0s", 0);
    assert_parses("0.0s", 0);
}

static void test_sequences_add_up(void **state)
{
    (void)state;
    assert_parses("1h30m", H + 30 * M);
    assert_parses("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6);
    assert_parses("3s1h", H + 3 * S);
    assert_parses("1m1m", 2 * M);
}

static void test_fractions_are_exact_where_go_is(void **state)
{
    (void)state;
    assert_parses("1.5h", H + 30 * M);
    assert_parses(".5s", 500 * MS);
    assert_parses("5.s", 5 * S);
    assert_parses("1.004s", 1004 * MS);
    assert_parses("100.00100s", 100 * S + 1 * MS);
    assert_parses("0.3333333333333333333h", 20 * M);
    assert_parses("1.0000000000000000000000001s", S);
}

static void test_signs_apply_to_the_whole_value(void **state)
{
    (void)state;
    assert_parses("-5s", -5 * S);
    assert_parses("+5s", 5 * S);
    assert_parses("-1.5h", -(H + 30 * M));
    assert_parses("-1h30m", -(H + 30 * M));
}

static void test_extremes_parse_and_one_more_overflows(void **state)
{
    (void)state;
    assert_parses("9223372036854775807ns", INT64_MAX);
    assert_parses("-9223372036854775808ns", INT64_MIN);
    assert_parses("2562047h", 2562047 * H);
    assert_rejects("9223372036854775808ns");
    assert_rejects("-9223372036854775809ns");
    assert_rejects("2562048h");
    assert_parses("9223372036s854775807ns", INT64_MAX);
    assert_rejects("9223372036s854775808ns");
    assert_rejects("99999999999999999999999s");
    assert_rejects("9223372036854775807ns1ns");
}

static void test_malformed_durations_are_rejected(void **state)
{
    (void)state;
    assert_rejects("");
    assert_rejects("-");
    assert_rejects("+");
    assert_rejects("5");          /* a number needs a unit */
    assert_rejects("1.5");
    assert_rejects("5x");
    assert_rejects("5 s");
    assert_rejects(" 5s");
    assert_rejects("5s ");
    assert_rejects(".");
    assert_rejects(".s");
    assert_rejects("s");
    assert_rejects("5S");         /* units are case-sensitive */
    assert_rejects("5sec");
    assert_rejects("1h-30m");
    assert_rejects("--5s");
    assert_rejects("5\xc2s");     /* truncated UTF-8 */
    assert_rejects("0x10s");
}

static void test_null_arguments_are_rejected(void **state)
{
    (void)state;
    int64_t ns;
    assert_int_equal(cr_duration_parse(NULL, &ns), CR_EBAD);
    assert_int_equal(cr_duration_parse("5s", NULL), CR_EBAD);
}

static void test_lb_algo_names_round_trip(void **state)
{
    (void)state;
    cr_lb_algo_t a = CR_LB_LEAST_CONNECTION;
    assert_int_equal(cr_lb_algo_parse("round-robin", &a), 0);
    assert_int_equal(a, CR_LB_ROUND_ROBIN);
    assert_string_equal(cr_lb_algo_name(a), "round-robin");
    assert_int_equal(cr_lb_algo_parse("least-connection", &a), 0);
    assert_int_equal(a, CR_LB_LEAST_CONNECTION);
    assert_string_equal(cr_lb_algo_name(a), "least-connection");
}

static void test_lb_algo_rejects_unknown_names(void **state)
{
    (void)state;
    cr_lb_algo_t a = CR_LB_LEAST_CONNECTION;
    assert_int_equal(cr_lb_algo_parse("random", &a), CR_EBAD);
    assert_int_equal(cr_lb_algo_parse("Round-Robin", &a), CR_EBAD);
    assert_int_equal(cr_lb_algo_parse("round_robin", &a), CR_EBAD);
    assert_int_equal(cr_lb_algo_parse("", &a), CR_EBAD);
    assert_int_equal(cr_lb_algo_parse(NULL, &a), CR_EBAD);
    assert_int_equal(a, CR_LB_LEAST_CONNECTION);
    assert_string_equal(cr_lb_algo_name((cr_lb_algo_t)42), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_units_scale_to_nanoseconds),
        cmocka_unit_test(test_zero_needs_no_unit),
        cmocka_unit_test(test_sequences_add_up),
        cmocka_unit_test(test_fractions_are_exact_where_go_is),
        cmocka_unit_test(test_signs_apply_to_the_whole_value),
        cmocka_unit_test(test_extremes_parse_and_one_more_overflows),
        cmocka_unit_test(test_malformed_durations_are_rejected),
        cmocka_unit_test(test_null_arguments_are_rejected),
        cmocka_unit_test(test_lb_algo_names_round_trip),
        cmocka_unit_test(test_lb_algo_rejects_unknown_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
