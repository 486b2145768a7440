/* router/persist_sync.h - shares session persistence's learn table between routers over NATS.
 *
 * Every binding a router learns (router/persistence.h, cr_persist_learn_put
 * with publish) is published on CR_PERSIST_LEARN_SUBJECT; bindings other
 * routers publish are stored without being published again. Eventually
 * consistent, like nginx Plus zone_sync or HAProxy peers: a binding reaches
 * the other routers within a few tens of milliseconds, and one lost while
 * NATS is down is learned again from the next response that sets the
 * session cookie.
 */
#ifndef CR_ROUTER_PERSIST_SYNC_H
#define CR_ROUTER_PERSIST_SYNC_H

#include "config/config.h"
#include "router/persistence.h"

typedef struct cr_persist_sync cr_persist_sync_t;

/* Opens its own NATS connection to cfg's servers (same credentials and TLS
 * settings as the registry's; nats.c reconnects it forever, and a router
 * that starts before NATS keeps trying), subscribes, and starts the
 * publishing thread for t. Borrows cfg and t until stop. NULL when the
 * options are unusable or a thread cannot be made (logged). */
cr_persist_sync_t *cr_persist_sync_start(cr_persist_learn_t *t, const cr_config_t *cfg);

/* Stops publishing, closes the connection (waiting until no message
 * handler runs) and frees. Accepts NULL. */
void cr_persist_sync_stop(cr_persist_sync_t *s);

#endif
