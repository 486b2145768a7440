/* registry/message.c - decodes router.register / router.unregister payloads.
 *
 * Mirrors Go's encoding/json on gorouter's RegistryMessage: object keys match
 * field names case-insensitively, unknown keys are ignored, the last of
 * duplicate keys wins, and JSON null leaves a scalar field as it was (but
 * clears "tags" and "uris", which are a map and a slice in Go). One known
 * difference: jansson folds byte-identical duplicate keys before we see
 * them, so {"port":1,"port":null} has no port here (Go keeps 1). Any type
 * mismatch rejects the whole message. Unlike gorouter, host, a port and at
 * least one non-empty uri are required.
 *
 * The decode runs in two passes: the first walks the object's keys once and
 * remembers (borrowed) the jansson value of each known field, the second
 * checks types and copies into the output. That keeps the key matching to one
 * table scan per key and makes "last duplicate wins" free.
 *
 * Fast path. Nearly every message is a flat object of plain strings,
 * integers, a uris array and a tags map of strings, and jansson's lexer was
 * most of a message's cost (~4 us of ~5). fast_decode() parses exactly that
 * shape in one pass straight into the output; on anything else (escapes,
 * non-ASCII, null, floats, nested or unknown-typed values, options, a field
 * given twice, a value the rules below would reject, a missing field) it
 * gives up, frees what it took, and the message goes through jansson as
 * before. So it only ever accepts what the jansson path accepts, with the
 * same result (test_message.c compares the two on mutated messages), and
 * every error still comes from the jansson path.
 *
 * jansson allocates every value, key and hash table of the tree it builds
 * (about 25 malloc/free pairs for one registration). During a decode those
 * come from a per-thread bump arena that is reset afterwards: the allocator
 * functions handed to json_set_alloc_funcs (once, process-wide) use the
 * arena only on a thread inside cr_register_msg_decode and plain
 * malloc/free everywhere else, so other jansson users (the status server)
 * are unaffected. A tree too big for the arena spills to malloc.
 * Threads: any; per-thread arena only. Owns nothing beyond the output it fills.
 */
#include "registry/message.h"
#include "registry/internal.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/defs.h"
#include "common/xalloc.h"

enum field {
    F_HOST,
    F_PORT,
    F_TLS_PORT,
    F_URIS,
    F_APP,
    F_PRIVATE_INSTANCE_ID,
    F_PRIVATE_INSTANCE_INDEX,
    F_TAGS,
    F_STALE_THRESHOLD,
    F_ROUTE_SERVICE_URL,
    F_SERVER_CERT_DOMAIN_SAN,
    F_ISOLATION_SEGMENT,
    F_PROTOCOL,
    F_AVAILABILITY_ZONE,
    F_ENDPOINT_UPDATED_AT_NS,
    F_OPTIONS,
    F_COUNT
};

static const struct {
    const char *name;
    size_t len;
} field_names[F_COUNT] = {
#define FIELD(id, s) [id] = { s, sizeof(s) - 1 }
    FIELD(F_HOST, "host"),
    FIELD(F_PORT, "port"),
    FIELD(F_TLS_PORT, "tls_port"),
    FIELD(F_URIS, "uris"),
    FIELD(F_APP, "app"),
    FIELD(F_PRIVATE_INSTANCE_ID, "private_instance_id"),
    FIELD(F_PRIVATE_INSTANCE_INDEX, "private_instance_index"),
    FIELD(F_TAGS, "tags"),
    FIELD(F_STALE_THRESHOLD, "stale_threshold_in_seconds"),
    FIELD(F_ROUTE_SERVICE_URL, "route_service_url"),
    FIELD(F_SERVER_CERT_DOMAIN_SAN, "server_cert_domain_san"),
    FIELD(F_ISOLATION_SEGMENT, "isolation_segment"),
    FIELD(F_PROTOCOL, "protocol"),
    FIELD(F_AVAILABILITY_ZONE, "availability_zone"),
    FIELD(F_ENDPOINT_UPDATED_AT_NS, "endpoint_updated_at_ns"),
    FIELD(F_OPTIONS, "options"),
#undef FIELD
};

/* --- the decode arena ------------------------------------------------- */

#define ARENA_BYTES (32 * 1024)

