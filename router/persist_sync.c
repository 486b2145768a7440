/* router/persist_sync.c - the learn table over NATS: one subscription, one publishing thread.
 *
 * Workers never touch NATS: they queue bindings in the table's bounded
 * outbox (cr_persist_learn_put), and this module's thread drains it every
 * PUBLISH_EVERY_MS and publishes each binding in the table's wire format
 * through the router's NATS client (buffered by nats.c while reconnecting;
 * a binding lost meanwhile only costs a re-learn). Received bindings, our
 * own echoes included (harmless: the same binding), are stored with
 * publish = false, so nothing loops. Only hashes cross the wire: keyed
 * hashes of session values and of endpoints, never a cookie value or an
 * address. The subscription belongs to the NATS client, which renews it on
 * every connection it builds and has its own delivery thread for it, so
 * learn traffic never queues behind a registration burst.
 * Threads: the publisher; a nats.c delivery thread for received bindings.
 * Owns: the publishing thread.
 */
#include "router/persist_sync.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"

#define COMPONENT "persistence"
#define PUBLISH_EVERY_MS 20
#define BATCH 256

struct cr_persist_sync {
    cr_persist_learn_t *table;    /* borrowed */
    cr_nats_client_t *nats;       /* borrowed */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;          /* CLOCK_MONOTONIC; signals stop */
    bool stopping;                /* under mu */
};

/* NATS delivery thread; arg is the learn table, which outlives the client. */
static void on_learned(void *arg, const char *subject, const char *data, size_t len)
{
    (void)subject;
    cr_persist_learned_t b;
    if (cr_persist_learned_decode(data, len, &b) == 0)
        cr_persist_learn_put(arg, &b, cr_now_mono_ns(), 0, false);
}

static void publish_outbox(cr_persist_sync_t *s)
{
    cr_persist_learned_t batch[BATCH];
    size_t n;
    while ((n = cr_persist_learn_take_outbox(s->table, batch, BATCH)) > 0) {
        for (size_t i = 0; i < n; i++) {
            char buf[96];
            int len = cr_persist_learned_encode(&batch[i], buf, sizeof buf);
            if (len > 0)
                cr_nats_client_publish(s->nats, CR_PERSIST_LEARN_SUBJECT, buf, (size_t)len);
        }
        if (n < BATCH)
            break;
    }
}

static void *publisher_main(void *arg)
{
    cr_persist_sync_t *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += PUBLISH_EVERY_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cond, &s->mu, &ts);
        pthread_mutex_unlock(&s->mu);
        publish_outbox(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

cr_persist_sync_t *cr_persist_sync_start(cr_persist_learn_t *t, cr_nats_client_t *nats)
{
    if (!t || !nats)
        return NULL;
    if (cr_nats_client_add_subscription(nats, CR_PERSIST_LEARN_SUBJECT, on_learned, t) != 0) {
        CR_ERROR(COMPONENT, "cannot subscribe to the learn table subject=%s", CR_PERSIST_LEARN_SUBJECT);
        return NULL;
    }
    cr_persist_sync_t *s = cr_xcalloc(1, sizeof *s);
    s->table = t;
    s->nats = nats;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, publisher_main, s) != 0) {
        CR_ERROR(COMPONENT, "cannot start the learn-table publisher thread");
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

void cr_persist_sync_stop(cr_persist_sync_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
