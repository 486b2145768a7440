/* router/rewrite.c - the heads crouter sends: request to the backend, response to the client.
 *
 * Both directions copy the parsed head line by line into the caller's
 * buffer (two memcpy per kept header), drop what must not cross the proxy
 * and append crouter's own lines; nothing is allocated and no string is
 * rebuilt. Header names are classified once each by length, then first
 * byte, then a case-insensitive compare against the few names that matter.
 *
 * Hop-by-hop (RFC 9110 7.6.1, Go's ReverseProxy): Connection, every header
 * it lists, Keep-Alive, Proxy-*, TE, Trailer, Upgrade. Exceptions: Upgrade
 * and "Connection: Upgrade" survive an upgrade; Trailer survives with a
 * chunked body, because the body (trailers included) is forwarded as is;
 * Host, Content-Length and Transfer-Encoding are never removed because the
 * client listed them, since that would change the framing the backend sees
 * (Go keeps them outside its header map for the same reason). A TE that
 * lists "trailers" is sent on as "TE: trailers", as Go does.
 *
 * Request additions, in this order after the kept headers: Host (when the
 * target was absolute-form: its authority replaces any Host header the
 * client sent, as RFC 9112 3.2.2 requires of a proxy), X-Forwarded-For
 * (every client X-Forwarded-For value joined with ", ", then the client
 * address; one line), X-Forwarded-Proto and X-Request-Start when absent,
 * X-Vcap-Request-Id, X-CF-ApplicationID, X-CF-InstanceIndex,
 * X-CF-InstanceID, then Connection. The request line is sent as received
 * (an absolute-form target reduced to its origin-form path and query) but
 * always as HTTP/1.1. Endpoint fields come from NATS messages and are
 * copied without control bytes, so a registration cannot inject lines.
 * Session persistence edits one cookie of the Cookie headers on the way
 * (crouter's own cookie removed, or the identity prefix cut off the app's
 * session cookie) in the same copying pass, and may leave out response
 * headers (each Set-Cookie it replaces with its own line).
 *
 * Pure functions; any thread.
 */
#include "router/rewrite.h"

#include <limits.h>
#include <string.h>

#include "common/defs.h"

/* --- bounded output ---------------------------------------------------- */

typedef struct out {
    char *p;
    char *end;
    bool overflow;
} out_t;

static inline void put(out_t *o, const char *s, size_t n)
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

static void put_cstr(out_t *o, const char *s)
{
    if (s)
        put(o, s, strlen(s));
}

/* Copies a NUL-terminated value from outside the parsed head (the
 * registry), dropping control bytes and DEL. */
static void put_clean(out_t *o, const char *s)
{
    if (!s)
        return;
    size_t n = 0;
    while ((unsigned char)s[n] >= 0x20 && s[n] != 0x7f)
        n++;
    if (CR_LIKELY(s[n] == '\0')) {
        put(o, s, n); /* the usual case: nothing to drop */
        return;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            continue;
        if (CR_UNLIKELY(o->p == o->end)) {
            o->overflow = true;
            return;
        }
        *o->p++ = (char)c;
    }
}

static void put_uint(out_t *o, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(o, tmp + i, sizeof(tmp) - i);
}

static inline void put_header(out_t *o, const cr_http_header_t *h)
{
    size_t need = (size_t)h->name_len + 2 + h->value_len + 2;
    if (CR_UNLIKELY((size_t)(o->end - o->p) < need)) {
        o->overflow = true;
        o->p = o->end;
        return;
    }
    memcpy(o->p, h->name, h->name_len);
    o->p += h->name_len;
    *o->p++ = ':';
    *o->p++ = ' ';
    if (h->value_len)
        memcpy(o->p, h->value, h->value_len);
    o->p += h->value_len;
    *o->p++ = '\r';
    *o->p++ = '\n';
}

static int finish(const out_t *o, const char *start)
{
    if (o->overflow)
        return CR_ETOOBIG;
    return (int)(o->p - start);
}

/* --- header classification --------------------------------------------- */

