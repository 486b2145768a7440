/* test/unit/router/test_pipe_limit.c - how many splice pipes a worker may hold.
 *
 * cr_pipe_limit (router/splice.c) sizes each worker's pipe cap from the
 * soft RLIMIT_NOFILE: pipes may take a quarter of the descriptors, two per
 * pipe, shared by the workers, and never more than CR_PIPES_PER_WORKER.
 * Beyond the cap bodies are copied, so a low fd limit costs speed, never
 * accepted connections.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "router/internal.h"

static void test_a_quarter_of_the_fds_shared_by_workers(void **state)
{
    (void)state;
    assert_int_equal(cr_pipe_limit(1024, 1), 128);  /* 256 fds of 1,024 */
    assert_int_equal(cr_pipe_limit(1024, 2), 64);   /* 2 x 64 pipes = 256 fds */
    assert_int_equal(cr_pipe_limit(4096, 4), 128);
    assert_int_equal(cr_pipe_limit(7, 1), 0);       /* too few fds: always copy */
}

static void test_capped_at_pipes_per_worker(void **state)
{
    (void)state;
    assert_int_equal(cr_pipe_limit(1048576, 2), CR_PIPES_PER_WORKER);
    assert_int_equal(cr_pipe_limit(UINT64_MAX, 1), CR_PIPES_PER_WORKER); /* RLIM_INFINITY */
    assert_int_equal(cr_pipe_limit(8192, 1), CR_PIPES_PER_WORKER);       /* exactly 1,024 */
}

static void test_zero_workers_counts_as_one(void **state)
{
    (void)state;
    assert_int_equal(cr_pipe_limit(1024, 0), 128);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_quarter_of_the_fds_shared_by_workers),
        cmocka_unit_test(test_capped_at_pipes_per_worker),
        cmocka_unit_test(test_zero_workers_counts_as_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
