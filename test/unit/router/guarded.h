/* test/unit/router/guarded.h - puts parser input right before an unmapped page.
 *
 * guarded_put() copies bytes so that they end exactly where a PROT_NONE page
 * begins, so a parser that reads one byte past its input faults at once even
 * without a sanitizer. The returned pointer is valid until the next call;
 * tests are single-threaded. The mapping grows as needed and is never freed
 * (the process is short-lived).
 */
#ifndef CR_TEST_GUARDED_H
#define CR_TEST_GUARDED_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char *guarded_base;
static size_t guarded_data_cap; /* bytes of the readable part */

static inline const char *guarded_put(const void *data, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (!guarded_base || len > guarded_data_cap) {
        if (guarded_base)
            munmap(guarded_base, guarded_data_cap + page);
        size_t cap = (len + page - 1) / page * page;
        if (cap == 0)
            cap = page;
        void *m = mmap(NULL, cap + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED || mprotect((char *)m + cap, page, PROT_NONE) != 0) {
            perror("guarded_put");
            abort();
        }
        guarded_base = m;
        guarded_data_cap = cap;
    }
    char *dst = guarded_base + guarded_data_cap - len;
    if (len)
        memcpy(dst, data, len);
    return dst;
}

#endif
