/* router/router.c - the router's lifecycle: listeners, workers, drain, counters.
 *
 * Architecture (details in router/DESIGN.md): cfg->workers threads, each
 * with its own epoll loop (worker.c) and its own SO_REUSEPORT listener on
 * 0.0.0.0:cfg->port, so the kernel spreads connections and a connection
 * never crosses threads. Port 0 binds the first listener to a free port and
 * the others to the same one. A request is handled by proxy.c (client state
 * machine), upstream.c (backend connections and keep-alive pools) and
 * balancer.c (endpoint choice), against the registry's RCU route table.
 *
 * Threads: create/start/stop/destroy from the owner's thread; drain,
 * open_connections, get_counters and reopen_logs from any thread (atomics,
 * eventfd wake-ups). Owns: the workers, the listeners until the workers take
 * them, the access log, the session persistence learn table.
 */
#include "router/internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/xalloc.h"

static int open_listener(uint16_t port, uint16_t *bound_port, char *err, size_t err_cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_cap, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, err_cap, "SO_REUSEPORT: %s", strerror(errno));
        goto fail;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(err, err_cap, "bind 0.0.0.0:%u: %s", port, strerror(errno));
        goto fail;
    }
    if (listen(fd, 4096) != 0) {
        snprintf(err, err_cap, "listen: %s", strerror(errno));
        goto fail;
    }
    socklen_t sl = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        snprintf(err, err_cap, "getsockname: %s", strerror(errno));
        goto fail;
    }
    *bound_port = ntohs(sa.sin_port);
    return fd;
fail:
    close(fd);
    return -1;
}

/* The TLS contexts and the ssl_port listeners (one per worker, same port). */
static int setup_tls(cr_router_t *rt, char *err, size_t err_cap)
{
    const cr_config_t *cfg = rt->cfg;
    rt->tls_client = cr_tls_client_create(cfg, err, err_cap);
    if (!rt->tls_client)
        return -1;
    if (cfg->skip_ssl_validation)
        CR_WARN("router", "skip_ssl_validation is on: certificates of TLS endpoints are not verified");
    if (!cfg->enable_ssl)
        return 0;
    rt->tls_server = cr_tls_server_create(cfg, err, err_cap);
    if (!rt->tls_server)
        return -1;
    uint16_t port = cfg->ssl_port;
    for (uint32_t i = 0; i < rt->n_workers; i++) {
        uint16_t bound = 0;
        int fd = open_listener(port, &bound, err, err_cap);
        if (fd < 0)
            return -1;
        port = bound;
        if (cr_worker__add_tls_listener(rt->workers[i], fd) != 0) {
            snprintf(err, err_cap, "ssl_port %u: epoll: %s", port, strerror(errno));
            close(fd);
            return -1;
        }
    }
    rt->ssl_port = port;
    return 0;
}

cr_router_t *cr_router_create(const cr_config_t *cfg, cr_registry_t *reg, char *err, size_t err_cap)
{
    cr_router_t *rt = cr_xcalloc(1, sizeof(*rt));
    rt->cfg = cfg;
    rt->reg = reg;
    rt->n_workers = cfg->workers ? cfg->workers : 1;
    atomic_init(&rt->draining, false);
    atomic_init(&rt->stopping, false);
    cr_sticky_config_from(cfg, &rt->sticky);
    uint32_t max_headers = cfg->max_request_headers ? cfg->max_request_headers : 200;
    uint32_t max_bytes = cfg->max_request_header_bytes ? cfg->max_request_header_bytes : 1 << 20;
    rt->req_limits.max_head_bytes = max_bytes;
    rt->req_limits.max_headers = max_headers;
    rt->resp_limits.max_head_bytes = CR_RESP_MAX_HEAD;
    rt->resp_limits.max_headers = CR_RESP_MAX_HEADERS;
    rt->fail_window_ns = cfg->droplet_stale_threshold_ns / 4;
    rt->conn_size = sizeof(cr_conn_t) + (size_t)max_headers * sizeof(cr_http_header_t);
    rt->workers = cr_xcalloc(rt->n_workers, sizeof(cr_worker_t *));
    /* Always there: a register message may turn learn mode on for any route.
     * Sized by the config's table_size; pages are touched only when used. */
    rt->learn = cr_persist_learn_create(cfg->session_persistence.table_size);

    if (cfg->access_log_file && cfg->access_log_file[0]) {
        char lerr[256] = "";
        rt->access_log = cr_access_log_open(cfg->access_log_file, lerr, sizeof(lerr));
        if (!rt->access_log) {
            snprintf(err, err_cap, "access_log.file %s: %s", cfg->access_log_file, lerr);
            goto fail;
        }
    }
    uint16_t port = cfg->port;
    for (uint32_t i = 0; i < rt->n_workers; i++) {
        uint16_t bound = 0;
        int fd = -1;
        if (!cfg->disable_http) {
            fd = open_listener(port, &bound, err, err_cap);
            if (fd < 0)
                goto fail;
            port = bound;
        }
        rt->workers[i] = cr_worker__create(rt, i, fd, err, err_cap);
        if (!rt->workers[i]) {
            if (fd >= 0)
                close(fd);
            goto fail;
        }
    }
    rt->port = cfg->disable_http ? 0 : port;
    if (setup_tls(rt, err, err_cap) != 0)
        goto fail;
    return rt;
fail:
    cr_router_destroy(rt);
    return NULL;
}

