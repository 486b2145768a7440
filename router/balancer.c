/* router/balancer.c - which endpoint of a pool gets a request.
 *
 * Pure functions over an immutable pool snapshot, called inside a registry
 * read section by the worker threads (several workers may balance the same
 * route at once). The only shared writes are the route's round-robin cursor
 * (one atomic add per request, gorouter's NextIndex) and, when every
 * endpoint has failed, the reset of their failed_at stamps. The caller
 * retains the chosen endpoint and counts it in in_flight.
 *
 * Round-robin (gorouter route/roundrobin.go): from the cursor, skip
 * endpoints failed within droplet_stale_threshold/4 and those at max_conns;
 * when a full turn found nothing and something was not overloaded, clear the
 * failures and take the next usable one; all overloaded is CONN_LIMIT.
 * Least-connection: the lowest in_flight from a random start (ties go to the
 * first in that rotation, i.e. at random), failures ignored.
 * Hashing (session persistence source_ip/header): rendezvous over the
 * usable endpoints, recently failed ones only when nothing else is left.
 * Endpoints a request already tried are skipped by all; when they are all
 * that is left the pick fails (ENDPOINT_FAILURE), which stops retries.
 * Owns nothing.
 */
#include "router/internal.h"

#include "common/uuid.h"

bool cr_balancer_is_overloaded(const cr_endpoint_t *ep, uint32_t max_conns)
{
    return max_conns != 0 &&
           atomic_load_explicit(&ep->in_flight, memory_order_relaxed) >= (int32_t)max_conns;
}

bool cr_balancer_is_failed(const cr_endpoint_t *ep, int64_t now_ns, int64_t window_ns)
{
    int64_t at = atomic_load_explicit(&ep->failed_at_ns, memory_order_relaxed);
    return at != 0 && now_ns - at < window_ns;
}

static bool is_excluded(const cr_pick_opts_t *o, const cr_endpoint_t *ep)
{
    for (uint32_t i = 0; i < o->exclude_len; i++)
        if (o->exclude[i] == ep)
            return true;
    return false;
}

cr_endpoint_t *cr_balancer_round_robin(cr_route_t *route, const cr_pool_t *pool,
                                       const cr_pick_opts_t *o, cr_proxy_error_t *err)
{
    uint32_t n = pool->len;
    if (n == 0) {
        *err = CR_PERR_NO_ENDPOINTS;
        return NULL;
    }
    uint32_t start = atomic_fetch_add_explicit(&route->rr_next, 1, memory_order_relaxed) % n;
    bool any_usable = false;      /* not overloaded and not excluded */
    bool any_not_overloaded = false;
    for (uint32_t k = 0; k < n; k++) {
        cr_endpoint_t *ep = pool->endpoints[(start + k) % n];
        if (cr_balancer_is_overloaded(ep, o->max_conns))
            continue;
        any_not_overloaded = true;
        if (o->exclude_len && is_excluded(o, ep))
            continue;
        any_usable = true;
        if (!cr_balancer_is_failed(ep, o->now_ns, o->fail_window_ns))
            return ep;
    }
    if (!any_not_overloaded) {
        *err = CR_PERR_CONN_LIMIT;
        return NULL;
    }
    if (!any_usable) {
        *err = CR_PERR_ENDPOINT_FAILURE;
        return NULL;
    }
    /* Everything usable has failed recently: forget the failures (gorouter
     * does) and take the next one, so a recovered backend is found. */
    cr_endpoint_t *chosen = NULL;
    for (uint32_t k = 0; k < n; k++) {
        cr_endpoint_t *ep = pool->endpoints[(start + k) % n];
        atomic_store_explicit(&ep->failed_at_ns, 0, memory_order_relaxed);
        if (!chosen && !cr_balancer_is_overloaded(ep, o->max_conns) &&
            !(o->exclude_len && is_excluded(o, ep)))
            chosen = ep;
    }
    if (!chosen)
        *err = CR_PERR_ENDPOINT_FAILURE;
    return chosen;
}

