/* router/errors.c - the router's own answers: one table, one writer.
 *
 * Each cr_proxy_error_t is a row holding the status, the X-Cf-Routererror
 * value, the body message and the Cache-Control gorouter sends, so the
 * response, the counter and the log line cannot disagree. The writer builds
 * the complete response in the caller's buffer with no allocation:
 *
 *   HTTP/1.1 <code> <Status Text>\r\n
 *   [Cache-Control: ...]  Content-Type  X-Content-Type-Options
 *   [X-Cf-Routererror: ...]  Date  Content-Length  [Connection: close]
 *   \r\n
 *   <code> <Status Text>: <message>\n
 *
 * The message's "%s" conversions are filled from detail: with one "%s" the
 * whole detail; with several (UNKNOWN_INSTANCE: index, guid, host) detail
 * holds the parts in order separated by NUL bytes. A NUL cannot occur in a
 * parsed header, so the separator is unambiguous. Caller-supplied text
 * (detail, reason) is sanitised: control bytes become '?', so no CR/LF
 * reaches a header or the body.
 *
 * 431 has gorouter's empty body (no Content-Type). 400 for a malformed
 * request and 431 always close the connection: the rest of the input cannot
 * be trusted to be framed. The Date header is formatted once per second per
 * thread. Any thread.
 */
#include "router/errors.h"

#include <string.h>
#include <time.h>

#include "common/defs.h"

static const cr_proxy_error_info_t error_table[CR_PERR__COUNT] = {
    [CR_PERR_NONE] = {0, "", NULL, "", NULL, "none"},
    [CR_PERR_BAD_REQUEST] = {400, "Bad Request", NULL, "malformed request", NULL, "bad_request"},
    [CR_PERR_EMPTY_HOST] = {400, "Bad Request", "empty_host", "Request had empty Host header",
                            "public,max-age=2", "empty_host"},
    [CR_PERR_INVALID_APP_INSTANCE] = {400, "Bad Request", "invalid_cf_app_instance_header",
                                      "Invalid X-CF-App-Instance Header", "no-cache, no-store",
                                      "invalid_cf_app_instance_header"},
    [CR_PERR_UNKNOWN_INSTANCE] = {400, "Bad Request", "unknown_route",
                                  "Requested instance ('%s') with guid ('%s') does not exist for "
                                  "route ('%s')",
                                  "no-cache, no-store", "unknown_instance"},
    [CR_PERR_UNKNOWN_ROUTE] = {404, "Not Found", "unknown_route",
                               "Requested route ('%s') does not exist.", "no-cache, no-store",
                               "unknown_route"},
    [CR_PERR_HEADERS_TOO_LARGE] = {431, "Request Header Fields Too Large",
                                   "max-request-size-exceeded", NULL, NULL,
                                   "max_request_size_exceeded"},
    [CR_PERR_NO_ENDPOINTS] = {503, "Service Unavailable", "no_endpoints",
                              "Requested route ('%s') has no available endpoints.",
                              "public,max-age=2", "no_endpoints"},
    [CR_PERR_CONN_LIMIT] = {503, "Service Unavailable", "Connection Limit Reached",
                            "Requested route ('%s') has reached the connection limit.", NULL,
                            "connection_limit_reached"},
    [CR_PERR_ENDPOINT_FAILURE] = {502, "Bad Gateway", "endpoint_failure",
                                  "Registered endpoint failed to handle the request.", NULL,
                                  "endpoint_failure"},
    [CR_PERR_CLIENT_CLOSED] = {499, "Client Closed Request", "endpoint_failure",
                               "client closed the connection", NULL, "client_closed"},
    [CR_PERR_SESSION_GONE] = {503, "Service Unavailable", "session_endpoint_unavailable",
                              "The endpoint of this session on route ('%s') is no longer "
                              "available.",
                              "no-cache, no-store", "session_endpoint_unavailable"},
    /* TLS to backends: gorouter's error_handler codes, each with the reason. */
    [CR_PERR_TLS_HANDSHAKE] = {525, "SSL Handshake Failed", "endpoint_failure",
                               "Registered endpoint failed to handle the request.", NULL,
                               "tls_handshake_failed"},
    [CR_PERR_TLS_UNTRUSTED] = {526, "Invalid SSL Certificate", "endpoint_failure",
                               "Registered endpoint failed to handle the request.", NULL,
                               "tls_untrusted_certificate"},
    [CR_PERR_TLS_HOSTNAME] = {503, "Service Unavailable", "endpoint_failure",
                              "Registered endpoint failed to handle the request.", NULL,
                              "tls_hostname_mismatch"},
    [CR_PERR_TLS_CERT_REQUIRED] = {496, "SSL Certificate Required", "endpoint_failure",
                                   "Registered endpoint failed to handle the request.", NULL,
                                   "tls_certificate_required"},
};

