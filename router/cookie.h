/* router/cookie.h - Cookie and Set-Cookie parsing (RFC 6265, browser-lenient).
 *
 * Zero-copy: results are slices of the header values. Cookie lists are split
 * on ';', names and values trimmed, a quoted value has its quotes removed;
 * a pair without '=' is skipped. Pure functions; any thread.
 */
#ifndef CR_ROUTER_COOKIE_H
#define CR_ROUTER_COOKIE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "router/http1.h"

typedef struct cr_cookie {
    const char *name;
    const char *value;
    size_t name_len;
    size_t value_len;
} cr_cookie_t;

/* Walks a Cookie header value: *pos starts at the value, end is its end.
 * Returns true with the next pair, false at the end. */
bool cr_cookie_next(const char **pos, const char *end, cr_cookie_t *out);

/* The first cookie called name (case-sensitive) over all Cookie headers in
 * order; false when absent. */
bool cr_cookie_find(const cr_http_header_t *headers, uint32_t n, const char *name,
                    size_t name_len, cr_cookie_t *out);

typedef enum {
    CR_SAMESITE_UNSET = 0,        /* absent or an unknown value (omitted on output) */
    CR_SAMESITE_LAX,
    CR_SAMESITE_STRICT,
    CR_SAMESITE_NONE,
} cr_samesite_t;

typedef struct cr_set_cookie {
    cr_cookie_t cookie;           /* name and value */
    const char *expires;          /* raw Expires value or NULL */
    const char *path;
    const char *domain;
    size_t expires_len, path_len, domain_len;
    int64_t max_age;              /* with has_max_age */
    bool has_max_age;
    bool secure;
    bool http_only;
    bool partitioned;
    cr_samesite_t same_site;
} cr_set_cookie_t;

/* Parses one Set-Cookie value. Returns 0, or CR_EBAD when it has no
 * "name=" part. Attribute names match case-insensitively. */
int cr_set_cookie_parse(const char *value, size_t len, cr_set_cookie_t *out);

#endif
