/* config/persistence.h - the session persistence policy (issue 5): its keys, defaults, merge.
 *
 * The policy is read from two places with the same keys: the config's
 * `session_persistence:` block (config.c) and a register message's
 * `options.session_persistence` object (registry/message.c). Both front ends
 * turn each value into text (YAML scalars are text; JSON true/false and
 * integers are printed) and call cr_persist_policy_set(), so there is one
 * parser and one set of error messages. The router's data path
 * (router/persistence.c) reads the result.
 *
 * Why here and not in router/: registry/ stores each endpoint's effective
 * policy and may not depend on router/; config/ is below both.
 *
 * The struct holds every string in fixed arrays, so a policy is copied,
 * compared and freed as one block (no owned pointers). Pure functions.
 */
#ifndef CR_CONFIG_PERSISTENCE_H
#define CR_CONFIG_PERSISTENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CR_PERSIST_NAME_MAX 64     /* cookie and header names, bytes */
#define CR_PERSIST_ATTR_MAX 256    /* cookie Domain and Path, bytes */
#define CR_PERSIST_SECRET_MAX 256  /* secrets, bytes */
#define CR_PERSIST_MAX_PROXIES 32  /* trusted_proxies entries */
#define CR_PERSIST_IP6_DERIVED 255 /* ip6_prefix not given: /(ip_prefix + 96), as before the key existed */

typedef enum {
    CR_PERSIST_VCAP = 0,          /* gorouter's JSESSIONID + __VCAP_ID__ */
    CR_PERSIST_INSERT,
    CR_PERSIST_REWRITE,
    CR_PERSIST_PREFIX,
    CR_PERSIST_LEARN,
    CR_PERSIST_SOURCE_IP,
    CR_PERSIST_HEADER,
} cr_persist_mode_t;

typedef enum {
    CR_PERSIST_SAMESITE_UNSET = 0,
    CR_PERSIST_SAMESITE_LAX,
    CR_PERSIST_SAMESITE_STRICT,
    CR_PERSIST_SAMESITE_NONE,
} cr_persist_samesite_t;

/* One key each; a policy's `set` mask has bit (1u << key) for every key it
 * was given explicitly. */
typedef enum {
    CR_PK_MODE = 0,
    CR_PK_COOKIE,
    CR_PK_DOMAIN,
    CR_PK_PATH,
    CR_PK_MAX_AGE,
    CR_PK_HTTP_ONLY,
    CR_PK_SECURE,
    CR_PK_SAME_SITE,
    CR_PK_INDIRECT,
    CR_PK_NOCACHE,
    CR_PK_MAX_IDLE,
    CR_PK_MAX_LIFE,
    CR_PK_FALLBACK,
    CR_PK_HEADER,
    CR_PK_TABLE_SIZE,
    CR_PK_TRUSTED_PROXIES,
    CR_PK_IP_PREFIX,
    CR_PK_IP6_PREFIX,
    CR_PK_FALLBACK_TO,
    CR_PK_LEARN_FROM_REQUESTS,
    CR_PK_SECRET,
    CR_PK_PREVIOUS_SECRET,
    CR_PK_COUNT
} cr_persist_key_t;

/* A network: IPv4 is stored IPv4-mapped (::ffff:a.b.c.d) with bits + 96. */
typedef struct cr_cidr {
    uint8_t addr[16];
    uint8_t bits;                 /* 0..128 */
} cr_cidr_t;

