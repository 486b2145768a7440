/* registry/endpoint.c - refcounted endpoints and immutable pool snapshots.
 *
 * An endpoint is one allocation: the public struct (208 bytes, no holes), a
 * hidden reference to its route, room for a one-endpoint pool, the tags
 * array, the policy and the strings unique to it (addr, private_instance_id,
 * a protocol other than http1/http2), packed. Strings that instances share
 * (host, app, index, zone, segment, route service, SAN, tags) are interned
 * (intern.c) and released with the endpoint; the context path and route key
 * are the route's, which the endpoint keeps alive. The last release is one
 * free() plus the releases. Endpoints belong to one route (their
 * context_path is the route's cookie Path), so a message with three uris
 * creates three endpoints.
 *
 * Pools. The pool published when an endpoint is created alone in its route
 * (nearly every route) is the one inside the endpoint: 16 bytes, no
 * allocation; it is used at most once, so it is never published again while
 * readers may still see its retired self, and it is retired through
 * cr_registry__defer_free. Other pools are one allocation: an rcu_head in
 * front (hidden), the public cr_pool_t with its endpoint array, then, for
 * pools of more than CR_POOL_SCAN_MAX endpoints, an open-addressing index of
 * uint32 slots keyed by private_instance_id and by addr, with at least twice
 * as many slots as keys so probes stay short (a sticky lookup in a pool of
 * 1,000 is a probe, not a scan). Smaller pools are scanned.
 *
 * Threads: creation and pool building run on writers (NATS thread, pruner)
 * under the table's mutex; lookups, retain and release on any thread; pool
 * frees run on liburcu's call_rcu thread. Owns: endpoints (through their
 * refcount) and pools.
 */
#include "registry/internal.h"
#include "registry/registry.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "common/defs.h"
#include "common/hash.h"
#include "common/xalloc.h"

char cr_registry__gp_sync;

/* The allocation behind a cr_endpoint_t: after the public struct, a
 * back-reference to its route's key and room for a one-endpoint pool
 * listing this endpoint (solo), used at most once: by the pool published
 * when the endpoint is created alone in its route, the common case. Then
 * come the tags array, the policy and the strings. */
typedef struct endpoint_box {
    cr_endpoint_t pub;
    const cr_route_t *route; /* a reference: its key, our context_path */
    uint32_t solo_len;     /* solo pool: 0 = never published, else 1 (stays 1) */
    uint32_t solo_mask;    /* always 0 */
    cr_endpoint_t *solo_ep; /* &pub */
} endpoint_box_t;

_Static_assert(offsetof(endpoint_box_t, solo_mask) == offsetof(endpoint_box_t, solo_len) + offsetof(cr_pool_t, id_index_mask) &&
                   offsetof(endpoint_box_t, solo_ep) == offsetof(endpoint_box_t, solo_len) + offsetof(cr_pool_t, endpoints),
               "the solo pool has cr_pool_t's layout");

static cr_pool_t *solo_pool(cr_endpoint_t *ep)
{
    return (cr_pool_t *)&CR_CONTAINER_OF(ep, endpoint_box_t, pub)->solo_len;
}

static bool is_solo(const cr_pool_t *pool)
{
    return pool->len == 1 && pool == solo_pool(pool->endpoints[0]);
}

typedef struct pool_hdr {
    struct rcu_head rcu;
} pool_hdr_t;

#define POOL_HDR_SIZE ((sizeof(pool_hdr_t) + 15) & ~(size_t)15)

static cr_pool_t empty_pool; /* len 0, no index; never freed */

/* --- addresses --------------------------------------------------------- */

