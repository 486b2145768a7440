/* registry/route_table.c - maps "host[/path]" to a pool of endpoints.
 *
 * Readers never wait behind writers. The table is a liburcu lock-free hash
 * table (memb flavour) keyed by normalised host (lower-case, no port, "*."
 * prefix for wildcards). Each host entry is immutable and holds its routes
 * inline, sorted deepest path first; each route points to an immutable pool.
 * A writer never changes a published entry or pool: it builds a new one,
 * publishes it (cds_lfht_replace; a release store for pools) and hands the
 * old one to call_rcu, which frees it (and drops the pool's endpoint
 * references) once every reader that could see it has left its read
 * section. Lookup is then: hash the request
 * host, scan that host's few routes for the longest whole-segment prefix
 * whose pool is non-empty (else the deepest empty one, for 503 mode), and
 * only when nothing matched try "*.b.example.com", "*.example.com", ...
 *
 * Writers (NATS thread, pruner, the TLS-failure path) serialise on one mutex,
 * so a register and a prune step are atomic with respect to each other and
 * nothing registered during a prune is lost. Prune walks the table inside one
 * read section and drops the mutex between hosts every PRUNE_CHUNK_ROUTES
 * routes, so a prune of 100,000 endpoints never stalls NATS for long.
 * Writers also run lfht operations, which need a read section: any thread
 * that calls in is registered with liburcu on first use and unregistered by
 * a thread-exit destructor.
 *
 * Threads: workers and the status server read; NATS and pruner threads
 * write; liburcu's call_rcu thread frees. Owns: the hash table, host entries,
 * one reference per route (endpoints hold the others: a route's memory
 * outlives its unlinking while an endpoint created for it lives) and,
 * through pools, one reference per endpoint slot.
 *
 * Registry scale (issue 8; test/bench/registry_scale.c without NATS,
 * bench/scale with it; noisy 2-core machine). A new route costs one hash
 * lookup (route_get reuses the miss), no syscall (route-registered lines are
 * rate-limited, ROUTE_LOG_INTERVAL_NS; the pool and entry it replaces are
 * the shared empty pool and nothing, so call_rcu has nothing to wake up for;
 * the table is resized log2(hosts) times in all) and three allocations:
 * endpoint with its one-endpoint pool and unique strings (288 B chunk for
 * bench/nats_flood's messages), route with its key (96), host entry with
 * its routes (48), plus ~14 B of buckets; host, app, index, zone and tags
 * are interned (registry/intern.c), shared by every endpoint that repeats
 * them. 446 heap bytes per single-endpoint route (mallinfo2, what is held;
 * was 636 with five allocations and a temporary array per message).
 * CPU per message (thread CPU time, 100,000 new routes, back to back with
 * the old code): decode 0.6 us (message.c's fast path; was 3.9 with
 * jansson), register 0.9-1.0 us (was 1.0-1.2). Over NATS, 300,000 new
 * routes on the loaded 2-core machine, back to back: 198-221k msgs/s
 * absorbed (old code 69-83k in the same runs; 148-157k on a quiet machine)
 * and 446-447 RSS bytes per endpoint (was 636). Lookups during a prune of 100,000
 * endpoints keep their p99 (~1 us in registry_scale, 2 reader threads)
 * because readers take no lock; the prune holds the mutex 2,048 routes at a
 * time, so NATS waits at most one chunk.
 */
#include "registry/internal.h"
#include "registry/registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>
#include <urcu/rculfhash.h>

#include "common/clock.h"
#include "common/defs.h"
#include "common/log.h"
#include "common/uuid.h"
#include "common/xalloc.h"

#define COMPONENT "registry"
#define PRUNE_CHUNK_ROUTES 2048
#define INITIAL_BUCKETS 1024
/* Pools up to this size are rebuilt from an array on the stack. */
#define EPS_ON_STACK 16
/* route-registered / route-unregistered lines at info level: at most one per
 * interval, the rest counted in the next line's suppressed=; debug level
 * logs every one. A 300,000-route burst would otherwise spend a write(2) per
 * message (perf: 11% of the NATS delivery thread). */
#define ROUTE_LOG_INTERVAL_NS (10 * CR_NS_PER_MS)

/* A route: the public part, then its strings (normalised key, the host as
 * registered when the key cannot hold it, the context path as registered
 * when the key cannot hold it). No rcu_head: routes are removed rarely, and
 * cr_registry__defer_free carries the grace period then. */
typedef struct route_node {
    cr_route_t pub;
    uint32_t host_len;    /* pub.key[0..host_len) is the normalised host */
    uint32_t path_len;    /* normalised path without leading '/': route_path() */
    _Atomic uint32_t refs; /* atomic: 1 while linked (dropped a grace period after
                              unlinking) + 1 per endpoint created for the route */
} route_node_t;

static inline const char *route_path(const route_node_t *r)
{
    return r->pub.key + r->host_len + (r->path_len ? 1 : 0);
}

/* One host's entry in the hash table, immutable once linked: a change to
 * the host's routes links a new entry in its place (cds_lfht_replace) and
 * frees this one after a grace period. Routes are sorted longest path
 * first, then bytewise, so equal paths are found by binary search. The
 * host itself is not stored: every route's key starts with it. */
