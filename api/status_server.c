/* api/status_server.c - the status API: /health, /routes, /varz, /metrics.
 *
 * Two libmicrohttpd daemons, each with an internal listening thread and one
 * thread per connection (so a slow /routes of 300k routes never delays a
 * load balancer's /health): status.host:status.port serves every path,
 * 127.0.0.1:status.routes.port only /routes. The status port also answers
 * gorouter's /is-process-alive-do-not-use-for-loadbalancing (always 200).
 * Every response closes its connection, as gorouter's do.
 *
 * /routes is written by hand into one growing buffer: inside a single
 * registry read section the routes are collected, sorted by key (Go sorts
 * map keys) and formatted, so no route or pool pointer outlives the section.
 * Strings are escaped as Go's json.Encoder does (HTML characters, U+2028/9,
 * invalid UTF-8 as U+FFFD), so the output is byte-compatible with gorouter.
 *
 * Health latches: once NATS has been connected for
 * start_response_delay_interval, /health stays 200 (a later NATS outage
 * does not take every router out of the load balancer at once, as in
 * gorouter) until draining starts.
 *
 * Threads: libmicrohttpd's; each request that reads the registry registers
 * its thread with RCU for the duration of the request. Owns: the daemons.
 */
#include "api/status_server.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "common/clock.h"
#include "common/defs.h"
#include "common/log.h"
#include "common/thread.h"
#include "common/xalloc.h"

#define COMPONENT "status"
#define CONNECTION_LIMIT 256
#define CONNECTION_TIMEOUT_S 30

/* A /routes of a big table is ~0.5 s of CPU to build and send. Its thread
 * (one per connection, ended with it, since every response closes) runs at
 * ROUTES_NICE so that on a busy machine the proxy workers come first: a dump
 * then takes longer instead of stretching request latency. /health never
 * comes here. The dump is one registry read section, so while it runs the
 * entries that route changes replace wait for it to be freed: a slower dump
 * holds more of them (the churn of those seconds), never a lookup. */
#define ROUTES_NICE 10

typedef struct listener {
    struct cr_status_server *srv;
    bool routes_only;             /* the 127.0.0.1 routes listener */
} listener_t;

struct cr_status_server {
    cr_status_sources_t src;      /* borrowed pointers */
    struct MHD_Daemon *status_d;  /* owned */
    struct MHD_Daemon *routes_d;  /* owned */
    listener_t status_l;
    listener_t routes_l;
    uint16_t port;
    uint16_t routes_port;
    _Atomic bool draining;
    _Atomic bool healthy_latched; /* NATS was up for start_response_delay_interval */
    int64_t started_mono_ns;
    int64_t started_real_ns;
};

/* --- A growing output buffer ------------------------------------------ */

typedef struct buf {
    char *data;                   /* owned until handed to a response */
    size_t len;
    size_t cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    b->data = cr_xrealloc(b->data, cap);
    b->cap = cap;
}

static void buf_put(buf_t *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void buf_puts(buf_t *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t avail, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t v, min;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return n;
}

/* Appends s as a JSON string the way Go's json.Encoder writes it. */
static void buf_json_str(buf_t *b, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)(str ? str : "");
    size_t len = strlen((const char *)s);
    buf_reserve(b, len + 2);
    b->data[b->len++] = '"';
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        while (run < len && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\' &&
               s[run] != '<' && s[run] != '>' && s[run] != '&')
            run++;
        if (run > i) {
            buf_put(b, (const char *)s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_put(b, esc, 2);
            i++;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            char esc[2] = {'\\', c == '\n' ? 'n' : c == '\r' ? 'r' : 't'};
            buf_put(b, esc, 2);
            i++;
        } else if (c < 0x80) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
            buf_put(b, esc, 6);
            i++;
        } else {
            uint32_t cp = 0;
            size_t n = utf8_seq_len(s + i, len - i, &cp);
            if (n == 0) {
                buf_puts(b, "\\ufffd");
                i++;
            } else if (cp == 0x2028 || cp == 0x2029) {
                buf_puts(b, cp == 0x2028 ? "\\u2028" : "\\u2029");
                i += n;
            } else {
                buf_put(b, (const char *)s + i, n);
                i += n;
            }
        }
    }
    buf_put(b, "\"", 1);
}

/* --- Registry access from libmicrohttpd threads ------------------------- */

static __thread int rcu_thread_depth;

static void reader_enter(void)
{
    if (rcu_thread_depth++ == 0)
        cr_registry_reader_thread_register();
}

static void reader_leave(void)
{
    if (--rcu_thread_depth == 0)
        cr_registry_reader_thread_unregister();
}

