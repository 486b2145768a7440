/* router/http1.c - strict HTTP/1.1 head parser and chunked-body scanner (RFC 9112).
 *
 * A head is parsed in two passes. The first finds its end (the first
 * CRLFCRLF) with memchr over '\n' and rejects a bare LF on the way, so a
 * caller that re-calls with a growing buffer pays one memchr per line until
 * the head is complete. The second pass walks the complete head once with
 * table-driven character classes; since every LF in it is known to follow a
 * CR and the head ends in CRLFCRLF, the class loops stop at a CR without
 * bounds checks. Framing headers (Content-Length, Transfer-Encoding, Host,
 * Connection) are judged while walking; anything that lets two parsers
 * disagree about where a message ends is CR_EBAD.
 *
 * The chunked scanner is a byte-at-a-time state machine (data runs are
 * skipped in one step) so it gives the same answer however the body is split
 * across reads. Nothing here allocates or keeps state outside its arguments;
 * any thread.
 */
#include "router/http1.h"

#include <limits.h>
#include <string.h>

/* Character classes, one bit each. */
enum {
    C_TCHAR = 0x01,  /* token: methods, header names (RFC 9110 5.6.2) */
    C_VALUE = 0x02,  /* field-content: HTAB, SP, VCHAR, obs-text */
    C_TARGET = 0x04, /* request-target bytes: VCHAR and obs-text (Go's net/http accepts raw
                        UTF-8 in the target; it is no framing risk) */
    C_HEX = 0x08,    /* hexadecimal digit */
    C_HOST = 0x10,   /* Host / authority bytes, as Go's httpguts.ValidHostHeader */
};

static const uint8_t cls[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x00 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x10 */
    0x02, 0x17, 0x06, 0x07, 0x17, 0x17, 0x17, 0x17, 0x16, 0x16, 0x17, 0x17, 0x16, 0x17, 0x17, 0x06, /* 0x20 */
    0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x16, 0x16, 0x06, 0x16, 0x06, 0x06, /* 0x30 */
    0x06, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, /* 0x40 */
    0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x16, 0x06, 0x16, 0x07, 0x17, /* 0x50 */
    0x07, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, /* 0x60 */
    0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x06, 0x07, 0x06, 0x17, 0x00, /* 0x70 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 0x80 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 0x90 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 0xa0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 0xb0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 0xc0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 0xd0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 0xe0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 0xf0 */
};

#define IS(c, k) (cls[(uint8_t)(c)] & (k))

#define CL_MAX ((int64_t)1 << 62)

/* Word-at-a-time skipping of the long runs (targets, values): a word with
 * no byte below 0x20 (0x21 for targets) and no DEL is all good bytes, since
 * obs-text (0x80-0xFF) is allowed in both. The tests are exact ("hasless" and
 * "haszero" from the bit-twiddling hacks). Words are loaded only when 8
 * bytes remain before end. */
#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline bool any_below(uint64_t x, uint64_t n)
{
    return ((x - ONES * n) & ~x & HIGHS) != 0;
}

static inline bool any_del(uint64_t x)
{
    uint64_t y = x ^ (ONES * 0x7f);
    return ((y - ONES) & ~y & HIGHS) != 0;
}

/* Skips field-content bytes from p; stops at the first other byte, at the
 * latest at the CR that ends the line (before end). */
static const char *skip_value(const char *p, const char *end)
{
    for (;;) {
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            if (any_below(x, 0x20) || any_del(x))
                break;
            p += 8;
        }
        while (IS(*p, C_VALUE) && *p != '\t')
            p++;
        if (*p != '\t')
            return p;
        p++;
    }
}

/* Skips request-target bytes from p; stops at SP or any other byte. */
static const char *skip_target(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        if (any_below(x, 0x21) || any_del(x))
            break;
        p += 8;
    }
    while (IS(*p, C_TARGET))
        p++;
    return p;
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

bool cr_http_token_eq(const char *s, size_t len, const char *lower_literal)
{
    size_t i = 0;
    for (; i < len; i++) {
        if (lower_literal[i] == '\0' || lower((unsigned char)s[i]) != (unsigned char)lower_literal[i])
            return false;
    }
    return lower_literal[i] == '\0';
}

static bool slice_eq_nocase(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    }
    return true;
}

