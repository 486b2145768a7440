/* router/router.h - the HTTP/1.1 reverse proxy: listeners, workers, lifecycle.
 *
 * cr_router_create() binds one SO_REUSEPORT listening socket per worker on
 * cfg->port (port 0 picks a free port, shared by all workers); start spawns
 * the worker threads, each with its own epoll loop. The router borrows cfg
 * and reg for its whole life.
 */
#ifndef CR_ROUTER_ROUTER_H
#define CR_ROUTER_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "registry/registry.h"
#include "router/counters.h"

typedef struct cr_router cr_router_t;

/* Binds the listeners (and opens access_log.file). NULL with a message in
 * err on failure (port in use, bad access log path). */
cr_router_t *cr_router_create(const cr_config_t *cfg, cr_registry_t *reg, char *err, size_t err_cap);

/* The port the listeners are bound to. */
uint16_t cr_router_port(const cr_router_t *rt);

/* Spawns the workers. 0 or -1. */
int cr_router_start(cr_router_t *rt);

/* Stops accepting, closes idle client connections, and closes the others
 * once their in-flight request is answered. Returns at once; any thread. */
void cr_router_drain(cr_router_t *rt);

/* Client connections still open (any thread). */
uint64_t cr_router_open_connections(const cr_router_t *rt);

/* Stops the workers and joins them; open connections are closed. */
void cr_router_stop(cr_router_t *rt);

/* Frees everything. Accepts NULL. Call after cr_router_stop(). */
void cr_router_destroy(cr_router_t *rt);

/* Reopens the access log (SIGHUP). Any thread. */
void cr_router_reopen_logs(cr_router_t *rt);

/* Sums every worker's counters into out (any thread). */
void cr_router_get_counters(const cr_router_t *rt, cr_router_counters_t *out_plain);

/* The learn table of session persistence (router/persistence.h), valid
 * until cr_router_destroy(); any thread. */
struct cr_persist_learn *cr_router_learn_table(cr_router_t *rt);

/* Access log lines dropped (queue full). */
uint64_t cr_router_access_log_dropped(const cr_router_t *rt);

#endif