typedef struct host_entry {
    struct cds_lfht_node node;
    uint32_t host_len;    /* 32 bits: messages are < 256 KiB */
    uint32_t len;         /* >= 1 */
    route_node_t *routes[];
} host_entry_t;

static inline const char *host_of(const host_entry_t *he)
{
    return he->routes[0]->pub.key;
}

struct cr_registry {
    cr_registry_options_t opts;
    struct cds_lfht *hosts;
    pthread_mutex_t mu;
    _Atomic uint64_t n_hosts;      /* entries in the hash table */
    _Atomic uint64_t n_buckets;    /* the size we last asked the table for */
    _Atomic uint64_t n_routes;
    _Atomic uint64_t n_endpoints;
    _Atomic uint64_t n_registers;
    _Atomic uint64_t n_unregisters;
    _Atomic uint64_t n_persist_rejected;
    _Atomic uint64_t n_persist_refused;
    _Atomic uint64_t n_pruned;
    _Atomic int64_t last_update_ns;
    cr_log_ratelimit_t route_log_rl;
};

#ifdef CR_REGISTRY_TSAN
/* liburcu is not built with TSan, so its own allocations, freed on its
 * call_rcu and workqueue threads after futex hand-offs TSan cannot see, look
 * like races. Ignore what happens inside it; our objects are annotated. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:liburcu-memb.so\n"
           "called_from_lib:liburcu-cds.so\n"
           "called_from_lib:liburcu-common.so\n";
}
#endif

/* --- RCU thread registration ------------------------------------------ */

static __thread bool rcu_registered;
static pthread_key_t rcu_key;
static pthread_once_t rcu_key_once = PTHREAD_ONCE_INIT;

static void on_thread_exit(void *arg)
{
    (void)arg;
    if (rcu_registered) {
        urcu_memb_unregister_thread();
        rcu_registered = false;
    }
}

static void make_rcu_key(void)
{
    pthread_key_create(&rcu_key, on_thread_exit);
}

static void ensure_registered(void)
{
    if (CR_LIKELY(rcu_registered))
        return;
    pthread_once(&rcu_key_once, make_rcu_key);
    urcu_memb_register_thread();
    rcu_registered = true;
    pthread_setspecific(rcu_key, (void *)1);
}

void cr_registry_reader_thread_register(void)
{
    ensure_registered();
}

void cr_registry_reader_thread_unregister(void)
{
    if (!rcu_registered)
        return;
    urcu_memb_unregister_thread();
    rcu_registered = false;
    pthread_setspecific(rcu_key, NULL);
}

void cr_registry_read_lock(void)
{
    ensure_registered();
    urcu_memb_read_lock();
}

void cr_registry_read_unlock(void)
{
    CR_TSAN_RELEASE(&cr_registry__gp_sync);
    urcu_memb_read_unlock();
}

/* --- keys -------------------------------------------------------------- */

static inline unsigned char lc(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* a[0..n) (any case) equals lower-case b[0..n). */
static bool ci_eq(const char *a, const char *lower_b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (lc((unsigned char)a[i]) != (unsigned char)lower_b[i])
            return false;
    }
    return true;
}

/* Drops ":port"; "[v6]:port" keeps its brackets. */
static size_t strip_port(const char *h, size_t n)
{
    if (n > 0 && h[0] == '[') {
        const char *end = memchr(h, ']', n);
        return end ? (size_t)(end - h) + 1 : n;
    }
    const char *colon = memchr(h, ':', n);
    return colon ? (size_t)(colon - h) : n;
}

/* FNV-1a over the lower-cased host, optionally behind a '*'. */
static unsigned long hash_host(bool star, const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    if (star) {
        h ^= '*';
        h *= 1099511628211ULL;
    }
    for (size_t i = 0; i < n; i++) {
        h ^= lc((unsigned char)s[i]);
        h *= 1099511628211ULL;
    }
    return (unsigned long)(h ^ (h >> 29));
}

typedef struct host_key {
    const char *s;  /* any case */
    size_t n;
    bool star;      /* the key is "*" followed by s */
} host_key_t;

static int match_host(struct cds_lfht_node *node, const void *key)
{
    const host_entry_t *he = caa_container_of(node, host_entry_t, node);
    const host_key_t *k = key;
    CR_TSAN_ACQUIRE(he);
    if (he->host_len != k->n + k->star)
        return 0;
    const char *h = host_of(he);
    if (k->star && h[0] != '*')
        return 0;
    return ci_eq(k->s, h + k->star, k->n);
}

/* In a read section. */
static host_entry_t *find_host(const cr_registry_t *reg, bool star, const char *s, size_t n)
{
    host_key_t k = { s, n, star };
    struct cds_lfht_iter it;
    cds_lfht_lookup(reg->hosts, hash_host(star, s, n), match_host, &k, &it);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
    if (!node)
        return NULL;
    host_entry_t *he = caa_container_of(node, host_entry_t, node);
    CR_TSAN_ACQUIRE(he);
    return he;
}

/* A registered uri split into its parts (slices of the uri). */
typedef struct uri_parts {
    const char *host;     /* as written, port stripped */
    size_t host_len;
    const char *path;     /* without leading '/', trailing '/'s and query */
    size_t path_len;
} uri_parts_t;

