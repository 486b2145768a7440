/* router/cookie.c - Cookie and Set-Cookie parsing (RFC 6265, browser-lenient).
 *
 * Everything is a slice of the caller's header value, so a value of any size
 * works without a buffer. Cookie lists follow what browsers send and Go's
 * net/http reads: pairs split on ';', names and values trimmed of SP/HTAB,
 * one pair of surrounding double quotes removed from a value, a pair with no
 * '=' or an empty name skipped. Set-Cookie attributes match case-insensitively
 * and a later attribute overrides an earlier one (RFC 6265 5.3). Pure
 * functions; any thread.
 */
#include "router/cookie.h"

#include <string.h>

#include "common/defs.h"

static inline bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, const char **e)
{
    while (*s < *e && is_ws(**s))
        (*s)++;
    while (*e > *s && is_ws((*e)[-1]))
        (*e)--;
}

static void unquote(const char **s, const char **e)
{
    if (*e - *s >= 2 && **s == '"' && (*e)[-1] == '"') {
        (*s)++;
        (*e)--;
    }
}

/* Splits "name=value" in [s, e) into trimmed slices; false without '=' or
 * with an empty name. */
static bool split_pair(const char *s, const char *e, cr_cookie_t *out)
{
    if (s == e)
        return false;
    const char *eq = memchr(s, '=', (size_t)(e - s));
    if (!eq)
        return false;
    const char *ns = s, *ne = eq, *vs = eq + 1, *ve = e;
    trim(&ns, &ne);
    if (ns == ne)
        return false;
    trim(&vs, &ve);
    unquote(&vs, &ve);
    out->name = ns;
    out->name_len = (size_t)(ne - ns);
    out->value = vs;
    out->value_len = (size_t)(ve - vs);
    return true;
}

bool cr_cookie_next(const char **pos, const char *end, cr_cookie_t *out)
{
    const char *p = *pos;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;
        bool ok = split_pair(p, stop, out);
        p = semi ? semi + 1 : end;
        if (ok) {
            *pos = p;
            return true;
        }
    }
    *pos = end;
    return false;
}

bool cr_cookie_find(const cr_http_header_t *headers, uint32_t n, const char *name,
                    size_t name_len, cr_cookie_t *out)
{
    for (uint32_t i = 0; i < n; i++) {
        const cr_http_header_t *h = &headers[i];
        if (!cr_http_token_eq(h->name, h->name_len, "cookie"))
            continue;
        const char *pos = h->value, *end = h->value + h->value_len;
        cr_cookie_t c;
        while (cr_cookie_next(&pos, end, &c)) {
            if (c.name_len == name_len && memcmp(c.name, name, name_len) == 0) {
                *out = c;
                return true;
            }
        }
    }
    return false;
}

/* Max-Age: optional '-' then 1*DIGIT that fits an int64; false otherwise. */
static bool parse_max_age(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (len > 0 && s[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i == len)
        return false;
    int64_t v = 0;
    for (; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (INT64_MAX - (int64_t)d) / 10)
            return false;
        v = v * 10 + (int64_t)d;
    }
    *out = neg ? -v : v;
    return true;
}

static void on_attribute(cr_set_cookie_t *sc, const char *ks, const char *ke, const char *vs,
                         const char *ve)
{
    size_t klen = (size_t)(ke - ks), vlen = (size_t)(ve - vs);
    if (cr_http_token_eq(ks, klen, "expires")) {
        sc->expires = vs;
        sc->expires_len = vlen;
    } else if (cr_http_token_eq(ks, klen, "max-age")) {
        int64_t v;
        if (parse_max_age(vs, vlen, &v)) {
            sc->max_age = v;
            sc->has_max_age = true;
        }
    } else if (cr_http_token_eq(ks, klen, "path")) {
        sc->path = vs;
        sc->path_len = vlen;
    } else if (cr_http_token_eq(ks, klen, "domain")) {
        sc->domain = vs;
        sc->domain_len = vlen;
    } else if (cr_http_token_eq(ks, klen, "secure")) {
        sc->secure = true;
    } else if (cr_http_token_eq(ks, klen, "httponly")) {
        sc->http_only = true;
    } else if (cr_http_token_eq(ks, klen, "partitioned")) {
        sc->partitioned = true;
    } else if (cr_http_token_eq(ks, klen, "samesite")) {
        if (cr_http_token_eq(vs, vlen, "lax"))
            sc->same_site = CR_SAMESITE_LAX;
        else if (cr_http_token_eq(vs, vlen, "strict"))
            sc->same_site = CR_SAMESITE_STRICT;
        else if (cr_http_token_eq(vs, vlen, "none"))
            sc->same_site = CR_SAMESITE_NONE;
        else
            sc->same_site = CR_SAMESITE_UNSET;
    }
}

int cr_set_cookie_parse(const char *value, size_t len, cr_set_cookie_t *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = value, *end = value + len;
    if (len == 0)
        return CR_EBAD;
    const char *semi = memchr(p, ';', len);
    const char *stop = semi ? semi : end;
    if (!split_pair(p, stop, &out->cookie))
        return CR_EBAD;
    p = semi ? semi + 1 : end;
    while (p < end) {
        semi = memchr(p, ';', (size_t)(end - p));
        stop = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *ks = p, *ke = eq ? eq : stop;
        const char *vs = eq ? eq + 1 : stop, *ve = stop;
        trim(&ks, &ke);
        trim(&vs, &ve);
        if (ks < ke)
            on_attribute(out, ks, ke, vs, ve);
        p = semi ? semi + 1 : end;
    }
    return 0;
}
