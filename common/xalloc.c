/* common/xalloc.c - malloc wrappers that never return NULL (see xalloc.h). */
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t size)
{
    fprintf(stderr, "crouter: out of memory allocating %zu bytes\n", size);
    abort();
}

void *cr_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

void *cr_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        out_of_memory(nmemb * size);
    return p;
}

void *cr_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

char *cr_xstrdup(const char *s)
{
    return cr_xmemdup0(s, strlen(s));
}

char *cr_xstrndup(const char *s, size_t n)
{
    return cr_xmemdup0(s, strnlen(s, n));
}

char *cr_xmemdup0(const void *mem, size_t len)
{
    char *p = cr_xmalloc(len + 1);
    memcpy(p, mem, len);
    p[len] = '\0';
    return p;
}