typedef enum {
    H_OTHER = 0,
    H_HOST,
    H_CONTENT_LENGTH,
    H_TRANSFER_ENCODING,
    H_CONNECTION,
    H_KEEP_ALIVE,
    H_PROXY,                      /* any Proxy-* */
    H_TE,
    H_TRAILER,
    H_UPGRADE,
    H_XFF,
    H_XFP,
    H_X_REQUEST_START,
    H_X_VCAP_REQUEST_ID,
    H_X_CF_APPLICATIONID,
    H_X_CF_INSTANCEINDEX,
    H_X_CF_INSTANCEID,
    H_X_CF_APP_INSTANCE,
    H_X_CF_PROXY_SIGNATURE,
    H_COOKIE,
} hclass_t;

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* s[0..n) equals the lower-case literal lit (of length n), ignoring case. */
static inline bool ieq(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

#define IS(lit) (ieq(name, lit, sizeof(lit) - 1))

static hclass_t classify(const char *name, size_t len)
{
    if (len < 2)
        return H_OTHER;
    unsigned char c0 = lower((unsigned char)name[0]);
    if (c0 == 'x') {
        if (len < 15 || name[1] != '-')
            return H_OTHER;
        switch (len) {
        case 15:
            if (IS("x-forwarded-for"))
                return H_XFF;
            if (IS("x-request-start"))
                return H_X_REQUEST_START;
            if (IS("x-cf-instanceid"))
                return H_X_CF_INSTANCEID;
            return H_OTHER;
        case 17:
            if (IS("x-forwarded-proto"))
                return H_XFP;
            if (IS("x-vcap-request-id"))
                return H_X_VCAP_REQUEST_ID;
            if (IS("x-cf-app-instance"))
                return H_X_CF_APP_INSTANCE;
            return H_OTHER;
        case 18:
            if (IS("x-cf-applicationid"))
                return H_X_CF_APPLICATIONID;
            if (IS("x-cf-instanceindex"))
                return H_X_CF_INSTANCEINDEX;
            return H_OTHER;
        case 20:
            return IS("x-cf-proxy-signature") ? H_X_CF_PROXY_SIGNATURE : H_OTHER;
        default:
            return H_OTHER;
        }
    }
    switch (len) {
    case 2:
        return IS("te") ? H_TE : H_OTHER;
    case 4:
        return IS("host") ? H_HOST : H_OTHER;
    case 6:
        return c0 == 'c' && IS("cookie") ? H_COOKIE : H_OTHER;
    case 7:
        if (c0 == 't')
            return IS("trailer") ? H_TRAILER : H_OTHER;
        if (c0 == 'u')
            return IS("upgrade") ? H_UPGRADE : H_OTHER;
        break;
    case 10:
        if (c0 == 'c')
            return IS("connection") ? H_CONNECTION : H_OTHER;
        if (c0 == 'k')
            return IS("keep-alive") ? H_KEEP_ALIVE : H_OTHER;
        break;
    case 14:
        if (c0 == 'c' && IS("content-length"))
            return H_CONTENT_LENGTH;
        break;
    case 17:
        if (c0 == 't' && IS("transfer-encoding"))
            return H_TRANSFER_ENCODING;
        break;
    default:
        break;
    }
    if (c0 == 'p' && len > 6 && ieq(name, "proxy-", 6))
        return H_PROXY;
    return H_OTHER;
}

#undef IS

/* --- comma-separated token lists (Connection, TE) ----------------------- */

typedef struct token {
    const char *p;
    size_t len;
} token_t;

/* Next element of a "#token" list; empty elements are skipped. */
static bool next_token(const char **pos, const char *end, token_t *out)
{
    const char *s = *pos;
    for (;;) {
        while (s < end && (*s == ' ' || *s == '\t' || *s == ','))
            s++;
        if (s >= end) {
            *pos = s;
            return false;
        }
        const char *t = s;
        while (s < end && *s != ',')
            s++;
        const char *e = s;
        while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > t) {
            out->p = t;
            out->len = (size_t)(e - t);
            *pos = s;
            return true;
        }
    }
}

static bool token_is(const token_t *t, const char *lit)
{
    size_t n = strlen(lit);
    return t->len == n && ieq(t->p, lit, n);
}

#define MAX_LISTED 32

/* The header names a message's Connection headers list, beyond the
 * standard "close", "keep-alive" and "upgrade" (which are hop-by-hop or
 * handled anyway). When there are more than MAX_LISTED, the lookup walks
 * the Connection headers again. */
typedef struct listed {
    const cr_http_header_t *headers;
    uint32_t n;
    uint32_t len;
    bool spilled;
    token_t tok[MAX_LISTED];
} listed_t;

static void listed_init(listed_t *l, const cr_http_header_t *headers, uint32_t n)
{
    l->headers = headers;
    l->n = n;
    l->len = 0;
    l->spilled = false;
    for (uint32_t i = 0; i < n; i++) {
        const cr_http_header_t *h = &headers[i];
        if (h->name_len != 10 || !ieq(h->name, "connection", 10))
            continue;
        const char *pos = h->value, *end = h->value + h->value_len;
        token_t t;
        while (next_token(&pos, end, &t)) {
            if (token_is(&t, "close") || token_is(&t, "keep-alive") || token_is(&t, "upgrade"))
                continue;
            if (l->len < MAX_LISTED)
                l->tok[l->len++] = t;
            else
                l->spilled = true;
        }
    }
}