typedef struct decode_arena {
    char *base;    /* owned: ARENA_BYTES, freed at thread exit */
    size_t used;
    bool active;   /* inside cr_register_msg_decode on this thread */
} decode_arena_t;

static __thread decode_arena_t arena;
static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;

static void *arena_malloc(size_t n)
{
    if (arena.active) {
        size_t at = (arena.used + 15) & ~(size_t)15;
        if (n <= ARENA_BYTES - at) {
            arena.used = at + n;
            return arena.base + at;
        }
    }
    return malloc(n);
}

static void arena_free(void *p)
{
    /* Arena blocks are reclaimed all at once when the decode ends. */
    if (arena.base && (char *)p >= arena.base && (char *)p < arena.base + ARENA_BYTES)
        return;
    free(p);
}

static void on_arena_thread_exit(void *base)
{
    free(base);
}

static void arena_setup(void)
{
    pthread_key_create(&arena_key, on_arena_thread_exit);
    json_set_alloc_funcs(arena_malloc, arena_free);
}

/* Starts using this thread's arena for jansson. */
static void arena_begin(void)
{
    pthread_once(&arena_once, arena_setup);
    if (!arena.base) {
        arena.base = cr_xmalloc(ARENA_BYTES);
        pthread_setspecific(arena_key, arena.base);
    }
    arena.used = 0;
    arena.active = true;
}

/* Stops; every arena block of this decode must be freed by now. */
static void arena_end(void)
{
    arena.active = false;
    arena.used = 0;
}

static void set_err(char *err, size_t err_cap, const char *fmt, const char *what)
{
    if (err && err_cap > 0)
        snprintf(err, err_cap, fmt, what);
}

static int find_field(const char *key, size_t key_len)
{
    for (int i = 0; i < F_COUNT; i++) {
        if (field_names[i].len == key_len && strncasecmp(field_names[i].name, key, key_len) == 0)
            return i;
    }
    return -1;
}

/* A string field: NULL for "" (and for absent or null, handled by the caller).
 * Returns 0 or CR_EBAD on a type mismatch. */
static int take_string(const json_t *v, char **out)
{
    if (!json_is_string(v))
        return CR_EBAD;
    size_t n = json_string_length(v);
    *out = n ? cr_xmemdup0(json_string_value(v), n) : NULL;
    return 0;
}

static int take_int(const json_t *v, int64_t min, int64_t max, int64_t *out)
{
    if (!json_is_integer(v))
        return CR_EBAD;
    json_int_t n = json_integer_value(v);
    if (n < min || n > max)
        return CR_EBAD;
    *out = (int64_t)n;
    return 0;
}

static int take_tags(const json_t *v, cr_register_msg_t *m)
{
    if (json_is_null(v)) /* Go sets a nil map: /routes shows null */
        return 0;
    if (!json_is_object(v))
        return CR_EBAD;
    size_t n = json_object_size(v);
    m->has_tags = true;
    if (n == 0)
        return 0;
    m->tags = cr_xcalloc(n, sizeof *m->tags);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        if (!json_is_string(val) && !json_is_null(val))
            return CR_EBAD; /* the caller frees what was taken so far */
        cr_tag_t *t = &m->tags[m->tags_len++];
        t->key = cr_xstrdup(key);
        t->value = json_is_string(val)
                       ? cr_xmemdup0(json_string_value(val), json_string_length(val))
                       : cr_xstrdup("");
    }
    return 0;
}

static int take_uris(const json_t *v, cr_register_msg_t *m)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return CR_EBAD;
    size_t n = json_array_size(v);
    if (n == 0)
        return 0;
    m->uris = cr_xcalloc(n, sizeof *m->uris);
    for (size_t i = 0; i < n; i++) {
        const json_t *u = json_array_get(v, i);
        if (json_is_null(u))
            continue; /* Go decodes it as "", which names no route */
        if (!json_is_string(u))
            return CR_EBAD;
        size_t len = json_string_length(u);
        if (len == 0)
            continue;
        m->uris[m->uris_len++] = cr_xmemdup0(json_string_value(u), len);
    }
    return 0;
}

/* One JSON value as the text cr_persist_policy_set() takes: strings as
 * they are, booleans and integers printed. NULL for other types. */
