/* registry/registry.h - the URI -> pool table that NATS feeds and workers read.
 *
 * Readers (worker threads, the status server) never wait behind a writer:
 * lookups run inside an RCU read section (liburcu, memb flavour); writers
 * (NATS thread, pruner) serialise on one mutex, publish new immutable pool
 * snapshots and free old ones after a grace period (call_rcu, never
 * synchronize_rcu on a path that holds the mutex for long).
 *
 * Route keys are "host[/path]": host lower-cased, port stripped, query
 * stripped, one trailing slash ignored, path compared case-insensitively.
 * Lookup takes the longest whole-segment context path whose pool is not
 * empty (an empty deeper pool never hides a live parent), then "*.parent"
 * wildcards from most to least specific when no exact host matched.
 */
#ifndef CR_REGISTRY_REGISTRY_H
#define CR_REGISTRY_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "registry/endpoint_types.h"
#include "registry/message.h"

typedef struct cr_registry cr_registry_t;

typedef struct cr_registry_options {
    int64_t droplet_stale_threshold_ns;  /* TTL cap and default TTL */
    cr_lb_algo_t default_lb_algo;        /* initial algorithm of new routes */
    bool empty_pool_response_code_503;   /* keep emptied routes (answer 503) ... */
    int64_t empty_pool_timeout_ns;       /* ... for this long; 0 = remove them at once (gorouter) */
    const cr_persist_policy_t *persistence; /* borrowed: the global session_persistence block; NULL = defaults */
    bool allow_route_persistence;        /* honour options.session_persistence in messages */
} cr_registry_options_t;

typedef struct cr_registry_stats {
    uint64_t routes;              /* routes in the table (including empty 503-mode ones) */
    uint64_t endpoints;           /* endpoint slots over all pools */
    uint64_t registers;           /* register operations applied (per uri) */
    uint64_t unregisters;         /* unregister operations that removed an endpoint */
    uint64_t pruned;              /* endpoints removed by pruning, ever */
    int64_t last_update_mono_ns;  /* last change of any kind; 0 = never */
    uint64_t persistence_rejected; /* messages whose session_persistence was invalid (default policy used) */
    uint64_t persistence_refused;  /* ... that carried one while allow_route_session_persistence is false */
} cr_registry_stats_t;

/* Fills options from a config. */
void cr_registry_options_from_config(const cr_config_t *cfg, cr_registry_options_t *out);

/* Creates an empty table. The caller owns it. */
cr_registry_t *cr_registry_create(const cr_registry_options_t *opts);

/* Frees the table and drops its endpoint references. No reader or writer may
 * be running. Accepts NULL. */
void cr_registry_destroy(cr_registry_t *reg);

/* --- Readers ----------------------------------------------------------- */

/* Every thread that calls the read functions registers once (RCU). */
void cr_registry_reader_thread_register(void);
void cr_registry_reader_thread_unregister(void);

/* A read section; nests. Keep it short on workers: look up, pick, retain. */
void cr_registry_read_lock(void);
void cr_registry_read_unlock(void);

/* Looks up a request. host is the Host header value (any case, optional
 * ":port", IPv6 literal in brackets allowed); path is the request path
 * (a "?query" part is ignored). Returns NULL when no route matches, else a
 * route whose pool may be empty (503 mode). Must be called in a read
 * section; the result is valid until the section ends. */
const cr_route_t *cr_registry_lookup(const cr_registry_t *reg, const char *host, size_t host_len,
                                     const char *path, size_t path_len);

/* The route's current pool (never NULL; len may be 0). In a read section. */
const cr_pool_t *cr_route_pool(const cr_route_t *route);

/* The endpoint whose private_instance_id (or, as gorouter allows, addr)
 * equals id; NULL when none. Hash lookup, not a scan. In a read section. */
cr_endpoint_t *cr_pool_find_by_id(const cr_pool_t *pool, const char *id, size_t id_len);

/* The endpoint with app == app_guid and private_instance_index == index
 * (compared as strings: "01" != "1"); NULL when none. In a read section. */
cr_endpoint_t *cr_pool_find_by_app_index(const cr_pool_t *pool, const char *app_guid,
                                         size_t app_guid_len, const char *index, size_t index_len);

/* Takes a counted reference (any thread; the endpoint must be reachable:
 * inside a read section or through a reference already held). */
cr_endpoint_t *cr_endpoint_retain(cr_endpoint_t *ep);
/* Drops one; the last frees the endpoint. Accepts NULL. */
void cr_endpoint_release(cr_endpoint_t *ep);

/* Visits every route (unspecified order) inside one read section that this
 * function opens. The callback must not block for long or call writers. */
typedef void (*cr_route_visit_fn)(void *arg, const cr_route_t *route, const cr_pool_t *pool);
void cr_registry_for_each_route(const cr_registry_t *reg, cr_route_visit_fn visit, void *arg);

void cr_registry_get_stats(const cr_registry_t *reg, cr_registry_stats_t *out);

/* --- Writers (serialised inside; any thread) ---------------------------- */

/* Registers msg's endpoint on every uri in msg. A known address is refreshed
 * (timestamp only) when its fields are equal, replaced in its slot when they
 * differ; a new address is appended. A valid lb_algo switches the route's
 * algorithm. Returns 0, or CR_EBAD when msg has no usable uri. now_ns is
 * monotonic. */
int cr_registry_register(cr_registry_t *reg, const cr_register_msg_t *msg, int64_t now_ns);

/* Removes the endpoint with msg's address (tls_port preferred) from every
 * uri in msg, whatever its other fields say. Emptied routes disappear unless
 * 503 mode keeps them. Returns the number of endpoints removed. */
size_t cr_registry_unregister(cr_registry_t *reg, const cr_register_msg_t *msg, int64_t now_ns);

/* Removes non-TLS endpoints whose last refresh is older than their TTL, and
 * 503-mode empty routes older than empty_pool_timeout. Never blocks readers.
 * Returns the number of endpoints removed. */
size_t cr_registry_prune(cr_registry_t *reg, int64_t now_ns);

/* Sets every endpoint's refresh time to now_ns (after a NATS outage). */
void cr_registry_freshen(cr_registry_t *reg, int64_t now_ns);

/* Removes one endpoint (by identity) from every pool that lists it; used for
 * TLS endpoints that fail to dial. Returns the number of pools changed. */
size_t cr_registry_remove_endpoint(cr_registry_t *reg, const cr_endpoint_t *ep);

/* --- Pruner thread ------------------------------------------------------ */

typedef struct cr_pruner cr_pruner_t;

/* Whether NATS is connected now; called from the pruner thread. */
typedef bool (*cr_nats_up_fn)(void *arg);

/* Starts a thread that prunes every interval_ns (0: returns a pruner that
 * does nothing). With suspend_if_nats_down, a cycle is skipped while nats_up
 * says false, and the first cycle after it is true again freshens every
 * endpoint before pruning. */
cr_pruner_t *cr_pruner_start(cr_registry_t *reg, int64_t interval_ns, bool suspend_if_nats_down,
                             cr_nats_up_fn nats_up, void *nats_up_arg);
/* Stops and joins the thread. Accepts NULL. */
void cr_pruner_stop(cr_pruner_t *pruner);

#endif
