/* router/persist_proxy.c - session persistence beyond gorouter on the data path (issue 5).
 *
 * A route's policy is its first endpoint's effective policy, else the
 * config's session_persistence block. On vcap routes (the default) none of
 * this runs: proxy.c checks the mode and takes gorouter's path. Otherwise,
 * on a request's first attempt, cr_persist__choose() records the policy
 * (holding a reference on the endpoint whose allocation holds it, so the
 * response side can still read it after the pool changed) and the request's
 * key, then on every attempt resolves the endpoint the key names:
 *   insert/rewrite  crouter's cookie: MAC verified (secret, then
 *                   previous_secret), expiry checked; a value that fails
 *                   either is no cookie and is counted, never honoured;
 *   prefix          the "<identity>~" prefix of the app's session cookie;
 *   learn           the learn table: keyed hash of the session value ->
 *                   endpoint hash, with idle expiry;
 *   source_ip       rendezvous hashing of the client address (X-Forwarded-For
 *                   believed only from trusted_proxies), /N masked;
 *   header          rendezvous hashing of a request header.
 * A named endpoint that is usable serves the request; one that is gone (or
 * failed in this request) gives 503 (502 on a retry) with fallback: false,
 * else the request is balanced again: by source address with fallback_to:
 * source_ip, else by the route's algorithm. Each request decides on its own,
 * so a keep-alive connection may carry several sessions.
 *
 * The response side (from relay.c) adds crouter's cookie (insert; also a
 * rewrite-mode refresh), replaces every backend Set-Cookie of the named
 * cookie (rewrite: value overwritten; prefix: value prefixed), adds
 * Cache-Control for nocache, and learns bindings (one per Set-Cookie). The request side's cookie
 * edits (indirect, prefix removal) happen in rewrite.c's copying pass.
 *
 * Nothing here allocates; keys are prepared on the stack per request, and
 * endpoint identities and hashes are cached in the endpoints.
 * Threads: the owning worker only. Owns: the exchange's policy reference.
 */
#include "router/internal.h"

#include <stdio.h>
#include <string.h>

#include "common/defs.h"
#include "router/cookie.h"
#include "router/rewrite.h"

#define MAX_XFF_HEADERS 16

const cr_persist_policy_t *cr_persist__route_policy(const cr_router_t *rt, const cr_pool_t *pool)
{
    const cr_persist_policy_t *p = pool->len ? pool->endpoints[0]->persistence : NULL;
    return p ? p : &rt->cfg->session_persistence;
}

static uint32_t now_s(const cr_worker_t *w)
{
    return (uint32_t)(w->now_real_ns / CR_NS_PER_SEC);
}

/* --- Request keys ---------------------------------------------------------------- */

static bool find_cookie(const cr_http_request_t *rq, const cr_persist_policy_t *pol,
                        cr_cookie_t *out)
{
    const char *name = cr_persist_policy_cookie(pol);
    return cr_cookie_find(rq->headers, rq->headers_len, name, strlen(name), out);
}

/* Records the request's key on the first attempt. */
static void read_key(cr_conn_t *c, const cr_route_t *route, const cr_persist_policy_t *pol,
                     const cr_persist_keys_t *k)
{
    cr_exchange_t *ex = &c->ex;
    cr_persist_exchange_t *px = &ex->persist;
    cr_cookie_t ck;
    switch (pol->mode) {
    case CR_PERSIST_INSERT:
    case CR_PERSIST_REWRITE:
        if (!find_cookie(&ex->req, pol, &ck))
            return;
        if (cr_persist_cookie_decode(k, ck.value, ck.value_len, &px->cookie) != 0 ||
            cr_persist_cookie_expired(&px->cookie, pol, now_s(c->w))) {
            /* Forged, tampered, foreign or expired: as if absent. */
            cr_counter_add(&c->w->counters.persist_rejected, 1);
            memset(&px->cookie, 0, sizeof px->cookie);
            return;
        }
        px->has_cookie = true;
        return;
    case CR_PERSIST_PREFIX:
        if (find_cookie(&ex->req, pol, &ck) && ck.value_len > CR_PERSIST_ID_CHARS &&
            ck.value[CR_PERSIST_ID_CHARS] == CR_PERSIST_PREFIX_SEP)
            cr_persist_id_token_parse(ck.value, CR_PERSIST_ID_CHARS, &px->prefix_id);
        return;
    case CR_PERSIST_LEARN:
        px->route_hash = cr_persist_hash(route->key, strlen(route->key), 0x6c6561726eULL);
        if (find_cookie(&ex->req, pol, &ck) && ck.value_len > 0) {
            px->value_hash = cr_persist_value_hash(k, px->route_hash, ck.value, ck.value_len);
            if (px->value_hash == 0)
                px->value_hash = 1;
        }
        return;
    default:
        return;
    }
}

