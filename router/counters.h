/* router/counters.h - the data path's counters, per worker, summed on read.
 *
 * Each worker owns one cr_router_counters_t and is its only writer, with
 * relaxed atomic load+store (no locked instruction on the hot path); the
 * status server sums all workers' copies with cr_router_get_counters().
 */
#ifndef CR_ROUTER_COUNTERS_H
#define CR_ROUTER_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

#include "router/errors.h"

typedef _Atomic uint64_t cr_counter_t;

typedef struct cr_router_counters {
    cr_counter_t requests;               /* requests whose head was parsed */
    cr_counter_t responses_by_class[6];  /* [0] other, [1] 1xx ... [5] 5xx: what clients got */
    cr_counter_t errors[CR_PERR__COUNT]; /* router-made responses (and 499s) by kind */
    cr_counter_t bad_requests;           /* malformed requests answered 400 and closed */
    cr_counter_t client_connections;     /* accepted, ever */
    cr_counter_t client_connections_open;/* open now (gauge; worker-written) */
    cr_counter_t backend_connects;       /* new backend connections */
    cr_counter_t backend_reuses;         /* requests sent on a pooled connection */
    cr_counter_t backend_failures;       /* failed attempts (dial, reset, timeout) */
    cr_counter_t retries;                /* attempts after the first */
    cr_counter_t upgrades;               /* tunnels opened (101) */
    cr_counter_t sticky_requests;        /* requests that asked for an instance */
    cr_counter_t sticky_hits;            /* ... and were served by it */
    cr_counter_t sticky_misses;          /* ... and were not (gone, overloaded, unknown) */
    cr_counter_t vcap_cookies_set;       /* __VCAP_ID__ Set-Cookie lines added */
    cr_counter_t persist_requests;       /* requests on routes whose session_persistence is not vcap */
    cr_counter_t persist_hits;           /* ... served by the endpoint their session named */
    cr_counter_t persist_rebalanced;     /* ... whose named endpoint was gone or unusable */
    cr_counter_t persist_rejected;       /* crouter cookies refused: bad MAC, malformed or expired */
    cr_counter_t persist_cookies_set;    /* persistence Set-Cookie lines added or rewritten */
    cr_counter_t persist_learned;        /* learn-table bindings stored from this router's traffic */
    cr_counter_t request_body_bytes;
    cr_counter_t response_body_bytes;
    cr_counter_t response_time_us_total; /* sum over proxied responses, for a mean */
} cr_router_counters_t;

/* Single-writer increment: only the owning worker calls it. */
static inline void cr_counter_add(cr_counter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t cr_counter_get(const cr_counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

#endif
