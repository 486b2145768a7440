/* router/proxy_protocol.c - parses the PROXY protocol header (v1 text, v2 binary).
 *
 * v1: "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n" or "PROXY UNKNOWN...\r\n",
 * at most 107 bytes. v2: a 12-byte signature, version/command, family,
 * a big-endian length, then the addresses (and TLVs, skipped). The parser
 * is zero-copy and bounded: it looks only at the first bytes of the
 * connection, decides "no header" from the first byte that differs from
 * both signatures, and says CR_AGAIN while the input is a proper prefix.
 * Addresses are parsed strictly (inet_pton on a bounded copy, ports
 * 0..65535 without sign or leading zeros), so nothing a client sends ends
 * up in a log line or X-Forwarded-For unless it is a real address.
 * Pure; any thread.
 */
#include "router/proxy_protocol.h"

#include <arpa/inet.h>
#include <string.h>

#include "common/defs.h"

static const char v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const char v2_sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* 1: buf starts with sig (complete), 0: buf is a proper prefix of it, -1: differs. */
static int match_prefix(const char *buf, size_t len, const char *sig, size_t sig_len)
{
    size_t n = len < sig_len ? len : sig_len;
    if (memcmp(buf, sig, n) != 0)
        return -1;
    return len >= sig_len ? 1 : 0;
}

/* --- v1 ------------------------------------------------------------------- */

/* The next space-separated field of [*p, end): sets *f, *flen and moves *p
 * past the single space after it (or to end). */
static bool next_field(const char **p, const char *end, const char **f, size_t *flen)
{
    const char *s = *p;
    if (s >= end)
        return false;
    const char *sp = memchr(s, ' ', (size_t)(end - s));
    const char *e = sp ? sp : end;
    if (e == s)
        return false;
    *f = s;
    *flen = (size_t)(e - s);
    *p = sp ? sp + 1 : end;
    return true;
}