const cr_http_header_t *cr_http_find_header(const cr_http_header_t *headers, uint32_t n,
                                            const char *name, size_t name_len)
{
    for (uint32_t i = 0; i < n; i++) {
        if (headers[i].name_len == name_len && slice_eq_nocase(headers[i].name, name, name_len))
            return &headers[i];
    }
    return NULL;
}

/* ---- comma-separated lists (RFC 9110 5.6.1) ---- */

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Splits the next element off [*pos, end): the bytes up to the next comma,
 * OWS trimmed (possibly empty). Returns false once the list is exhausted. */
static bool list_next(const char **pos, const char *end, const char **elem, size_t *elem_len)
{
    const char *p = *pos;
    if (p > end)
        return false;
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *stop = comma ? comma : end;
    const char *e = stop;
    while (p < e && is_ows(*p))
        p++;
    while (e > p && is_ows(e[-1]))
        e--;
    *elem = p;
    *elem_len = (size_t)(e - p);
    *pos = stop + 1; /* one past end when there was no comma: the next call stops */
    return true;
}

/* ---- the end of a head ---- */

/* Finds the end of the head that starts at buf[start]: the first CRLFCRLF
 * within the first max bytes of buf. Returns the head length, CR_EBAD on a
 * bare LF, CR_ETOOBIG when max bytes hold no end, or CR_AGAIN. */
static int find_head_end(const char *buf, size_t len, size_t start, size_t max)
{
    size_t lim = len < max ? len : max;
    const char *p = buf + start;
    const char *e = buf + lim;
    while (p < e) {
        const char *lf = memchr(p, '\n', (size_t)(e - p));
        if (!lf)
            break;
        size_t k = (size_t)(lf - buf);
        if (k == 0 || buf[k - 1] != '\r')
            return CR_EBAD;
        /* start is never at a CRLF, so k - 3 >= start whenever buf[k-2] is an LF of this head. */
        if (k >= start + 3 && buf[k - 2] == '\n')
            return (int)(k + 1);
        p = lf + 1;
    }
    return len >= max ? CR_ETOOBIG : CR_AGAIN;
}

static size_t effective_max(uint32_t max_head_bytes)
{
    /* 0 means "no configured limit"; the result must still fit an int. */
    if (max_head_bytes == 0 || max_head_bytes > (uint32_t)INT_MAX)
        return (size_t)INT_MAX;
    return max_head_bytes;
}

/* ---- header fields ---- */

/* What the header walk learns about framing and connection handling. */
typedef struct head_info {
    int64_t content_length; /* -1 when absent */
    const char *host;
    uint32_t host_len;
    uint32_t host_count;
    uint32_t te_chunked;    /* "chunked" elements seen over all Transfer-Encoding headers */
    bool has_te;
    bool conn_close;
    bool conn_keep_alive;
    bool conn_upgrade;
    bool has_upgrade;
    bool expect_continue;
} head_info_t;

/* Content-Length: 1*DIGIT, or a comma list of equal values (RFC 9110 8.6). */
static int on_content_length(head_info_t *hi, const char *v, size_t vlen)
{
    const char *pos = v, *end = v + vlen, *elem;
    size_t elen;
    while (list_next(&pos, end, &elem, &elen)) {
        if (elen == 0)
            return CR_EBAD;
        int64_t n = 0;
        for (size_t i = 0; i < elen; i++) {
            unsigned d = (unsigned char)elem[i] - '0';
            if (d > 9 || n > (CL_MAX - (int64_t)d) / 10)
                return CR_EBAD;
            n = n * 10 + (int64_t)d;
        }
        if (hi->content_length >= 0 && hi->content_length != n)
            return CR_EBAD;
        hi->content_length = n;
    }
    return 0;
}

/* Transfer-Encoding: every element of every such header must be "chunked",
 * and there must be exactly one in all (checked by the caller). An empty
 * element, a parameter or any other coding is rejected. */
static int on_transfer_encoding(head_info_t *hi, const char *v, size_t vlen)
{
    const char *pos = v, *end = v + vlen, *elem;
    size_t elen;
    hi->has_te = true;
    while (list_next(&pos, end, &elem, &elen)) {
        if (!cr_http_token_eq(elem, elen, "chunked"))
            return CR_EBAD;
        hi->te_chunked++;
    }
    return 0;
}

