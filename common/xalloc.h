/* common/xalloc.h - allocation that logs and aborts on out-of-memory.
 *
 * With these, error paths are about I/O and bad input, not about malloc.
 * Every returned pointer is owned by the caller and freed with free().
 */
#ifndef CR_COMMON_XALLOC_H
#define CR_COMMON_XALLOC_H

#include <stddef.h>

void *cr_xmalloc(size_t size);
void *cr_xcalloc(size_t nmemb, size_t size);
void *cr_xrealloc(void *ptr, size_t size);
char *cr_xstrdup(const char *s);
char *cr_xstrndup(const char *s, size_t n);
/* Duplicates len bytes of mem and appends a NUL. */
char *cr_xmemdup0(const void *mem, size_t len);

#endif
