/* common/clock.h - monotonic and wall-clock time in nanoseconds.
 *
 * Modules that need testable time take "now" as a parameter instead of
 * calling these (the registry's pruner does), so tests use a fake clock.
 */
#ifndef CR_COMMON_CLOCK_H
#define CR_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t cr_now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t cr_now_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif
