/* router/sticky.c - gorouter's session affinity: JSESSIONID + __VCAP_ID__.
 *
 * Request side (gorouter's handlers/helpers.go GetStickySession): one walk
 * over the Cookie headers finds the first __VCAP_ID__ and whether any
 * configured session cookie is present. With
 * sticky_sessions_for_auth_negotiate and an Authorization header starting
 * "negotiate" (any case), __VCAP_ID__ alone is honoured and must be; else
 * __VCAP_ID__ counts only beside a session cookie. An empty __VCAP_ID__ is
 * no request for an instance (gorouter's iterators skip an empty id).
 *
 * Response side (proxy_round_tripper.go setupStickySession, with the
 * current routing-release choices of issue 4):
 * - no private_instance_id on the endpoint, or the backend set __VCAP_ID__
 *   itself: nothing;
 * - negotiate mode and "WWW-Authenticate: Negotiate...": a cookie only when
 *   the request named no instance or another one, with Max-Age=60 and
 *   SameSite=Strict; session cookies in the response are ignored;
 * - else the FIRST Set-Cookie with a session cookie name: a cookie mirroring
 *   its Secure, SameSite, Expires, Partitioned and Max-Age (any sign; Go
 *   writes a deletion as Max-Age=0), so deleting the session deletes
 *   __VCAP_ID__ too;
 * - else, when the request named an instance and another served it
 *   (failover): a cookie with default attributes;
 * - else nothing (a sticky hit without a session cookie, or plain traffic).
 * Always HttpOnly; Path is the route's context path or "/"; secure_cookies
 * forces Secure, and so does TLS for a failover cookie.
 *
 * Everything copied into the header is filtered as Go's net/http does:
 * the value keeps only cookie-octets plus space and comma (0x20-0x7E
 * without DQUOTE, ';' and '\\') and is quoted when it holds a space or a
 * comma, so an id still round-trips through a browser; Path and Expires
 * keep 0x20-0x7E without ';'. No byte can end the attribute or the line.
 * Pure functions; any thread.
 */
#include "router/sticky.h"

#include <string.h>

#include "common/defs.h"
#include "router/cookie.h"

#define NEGOTIATE_MAX_AGE_S 60

void cr_sticky_config_from(const cr_config_t *cfg, cr_sticky_config_t *out)
{
    out->cookie_names = cfg->sticky_session_cookie_names;
    out->cookie_names_len = cfg->sticky_session_cookie_names_len;
    out->auth_negotiate = cfg->sticky_sessions_for_auth_negotiate;
    out->secure_cookies = cfg->secure_cookies;
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* s[0..len) is at least as long as the lower-case literal and starts with
 * it, ignoring case. */
static bool istarts(const char *s, size_t len, const char *lit, size_t lit_len)
{
    if (len < lit_len)
        return false;
    for (size_t i = 0; i < lit_len; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

static bool name_is(const cr_http_header_t *h, const char *lit, size_t lit_len)
{
    return h->name_len == lit_len && istarts(h->name, h->name_len, lit, lit_len);
}

#define NAME_IS(h, lit) name_is((h), (lit), sizeof(lit) - 1)

static bool is_vcap(const char *name, size_t len)
{
    return len == sizeof(CR_VCAP_COOKIE) - 1 && memcmp(name, CR_VCAP_COOKIE, len) == 0;
}

static bool is_session_name(const cr_sticky_config_t *cfg, const char *name, size_t len)
{
    for (size_t i = 0; i < cfg->cookie_names_len; i++) {
        const char *n = cfg->cookie_names[i];
        if (n && n[0] == name[0] && strlen(n) == len && memcmp(n, name, len) == 0)
            return true;
    }
    return false;
}

void cr_sticky_from_request(const cr_sticky_config_t *cfg, const cr_http_request_t *req,
                            cr_sticky_request_t *out)
{
    memset(out, 0, sizeof(*out));
    cr_cookie_t vcap = {0};
    bool have_vcap = false, have_session = false;
    const cr_http_header_t *auth = NULL;

    for (uint32_t i = 0; i < req->headers_len; i++) {
        const cr_http_header_t *h = &req->headers[i];
        if (NAME_IS(h, "cookie")) {
            if (have_vcap && have_session)
                continue;
            const char *pos = h->value, *end = h->value + h->value_len;
            cr_cookie_t c;
            while (cr_cookie_next(&pos, end, &c)) {
                if (is_vcap(c.name, c.name_len)) {
                    if (!have_vcap) {
                        vcap = c;
                        have_vcap = true;
                    }
                } else if (!have_session && is_session_name(cfg, c.name, c.name_len)) {
                    have_session = true;
                }
                if (have_vcap && have_session)
                    break;
            }
        } else if (!auth && NAME_IS(h, "authorization")) {
            auth = h;
        }
    }
    if (!have_vcap || vcap.value_len == 0)
        return;
    if (cfg->auth_negotiate && auth && istarts(auth->value, auth->value_len, "negotiate", 9)) {
        out->instance_id = vcap.value;
        out->instance_id_len = vcap.value_len;
        out->must_be_sticky = true;
        return;
    }
    if (have_session) {
        out->instance_id = vcap.value;
        out->instance_id_len = vcap.value_len;
    }
}

/* --- response ----------------------------------------------------------- */

typedef struct out {
    char *p;
    char *end;
    bool overflow;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (CR_UNLIKELY((size_t)(o->end - o->p) < n)) {
        o->overflow = true;
        o->p = o->end;
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static void put_byte(out_t *o, char c)
{
    if (CR_UNLIKELY(o->p == o->end)) {
        o->overflow = true;
        return;
    }
    *o->p++ = c;
}

/* Go's validCookieValueByte. */
static inline bool value_byte_ok(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != ';' && c != '\\';
}

/* Go's validCookiePathByte; also used for the copied Expires. */
static inline bool attr_byte_ok(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != ';';
}

/* Writes the filtered cookie value, quoted when it holds a space or a
 * comma. Returns the number of value bytes kept. */
static size_t put_value(out_t *o, const char *v)
{
    size_t kept = 0;
    bool quote = false;
    for (const char *s = v; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (value_byte_ok(c)) {
            kept++;
            quote = quote || c == ' ' || c == ',';
        }
    }
    if (kept == 0)
        return 0;
    if (quote)
        put_byte(o, '"');
    for (const char *s = v; *s; s++)
        if (value_byte_ok((unsigned char)*s))
            put_byte(o, *s);
    if (quote)
        put_byte(o, '"');
    return kept;
}

static void put_attr(out_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (attr_byte_ok((unsigned char)s[i]))
            put_byte(o, s[i]);
}

static void put_int(out_t *o, int64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    put(o, tmp + i, sizeof(tmp) - i);
}

/* The name of a Set-Cookie value ("name=..."), trimmed; false when there is
 * no '=' before the first ';' (Go ignores such a header). */
static bool set_cookie_name(const cr_http_header_t *h, const char **name, size_t *len)
{
    const char *s = h->value, *end = h->value + h->value_len;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    const char *e = s;
    while (e < end && *e != '=' && *e != ';')
        e++;
    if (e == end || *e != '=')
        return false;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (e == s)
        return false;
    *name = s;
    *len = (size_t)(e - s);
    return true;
}

typedef struct attrs {
    const char *expires;
    size_t expires_len;
    int64_t max_age;
    bool has_max_age;
    bool secure;
    bool partitioned;
    cr_samesite_t same_site;
} attrs_t;

int cr_sticky_response_cookie(const cr_sticky_response_ctx_t *ctx, char *buf, size_t cap)
{
    const cr_sticky_config_t *cfg = ctx->cfg;
    const cr_endpoint_t *ep = ctx->endpoint;
    if (!ep || !ep->private_instance_id || !ep->private_instance_id[0])
        return 0;
    const char *pid = ep->private_instance_id;
    const cr_http_response_t *resp = ctx->resp;

    const char *req_id = ctx->request ? ctx->request->instance_id : NULL;
    size_t req_id_len = req_id ? ctx->request->instance_id_len : 0;
    if (req_id_len == 0)
        req_id = NULL;
    bool same_instance = req_id && strlen(pid) == req_id_len && memcmp(pid, req_id, req_id_len) == 0;

    const cr_http_header_t *www = NULL;
    bool have_session = false;
    cr_set_cookie_t session;
    for (uint32_t i = 0; i < resp->headers_len; i++) {
        const cr_http_header_t *h = &resp->headers[i];
        if (NAME_IS(h, "set-cookie")) {
            const char *name;
            size_t name_len;
            if (!set_cookie_name(h, &name, &name_len))
                continue;
            if (is_vcap(name, name_len))
                return 0; /* the backend manages __VCAP_ID__ itself */
            if (!have_session && is_session_name(cfg, name, name_len) &&
                cr_set_cookie_parse(h->value, h->value_len, &session) == 0)
                have_session = true;
        } else if (!www && NAME_IS(h, "www-authenticate")) {
            www = h;
        }
    }

    bool negotiate = cfg->auth_negotiate && www &&
                     istarts(www->value, www->value_len, "negotiate", 9);
    bool set = (negotiate || req_id) && !same_instance;
    attrs_t a = {0};
    if (negotiate) {
        a.max_age = NEGOTIATE_MAX_AGE_S;
        a.has_max_age = true;
        a.same_site = CR_SAMESITE_STRICT;
    } else if (have_session) {
        set = true;
        a.expires = session.expires;
        a.expires_len = session.expires ? session.expires_len : 0;
        a.max_age = session.max_age;
        a.has_max_age = session.has_max_age;
        a.secure = session.secure;
        a.partitioned = session.partitioned;
        a.same_site = session.same_site;
    } else if (set && ctx->over_tls) {
        a.secure = true; /* a failover cookie on a TLS request */
    }
    if (!set)
        return 0;
    if (cfg->secure_cookies)
        a.secure = true;

    out_t o = {buf, buf + cap, false};
    PUT_LIT(&o, "Set-Cookie: " CR_VCAP_COOKIE "=");
    if (put_value(&o, pid) == 0)
        return 0; /* nothing of the id survives filtering: no cookie */
    PUT_LIT(&o, "; Path=");
    const char *path = ctx->context_path && ctx->context_path[0] ? ctx->context_path : "/";
    put_attr(&o, path, strlen(path));
    if (a.expires_len) {
        PUT_LIT(&o, "; Expires=");
        put_attr(&o, a.expires, a.expires_len);
    }
    if (a.has_max_age) {
        PUT_LIT(&o, "; Max-Age=");
        put_int(&o, a.max_age); /* a deletion (0 or negative) is written as 0 */
    }
    PUT_LIT(&o, "; HttpOnly");
    if (a.secure)
        PUT_LIT(&o, "; Secure");
    switch (a.same_site) {
    case CR_SAMESITE_LAX:
        PUT_LIT(&o, "; SameSite=Lax");
        break;
    case CR_SAMESITE_STRICT:
        PUT_LIT(&o, "; SameSite=Strict");
        break;
    case CR_SAMESITE_NONE:
        PUT_LIT(&o, "; SameSite=None");
        break;
    case CR_SAMESITE_UNSET:
        break;
    }
    if (a.partitioned)
        PUT_LIT(&o, "; Partitioned");
    PUT_LIT(&o, "\r\n");
    if (o.overflow)
        return CR_ETOOBIG;
    return (int)(o.p - buf);
}