const cr_proxy_error_info_t *cr_proxy_error_info(cr_proxy_error_t err)
{
    if ((unsigned)err >= CR_PERR__COUNT)
        err = CR_PERR_NONE;
    return &error_table[err];
}

/* --- bounded output ---------------------------------------------------- */

typedef struct out {
    char *p;
    char *end;
    bool overflow;
    bool truncate;                /* on overflow, copy what fits instead of nothing */
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (CR_UNLIKELY((size_t)(o->end - o->p) < n)) {
        o->overflow = true;
        if (!o->truncate)
            return;
        n = (size_t)(o->end - o->p);
    }
    memcpy(o->p, s, n);
    o->p += n;
}

static void put_str(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Copies s with every control byte (and DEL) replaced by '?'. */
static void put_clean(out_t *o, const char *s, size_t n)
{
    if (CR_UNLIKELY((size_t)(o->end - o->p) < n)) {
        o->overflow = true;
        if (!o->truncate)
            return;
        n = (size_t)(o->end - o->p);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        o->p[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    o->p += n;
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

/* --- Date -------------------------------------------------------------- */

/* "Sun, 06 Nov 1994 08:49:37 GMT" is 29 bytes. */
#define IMF_DATE_LEN 29

static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

static void format_imf_date(time_t t, char out[IMF_DATE_LEN + 1])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    unsigned year = (unsigned)(tm.tm_year + 1900) % 10000;
    char *p = out;
    memcpy(p, days[tm.tm_wday % 7], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    put2(p, (unsigned)tm.tm_mday);
    p += 2;
    *p++ = ' ';
    memcpy(p, months[tm.tm_mon % 12], 3);
    p += 3;
    *p++ = ' ';
    put2(p, year / 100);
    put2(p + 2, year % 100);
    p += 4;
    *p++ = ' ';
    put2(p, (unsigned)tm.tm_hour);
    p[2] = ':';
    put2(p + 3, (unsigned)tm.tm_min);
    p[5] = ':';
    put2(p + 6, (unsigned)tm.tm_sec);
    p += 8;
    memcpy(p, " GMT", 5);
}

static const char *cached_date(void)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[IMF_DATE_LEN + 1];
    time_t now = time(NULL);
    if (now != cached_sec) {
        format_imf_date(now, cached);
        cached_sec = now;
    }
    return cached;
}

/* --- message ----------------------------------------------------------- */

/* Expands fmt's "%s" conversions with the NUL-separated parts of detail.
 * Returns the message length; writes nothing when o is NULL (measuring). */
static size_t put_message(out_t *o, const char *fmt, const char *detail, size_t detail_len)
{
    size_t total = 0;
    const char *part = detail;
    const char *dend = detail ? detail + detail_len : NULL;
    const char *s = fmt;
    while (*s) {
        const char *pct = strstr(s, "%s");
        size_t lit = pct ? (size_t)(pct - s) : strlen(s);
        if (o)
            put(o, s, lit);
        total += lit;
        if (!pct)
            break;
        size_t plen = 0;
        if (part && part < dend) {
            const char *nul = memchr(part, '\0', (size_t)(dend - part));
            plen = nul ? (size_t)(nul - part) : (size_t)(dend - part);
        }
        if (o && plen)
            put_clean(o, part, plen);
        total += plen;
        if (part && part < dend)
            part += plen + 1;
        s = pct + 2;
    }
    return total;
}

/* "endpoint_failure (<reason>)"; a client that went away is gorouter's
 * "context canceled" unless the caller says more. */
static void put_router_error(out_t *o, cr_proxy_error_t err, const cr_proxy_error_info_t *info,
                             const char *reason)
{
    put_str(o, info->router_error);
    bool with_reason = err == CR_PERR_ENDPOINT_FAILURE || err == CR_PERR_CLIENT_CLOSED ||
                       err == CR_PERR_TLS_HANDSHAKE || err == CR_PERR_TLS_UNTRUSTED ||
                       err == CR_PERR_TLS_HOSTNAME || err == CR_PERR_TLS_CERT_REQUIRED;
    if (!with_reason)
        return;
    if (!reason || !*reason)
        reason = err == CR_PERR_CLIENT_CLOSED ? "context canceled" : "";
    if (*reason) {
        put(o, " (", 2);
        put_clean(o, reason, strlen(reason));
        put(o, ")", 1);
    }
}

size_t cr_proxy_error_router_error(cr_proxy_error_t err, const char *reason, char *buf,
                                   size_t cap)
{
    const cr_proxy_error_info_t *info = cr_proxy_error_info(err);
    if (cap == 0)
        return 0;
    if (!info->router_error) {
        buf[0] = '\0';
        return 0;
    }
    out_t o = {buf, buf + cap - 1, false, true};
    put_router_error(&o, err, info, reason);
    *o.p = '\0';
    return (size_t)(o.p - buf);
}

int cr_proxy_error_write(cr_proxy_error_t err, const char *detail, size_t detail_len,
                         const char *reason, bool keep_alive, char *buf, size_t cap)
{
    const cr_proxy_error_info_t *info = cr_proxy_error_info(err);
    out_t o = {buf, buf + cap, false, false};
    out_t *op = &o;

    if (err == CR_PERR_BAD_REQUEST || err == CR_PERR_HEADERS_TOO_LARGE)
        keep_alive = false;
    if (!detail)
        detail_len = 0;

    /* Body length: "<code> <text>: <message>\n", or nothing for 431. */
    size_t body_len = 0;
    if (info->message_fmt)
        body_len = 3 + 1 + strlen(info->status_text) + 2 +
                   put_message(NULL, info->message_fmt, detail, detail_len) + 1;

    put_str(op, "HTTP/1.1 ");
    put_uint(op, info->status);
    put(op, " ", 1);
    put_str(op, info->status_text);
    put(op, "\r\n", 2);
    if (info->cache_control) {
        put_str(op, "Cache-Control: ");
        put_str(op, info->cache_control);
        put(op, "\r\n", 2);
    }
    if (info->message_fmt)
        put_str(op, "Content-Type: text/plain; charset=utf-8\r\n"
                    "X-Content-Type-Options: nosniff\r\n");
    if (info->router_error) {
        put_str(op, "X-Cf-Routererror: ");
        put_router_error(op, err, info, reason);
        put(op, "\r\n", 2);
    }
    put_str(op, "Date: ");
    put(op, cached_date(), IMF_DATE_LEN);
    put_str(op, "\r\nContent-Length: ");
    put_uint(op, body_len);
    put(op, "\r\n", 2);
    if (!keep_alive)
        put_str(op, "Connection: close\r\n");
    put(op, "\r\n", 2);

    if (info->message_fmt) {
        put_uint(op, info->status);
        put(op, " ", 1);
        put_str(op, info->status_text);
        put(op, ": ", 2);
        put_message(op, info->message_fmt, detail, detail_len);
        put(op, "\n", 1);
    }
    if (o.overflow)
        return CR_ETOOBIG;
    return (int)(o.p - buf);
}