uint16_t cr_router_port(const cr_router_t *rt)
{
    return rt->port;
}

int cr_router_start(cr_router_t *rt)
{
    for (uint32_t i = 0; i < rt->n_workers; i++) {
        if (cr_worker__start(rt->workers[i]) != 0) {
            CR_ERROR("router", "cannot start worker %u: %s", i, strerror(errno));
            cr_router_stop(rt);
            return -1;
        }
    }
    rt->started = true;
    CR_INFO("router", "listening port=%u ssl_port=%u workers=%u proxy_protocol=%s", rt->port,
            rt->ssl_port, rt->n_workers, rt->cfg->enable_proxy ? "on" : "off");
    return 0;
}

void cr_router_drain(cr_router_t *rt)
{
    atomic_store_explicit(&rt->draining, true, memory_order_release);
    for (uint32_t i = 0; i < rt->n_workers; i++)
        if (rt->workers[i])
            cr_worker__wake(rt->workers[i]);
}

uint64_t cr_router_open_connections(const cr_router_t *rt)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < rt->n_workers; i++)
        if (rt->workers[i])
            n += cr_counter_get(&rt->workers[i]->counters.client_connections_open);
    return n;
}

void cr_router_stop(cr_router_t *rt)
{
    atomic_store_explicit(&rt->stopping, true, memory_order_release);
    for (uint32_t i = 0; i < rt->n_workers; i++)
        if (rt->workers[i])
            cr_worker__wake(rt->workers[i]);
    for (uint32_t i = 0; i < rt->n_workers; i++)
        if (rt->workers[i])
            cr_worker__join(rt->workers[i]);
    rt->started = false;
}

void cr_router_destroy(cr_router_t *rt)
{
    if (!rt)
        return;
    if (rt->started)
        cr_router_stop(rt);
    for (uint32_t i = 0; i < rt->n_workers; i++)
        cr_worker__destroy(rt->workers[i]);
    free(rt->workers);
    cr_tls_server_destroy(rt->tls_server);
    cr_tls_client_destroy(rt->tls_client);
    cr_persist_learn_destroy(rt->learn);
    cr_access_log_close(rt->access_log);
    free(rt);
}

void cr_router_reopen_logs(cr_router_t *rt)
{
    if (rt->access_log && cr_access_log_reopen(rt->access_log) != 0)
        CR_WARN("router", "cannot reopen access log %s", rt->cfg->access_log_file);
}

void cr_router_get_counters(const cr_router_t *rt, cr_router_counters_t *out)
{
    /* The struct is all cr_counter_t: sum it field by field as an array. */
    enum { N = sizeof(cr_router_counters_t) / sizeof(cr_counter_t) };
    cr_counter_t *dst = (cr_counter_t *)out;
    for (size_t k = 0; k < N; k++) {
        uint64_t sum = 0;
        for (uint32_t i = 0; i < rt->n_workers; i++) {
            if (!rt->workers[i])
                continue;
            const cr_counter_t *src = (const cr_counter_t *)&rt->workers[i]->counters;
            sum += cr_counter_get(&src[k]);
        }
        atomic_store_explicit(&dst[k], sum, memory_order_relaxed);
    }
}

struct cr_persist_learn *cr_router_learn_table(cr_router_t *rt)
{
    return rt->learn;
}

uint64_t cr_router_access_log_dropped(const cr_router_t *rt)
{
    return rt->access_log ? cr_access_log_dropped(rt->access_log) : 0;
}