static void on_connection(head_info_t *hi, const char *v, size_t vlen)
{
    const char *pos = v, *end = v + vlen, *elem;
    size_t elen;
    while (list_next(&pos, end, &elem, &elen)) {
        if (cr_http_token_eq(elem, elen, "close"))
            hi->conn_close = true;
        else if (cr_http_token_eq(elem, elen, "keep-alive"))
            hi->conn_keep_alive = true;
        else if (cr_http_token_eq(elem, elen, "upgrade"))
            hi->conn_upgrade = true;
    }
}

static bool host_is_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!IS(s[i], C_HOST))
            return false;
    }
    return true;
}

/* Judges one field by its name; the switch on length keeps the common
 * headers to one comparison. */
static int on_header(head_info_t *hi, const cr_http_header_t *h)
{
    switch (h->name_len) {
    case 4:
        if (cr_http_token_eq(h->name, 4, "host")) {
            if (++hi->host_count > 1 || !host_is_valid(h->value, h->value_len))
                return CR_EBAD;
            hi->host = h->value;
            hi->host_len = h->value_len;
        }
        break;
    case 6:
        if (cr_http_token_eq(h->name, 6, "expect") &&
            cr_http_token_eq(h->value, h->value_len, "100-continue"))
            hi->expect_continue = true;
        break;
    case 7:
        if (cr_http_token_eq(h->name, 7, "upgrade"))
            hi->has_upgrade = true;
        break;
    case 10:
        if (cr_http_token_eq(h->name, 10, "connection"))
            on_connection(hi, h->value, h->value_len);
        break;
    case 14:
        if (cr_http_token_eq(h->name, 14, "content-length"))
            return on_content_length(hi, h->value, h->value_len);
        if (cr_http_token_eq(h->name, 14, "content_length"))
            return CR_EBAD; /* see underscore note below */
        break;
    case 17:
        if (cr_http_token_eq(h->name, 17, "transfer-encoding"))
            return on_transfer_encoding(hi, h->value, h->value_len);
        /* Underscore look-alikes of the framing headers are legal tokens,
         * but servers behind CGI-style header mapping (HTTP_TRANSFER_ENCODING)
         * read them as the real thing and would frame the message
         * differently from us (issue 7). No client has a reason to send
         * them, so they are rejected like a conflicting framing header. */
        if (cr_http_token_eq(h->name, 17, "transfer_encoding"))
            return CR_EBAD;
        break;
    default:
        break;
    }
    return 0;
}

/* Walks the header lines of a complete head from p (the start of the first
 * field line) to the empty line that ends at end. Returns 0 with *count set, CR_EBAD or
 * CR_ETOOBIG (more than max fields). */
static int parse_fields(const char *p, const char *end, cr_http_header_t *headers, uint32_t max,
                        uint32_t *count, head_info_t *hi)
{
    uint32_t n = 0;
    for (;;) {
        if (*p == '\r') {
            if (p[1] != '\n')
                return CR_EBAD;
            break;
        }
        const char *name = p;
        while (IS(*p, C_TCHAR))
            p++;
        /* An empty name covers obs-fold (leading SP/HTAB) and stray bytes;
         * anything but ':' after the name covers whitespace before the colon. */
        if (p == name || *p != ':')
            return CR_EBAD;
        uint32_t name_len = (uint32_t)(p - name);
        p++;
        while (is_ows(*p))
            p++;
        const char *value = p;
        p = skip_value(p, end);
        if (p[0] != '\r' || p[1] != '\n')
            return CR_EBAD;
        const char *vend = p;
        while (vend > value && is_ows(vend[-1]))
            vend--;
        p += 2;
        if (n >= max)
            return CR_ETOOBIG;
        cr_http_header_t *h = &headers[n++];
        h->name = name;
        h->name_len = name_len;
        h->value = value;
        h->value_len = (uint32_t)(vend - value);
        int rc = on_header(hi, h);
        if (rc != 0)
            return rc;
    }
    *count = n;
    return 0;
}

/* Checks the framing headers shared by requests and responses. */
static int check_framing(const head_info_t *hi, uint8_t version_minor)
{
    if (hi->has_te) {
        if (hi->te_chunked != 1 || hi->content_length >= 0 || version_minor == 0)
            return CR_EBAD;
    }
    return 0;
}

/* ---- requests ---- */