/* --- /routes ------------------------------------------------------------ */

typedef struct route_ref {
    const cr_route_t *route;      /* borrowed inside the read section */
    const cr_pool_t *pool;
} route_ref_t;

typedef struct route_refs {
    route_ref_t *items;           /* owned */
    size_t len;
    size_t cap;
} route_refs_t;

static void collect_route(void *arg, const cr_route_t *route, const cr_pool_t *pool)
{
    route_refs_t *refs = arg;
    if (refs->len == refs->cap) {
        refs->cap = refs->cap ? refs->cap * 2 : 256;
        refs->items = cr_xrealloc(refs->items, refs->cap * sizeof *refs->items);
    }
    refs->items[refs->len++] = (route_ref_t){route, pool};
}

static int cmp_route_ref(const void *a, const void *b)
{
    return strcmp(((const route_ref_t *)a)->route->key, ((const route_ref_t *)b)->route->key);
}

static int cmp_tag_ptr(const void *a, const void *b)
{
    return strcmp((*(const cr_tag_t *const *)a)->key, (*(const cr_tag_t *const *)b)->key);
}

static void put_optional(buf_t *b, const char *name, const char *value)
{
    if (!value || !value[0])
        return;
    buf_printf(b, ",\"%s\":", name);
    buf_json_str(b, value);
}

/* ,"session_persistence":{...}: the effective policy's mode, cookie and the
 * options that differ from the defaults; secrets are never shown. Nothing
 * for mode vcap (gorouter's behaviour). */
static void format_persistence(buf_t *b, const cr_persist_policy_t *p)
{
    if (!p || p->mode == CR_PERSIST_VCAP)
        return;
    buf_puts(b, ",\"session_persistence\":{\"mode\":");
    buf_json_str(b, cr_persist_mode_name((cr_persist_mode_t)p->mode));
    for (int k = CR_PK_MODE + 1; k < CR_PK_COUNT; k++) {
        if (k == CR_PK_SECRET || k == CR_PK_PREVIOUS_SECRET)
            continue;
        if (k != CR_PK_COOKIE && !cr_persist_policy_differs(p, (cr_persist_key_t)k))
            continue;
        buf_printf(b, ",\"%s\":", cr_persist_key_name((cr_persist_key_t)k));
        switch (k) {
        case CR_PK_COOKIE: buf_json_str(b, cr_persist_policy_cookie(p)); break;
        case CR_PK_DOMAIN: buf_json_str(b, p->domain); break;
        case CR_PK_PATH: buf_json_str(b, p->path); break;
        case CR_PK_HEADER: buf_json_str(b, p->header); break;
        case CR_PK_SAME_SITE:
            buf_json_str(b, cr_persist_samesite_name((cr_persist_samesite_t)p->same_site));
            break;
        case CR_PK_FALLBACK_TO: buf_json_str(b, p->fallback_to_source_ip ? "source_ip" : ""); break;
        case CR_PK_MAX_AGE: buf_printf(b, "\"%" PRId64 "s\"", (int64_t)(p->max_age_ns / CR_NS_PER_SEC)); break;
        case CR_PK_MAX_IDLE: buf_printf(b, "\"%" PRId64 "s\"", (int64_t)(p->max_idle_ns / CR_NS_PER_SEC)); break;
        case CR_PK_MAX_LIFE: buf_printf(b, "\"%" PRId64 "s\"", (int64_t)(p->max_life_ns / CR_NS_PER_SEC)); break;
        case CR_PK_TABLE_SIZE: buf_printf(b, "%" PRIu32, p->table_size); break;
        case CR_PK_IP_PREFIX: buf_printf(b, "%u", (unsigned)p->ip_prefix); break;
        case CR_PK_IP6_PREFIX: buf_printf(b, "%u", cr_persist_policy_ip6_prefix(p)); break;
        case CR_PK_TRUSTED_PROXIES:
            buf_put(b, "[", 1);
            for (uint32_t i = 0; i < p->trusted_proxies_len; i++) {
                char cidr[64];
                cr_cidr_format(&p->trusted_proxies[i], cidr, sizeof cidr);
                if (i)
                    buf_put(b, ",", 1);
                buf_json_str(b, cidr);
            }
            buf_put(b, "]", 1);
            break;
        default: {
            bool v = k == CR_PK_HTTP_ONLY ? p->http_only : k == CR_PK_SECURE ? p->secure
                   : k == CR_PK_INDIRECT ? p->indirect : k == CR_PK_NOCACHE ? p->nocache
                   : k == CR_PK_FALLBACK ? p->fallback : p->learn_from_requests;
            buf_puts(b, v ? "true" : "false");
            break;
        }
        }
    }
    buf_put(b, "}", 1);
}

