/* config/persistence.c - session persistence policy: key parsing, validation, merge.
 *
 * A key table maps each name to its kind (enum, string, bool, duration,
 * integer, CIDR list) and field; cr_persist_policy_set() is the single
 * parser the YAML and JSON front ends share. Error messages name the key
 * and quote at most 48 printable bytes of the value; secrets are never
 * echoed. Pure functions; any thread. Owns nothing.
 */
#include "config/persistence.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/defs.h"
#include "config/config.h"

static const char *const key_names[CR_PK_COUNT] = {
    [CR_PK_MODE] = "mode",
    [CR_PK_COOKIE] = "cookie",
    [CR_PK_DOMAIN] = "domain",
    [CR_PK_PATH] = "path",
    [CR_PK_MAX_AGE] = "max_age",
    [CR_PK_HTTP_ONLY] = "http_only",
    [CR_PK_SECURE] = "secure",
    [CR_PK_SAME_SITE] = "same_site",
    [CR_PK_INDIRECT] = "indirect",
    [CR_PK_NOCACHE] = "nocache",
    [CR_PK_MAX_IDLE] = "max_idle",
    [CR_PK_MAX_LIFE] = "max_life",
    [CR_PK_FALLBACK] = "fallback",
    [CR_PK_HEADER] = "header",
    [CR_PK_TABLE_SIZE] = "table_size",
    [CR_PK_TRUSTED_PROXIES] = "trusted_proxies",
    [CR_PK_IP_PREFIX] = "ip_prefix",
    [CR_PK_IP6_PREFIX] = "ip6_prefix",
    [CR_PK_FALLBACK_TO] = "fallback_to",
    [CR_PK_LEARN_FROM_REQUESTS] = "learn_from_requests",
    [CR_PK_SECRET] = "secret",
    [CR_PK_PREVIOUS_SECRET] = "previous_secret",
};

static const char *const mode_names[] = {
    [CR_PERSIST_VCAP] = "vcap",       [CR_PERSIST_INSERT] = "insert",
    [CR_PERSIST_REWRITE] = "rewrite", [CR_PERSIST_PREFIX] = "prefix",
    [CR_PERSIST_LEARN] = "learn",     [CR_PERSIST_SOURCE_IP] = "source_ip",
    [CR_PERSIST_HEADER] = "header",
};

void cr_persist_policy_defaults(cr_persist_policy_t *p)
{
    memset(p, 0, sizeof *p);
    p->mode = CR_PERSIST_VCAP;
    p->ip_prefix = 32;
    p->ip6_prefix = CR_PERSIST_IP6_DERIVED;
    p->http_only = true;
    p->indirect = true;
    p->fallback = true;
    p->table_size = 100000;
    p->path[0] = '/';
}

int cr_persist_key_find(const char *name)
{
    for (int i = 0; i < CR_PK_COUNT; i++)
        if (strcmp(key_names[i], name) == 0)
            return i;
    return -1;
}

const char *cr_persist_key_name(cr_persist_key_t key)
{
    return (unsigned)key < CR_PK_COUNT ? key_names[key] : "?";
}

const char *cr_persist_mode_name(cr_persist_mode_t mode)
{
    return (unsigned)mode < CR_ARRAY_LEN(mode_names) ? mode_names[mode] : "?";
}

const char *cr_persist_samesite_name(cr_persist_samesite_t s)
{
    switch (s) {
    case CR_PERSIST_SAMESITE_LAX: return "Lax";
    case CR_PERSIST_SAMESITE_STRICT: return "Strict";
    case CR_PERSIST_SAMESITE_NONE: return "None";
    case CR_PERSIST_SAMESITE_UNSET: break;
    }
    return "";
}