static const char *persist_text(const json_t *v, char *buf, size_t cap)
{
    if (json_is_string(v))
        return strlen(json_string_value(v)) == json_string_length(v) ? json_string_value(v) : NULL;
    if (json_is_true(v))
        return "true";
    if (json_is_false(v))
        return "false";
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

/* options.session_persistence: the same keys as the config block, durations
 * as strings. Returns 0 with m->persistence set, or CR_EBAD with the reason
 * in m->persistence_error (the message itself stays valid). */
static int take_persistence(const json_t *v, cr_register_msg_t *m)
{
    char *err = m->persistence_error;
    size_t cap = sizeof m->persistence_error;
    if (!json_is_object(v)) {
        snprintf(err, cap, "session_persistence: expected an object");
        return CR_EBAD;
    }
    cr_persist_policy_t *p = cr_xmalloc(sizeof *p);
    cr_persist_policy_defaults(p);
    const char *key;
    json_t *val;
    char num[32];
    json_object_foreach((json_t *)v, key, val) {
        int pk = cr_persist_key_find(key);
        if (pk < 0) {
            snprintf(err, cap, "session_persistence: unknown key \"%.48s\"", key);
            goto fail;
        }
        if (json_is_null(val))
            continue;
        if (pk == CR_PK_TRUSTED_PROXIES) {
            if (!json_is_array(val)) {
                snprintf(err, cap, "session_persistence.trusted_proxies: expected a list");
                goto fail;
            }
            p->trusted_proxies_len = 0;
            p->set |= 1u << CR_PK_TRUSTED_PROXIES;
            size_t i;
            json_t *item;
            json_array_foreach(val, i, item) {
                const char *t = json_is_string(item) ? json_string_value(item) : NULL;
                if (!t) {
                    snprintf(err, cap, "session_persistence.trusted_proxies: expected strings");
                    goto fail;
                }
                if (cr_persist_policy_set(p, CR_PK_TRUSTED_PROXIES, t, false, err, cap) != 0)
                    goto fail;
            }
            continue;
        }
        const char *t = persist_text(val, num, sizeof num);
        if (!t) {
            snprintf(err, cap, "session_persistence.%s: wrong type", cr_persist_key_name(pk));
            goto fail;
        }
        if (cr_persist_policy_set(p, (cr_persist_key_t)pk, t, true, err, cap) != 0)
            goto fail;
    }
    m->persistence = p;
    return 0;
fail:
    free(p);
    return CR_EBAD;
}

static int take_options(const json_t *v, cr_register_msg_t *m)
{
    if (!json_is_object(v))
        return CR_EBAD;
    const char *key;
    json_t *val;
    const json_t *lb = NULL;
    json_object_foreach((json_t *)v, key, val) {
        if (strcasecmp(key, "loadbalancing") == 0 && !json_is_null(val))
            lb = val;
        else if (strcasecmp(key, "session_persistence") == 0 && !json_is_null(val) &&
                 !m->persistence && !m->persistence_error[0])
            take_persistence(val, m);
    }
    if (!lb)
        return 0;
    if (!json_is_string(lb))
        return CR_EBAD;
    const char *s = json_string_value(lb);
    if (strcmp(s, "round-robin") == 0)
        m->lb_algo = CR_LB_ROUND_ROBIN;
    else if (strcmp(s, "least-connection") == 0)
        m->lb_algo = CR_LB_LEAST_CONNECTION;
    return 0;
}

/* Fills m from the remembered values. Returns 0, or CR_EBAD with the name of
 * the offending field in *what. */
static int fill(const json_t *const *f, cr_register_msg_t *m, const char **what)
{
    int64_t n = 0;
    for (int i = 0; i < F_COUNT; i++) {
        const json_t *v = f[i];
        if (!v)
            continue;
        *what = field_names[i].name;
        int rc = 0;
        switch (i) {
        case F_HOST: rc = take_string(v, &m->host); break;
        case F_PORT:
            rc = take_int(v, 0, 65535, &n);
            m->port = (uint16_t)n;
            break;
        case F_TLS_PORT:
            rc = take_int(v, 0, 65535, &n);
            m->tls_port = (uint16_t)n;
            break;
        case F_URIS: rc = take_uris(v, m); break;
        case F_APP: rc = take_string(v, &m->app); break;
        case F_PRIVATE_INSTANCE_ID: rc = take_string(v, &m->private_instance_id); break;
        case F_PRIVATE_INSTANCE_INDEX: rc = take_string(v, &m->private_instance_index); break;
        case F_TAGS: rc = take_tags(v, m); break;
        case F_STALE_THRESHOLD:
            rc = take_int(v, INT64_MIN, INT64_MAX, &m->stale_threshold_in_seconds);
            break;
        case F_ROUTE_SERVICE_URL:
            rc = take_string(v, &m->route_service_url);
            if (rc == 0 && m->route_service_url && strncmp(m->route_service_url, "https", 5) != 0) {
                *what = "route_service_url must be https";
                return CR_EBAD;
            }
            break;
        case F_SERVER_CERT_DOMAIN_SAN: rc = take_string(v, &m->server_cert_domain_san); break;
        case F_ISOLATION_SEGMENT: rc = take_string(v, &m->isolation_segment); break;
        case F_PROTOCOL: rc = take_string(v, &m->protocol); break;
        case F_AVAILABILITY_ZONE: rc = take_string(v, &m->availability_zone); break;
        case F_ENDPOINT_UPDATED_AT_NS:
            rc = take_int(v, INT64_MIN, INT64_MAX, &m->endpoint_updated_at_ns);
            break;
        case F_OPTIONS: rc = take_options(v, m); break;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* --- the fast path ------------------------------------------------------ */

typedef struct cursor {
    const char *p, *end;
} cursor_t;

static void skip_ws(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

/* A string of printable ASCII without escapes: *s, *n point into the data. */
static bool fast_string(cursor_t *c, const char **s, size_t *n)
{
    if (c->p >= c->end || *c->p != '"')
        return false;
    const char *b = ++c->p;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *s = b;
            *n = (size_t)(c->p - b);
            c->p++;
            return true;
        }
        if (ch < 0x20 || ch >= 0x7f || ch == '\\')
            return false;
        c->p++;
    }
    return false;
}

/* A JSON integer (no fraction or exponent) that fits int64_t. */
static bool fast_int(cursor_t *c, bool allow_negative, int64_t *out)
{
    bool neg = false;
    if (c->p < c->end && *c->p == '-' && allow_negative) {
        neg = true;
        c->p++;
    }
    const char *b = c->p;
    uint64_t v = 0; /* 19 digits fit */
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9' && c->p - b < 20)
        v = v * 10 + (uint64_t)(*c->p++ - '0');
    size_t nd = (size_t)(c->p - b);
    if (nd == 0 || nd > 19 || (nd > 1 && *b == '0'))
        return false;
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
        return false;
    if (v > (uint64_t)INT64_MAX + neg)
        return false; /* jansson: too big */
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* An unknown key's value: a plain string, an integer, true or false. */
static bool fast_skip_scalar(cursor_t *c)
{
    const char *s;
    size_t n;
    int64_t v;
    if (c->p < c->end && *c->p == '"')
        return fast_string(c, &s, &n);
    if (c->p < c->end && (*c->p == '-' || (*c->p >= '0' && *c->p <= '9')))
        return fast_int(c, true, &v);
    if ((size_t)(c->end - c->p) >= 4 && memcmp(c->p, "true", 4) == 0) {
        c->p += 4;
        return true;
    }
    if ((size_t)(c->end - c->p) >= 5 && memcmp(c->p, "false", 5) == 0) {
        c->p += 5;
        return true;
    }
    return false;
}

/* After a list item: 1 at ',' (another item follows), 0 at `close` (the
 * list ends), -1 at anything else. */
static int fast_list_next(cursor_t *c, char close)
{
    skip_ws(c);
    if (c->p < c->end && (*c->p == ',' || *c->p == close))
        return *c->p++ == ',' ? 1 : 0;
    return -1;
}

/* An object member's `"key" :`, whitespace around it included. */
static bool fast_key(cursor_t *c, const char **k, size_t *kn)
{
    skip_ws(c);
    if (!fast_string(c, k, kn))
        return false;
    skip_ws(c);
    if (c->p >= c->end || *c->p++ != ':')
        return false;
    skip_ws(c);
    return true;
}

static bool fast_uris(cursor_t *c, cr_register_msg_t *m)
{
    if (c->p >= c->end || *c->p != '[')
        return false;
    c->p++;
    size_t cap = 0;
    skip_ws(c);
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        return true;
    }
    for (;;) {
        const char *s;
        size_t n;
        skip_ws(c);
        if (!fast_string(c, &s, &n))
            return false;
        if (n > 0) {
            if (m->uris_len == cap) {
                cap = cap ? cap * 2 : 4;
                m->uris = cr_xrealloc(m->uris, cap * sizeof *m->uris);
            }
            m->uris[m->uris_len++] = cr_xmemdup0(s, n);
        }
        int more = fast_list_next(c, ']');
        if (more <= 0)
            return more == 0;
    }
}

#define CR_FAST_MAX_TAGS 32

static bool fast_tags(cursor_t *c, cr_register_msg_t *m)
{
    if (c->p >= c->end || *c->p != '{')
        return false;
    c->p++;
    m->has_tags = true;
    size_t cap = 0;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return true;
    }
    for (;;) {
        const char *k, *v;
        size_t kn, vn;
        if (!fast_key(c, &k, &kn) || !fast_string(c, &v, &vn))
            return false;
        /* The duplicate check is quadratic: many tags go to jansson, whose
         * object hash folds duplicates (a 256 KiB message of 26k tags took
         * 2.4 s here against jansson's 0.04 s). */
        if (m->tags_len >= CR_FAST_MAX_TAGS)
            return false;
        for (size_t i = 0; i < m->tags_len; i++) {
            if (strlen(m->tags[i].key) == kn && memcmp(m->tags[i].key, k, kn) == 0)
                return false; /* jansson folds duplicates: let it */
        }
        if (m->tags_len == cap) {
            cap = cap ? cap * 2 : 4;
            m->tags = cr_xrealloc(m->tags, cap * sizeof *m->tags);
        }
        cr_tag_t *t = &m->tags[m->tags_len++];
        t->key = cr_xmemdup0(k, kn);
        t->value = cr_xmemdup0(v, vn);
        int more = fast_list_next(c, '}');
        if (more <= 0)
            return more == 0;
    }
}

static bool fast_field(cursor_t *c, int f, cr_register_msg_t *m)
{
    char **str = NULL;
    int64_t n;
    switch (f) {
    case F_HOST: str = &m->host; break;
    case F_APP: str = &m->app; break;
    case F_PRIVATE_INSTANCE_ID: str = &m->private_instance_id; break;
    case F_PRIVATE_INSTANCE_INDEX: str = &m->private_instance_index; break;
    case F_ROUTE_SERVICE_URL: str = &m->route_service_url; break;
    case F_SERVER_CERT_DOMAIN_SAN: str = &m->server_cert_domain_san; break;
    case F_ISOLATION_SEGMENT: str = &m->isolation_segment; break;
    case F_PROTOCOL: str = &m->protocol; break;
    case F_AVAILABILITY_ZONE: str = &m->availability_zone; break;
    case F_PORT:
    case F_TLS_PORT:
        if (!fast_int(c, false, &n) || n > 65535)
            return false;
        if (f == F_PORT)
            m->port = (uint16_t)n;
        else
            m->tls_port = (uint16_t)n;
        return true;
    case F_STALE_THRESHOLD: return fast_int(c, true, &m->stale_threshold_in_seconds);
    case F_ENDPOINT_UPDATED_AT_NS: return fast_int(c, true, &m->endpoint_updated_at_ns);
    case F_URIS: return fast_uris(c, m);
    case F_TAGS: return fast_tags(c, m);
    default: return false; /* options */
    }
    const char *s;
    size_t len;
    if (!fast_string(c, &s, &len))
        return false;
    if (f == F_ROUTE_SERVICE_URL && len > 0 && (len < 5 || memcmp(s, "https", 5) != 0))
        return false;
    *str = len ? cr_xmemdup0(s, len) : NULL;
    return true;
}

/* Decodes the common shape into out (zeroed, lb_algo -1) and returns true,
 * or returns false with out zeroed again: the caller then uses jansson. */
static bool fast_decode(const char *data, size_t len, cr_register_msg_t *out)
{
    cursor_t c = { data, data + len };
    unsigned seen = 0;
    skip_ws(&c);
    if (c.p >= c.end || *c.p++ != '{')
        goto slow;
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}')
        goto slow; /* no fields: an error, reported by the slow path */
    for (;;) {
        const char *k;
        size_t kn;
        if (!fast_key(&c, &k, &kn))
            goto slow;
        int f = find_field(k, kn);
        if (f < 0) {
            if (!fast_skip_scalar(&c))
                goto slow;
        } else {
            if (seen & (1u << f))
                goto slow; /* last-wins and jansson's folding: the slow path */
            seen |= 1u << f;
            if (!fast_field(&c, f, out))
                goto slow;
        }
        int more = fast_list_next(&c, '}');
        if (more < 0)
            goto slow;
        if (more == 0)
            break;
    }
    skip_ws(&c);
    if (c.p != c.end || !out->host || (out->port == 0 && out->tls_port == 0) || out->uris_len == 0)
        goto slow;
    return true;
slow:
    cr_register_msg_deinit(out);
    return false;
}

int cr_register_msg_decode(const char *data, size_t len, cr_register_msg_t *out,
                           char *err, size_t err_cap)
{
    memset(out, 0, sizeof *out);
    out->lb_algo = -1;
    if (len > CR_REGISTER_MSG_MAX_BYTES) {
        set_err(err, err_cap, "%s", "message too big");
        return CR_ETOOBIG;
    }
    if (fast_decode(data, len, out))
        return 0;
    return cr_register_msg__decode_jansson(data, len, out, err, err_cap);
}

bool cr_register_msg__decode_fast(const char *data, size_t len, cr_register_msg_t *out)
{
    memset(out, 0, sizeof *out);
    out->lb_algo = -1;
    return len <= CR_REGISTER_MSG_MAX_BYTES && fast_decode(data, len, out);
}

int cr_register_msg__decode_jansson(const char *data, size_t len, cr_register_msg_t *out,
                                    char *err, size_t err_cap)
{
    memset(out, 0, sizeof *out);
    out->lb_algo = -1;
    if (len > CR_REGISTER_MSG_MAX_BYTES) {
        set_err(err, err_cap, "%s", "message too big");
        return CR_ETOOBIG;
    }

    json_error_t jerr;
    arena_begin();
    json_t *root = json_loadb(data, len, 0, &jerr);
    if (!root) {
        arena_end();
        set_err(err, err_cap, "%s", "invalid JSON");
        return CR_EBAD;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        arena_end();
        set_err(err, err_cap, "%s", "not a JSON object");
        return CR_EBAD;
    }

    /* Pass 1: remember the last value of each known key. JSON null leaves a
     * Go scalar or struct untouched but sets a map or slice to nil. */
    const json_t *f[F_COUNT] = { 0 };
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        int i = find_field(key, strlen(key));
        if (i < 0)
            continue;
        if (json_is_null(val) && i != F_TAGS && i != F_URIS)
            continue;
        f[i] = val;
    }

    const char *what = "";
    int rc = fill(f, out, &what);
    json_decref(root);
    arena_end();
    if (rc != 0) {
        cr_register_msg_deinit(out);
        if (strchr(what, ' '))
            set_err(err, err_cap, "%s", what);
        else
            set_err(err, err_cap, "%s: wrong type or out of range", what);
        return CR_EBAD;
    }

    const char *missing = NULL;
    if (!out->host)
        missing = "host";
    else if (out->port == 0 && out->tls_port == 0)
        missing = "port";
    else if (out->uris_len == 0)
        missing = "uris";
    if (missing) {
        cr_register_msg_deinit(out);
        set_err(err, err_cap, "missing %s", missing);
        return CR_EBAD;
    }
    return 0;
}

void cr_register_msg_deinit(cr_register_msg_t *msg)
{
    if (!msg)
        return;
    free(msg->host);
    for (size_t i = 0; i < msg->uris_len; i++)
        free(msg->uris[i]);
    free(msg->uris);
    free(msg->app);
    free(msg->private_instance_id);
    free(msg->private_instance_index);
    free(msg->route_service_url);
    free(msg->server_cert_domain_san);
    free(msg->isolation_segment);
    free(msg->protocol);
    free(msg->availability_zone);
    free(msg->persistence);
    for (size_t i = 0; i < msg->tags_len; i++) {
        free(msg->tags[i].key);
        free(msg->tags[i].value);
    }
    free(msg->tags);
    memset(msg, 0, sizeof *msg);
    msg->lb_algo = -1;
}