static void format_endpoint(buf_t *b, const cr_endpoint_t *ep, const cr_persist_policy_t *global)
{
    buf_puts(b, "{\"address\":");
    buf_json_str(b, ep->addr);
    buf_puts(b, ",\"availability_zone\":");
    buf_json_str(b, ep->availability_zone);
    buf_puts(b, ",\"protocol\":");
    buf_json_str(b, ep->protocol && ep->protocol[0] ? ep->protocol : "http1");
    buf_printf(b, ",\"tls\":%s,\"ttl\":%" PRId64, ep->tls ? "true" : "false", (int64_t)ep->ttl_s);
    put_optional(b, "route_service_url", ep->route_service_url);
    if (!ep->has_tags) {
        buf_puts(b, ",\"tags\":null");
    } else {
        /* Go writes map keys sorted. */
        const cr_tag_t *stack_tags[16];
        const cr_tag_t **tags = ep->tags_len <= CR_ARRAY_LEN(stack_tags)
                                    ? stack_tags
                                    : cr_xmalloc(ep->tags_len * sizeof *tags);
        for (size_t i = 0; i < ep->tags_len; i++)
            tags[i] = &ep->tags[i];
        qsort(tags, ep->tags_len, sizeof *tags, cmp_tag_ptr);
        buf_puts(b, ",\"tags\":{");
        for (size_t i = 0; i < ep->tags_len; i++) {
            if (i)
                buf_put(b, ",", 1);
            buf_json_str(b, tags[i]->key);
            buf_put(b, ":", 1);
            buf_json_str(b, tags[i]->value);
        }
        buf_put(b, "}", 1);
        if (tags != stack_tags)
            free(tags);
    }
    put_optional(b, "isolation_segment", ep->isolation_segment);
    put_optional(b, "private_instance_id", ep->private_instance_id);
    put_optional(b, "server_cert_domain_san", ep->server_cert_domain_san);
    if (ep->lb_algo >= 0)
        put_optional(b, "load_balancing_algorithm", cr_lb_algo_name((cr_lb_algo_t)ep->lb_algo));
    format_persistence(b, ep->persistence ? ep->persistence : global);
    buf_put(b, "}", 1);
}

static void build_routes(const cr_status_server_t *srv, buf_t *b)
{
    route_refs_t refs = {0};
    reader_enter();
    cr_registry_read_lock();
    cr_registry_for_each_route(srv->src.registry, collect_route, &refs);
    if (refs.len > 1)
        qsort(refs.items, refs.len, sizeof *refs.items, cmp_route_ref);
    buf_reserve(b, refs.len * 160 + 3);
    buf_put(b, "{", 1);
    for (size_t i = 0; i < refs.len; i++) {
        if (i)
            buf_put(b, ",", 1);
        buf_json_str(b, refs.items[i].route->key);
        buf_put(b, ":[", 2);
        const cr_pool_t *pool = refs.items[i].pool;
        for (uint32_t j = 0; j < pool->len; j++) {
            if (j)
                buf_put(b, ",", 1);
            format_endpoint(b, pool->endpoints[j], srv->src.cfg ? &srv->src.cfg->session_persistence : NULL);
        }
        buf_put(b, "]", 1);
    }
    buf_put(b, "}\n", 2);
    cr_registry_read_unlock();
    reader_leave();
    free(refs.items);
}

/* --- Figures shared by /varz and /metrics -------------------------------- */

typedef struct figures {
    cr_registry_stats_t reg;
    cr_nats_stats_t nats;
    cr_router_counters_t rt;      /* plain copies (summed) */
    uint64_t access_log_dropped;
    bool nats_connected;
    bool healthy;
    bool draining;
    int64_t uptime_s;
    long num_cores;
    uint64_t rss_kb;
} figures_t;

static uint64_t rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2)
        return 0;
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

static void gather(const cr_status_server_t *srv, figures_t *f)
{
    memset(f, 0, sizeof *f);
    reader_enter();
    cr_registry_get_stats(srv->src.registry, &f->reg);
    reader_leave();
    if (srv->src.nats) {
        cr_nats_client_get_stats(srv->src.nats, &f->nats);
        f->nats_connected = cr_nats_client_is_connected(srv->src.nats);
    }
    if (srv->src.router) {
        cr_router_get_counters(srv->src.router, &f->rt);
        f->access_log_dropped = cr_router_access_log_dropped(srv->src.router);
    }
    f->healthy = cr_status_server_is_healthy(srv);
    f->draining = atomic_load(&((cr_status_server_t *)srv)->draining);
    f->uptime_s = (cr_now_mono_ns() - srv->started_mono_ns) / CR_NS_PER_SEC;
    f->num_cores = sysconf(_SC_NPROCESSORS_ONLN);
    f->rss_kb = rss_kb();
}

