/* config/config.c - loads gorouter-style YAML into a cr_config_t.
 *
 * Two passes. First, libyaml's event parser builds a small node tree that
 * keeps each node's line (for messages) and whether a scalar was plain (only
 * plain scalars may be null, booleans or integers, as in yaml.v3). Anchors are
 * registered when their node ends, so an alias can never point into its own
 * subtree and the tree has no cycles; aliased nodes are shared, and every node
 * sits on one list that frees them all. Second, the tree is walked against
 * key_table: each row is a dotted path, a setter, the field offset and a
 * range, so adding a key is one line. A path that prefixes some row ("status",
 * "status.routes") is a section and must be a map. Anything else is an unknown
 * key: a warning naming it (or, for a map, its leaves), its values never
 * interpreted, however deep they go.
 *
 * Merge keys ("<<: *base") are honoured; a budget on visited pairs stops
 * alias-bomb inputs. After the walk, finalize() applies gorouter's Process()
 * rules (0 => default, clamps, drain_timeout, stale threshold).
 *
 * Called from the main thread at start-up; no shared state. The loader owns
 * the node tree until it returns; the returned config is the caller's.
 */
#include "config/config.h"

#include "common/defs.h"
#include "common/xalloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define MIB (1024u * 1024u)
#define DEFAULT_MAX_HEADERS 200u
#define MAX_WARNINGS 200
#define MAX_NESTING 10000
#define MAX_MERGE_DEPTH 64
#define PAIR_BUDGET 100000
#define MAX_FILE_BYTES (16u * MIB)

/* ---- node tree ---------------------------------------------------------- */

typedef enum { N_SCALAR, N_MAP, N_SEQ } node_kind_t;

typedef struct node {
    node_kind_t kind;
    size_t line;          /* 1-based */
    bool plain;           /* scalar untagged and unquoted (or tagged int/bool/null/float) */
    bool dup_checked;     /* map keys already checked for duplicates */
    char *value;          /* owned; scalar text, NUL-terminated, may hold NULs */
    size_t len;           /* bytes in value */
    struct node **kids;   /* owned array, borrowed nodes; map: key, value, key, value... */
    size_t n, cap;
    char *anchor;         /* owned; registered when the node ends */
    struct node *next;    /* the loader's list of every node */
} node_t;

typedef struct {
    const char *name;     /* borrowed; used in messages */
    char *err;            /* borrowed caller buffer, may be NULL */
    size_t err_cap;
    bool failed;
    cr_config_t *cfg;     /* owned until returned */
    node_t *all;          /* every node, for freeing */
    struct anchor {
        char *name;       /* borrowed from node->anchor */
        node_t *node;     /* borrowed */
    } *anchors;           /* owned array */
    size_t anchors_len, anchors_cap;
    size_t pair_budget;
    size_t warnings_cap;
} loader_t;