/* The hash key of the client address (source_ip, fallback_to). */
static uint64_t source_key(const cr_conn_t *c, const cr_persist_policy_t *pol)
{
    uint8_t peer[16], addr[16];
    if (cr_persist_parse_ip(c->client_ip, c->client_ip_len, peer) != 0)
        memset(peer, 0, sizeof peer);
    const char *vals[MAX_XFF_HEADERS];
    size_t lens[MAX_XFF_HEADERS], n = 0;
    const cr_http_request_t *rq = &c->ex.req;
    for (uint32_t i = 0; pol->trusted_proxies_len && i < rq->headers_len; i++) {
        const cr_http_header_t *h = &rq->headers[i];
        if (h->name_len == 15 && cr_http_token_eq(h->name, 15, "x-forwarded-for")) {
            if (n == MAX_XFF_HEADERS) {
                /* Keep the rightmost ones: they are the ones walked first. */
                memmove(vals, vals + 1, sizeof vals - sizeof vals[0]);
                memmove(lens, lens + 1, sizeof lens - sizeof lens[0]);
                n--;
            }
            vals[n] = h->value;
            lens[n++] = h->value_len;
        }
    }
    cr_persist_client_addr(pol, peer, vals, lens, n, addr);
    return cr_persist_ip_key(addr, pol->ip_prefix, cr_persist_policy_ip6_prefix(pol));
}