#define RT(f, field) cr_counter_get(&(f)->rt.field)

/* --- /varz --------------------------------------------------------------- */

static char *build_varz(const cr_status_server_t *srv, size_t *len_out)
{
    figures_t f;
    gather(srv, &f);
    const cr_config_t *cfg = srv->src.cfg;

    char uptime[64];
    snprintf(uptime, sizeof uptime, "%" PRId64 "d:%" PRId64 "h:%" PRId64 "m:%" PRId64 "s",
             f.uptime_s / 86400, f.uptime_s / 3600 % 24, f.uptime_s / 60 % 60, f.uptime_s % 60);
    char start[64];
    time_t start_s = (time_t)(srv->started_real_ns / CR_NS_PER_SEC);
    struct tm tm;
    localtime_r(&start_s, &tm);
    strftime(start, sizeof start, "%Y-%m-%d %H:%M:%S %z", &tm);

    int64_t since_update_ms = -1;
    if (f.reg.last_update_mono_ns > 0)
        since_update_ms = (cr_now_mono_ns() - f.reg.last_update_mono_ns) / CR_NS_PER_MS;

    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("Router"));
    json_object_set_new(o, "index", json_integer(cfg->index));
    json_object_set_new(o, "uuid",
                        json_string(srv->src.nats ? cr_nats_client_router_id(srv->src.nats) : ""));
    json_object_set_new(o, "start", json_string(start));
    json_object_set_new(o, "uptime", json_string(uptime));
    json_object_set_new(o, "uptime_seconds", json_integer(f.uptime_s));
    json_object_set_new(o, "num_cores", json_integer(f.num_cores));
    json_object_set_new(o, "mem", json_integer((json_int_t)f.rss_kb));
    json_object_set_new(o, "healthy", json_boolean(f.healthy));
    json_object_set_new(o, "draining", json_boolean(f.draining));

    json_object_set_new(o, "urls", json_integer((json_int_t)f.reg.routes));
    json_object_set_new(o, "droplets", json_integer((json_int_t)f.reg.endpoints));
    json_object_set_new(o, "registered_routes", json_integer((json_int_t)f.reg.routes));
    json_object_set_new(o, "registered_endpoints", json_integer((json_int_t)f.reg.endpoints));
    json_object_set_new(o, "registry_registers", json_integer((json_int_t)f.reg.registers));
    json_object_set_new(o, "registry_unregisters", json_integer((json_int_t)f.reg.unregisters));
    json_object_set_new(o, "registry_pruned", json_integer((json_int_t)f.reg.pruned));
    json_object_set_new(o, "ms_since_last_registry_update", json_integer(since_update_ms));

    json_object_set_new(o, "nats_connected", json_boolean(f.nats_connected));
    json_object_set_new(o, "nats_server", json_string(f.nats.server));
    json_object_set_new(o, "nats_messages_received", json_integer((json_int_t)f.nats.messages_received));
    json_object_set_new(o, "nats_messages_rejected", json_integer((json_int_t)f.nats.messages_rejected));
    json_object_set_new(o, "nats_registers", json_integer((json_int_t)f.nats.registers));
    json_object_set_new(o, "nats_unregisters", json_integer((json_int_t)f.nats.unregisters));
    json_object_set_new(o, "nats_dropped", json_integer((json_int_t)f.nats.dropped));
    json_object_set_new(o, "nats_greets_answered", json_integer((json_int_t)f.nats.greets_answered));
    json_object_set_new(o, "nats_starts_published", json_integer((json_int_t)f.nats.starts_published));
    json_object_set_new(o, "nats_reconnects", json_integer((json_int_t)f.nats.reconnects));

    json_object_set_new(o, "requests", json_integer((json_int_t)RT(&f, requests)));
    json_object_set_new(o, "bad_requests", json_integer((json_int_t)RT(&f, bad_requests)));
    json_object_set_new(o, "bad_gateways",
                        json_integer((json_int_t)RT(&f, errors[CR_PERR_ENDPOINT_FAILURE])));
    json_object_set_new(o, "responses_2xx", json_integer((json_int_t)RT(&f, responses_by_class[2])));
    json_object_set_new(o, "responses_3xx", json_integer((json_int_t)RT(&f, responses_by_class[3])));
    json_object_set_new(o, "responses_4xx", json_integer((json_int_t)RT(&f, responses_by_class[4])));
    json_object_set_new(o, "responses_5xx", json_integer((json_int_t)RT(&f, responses_by_class[5])));
    json_object_set_new(o, "responses_xxx",
                        json_integer((json_int_t)(RT(&f, responses_by_class[0]) +
                                                  RT(&f, responses_by_class[1]))));
    json_t *errs = json_object();
    for (int i = 1; i < CR_PERR__COUNT; i++) {
        const cr_proxy_error_info_t *info = cr_proxy_error_info((cr_proxy_error_t)i);
        if (info && info->counter_name)
            json_object_set_new(errs, info->counter_name,
                                json_integer((json_int_t)RT(&f, errors[i])));
    }
    json_object_set_new(o, "router_errors", errs);
    json_object_set_new(o, "client_connections", json_integer((json_int_t)RT(&f, client_connections)));
    json_object_set_new(o, "client_connections_open",
                        json_integer((json_int_t)RT(&f, client_connections_open)));
    json_object_set_new(o, "backend_connects", json_integer((json_int_t)RT(&f, backend_connects)));
    json_object_set_new(o, "backend_reuses", json_integer((json_int_t)RT(&f, backend_reuses)));
    json_object_set_new(o, "backend_failures", json_integer((json_int_t)RT(&f, backend_failures)));
    json_object_set_new(o, "retries", json_integer((json_int_t)RT(&f, retries)));
    json_object_set_new(o, "upgrades", json_integer((json_int_t)RT(&f, upgrades)));
    json_object_set_new(o, "sticky_requests", json_integer((json_int_t)RT(&f, sticky_requests)));
    json_object_set_new(o, "sticky_hits", json_integer((json_int_t)RT(&f, sticky_hits)));
    json_object_set_new(o, "sticky_misses", json_integer((json_int_t)RT(&f, sticky_misses)));
    json_object_set_new(o, "vcap_cookies_set", json_integer((json_int_t)RT(&f, vcap_cookies_set)));
    json_t *sp = json_object();
    json_object_set_new(sp, "requests", json_integer((json_int_t)RT(&f, persist_requests)));
    json_object_set_new(sp, "hits", json_integer((json_int_t)RT(&f, persist_hits)));
    json_object_set_new(sp, "rebalanced", json_integer((json_int_t)RT(&f, persist_rebalanced)));
    json_object_set_new(sp, "rejected", json_integer((json_int_t)RT(&f, persist_rejected)));
    json_object_set_new(sp, "cookies_set", json_integer((json_int_t)RT(&f, persist_cookies_set)));
    json_object_set_new(sp, "learned", json_integer((json_int_t)RT(&f, persist_learned)));
    json_object_set_new(sp, "route_policies_rejected",
                        json_integer((json_int_t)f.reg.persistence_rejected));
    json_object_set_new(sp, "route_policies_refused",
                        json_integer((json_int_t)f.reg.persistence_refused));
    json_object_set_new(o, "session_persistence", sp);
    json_object_set_new(o, "request_body_bytes", json_integer((json_int_t)RT(&f, request_body_bytes)));
    json_object_set_new(o, "response_body_bytes",
                        json_integer((json_int_t)RT(&f, response_body_bytes)));
    json_object_set_new(o, "response_time_us_total",
                        json_integer((json_int_t)RT(&f, response_time_us_total)));
    json_object_set_new(o, "access_log_dropped", json_integer((json_int_t)f.access_log_dropped));

    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!s)
        return NULL;
    size_t len = strlen(s);
    char *out = cr_xmalloc(len + 2);
    memcpy(out, s, len);
    out[len++] = '\n';
    out[len] = '\0';
    free(s);
    *len_out = len;
    return out;
}