/* While the head is incomplete, rejects early what can never become a
 * request: a first byte that is not a method character (a TLS hello on the
 * plain port, binary junk) and a method ended by anything but SP. */
static int early_check(const char *buf, size_t len, size_t start)
{
    if (len - start == 1 && buf[start] == '\r')
        return CR_AGAIN; /* maybe the first half of another leading CRLF */
    for (size_t i = start; i < len; i++) {
        if (IS(buf[i], C_TCHAR))
            continue;
        return (buf[i] == ' ' && i > start) ? CR_AGAIN : CR_EBAD;
    }
    return CR_AGAIN;
}

/* authority-form of CONNECT: host ":" port, both non-empty. */
static bool authority_form_is_valid(const char *s, size_t len)
{
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ':')
            colon = s + i;
    }
    if (!colon || colon == s || colon == s + len - 1)
        return false;
    for (const char *d = colon + 1; d < s + len; d++) {
        if (*d < '0' || *d > '9')
            return false;
    }
    return host_is_valid(s, len);
}

/* Splits an absolute-form target "http[s]://authority[/path[?query]]". The
 * authority must be non-empty host bytes (no userinfo: RFC 9110 4.2.4 says
 * to treat it as an error). A query right after the authority ("http://h?q")
 * is rejected because "/?q" cannot be returned as a slice. */
static int split_absolute(cr_http_request_t *r)
{
    const char *t = r->target;
    size_t len = r->target_len, skip;
    if (len >= 7 && slice_eq_nocase(t, "http://", 7))
        skip = 7;
    else if (len >= 8 && slice_eq_nocase(t, "https://", 8))
        skip = 8;
    else
        return CR_EBAD;
    const char *a = t + skip, *end = t + len, *p = a;
    while (p < end && *p != '/' && *p != '?' && *p != '#')
        p++;
    if (p == a || !host_is_valid(a, (size_t)(p - a)))
        return CR_EBAD;
    if (p < end && *p != '/')
        return CR_EBAD;
    r->authority = a;
    r->authority_len = (uint32_t)(p - a);
    if (p == end) {
        r->path = "/";
        r->path_len = 1;
    } else {
        r->path = p;
        r->path_len = (uint32_t)(end - p);
    }
    return 0;
}

static int parse_target(cr_http_request_t *r)
{
    bool is_connect = r->method_len == 7 && memcmp(r->method, "CONNECT", 7) == 0;
    if (is_connect) {
        if (!authority_form_is_valid(r->target, r->target_len))
            return CR_EBAD;
        r->path = r->target;
        r->path_len = r->target_len;
        return 0;
    }
    if (r->target[0] == '/') {
        r->path = r->target;
        r->path_len = r->target_len;
        return 0;
    }
    if (r->target[0] == '*') {
        if (r->target_len != 1 || r->method_len != 7 || memcmp(r->method, "OPTIONS", 7) != 0)
            return CR_EBAD;
        r->path = r->target;
        r->path_len = 1;
        return 0;
    }
    return split_absolute(r);
}