/* The hash key of the policy's header; false when the request has none. */
static bool header_key(const cr_conn_t *c, const cr_persist_policy_t *pol, uint64_t *key)
{
    char lower[CR_PERSIST_NAME_MAX + 1];
    size_t n = 0;
    for (; pol->header[n] && n < CR_PERSIST_NAME_MAX; n++) {
        char ch = pol->header[n];
        lower[n] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    lower[n] = '\0';
    const cr_http_header_t *h = cr_http_find_header(c->ex.req.headers, c->ex.req.headers_len,
                                                     lower, n);
    if (!h || h->value_len == 0)
        return false;
    *key = cr_persist_hash(h->value, h->value_len, 0x68656164ULL);
    return true;
}

static bool is_excluded(const cr_pick_opts_t *o, const cr_endpoint_t *ep)
{
    for (uint32_t i = 0; i < o->exclude_len; i++)
        if (o->exclude[i] == ep)
            return true;
    return false;
}

/* --- Request side --------------------------------------------------------------------- */

void cr_persist__choose(cr_conn_t *c, cr_route_t *route, const cr_pool_t *pool,
                        const cr_persist_policy_t *pol, const cr_pick_opts_t *o, bool first,
                        cr_pick_result_t *out)
{
    cr_worker_t *w = c->w;
    cr_persist_exchange_t *px = &c->ex.persist;
    memset(out, 0, sizeof *out);
    cr_persist_keys_t k;
    bool keyed = pol->mode == CR_PERSIST_INSERT || pol->mode == CR_PERSIST_REWRITE ||
                 pol->mode == CR_PERSIST_PREFIX || pol->mode == CR_PERSIST_LEARN;
    if (keyed)
        cr_persist_keys_init(&k, pol);
    if (!px->policy) {
        px->policy = pol;
        if (pool->len && pool->endpoints[0]->persistence == pol) {
            px->owner = pool->endpoints[0];
            cr_endpoint_retain(px->owner);
        }
        /* The route's mode replaces gorouter's rule: __VCAP_ID__ is ignored. */
        memset(&c->ex.sticky, 0, sizeof c->ex.sticky);
        cr_counter_add(&w->counters.persist_requests, 1);
        read_key(c, route, pol, &k);
    }

    /* The endpoint the request's key names, if any. */
    bool named = false;
    cr_endpoint_t *bound = NULL;
    switch (pol->mode) {
    case CR_PERSIST_INSERT:
    case CR_PERSIST_REWRITE:
        if (px->has_cookie) {
            named = true;
            bound = cr_persist_find_identity(pool, &k, px->cookie.key_idx, px->cookie.id);
        }
        break;
    case CR_PERSIST_PREFIX:
        if (px->prefix_id) {
            named = true;
            bound = cr_persist_find_identity(pool, &k, 0, px->prefix_id);
            if (!bound && k.has_previous)
                bound = cr_persist_find_identity(pool, &k, 1, px->prefix_id);
        }
        break;
    case CR_PERSIST_LEARN: {
        uint64_t eh;
        if (px->value_hash && cr_persist_learn_get(w->rt->learn, px->route_hash, px->value_hash,
                                                   w->now_ns, pol->max_idle_ns, &eh)) {
            named = true;
            bound = cr_persist_find_hash(pool, eh);
        }
        break;
    }
    default:
        break;
    }
    px->bound = named;
    px->hit = false;
    if (named) {
        bool overloaded = bound && cr_balancer_is_overloaded(bound, o->max_conns);
        if (bound && !overloaded && !(o->exclude_len && is_excluded(o, bound))) {
            /* A failed instance still gets its sessions, as with __VCAP_ID__. */
            out->ep = bound;
            px->hit = true;
            if (first)
                cr_counter_add(&w->counters.persist_hits, 1);
            return;
        }
        if (first)
            cr_counter_add(&w->counters.persist_rebalanced, 1);
        if (!pol->fallback) {
            out->err = !bound ? CR_PERR_SESSION_GONE
                       : overloaded ? CR_PERR_CONN_LIMIT
                                    : CR_PERR_ENDPOINT_FAILURE;
            return;
        }
    }

    /* Balance: by hash when the mode or fallback_to says so, else as usual. */
    uint64_t key = 0;
    bool hashed = false;
    if (pol->mode == CR_PERSIST_HEADER)
        hashed = header_key(c, pol, &key);
    if (!hashed && (pol->mode == CR_PERSIST_SOURCE_IP || pol->fallback_to_source_ip)) {
        key = source_key(c, pol);
        hashed = true;
    }
    if (hashed) {
        out->ep = cr_balancer_hash(pool, o, key, &out->err);
        return;
    }
    cr_balancer_choose(route, pool, o, NULL, 0, false, out);
}

void cr_persist__request_rewrite(const cr_conn_t *c, cr_request_rewrite_t *rw)
{
    const cr_persist_policy_t *pol = c->ex.persist.policy;
    if (!pol || !pol->indirect)
        return;
    if (pol->mode == CR_PERSIST_INSERT)
        rw->cookie_strip = true;
    else if (pol->mode == CR_PERSIST_PREFIX)
        rw->cookie_unprefix = true;
    else
        return;
    rw->cookie_name = cr_persist_policy_cookie(pol);
    rw->cookie_name_len = strlen(rw->cookie_name);
}

void cr_persist__release(cr_conn_t *c)
{
    cr_persist_exchange_t *px = &c->ex.persist;
    cr_endpoint_release(px->owner);
    px->owner = NULL;
    px->policy = NULL;
}

/* --- Response side ------------------------------------------------------------------- */

typedef struct out {
    char *p;
    char *end;
    bool overflow;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if ((size_t)(o->end - o->p) < n) {
        o->overflow = true;
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

static void put_str(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

/* The first backend Set-Cookie header for name at index from or later
 * (index into resp->headers), or -1; out gets its parse. */
static int find_set_cookie(const cr_http_response_t *resp, const char *name, int from,
                           cr_set_cookie_t *out)
{
    size_t nl = strlen(name);
    for (uint32_t i = (uint32_t)from; i < resp->headers_len && i < CR_RESP_MAX_HEADERS; i++) {
        const cr_http_header_t *h = &resp->headers[i];
        if (h->name_len != 10 || !cr_http_token_eq(h->name, 10, "set-cookie"))
            continue;
        if (cr_set_cookie_parse(h->value, h->value_len, out) != 0)
            continue;
        if (out->cookie.name_len == nl && memcmp(out->cookie.name, name, nl) == 0)
            return (int)i;
    }
    return -1;
}

/* The attributes after a Set-Cookie's value ("; Path=/; HttpOnly"), as sent. */
static void put_rest(out_t *o, const cr_http_header_t *h, const cr_set_cookie_t *sc)
{
    const char *end = h->value + h->value_len;
    const char *from = sc->cookie.value + sc->cookie.value_len;
    const char *semi = from < end ? memchr(from, ';', (size_t)(end - from)) : NULL;
    if (semi)
        put(o, semi, (size_t)(end - semi));
}

/* crouter's cookie value for ep. */
static int encode_cookie(const cr_conn_t *c, const cr_persist_policy_t *pol,
                         const cr_persist_keys_t *k, char *val, size_t cap)
{
    const cr_persist_exchange_t *px = &c->ex.persist;
    cr_persist_cookie_t ck = {.id = cr_persist_endpoint_identity(c->ex.ep, k, 0)};
    if (pol->max_idle_ns || pol->max_life_ns) {
        uint32_t now = now_s(c->w);
        ck.has_times = true;
        ck.first_seen_s = px->hit && px->cookie.has_times ? px->cookie.first_seen_s : now;
        ck.last_seen_s = now;
    }
    return cr_persist_cookie_encode(k, &ck, val, cap);
}

/* "Set-Cookie: NAME=VALUE" with the policy's attributes. */
static void put_insert_cookie(out_t *o, const cr_persist_policy_t *pol, const char *val, int len)
{
    put_str(o, "Set-Cookie: ");
    put_str(o, cr_persist_policy_cookie(pol));
    put(o, "=", 1);
    put(o, val, (size_t)len);
    if (pol->path[0]) {
        put_str(o, "; Path=");
        put_str(o, pol->path);
    }
    if (pol->domain[0]) {
        put_str(o, "; Domain=");
        put_str(o, pol->domain);
    }
    if (pol->max_age_ns > 0) {
        char num[32];
        int n = snprintf(num, sizeof num, "; Max-Age=%lld",
                         (long long)(pol->max_age_ns / CR_NS_PER_SEC));
        put(o, num, (size_t)n);
    }
    if (pol->http_only)
        put_str(o, "; HttpOnly");
    if (pol->secure)
        put_str(o, "; Secure");
    const char *ss = cr_persist_samesite_name((cr_persist_samesite_t)pol->same_site);
    if (ss[0]) {
        put_str(o, "; SameSite=");
        put_str(o, ss);
    }
    put_str(o, "\r\n");
}

/* Whether a session that named this endpoint gets its last-seen refreshed. */
static bool refresh_due(const cr_conn_t *c, const cr_persist_policy_t *pol)
{
    const cr_persist_exchange_t *px = &c->ex.persist;
    return pol->max_idle_ns && px->cookie.last_seen_s != now_s(c->w);
}

static void learn(cr_conn_t *c, uint64_t value_hash)
{
    cr_worker_t *w = c->w;
    cr_persist_learned_t b = {
        .route = c->ex.persist.route_hash,
        .value = value_hash,
        .endpoint = cr_persist_endpoint_hash(c->ex.ep),
        .ts_ms = w->now_real_ns / CR_NS_PER_MS,
    };
    cr_persist_learn_put(w->rt->learn, &b, w->now_ns, c->ex.persist.policy->table_size, true);
    cr_counter_add(&w->counters.persist_learned, 1);
}

static void drop_set(uint64_t drop[CR_RESP_MAX_HEADERS / 64], int i)
{
    drop[i / 64] |= 1ull << (i % 64);
}

/* "Set-Cookie: NAME=" + value + the backend header's attributes, replacing it. */
static void put_replaced(out_t *o, const cr_http_header_t *h, const cr_set_cookie_t *sc,
                         const char *pre, size_t pre_len, const char *val, size_t val_len)
{
    put_str(o, "Set-Cookie: ");
    put(o, sc->cookie.name, sc->cookie.name_len);
    put(o, "=", 1);
    put(o, pre, pre_len);
    put(o, val, val_len);
    put_rest(o, h, sc);
    put_str(o, "\r\n");
}

int cr_persist__response(cr_conn_t *c, const cr_http_response_t *resp, char *extra, size_t cap,
                         uint64_t drop[CR_RESP_MAX_HEADERS / 64])
{
    cr_worker_t *w = c->w;
    cr_persist_exchange_t *px = &c->ex.persist;
    const cr_persist_policy_t *pol = px->policy;
    memset(drop, 0, CR_RESP_MAX_HEADERS / 8);
    if (!pol || !c->ex.ep)
        return 0;
    out_t o = {extra, extra + cap, false};
    cr_persist_keys_t k;
    char val[CR_PERSIST_COOKIE_MAX + 1];
    cr_set_cookie_t sc;
    int i, n;
    switch (pol->mode) {
    case CR_PERSIST_INSERT:
        if (px->hit && px->cookie.key_idx == 0 && !refresh_due(c, pol))
            break;
        cr_persist_keys_init(&k, pol);
        n = encode_cookie(c, pol, &k, val, sizeof val);
        if (n <= 0)
            break;
        put_insert_cookie(&o, pol, val, n);
        if (pol->nocache)
            put_str(&o, "Cache-Control: no-cache=\"set-cookie\"\r\n");
        cr_counter_add(&w->counters.persist_cookies_set, 1);
        break;
    case CR_PERSIST_REWRITE:
        /* Every Set-Cookie of the name (e.g. one per Path) gets the value. */
        i = find_set_cookie(resp, cr_persist_policy_cookie(pol), 0, &sc);
        if (i < 0 && !(px->hit && (px->cookie.key_idx != 0 || refresh_due(c, pol))))
            break;
        cr_persist_keys_init(&k, pol);
        n = encode_cookie(c, pol, &k, val, sizeof val);
        if (n <= 0)
            break;
        if (i < 0) {
            /* The app set nothing: refresh the session the request carried. */
            put_insert_cookie(&o, pol, val, n);
        }
        for (; i >= 0; i = find_set_cookie(resp, cr_persist_policy_cookie(pol), i + 1, &sc)) {
            put_replaced(&o, &resp->headers[i], &sc, "", 0, val, (size_t)n);
            drop_set(drop, i);
        }
        cr_counter_add(&w->counters.persist_cookies_set, 1);
        break;
    case CR_PERSIST_PREFIX: {
        /* Every non-empty Set-Cookie of the name gets the prefix; an empty
         * value (the app deleting its cookie) goes as sent. */
        char tok[CR_PERSIST_ID_CHARS + 1];
        bool any = false;
        for (i = find_set_cookie(resp, cr_persist_policy_cookie(pol), 0, &sc); i >= 0;
             i = find_set_cookie(resp, cr_persist_policy_cookie(pol), i + 1, &sc)) {
            if (sc.cookie.value_len == 0)
                continue;
            if (!any) {
                cr_persist_keys_init(&k, pol);
                cr_persist_id_token(cr_persist_endpoint_identity(c->ex.ep, &k, 0), tok);
                tok[CR_PERSIST_ID_CHARS] = CR_PERSIST_PREFIX_SEP;
                any = true;
            }
            put_replaced(&o, &resp->headers[i], &sc, tok, sizeof tok, sc.cookie.value,
                         sc.cookie.value_len);
            drop_set(drop, i);
        }
        if (any)
            cr_counter_add(&w->counters.persist_cookies_set, 1);
        break;
    }
    case CR_PERSIST_LEARN: {
        bool learned = false;
        for (i = find_set_cookie(resp, cr_persist_policy_cookie(pol), 0, &sc); i >= 0;
             i = find_set_cookie(resp, cr_persist_policy_cookie(pol), i + 1, &sc)) {
            if (sc.cookie.value_len == 0)
                continue;
            if (!learned)
                cr_persist_keys_init(&k, pol);
            uint64_t vh = cr_persist_value_hash(&k, px->route_hash, sc.cookie.value,
                                                sc.cookie.value_len);
            learn(c, vh ? vh : 1);
            learned = true;
        }
        if (!learned && pol->learn_from_requests && px->value_hash && !px->hit)
            learn(c, px->value_hash);
        break;
    }
    default:
        break;
    }
    if (o.overflow) {
        memset(drop, 0, CR_RESP_MAX_HEADERS / 8);
        return 0;
    }
    return (int)(o.p - extra);
}