/* --- /metrics ------------------------------------------------------------ */

static void metric(buf_t *b, const char *name, const char *type, const char *help, uint64_t v)
{
    buf_printf(b, "# HELP crouter_%s %s\n# TYPE crouter_%s %s\ncrouter_%s %" PRIu64 "\n", name,
               help, name, type, name, v);
}

static void build_metrics(const cr_status_server_t *srv, buf_t *b)
{
    figures_t f;
    gather(srv, &f);

    metric(b, "up", "gauge", "Always 1 while the process serves the status API.", 1);
    metric(b, "healthy", "gauge", "1 when /health answers 200.", f.healthy);
    metric(b, "draining", "gauge", "1 while draining.", f.draining);
    metric(b, "uptime_seconds", "gauge", "Seconds since the status server started.",
           (uint64_t)f.uptime_s);
    metric(b, "resident_memory_bytes", "gauge", "Resident set size.", f.rss_kb * 1024);
    metric(b, "num_cores", "gauge", "Online CPU cores.", (uint64_t)f.num_cores);

    metric(b, "registry_routes", "gauge", "Routes in the table.", f.reg.routes);
    metric(b, "registry_endpoints", "gauge", "Endpoint slots over all routes.", f.reg.endpoints);
    metric(b, "registry_registers_total", "counter", "Register operations applied (per uri).",
           f.reg.registers);
    metric(b, "registry_unregisters_total", "counter", "Endpoints removed by unregister.",
           f.reg.unregisters);
    metric(b, "registry_pruned_total", "counter", "Endpoints removed by pruning.", f.reg.pruned);

    metric(b, "nats_connected", "gauge", "1 while connected to NATS.", f.nats_connected);
    metric(b, "nats_messages_received_total", "counter",
           "router.register and router.unregister messages received.", f.nats.messages_received);
    metric(b, "nats_messages_rejected_total", "counter", "Messages that failed to decode or validate.",
           f.nats.messages_rejected);
    metric(b, "nats_registers_total", "counter", "router.register messages applied.",
           f.nats.registers);
    metric(b, "nats_unregisters_total", "counter", "router.unregister messages applied.",
           f.nats.unregisters);
    metric(b, "nats_dropped_total", "counter", "Messages dropped by the NATS client (slow consumer).",
           f.nats.dropped);
    metric(b, "nats_greets_answered_total", "counter", "router.greet requests answered.",
           f.nats.greets_answered);
    metric(b, "nats_starts_published_total", "counter", "router.start messages published.",
           f.nats.starts_published);
    metric(b, "nats_reconnects_total", "counter", "Reconnections to NATS.", f.nats.reconnects);

    metric(b, "requests_total", "counter", "Requests whose head was parsed.", RT(&f, requests));
    buf_puts(b, "# HELP crouter_responses_total Responses sent to clients by status class.\n"
                "# TYPE crouter_responses_total counter\n");
    static const char *const classes[] = {"xxx", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (size_t i = 0; i < CR_ARRAY_LEN(classes); i++)
        buf_printf(b, "crouter_responses_total{class=\"%s\"} %" PRIu64 "\n", classes[i],
                   RT(&f, responses_by_class[i]));
    buf_puts(b, "# HELP crouter_router_errors_total Responses made by the router, by kind.\n"
                "# TYPE crouter_router_errors_total counter\n");
    for (int i = 1; i < CR_PERR__COUNT; i++) {
        const cr_proxy_error_info_t *info = cr_proxy_error_info((cr_proxy_error_t)i);
        if (info && info->counter_name)
            buf_printf(b, "crouter_router_errors_total{kind=\"%s\"} %" PRIu64 "\n",
                       info->counter_name, RT(&f, errors[i]));
    }
    metric(b, "bad_requests_total", "counter", "Malformed requests answered 400.",
           RT(&f, bad_requests));
    metric(b, "client_connections_total", "counter", "Client connections accepted.",
           RT(&f, client_connections));
    metric(b, "client_connections_open", "gauge", "Client connections open now.",
           RT(&f, client_connections_open));
    metric(b, "backend_connects_total", "counter", "New backend connections.",
           RT(&f, backend_connects));
    metric(b, "backend_reuses_total", "counter", "Requests sent on a pooled backend connection.",
           RT(&f, backend_reuses));
    metric(b, "backend_failures_total", "counter", "Failed backend attempts.",
           RT(&f, backend_failures));
    metric(b, "retries_total", "counter", "Backend attempts after the first.", RT(&f, retries));
    metric(b, "upgrades_total", "counter", "Tunnels opened after 101 Switching Protocols.",
           RT(&f, upgrades));
    metric(b, "sticky_requests_total", "counter", "Requests that asked for a sticky instance.",
           RT(&f, sticky_requests));
    metric(b, "sticky_hits_total", "counter", "Sticky requests served by their instance.",
           RT(&f, sticky_hits));
    metric(b, "sticky_misses_total", "counter", "Sticky requests not served by their instance.",
           RT(&f, sticky_misses));
    metric(b, "vcap_cookies_set_total", "counter", "__VCAP_ID__ cookies set.",
           RT(&f, vcap_cookies_set));
    metric(b, "session_persistence_requests_total", "counter",
           "Requests on routes whose session persistence mode is not vcap.",
           RT(&f, persist_requests));
    metric(b, "session_persistence_hits_total", "counter",
           "Persistence requests served by the endpoint their key named.", RT(&f, persist_hits));
    metric(b, "session_persistence_rebalanced_total", "counter",
           "Persistence requests whose named endpoint was gone or unusable.",
           RT(&f, persist_rebalanced));
    metric(b, "session_persistence_rejected_total", "counter",
           "crouter cookies refused as forged, tampered, foreign or expired.",
           RT(&f, persist_rejected));
    metric(b, "session_persistence_cookies_set_total", "counter",
           "Set-Cookie lines crouter added or edited for session persistence.",
           RT(&f, persist_cookies_set));
    metric(b, "session_persistence_learned_total", "counter",
           "Session value to endpoint bindings learned (learn mode).", RT(&f, persist_learned));
    metric(b, "session_persistence_route_policies_rejected_total", "counter",
           "Register messages whose session_persistence was invalid (default policy used).",
           f.reg.persistence_rejected);
    metric(b, "session_persistence_route_policies_refused_total", "counter",
           "Register messages whose session_persistence allow_route_session_persistence refused.",
           f.reg.persistence_refused);
    metric(b, "request_body_bytes_total", "counter", "Request body bytes proxied.",
           RT(&f, request_body_bytes));
    metric(b, "response_body_bytes_total", "counter", "Response body bytes proxied.",
           RT(&f, response_body_bytes));
    metric(b, "response_time_microseconds_total", "counter",
           "Sum of proxied response times in microseconds.", RT(&f, response_time_us_total));
    metric(b, "access_log_dropped_total", "counter", "Access log lines dropped (queue full).",
           f.access_log_dropped);
}

/* --- Basic auth ----------------------------------------------------------- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes padded standard base64 (as Go's StdEncoding). Returns the length
 * or -1; out must hold len*3/4 + 1 bytes and is NUL-terminated. */
static long b64_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + (size_t)k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad) {
                return -1;
            } else if ((v[k] = b64_value(c)) < 0) {
                return -1;
            }
        }
        uint32_t n = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(n >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(n >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)n;
    }
    out[o] = '\0';
    return (long)o;
}