typedef struct cr_persist_policy {
    uint32_t set;                 /* bit (1u << cr_persist_key_t) per key given explicitly */
    uint8_t mode;                 /* cr_persist_mode_t */
    uint8_t same_site;            /* cr_persist_samesite_t */
    uint8_t ip_prefix;            /* 0..32: IPv4 /N */
    uint8_t ip6_prefix;           /* 0..128: IPv6 /N; CR_PERSIST_IP6_DERIVED: ip_prefix + 96 */
    bool fallback_to_source_ip;   /* fallback_to: source_ip */
    bool http_only;
    bool secure;
    bool indirect;
    bool nocache;
    bool fallback;
    bool learn_from_requests;
    uint32_t table_size;          /* learn entries, >= 1 */
    int64_t max_age_ns;           /* 0 = session cookie */
    int64_t max_idle_ns;          /* 0 = no limit */
    int64_t max_life_ns;          /* 0 = no limit */
    uint32_t trusted_proxies_len;
    cr_cidr_t trusted_proxies[CR_PERSIST_MAX_PROXIES];
    char cookie[CR_PERSIST_NAME_MAX + 1];     /* "" = the mode's default (cr_persist_policy_cookie) */
    char header[CR_PERSIST_NAME_MAX + 1];
    char domain[CR_PERSIST_ATTR_MAX + 1];
    char path[CR_PERSIST_ATTR_MAX + 1];
    char secret[CR_PERSIST_SECRET_MAX + 1];
    char previous_secret[CR_PERSIST_SECRET_MAX + 1];
} cr_persist_policy_t;

/* The defaults of the YAML block (mode vcap), nothing marked set.
 * Zeroes the whole struct first, so equal policies compare equal bytewise. */
void cr_persist_policy_defaults(cr_persist_policy_t *p);

/* The key called name (exact, lower case); -1 when unknown. */
int cr_persist_key_find(const char *name);
const char *cr_persist_key_name(cr_persist_key_t key);

/* Sets one key from text: strings as is; booleans "true"/"false"; integers
 * in decimal; durations Go-style ("30m", "1h30m", "0"); trusted_proxies
 * takes one CIDR (or bare address) per call, the first call of a policy's
 * parse replacing the inherited list (pass first_item = true). Returns 0, or
 * CR_EBAD with a one-line reason naming the key in err (never the secret). */
int cr_persist_policy_set(cr_persist_policy_t *p, cr_persist_key_t key, const char *text,
                          bool first_item, char *err, size_t err_cap);

/* Checks combinations (header mode needs a header name, fallback_to only
 * with modes that can lack a key, ...). 0 or CR_EBAD with a reason. */
int cr_persist_policy_validate(const cr_persist_policy_t *p, char *err, size_t err_cap);

/* out = base with every key that over has set replaced by over's value;
 * out->set is the union. out may alias base. */
void cr_persist_policy_merge(cr_persist_policy_t *out, const cr_persist_policy_t *base,
                             const cr_persist_policy_t *over);

/* Bytewise equality (both made with cr_persist_policy_defaults first). */
bool cr_persist_policy_equal(const cr_persist_policy_t *a, const cr_persist_policy_t *b);

/* The cookie name in effect: the configured one, else CROUTERID for
 * insert/rewrite and JSESSIONID for prefix/learn (and vcap). */
const char *cr_persist_policy_cookie(const cr_persist_policy_t *p);

/* The IPv6 prefix length in effect (0..128): ip6_prefix when given, else
 * ip_prefix + 96, so /N of IPv4 and of IPv4-mapped IPv6 agree. */
unsigned cr_persist_policy_ip6_prefix(const cr_persist_policy_t *p);

/* Whether key differs from the default policy (for /routes). */
bool cr_persist_policy_differs(const cr_persist_policy_t *p, cr_persist_key_t key);

const char *cr_persist_mode_name(cr_persist_mode_t mode);
const char *cr_persist_samesite_name(cr_persist_samesite_t s); /* "" when unset */

/* Parses "a.b.c.d[/n]" or an IPv6 address with optional "/n". 0 or CR_EBAD. */
int cr_cidr_parse(const char *s, cr_cidr_t *out);

/* Whether the 16-byte (IPv4-mapped for IPv4) address is inside c. */
bool cr_cidr_contains(const cr_cidr_t *c, const uint8_t addr[16]);

/* Writes "a.b.c.d/n" or "v6/n" into out (>= 64 bytes). */
void cr_cidr_format(const cr_cidr_t *c, char *out, size_t cap);

#endif
