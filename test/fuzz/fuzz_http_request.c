/* test/fuzz/fuzz_http_request.c - libFuzzer target for cr_http1_parse_request().
 *
 * Besides memory safety it checks the properties the proxy relies on: a
 * parsed head has head_len <= size, every slice lies inside the input, no
 * header value carries CR, LF or NUL (so forwarding it cannot inject a line),
 * parsing is deterministic, and the same bytes minus the last one are
 * CR_AGAIN (so incremental reads reach the same head). Pipelined requests
 * after the first are parsed too, and the input is also run under tight
 * limits, where only CR_ETOOBIG may replace a success.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/http1.h"

#define MAX_HEADERS 32

static int in(const char *p, size_t len, const char *base, size_t size)
{
    return len == 0 || (p >= base && p + len <= base + size);
}

static void check_request(const char *buf, size_t size, const cr_http_limits_t *lim, int rc,
                          const cr_http_request_t *r)
{
    if (rc <= 0)
        return;
    if ((size_t)rc > size || r->head_len != (uint32_t)rc || r->headers_len > lim->max_headers)
        abort();
    if (r->method_len == 0 || !in(r->method, r->method_len, buf, size) ||
        !in(r->target, r->target_len, buf, size) || r->path == NULL || r->path_len == 0)
        abort();
    if (r->host && !in(r->host, r->host_len, buf, size))
        abort();
    if (r->body_kind == CR_HTTP_BODY_LENGTH && r->content_length < 0)
        abort();
    for (uint32_t i = 0; i < r->headers_len; i++) {
        const cr_http_header_t *h = &r->headers[i];
        if (h->name_len == 0 || !in(h->name, h->name_len, buf, size) ||
            !in(h->value, h->value_len, buf, size))
            abort();
        if (memchr(h->value, '\r', h->value_len) || memchr(h->value, '\n', h->value_len) ||
            memchr(h->value, '\0', h->value_len))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    cr_http_header_t headers[MAX_HEADERS];
    cr_http_request_t r, again;
    cr_http_limits_t lim = { .max_head_bytes = 16384, .max_headers = MAX_HEADERS };

    int rc = cr_http1_parse_request(buf, size, &lim, headers, &r);
    if (rc != CR_AGAIN && rc != CR_EBAD && rc != CR_ETOOBIG && rc <= 0)
        abort();
    check_request(buf, size, &lim, rc, &r);
    if (rc > 0) {
        cr_http_header_t h2[MAX_HEADERS];
        if (cr_http1_parse_request(buf, size, &lim, h2, &again) != rc ||
            again.body_kind != r.body_kind || again.content_length != r.content_length ||
            again.keep_alive != r.keep_alive || again.headers_len != r.headers_len)
            abort();
        if (cr_http1_parse_request(buf, (size_t)rc - 1, &lim, h2, &again) != CR_AGAIN)
            abort();

        /* Tight limits: success stays success or becomes CR_ETOOBIG. */
        cr_http_limits_t tight = { .max_head_bytes = (uint32_t)rc, .max_headers = r.headers_len };
        if (cr_http1_parse_request(buf, size, &tight, h2, &again) != rc)
            abort();
        if (r.headers_len > 0) {
            tight.max_headers = r.headers_len - 1;
            if (cr_http1_parse_request(buf, size, &tight, h2, &again) != CR_ETOOBIG)
                abort();
        }

        /* Pipelined requests behind this one (bodies skipped when sized). */
        size_t off = (size_t)rc;
        for (int n = 0; n < 8 && off < size; n++) {
            if (r.body_kind == CR_HTTP_BODY_LENGTH) {
                if ((uint64_t)r.content_length > size - off)
                    break;
                off += (size_t)r.content_length;
            } else if (r.body_kind == CR_HTTP_BODY_CHUNKED) {
                cr_chunked_t c;
                cr_chunked_init(&c);
                int64_t end = cr_chunked_scan(&c, buf + off, size - off);
                if (end < 0)
                    break;
                off += (size_t)end;
            }
            rc = cr_http1_parse_request(buf + off, size - off, &lim, headers, &r);
            check_request(buf + off, size - off, &lim, rc, &r);
            if (rc <= 0)
                break;
            off += (size_t)rc;
        }
    }
    return 0;
}