/* Two slices of equal length n are equal ignoring ASCII case. */
static bool iequal(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

static bool listed_has(const listed_t *l, const cr_http_header_t *h)
{
    if (CR_LIKELY(l->len == 0))
        return false;
    for (uint32_t i = 0; i < l->len; i++)
        if (l->tok[i].len == h->name_len && iequal(l->tok[i].p, h->name, h->name_len))
            return true;
    if (!l->spilled)
        return false;
    for (uint32_t i = 0; i < l->n; i++) {
        const cr_http_header_t *c = &l->headers[i];
        if (c->name_len != 10 || !ieq(c->name, "connection", 10))
            continue;
        const char *pos = c->value, *end = c->value + c->value_len;
        token_t t;
        while (next_token(&pos, end, &t))
            if (t.len == h->name_len && iequal(t.p, h->name, h->name_len))
                return true;
    }
    return false;
}

/* A header that a client may not remove by listing it in Connection. */
static bool framing_class(hclass_t c)
{
    return c == H_HOST || c == H_CONTENT_LENGTH || c == H_TRANSFER_ENCODING;
}

static bool te_lists_trailers(const cr_http_header_t *h)
{
    const char *pos = h->value, *end = h->value + h->value_len;
    token_t t;
    while (next_token(&pos, end, &t)) {
        /* "trailers" may carry no parameters; compare the bare token. */
        if (token_is(&t, "trailers"))
            return true;
    }
    return false;
}

/* --- session persistence cookie edits --------------------------------------- */

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* Whether v[0..n) starts with a prefix-mode identity: 11 base64url
 * characters and '~' (router/persistence.h). */
static bool has_id_prefix(const char *v, size_t n)
{
    if (n < 12 || v[11] != '~')
        return false;
    for (int i = 0; i < 11; i++)
        if (!is_b64url(v[i]))
            return false;
    return true;
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A Cookie header with rw's cookie edited: pairs named rw->cookie_name are
 * left out with the separator before them (cookie_strip; a first pair takes
 * the one after it instead) or lose their identity prefix
 * (cookie_unprefix); every other byte goes as sent, so a header without
 * such a pair is copied unchanged. The header is left out when no pair
 * remains. */
static void put_cookie_edited(out_t *o, const cr_http_header_t *h, const cr_request_rewrite_t *rw)
{
    char *mark = o->p;
    const bool was_overflow = o->overflow;
    put(o, h->name, h->name_len);
    PUT_LIT(o, ": ");
    size_t kept = 0;
    const char *p = h->value, *end = h->value + h->value_len;
    const char *from = p;         /* first byte of the value not yet written */
    const char *kept_end = NULL;  /* end of the last pair kept */
    bool skip_to_next = false;    /* a leading pair was left out: start at the next kept one */
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *s = p, *e = semi ? semi : end;
        p = semi ? semi + 1 : end;
        while (s < e && is_ows(*s))
            s++;
        while (e > s && is_ows(e[-1]))
            e--;
        if (s == e)
            continue;
        const char *eq = memchr(s, '=', (size_t)(e - s));
        bool match = false;
        const char *val = e;
        if (eq) {
            const char *ne = eq;
            while (ne > s && is_ows(ne[-1]))
                ne--;
            match = (size_t)(ne - s) == rw->cookie_name_len &&
                    memcmp(s, rw->cookie_name, rw->cookie_name_len) == 0;
            val = eq + 1;
            while (val < e && is_ows(*val))
                val++;
        }
        if (match && rw->cookie_strip) {
            if (!kept_end) {
                skip_to_next = true;
            } else {
                if (from < kept_end)
                    put(o, from, (size_t)(kept_end - from));
                from = e;
            }
            continue;
        }
        if (skip_to_next) {
            from = s;
            skip_to_next = false;
        }
        kept++;
        kept_end = e;
        if (match && rw->cookie_unprefix) {
            const char *v = val < e && *val == '"' ? val + 1 : val;
            if (has_id_prefix(v, (size_t)(e - v))) {
                put(o, from, (size_t)(v - from));
                from = v + 12;
            }
        }
    }
    if (kept == 0) {
        /* Only the name was written: take it back. */
        o->p = mark;
        o->overflow = was_overflow;
        return;
    }
    if (from < end)
        put(o, from, (size_t)(end - from));
    PUT_LIT(o, "\r\n");
}

/* --- request ------------------------------------------------------------ */

int cr_rewrite_request_head(const cr_request_rewrite_t *rw, char *buf, size_t cap)
{
    const cr_http_request_t *req = rw->req;
    if (cap > INT_MAX)
        cap = INT_MAX;
    out_t o = {buf, buf + cap, false};
    const cr_http_header_t *hs = req->headers;
    const uint32_t n = req->headers_len;
    const bool chunked = req->body_kind == CR_HTTP_BODY_CHUNKED;

    listed_t listed;
    listed_init(&listed, hs, n);

    /* An absolute-form target goes on in origin-form, with its authority
     * as the only Host (RFC 9112 3.2.2, and what Go sends): the backend
     * must see the host crouter routed by, not the client's Host header. */
    const bool absolute = req->authority != NULL;
    put(&o, req->method, req->method_len);
    PUT_LIT(&o, " ");
    if (absolute)
        put(&o, req->path, req->path_len);
    else
        put(&o, req->target, req->target_len);
    PUT_LIT(&o, " HTTP/1.1\r\n");

    bool has_xfp = false, has_start = false, te_trailers = false;
    uint32_t xff_first = UINT32_MAX, xff_count = 0;

    for (uint32_t i = 0; i < n; i++) {
        const cr_http_header_t *h = &hs[i];
        hclass_t c = classify(h->name, h->name_len);
        if (!framing_class(c) && listed_has(&listed, h))
            continue;
        switch (c) {
        case H_HOST:
            if (!absolute)
                put_header(&o, h);
            break;
        case H_OTHER:
            if (rw->drop_xfcc && h->name_len == 23 &&
                cr_http_token_eq(h->name, 23, "x-forwarded-client-cert"))
                break;
            put_header(&o, h);
            break;
        case H_CONTENT_LENGTH:
        case H_TRANSFER_ENCODING:
            put_header(&o, h);
            break;
        case H_UPGRADE:
            if (req->upgrade)
                put_header(&o, h);
            break;
        case H_TRAILER:
            if (chunked)
                put_header(&o, h);
            break;
        case H_TE:
            te_trailers = te_trailers || te_lists_trailers(h);
            break;
        case H_XFF:
            if (xff_count++ == 0)
                xff_first = i;
            break;
        case H_XFP:
            has_xfp = true;
            put_header(&o, h);
            break;
        case H_X_REQUEST_START:
            has_start = true;
            put_header(&o, h);
            break;
        case H_X_CF_PROXY_SIGNATURE:
            /* Route-service traffic; forwarded as is. */
            put_header(&o, h);
            break;
        case H_COOKIE:
            if (rw->cookie_name)
                put_cookie_edited(&o, h, rw);
            else
                put_header(&o, h);
            break;
        case H_CONNECTION:
        case H_KEEP_ALIVE:
        case H_PROXY:
        case H_X_VCAP_REQUEST_ID:
        case H_X_CF_APPLICATIONID:
        case H_X_CF_INSTANCEINDEX:
        case H_X_CF_INSTANCEID:
        case H_X_CF_APP_INSTANCE:
            break;
        }
    }

    if ((absolute || !req->has_host_header) && req->host && req->host_len) {
        PUT_LIT(&o, "Host: ");
        put(&o, req->host, req->host_len);
        PUT_LIT(&o, "\r\n");
    }

    bool have_ip = rw->client_ip && rw->client_ip[0];
    if (xff_count || have_ip) {
        PUT_LIT(&o, "X-Forwarded-For: ");
        bool first = true;
        for (uint32_t i = xff_first; xff_count && i < n; i++) {
            const cr_http_header_t *h = &hs[i];
            if (classify(h->name, h->name_len) != H_XFF || listed_has(&listed, h))
                continue;
            if (h->value_len == 0)
                continue;
            if (!first)
                PUT_LIT(&o, ", ");
            put(&o, h->value, h->value_len);
            first = false;
        }
        if (have_ip) {
            if (!first)
                PUT_LIT(&o, ", ");
            put_clean(&o, rw->client_ip);
        }
        PUT_LIT(&o, "\r\n");
    }
    if (!has_xfp) {
        if (rw->over_tls)
            PUT_LIT(&o, "X-Forwarded-Proto: https\r\n");
        else
            PUT_LIT(&o, "X-Forwarded-Proto: http\r\n");
    }
    if (rw->xfcc_value) {
        PUT_LIT(&o, "X-Forwarded-Client-Cert: ");
        put(&o, rw->xfcc_value, rw->xfcc_value_len);
        PUT_LIT(&o, "\r\n");
    }
    if (!has_start) {
        PUT_LIT(&o, "X-Request-Start: ");
        put_uint(&o, rw->received_at_ms > 0 ? (uint64_t)rw->received_at_ms : 0);
        PUT_LIT(&o, "\r\n");
    }
    if (rw->request_id) {
        PUT_LIT(&o, "X-Vcap-Request-Id: ");
        put_clean(&o, rw->request_id);
        PUT_LIT(&o, "\r\n");
    }
    const cr_endpoint_t *ep = rw->endpoint;
    if (ep) {
        PUT_LIT(&o, "X-CF-ApplicationID: ");
        put_clean(&o, ep->app);
        PUT_LIT(&o, "\r\nX-CF-InstanceIndex: ");
        put_clean(&o, ep->private_instance_index);
        PUT_LIT(&o, "\r\nX-CF-InstanceID: ");
        put_clean(&o, ep->private_instance_id && ep->private_instance_id[0]
                          ? ep->private_instance_id
                          : ep->addr);
        PUT_LIT(&o, "\r\n");
    }
    if (te_trailers && !req->upgrade)
        PUT_LIT(&o, "TE: trailers\r\n");
    if (req->upgrade)
        PUT_LIT(&o, "Connection: Upgrade\r\n");
    else if (!rw->upstream_keep_alive)
        PUT_LIT(&o, "Connection: close\r\n");
    PUT_LIT(&o, "\r\n");
    return finish(&o, buf);
}

/* --- response ----------------------------------------------------------- */

static const char *status_text(unsigned status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Request Entity Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "";
    }
}