static bool parse_uri(const char *uri, uri_parts_t *p)
{
    size_t n = strlen(uri);
    const char *q = memchr(uri, '?', n);
    if (q)
        n = (size_t)(q - uri);
    const char *slash = memchr(uri, '/', n);
    size_t hn = slash ? (size_t)(slash - uri) : n;
    p->host = uri;
    p->host_len = strip_port(uri, hn);
    p->path = slash ? slash + 1 : uri + n;
    p->path_len = slash ? n - hn - 1 : 0;
    while (p->path_len > 0 && p->path[0] == '/') {
        p->path++;
        p->path_len--;
    }
    while (p->path_len > 0 && p->path[p->path_len - 1] == '/')
        p->path_len--;
    return p->host_len > 0;
}

/* --- route arrays ------------------------------------------------------ */

/* Orders lower-case path a against path b (any case): longer first, then
 * bytewise on the lower-cased bytes. */
static int cmp_path(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return an > bn ? -1 : 1;
    for (size_t i = 0; i < an; i++) {
        unsigned char x = (unsigned char)a[i], y = lc((unsigned char)b[i]);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

/* Binary search for a path (any case) among he's routes; returns its index
 * or, negated minus one, where it would be inserted. he may be NULL. */
static long routes_find(const host_entry_t *he, const char *path, size_t len)
{
    long lo = 0, hi = he ? (long)he->len : 0;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        const route_node_t *r = he->routes[mid];
        int c = cmp_path(route_path(r), r->path_len, path, len);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -lo - 1;
}

static host_entry_t *host_alloc(uint32_t len, uint32_t host_len)
{
    host_entry_t *he = cr_xmalloc(sizeof *he + len * sizeof he->routes[0]);
    cds_lfht_node_init(&he->node);
    he->host_len = host_len;
    he->len = len;
    return he;
}

void cr_registry__route_retain(const cr_route_t *route)
{
    route_node_t *r = caa_container_of(route, route_node_t, pub);
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

void cr_registry__route_release(const cr_route_t *route)
{
    route_node_t *r = caa_container_of(route, route_node_t, pub);
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        free(r);
}

/* Drops the table's hold on an unlinked route: its pool's endpoint
 * references, then its own. */
static void route_free_now(route_node_t *r)
{
    cr_registry__pool_free(r->pub._pool);
    cr_registry__route_release(&r->pub);
}

static void route_free_deferred_cb(void *p)
{
    route_free_now(p);
}

static int match_node(struct cds_lfht_node *node, const void *key)
{
    return node == key;
}

/* Links nu (same host, routes changed) in old's place; old is freed after
 * a grace period (the routes it lists are not). Mutex held, in a read
 * section. */
static void host_replace(cr_registry_t *reg, host_entry_t *old, host_entry_t *nu)
{
    struct cds_lfht_iter it;
    unsigned long hash = hash_host(false, host_of(old), old->host_len);
    CR_TSAN_RELEASE(nu);
    cds_lfht_lookup(reg->hosts, hash, match_node, &old->node, &it);
    int rc = cds_lfht_replace(reg->hosts, &it, hash, match_node, &old->node, &nu->node);
    if (rc != 0) {
        /* Writers serialise on the mutex: the entry cannot have gone. */
        CR_ERROR(COMPONENT, "host entry vanished under the mutex (rc=%d)", rc);
        abort();
    }
    cr_registry__defer_free(old, free);
}

static void publish_pool(route_node_t *r, cr_pool_t *np)
{
    cr_pool_t *old = r->pub._pool;
    __atomic_store_n(&r->pub._pool, np, __ATOMIC_RELEASE);
    cr_registry__pool_free_deferred(old);
}

/* --- writers' helpers (mutex held, in a read section) ----------------- */

/* Logs a route change (event is "route-registered", "route-unregistered" or
 * "route-pruned"), rate-limited at info level (ROUTE_LOG_INTERVAL_NS): a
 * mass prune of 100,000 routes wrote 100,000 lines (one write(2) each) in
 * one cycle, and the request p99 of that second rose from ~2.2 to ~3.4 ms
 * (bench/scale prune; ~2.8 with the lines rate-limited). Each cycle still
 * logs its total ("pruned-endpoints count=N"). */
static void log_route_event(cr_registry_t *reg, const char *event, const char *key)
{
    if (cr_log_enabled(CR_LOG_DEBUG)) {
        CR_DEBUG(COMPONENT, "%s route=%s", event, key);
        return;
    }
    if (!cr_log_enabled(CR_LOG_INFO))
        return;
    uint64_t skipped = 0;
    if (!cr_log_ratelimit_allow(&reg->route_log_rl, ROUTE_LOG_INTERVAL_NS, &skipped))
        return;
    if (skipped)
        CR_INFO(COMPONENT, "%s route=%s suppressed=%llu", event, key, (unsigned long long)skipped);
    else
        CR_INFO(COMPONENT, "%s route=%s", event, key);
}

static route_node_t *route_create(cr_registry_t *reg, const uri_parts_t *u)
{
    size_t key_len = u->host_len + (u->path_len ? 1 + u->path_len : 0);
    size_t ctx_len = u->path_len ? 1 + u->path_len : 0;
    /* The host as registered is stored apart only when the key cannot hold
     * it: mixed case, or a path after it. */
    bool lower = u->path_len == 0;
    for (size_t i = 0; lower && i < u->host_len; i++) {
        if (lc((unsigned char)u->host[i]) != (unsigned char)u->host[i]) {
            lower = false;
            break;
        }
    }
    size_t host_size = lower ? 0 : u->host_len + 1;
    /* The context path as registered is the key's tail ("/path", or "" at
     * its NUL) unless the path has upper case. */
    bool ctx_in_key = true;
    for (size_t i = 0; ctx_in_key && i < u->path_len; i++)
        ctx_in_key = lc((unsigned char)u->path[i]) == (unsigned char)u->path[i];
    size_t ctx_size = ctx_in_key ? 0 : ctx_len + 1;
    route_node_t *r = cr_xmalloc(sizeof *r + (key_len + 1) + host_size + ctx_size);
    memset(r, 0, sizeof *r);
    char *key = (char *)(r + 1);
    char *host = lower ? NULL : key + key_len + 1;
    char *ctx = ctx_in_key ? key + u->host_len : key + key_len + 1 + host_size;

    for (size_t i = 0; i < u->host_len; i++)
        key[i] = (char)lc((unsigned char)u->host[i]);
    if (u->path_len) {
        key[u->host_len] = '/';
        for (size_t i = 0; i < u->path_len; i++)
            key[u->host_len + 1 + i] = (char)lc((unsigned char)u->path[i]);
    }
    key[key_len] = '\0';
    if (host) {
        memcpy(host, u->host, u->host_len);
        host[u->host_len] = '\0';
    }
    if (!ctx_in_key) {
        ctx[0] = '/';
        memcpy(ctx + 1, u->path, u->path_len);
        ctx[ctx_len] = '\0';
    }

    r->pub.key = key;
    r->pub.host = host ? host : key;
    r->pub.context_path = ctx;
    r->pub._pool = cr_registry__pool_empty();
    atomic_init(&r->pub.rr_next, (uint32_t)cr_random_u64());
    atomic_init(&r->pub.lb_algo, (int)reg->opts.default_lb_algo);
    r->pub.emptied_at_ns = 0;
    r->host_len = (uint32_t)u->host_len;
    r->path_len = (uint32_t)u->path_len;
    atomic_init(&r->refs, 1);
    return r;
}

/* Finds the route for u (normalised on the fly), creating it when create.
 * *he_out receives u's host entry (the one current after a creation). With
 * create, *he_out must already hold what a call without create returned for
 * u in this mutex hold (NULL: the host is absent), which saves the hash
 * lookups a new route would repeat. */
static route_node_t *route_get(cr_registry_t *reg, const uri_parts_t *u, bool create, host_entry_t **he_out)
{
    host_entry_t *he = create ? *he_out : find_host(reg, false, u->host, u->host_len);
    *he_out = he;
    long pos = routes_find(he, u->path, u->path_len);
    if (pos >= 0)
        return he->routes[pos];
    if (!create)
        return NULL;

    route_node_t *r = route_create(reg, u);
    size_t at = (size_t)(-pos - 1);
    uint32_t old_len = he ? he->len : 0;
    host_entry_t *nhe = host_alloc(old_len + 1, (uint32_t)u->host_len);
    if (at > 0)
        memcpy(nhe->routes, he->routes, at * sizeof nhe->routes[0]);
    nhe->routes[at] = r;
    if (old_len > at)
        memcpy(nhe->routes + at + 1, he->routes + at, (old_len - at) * sizeof nhe->routes[0]);
    if (he) {
        host_replace(reg, he, nhe);
    } else {
        CR_TSAN_RELEASE(nhe);
        cds_lfht_add(reg->hosts, hash_host(false, r->pub.key, u->host_len), &nhe->node);
        atomic_fetch_add_explicit(&reg->n_hosts, 1, memory_order_relaxed);
    }
    *he_out = nhe;
    atomic_fetch_add_explicit(&reg->n_routes, 1, memory_order_relaxed);
    log_route_event(reg, "route-registered", r->pub.key);
    return r;
}

/* Unlinks route r from its host's entry (and the entry from the table when
 * r was its last route); what is unlinked is freed after a grace period. */
static void route_remove(cr_registry_t *reg, route_node_t *r)
{
    host_entry_t *he = find_host(reg, false, r->pub.key, r->host_len);
    long pos = routes_find(he, route_path(r), r->path_len);
    if (pos < 0 || he->routes[pos] != r)
        return;
    log_route_event(reg, "route-unregistered", r->pub.key);
    if (he->len == 1) {
        cds_lfht_del(reg->hosts, &he->node);
        atomic_fetch_sub_explicit(&reg->n_hosts, 1, memory_order_relaxed);
        cr_registry__defer_free(he, free);
    } else {
        host_entry_t *nhe = host_alloc(he->len - 1, he->host_len);
        memcpy(nhe->routes, he->routes, (size_t)pos * sizeof nhe->routes[0]);
        memcpy(nhe->routes + pos, he->routes + pos + 1, (he->len - (size_t)pos - 1) * sizeof nhe->routes[0]);
        host_replace(reg, he, nhe);
    }
    cr_registry__defer_free(r, route_free_deferred_cb);
    atomic_fetch_sub_explicit(&reg->n_routes, 1, memory_order_relaxed);
}

/* Publishes r's pool without slot idx. Returns true when it became empty. */
static bool pool_remove_at(route_node_t *r, uint32_t idx)
{
    cr_pool_t *p = r->pub._pool;
    cr_endpoint_t *small[EPS_ON_STACK] = {0};
    cr_endpoint_t **keep = p->len <= EPS_ON_STACK ? small : cr_xmalloc(p->len * sizeof *keep);
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->len; i++) {
        if (i != idx)
            keep[n++] = p->endpoints[i];
    }
    publish_pool(r, cr_registry__pool_create(keep, n));
    if (keep != small)
        free(keep);
    return n == 0;
}

/* Whether emptied routes are kept to answer 503: as in gorouter (PR#314),
 * only with empty_pool_response_code_503 and a non-zero empty_pool_timeout. */
static bool keeps_empty_routes(const cr_registry_t *reg)
{
    return reg->opts.empty_pool_response_code_503 && reg->opts.empty_pool_timeout_ns > 0;
}

/* After r's pool became empty: keep it (503 mode) or remove it. */
static void route_emptied(cr_registry_t *reg, route_node_t *r, int64_t now_ns)
{
    if (keeps_empty_routes(reg))
        r->pub.emptied_at_ns = now_ns;
    else
        route_remove(reg, r);
}

static void touch(cr_registry_t *reg)
{
    atomic_store_explicit(&reg->last_update_ns, cr_now_mono_ns(), memory_order_relaxed);
}

/* --- lifecycle --------------------------------------------------------- */

void cr_registry_options_from_config(const cr_config_t *cfg, cr_registry_options_t *out)
{
    memset(out, 0, sizeof *out);
    out->droplet_stale_threshold_ns = cfg->droplet_stale_threshold_ns;
    out->default_lb_algo = cfg->balancing_algorithm;
    out->empty_pool_response_code_503 = cfg->empty_pool_response_code_503;
    out->empty_pool_timeout_ns = cfg->empty_pool_timeout_ns;
    out->persistence = &cfg->session_persistence;
    out->allow_route_persistence = cfg->allow_route_session_persistence;
}

cr_registry_t *cr_registry_create(const cr_registry_options_t *opts)
{
    cr_registry_t *reg = cr_xcalloc(1, sizeof *reg);
    reg->opts = *opts;
    reg->hosts = cds_lfht_new_flavor(INITIAL_BUCKETS, INITIAL_BUCKETS, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
                                     &urcu_memb_flavor, NULL);
    if (!reg->hosts) {
        CR_ERROR(COMPONENT, "cannot create the route hash table");
        abort();
    }
    atomic_init(&reg->n_buckets, INITIAL_BUCKETS);
    pthread_mutex_init(&reg->mu, NULL);
    return reg;
}

void cr_registry_destroy(cr_registry_t *reg)
{
    if (!reg)
        return;
    ensure_registered();
    size_t n = 0, cap = 64;
    host_entry_t **all = cr_xmalloc(cap * sizeof *all);
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    urcu_memb_read_lock();
    cds_lfht_first(reg->hosts, &it);
    while ((node = cds_lfht_iter_get_node(&it)) != NULL) {
        host_entry_t *he = caa_container_of(node, host_entry_t, node);
        cds_lfht_del(reg->hosts, node);
        if (n == cap)
            all = cr_xrealloc(all, (cap *= 2) * sizeof *all);
        all[n++] = he;
        cds_lfht_next(reg->hosts, &it);
    }
    urcu_memb_read_unlock();
    /* Run every pending free (old pools, arrays, routes) before ours. */
    urcu_memb_barrier();
    CR_TSAN_ACQUIRE(&cr_registry__gp_sync);
    for (size_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < all[i]->len; j++)
            route_free_now(all[i]->routes[j]);
        free(all[i]);
    }
    free(all);
    cds_lfht_destroy(reg->hosts, NULL);
    urcu_memb_barrier();
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

/* --- readers ----------------------------------------------------------- */

const cr_pool_t *cr_route_pool(const cr_route_t *route)
{
    return __atomic_load_n(&route->_pool, __ATOMIC_ACQUIRE);
}

/* The deepest route of he whose path is a whole-segment prefix of path and
 * whose pool is non-empty, else the deepest matching empty one, else NULL. */
static const cr_route_t *match_routes(const host_entry_t *he, const char *path, size_t len)
{
    const cr_route_t *empty = NULL;
    for (uint32_t i = 0; i < he->len; i++) {
        const route_node_t *r = he->routes[i];
        size_t rl = r->path_len;
        if (rl > 0 && (rl > len || (rl < len && path[rl] != '/') || !ci_eq(path, route_path(r), rl)))
            continue;
        if (cr_route_pool(&r->pub)->len > 0)
            return &r->pub;
        if (!empty)
            empty = &r->pub;
    }
    return empty;
}

const cr_route_t *cr_registry_lookup(const cr_registry_t *reg, const char *host, size_t host_len,
                                     const char *path, size_t path_len)
{
    host_len = strip_port(host, host_len);
    if (host_len == 0)
        return NULL;
    if (!path)
        path_len = 0;
    const char *q = path_len ? memchr(path, '?', path_len) : NULL;
    if (q)
        path_len = (size_t)(q - path);
    while (path_len > 0 && path[0] == '/') {
        path++;
        path_len--;
    }

    const host_entry_t *he = find_host(reg, false, host, host_len);
    const cr_route_t *r = he ? match_routes(he, path, path_len) : NULL;
    if (r)
        return r;
    /* "*.b.example.com", then "*.example.com", ...: '*' plus each suffix
     * that starts at a dot. */
    for (const char *dot = memchr(host, '.', host_len); dot;
         dot = memchr(dot + 1, '.', host_len - (size_t)(dot + 1 - host))) {
        he = find_host(reg, true, dot, host_len - (size_t)(dot - host));
        if (he && (r = match_routes(he, path, path_len)) != NULL)
            return r;
    }
    return NULL;
}

void cr_registry_for_each_route(const cr_registry_t *reg, cr_route_visit_fn visit, void *arg)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    cr_registry_read_lock();
    cds_lfht_first(reg->hosts, &it);
    while ((node = cds_lfht_iter_get_node(&it)) != NULL) {
        const host_entry_t *he = caa_container_of(node, host_entry_t, node);
        CR_TSAN_ACQUIRE(he);
        for (uint32_t i = 0; i < he->len; i++)
            visit(arg, &he->routes[i]->pub, cr_route_pool(&he->routes[i]->pub));
        cds_lfht_next(reg->hosts, &it);
    }
    cr_registry_read_unlock();
}

void cr_registry_get_stats(const cr_registry_t *reg, cr_registry_stats_t *out)
{
    out->routes = atomic_load_explicit(&reg->n_routes, memory_order_relaxed);
    out->endpoints = atomic_load_explicit(&reg->n_endpoints, memory_order_relaxed);
    out->registers = atomic_load_explicit(&reg->n_registers, memory_order_relaxed);
    out->unregisters = atomic_load_explicit(&reg->n_unregisters, memory_order_relaxed);
    out->persistence_rejected = atomic_load_explicit(&reg->n_persist_rejected, memory_order_relaxed);
    out->persistence_refused = atomic_load_explicit(&reg->n_persist_refused, memory_order_relaxed);
    out->pruned = atomic_load_explicit(&reg->n_pruned, memory_order_relaxed);
    out->last_update_mono_ns = atomic_load_explicit(&reg->last_update_ns, memory_order_relaxed);
}

/* --- writers ----------------------------------------------------------- */

static void writer_lock(cr_registry_t *reg)
{
    ensure_registered();
    pthread_mutex_lock(&reg->mu);
    urcu_memb_read_lock();
}

static void writer_unlock(cr_registry_t *reg)
{
    CR_TSAN_RELEASE(&cr_registry__gp_sync);
    urcu_memb_read_unlock();
    pthread_mutex_unlock(&reg->mu);
}

/* liburcu 0.13's automatic resize does not keep up with a table that grows
 * by hundreds of thousands of hosts (chains of hundreds were measured), so a
 * writer grows it explicitly, to the next power of two at or above half the
 * host count, whenever there are more than two hosts per bucket: chains stay
 * at two or under on average. A bucket costs 16 bytes; at one host per
 * bucket they were 28 of the bytes a 300,000-route table holds per route,
 * for a lookup that walks a split-ordered chain by reverse hash, which stops
 * early, so the second host in a chain costs about one cache line.
 * cds_lfht_resize waits for grace periods: it runs with neither the mutex
 * nor a read section held (a prune in progress only delays it), and only
 * log2(hosts) times in the table's life. */
static void maybe_grow(cr_registry_t *reg)
{
    uint64_t hosts = atomic_load_explicit(&reg->n_hosts, memory_order_relaxed);
    uint64_t buckets = atomic_load_explicit(&reg->n_buckets, memory_order_relaxed);
    if (CR_LIKELY(hosts <= 2 * buckets) || urcu_memb_read_ongoing())
        return;
    uint64_t want = buckets;
    while (2 * want < hosts)
        want <<= 1;
    if (!atomic_compare_exchange_strong(&reg->n_buckets, &buckets, want))
        return; /* another writer is growing it */
    CR_DEBUG(COMPONENT, "route-table-resize hosts=%llu buckets=%llu", (unsigned long long)hosts,
             (unsigned long long)want);
    cds_lfht_resize(reg->hosts, (unsigned long)want);
}

/* Replaces a message's session_persistence override by the effective policy
 * (override merged over the global block) in *copy, or drops it: refused by
 * allow_route_session_persistence, or invalid (counted, logged; the endpoint
 * gets the global policy). Returns the message to register. */
static const cr_register_msg_t *effective_persistence(cr_registry_t *reg, const cr_register_msg_t *msg,
                                                      cr_register_msg_t *copy,
                                                      cr_persist_policy_t *merged)
{
    if (!msg->persistence && !msg->persistence_error[0])
        return msg;
    *copy = *msg;
    copy->persistence = NULL;
    const char *uri = msg->uris_len ? msg->uris[0] : "";
    char err[160] = "";
    if (!reg->opts.allow_route_persistence) {
        atomic_fetch_add_explicit(&reg->n_persist_refused, 1, memory_order_relaxed);
        CR_DEBUG(COMPONENT, "session_persistence refused (allow_route_session_persistence: false) uri=%s", uri);
        return copy;
    }
    if (msg->persistence) {
        cr_persist_policy_t global;
        if (reg->opts.persistence)
            global = *reg->opts.persistence;
        else
            cr_persist_policy_defaults(&global);
        cr_persist_policy_merge(merged, &global, msg->persistence);
        if (cr_persist_policy_validate(merged, err, sizeof err) == 0) {
            copy->persistence = merged;
            return copy;
        }
    }
    atomic_fetch_add_explicit(&reg->n_persist_rejected, 1, memory_order_relaxed);
    CR_WARN(COMPONENT, "invalid session_persistence in register message, using the default policy uri=%s error=\"%s\"",
            uri, err[0] ? err : msg->persistence_error);
    return copy;
}

int cr_registry_register(cr_registry_t *reg, const cr_register_msg_t *msg, int64_t now_ns)
{
    cr_register_msg_t copy;
    cr_persist_policy_t merged;
    msg = effective_persistence(reg, msg, &copy, &merged);
    char addr[CR_REGISTRY_ADDR_MAX];
    size_t addr_len = cr_registry__format_addr(msg, addr, sizeof addr);
    int64_t ttl_s = cr_registry__ttl_s(msg, reg->opts.droplet_stale_threshold_ns);
    cr_registry__sockaddr_t sa;
    bool have_sa = false;
    bool any = false;

    writer_lock(reg);
    for (size_t i = 0; i < msg->uris_len;) {
        uri_parts_t u;
        if (!msg->uris[i] || !parse_uri(msg->uris[i], &u)) {
            i++;
            continue;
        }
        host_entry_t *he;
        route_node_t *r = route_get(reg, &u, false, &he);
        cr_pool_t *p = r ? r->pub._pool : cr_registry__pool_empty();
        int idx = cr_registry__pool_index_of_addr(p, addr, addr_len);
        if (idx >= 0 && cr_registry__endpoint_matches(p->endpoints[idx], msg, ttl_s)) {
            atomic_store_explicit(&p->endpoints[idx]->refreshed_at_ns, now_ns, memory_order_relaxed);
        } else {
            if (!have_sa && cr_registry__resolve(msg, false, &sa) == CR_AGAIN) {
                /* A name, not a literal: look it up without the mutex, then
                 * redo this uri (the table may have changed meanwhile). */
                writer_unlock(reg);
                cr_registry__resolve(msg, true, &sa);
                writer_lock(reg);
                have_sa = true;
                continue;
            }
            if (!r) {
                r = route_get(reg, &u, true, &he);
                p = r->pub._pool;
            }
            have_sa = true;
            cr_endpoint_t *ep = cr_registry__endpoint_create(msg, &r->pub, ttl_s, &sa, now_ns);
            uint32_t n = p->len + (idx < 0);
            cr_endpoint_t *small[EPS_ON_STACK];
            cr_endpoint_t **eps = n <= EPS_ON_STACK ? small : cr_xmalloc(n * sizeof *eps);
            for (uint32_t j = 0; j < p->len; j++)
                eps[j] = p->endpoints[j];
            eps[idx >= 0 ? (uint32_t)idx : n - 1] = ep;
            publish_pool(r, cr_registry__pool_create(eps, n));
            if (eps != small)
                free(eps);
            cr_endpoint_release(ep); /* the pool holds it now */
            r->pub.emptied_at_ns = 0;
            if (idx < 0)
                atomic_fetch_add_explicit(&reg->n_endpoints, 1, memory_order_relaxed);
            CR_DEBUG(COMPONENT, "%s route=%s endpoint=%s instance_id=%s",
                     idx < 0 ? "endpoint-registered" : "endpoint-updated", r->pub.key, addr,
                     msg->private_instance_id ? msg->private_instance_id : "");
        }
        if (msg->lb_algo >= 0)
            atomic_store_explicit(&r->pub.lb_algo, (int)msg->lb_algo, memory_order_relaxed);
        atomic_fetch_add_explicit(&reg->n_registers, 1, memory_order_relaxed);
        any = true;
        i++;
    }
    if (any)
        touch(reg);
    writer_unlock(reg);
    maybe_grow(reg);
    return any ? 0 : CR_EBAD;
}

size_t cr_registry_unregister(cr_registry_t *reg, const cr_register_msg_t *msg, int64_t now_ns)
{
    char addr[CR_REGISTRY_ADDR_MAX];
    size_t addr_len = cr_registry__format_addr(msg, addr, sizeof addr);
    size_t removed = 0;

    writer_lock(reg);
    for (size_t i = 0; i < msg->uris_len; i++) {
        uri_parts_t u;
        if (!msg->uris[i] || !parse_uri(msg->uris[i], &u))
            continue;
        host_entry_t *he;
        route_node_t *r = route_get(reg, &u, false, &he);
        if (!r)
            continue;
        int idx = cr_registry__pool_index_of_addr(r->pub._pool, addr, addr_len);
        if (idx < 0)
            continue;
        CR_DEBUG(COMPONENT, "endpoint-unregistered route=%s endpoint=%s", r->pub.key, addr);
        if (pool_remove_at(r, (uint32_t)idx))
            route_emptied(reg, r, now_ns);
        removed++;
    }
    if (removed) {
        atomic_fetch_sub_explicit(&reg->n_endpoints, removed, memory_order_relaxed);
        atomic_fetch_add_explicit(&reg->n_unregisters, removed, memory_order_relaxed);
        touch(reg);
    }
    writer_unlock(reg);
    return removed;
}

size_t cr_registry_remove_endpoint(cr_registry_t *reg, const cr_endpoint_t *ep)
{
    uri_parts_t u;
    size_t changed = 0;
    if (!ep || !parse_uri(cr_registry__endpoint_route_key(ep), &u))
        return 0;
    writer_lock(reg);
    host_entry_t *he;
    route_node_t *r = route_get(reg, &u, false, &he);
    if (r) {
        cr_pool_t *p = r->pub._pool;
        int idx = cr_registry__pool_index_of_addr(p, ep->addr, strlen(ep->addr));
        if (idx >= 0 && p->endpoints[idx] == ep) {
            CR_INFO(COMPONENT, "endpoint-removed route=%s endpoint=%s", r->pub.key, ep->addr);
            if (pool_remove_at(r, (uint32_t)idx))
                route_emptied(reg, r, cr_now_mono_ns());
            atomic_fetch_sub_explicit(&reg->n_endpoints, 1, memory_order_relaxed);
            touch(reg);
            changed = 1;
        }
    }
    writer_unlock(reg);
    return changed;
}

/* Prunes one route (mutex held). Returns endpoints removed; *visited counts work. */
static size_t prune_route(cr_registry_t *reg, route_node_t *r, int64_t now_ns)
{
    cr_pool_t *p = r->pub._pool;
    if (p->len == 0) {
        if (!keeps_empty_routes(reg))
            route_remove(reg, r);
        else if (r->pub.emptied_at_ns == 0)
            r->pub.emptied_at_ns = now_ns;
        else if (now_ns - r->pub.emptied_at_ns > reg->opts.empty_pool_timeout_ns)
            route_remove(reg, r);
        return 0;
    }
    cr_endpoint_t **keep = NULL;
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->len; i++) {
        cr_endpoint_t *ep = p->endpoints[i];
        int64_t age = now_ns - atomic_load_explicit(&ep->refreshed_at_ns, memory_order_relaxed);
        if (!ep->tls && age > ep->ttl_s * CR_NS_PER_SEC)
            break;
        n++;
    }
    if (n == p->len)
        return 0; /* the common case: nothing stale, nothing allocated */
    keep = cr_xmalloc(p->len * sizeof *keep);
    n = 0;
    for (uint32_t i = 0; i < p->len; i++) {
        cr_endpoint_t *ep = p->endpoints[i];
        int64_t age = now_ns - atomic_load_explicit(&ep->refreshed_at_ns, memory_order_relaxed);
        if (!ep->tls && age > ep->ttl_s * CR_NS_PER_SEC) {
            CR_DEBUG(COMPONENT, "endpoint-pruned route=%s endpoint=%s", r->pub.key, ep->addr);
            continue;
        }
        keep[n++] = ep;
    }
    size_t removed = p->len - n;
    publish_pool(r, cr_registry__pool_create(keep, n));
    free(keep);
    if (n == 0) {
        log_route_event(reg, "route-pruned", r->pub.key);
        route_emptied(reg, r, now_ns);
    }
    return removed;
}