/* Up to 48 printable bytes of s, for messages. */
static const char *printable(const char *s, char *buf, size_t cap)
{
    size_t o = 0, i = 0;
    for (; s[i] && i < 48 && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    if (s[i] && o + 4 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

static int bad(char *err, size_t cap, cr_persist_key_t key, const char *what, const char *text)
{
    char d[64];
    if (err && cap) {
        if (text)
            snprintf(err, cap, "session_persistence.%s: %s, got \"%s\"", key_names[key], what,
                     printable(text, d, sizeof d));
        else
            snprintf(err, cap, "session_persistence.%s: %s", key_names[key], what);
    }
    return CR_EBAD;
}

/* RFC 9110 token characters: valid cookie and header names. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", c))
            return false;
    }
    return true;
}

/* Domain and Path: printable, no ';' (cannot end the attribute). */
static bool is_attr(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c >= 0x7f || c == ';')
            return false;
    }
    return true;
}

static int copy_str(char *dst, size_t max, const char *s)
{
    size_t n = strlen(s);
    if (n > max)
        return -1;
    memcpy(dst, s, n);
    memset(dst + n, 0, max + 1 - n);
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        *out = false;
        return 0;
    }
    return -1;
}

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    if (!*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

static int parse_duration(const char *s, int64_t *out)
{
    if (cr_duration_parse(s, out) != 0 || *out < 0)
        return -1;
    return 0;
}

int cr_persist_policy_set(cr_persist_policy_t *p, cr_persist_key_t key, const char *text,
                          bool first_item, char *err, size_t err_cap)
{
    bool b = false;
    uint64_t u = 0;
    int64_t ns = 0;
    switch (key) {
    case CR_PK_MODE: {
        size_t i;
        for (i = 0; i < CR_ARRAY_LEN(mode_names); i++)
            if (strcmp(mode_names[i], text) == 0)
                break;
        if (i == CR_ARRAY_LEN(mode_names))
            return bad(err, err_cap, key,
                       "want vcap, insert, rewrite, prefix, learn, source_ip or header", text);
        p->mode = (uint8_t)i;
        break;
    }
    case CR_PK_COOKIE:
    case CR_PK_HEADER:
        if (text[0] && !is_token(text))
            return bad(err, err_cap, key, "not a valid name", text);
        if (copy_str(key == CR_PK_COOKIE ? p->cookie : p->header, CR_PERSIST_NAME_MAX, text) != 0)
            return bad(err, err_cap, key, "longer than 64 bytes", NULL);
        break;
    case CR_PK_DOMAIN:
    case CR_PK_PATH:
        if (!is_attr(text))
            return bad(err, err_cap, key, "holds a control byte or ';'", text);
        if (copy_str(key == CR_PK_DOMAIN ? p->domain : p->path, CR_PERSIST_ATTR_MAX, text) != 0)
            return bad(err, err_cap, key, "longer than 256 bytes", NULL);
        break;
    case CR_PK_SECRET:
    case CR_PK_PREVIOUS_SECRET:
        if (copy_str(key == CR_PK_SECRET ? p->secret : p->previous_secret, CR_PERSIST_SECRET_MAX,
                     text) != 0)
            return bad(err, err_cap, key, "longer than 256 bytes", NULL);
        break;
    case CR_PK_MAX_AGE:
    case CR_PK_MAX_IDLE:
    case CR_PK_MAX_LIFE:
        if (parse_duration(text, &ns) != 0)
            return bad(err, err_cap, key, "expected a duration such as \"30m\"", text);
        if (key == CR_PK_MAX_AGE)
            p->max_age_ns = ns;
        else if (key == CR_PK_MAX_IDLE)
            p->max_idle_ns = ns;
        else
            p->max_life_ns = ns;
        break;
    case CR_PK_HTTP_ONLY:
    case CR_PK_SECURE:
    case CR_PK_INDIRECT:
    case CR_PK_NOCACHE:
    case CR_PK_FALLBACK:
    case CR_PK_LEARN_FROM_REQUESTS:
        if (parse_bool(text, &b) != 0)
            return bad(err, err_cap, key, "expected true or false", text);
        if (key == CR_PK_HTTP_ONLY)
            p->http_only = b;
        else if (key == CR_PK_SECURE)
            p->secure = b;
        else if (key == CR_PK_INDIRECT)
            p->indirect = b;
        else if (key == CR_PK_NOCACHE)
            p->nocache = b;
        else if (key == CR_PK_FALLBACK)
            p->fallback = b;
        else
            p->learn_from_requests = b;
        break;
    case CR_PK_SAME_SITE:
        if (text[0] == '\0')
            p->same_site = CR_PERSIST_SAMESITE_UNSET;
        else if (strcasecmp(text, "lax") == 0)
            p->same_site = CR_PERSIST_SAMESITE_LAX;
        else if (strcasecmp(text, "strict") == 0)
            p->same_site = CR_PERSIST_SAMESITE_STRICT;
        else if (strcasecmp(text, "none") == 0)
            p->same_site = CR_PERSIST_SAMESITE_NONE;
        else
            return bad(err, err_cap, key, "want Lax, Strict, None or \"\"", text);
        break;
    case CR_PK_TABLE_SIZE:
        if (parse_uint(text, 100000000, &u) != 0 || u == 0)
            return bad(err, err_cap, key, "expected an integer in 1..100000000", text);
        p->table_size = (uint32_t)u;
        break;
    case CR_PK_IP_PREFIX:
        if (parse_uint(text, 32, &u) != 0)
            return bad(err, err_cap, key, "expected an integer in 0..32", text);
        p->ip_prefix = (uint8_t)u;
        break;
    case CR_PK_IP6_PREFIX:
        if (parse_uint(text, 128, &u) != 0)
            return bad(err, err_cap, key, "expected an integer in 0..128", text);
        p->ip6_prefix = (uint8_t)u;
        break;
    case CR_PK_FALLBACK_TO:
        if (text[0] == '\0')
            p->fallback_to_source_ip = false;
        else if (strcmp(text, "source_ip") == 0)
            p->fallback_to_source_ip = true;
        else
            return bad(err, err_cap, key, "want source_ip or \"\"", text);
        break;
    case CR_PK_TRUSTED_PROXIES: {
        if (first_item)
            p->trusted_proxies_len = 0;
        if (p->trusted_proxies_len == CR_PERSIST_MAX_PROXIES)
            return bad(err, err_cap, key, "more than 32 entries", NULL);
        if (cr_cidr_parse(text, &p->trusted_proxies[p->trusted_proxies_len]) != 0)
            return bad(err, err_cap, key, "expected an address or CIDR", text);
        p->trusted_proxies_len++;
        break;
    }
    case CR_PK_COUNT:
    default:
        return bad(err, err_cap, CR_PK_MODE, "unknown key", NULL);
    }
    p->set |= 1u << key;
    return 0;
}

int cr_persist_policy_validate(const cr_persist_policy_t *p, char *err, size_t err_cap)
{
    if (p->mode == CR_PERSIST_HEADER && !p->header[0])
        return bad(err, err_cap, CR_PK_HEADER, "mode header needs a header name", NULL);
    if (p->fallback_to_source_ip && p->mode != CR_PERSIST_INSERT &&
        p->mode != CR_PERSIST_LEARN && p->mode != CR_PERSIST_HEADER)
        return bad(err, err_cap, CR_PK_FALLBACK_TO, "only insert, learn and header modes fall back",
                   NULL);
    if (p->path[0] && p->path[0] != '/')
        return bad(err, err_cap, CR_PK_PATH, "must start with '/'", p->path);
    return 0;
}

/* Copies key k's value from src to dst. */
static void copy_key(cr_persist_policy_t *dst, const cr_persist_policy_t *src, cr_persist_key_t k)
{
    switch (k) {
    case CR_PK_MODE: dst->mode = src->mode; break;
    case CR_PK_COOKIE: memcpy(dst->cookie, src->cookie, sizeof dst->cookie); break;
    case CR_PK_DOMAIN: memcpy(dst->domain, src->domain, sizeof dst->domain); break;
    case CR_PK_PATH: memcpy(dst->path, src->path, sizeof dst->path); break;
    case CR_PK_MAX_AGE: dst->max_age_ns = src->max_age_ns; break;
    case CR_PK_HTTP_ONLY: dst->http_only = src->http_only; break;
    case CR_PK_SECURE: dst->secure = src->secure; break;
    case CR_PK_SAME_SITE: dst->same_site = src->same_site; break;
    case CR_PK_INDIRECT: dst->indirect = src->indirect; break;
    case CR_PK_NOCACHE: dst->nocache = src->nocache; break;
    case CR_PK_MAX_IDLE: dst->max_idle_ns = src->max_idle_ns; break;
    case CR_PK_MAX_LIFE: dst->max_life_ns = src->max_life_ns; break;
    case CR_PK_FALLBACK: dst->fallback = src->fallback; break;
    case CR_PK_HEADER: memcpy(dst->header, src->header, sizeof dst->header); break;
    case CR_PK_TABLE_SIZE: dst->table_size = src->table_size; break;
    case CR_PK_TRUSTED_PROXIES:
        memcpy(dst->trusted_proxies, src->trusted_proxies, sizeof dst->trusted_proxies);
        dst->trusted_proxies_len = src->trusted_proxies_len;
        break;
    case CR_PK_IP_PREFIX: dst->ip_prefix = src->ip_prefix; break;
    case CR_PK_IP6_PREFIX: dst->ip6_prefix = src->ip6_prefix; break;
    case CR_PK_FALLBACK_TO: dst->fallback_to_source_ip = src->fallback_to_source_ip; break;
    case CR_PK_LEARN_FROM_REQUESTS: dst->learn_from_requests = src->learn_from_requests; break;
    case CR_PK_SECRET: memcpy(dst->secret, src->secret, sizeof dst->secret); break;
    case CR_PK_PREVIOUS_SECRET:
        memcpy(dst->previous_secret, src->previous_secret, sizeof dst->previous_secret);
        break;
    case CR_PK_COUNT: break;
    }
}

void cr_persist_policy_merge(cr_persist_policy_t *out, const cr_persist_policy_t *base,
                             const cr_persist_policy_t *over)
{
    if (out != base)
        memcpy(out, base, sizeof *out);
    for (int k = 0; k < CR_PK_COUNT; k++)
        if (over->set & (1u << k))
            copy_key(out, over, (cr_persist_key_t)k);
    out->set = base->set | over->set;
}

bool cr_persist_policy_equal(const cr_persist_policy_t *a, const cr_persist_policy_t *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

const char *cr_persist_policy_cookie(const cr_persist_policy_t *p)
{
    if (p->cookie[0])
        return p->cookie;
    return p->mode == CR_PERSIST_INSERT || p->mode == CR_PERSIST_REWRITE ? "CROUTERID"
                                                                         : "JSESSIONID";
}

unsigned cr_persist_policy_ip6_prefix(const cr_persist_policy_t *p)
{
    return p->ip6_prefix == CR_PERSIST_IP6_DERIVED ? (unsigned)p->ip_prefix + 96u : p->ip6_prefix;
}

bool cr_persist_policy_differs(const cr_persist_policy_t *p, cr_persist_key_t key)
{
    cr_persist_policy_t d, tmp;
    cr_persist_policy_defaults(&d);
    memcpy(&tmp, &d, sizeof tmp);
    copy_key(&tmp, p, key);
    return !cr_persist_policy_equal(&tmp, &d);
}

/* --- CIDRs ---------------------------------------------------------------- */

int cr_cidr_parse(const char *s, cr_cidr_t *out)
{
    char buf[64];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof buf)
        return CR_EBAD;
    memcpy(buf, s, n + 1);
    char *slash = strchr(buf, '/');
    uint64_t bits = 0;
    bool have_bits = false;
    if (slash) {
        *slash = '\0';
        if (parse_uint(slash + 1, 128, &bits) != 0)
            return CR_EBAD;
        have_bits = true;
    }
    memset(out, 0, sizeof *out);
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        if (have_bits && bits > 32)
            return CR_EBAD;
        out->addr[10] = out->addr[11] = 0xff;
        memcpy(out->addr + 12, &a4, 4);
        out->bits = (uint8_t)((have_bits ? bits : 32) + 96);
    } else if (inet_pton(AF_INET6, buf, &a6) == 1) {
        memcpy(out->addr, &a6, 16);
        out->bits = (uint8_t)(have_bits ? bits : 128);
    } else {
        return CR_EBAD;
    }
    /* Clear host bits so equal networks compare equal. */
    for (unsigned i = out->bits; i < 128; i++)
        out->addr[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
    return 0;
}

bool cr_cidr_contains(const cr_cidr_t *c, const uint8_t addr[16])
{
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (c->addr[full] & mask) == (addr[full] & mask);
}

void cr_cidr_format(const cr_cidr_t *c, char *out, size_t cap)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char a[INET6_ADDRSTRLEN];
    if (c->bits >= 96 && memcmp(c->addr, mapped, 12) == 0) {
        inet_ntop(AF_INET, c->addr + 12, a, sizeof a);
        snprintf(out, cap, "%s/%u", a, (unsigned)(c->bits - 96));
    } else {
        inet_ntop(AF_INET6, c->addr, a, sizeof a);
        snprintf(out, cap, "%s/%u", a, (unsigned)c->bits);
    }
}
