/* test/fuzz/fuzz_http_response.c - libFuzzer target for cr_http1_parse_response().
 *
 * Parses the input as the answer to a GET and to a HEAD: both must agree on
 * the head (only the body kind may differ, and HEAD always has none), slices
 * stay inside the input, values carry no CR/LF/NUL, limit errors come back as
 * CR_EBAD, and the input minus its last byte is CR_AGAIN.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    cr_http_header_t headers[MAX_HEADERS], h2[MAX_HEADERS];
    cr_http_response_t r, head;
    cr_http_limits_t lim = { .max_head_bytes = 16384, .max_headers = MAX_HEADERS };

    int rc = cr_http1_parse_response(buf, size, &lim, headers, false, &r);
    if (rc == CR_ETOOBIG || (rc <= 0 && rc != CR_AGAIN && rc != CR_EBAD))
        abort();
    int rc_head = cr_http1_parse_response(buf, size, &lim, h2, true, &head);
    if (rc_head != rc)
        abort();
    if (rc <= 0)
        return 0;

    if ((size_t)rc > size || r.head_len != (uint32_t)rc || r.status < 100 || r.status > 999 ||
        r.headers_len > MAX_HEADERS || !in(r.reason, r.reason_len, buf, size))
        abort();
    if (head.body_kind != CR_HTTP_BODY_NONE || head.status != r.status ||
        head.headers_len != r.headers_len)
        abort();
    if (r.body_kind == CR_HTTP_BODY_UNTIL_CLOSE && r.keep_alive)
        abort();
    if ((r.status < 200 || r.status == 204 || r.status == 304) && r.body_kind != CR_HTTP_BODY_NONE)
        abort();
    for (uint32_t i = 0; i < r.headers_len; i++) {
        const cr_http_header_t *h = &r.headers[i];
        if (h->name_len == 0 || !in(h->name, h->name_len, buf, size) ||
            !in(h->value, h->value_len, buf, size) || memchr(h->value, '\r', h->value_len) ||
            memchr(h->value, '\n', h->value_len) || memchr(h->value, '\0', h->value_len))
            abort();
    }
    if (cr_http1_parse_response(buf, (size_t)rc - 1, &lim, h2, false, &head) != CR_AGAIN)
        abort();
    if (r.headers_len > 0) {
        cr_http_limits_t tight = { .max_head_bytes = 16384, .max_headers = r.headers_len - 1 };
        if (cr_http1_parse_response(buf, size, &tight, h2, false, &head) != CR_EBAD)
            abort();
    }
    return 0;
}
