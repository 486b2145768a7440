/* router/persist_sync.c - the learn table over NATS: one subscription, one publishing thread.
 *
 * Workers never touch NATS: they queue bindings in the table's bounded
 * outbox (cr_persist_learn_put), and this module's thread drains it every
 * PUBLISH_EVERY_MS and publishes each binding in the table's wire format.
 * nats.c buffers while reconnecting (and drops beyond its buffer, which
 * only costs a re-learn). Received bindings, our own echoes included
 * (harmless: the same binding), are stored with publish = false, so
 * nothing loops. Only hashes cross the wire: keyed hashes of session
 * values and of endpoints, never a cookie value or an address.
 * The module has its own connection rather than the registry's: that one
 * may be replaced by the NATS client's supervisor, and learn traffic never
 * queues behind a registration burst.
 * Threads: the publisher; nats.c's for received messages and callbacks.
 * Owns: the connection, the subscription and the thread.
 */
#include "router/persist_sync.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"

#define COMPONENT "persistence"
#define PUBLISH_EVERY_MS 20
#define BATCH 256

struct cr_persist_sync {
    cr_persist_learn_t *table;    /* borrowed */
    natsOptions *opts;            /* owned */
    natsConnection *conn;         /* owned */
    natsSubscription *sub;        /* owned */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;          /* CLOCK_MONOTONIC; signals stop and the connection's close */
    bool stopping;
    bool closed;                  /* nats.c's closed callback ran */
};

static void on_learned(natsConnection *conn, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)conn;
    (void)sub;
    cr_persist_sync_t *s = closure;
    cr_persist_learned_t b;
    if (cr_persist_learned_decode(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                                  &b) == 0)
        cr_persist_learn_put(s->table, &b, cr_now_mono_ns(), false);
    natsMsg_Destroy(msg);
}

static void on_closed(natsConnection *conn, void *closure)
{
    (void)conn;
    cr_persist_sync_t *s = closure;
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static void on_connected(natsConnection *conn, void *closure)
{
    (void)conn;
    (void)closure;
    CR_DEBUG(COMPONENT, "learn table sharing connected");
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
                natsConnection_Publish(s->conn, CR_PERSIST_LEARN_SUBJECT, buf, len);
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

static natsStatus build_options(cr_persist_sync_t *s, const cr_config_t *cfg)
{
    natsStatus st = natsOptions_Create(&s->opts);
    const char *urls[16];
    char bufs[16][300];
    int n = 0;
    for (size_t i = 0; i < cfg->nats_hosts_len && n < 16; i++, n++) {
        const char *h = cfg->nats_hosts[i].hostname;
        bool v6 = strchr(h, ':') != NULL && h[0] != '[';
        snprintf(bufs[n], sizeof bufs[n], "%s://%s%s%s:%u", cfg->nats_tls_enabled ? "tls" : "nats",
                 v6 ? "[" : "", h, v6 ? "]" : "", (unsigned)cfg->nats_hosts[i].port);
        urls[n] = bufs[n];
    }
    if (st == NATS_OK)
        st = natsOptions_SetServers(s->opts, urls, n);
    if (st == NATS_OK && cfg->nats_user && cfg->nats_user[0])
        st = natsOptions_SetUserInfo(s->opts, cfg->nats_user, cfg->nats_pass ? cfg->nats_pass : "");
    if (st == NATS_OK && cfg->nats_tls_enabled) {
        /* The config was validated at load and the registry's client loaded
         * the same files: failures here are logged by nats.c's status only. */
        st = natsOptions_SetSecure(s->opts, true);
        if (st == NATS_OK && cfg->nats_ca_certs[0])
            st = natsOptions_SetCATrustedCertificates(s->opts, cfg->nats_ca_certs);
        if (st == NATS_OK && cfg->nats_cert_chain[0] && cfg->nats_private_key[0])
            st = natsOptions_SetCertificatesChain(s->opts, cfg->nats_cert_chain,
                                                  cfg->nats_private_key);
    }
    if (st == NATS_OK)
        st = natsOptions_SetName(s->opts, "crouter-persistence");
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(s->opts, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(s->opts, 500);
    if (st == NATS_OK)
        st = natsOptions_SetRetryOnFailedConnect(s->opts, true, on_connected, s);
    if (st == NATS_OK)
        st = natsOptions_SetClosedCB(s->opts, on_closed, s);
    return st;
}

cr_persist_sync_t *cr_persist_sync_start(cr_persist_learn_t *t, const cr_config_t *cfg)
{
    if (!t || !cfg || cfg->nats_hosts_len == 0)
        return NULL;
    cr_persist_sync_t *s = cr_xcalloc(1, sizeof *s);
    s->table = t;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    natsStatus st = build_options(s, cfg);
    if (st == NATS_OK) {
        st = natsConnection_Connect(&s->conn, s->opts);
        if (st == NATS_NOT_YET_CONNECTED)
            st = NATS_OK; /* retried in the background; the subscription waits */
    }
    if (st == NATS_OK)
        st = natsConnection_Subscribe(&s->sub, s->conn, CR_PERSIST_LEARN_SUBJECT, on_learned, s);
    if (st != NATS_OK) {
        CR_ERROR(COMPONENT, "cannot share the learn table subject=%s error=\"%s\"",
                 CR_PERSIST_LEARN_SUBJECT, natsStatus_GetText(st));
        cr_persist_sync_stop(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, publisher_main, s) != 0) {
        CR_ERROR(COMPONENT, "cannot start the learn-table publisher thread");
        cr_persist_sync_stop(s);
        return NULL;
    }
    s->thread_started = true;
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
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    if (s->conn) {
        /* After the closed callback no message handler can run: only then
         * may the table (and this struct) go. */
        natsConnection_Close(s->conn);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 5;
        pthread_mutex_lock(&s->mu);
        while (!s->closed && pthread_cond_timedwait(&s->cond, &s->mu, &ts) == 0) {
        }
        pthread_mutex_unlock(&s->mu);
    }
    natsSubscription_Destroy(s->sub);
    natsConnection_Destroy(s->conn);
    natsOptions_Destroy(s->opts);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