size_t cr_registry__format_addr(const cr_register_msg_t *msg, char *buf, size_t cap)
{
    unsigned port = msg->tls_port ? msg->tls_port : msg->port;
    const char *h = msg->host ? msg->host : "";
    bool v6 = strchr(h, ':') != NULL && h[0] != '[';
    int n = snprintf(buf, cap, v6 ? "[%s]:%u" : "%s:%u", h, port);
    if (n < 0)
        n = 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

int cr_registry__resolve(const cr_register_msg_t *msg, bool allow_dns, cr_registry__sockaddr_t *out)
{
    memset(out, 0, sizeof *out);
    uint16_t port = msg->tls_port ? msg->tls_port : msg->port;
    const char *h = msg->host;
    if (!h)
        return 0;

    struct sockaddr_in *in = (struct sockaddr_in *)&out->ss;
    if (inet_pton(AF_INET, h, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        out->len = sizeof *in;
        return 0;
    }
    char v6[INET6_ADDRSTRLEN + 2];
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']' && hl - 2 < sizeof v6) {
        memcpy(v6, h + 1, hl - 2);
        v6[hl - 2] = '\0';
        h = v6;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        out->len = sizeof *in6;
        return 0;
    }
    if (!allow_dns)
        return CR_AGAIN;

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    char ports[8];
    snprintf(ports, sizeof ports, "%u", port);
    struct addrinfo *res = NULL;
    if (getaddrinfo(h, ports, &hints, &res) == 0 && res) {
        if (res->ai_addrlen <= sizeof out->ss) {
            memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
            out->len = res->ai_addrlen;
        }
    }
    if (res)
        freeaddrinfo(res);
    return 0;
}

int64_t cr_registry__ttl_s(const cr_register_msg_t *msg, int64_t droplet_stale_threshold_ns)
{
    int64_t cap_s = droplet_stale_threshold_ns / CR_NS_PER_SEC;
    int64_t t = msg->stale_threshold_in_seconds;
    int64_t ttl = (t > 0 && t <= cap_s) ? t : cap_s;
    return ttl > INT32_MAX ? INT32_MAX : ttl; /* cr_endpoint_t.ttl_s is 32 bits */
}

/* --- endpoints --------------------------------------------------------- */

static size_t str_size(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* Copies s to *cursor and advances it; NULL stays NULL. */
static char *pack(char **cursor, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = *cursor;
    memcpy(d, s, n);
    *cursor += n;
    return d;
}

cr_endpoint_t *cr_registry__endpoint_create(const cr_register_msg_t *msg, const cr_route_t *route,
                                            int64_t ttl_s, const cr_registry__sockaddr_t *sa,
                                            int64_t now_ns)
{
    char addr[CR_REGISTRY_ADDR_MAX];
    cr_registry__format_addr(msg, addr, sizeof addr);
    /* Nearly every endpoint says http1 (or nothing): point at a constant. */
    const char *protocol = msg->protocol ? msg->protocol : "http1";
    const char *static_protocol = strcmp(protocol, "http1") == 0   ? "http1"
                                  : strcmp(protocol, "http2") == 0 ? "http2"
                                                                   : NULL;

    /* Strings that instances share are interned (registry/intern.c). */
    enum { I_HOST, I_INDEX, I_APP, I_RSU, I_SAN, I_ISO, I_AZ, I_N };
    const char *in[I_N] = { msg->host, msg->private_instance_index, msg->app, msg->route_service_url,
                            msg->server_cert_domain_san, msg->isolation_segment, msg->availability_zone };
    const char *shared[I_N];
    cr_registry__intern(in, shared, I_N);

    size_t head = sizeof(endpoint_box_t);
    head = (head + alignof(cr_tag_t) - 1) & ~(alignof(cr_tag_t) - 1);
    size_t policy_at = head + msg->tags_len * sizeof(cr_tag_t);
    policy_at = (policy_at + alignof(cr_persist_policy_t) - 1) & ~(alignof(cr_persist_policy_t) - 1);
    size_t total = policy_at + (msg->persistence ? sizeof(cr_persist_policy_t) : 0);
    total += str_size(addr) + str_size(msg->private_instance_id) + (static_protocol ? 0 : str_size(protocol));

    char *block = cr_xmalloc(total);
    endpoint_box_t *box = (endpoint_box_t *)block;
    memset(box, 0, sizeof *box);
    cr_endpoint_t *ep = &box->pub;
    box->solo_ep = ep;
    char *cur = block + policy_at + (msg->persistence ? sizeof(cr_persist_policy_t) : 0);
    if (msg->persistence) {
        cr_persist_policy_t *pol = (cr_persist_policy_t *)(block + policy_at);
        memcpy(pol, msg->persistence, sizeof *pol);
        ep->persistence = pol;
    }

    ep->addr = pack(&cur, addr);
    ep->host = (char *)shared[I_HOST];
    ep->port = msg->tls_port ? msg->tls_port : msg->port;
    ep->tls = msg->tls_port != 0;
    ep->has_tags = msg->has_tags;
    ep->lb_algo = msg->lb_algo;
    if (sa && sa->len > 0 && sa->len <= sizeof ep->sockaddr) {
        memcpy(&ep->sockaddr, &sa->ss, sa->len);
        ep->sockaddr_len = sa->len;
    }
    ep->private_instance_id = pack(&cur, msg->private_instance_id);
    ep->private_instance_index = (char *)shared[I_INDEX];
    ep->app = (char *)shared[I_APP];
    ep->route_service_url = (char *)shared[I_RSU];
    ep->server_cert_domain_san = (char *)shared[I_SAN];
    ep->isolation_segment = (char *)shared[I_ISO];
    ep->protocol = static_protocol ? (char *)static_protocol : pack(&cur, protocol);
    ep->availability_zone = (char *)shared[I_AZ];
    if (msg->tags_len > 0) {
        ep->tags = (cr_tag_t *)(block + head);
        ep->tags_len = (uint32_t)msg->tags_len;
        for (size_t i = 0; i < msg->tags_len; i++) {
            const char *kv[2] = { msg->tags[i].key, msg->tags[i].value }, *out[2];
            cr_registry__intern(kv, out, 2);
            ep->tags[i].key = (char *)out[0];
            ep->tags[i].value = (char *)out[1];
        }
    }
    cr_registry__route_retain(route);
    box->route = route;
    ep->context_path = route->context_path;
    ep->ttl_s = (int32_t)ttl_s; /* cr_registry__ttl_s caps it */
    ep->endpoint_updated_at_ns = msg->endpoint_updated_at_ns;
    atomic_init(&ep->refreshed_at_ns, now_ns);
    atomic_init(&ep->failed_at_ns, 0);
    atomic_init(&ep->in_flight, 0);
    atomic_init(&ep->refcount, 1);
    return ep;
}

static bool str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool tags_eq(const cr_endpoint_t *ep, const cr_register_msg_t *msg)
{
    if (ep->has_tags != msg->has_tags || ep->tags_len != msg->tags_len)
        return false;
    /* Maps: order does not matter, keys are unique within each side. */
    for (size_t i = 0; i < msg->tags_len; i++) {
        size_t j = i < ep->tags_len && strcmp(ep->tags[i].key, msg->tags[i].key) == 0 ? i : SIZE_MAX;
        for (size_t k = 0; j == SIZE_MAX && k < ep->tags_len; k++) {
            if (strcmp(ep->tags[k].key, msg->tags[i].key) == 0)
                j = k;
        }
        if (j == SIZE_MAX || strcmp(ep->tags[j].value, msg->tags[i].value) != 0)
            return false;
    }
    return true;
}

bool cr_registry__endpoint_matches(const cr_endpoint_t *ep, const cr_register_msg_t *msg, int64_t ttl_s)
{
    uint16_t port = msg->tls_port ? msg->tls_port : msg->port;
    return ep->port == port && ep->tls == (msg->tls_port != 0) && ep->ttl_s == ttl_s &&
           ep->endpoint_updated_at_ns == msg->endpoint_updated_at_ns &&
           ep->lb_algo == msg->lb_algo && str_eq(ep->host, msg->host) &&
           str_eq(ep->private_instance_id, msg->private_instance_id) &&
           str_eq(ep->private_instance_index, msg->private_instance_index) &&
           str_eq(ep->app, msg->app) && str_eq(ep->route_service_url, msg->route_service_url) &&
           str_eq(ep->server_cert_domain_san, msg->server_cert_domain_san) &&
           str_eq(ep->isolation_segment, msg->isolation_segment) &&
           str_eq(ep->protocol, msg->protocol ? msg->protocol : "http1") &&
           str_eq(ep->availability_zone, msg->availability_zone) && tags_eq(ep, msg) &&
           (ep->persistence && msg->persistence
                ? cr_persist_policy_equal(ep->persistence, msg->persistence)
                : ep->persistence == msg->persistence);
}

const char *cr_registry__endpoint_route_key(const cr_endpoint_t *ep)
{
    return CR_CONTAINER_OF(ep, endpoint_box_t, pub)->route->key;
}

cr_endpoint_t *cr_endpoint_retain(cr_endpoint_t *ep)
{
    if (ep)
        atomic_fetch_add_explicit(&ep->refcount, 1, memory_order_relaxed);
    return ep;
}

void cr_endpoint_release(cr_endpoint_t *ep)
{
    if (!ep)
        return;
    if (atomic_fetch_sub_explicit(&ep->refcount, 1, memory_order_acq_rel) == 1) {
        endpoint_box_t *box = CR_CONTAINER_OF(ep, endpoint_box_t, pub);
        const cr_route_t *route = box->route;
        const char *shared[] = { ep->host, ep->private_instance_index, ep->app, ep->route_service_url,
                                 ep->server_cert_domain_san, ep->isolation_segment, ep->availability_zone };
        cr_registry__intern_release(shared, CR_ARRAY_LEN(shared));
        for (uint32_t i = 0; i < ep->tags_len; i++) {
            const char *kv[2] = { ep->tags[i].key, ep->tags[i].value };
            cr_registry__intern_release(kv, 2);
        }
        free(box);
        cr_registry__route_release(route);
    }
}

/* --- deferred frees ---------------------------------------------------- */

typedef struct deferred {
    struct rcu_head rcu;
    void *p;
    void (*fn)(void *);
} deferred_t;

static void deferred_cb(struct rcu_head *head)
{
    CR_TSAN_ACQUIRE(&cr_registry__gp_sync);
    deferred_t *d = caa_container_of(head, deferred_t, rcu);
    d->fn(d->p);
    free(d);
}

void cr_registry__defer_free(void *p, void (*fn)(void *))
{
    deferred_t *d = cr_xmalloc(sizeof *d);
    d->p = p;
    d->fn = fn;
    urcu_memb_call_rcu(&d->rcu, deferred_cb);
}

/* --- pools ------------------------------------------------------------- */

/* have (NUL-terminated or NULL) equals want[0..want_len), which may hold NULs. */
static bool key_eq(const char *have, const char *want, size_t want_len)
{
    return have && strnlen(have, want_len + 1) == want_len && memcmp(have, want, want_len) == 0;
}

static uint32_t *pool_index(const cr_pool_t *pool)
{
    return (uint32_t *)(pool->endpoints + pool->len);
}

static void index_put(cr_pool_t *pool, const char *key, uint32_t slot_value)
{
    uint32_t *index = pool_index(pool);
    uint32_t i = cr_hash_short(key, strlen(key)) & pool->id_index_mask;
    while (index[i] != 0)
        i = (i + 1) & pool->id_index_mask;
    index[i] = slot_value;
}

cr_pool_t *cr_registry__pool_empty(void)
{
    return &empty_pool;
}

cr_pool_t *cr_registry__pool_create(cr_endpoint_t *const *eps, uint32_t n)
{
    if (n == 0)
        return &empty_pool;
    if (n == 1) {
        endpoint_box_t *box = CR_CONTAINER_OF(eps[0], endpoint_box_t, pub);
        if (box->solo_len == 0) {
            box->solo_len = 1;
            return solo_pool(cr_endpoint_retain(eps[0]));
        }
    }
    uint32_t slots = 0;
    if (n > CR_POOL_SCAN_MAX) {
        slots = 4;
        while (slots < 4 * n)
            slots <<= 1;
    }
    size_t body = sizeof(cr_pool_t) + n * sizeof(cr_endpoint_t *);
    char *block = cr_xmalloc(POOL_HDR_SIZE + body + slots * sizeof(uint32_t));
    cr_pool_t *pool = (cr_pool_t *)(block + POOL_HDR_SIZE);
    pool->len = n;
    pool->id_index_mask = slots ? slots - 1 : 0;
    if (slots)
        memset(pool_index(pool), 0, slots * sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++) {
        pool->endpoints[i] = cr_endpoint_retain(eps[i]);
        if (!slots)
            continue;
        if (eps[i]->private_instance_id)
            index_put(pool, eps[i]->private_instance_id, i + 1);
        index_put(pool, eps[i]->addr, i + 1);
    }
    return pool;
}

void cr_registry__pool_free(cr_pool_t *pool)
{
    if (!pool || pool == &empty_pool)
        return;
    if (is_solo(pool)) {
        cr_endpoint_release(pool->endpoints[0]); /* may free the pool with it */
        return;
    }
    for (uint32_t i = 0; i < pool->len; i++)
        cr_endpoint_release(pool->endpoints[i]);
    free((char *)pool - POOL_HDR_SIZE);
}

static void pool_free_cb(struct rcu_head *head)
{
    CR_TSAN_ACQUIRE(&cr_registry__gp_sync);
    cr_registry__pool_free((cr_pool_t *)((char *)head + POOL_HDR_SIZE));
}

static void solo_free_cb(void *ep)
{
    cr_endpoint_release(ep);
}

void cr_registry__pool_free_deferred(cr_pool_t *pool)
{
    if (!pool || pool == &empty_pool)
        return;
    if (is_solo(pool)) {
        cr_registry__defer_free(pool->endpoints[0], solo_free_cb);
        return;
    }
    pool_hdr_t *hdr = (pool_hdr_t *)((char *)pool - POOL_HDR_SIZE);
    urcu_memb_call_rcu(&hdr->rcu, pool_free_cb);
}

int cr_registry__pool_index_of_addr(const cr_pool_t *pool, const char *addr, size_t addr_len)
{
    if (!pool->id_index_mask) {
        for (uint32_t j = 0; j < pool->len; j++) {
            if (key_eq(pool->endpoints[j]->addr, addr, addr_len))
                return (int)j;
        }
        return -1;
    }
    const uint32_t *index = pool_index(pool);
    uint32_t i = cr_hash_short(addr, addr_len) & pool->id_index_mask;
    for (uint32_t v; (v = index[i]) != 0; i = (i + 1) & pool->id_index_mask) {
        if (key_eq(pool->endpoints[v - 1]->addr, addr, addr_len))
            return (int)(v - 1);
    }
    return -1;
}

cr_endpoint_t *cr_pool_find_by_id(const cr_pool_t *pool, const char *id, size_t id_len)
{
    if (!pool || pool->len == 0 || !id || id_len == 0)
        return NULL;
    if (!pool->id_index_mask) {
        /* The index answers the first slot holding either key, in probe
         * order; a scan prefers an instance id match, then an address. */
        cr_endpoint_t *by_addr = NULL;
        for (uint32_t j = 0; j < pool->len; j++) {
            cr_endpoint_t *ep = pool->endpoints[j];
            if (key_eq(ep->private_instance_id, id, id_len))
                return ep;
            if (!by_addr && key_eq(ep->addr, id, id_len))
                by_addr = ep;
        }
        return by_addr;
    }
    const uint32_t *index = pool_index(pool);
    uint32_t i = cr_hash_short(id, id_len) & pool->id_index_mask;
    for (uint32_t v; (v = index[i]) != 0; i = (i + 1) & pool->id_index_mask) {
        cr_endpoint_t *ep = pool->endpoints[v - 1];
        if (key_eq(ep->private_instance_id, id, id_len) || key_eq(ep->addr, id, id_len))
            return ep;
    }
    return NULL;
}

cr_endpoint_t *cr_pool_find_by_app_index(const cr_pool_t *pool, const char *app_guid,
                                         size_t app_guid_len, const char *index, size_t index_len)
{
    if (!pool || !app_guid || !index)
        return NULL;
    for (uint32_t i = 0; i < pool->len; i++) {
        cr_endpoint_t *ep = pool->endpoints[i];
        if (key_eq(ep->app, app_guid, app_guid_len) &&
            key_eq(ep->private_instance_index, index, index_len))
            return ep;
    }
    return NULL;
}
