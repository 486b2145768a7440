/* api/status_server.h - the status API on libmicrohttpd.
 *
 * On status.host:status.port: /health and /healthz (200 "ok\n" once NATS
 * has been connected for start_response_delay_interval, 503 with an empty
 * body before that and while draining; no auth), /routes, /varz and
 * /metrics (HTTP basic auth with status.user/status.pass, compared in
 * constant time). On 127.0.0.1:status.routes.port: /routes with the same
 * auth, where gorouter serves it. Threads: libmicrohttpd's own; it only
 * reads the registry (RCU), the NATS client's and the router's counters.
 */
#ifndef CR_API_STATUS_SERVER_H
#define CR_API_STATUS_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "registry/nats_client.h"
#include "registry/registry.h"
#include "router/router.h"

typedef struct cr_status_server cr_status_server_t;

typedef struct cr_status_sources {
    const cr_config_t *cfg;
    cr_registry_t *registry;
    cr_nats_client_t *nats;       /* may be NULL in tests: then never healthy */
    cr_router_t *router;          /* may be NULL in tests: router counters read as 0 */
} cr_status_sources_t;

/* Starts both listeners. NULL with a message in err on failure. */
cr_status_server_t *cr_status_server_start(const cr_status_sources_t *src, char *err, size_t err_cap);

/* Ports actually bound (useful when the config says 0). */
uint16_t cr_status_server_port(const cr_status_server_t *srv);
uint16_t cr_status_server_routes_port(const cr_status_server_t *srv);

/* While draining, /health answers 503. Any thread. */
void cr_status_server_set_draining(cr_status_server_t *srv, bool draining);

/* Whether /health would answer 200 now. */
bool cr_status_server_is_healthy(const cr_status_server_t *srv);

/* Stops and frees. Accepts NULL. */
void cr_status_server_stop(cr_status_server_t *srv);

#endif
