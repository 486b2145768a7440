/* test/fuzz/fuzz_proxy_protocol.c - libFuzzer target for the PROXY protocol parser.
 *
 * The result must be 0, CR_AGAIN, CR_EBAD or a length within the input and
 * the limits (v1 107 bytes, v2 CR_PROXY_V2_MAX); a header with an address
 * has a family matching addr_len. Every shorter prefix of an accepted header
 * must need more input, and the same bytes followed by more must give the
 * same result (the parser never looks past the header).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/defs.h"
#include "router/proxy_protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    cr_proxy_header_t h;
    int r = cr_proxy_protocol_parse(buf, size, &h);
    if (r == 0 || r == CR_AGAIN || r == CR_EBAD)
        return 0;
    if (r < 0 || (size_t)r > size || r > CR_PROXY_V2_MAX)
        abort();
    if (h.version == 1 && r > CR_PROXY_V1_MAX)
        abort();
    if (h.has_addr &&
        !((h.src.sa.sa_family == AF_INET && h.addr_len == sizeof(struct sockaddr_in)) ||
          (h.src.sa.sa_family == AF_INET6 && h.addr_len == sizeof(struct sockaddr_in6))))
        abort();
    /* Prefixes need more; the header alone parses the same. */
    cr_proxy_header_t h2;
    if (r > 1 && cr_proxy_protocol_parse(buf, (size_t)r - 1, &h2) != CR_AGAIN)
        abort();
    char *copy = malloc((size_t)r);
    if (!copy)
        return 0;
    memcpy(copy, buf, (size_t)r);
    if (cr_proxy_protocol_parse(copy, (size_t)r, &h2) != r || h2.has_addr != h.has_addr ||
        (h.has_addr && memcmp(&h2.src, &h.src, h.addr_len) != 0))
        abort();
    free(copy);
    return 0;
}
