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

#include "registry/nats_client.h"
#include "router/persistence.h"

typedef struct cr_persist_sync cr_persist_sync_t;

/* Subscribes t to the learn subject on nats (call before
 * cr_nats_client_start) and starts the publishing thread. Borrows t and
 * nats: received bindings are written into t until nats is destroyed, so
 * destroy nats before t. NULL when the subscription or the thread cannot be
 * made (logged). */
cr_persist_sync_t *cr_persist_sync_start(cr_persist_learn_t *t, cr_nats_client_t *nats);

/* Stops the publishing thread and frees. Accepts NULL. */
void cr_persist_sync_stop(cr_persist_sync_t *s);

#endif