size_t cr_registry_prune(cr_registry_t *reg, int64_t now_ns)
{
    size_t removed = 0, visited = 0;
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;

    ensure_registered();
    /* One read section for the walk keeps every entry we stand on alive;
     * the mutex is dropped between hosts now and then. */
    urcu_memb_read_lock();
    pthread_mutex_lock(&reg->mu);
    cds_lfht_first(reg->hosts, &it);
    while ((node = cds_lfht_iter_get_node(&it)) != NULL) {
        host_entry_t *he = caa_container_of(node, host_entry_t, node);
        CR_TSAN_ACQUIRE(he);
        /* An entry replaced while the mutex was dropped stands for the
         * current one, found again by host (NULL: the host is gone). The
         * routes are pruned from this snapshot, which the read section
         * keeps readable while each removal links a new entry. */
        if (cds_lfht_is_node_deleted(node))
            he = find_host(reg, false, host_of(he), he->host_len);
        for (uint32_t i = he ? he->len : 0; i-- > 0;) {
            removed += prune_route(reg, he->routes[i], now_ns);
            visited++;
        }
        cds_lfht_next(reg->hosts, &it);
        if (visited >= PRUNE_CHUNK_ROUTES) {
            visited = 0;
            pthread_mutex_unlock(&reg->mu);
            pthread_mutex_lock(&reg->mu);
        }
    }
    if (removed) {
        atomic_fetch_sub_explicit(&reg->n_endpoints, removed, memory_order_relaxed);
        atomic_fetch_add_explicit(&reg->n_pruned, removed, memory_order_relaxed);
        touch(reg);
        CR_INFO(COMPONENT, "pruned-endpoints count=%zu", removed);
    }
    pthread_mutex_unlock(&reg->mu);
    CR_TSAN_RELEASE(&cr_registry__gp_sync);
    urcu_memb_read_unlock();
    return removed;
}

void cr_registry_freshen(cr_registry_t *reg, int64_t now_ns)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    writer_lock(reg);
    cds_lfht_first(reg->hosts, &it);
    while ((node = cds_lfht_iter_get_node(&it)) != NULL) {
        host_entry_t *he = caa_container_of(node, host_entry_t, node);
        CR_TSAN_ACQUIRE(he);
        for (uint32_t i = 0; i < he->len; i++) {
            cr_pool_t *p = he->routes[i]->pub._pool;
            for (uint32_t j = 0; j < p->len; j++)
                atomic_store_explicit(&p->endpoints[j]->refreshed_at_ns, now_ns, memory_order_relaxed);
        }
        cds_lfht_next(reg->hosts, &it);
    }
    writer_unlock(reg);
}
