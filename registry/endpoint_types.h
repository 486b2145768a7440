/* registry/endpoint_types.h - the fields of endpoints, pools and routes.
 *
 * Types-only header: router/ (balancing, headers, stickiness) and api/
 * (/routes) both read these fields, so they are public. Everything here is
 * written only by registry/ (under its writer mutex) except the fields marked
 * "atomic", which workers update.
 *
 * Lifetimes:
 * - A cr_route_t and the cr_pool_t it points to are valid only inside a
 *   registry read section (cr_registry_read_lock/unlock). Pools are immutable
 *   snapshots; a change publishes a new pool and frees the old one after an
 *   RCU grace period.
 * - A cr_endpoint_t is refcounted. Each pool that lists it holds a reference;
 *   a worker that picked it takes its own with cr_endpoint_retain() inside
 *   the read section and may then use it after unlocking, until
 *   cr_endpoint_release(). Its non-atomic fields never change after creation:
 *   a re-register with different fields creates a new endpoint in the slot.
 */
#ifndef CR_REGISTRY_ENDPOINT_TYPES_H
#define CR_REGISTRY_ENDPOINT_TYPES_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "config/persistence.h"

typedef struct cr_tag {
    char *key;   /* interned (registry/intern.c): shared, released with the endpoint */
    char *value; /* interned */
} cr_tag_t;

/* Fields are ordered largest first so the struct has no holes (208 bytes
 * on LP64); see registry/endpoint.c for what is packed behind it. */
typedef struct cr_endpoint {
    /* Identity: "host:port", with tls_port in place of port when set. */
    char *addr;                   /* owned; the key within a pool */
    char *host;                   /* interned (registry/intern.c): shared, released with the endpoint */

    /* Message fields; NULL when absent or empty. private_instance_id is the
     * endpoint's own; protocol is its own or a static "http1"/"http2"; the
     * rest are interned. All stay valid while the endpoint is referenced. */
    char *private_instance_id;
    char *private_instance_index;
    char *app;
    char *route_service_url;
    char *server_cert_domain_san;
    char *isolation_segment;
    char *protocol;               /* "http1" when absent */
    char *availability_zone;
    cr_tag_t *tags;               /* array of tags_len, in the endpoint's allocation */

    char *context_path;           /* the route's context path as first registered ("" = bare host; cookie
                                     Path), in the route, which the endpoint keeps alive */

    /* Session persistence (issue 5; router/persistence.c). */
    const cr_persist_policy_t *persistence; /* effective policy (route override merged over the
                                               global block), packed in the endpoint's allocation;
                                               NULL = the global policy */

    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } sockaddr;                   /* resolved when registered (never on a worker) */
    socklen_t sockaddr_len;       /* 0 when the host could not be resolved */

    int64_t endpoint_updated_at_ns; /* from the message; not used for ordering */

    /* Mutable state. */
    _Atomic int64_t refreshed_at_ns; /* atomic: monotonic time of the last register (pruning) */
    _Atomic int64_t failed_at_ns;    /* atomic: monotonic time of the last failure; 0 = none */
    _Atomic uint64_t persist_hash;   /* atomic: cached rendezvous hash; 0 = not computed yet */
    _Atomic uint64_t persist_id[2];  /* atomic: cached keyed identity under secret / previous_secret */
    _Atomic int32_t in_flight;       /* atomic: requests between pick and response head (least-connection, max_conns) */
    _Atomic uint32_t refcount;       /* atomic */

    int32_t ttl_s;                /* effective TTL: min(stale_threshold_in_seconds, droplet_stale_threshold) */
    uint32_t tags_len;
    uint16_t port;                /* the port dialled (tls_port when tls) */
    bool tls;                     /* registered with a non-zero tls_port */
    bool has_tags;                /* false: /routes shows "tags": null */
    int8_t lb_algo;               /* -1 = none, else cr_lb_algo_t from options.loadbalancing */
} cr_endpoint_t;

/* Pools this small have no id index: a scan of them is as fast as hashing. */
#define CR_POOL_SCAN_MAX 8

/* An immutable snapshot of one route's endpoints, in registration order.
 * Pools of more than CR_POOL_SCAN_MAX endpoints are followed, in the same
 * allocation, by an open-addressing index of id_index_mask + 1 uint32 slots
 * on private_instance_id and addr (slot = endpoint index + 1, 0 = empty);
 * registry/ reads it (cr_pool_find_by_id). A one-endpoint pool usually
 * lives inside its endpoint's allocation. */
typedef struct cr_pool {
    uint32_t len;
    uint32_t id_index_mask;       /* 0 without an index */
    cr_endpoint_t *endpoints[];   /* each holds a reference */
} cr_pool_t;

typedef struct cr_route {
    char *key;                    /* owned: normalised "host[/path]" */
    char *host;                   /* owned: host as first registered */
    char *context_path;           /* owned: "" or "/path" as first registered */
    cr_pool_t *_pool;             /* RCU-protected; read with cr_route_pool() */
    _Atomic uint32_t rr_next;     /* atomic: round-robin cursor, starts random */
    _Atomic int lb_algo;          /* atomic: cr_lb_algo_t; switched by options.loadbalancing */
    int64_t emptied_at_ns;        /* when the pool became empty (503 mode), else 0 */
} cr_route_t;

#endif