/* Compares without an early exit: the time depends on the lengths only. */
static bool const_time_eq(const unsigned char *a, size_t alen, const char *expected)
{
    const unsigned char *b = (const unsigned char *)(expected ? expected : "");
    size_t blen = strlen((const char *)b);
    size_t n = alen > blen ? alen : blen;
    volatile unsigned diff = (unsigned)(alen != blen);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < alen ? a[i] : 0;
        unsigned char y = i < blen ? b[i] : 0;
        diff |= (unsigned)(x ^ y);
    }
    return diff == 0;
}

static bool authorized(const cr_status_server_t *srv, struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Basic ", 6) != 0)
        return false;
    const char *enc = h + 6;
    size_t enc_len = strlen(enc);
    if (enc_len > 4096)
        return false;
    unsigned char dec[4096 / 4 * 3 + 1];
    long n = b64_decode(enc, enc_len, dec);
    if (n < 0)
        return false;
    unsigned char *colon = memchr(dec, ':', (size_t)n);
    if (!colon)
        return false;
    size_t user_len = (size_t)(colon - dec);
    bool user_ok = const_time_eq(dec, user_len, srv->src.cfg->status_user);
    bool pass_ok = const_time_eq(colon + 1, (size_t)n - user_len - 1, srv->src.cfg->status_pass);
    /* Wipe the decoded password from the stack. */
    explicit_bzero(dec, sizeof dec);
    return user_ok & pass_ok;
}

