/* test/fuzz/fuzz_cookie.c - libFuzzer target for Cookie iteration and Set-Cookie parsing.
 *
 * The input is used as a Cookie header value and as a Set-Cookie value. Every
 * returned slice must lie inside the input; a cookie name is never empty and
 * neither names nor values contain ';'; cr_cookie_find() must return the
 * first pair that iteration yields for that name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/cookie.h"

static int in(const char *p, size_t len, const char *base, size_t size)
{
    return len == 0 || (p >= base && p + len <= base + size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    const char *pos = buf, *end = buf + size;
    cr_cookie_t c, first = { 0 }, found;
    size_t n = 0;
    while (cr_cookie_next(&pos, end, &c)) {
        if (c.name_len == 0 || !in(c.name, c.name_len, buf, size) ||
            !in(c.value, c.value_len, buf, size) || memchr(c.name, ';', c.name_len) ||
            (c.value_len && memchr(c.value, ';', c.value_len)) || pos > end)
            abort();
        if (n++ == 0)
            first = c;
        if (n > size)
            abort();
    }
    cr_http_header_t h = { .name = "Cookie", .name_len = 6, .value = buf, .value_len = (uint32_t)size };
    if (n > 0) {
        if (!cr_cookie_find(&h, 1, first.name, first.name_len, &found) ||
            found.value != first.value || found.value_len != first.value_len)
            abort();
    }

    cr_set_cookie_t sc;
    if (cr_set_cookie_parse(buf, size, &sc) == 0) {
        if (sc.cookie.name_len == 0 || !in(sc.cookie.name, sc.cookie.name_len, buf, size) ||
            !in(sc.cookie.value, sc.cookie.value_len, buf, size) ||
            (sc.expires && !in(sc.expires, sc.expires_len, buf, size)) ||
            (sc.path && !in(sc.path, sc.path_len, buf, size)) ||
            (sc.domain && !in(sc.domain, sc.domain_len, buf, size)) ||
            sc.same_site > CR_SAMESITE_NONE)
            abort();
    }
    return 0;
}