cr_endpoint_t *cr_balancer_least_conn(const cr_pool_t *pool, const cr_pick_opts_t *o,
                                      cr_proxy_error_t *err)
{
    uint32_t n = pool->len;
    if (n == 0) {
        *err = CR_PERR_NO_ENDPOINTS;
        return NULL;
    }
    uint32_t start = n == 1 ? 0 : (uint32_t)(cr_random_u64() % n);
    cr_endpoint_t *best = NULL;
    int32_t best_load = 0;
    bool any_not_overloaded = false;
    for (uint32_t k = 0; k < n; k++) {
        cr_endpoint_t *ep = pool->endpoints[(start + k) % n];
        if (cr_balancer_is_overloaded(ep, o->max_conns))
            continue;
        any_not_overloaded = true;
        if (o->exclude_len && is_excluded(o, ep))
            continue;
        int32_t load = atomic_load_explicit(&ep->in_flight, memory_order_relaxed);
        if (!best || load < best_load) {
            best = ep;
            best_load = load;
        }
    }
    if (!best)
        *err = any_not_overloaded ? CR_PERR_ENDPOINT_FAILURE : CR_PERR_CONN_LIMIT;
    return best;
}

cr_endpoint_t *cr_balancer_hash(const cr_pool_t *pool, const cr_pick_opts_t *o, uint64_t key,
                                cr_proxy_error_t *err)
{
    /* Rendezvous: the highest weight among usable endpoints, preferring
     * ones not failed recently; a key moves only when its endpoint goes. */
    cr_endpoint_t *best = NULL, *best_failed = NULL;
    uint64_t best_w = 0, best_failed_w = 0;
    bool any_not_overloaded = false;
    for (uint32_t i = 0; i < pool->len; i++) {
        cr_endpoint_t *ep = pool->endpoints[i];
        if (cr_balancer_is_overloaded(ep, o->max_conns))
            continue;
        any_not_overloaded = true;
        if (o->exclude_len && is_excluded(o, ep))
            continue;
        uint64_t w = cr_persist_hrw_score(key, cr_persist_endpoint_hash(ep));
        if (cr_balancer_is_failed(ep, o->now_ns, o->fail_window_ns)) {
            if (!best_failed || w > best_failed_w) {
                best_failed = ep;
                best_failed_w = w;
            }
        } else if (!best || w > best_w) {
            best = ep;
            best_w = w;
        }
    }
    if (!best)
        best = best_failed;
    if (!best)
        *err = pool->len == 0         ? CR_PERR_NO_ENDPOINTS
               : any_not_overloaded ? CR_PERR_ENDPOINT_FAILURE
                                    : CR_PERR_CONN_LIMIT;
    return best;
}

void cr_balancer_choose(cr_route_t *route, const cr_pool_t *pool, const cr_pick_opts_t *o,
                        const char *sticky_id, size_t sticky_len, bool must_be_sticky,
                        cr_pick_result_t *out)
{
    out->ep = NULL;
    out->err = CR_PERR_NONE;
    out->sticky_hit = false;
    out->sticky_miss = false;
    if (pool->len == 0) {
        out->err = CR_PERR_NO_ENDPOINTS;
        return;
    }
    if (sticky_id) {
        cr_endpoint_t *ep = cr_pool_find_by_id(pool, sticky_id, sticky_len);
        /* A failed instance still gets its sessions (gorouter); an
         * overloaded one does not. */
        if (ep && !cr_balancer_is_overloaded(ep, o->max_conns) &&
            !(o->exclude_len && is_excluded(o, ep))) {
            out->ep = ep;
            out->sticky_hit = true;
            return;
        }
        out->sticky_miss = true;
        if (must_be_sticky) {
            out->err = CR_PERR_ENDPOINT_FAILURE;
            return;
        }
    }
    int algo = atomic_load_explicit(&route->lb_algo, memory_order_relaxed);
    if (algo == CR_LB_LEAST_CONNECTION)
        out->ep = cr_balancer_least_conn(pool, o, &out->err);
    else
        out->ep = cr_balancer_round_robin(route, pool, o, &out->err);
}