/* --- Responses ------------------------------------------------------------ */

/* Queues a response. body is borrowed and copied unless take is true, in
 * which case it must come from malloc and libmicrohttpd frees it. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, char *body, size_t len,
                               bool take, const char *content_type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, take ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!r) {
        if (take)
            free(body);
        return MHD_NO;
    }
    if (content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"crouter\"");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* /health and /healthz follow the health state; gorouter's liveness path
 * answers 200 for as long as the process serves. */
static enum MHD_Result respond_health(const cr_status_server_t *srv, struct MHD_Connection *conn,
                                      bool liveness)
{
    bool ok = liveness || cr_status_server_is_healthy(srv);
    struct MHD_Response *r = MHD_create_response_from_buffer(ok ? 3 : 0, ok ? (void *)"ok\n" : (void *)"",
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    if (ok)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "private, max-age=0");
    MHD_add_response_header(r, MHD_HTTP_HEADER_EXPIRES, "0");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    static int marker;
    const listener_t *l = cls;
    const cr_status_server_t *srv = l->srv;

    /* First call: headers only. Later calls: discard any body, then answer. */
    if (*req_cls == NULL) {
        *req_cls = &marker;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }

    bool is_routes = strcmp(url, "/routes") == 0;
    bool is_health = !l->routes_only && (strcmp(url, "/health") == 0 || strcmp(url, "/healthz") == 0);
    bool is_alive = !l->routes_only &&
                    strcmp(url, "/is-process-alive-do-not-use-for-loadbalancing") == 0;
    bool is_varz = !l->routes_only && strcmp(url, "/varz") == 0;
    bool is_metrics = !l->routes_only && strcmp(url, "/metrics") == 0;

    if (is_health || is_alive)
        return respond_health(srv, conn, is_alive);
    if (!is_routes && !is_varz && !is_metrics) {
        static char not_found[] = "404 page not found\n";
        return respond(conn, MHD_HTTP_NOT_FOUND, not_found, sizeof not_found - 1, false,
                       "text/plain; charset=utf-8");
    }
    if (!authorized(srv, conn)) {
        static char unauthorized[] = "401 Unauthorized\n";
        return respond(conn, MHD_HTTP_UNAUTHORIZED, unauthorized, sizeof unauthorized - 1, false,
                       "text/plain; charset=utf-8");
    }
    if (is_varz) {
        size_t len = 0;
        char *body = build_varz(srv, &len);
        if (!body)
            return MHD_NO;
        return respond(conn, MHD_HTTP_OK, body, len, true, "application/json");
    }
    buf_t b = {0};
    if (is_routes) {
        if (!cr_thread_set_nice(ROUTES_NICE))
            CR_DEBUG(COMPONENT, "could not lower the /routes thread's priority");
        build_routes(srv, &b);
    } else {
        build_metrics(srv, &b);
    }
    return respond(conn, MHD_HTTP_OK, b.data, b.len, true,
                   is_routes ? "application/json" : "text/plain; version=0.0.4");
}

