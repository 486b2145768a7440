/* test/unit/common/test_uuid.c - UUIDv4 format and uniqueness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/uuid.h"

static void test_uuid4_has_version_and_variant_bits(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++) {
        char id[CR_UUID_STR_LEN + 1];
        cr_uuid4(id);
        assert_int_equal(strlen(id), CR_UUID_STR_LEN);
        assert_int_equal(id[8], '-');
        assert_int_equal(id[13], '-');
        assert_int_equal(id[18], '-');
        assert_int_equal(id[23], '-');
        assert_int_equal(id[14], '4');
        assert_non_null(strchr("89ab", id[19]));
        for (int j = 0; j < CR_UUID_STR_LEN; j++) {
            if (j == 8 || j == 13 || j == 18 || j == 23)
                continue;
            assert_true(isxdigit((unsigned char)id[j]) && !isupper((unsigned char)id[j]));
        }
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_uuid4_does_not_repeat_over_many_calls(void **state)
{
    (void)state;
    enum { N = 20000 };
    char (*ids)[CR_UUID_STR_LEN + 1] = malloc(sizeof(*ids) * N);
    for (int i = 0; i < N; i++)
        cr_uuid4(ids[i]);
    qsort(ids, N, sizeof(*ids), cmp_str);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    free(ids);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid4_has_version_and_variant_bits),
        cmocka_unit_test(test_uuid4_does_not_repeat_over_many_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