static bool parse_port(const char *s, size_t len, uint16_t *out)
{
    if (len == 0 || len > 5 || (len > 1 && s[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

static bool parse_ip(int family, const char *s, size_t len, void *out)
{
    char tmp[INET6_ADDRSTRLEN];
    if (len == 0 || len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(family, tmp, out) == 1;
}

static int parse_v1(const char *buf, size_t len, cr_proxy_header_t *out)
{
    size_t scan = len < CR_PROXY_V1_MAX ? len : CR_PROXY_V1_MAX;
    const char *lf = memchr(buf, '\n', scan);
    if (!lf)
        return len >= CR_PROXY_V1_MAX ? CR_EBAD : CR_AGAIN;
    if (lf == buf || lf[-1] != '\r')
        return CR_EBAD;
    const char *end = lf - 1;     /* the '\r' */
    const char *p = buf + sizeof(v1_sig);
    size_t consumed = (size_t)(lf - buf) + 1;
    for (const char *q = p; q < end; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e)
            return CR_EBAD;
    const char *f;
    size_t fl;
    if (!next_field(&p, end, &f, &fl))
        return CR_EBAD;
    memset(out, 0, sizeof(*out));
    out->version = 1;
    if (fl == 7 && memcmp(f, "UNKNOWN", 7) == 0)
        return (int)consumed; /* the rest of the line is ignored (spec) */
    int family;
    if (fl == 4 && memcmp(f, "TCP4", 4) == 0)
        family = AF_INET;
    else if (fl == 4 && memcmp(f, "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return CR_EBAD;
    const char *src, *dst, *sport, *dport;
    size_t src_len, dst_len, sport_len, dport_len;
    if (!next_field(&p, end, &src, &src_len) || !next_field(&p, end, &dst, &dst_len) ||
        !next_field(&p, end, &sport, &sport_len) || !next_field(&p, end, &dport, &dport_len) ||
        p != end || dport + dport_len != end)
        return CR_EBAD;
    uint16_t sp, dp;
    if (!parse_port(sport, sport_len, &sp) || !parse_port(dport, dport_len, &dp))
        return CR_EBAD;
    if (family == AF_INET) {
        if (!parse_ip(AF_INET, src, src_len, &out->src.in.sin_addr) ||
            !parse_ip(AF_INET, dst, dst_len, &out->dst.in.sin_addr))
            return CR_EBAD;
        out->src.in.sin_family = out->dst.in.sin_family = AF_INET;
        out->src.in.sin_port = htons(sp);
        out->dst.in.sin_port = htons(dp);
        out->addr_len = sizeof(struct sockaddr_in);
    } else {
        if (!parse_ip(AF_INET6, src, src_len, &out->src.in6.sin6_addr) ||
            !parse_ip(AF_INET6, dst, dst_len, &out->dst.in6.sin6_addr))
            return CR_EBAD;
        out->src.in6.sin6_family = out->dst.in6.sin6_family = AF_INET6;
        out->src.in6.sin6_port = htons(sp);
        out->dst.in6.sin6_port = htons(dp);
        out->addr_len = sizeof(struct sockaddr_in6);
    }
    out->has_addr = true;
    return (int)consumed;
}

/* --- v2 ------------------------------------------------------------------- */

static int parse_v2(const char *buf, size_t len, cr_proxy_header_t *out)
{
    const unsigned char *b = (const unsigned char *)buf;
    if (len < 16)
        return CR_AGAIN;
    uint8_t ver_cmd = b[12], fam = b[13];
    size_t body = ((size_t)b[14] << 8) | b[15];
    if ((ver_cmd >> 4) != 2 || (ver_cmd & 0x0f) > 1)
        return CR_EBAD;
    if (16 + body > CR_PROXY_V2_MAX)
        return CR_EBAD;
    uint8_t af = fam >> 4, proto = fam & 0x0f;
    if (af > 3 || proto > 2)
        return CR_EBAD;
    size_t need = af == 1 ? 12 : af == 2 ? 36 : af == 3 ? 216 : 0;
    if (body < need)
        return CR_EBAD;
    if (len < 16 + body)
        return CR_AGAIN;
    memset(out, 0, sizeof(*out));
    out->version = 2;
    bool local = (ver_cmd & 0x0f) == 0;
    /* LOCAL (health checks from the balancer itself), UNSPEC, UNIX and
     * datagram addresses do not name a TCP client: keep the socket's. */
    if (local || proto != 1 || (af != 1 && af != 2))
        return (int)(16 + body);
    const unsigned char *a = b + 16;
    if (af == 1) {
        out->src.in.sin_family = out->dst.in.sin_family = AF_INET;
        memcpy(&out->src.in.sin_addr, a, 4);
        memcpy(&out->dst.in.sin_addr, a + 4, 4);
        memcpy(&out->src.in.sin_port, a + 8, 2);
        memcpy(&out->dst.in.sin_port, a + 10, 2);
        out->addr_len = sizeof(struct sockaddr_in);
    } else {
        out->src.in6.sin6_family = out->dst.in6.sin6_family = AF_INET6;
        memcpy(&out->src.in6.sin6_addr, a, 16);
        memcpy(&out->dst.in6.sin6_addr, a + 16, 16);
        memcpy(&out->src.in6.sin6_port, a + 32, 2);
        memcpy(&out->dst.in6.sin6_port, a + 34, 2);
        out->addr_len = sizeof(struct sockaddr_in6);
    }
    out->has_addr = true;
    return (int)(16 + body);
}

int cr_proxy_protocol_parse(const char *buf, size_t len, cr_proxy_header_t *out)
{
    if (len == 0)
        return CR_AGAIN;
    int m1 = match_prefix(buf, len, v1_sig, sizeof(v1_sig));
    if (m1 == 1)
        return parse_v1(buf, len, out);
    int m2 = match_prefix(buf, len, v2_sig, sizeof(v2_sig));
    if (m2 == 1)
        return parse_v2(buf, len, out);
    if (m1 == 0 || m2 == 0)
        return CR_AGAIN;
    return 0;
}