/* --- Daemons -------------------------------------------------------------- */

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    CR_WARN(COMPONENT, "libmicrohttpd: %s", line);
}

static struct MHD_Daemon *start_daemon(const char *host, uint16_t port, listener_t *l,
                                       uint16_t *bound_port, char *err, size_t err_cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port_s[8];
    snprintf(port_s, sizeof port_s, "%u", (unsigned)port);
    int gai = getaddrinfo(host && host[0] ? host : NULL, port_s, &hints, &res);
    if (gai != 0 || !res) {
        snprintf(err, err_cap, "status: cannot resolve %s: %s", host, gai_strerror(gai));
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, port, NULL, NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, res->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_END);
    freeaddrinfo(res);
    if (!d) {
        snprintf(err, err_cap, "status: cannot listen on %s:%u", host, (unsigned)port);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? info->port : port;
    return d;
}

cr_status_server_t *cr_status_server_start(const cr_status_sources_t *src, char *err, size_t err_cap)
{
    cr_status_server_t *srv = cr_xcalloc(1, sizeof *srv);
    srv->src = *src;
    srv->started_mono_ns = cr_now_mono_ns();
    srv->started_real_ns = cr_now_real_ns();
    srv->status_l = (listener_t){srv, false};
    srv->routes_l = (listener_t){srv, true};

    const cr_config_t *cfg = src->cfg;
    srv->status_d = start_daemon(cfg->status_host, cfg->status_port, &srv->status_l, &srv->port,
                                 err, err_cap);
    if (!srv->status_d)
        goto fail;
    srv->routes_d = start_daemon("127.0.0.1", cfg->status_routes_port, &srv->routes_l,
                                 &srv->routes_port, err, err_cap);
    if (!srv->routes_d)
        goto fail_status;
    return srv;
fail_status:
    MHD_stop_daemon(srv->status_d);
fail:
    free(srv);
    return NULL;
}

uint16_t cr_status_server_port(const cr_status_server_t *srv)
{
    return srv->port;
}

uint16_t cr_status_server_routes_port(const cr_status_server_t *srv)
{
    return srv->routes_port;
}

void cr_status_server_set_draining(cr_status_server_t *srv, bool draining)
{
    atomic_store(&srv->draining, draining);
}

bool cr_status_server_is_healthy(const cr_status_server_t *csrv)
{
    cr_status_server_t *srv = (cr_status_server_t *)csrv;
    if (atomic_load(&srv->draining))
        return false;
    if (atomic_load(&srv->healthy_latched))
        return true;
    int64_t since = srv->src.nats ? cr_nats_client_connected_since_ns(srv->src.nats) : 0;
    if (since == 0 || cr_now_mono_ns() - since < srv->src.cfg->start_response_delay_interval_ns)
        return false;
    atomic_store(&srv->healthy_latched, true);
    return true;
}

void cr_status_server_stop(cr_status_server_t *srv)
{
    if (!srv)
        return;
    if (srv->routes_d)
        MHD_stop_daemon(srv->routes_d);
    srv->routes_d = NULL;
    if (srv->status_d)
        MHD_stop_daemon(srv->status_d);
    srv->status_d = NULL;
    free(srv);
}