int cr_rewrite_response_head(const cr_response_rewrite_t *rw, char *buf, size_t cap)
{
    const cr_http_response_t *resp = rw->resp;
    if (cap > INT_MAX)
        cap = INT_MAX;
    out_t o = {buf, buf + cap, false};
    const cr_http_header_t *hs = resp->headers;
    const uint32_t n = resp->headers_len;
    const bool chunked = resp->body_kind == CR_HTTP_BODY_CHUNKED;

    listed_t listed;
    listed_init(&listed, hs, n);

    if (rw->client_version_minor == 0)
        PUT_LIT(&o, "HTTP/1.0 ");
    else
        PUT_LIT(&o, "HTTP/1.1 ");
    char code[3] = {(char)('0' + resp->status / 100 % 10), (char)('0' + resp->status / 10 % 10),
                    (char)('0' + resp->status % 10)};
    put(&o, code, 3);
    PUT_LIT(&o, " ");
    if (resp->reason_len)
        put(&o, resp->reason, resp->reason_len);
    else
        put_cstr(&o, status_text(resp->status));
    PUT_LIT(&o, "\r\n");

    bool has_request_id = false;
    for (uint32_t i = 0; i < n; i++) {
        const cr_http_header_t *h = &hs[i];
        if (CR_UNLIKELY(rw->drop_mask && (rw->drop_mask[i / 64] >> (i % 64) & 1)))
            continue;
        hclass_t c = classify(h->name, h->name_len);
        if (!framing_class(c) && listed_has(&listed, h))
            continue;
        switch (c) {
        case H_CONNECTION:
        case H_UPGRADE:
            if (rw->upgrade)
                put_header(&o, h);
            break;
        case H_TRAILER:
            if (chunked)
                put_header(&o, h);
            break;
        case H_KEEP_ALIVE:
        case H_PROXY:
        case H_TE:
        case H_X_CF_PROXY_SIGNATURE:
            break;
        case H_X_VCAP_REQUEST_ID:
            has_request_id = true;
            put_header(&o, h);
            break;
        default:
            put_header(&o, h);
            break;
        }
    }
    if (!has_request_id && rw->request_id) {
        PUT_LIT(&o, "X-Vcap-Request-Id: ");
        put_clean(&o, rw->request_id);
        PUT_LIT(&o, "\r\n");
    }
    if (!rw->upgrade) {
        if (!rw->client_keep_alive)
            PUT_LIT(&o, "Connection: close\r\n");
        else if (rw->client_version_minor == 0)
            PUT_LIT(&o, "Connection: keep-alive\r\n");
    }
    if (rw->extra && rw->extra_len)
        put(&o, rw->extra, rw->extra_len);
    PUT_LIT(&o, "\r\n");
    return finish(&o, buf);
}
