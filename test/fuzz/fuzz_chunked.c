/* test/fuzz/fuzz_chunked.c - libFuzzer target for cr_chunked_scan().
 *
 * The input is a chunked body (possibly followed by anything). It is scanned
 * whole, then cut at two points derived from its bytes, then (when short)
 * one byte at a time; every way must give the same end offset or error and
 * the same count of data bytes. The end offset never exceeds the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/http1.h"

/* Scans buf in pieces ending at cuts[0..n) and then size. */
static int64_t scan_cuts(const char *buf, size_t size, const size_t *cuts, size_t n,
                         uint64_t *data_bytes)
{
    cr_chunked_t c;
    cr_chunked_init(&c);
    size_t from = 0;
    int64_t rc = CR_AGAIN;
    for (size_t i = 0; i <= n; i++) {
        size_t to = i < n ? cuts[i] : size;
        rc = cr_chunked_scan(&c, buf + from, to - from);
        if (rc >= 0) {
            if ((size_t)rc > to - from)
                abort();
            rc += (int64_t)from;
            break;
        }
        if (rc != CR_AGAIN)
            break;
        from = to;
    }
    *data_bytes = c.data_bytes;
    return rc;
}

static uint64_t hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ULL;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    uint64_t whole_data, data_bytes;
    int64_t whole = scan_cuts(buf, size, NULL, 0, &whole_data);
    if (whole != CR_AGAIN && whole != CR_EBAD && (whole < 0 || (size_t)whole > size))
        abort();

    uint64_t h = hash(data, size);
    size_t cuts[2] = { (size_t)(h % (size + 1)), (size_t)((h >> 32) % (size + 1)) };
    if (cuts[0] > cuts[1]) {
        size_t t = cuts[0];
        cuts[0] = cuts[1];
        cuts[1] = t;
    }
    if (scan_cuts(buf, size, cuts, 2, &data_bytes) != whole || data_bytes != whole_data)
        abort();

    if (size > 0 && size <= 512) {
        size_t bytes[512];
        for (size_t i = 0; i < size - 1; i++)
            bytes[i] = i + 1;
        if (scan_cuts(buf, size, bytes, size - 1, &data_bytes) != whole || data_bytes != whole_data)
            abort();
    }
    return 0;
}