int cr_http1_parse_request(const char *buf, size_t len, const cr_http_limits_t *lim,
                           cr_http_header_t *headers, cr_http_request_t *out)
{
    size_t max = effective_max(lim->max_head_bytes);
    /* RFC 9112 2.2: ignore empty lines before the request-line (some clients
     * send a CRLF after a POST body). They count towards head_len. */
    size_t start = 0;
    while (start + 1 < len && buf[start] == '\r' && buf[start + 1] == '\n')
        start += 2;
    if (start >= max)
        return CR_ETOOBIG;
    int head_len = find_head_end(buf, len, start, max);
    if (head_len == CR_AGAIN)
        return early_check(buf, len, start);
    if (head_len < 0)
        return head_len;

    memset(out, 0, sizeof(*out));
    out->headers = headers;
    out->content_length = -1;
    out->head_len = (uint32_t)head_len;

    /* request-line = method SP request-target SP HTTP-version CRLF */
    const char *p = buf + start, *end = buf + head_len;
    out->method = p;
    while (IS(*p, C_TCHAR))
        p++;
    if (p == out->method || *p != ' ')
        return CR_EBAD;
    out->method_len = (uint32_t)(p - out->method);
    out->target = ++p;
    p = skip_target(p, end);
    if (p == out->target || *p != ' ')
        return CR_EBAD;
    out->target_len = (uint32_t)(p - out->target);
    p++;
    if (end - p < 10 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
        p[8] != '\r' || p[9] != '\n')
        return CR_EBAD;
    out->version_minor = (uint8_t)(p[7] - '0');
    p += 10;

    int rc = parse_target(out);
    if (rc != 0)
        return rc;

    head_info_t hi = { .content_length = -1 };
    rc = parse_fields(p, end, headers, lim->max_headers, &out->headers_len, &hi);
    if (rc != 0)
        return rc;
    rc = check_framing(&hi, out->version_minor);
    if (rc != 0)
        return rc;

    if (hi.has_te) {
        out->body_kind = CR_HTTP_BODY_CHUNKED;
    } else if (hi.content_length >= 0) {
        out->body_kind = CR_HTTP_BODY_LENGTH;
        out->content_length = hi.content_length;
    } else {
        out->body_kind = CR_HTTP_BODY_NONE;
    }
    out->has_host_header = hi.host_count > 0;
    if (out->authority) {
        out->host = out->authority;
        out->host_len = out->authority_len;
    } else if (hi.host_count > 0) {
        out->host = hi.host;
        out->host_len = hi.host_len;
    }
    if (out->version_minor == 1)
        out->keep_alive = !hi.conn_close;
    else
        out->keep_alive = hi.conn_keep_alive && !hi.conn_close;
    out->upgrade = hi.conn_upgrade && hi.has_upgrade;
    out->expect_continue = hi.expect_continue;
    return head_len;
}

/* ---- responses ---- */

