/* registry/internal.h - helpers shared inside registry/ only; other folders keep out.
 *
 * endpoint.c builds endpoints and pool snapshots; route_table.c publishes
 * them. Everything here runs on a writer (under the table's mutex) unless it
 * says otherwise.
 */
#ifndef CR_REGISTRY_INTERNAL_H
#define CR_REGISTRY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "registry/endpoint_types.h"
#include "registry/message.h"

/* ThreadSanitizer cannot see liburcu's grace periods (membarrier) or the
 * publication inside the uninstrumented lock-free hash table. These
 * annotations state the happens-before edges RCU guarantees; they compile to
 * nothing in other builds. */
#if defined(__SANITIZE_THREAD__)
#define CR_REGISTRY_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CR_REGISTRY_TSAN 1
#endif
#endif
#ifdef CR_REGISTRY_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define CR_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define CR_TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define CR_TSAN_ACQUIRE(p) ((void)0)
#define CR_TSAN_RELEASE(p) ((void)0)
#endif
/* Readers release this at the end of every read section; RCU callbacks
 * acquire it before freeing: the grace period orders the two. */
extern char cr_registry__gp_sync;

/* The jansson-free fast path alone (for tests): true when it decoded data
 * into out (free with cr_register_msg_deinit), false when it left the
 * message to jansson (out is then empty). */
bool cr_register_msg__decode_fast(const char *data, size_t len, cr_register_msg_t *out);
/* cr_register_msg_decode without its fast path: jansson only (message.c).
 * Tests compare the two. */
int cr_register_msg__decode_jansson(const char *data, size_t len, cr_register_msg_t *out,
                                    char *err, size_t err_cap);

/* Longest "host:port" / "[v6]:port" the registry builds. Longer hosts are
 * accepted but their address is truncated (and then never dialable). */
#define CR_REGISTRY_ADDR_MAX 300

/* Writes msg's address ("host:port", tls_port preferred; IPv6 hosts in
 * brackets) into buf and returns its length (< cap, NUL-terminated). */
size_t cr_registry__format_addr(const cr_register_msg_t *msg, char *buf, size_t cap);

/* A resolved socket address; len 0 = unresolved. */
typedef struct cr_registry__sockaddr {
    struct sockaddr_storage ss;
    socklen_t len;
} cr_registry__sockaddr_t;

/* Resolves msg's host and port. Literal IPv4/IPv6 addresses resolve at once.
 * Other names need getaddrinfo: with allow_dns false this returns CR_AGAIN so
 * the caller can drop its mutex first; with it true the name is looked up
 * (blocking; never call on a worker). Returns 0 (out->len is 0 when the name
 * does not resolve) or CR_AGAIN. */
int cr_registry__resolve(const cr_register_msg_t *msg, bool allow_dns, cr_registry__sockaddr_t *out);

/* Effective TTL in seconds: the message's stale threshold when 0 < it <=
 * the droplet threshold, else the droplet threshold. */
int64_t cr_registry__ttl_s(const cr_register_msg_t *msg, int64_t droplet_stale_threshold_ns);

/* References to a route's memory (route_table.c): a route is freed once it
 * is unlinked (after a grace period) and every endpoint created for it is
 * freed, so endpoints point at its key and context path instead of copying
 * them. Any thread. */
void cr_registry__route_retain(const cr_route_t *route);
void cr_registry__route_release(const cr_route_t *route);

/* Creates an endpoint for route from msg, with refcount 1 (the caller's).
 * The endpoint holds a reference to route (its context_path is the
 * route's). refreshed_at_ns = now_ns. */
cr_endpoint_t *cr_registry__endpoint_create(const cr_register_msg_t *msg, const cr_route_t *route,
                                            int64_t ttl_s, const cr_registry__sockaddr_t *sa,
                                            int64_t now_ns);

/* True when registering msg again would change nothing but the timestamp. */
bool cr_registry__endpoint_matches(const cr_endpoint_t *ep, const cr_register_msg_t *msg, int64_t ttl_s);

/* The normalised key of the route the endpoint was created for (valid while
 * the caller holds the endpoint). */
const char *cr_registry__endpoint_route_key(const cr_endpoint_t *ep);

/* Calls fn(p) after an RCU grace period, through a small record allocated
 * here and freed with it: for objects that are retired rarely and so carry
 * no rcu_head of their own (host entries, routes, one-endpoint pools). The
 * calling thread must be a registered RCU thread. */
void cr_registry__defer_free(void *p, void (*fn)(void *));

/* Interning (intern.c): out[i] = a shared copy of in[i] with one more
 * reference (NULL stays NULL). Release drops one reference to each s[i]
 * (NULL ignored), freeing a copy when its last user goes. Any thread. */
void cr_registry__intern(const char *const *in, const char **out, size_t n);
void cr_registry__intern_release(const char *const *s, size_t n);
/* Distinct strings held (tests). */
size_t cr_registry__intern_count(void);

/* The shared empty pool (never freed). */
cr_pool_t *cr_registry__pool_empty(void);

/* A new pool of n endpoints in this order; takes a reference on each. n == 0
 * returns the shared empty pool. */
cr_pool_t *cr_registry__pool_create(cr_endpoint_t *const *eps, uint32_t n);

/* Frees pool now, releasing its references. The caller knows no reader can
 * still see it. Accepts NULL and the empty pool. */
void cr_registry__pool_free(cr_pool_t *pool);

/* Frees pool after an RCU grace period (call_rcu). The calling thread must be
 * a registered RCU thread. Accepts NULL and the empty pool. */
void cr_registry__pool_free_deferred(cr_pool_t *pool);

/* Index of the endpoint with this addr in pool, or -1. Hash lookup. */
int cr_registry__pool_index_of_addr(const cr_pool_t *pool, const char *addr, size_t addr_len);

#endif
