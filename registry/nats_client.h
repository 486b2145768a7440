/* registry/nats_client.h - feeds the registry from NATS and announces the router.
 *
 * Connects (nats.c) to every configured server with user/pass, reconnecting
 * forever; subscribes router.register and router.unregister with pending
 * limits large enough for a 200,000-message burst; answers router.greet and
 * publishes router.start on connect, after every reconnect and every
 * publish_start_message_interval. Unlike gorouter, a router that cannot
 * reach NATS at start keeps trying instead of exiting.
 * Threads: nats.c's own; the getters below are safe from any thread.
 */
#ifndef CR_REGISTRY_NATS_CLIENT_H
#define CR_REGISTRY_NATS_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "registry/registry.h"

typedef struct cr_nats_client cr_nats_client_t;

typedef struct cr_nats_stats {
    uint64_t messages_received;   /* register + unregister messages */
    uint64_t messages_rejected;   /* failed to decode or validate */
    uint64_t registers;
    uint64_t unregisters;
    uint64_t greets_answered;
    uint64_t starts_published;
    uint64_t reconnects;
    uint64_t dropped;             /* reported by the NATS client as dropped (slow consumer) */
    char server[128];             /* URL of the server connected to; "" while disconnected */
} cr_nats_stats_t;

/* Creates the client; borrows cfg and reg for its whole life. Does not
 * connect yet. */
cr_nats_client_t *cr_nats_client_create(const cr_config_t *cfg, cr_registry_t *reg);

/* Starts connecting in the background; returns at once. 0 or -1 when the
 * options are unusable. */
int cr_nats_client_start(cr_nats_client_t *nc);

/* Disconnects and frees. Accepts NULL. */
void cr_nats_client_destroy(cr_nats_client_t *nc);

bool cr_nats_client_is_connected(const cr_nats_client_t *nc);

/* Monotonic time at which the current connection was established; 0 when
 * disconnected. */
int64_t cr_nats_client_connected_since_ns(const cr_nats_client_t *nc);

/* "<index>-<uuid>", fixed for the process. */
const char *cr_nats_client_router_id(const cr_nats_client_t *nc);

void cr_nats_client_get_stats(const cr_nats_client_t *nc, cr_nats_stats_t *out);

/* Other modules' traffic on the router's connection (e.g. the learn-table
 * sync of session persistence). The connection may be rebuilt while the
 * router runs, so nobody outside this module holds a natsConnection. */

/* Handler for cr_nats_client_add_subscription(); runs on a nats.c delivery
 * thread; data is valid only during the call. */
typedef void (*cr_nats_msg_fn)(void *arg, const char *subject, const char *data, size_t len);

/* Subscribes fn to subject on the current connection and on every one the
 * client builds later. Call before cr_nats_client_start(). At most
 * CR_NATS_MAX_EXTRA_SUBS. 0 or -1. */
#define CR_NATS_MAX_EXTRA_SUBS 4
int cr_nats_client_add_subscription(cr_nats_client_t *nc, const char *subject, cr_nats_msg_fn fn,
                                    void *arg);

/* Publishes data on subject over the current connection (buffered by nats.c
 * while it reconnects). Any thread. 0, or -1 when there is no connection. */
int cr_nats_client_publish(cr_nats_client_t *nc, const char *subject, const void *data, size_t len);

/* Adapter for cr_pruner_start(): arg is the cr_nats_client_t. */
bool cr_nats_client_up_fn(void *arg);

#endif
