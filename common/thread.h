/* common/thread.h - the nice value of the calling thread only.
 *
 * Background threads that must not take CPU from the proxy workers (the
 * pruner, the /routes builder) lower their own priority. On Linux the nice
 * value is per thread: setpriority(PRIO_PROCESS) with a thread id changes
 * that thread alone, and threads it creates afterwards inherit it.
 */
#ifndef CR_COMMON_THREAD_H
#define CR_COMMON_THREAD_H

#include <stdbool.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Sets the calling thread's nice value; false when the kernel refused. */
static inline bool cr_thread_set_nice(int nice)
{
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) == 0;
}

#endif