int cr_http1_parse_response(const char *buf, size_t len, const cr_http_limits_t *lim,
                            cr_http_header_t *headers, bool request_was_head,
                            cr_http_response_t *out)
{
    size_t max = effective_max(lim->max_head_bytes);
    int head_len = find_head_end(buf, len, 0, max);
    if (head_len == CR_AGAIN) {
        /* Fail fast on a peer that is not speaking HTTP/1.x at all. */
        size_t n = len < 7 ? len : 7;
        return memcmp(buf, "HTTP/1.", n) == 0 ? CR_AGAIN : CR_EBAD;
    }
    if (head_len < 0)
        return CR_EBAD; /* a too-big response head is a bad upstream (502) */

    memset(out, 0, sizeof(*out));
    out->headers = headers;
    out->content_length = -1;
    out->head_len = (uint32_t)head_len;

    /* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF;
     * "HTTP/1.1 200" CRLF without the second SP is accepted, as Go does. */
    const char *p = buf, *end = buf + head_len;
    if (end - p < 14 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' || p[8] != ' ')
        return CR_EBAD;
    out->version_minor = (uint8_t)(p[7] - '0');
    p += 9;
    if (p[0] < '1' || p[0] > '9' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
        return CR_EBAD;
    out->status = (uint16_t)((p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0'));
    p += 3;
    if (*p == ' ') {
        out->reason = ++p;
        p = skip_value(p, end);
        out->reason_len = (uint32_t)(p - out->reason);
    } else {
        out->reason = p;
    }
    if (p[0] != '\r' || p[1] != '\n')
        return CR_EBAD;
    p += 2;

    head_info_t hi = { .content_length = -1 };
    int rc = parse_fields(p, end, headers, lim->max_headers, &out->headers_len, &hi);
    if (rc != 0)
        return CR_EBAD;
    rc = check_framing(&hi, out->version_minor);
    if (rc != 0)
        return rc;

    out->content_length = hi.content_length;
    if (request_was_head || out->status < 200 || out->status == 204 || out->status == 304)
        out->body_kind = CR_HTTP_BODY_NONE;
    else if (hi.has_te)
        out->body_kind = CR_HTTP_BODY_CHUNKED;
    else if (hi.content_length >= 0)
        out->body_kind = CR_HTTP_BODY_LENGTH;
    else
        out->body_kind = CR_HTTP_BODY_UNTIL_CLOSE;

    if (out->body_kind == CR_HTTP_BODY_UNTIL_CLOSE)
        out->keep_alive = false;
    else if (out->version_minor >= 1)
        out->keep_alive = !hi.conn_close;
    else
        out->keep_alive = hi.conn_keep_alive && !hi.conn_close;
    return head_len;
}

/* ---- chunked bodies ---- */

/* Scanner states. Size line: SIZE_START -> SIZE -> [EXT] -> SIZE_LF ->
 * DATA (size > 0) or TRAILER_START (size 0). Data: DATA -> DATA_CR ->
 * DATA_LF -> SIZE_START. Trailer section: TRAILER_START -> TRAILER_NAME ->
 * TRAILER_VALUE -> TRAILER_LF -> TRAILER_START, or TRAILER_START -> END_LF
 * -> DONE on the empty line. Any state -> ERROR. */
enum {
    CH_SIZE_START = 0,
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER_START,
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF,
    CH_DONE,
    CH_ERROR,
};

#define CH_MAX_DIGITS     15      /* 60 bits: no overflow, and more than anyone sends */
#define CH_MAX_LINE       4096    /* a size line with its extensions */
#define CH_MAX_TRAILERS   16384   /* all trailer lines together */

void cr_chunked_init(cr_chunked_t *c)
{
    memset(c, 0, sizeof(*c));
}

static inline int hex_val(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    return (ch | 0x20) - 'a' + 10;
}

int64_t cr_chunked_scan(cr_chunked_t *c, const char *buf, size_t len)
{
    size_t i = 0;
    if (c->state == CH_DONE)
        return 0;
    while (i < len) {
        unsigned char ch = (unsigned char)buf[i];
        switch (c->state) {
        case CH_SIZE_START:
            if (!IS(ch, C_HEX))
                goto bad;
            c->remaining = (uint64_t)hex_val(ch);
            c->digits = 1;
            c->line_len = 1;
            c->state = CH_SIZE;
            i++;
            break;
        case CH_SIZE:
            if (++c->line_len > CH_MAX_LINE)
                goto bad;
            if (IS(ch, C_HEX)) {
                if (++c->digits > CH_MAX_DIGITS)
                    goto bad;
                c->remaining = (c->remaining << 4) | (uint64_t)hex_val(ch);
            } else if (ch == ';') {
                c->state = CH_EXT;
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else {
                goto bad;
            }
            i++;
            break;
        case CH_EXT:
            if (++c->line_len > CH_MAX_LINE)
                goto bad;
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (!IS(ch, C_VALUE))
                goto bad;
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                goto bad;
            c->line_len = 0;
            if (c->remaining == 0) {
                c->state = CH_TRAILER_START;
            } else {
                c->state = CH_DATA;
            }
            i++;
            break;
        case CH_DATA: {
            uint64_t n = len - i;
            if (n > c->remaining)
                n = c->remaining;
            c->remaining -= n;
            c->data_bytes += n;
            i += (size_t)n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch != '\r')
                goto bad;
            c->state = CH_DATA_LF;
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                goto bad;
            c->state = CH_SIZE_START;
            i++;
            break;
        case CH_TRAILER_START:
            /* remaining is 0 after the last chunk; it now counts trailer bytes. */
            if (++c->remaining > CH_MAX_TRAILERS)
                goto bad;
            if (ch == '\r')
                c->state = CH_END_LF;
            else if (IS(ch, C_TCHAR))
                c->state = CH_TRAILER_NAME;
            else
                goto bad; /* obs-fold, stray whitespace, bare LF, control bytes */
            c->line_len = 1;
            i++;
            break;
        case CH_TRAILER_NAME:
        case CH_TRAILER_VALUE:
            if (++c->remaining > CH_MAX_TRAILERS || ++c->line_len > CH_MAX_LINE)
                goto bad;
            if (ch == '\r' && c->state == CH_TRAILER_VALUE)
                c->state = CH_TRAILER_LF;
            else if (c->state == CH_TRAILER_NAME && ch == ':')
                c->state = CH_TRAILER_VALUE;
            else if (!IS(ch, c->state == CH_TRAILER_NAME ? C_TCHAR : C_VALUE))
                goto bad;
            i++;
            break;
        case CH_TRAILER_LF:
        case CH_END_LF:
            if (ch != '\n')
                goto bad;
            i++;
            if (c->state == CH_END_LF) {
                c->state = CH_DONE;
                c->remaining = 0;
                return (int64_t)i;
            }
            c->remaining++;
            c->state = CH_TRAILER_START;
            break;
        default:
            goto bad;
        }
    }
    return CR_AGAIN;
bad:
    c->state = CH_ERROR;
    return CR_EBAD;
}