static void fail_at(loader_t *ld, size_t line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes "<name>:<line>: <key>: <message>" unless an error is already set. */
static void fail_at(loader_t *ld, size_t line, const char *key, const char *fmt, ...)
{
    if (ld->failed)
        return;
    ld->failed = true;
    if (!ld->err || ld->err_cap == 0)
        return;
    int n = key ? snprintf(ld->err, ld->err_cap, "%s:%zu: %s: ", ld->name, line, key)
                : snprintf(ld->err, ld->err_cap, "%s:%zu: ", ld->name, line);
    if (n < 0 || (size_t)n >= ld->err_cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->err_cap - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Copies up to 48 bytes of s into buf, escaping anything unprintable, so a
 * fuzzed key or value cannot put control bytes into a log line. */
static const char *printable(const char *s, size_t len, char *buf, size_t cap)
{
    size_t o = 0;
    size_t i;
    for (i = 0; i < len && i < 48 && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '"' && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    if (i < len && o + 4 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

static const char *kind_name(const node_t *n)
{
    switch (n->kind) {
    case N_MAP:
        return "a map";
    case N_SEQ:
        return "a list";
    case N_SCALAR:
        break;
    }
    return "a scalar";
}

/* "got a map", "got \"abc\"", "got the string \"8080\"" for messages. */
static const char *describe(const node_t *n, char *buf, size_t cap)
{
    char tmp[256];
    if (n->kind != N_SCALAR)
        snprintf(buf, cap, "got %s", kind_name(n));
    else
        snprintf(buf, cap, "got %s\"%s\"", n->plain ? "" : "the string ",
                 printable(n->value, n->len, tmp, sizeof tmp));
    return buf;
}

static node_t *node_new(loader_t *ld, node_kind_t kind, const yaml_mark_t *mark, const yaml_char_t *anchor)
{
    node_t *n = cr_xcalloc(1, sizeof *n);
    n->kind = kind;
    n->line = mark->line + 1;
    if (anchor)
        n->anchor = cr_xstrdup((const char *)anchor);
    n->next = ld->all;
    ld->all = n;
    return n;
}

static void node_add(node_t *parent, node_t *kid)
{
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 4;
        parent->kids = cr_xrealloc(parent->kids, parent->cap * sizeof *parent->kids);
    }
    parent->kids[parent->n++] = kid;
}

static void register_anchor(loader_t *ld, node_t *n)
{
    if (!n->anchor)
        return;
    /* A later anchor of the same name shadows the earlier one, as in YAML. */
    if (ld->anchors_len == ld->anchors_cap) {
        ld->anchors_cap = ld->anchors_cap ? ld->anchors_cap * 2 : 8;
        ld->anchors = cr_xrealloc(ld->anchors, ld->anchors_cap * sizeof *ld->anchors);
    }
    ld->anchors[ld->anchors_len].name = n->anchor;
    ld->anchors[ld->anchors_len].node = n;
    ld->anchors_len++;
}

static node_t *find_anchor(loader_t *ld, const char *name)
{
    for (size_t i = ld->anchors_len; i-- > 0;)
        if (strcmp(ld->anchors[i].name, name) == 0)
            return ld->anchors[i].node;
    return NULL;
}

static bool tag_is(const yaml_char_t *tag, const char *suffix)
{
    static const char prefix[] = "tag:yaml.org,2002:";
    const char *t = (const char *)tag;
    return strncmp(t, prefix, sizeof prefix - 1) == 0 && strcmp(t + sizeof prefix - 1, suffix) == 0;
}

static bool scalar_is_plain(const yaml_event_t *ev)
{
    const yaml_char_t *tag = ev->data.scalar.tag;
    if (!tag)
        return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    return tag_is(tag, "int") || tag_is(tag, "bool") || tag_is(tag, "null") || tag_is(tag, "float");
}

static void free_nodes(loader_t *ld)
{
    node_t *n = ld->all;
    while (n) {
        node_t *next = n->next;
        free(n->value);
        free(n->kids);
        free(n->anchor);
        free(n);
        n = next;
    }
    ld->all = NULL;
    free(ld->anchors);
    ld->anchors = NULL;
    ld->anchors_len = ld->anchors_cap = 0;
}

/* Parses the first document of the stream into a tree. Returns 0 and the
 * root (NULL for an empty stream) or -1 with the error set. */
static int build_tree(loader_t *ld, const char *yaml, size_t len, node_t **root_out)
{
    yaml_parser_t parser;
    node_t **stack = NULL;
    size_t depth = 0, stack_cap = 0;
    node_t *root = NULL;
    bool done = false;

    *root_out = NULL;
    if (!yaml_parser_initialize(&parser)) {
        fail_at(ld, 0, NULL, "cannot initialise the YAML parser");
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);

    while (!done && !ld->failed) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            char ctx[96] = "";
            if (parser.context)
                snprintf(ctx, sizeof ctx, " (%s started at line %zu)", parser.context,
                         parser.context_mark.line + 1);
            fail_at(ld, parser.problem_mark.line + 1, NULL, "invalid YAML: %s%s",
                    parser.problem ? parser.problem : "syntax error", ctx);
            break;
        }
        node_t *n = NULL;
        bool opens = false;
        switch (ev.type) {
        case YAML_SCALAR_EVENT:
            n = node_new(ld, N_SCALAR, &ev.start_mark, ev.data.scalar.anchor);
            n->value = cr_xmemdup0(ev.data.scalar.value, ev.data.scalar.length);
            n->len = ev.data.scalar.length;
            n->plain = scalar_is_plain(&ev);
            register_anchor(ld, n);
            break;
        case YAML_SEQUENCE_START_EVENT:
            n = node_new(ld, N_SEQ, &ev.start_mark, ev.data.sequence_start.anchor);
            opens = true;
            break;
        case YAML_MAPPING_START_EVENT:
            n = node_new(ld, N_MAP, &ev.start_mark, ev.data.mapping_start.anchor);
            opens = true;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth > 0)
                register_anchor(ld, stack[--depth]);
            break;
        case YAML_ALIAS_EVENT:
            n = find_anchor(ld, (const char *)ev.data.alias.anchor);
            if (!n) {
                char tmp[256];
                const char *a = (const char *)ev.data.alias.anchor;
                fail_at(ld, ev.start_mark.line + 1, NULL, "unknown anchor '%s' referenced",
                        printable(a, strlen(a), tmp, sizeof tmp));
            }
            break;
        case YAML_DOCUMENT_END_EVENT:
        case YAML_STREAM_END_EVENT:
            /* Like yaml.v3's Unmarshal, only the first document counts. */
            done = true;
            break;
        default:
            break;
        }
        if (n && !ld->failed) {
            if (depth > 0)
                node_add(stack[depth - 1], n);
            else if (!root)
                root = n;
            if (opens) {
                if (depth == MAX_NESTING) {
                    fail_at(ld, n->line, NULL, "YAML nested deeper than %d levels", MAX_NESTING);
                } else {
                    if (depth == stack_cap) {
                        stack_cap = stack_cap ? stack_cap * 2 : 16;
                        stack = cr_xrealloc(stack, stack_cap * sizeof *stack);
                    }
                    stack[depth++] = n;
                }
            }
        }
        yaml_event_delete(&ev);
    }
    free(stack);
    yaml_parser_delete(&parser);
    if (ld->failed)
        return -1;
    *root_out = root;
    return 0;
}

/* ---- scalars ------------------------------------------------------------ */

static bool is_null(const node_t *n)
{
    if (n->kind != N_SCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
           strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0;
}

static bool has_nul(const node_t *n)
{
    return strlen(n->value) != n->len;
}

/* Parses a plain integer: optional sign, then decimal digits or 0x/0o/0b.
 * Returns 0, -1 when it is not an integer, -2 when it does not fit int64. */
static int scalar_int(const node_t *n, int64_t *out)
{
    if (n->kind != N_SCALAR || !n->plain || has_nul(n))
        return -1;
    const char *s = n->value;
    bool neg = false;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    unsigned base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o' || s[1] == 'b')) {
        base = s[1] == 'x' ? 16 : s[1] == 'o' ? 8 : 2;
        s += 2;
    }
    if (*s == '\0')
        return -1;
    uint64_t v = 0;
    bool overflow = false;
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (*s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (*s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else
            return -1;
        if (d >= base)
            return -1;
        if (v > (UINT64_MAX - d) / base)
            overflow = true;
        else
            v = v * base + d;
    }
    if (overflow || v > (neg ? (uint64_t)1 << 63 : (uint64_t)INT64_MAX))
        return -2;
    *out = neg ? (v == (uint64_t)1 << 63 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return 0;
}

static int scalar_bool(const node_t *n, bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO"};
    if (n->kind != N_SCALAR || !n->plain || has_nul(n))
        return -1;
    for (size_t i = 0; i < CR_ARRAY_LEN(yes); i++) {
        if (strcmp(n->value, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(n->value, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static void warn_unknown(loader_t *ld, const char *prefix, const node_t *key, const node_t *val, int depth);

/* ---- setters ------------------------------------------------------------ */

typedef struct key_def key_def_t;
typedef void (*setter_fn)(loader_t *ld, const key_def_t *k, const node_t *v);

struct key_def {
    const char *path;     /* dotted key */
    setter_fn set;
    size_t off;           /* field offset in cr_config_t */
    int64_t min, max;     /* integer range; durations: min is 0, max 0 means no limit */
    bool clamp;           /* integers above max become max instead of failing */
};

#define FIELD(cfg, k, type) ((type *)((char *)(cfg) + (k)->off))

/* Reads an integer in [k->min, k->max] (or clamped). Returns 0 or -1 (error set). */
static int get_int(loader_t *ld, const key_def_t *k, const node_t *v, int64_t *out)
{
    char d[300];
    int64_t x = 0;
    int rc = scalar_int(v, &x);
    if (rc == -1) {
        fail_at(ld, v->line, k->path, "expected an integer, %s", describe(v, d, sizeof d));
        return -1;
    }
    if (rc == -2 && !(k->clamp && v->value[0] != '-')) {
        fail_at(ld, v->line, k->path, "%s is out of range (%lld..%lld)",
                printable(v->value, v->len, d, sizeof d), (long long)k->min, (long long)k->max);
        return -1;
    }
    if (rc == -2 || (k->clamp && x > k->max)) {
        *out = k->max;
        return 0;
    }
    if (x < k->min || x > k->max) {
        fail_at(ld, v->line, k->path, "%lld is out of range (%lld..%lld)", (long long)x,
                (long long)k->min, (long long)k->max);
        return -1;
    }
    *out = x;
    return 0;
}

static void set_u16(loader_t *ld, const key_def_t *k, const node_t *v)
{
    int64_t x;
    if (get_int(ld, k, v, &x) == 0)
        *FIELD(ld->cfg, k, uint16_t) = (uint16_t)x;
}

static void set_u32(loader_t *ld, const key_def_t *k, const node_t *v)
{
    int64_t x;
    if (get_int(ld, k, v, &x) == 0)
        *FIELD(ld->cfg, k, uint32_t) = (uint32_t)x;
}

static void set_bool(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    bool b;
    if (scalar_bool(v, &b) != 0) {
        fail_at(ld, v->line, k->path, "expected true or false, %s", describe(v, d, sizeof d));
        return;
    }
    *FIELD(ld->cfg, k, bool) = b;
}

static void set_duration(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    int64_t ns = 0;
    if (v->kind != N_SCALAR) {
        fail_at(ld, v->line, k->path, "expected a duration such as \"30s\", %s", describe(v, d, sizeof d));
        return;
    }
    int rc = scalar_int(v, &ns);
    if (rc == 0 && ns == 0) {
        /* yaml.v3 accepts a bare 0 for a time.Duration. */
    } else if (rc != -1) {
        fail_at(ld, v->line, k->path, "invalid duration %s (a number needs a unit, e.g. \"%ss\")",
                printable(v->value, v->len, d, sizeof d), d);
        return;
    } else if (has_nul(v) || cr_duration_parse(v->value, &ns) != 0) {
        fail_at(ld, v->line, k->path, "invalid duration \"%s\"", printable(v->value, v->len, d, sizeof d));
        return;
    }
    if (ns < k->min) {
        fail_at(ld, v->line, k->path, "duration must not be negative (\"%s\")",
                printable(v->value, v->len, d, sizeof d));
        return;
    }
    if (k->max > 0 && ns > k->max) {
        fail_at(ld, v->line, k->path, "duration must be at most %lld us (\"%s\")",
                (long long)(k->max / 1000), printable(v->value, v->len, d, sizeof d));
        return;
    }
    *FIELD(ld->cfg, k, int64_t) = ns;
}

/* Returns the scalar's text, or NULL with the error set. */
static const char *get_string(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    if (v->kind != N_SCALAR) {
        fail_at(ld, v->line, k->path, "expected a string, %s", describe(v, d, sizeof d));
        return NULL;
    }
    if (has_nul(v)) {
        fail_at(ld, v->line, k->path, "string contains a NUL byte");
        return NULL;
    }
    return v->value;
}

static void replace_string(char **field, const char *s)
{
    free(*field);
    *field = cr_xstrdup(s);
}

static void set_string(loader_t *ld, const key_def_t *k, const node_t *v)
{
    const char *s = get_string(ld, k, v);
    if (s)
        replace_string(FIELD(ld->cfg, k, char *), s);
}

static void set_level(loader_t *ld, const key_def_t *k, const node_t *v)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", "fatal"};
    char d[300];
    const char *s = get_string(ld, k, v);
    if (!s)
        return;
    for (size_t i = 0; i < CR_ARRAY_LEN(levels); i++) {
        if (strcmp(s, levels[i]) == 0) {
            replace_string(FIELD(ld->cfg, k, char *), s);
            return;
        }
    }
    fail_at(ld, v->line, k->path, "invalid level \"%s\" (want debug, info, warn, error or fatal)",
            printable(v->value, v->len, d, sizeof d));
}

static void set_lb_algo(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    const char *s = get_string(ld, k, v);
    if (!s)
        return;
    if (cr_lb_algo_parse(s, FIELD(ld->cfg, k, cr_lb_algo_t)) != 0)
        fail_at(ld, v->line, k->path,
                "invalid balancing algorithm \"%s\" (want round-robin or least-connection)",
                printable(v->value, v->len, d, sizeof d));
}

static void free_strings(char **v, size_t len)
{
    for (size_t i = 0; i < len; i++)
        free(v[i]);
    free(v);
}

static void set_cookie_names(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    if (v->kind != N_SEQ) {
        fail_at(ld, v->line, k->path, "expected a list of cookie names, %s", describe(v, d, sizeof d));
        return;
    }
    char **names = cr_xcalloc(v->n ? v->n : 1, sizeof *names);
    size_t len = 0;
    for (size_t i = 0; i < v->n; i++) {
        const node_t *item = v->kids[i];
        if (item->kind != N_SCALAR || is_null(item) || item->len == 0 || has_nul(item)) {
            fail_at(ld, item->line, k->path, "item %zu: expected a non-empty cookie name, %s", i,
                    is_null(item) ? "got null" : describe(item, d, sizeof d));
            free_strings(names, len);
            return;
        }
        bool seen = false;
        for (size_t j = 0; j < len && !seen; j++)
            seen = strcmp(names[j], item->value) == 0;
        if (!seen) /* gorouter keeps the names as a set */
            names[len++] = cr_xstrdup(item->value);
    }
    cr_config_t *cfg = ld->cfg;
    free_strings(cfg->sticky_session_cookie_names, cfg->sticky_session_cookie_names_len);
    cfg->sticky_session_cookie_names = names;
    cfg->sticky_session_cookie_names_len = len;
}

static void add_warning(loader_t *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_warning(loader_t *ld, const char *fmt, ...)
{
    cr_config_t *cfg = ld->cfg;
    if (cfg->warnings_len > MAX_WARNINGS)
        return;
    char buf[512];
    if (cfg->warnings_len == MAX_WARNINGS) {
        snprintf(buf, sizeof buf, "more than %d warnings; the rest are not reported", MAX_WARNINGS);
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        /* A map merged in twice would otherwise repeat its warnings. */
        for (size_t i = 0; i < cfg->warnings_len; i++)
            if (strcmp(cfg->warnings[i], buf) == 0)
                return;
    }
    if (cfg->warnings_len == ld->warnings_cap) {
        ld->warnings_cap = ld->warnings_cap ? ld->warnings_cap * 2 : 8;
        cfg->warnings = cr_xrealloc(cfg->warnings, ld->warnings_cap * sizeof *cfg->warnings);
    }
    cfg->warnings[cfg->warnings_len++] = cr_xstrdup(buf);
}

static bool key_is(const node_t *key, const char *s)
{
    return key->kind == N_SCALAR && key->len == strlen(s) && memcmp(key->value, s, key->len) == 0;
}

static int cmp_key_idx(const void *a, const void *b)
{
    const node_t *x = *(node_t *const *)a, *y = *(node_t *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->value, y->value, n);
    if (c != 0)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

/* yaml.v3 rejects a map that names a key twice; so do we, once per map node.
 * Sorting keeps this O(n log n) on large fuzzed maps. Merge keys are exempt. */
static int check_duplicates(loader_t *ld, node_t *map, const char *where)
{
    if (map->dup_checked || map->n < 4)
        return 0;
    map->dup_checked = true;
    size_t npairs = map->n / 2;
    node_t **keys = cr_xmalloc(npairs * sizeof *keys);
    size_t nk = 0;
    for (size_t i = 0; i < npairs; i++) {
        node_t *key = map->kids[2 * i];
        if (key->kind == N_SCALAR && !(key->plain && key_is(key, "<<")))
            keys[nk++] = key;
    }
    qsort(keys, nk, sizeof *keys, cmp_key_idx);
    int rc = 0;
    for (size_t i = 1; i < nk; i++) {
        if (keys[i]->len == keys[i - 1]->len && memcmp(keys[i]->value, keys[i - 1]->value, keys[i]->len) == 0) {
            char p[256];
            fail_at(ld, keys[i]->line, where, "mapping key \"%s\" already defined at line %zu",
                    printable(keys[i]->value, keys[i]->len, p, sizeof p), keys[i - 1]->line);
            rc = -1;
            break;
        }
    }
    free(keys);
    return rc;
}

static void set_nats_hosts(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300], path[64];
    if (v->kind != N_SEQ) {
        fail_at(ld, v->line, k->path, "expected a list of {hostname, port} maps, %s", describe(v, d, sizeof d));
        return;
    }
    if (v->n == 0) {
        fail_at(ld, v->line, k->path, "must list at least one host");
        return;
    }
    cr_nats_host_t *hosts = cr_xcalloc(v->n, sizeof *hosts);
    size_t len = 0;
    for (size_t i = 0; i < v->n && !ld->failed; i++) {
        node_t *item = v->kids[i];
        snprintf(path, sizeof path, "%s[%zu]", k->path, i);
        if (item->kind != N_MAP) {
            fail_at(ld, item->line, path, "expected a map with hostname and port, %s", describe(item, d, sizeof d));
            break;
        }
        if (check_duplicates(ld, item, path) != 0)
            break;
        cr_nats_host_t *h = &hosts[len++];
        h->port = 4222;
        for (size_t j = 0; j + 1 < item->n && !ld->failed; j += 2) {
            const node_t *key = item->kids[j], *val = item->kids[j + 1];
            char sub[96];
            if (key_is(key, "hostname")) {
                snprintf(sub, sizeof sub, "%s.hostname", path);
                key_def_t hk = {.path = sub};
                const char *s = is_null(val) ? "" : get_string(ld, &hk, val);
                if (s) {
                    free(h->hostname);
                    h->hostname = cr_xstrdup(s);
                }
            } else if (key_is(key, "port")) {
                snprintf(sub, sizeof sub, "%s.port", path);
                key_def_t pk = {.path = sub, .min = 1, .max = 65535};
                int64_t x;
                if (!is_null(val) && get_int(ld, &pk, val, &x) == 0)
                    h->port = (uint16_t)x;
            } else if (key->kind == N_SCALAR) {
                warn_unknown(ld, path, key, val, 0);
            } else {
                fail_at(ld, key->line, path, "mapping key must be a scalar, %s", describe(key, d, sizeof d));
            }
        }
        if (!ld->failed && (!h->hostname || !h->hostname[0]))
            fail_at(ld, item->line, path, "hostname is missing");
    }
    if (ld->failed) {
        for (size_t i = 0; i < len; i++)
            free(hosts[i].hostname);
        free(hosts);
        return;
    }
    cr_config_t *cfg = ld->cfg;
    for (size_t i = 0; i < cfg->nats_hosts_len; i++)
        free(cfg->nats_hosts[i].hostname);
    free(cfg->nats_hosts);
    cfg->nats_hosts = hosts;
    cfg->nats_hosts_len = len;
}

/* session_persistence: a map of config/persistence.h keys; every value is
 * handed to cr_persist_policy_set() as text (trusted_proxies as a list). */
static void set_persistence(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300], err[256];
    if (v->kind != N_MAP) {
        fail_at(ld, v->line, k->path, "expected a map, %s", describe(v, d, sizeof d));
        return;
    }
    if (check_duplicates(ld, (node_t *)v, k->path) != 0)
        return;
    cr_persist_policy_t *p = &ld->cfg->session_persistence;
    for (size_t i = 0; i + 1 < v->n && !ld->failed; i += 2) {
        const node_t *key = v->kids[i], *val = v->kids[i + 1];
        int pk = key->kind == N_SCALAR && !has_nul(key) ? cr_persist_key_find(key->value) : -1;
        if (pk < 0) {
            fail_at(ld, key->line, k->path, "unknown key \"%s\"",
                    key->kind == N_SCALAR ? printable(key->value, key->len, d, sizeof d) : "?");
            return;
        }
        if (is_null(val))
            continue;
        if (pk == CR_PK_TRUSTED_PROXIES) {
            if (val->kind != N_SEQ) {
                fail_at(ld, val->line, k->path, "trusted_proxies: expected a list of CIDRs, %s",
                        describe(val, d, sizeof d));
                return;
            }
            p->trusted_proxies_len = 0;
            p->set |= 1u << CR_PK_TRUSTED_PROXIES;
            for (size_t j = 0; j < val->n; j++) {
                const node_t *item = val->kids[j];
                if (item->kind != N_SCALAR || has_nul(item) ||
                    cr_persist_policy_set(p, CR_PK_TRUSTED_PROXIES, item->value, false, err,
                                          sizeof err) != 0) {
                    fail_at(ld, item->line, NULL, "%s",
                            item->kind == N_SCALAR ? err : "session_persistence.trusted_proxies: expected a CIDR");
                    return;
                }
            }
            continue;
        }
        if (val->kind != N_SCALAR || has_nul(val)) {
            fail_at(ld, val->line, k->path, "%s: expected a scalar, %s", key->value,
                    describe(val, d, sizeof d));
            return;
        }
        if (cr_persist_policy_set(p, (cr_persist_key_t)pk, val->value, true, err, sizeof err) != 0) {
            fail_at(ld, val->line, NULL, "%s", err);
            return;
        }
    }
    if (!ld->failed && cr_persist_policy_validate(p, err, sizeof err) != 0)
        fail_at(ld, v->line, NULL, "%s", err);
    if (!ld->failed && p->mode != CR_PERSIST_VCAP && !p->secret[0])
        add_warning(ld, "session_persistence.secret is empty (line %zu): a random per-process key "
                        "is used, so crouter's cookies work on this router only", v->line);
}

/* ---- TLS keys (issue 6) -------------------------------------------------- */

/* The first OpenSSL call initialises it; without its atexit cleanup, which
 * would free what nats.c's own cleanup already freed (see router/tls.c). */
static void ossl_init(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, NULL);
}

/* Whether pem holds at least one certificate and nothing malformed. */
static bool pem_certs_valid(const char *pem)
{
    ossl_init();
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio)
        return false;
    size_t n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_free(x);
        n++;
    }
    /* The loop ends at the end of the data (PEM_R_NO_START_LINE) or at garbage. */
    unsigned long e = ERR_peek_last_error();
    bool clean_end = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    ERR_clear_error();
    BIO_free(bio);
    return n > 0 && clean_end;
}

static bool pem_key_valid(const char *pem)
{
    ossl_init();
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio)
        return false;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    ERR_clear_error();
    BIO_free(bio);
    EVP_PKEY_free(k);
    return k != NULL;
}

/* Whether the first certificate of chain_pem belongs to key_pem (both valid). */
static bool pem_pair_matches(const char *chain_pem, const char *key_pem)
{
    ossl_init();
    BIO *cb = BIO_new_mem_buf(chain_pem, -1);
    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    bool ok = x && k && X509_check_private_key(x, k) == 1;
    ERR_clear_error();
    EVP_PKEY_free(k);
    X509_free(x);
    BIO_free(kb);
    BIO_free(cb);
    return ok;
}

static void set_pem_certs(loader_t *ld, const key_def_t *k, const node_t *v)
{
    const char *s = get_string(ld, k, v);
    if (!s)
        return;
    if (*s && !pem_certs_valid(s)) {
        fail_at(ld, v->line, k->path, "invalid PEM: expected one or more certificates");
        return;
    }
    replace_string(FIELD(ld->cfg, k, char *), s);
}

static void set_pem_key(loader_t *ld, const key_def_t *k, const node_t *v)
{
    const char *s = get_string(ld, k, v);
    if (!s)
        return;
    if (*s && !pem_key_valid(s)) {
        fail_at(ld, v->line, k->path, "invalid PEM: expected a private key");
        return;
    }
    replace_string(FIELD(ld->cfg, k, char *), s);
}

/* ca_certs: gorouter takes a list of PEM strings; one string is accepted
 * too. Stored joined into one bundle. */
static void set_pem_list(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    if (v->kind == N_SCALAR) {
        set_pem_certs(ld, k, v);
        return;
    }
    if (v->kind != N_SEQ) {
        fail_at(ld, v->line, k->path, "expected a list of PEM certificates, %s", describe(v, d, sizeof d));
        return;
    }
    size_t total = 1;
    for (size_t i = 0; i < v->n; i++) {
        const node_t *item = v->kids[i];
        if (item->kind != N_SCALAR || has_nul(item) || is_null(item) || !pem_certs_valid(item->value)) {
            fail_at(ld, item->line, k->path, "item %zu: invalid PEM: expected one or more certificates", i);
            return;
        }
        total += item->len + 1;
    }
    char *joined = cr_xmalloc(total);
    size_t len = 0;
    for (size_t i = 0; i < v->n; i++) {
        memcpy(joined + len, v->kids[i]->value, v->kids[i]->len);
        len += v->kids[i]->len;
        joined[len++] = '\n';
    }
    joined[len] = '\0';
    char **field = FIELD(ld->cfg, k, char *);
    free(*field);
    *field = joined;
}

static void free_tls_pem(cr_tls_pem_t *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        free(v[i].cert_chain);
        free(v[i].private_key);
    }
    free(v);
}

/* tls_pem: [{cert_chain: PEM, private_key: PEM}, ...], each pair checked. */
static void set_tls_pem(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    if (v->kind != N_SEQ) {
        fail_at(ld, v->line, k->path, "expected a list of {cert_chain, private_key}, %s",
                describe(v, d, sizeof d));
        return;
    }
    cr_tls_pem_t *pems = cr_xcalloc(v->n ? v->n : 1, sizeof *pems);
    size_t len = 0;
    for (size_t i = 0; i < v->n && !ld->failed; i++) {
        const node_t *item = v->kids[i];
        char where[64];
        snprintf(where, sizeof where, "tls_pem[%zu]", i);
        if (item->kind != N_MAP) {
            fail_at(ld, item->line, where, "expected a map with cert_chain and private_key, %s",
                    describe(item, d, sizeof d));
            break;
        }
        const node_t *chain = NULL, *key = NULL;
        for (size_t j = 0; j + 1 < item->n; j += 2) {
            const node_t *kk = item->kids[j], *vv = item->kids[j + 1];
            if (key_is(kk, "cert_chain"))
                chain = vv;
            else if (key_is(kk, "private_key"))
                key = vv;
            else
                warn_unknown(ld, where, kk, vv, 0);
        }
        char path[96];
        snprintf(path, sizeof path, "%s.cert_chain", where);
        if (!chain || chain->kind != N_SCALAR || has_nul(chain) || !pem_certs_valid(chain->value)) {
            fail_at(ld, chain ? chain->line : item->line, path,
                    chain ? "invalid PEM: expected one or more certificates" : "missing");
            break;
        }
        snprintf(path, sizeof path, "%s.private_key", where);
        if (!key || key->kind != N_SCALAR || has_nul(key) || !pem_key_valid(key->value)) {
            fail_at(ld, key ? key->line : item->line, path,
                    key ? "invalid PEM: expected a private key" : "missing");
            break;
        }
        if (!pem_pair_matches(chain->value, key->value)) {
            fail_at(ld, key->line, path, "does not match the first certificate of cert_chain");
            break;
        }
        pems[len].cert_chain = cr_xstrdup(chain->value);
        pems[len].private_key = cr_xstrdup(key->value);
        len++;
    }
    if (ld->failed) {
        free_tls_pem(pems, len);
        return;
    }
    free_tls_pem(ld->cfg->tls_pem, ld->cfg->tls_pem_len);
    ld->cfg->tls_pem = pems;
    ld->cfg->tls_pem_len = len;
}

/* "TLSv1.0" .. "TLSv1.3" (gorouter's spelling; "TLSv1" too) -> wire version. */
static void set_tls_version(loader_t *ld, const key_def_t *k, const node_t *v)
{
    static const struct { const char *name; uint16_t version; } versions[] = {
        {"TLSv1", 0x0301}, {"TLSv1.0", 0x0301}, {"TLSv1.1", 0x0302},
        {"TLSv1.2", 0x0303}, {"TLSv1.3", 0x0304},
    };
    char d[300];
    const char *s = get_string(ld, k, v);
    if (!s)
        return;
    for (size_t i = 0; i < CR_ARRAY_LEN(versions); i++) {
        if (strcmp(s, versions[i].name) == 0) {
            *FIELD(ld->cfg, k, uint16_t) = versions[i].version;
            return;
        }
    }
    fail_at(ld, v->line, k->path, "invalid TLS version \"%s\" (want TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3)",
            printable(v->value, v->len, d, sizeof d));
}

/* Whether OpenSSL knows every ':'-separated name (OpenSSL or IANA spelling). */
static bool cipher_list_valid(const char *list)
{
    ossl_init();
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx)
        return false;
    bool ok = true;
    const char *p = list;
    while (ok && *p) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char name[128];
        if (n == 0 || n >= sizeof name) {
            ok = n == 0;
        } else {
            memcpy(name, p, n);
            name[n] = '\0';
            const char *ossl = strncmp(name, "TLS_", 4) == 0 ? OPENSSL_cipher_name(name) : name;
            ok = ossl && strcmp(ossl, "(NONE)") != 0 && SSL_CTX_set_cipher_list(ctx, ossl) == 1;
        }
        p = end ? end + 1 : p + n;
    }
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return ok;
}

static void set_cipher_suites(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    const char *s = get_string(ld, k, v);
    if (!s)
        return;
    if (!*s || !cipher_list_valid(s)) {
        fail_at(ld, v->line, k->path, "unknown cipher suite in \"%s\"", printable(v->value, v->len, d, sizeof d));
        return;
    }
    replace_string(FIELD(ld->cfg, k, char *), s);
}

static void set_client_cert_validation(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    const char *s = get_string(ld, k, v);
    if (!s)
        return;
    cr_client_cert_validation_t *f = FIELD(ld->cfg, k, cr_client_cert_validation_t);
    if (strcmp(s, "none") == 0)
        *f = CR_CLIENT_CERT_NONE;
    else if (strcmp(s, "request") == 0)
        *f = CR_CLIENT_CERT_REQUEST;
    else if (strcmp(s, "require") == 0)
        *f = CR_CLIENT_CERT_REQUIRE;
    else
        fail_at(ld, v->line, k->path, "invalid value \"%s\" (want none, request or require)",
                printable(v->value, v->len, d, sizeof d));
}

static void set_xfcc_mode(loader_t *ld, const key_def_t *k, const node_t *v)
{
    char d[300];
    const char *s = get_string(ld, k, v);
    if (!s)
        return;
    cr_xfcc_mode_t *f = FIELD(ld->cfg, k, cr_xfcc_mode_t);
    if (strcmp(s, "always_forward") == 0)
        *f = CR_XFCC_ALWAYS_FORWARD;
    else if (strcmp(s, "forward") == 0)
        *f = CR_XFCC_FORWARD;
    else if (strcmp(s, "sanitize_set") == 0)
        *f = CR_XFCC_SANITIZE_SET;
    else
        fail_at(ld, v->line, k->path,
                "invalid value \"%s\" (want always_forward, forward or sanitize_set)",
                printable(v->value, v->len, d, sizeof d));
}

/* Rules between TLS keys, after the walk (gorouter's Process() errors). */
static void validate_tls(loader_t *ld)
{
    const cr_config_t *c = ld->cfg;
    if (c->enable_ssl && c->tls_pem_len == 0)
        fail_at(ld, 0, "tls_pem", "enable_ssl needs at least one {cert_chain, private_key}");
    else if (c->disable_http && !c->enable_ssl)
        fail_at(ld, 0, "disable_http", "needs enable_ssl (no listener would be left)");
    else if (c->enable_ssl && c->ssl_port == c->port && c->port != 0 && !c->disable_http)
        fail_at(ld, 0, "ssl_port", "%u is also the HTTP port", c->ssl_port);
    else if (c->min_tls_version > c->max_tls_version)
        fail_at(ld, 0, "min_tls_version", "is above max_tls_version");
    else if ((c->backends_cert_chain[0] != '\0') != (c->backends_private_key[0] != '\0'))
        fail_at(ld, 0, c->backends_cert_chain[0] ? "backends.private_key" : "backends.cert_chain",
                "backends.cert_chain and backends.private_key go together");
    else if (c->backends_cert_chain[0] &&
             !pem_pair_matches(c->backends_cert_chain, c->backends_private_key))
        fail_at(ld, 0, "backends.private_key", "does not match the first certificate of backends.cert_chain");
}

/* ---- the key table ------------------------------------------------------ */

#define OFF(field) offsetof(cr_config_t, field)
#define PORT(path, field) {path, set_u16, OFF(field), 0, 65535, false}
#define U32(path, field, max) {path, set_u32, OFF(field), 0, max, false}
#define BOOL(path, field) {path, set_bool, OFF(field), 0, 0, false}
#define DUR(path, field) {path, set_duration, OFF(field), 0, 0, false}
#define STR(path, field) {path, set_string, OFF(field), 0, 0, false}

static const key_def_t key_table[] = {
    PORT("port", port),
    U32("workers", workers, 4096),
    DUR("endpoint_timeout", endpoint_timeout_ns),
    DUR("endpoint_dial_timeout", endpoint_dial_timeout_ns),
    DUR("frontend_idle_timeout", frontend_idle_timeout_ns),
    DUR("read_header_timeout", read_header_timeout_ns),
    {"busy_poll", set_duration, OFF(busy_poll_ns), 0, 1000 * 1000, false}, /* at most 1ms */
    {"max_request_header_bytes", set_u32, OFF(max_request_header_bytes), 0, MIB, true},
    U32("max_request_headers", max_request_headers, UINT32_MAX),
    BOOL("disable_keep_alives", disable_keep_alives),
    BOOL("splice_request_bodies", splice_request_bodies),
    U32("backends.max_conns", backends_max_conns, UINT32_MAX),
    U32("backends.max_attempts", backends_max_attempts, UINT32_MAX),
    {"balancing_algorithm", set_lb_algo, OFF(balancing_algorithm), 0, 0, false},
    BOOL("empty_pool_response_code_503", empty_pool_response_code_503),
    DUR("empty_pool_timeout", empty_pool_timeout_ns),
    DUR("drain_wait", drain_wait_ns),
    DUR("drain_timeout", drain_timeout_ns),
    {"sticky_session_cookie_names", set_cookie_names, 0, 0, 0, false},
    BOOL("sticky_sessions_for_auth_negotiate", sticky_sessions_for_auth_negotiate),
    BOOL("secure_cookies", secure_cookies),
    {"session_persistence", set_persistence, 0, 0, 0, false},
    BOOL("allow_route_session_persistence", allow_route_session_persistence),
    {"nats.hosts", set_nats_hosts, 0, 0, 0, false},
    STR("nats.user", nats_user),
    STR("nats.pass", nats_pass),
    BOOL("nats.tls_enabled", nats_tls_enabled),
    STR("nats.ca_certs", nats_ca_certs),
    STR("nats.cert_chain", nats_cert_chain),
    STR("nats.private_key", nats_private_key),
    DUR("droplet_stale_threshold", droplet_stale_threshold_ns),
    DUR("prune_stale_droplets_interval", prune_stale_droplets_interval_ns),
    DUR("start_response_delay_interval", start_response_delay_interval_ns),
    DUR("publish_start_message_interval", publish_start_message_interval_ns),
    BOOL("suspend_pruning_if_nats_unavailable", suspend_pruning_if_nats_unavailable),
    STR("status.host", status_host),
    PORT("status.port", status_port),
    STR("status.user", status_user),
    STR("status.pass", status_pass),
    PORT("status.routes.port", status_routes_port),
    STR("access_log.file", access_log_file),
    {"logging.level", set_level, OFF(logging_level), 0, 0, false},
    STR("pid_file", pid_file),
    U32("index", index, UINT32_MAX),
    STR("zone", zone),
    BOOL("enable_ssl", enable_ssl),
    PORT("ssl_port", ssl_port),
    {"tls_pem", set_tls_pem, 0, 0, 0, false},
    {"min_tls_version", set_tls_version, OFF(min_tls_version), 0, 0, false},
    {"max_tls_version", set_tls_version, OFF(max_tls_version), 0, 0, false},
    {"cipher_suites", set_cipher_suites, OFF(cipher_suites), 0, 0, false},
    {"client_cert_validation", set_client_cert_validation, OFF(client_cert_validation), 0, 0, false},
    {"client_ca_certs", set_pem_certs, OFF(client_ca_certs), 0, 0, false},
    {"forwarded_client_cert", set_xfcc_mode, OFF(forwarded_client_cert), 0, 0, false},
    BOOL("disable_http", disable_http),
    {"ca_certs", set_pem_list, OFF(ca_certs), 0, 0, false},
    BOOL("skip_ssl_validation", skip_ssl_validation),
    {"backends.cert_chain", set_pem_certs, OFF(backends_cert_chain), 0, 0, false},
    {"backends.private_key", set_pem_key, OFF(backends_private_key), 0, 0, false},
    BOOL("enable_proxy", enable_proxy),
};

/* Both scans compare the first byte before calling strcmp: a config has a
 * few dozen keys and the table about a hundred, and under the fuzzer every
 * strcmp call is traced (fuzz_config spent 40% of its time there). */
static const key_def_t *find_key(const char *path)
{
    for (size_t i = 0; i < CR_ARRAY_LEN(key_table); i++)
        if (key_table[i].path[0] == path[0] && strcmp(key_table[i].path, path) == 0)
            return &key_table[i];
    return NULL;
}

static bool is_section(const char *path)
{
    size_t len = strlen(path);
    for (size_t i = 0; i < CR_ARRAY_LEN(key_table); i++)
        if (key_table[i].path[0] == path[0] && strncmp(key_table[i].path, path, len) == 0 &&
            key_table[i].path[len] == '.')
            return true;
    return false;
}

/* ---- the walk ----------------------------------------------------------- */

static void walk_map(loader_t *ld, node_t *map, const char *prefix, int merge_depth);

/* Warns about an unknown key. When its value is a map, each leaf is named
 * instead ("status.tls.port"), down to a few levels and within the pair
 * budget; the values themselves are never interpreted. */
static void warn_unknown(loader_t *ld, const char *prefix, const node_t *key, const node_t *val, int depth)
{
    char d[300];
    size_t plen = strlen(prefix);
    char *path = cr_xmalloc(plen + 1 + sizeof d);
    snprintf(path, plen + 1 + sizeof d, "%s%s%s", prefix, plen ? "." : "",
             key->kind == N_SCALAR ? printable(key->value, key->len, d, sizeof d) : "(complex key)");
    if (val->kind == N_MAP && val->n >= 2 && key->kind == N_SCALAR && depth < 8) {
        for (size_t i = 0; i + 1 < val->n && ld->pair_budget > 0; i += 2) {
            ld->pair_budget--;
            warn_unknown(ld, path, val->kids[i], val->kids[i + 1], depth + 1);
        }
    } else {
        add_warning(ld, "unknown key '%s' (line %zu)", path, key->line);
    }
    free(path);
}

/* "<<: *base" or "<<: [*a, *b]": the merged maps' keys apply first, earlier
 * ones winning over later ones, and the map's own keys override them all. */
static void apply_merge(loader_t *ld, const node_t *val, const char *prefix, int merge_depth)
{
    const char *where = prefix[0] ? prefix : "<<";
    if (merge_depth >= MAX_MERGE_DEPTH) {
        fail_at(ld, val->line, where, "merge keys nested too deeply");
        return;
    }
    if (val->kind == N_MAP) {
        walk_map(ld, (node_t *)val, prefix, merge_depth + 1);
        return;
    }
    if (val->kind == N_SEQ) {
        for (size_t i = val->n; i-- > 0 && !ld->failed;) {
            if (val->kids[i]->kind != N_MAP) {
                fail_at(ld, val->kids[i]->line, where, "merge list items must be maps");
                return;
            }
            walk_map(ld, val->kids[i], prefix, merge_depth + 1);
        }
        return;
    }
    if (!is_null(val))
        fail_at(ld, val->line, where, "merge value must be a map or a list of maps");
}

static void walk_map(loader_t *ld, node_t *map, const char *prefix, int merge_depth)
{
    char d[300];
    const char *where = prefix[0] ? prefix : "(top level)";
    if (check_duplicates(ld, map, where) != 0)
        return;
    for (size_t i = 0; i + 1 < map->n && !ld->failed; i += 2) {
        const node_t *key = map->kids[i];
        if (key->kind == N_SCALAR && key->plain && key_is(key, "<<"))
            apply_merge(ld, map->kids[i + 1], prefix, merge_depth);
    }
    for (size_t i = 0; i + 1 < map->n && !ld->failed; i += 2) {
        const node_t *key = map->kids[i];
        node_t *val = map->kids[i + 1];
        if (ld->pair_budget == 0) {
            fail_at(ld, key->line, where, "too many keys after expanding aliases (limit %d)", PAIR_BUDGET);
            return;
        }
        ld->pair_budget--;
        if (key->kind != N_SCALAR) {
            fail_at(ld, key->line, where, "mapping key must be a scalar, %s", describe(key, d, sizeof d));
            return;
        }
        if (key->plain && key_is(key, "<<"))
            continue;
        /* A key holding '.' or NUL could spoof a dotted path; it is unknown. */
        bool odd = has_nul(key) || memchr(key->value, '.', key->len) != NULL;
        size_t plen = strlen(prefix);
        char *path = cr_xmalloc(plen + 1 + key->len + 1);
        if (plen)
            snprintf(path, plen + 2 + key->len, "%s.%s", prefix, key->value);
        else
            memcpy(path, key->value, key->len + 1);

        const key_def_t *k = odd ? NULL : find_key(path);
        if (k) {
            if (!is_null(val)) /* as in yaml.v3, null leaves the default */
                k->set(ld, k, val);
        } else if (!odd && is_section(path)) {
            if (val->kind == N_MAP)
                walk_map(ld, val, path, merge_depth);
            else if (!is_null(val))
                fail_at(ld, val->line, path, "expected a map, %s", describe(val, d, sizeof d));
        } else {
            warn_unknown(ld, prefix, key, val, 0);
        }
        free(path);
    }
}

/* ---- defaults and finalize ---------------------------------------------- */

/* gorouter's defaultConfig, with crouter's documented differences; values
 * that Process() derives (workers, drain_timeout, ...) are left 0. */
static cr_config_t *raw_defaults(void)
{
    cr_config_t *c = cr_xcalloc(1, sizeof *c);
    c->port = 8081;
    c->workers = 0;
    c->endpoint_timeout_ns = 60 * CR_NS_PER_SEC;
    c->endpoint_dial_timeout_ns = 5 * CR_NS_PER_SEC;
    c->frontend_idle_timeout_ns = 900 * CR_NS_PER_SEC;
    c->busy_poll_ns = 50 * 1000;
    c->read_header_timeout_ns = 30 * CR_NS_PER_SEC;
    c->max_request_header_bytes = 0;
    c->max_request_headers = 0;
    c->disable_keep_alives = false;
    c->splice_request_bodies = false;
    c->backends_max_conns = 0;
    c->backends_max_attempts = 3;
    c->balancing_algorithm = CR_LB_ROUND_ROBIN;
    c->empty_pool_response_code_503 = false;
    c->empty_pool_timeout_ns = 0;
    c->drain_wait_ns = 0;
    c->drain_timeout_ns = 0;

    c->sticky_session_cookie_names = cr_xcalloc(1, sizeof(char *));
    c->sticky_session_cookie_names[0] = cr_xstrdup("JSESSIONID");
    c->sticky_session_cookie_names_len = 1;
    cr_persist_policy_defaults(&c->session_persistence);
    c->allow_route_session_persistence = true;

    c->nats_hosts = cr_xcalloc(1, sizeof *c->nats_hosts);
    c->nats_hosts[0].hostname = cr_xstrdup("localhost");
    c->nats_hosts[0].port = 4222;
    c->nats_hosts_len = 1;
    c->nats_user = cr_xstrdup("");
    c->nats_pass = cr_xstrdup("");
    c->nats_ca_certs = cr_xstrdup("");
    c->nats_cert_chain = cr_xstrdup("");
    c->nats_private_key = cr_xstrdup("");
    c->droplet_stale_threshold_ns = 120 * CR_NS_PER_SEC;
    c->prune_stale_droplets_interval_ns = 30 * CR_NS_PER_SEC;
    c->start_response_delay_interval_ns = 5 * CR_NS_PER_SEC;
    c->publish_start_message_interval_ns = 30 * CR_NS_PER_SEC;

    c->status_host = cr_xstrdup("0.0.0.0");
    c->status_port = 8080;
    c->status_user = cr_xstrdup("");
    c->status_pass = cr_xstrdup("");
    c->status_routes_port = 8082;

    c->access_log_file = cr_xstrdup("");
    c->logging_level = cr_xstrdup("info");
    c->pid_file = cr_xstrdup("");
    c->zone = cr_xstrdup("");

    c->ssl_port = 443;
    c->min_tls_version = 0x0303;
    c->max_tls_version = 0x0304;
    c->cipher_suites = cr_xstrdup("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
                                  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384");
    c->client_cert_validation = CR_CLIENT_CERT_REQUEST;
    c->client_ca_certs = cr_xstrdup("");
    c->forwarded_client_cert = CR_XFCC_ALWAYS_FORWARD;
    c->ca_certs = cr_xstrdup("");
    c->backends_cert_chain = cr_xstrdup("");
    c->backends_private_key = cr_xstrdup("");
    return c;
}

static uint32_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 4096 ? 4096 : (uint32_t)n;
}

/* gorouter's Process(): zero means "the default", and a few keys depend on
 * others. */
static void finalize(cr_config_t *c)
{
    if (c->workers == 0)
        c->workers = online_cpus();
    if (c->max_request_header_bytes == 0 || c->max_request_header_bytes > MIB)
        c->max_request_header_bytes = MIB;
    if (c->max_request_headers == 0)
        c->max_request_headers = DEFAULT_MAX_HEADERS;
    if (c->backends_max_attempts == 0)
        c->backends_max_attempts = 1;
    if (c->droplet_stale_threshold_ns < c->start_response_delay_interval_ns)
        c->droplet_stale_threshold_ns = c->start_response_delay_interval_ns;
    if (c->drain_timeout_ns == 0)
        c->drain_timeout_ns = c->endpoint_timeout_ns;
}

cr_config_t *cr_config_defaults(void)
{
    cr_config_t *c = raw_defaults();
    finalize(c);
    return c;
}

void cr_config_destroy(cr_config_t *cfg)
{
    if (!cfg)
        return;
    free_strings(cfg->sticky_session_cookie_names, cfg->sticky_session_cookie_names_len);
    for (size_t i = 0; i < cfg->nats_hosts_len; i++)
        free(cfg->nats_hosts[i].hostname);
    free(cfg->nats_hosts);
    free(cfg->nats_user);
    free(cfg->nats_pass);
    free(cfg->nats_ca_certs);
    free(cfg->nats_cert_chain);
    free(cfg->nats_private_key);
    free(cfg->status_host);
    free(cfg->status_user);
    free(cfg->status_pass);
    free(cfg->access_log_file);
    free(cfg->logging_level);
    free(cfg->pid_file);
    free(cfg->zone);
    free_tls_pem(cfg->tls_pem, cfg->tls_pem_len);
    free(cfg->cipher_suites);
    free(cfg->client_ca_certs);
    free(cfg->ca_certs);
    free(cfg->backends_cert_chain);
    free(cfg->backends_private_key);
    free_strings(cfg->warnings, cfg->warnings_len);
    free(cfg);
}

/* ---- entry points ------------------------------------------------------- */

cr_config_t *cr_config_load_string(const char *yaml, size_t len, const char *name,
                                   char *err, size_t err_cap)
{
    loader_t ld = {
        .name = name ? name : "config",
        .err = err,
        .err_cap = err_cap,
        .pair_budget = PAIR_BUDGET,
    };
    if (err && err_cap)
        err[0] = '\0';
    if (!yaml)
        len = 0;
    ld.cfg = raw_defaults();

    node_t *root = NULL;
    if (build_tree(&ld, yaml ? yaml : "", len, &root) != 0)
        goto fail;
    if (root && root->kind == N_MAP) {
        walk_map(&ld, root, "", 0);
    } else if (root && !is_null(root)) {
        char d[300];
        fail_at(&ld, root->line, NULL, "the top level must be a map of keys, %s", describe(root, d, sizeof d));
    }
    if (!ld.failed)
        validate_tls(&ld);
    if (ld.failed)
        goto fail;
    free_nodes(&ld);
    finalize(ld.cfg);
    return ld.cfg;

fail:
    free_nodes(&ld);
    cr_config_destroy(ld.cfg);
    return NULL;
}

cr_config_t *cr_config_load_file(const char *path, char *err, size_t err_cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && err_cap)
            snprintf(err, err_cap, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = cr_xmalloc(cap);
    for (;;) {
        if (len == cap) {
            if (cap >= MAX_FILE_BYTES) {
                if (err && err_cap)
                    snprintf(err, err_cap, "%s: larger than %u bytes", path, MAX_FILE_BYTES);
                free(buf);
                fclose(f);
                return NULL;
            }
            cap *= 2;
            buf = cr_xrealloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    bool read_failed = ferror(f);
    int saved = errno;
    fclose(f);
    if (read_failed) {
        if (err && err_cap)
            snprintf(err, err_cap, "%s: cannot read: %s", path, strerror(saved));
        free(buf);
        return NULL;
    }
    cr_config_t *cfg = cr_config_load_string(buf, len, path, err, err_cap);
    free(buf);
    return cfg;
}
