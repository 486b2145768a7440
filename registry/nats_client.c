/* registry/nats_client.c - feeds the registry from NATS and announces the router.
 *
 * One nats.c connection to every configured server, retrying the first
 * connect and every reconnect forever (unlike gorouter, a router started
 * without NATS keeps trying). Two asynchronous subscriptions:
 * - "router.*", dispatched by exact subject as gorouter does, so that
 *   router.register and router.unregister arrive on one delivery thread in
 *   publication order (two subscriptions would have two threads and could
 *   reorder a register and the unregister that follows it). Its pending
 *   limits hold far more than a 200,000-message burst; other subjects
 *   (router.start from other routers, router.greet) are ignored here.
 * - "router.greet", answered on its own thread with the router.start payload,
 *   so a greet is not queued behind a registration burst.
 * router.start is published after the first connect, after every reconnect
 * and, from the supervisor thread, every publish_start_message_interval.
 *
 * nats.c retries lost connections by itself, but gives up for good on errors
 * it will not retry (a server certificate that does not verify, for one) and
 * then only calls the closed callback. The supervisor thread notices such a
 * close, destroys the connection and builds a new one after a backoff
 * (1 s doubling to 10 s), for as long as the router runs: routes are kept
 * meanwhile and NATS comes back when the cause is fixed.
 *
 * nats.c's natsMsg_Destroy does not free: it hands the message to the
 * library's garbage-collector thread under a mutex and signals it whenever
 * that thread sleeps, which during a registration burst is every message
 * (perf: a third of the delivery thread's time in that lock and signal, and
 * a fifth of the process in the collector's wake-ups). on_router_msg
 * therefore keeps up to DESTROY_BATCH delivered messages and destroys them
 * together, once the batch is full or the subscription has nothing pending,
 * so the collector wakes once per batch. When a burst of at least
 * TRIM_AFTER_MSGS messages has drained, malloc_trim hands back to the kernel
 * the pages that held nats.c's backlog and the decoded copies: glibc keeps
 * freed memory inside its arenas otherwise, which after 300,000
 * registrations was a third of the process's RSS.
 *
 * Threads: nats.c's delivery threads (message handlers), its callback thread
 * (connected, disconnected, reconnected, closed, errors), the supervisor
 * thread (the only one that replaces the connection after start), and any
 * reader of the getters. Shared state is atomic or under mu; the registry
 * serialises its own writers.
 * Owns: the nats.c options, connection and subscriptions, the supervisor
 * thread and the router.start payload.
 */
#include "registry/nats_client.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <malloc.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <nats/nats.h>

#include "common/clock.h"
#include "common/defs.h"
#include "common/log.h"
#include "common/uuid.h"
#include "common/xalloc.h"

#define COMPONENT "nats"

#define RECONNECT_WAIT_MS 500
#define PING_INTERVAL_MS (20 * 1000)
/* Far above a 200,000-message burst; the byte limit is what binds for large
 * messages (gorouter's 131072 messages / 128 MiB drops such bursts). */
#define PENDING_MSGS_LIMIT (2 * 1000 * 1000) /* nats.c derives a bytes limit of 1 KiB per message: keep it < 2^31 */
#define PENDING_BYTES_LIMIT (1024 * 1024 * 1024)
#define LOG_INTERVAL_NS (5 * CR_NS_PER_SEC)
#define RECREATE_BACKOFF_MIN_NS (1 * CR_NS_PER_SEC)
#define RECREATE_BACKOFF_MAX_NS (10 * CR_NS_PER_SEC)
#define DESTROY_BATCH 256
#define TRIM_AFTER_MSGS 50000

enum { SUB_ROUTER, SUB_GREET, SUB_EXTRA0, SUB__COUNT = SUB_EXTRA0 + CR_NATS_MAX_EXTRA_SUBS };

/* A subscription another module asked for (cr_nats_client_add_subscription). */
typedef struct {
    char *subject;                /* owned */
    cr_nats_msg_fn fn;
    void *arg;
} extra_sub_t;

struct cr_nats_client {
    const cr_config_t *cfg;       /* borrowed */
    cr_registry_t *reg;           /* borrowed */

    char router_id[32 + CR_UUID_STR_LEN]; /* "<index>-<uuid>" */
    char *start_payload;          /* owned: router.start / greet reply JSON */
    size_t start_payload_len;

    natsOptions *opts;            /* owned */
    natsConnection *conn;         /* owned; replaced only by start and the supervisor, under conn_lock (write) */
    pthread_rwlock_t conn_lock;   /* read: use conn from another thread; write: replace it */
    extra_sub_t extra[CR_NATS_MAX_EXTRA_SUBS];
    size_t extra_len;
    natsSubscription *subs[SUB__COUNT]; /* owned */
    /* Messages on_router_msg is done with, not destroyed yet; touched only
     * by the "router.*" delivery thread (and by teardown once it is done). */
    natsMsg *done_msgs[DESTROY_BATCH];
    size_t done_len;
    uint64_t msgs_since_trim;     /* router.* messages since the last malloc_trim */

    _Atomic int64_t connected_since_ns; /* monotonic; 0 while disconnected */

    /* Statistics (relaxed atomics, any thread). */
    _Atomic uint64_t messages_received;
    _Atomic uint64_t messages_rejected;
    _Atomic uint64_t registers;
    _Atomic uint64_t unregisters;
    _Atomic uint64_t greets_answered;
    _Atomic uint64_t starts_published;
    _Atomic uint64_t reconnects;

    cr_log_ratelimit_t bad_msg_rl;
    cr_log_ratelimit_t slow_rl;
    cr_log_ratelimit_t publish_rl;

    /* The supervisor thread and the shutdown handshake. */
    pthread_mutex_t mu;
    pthread_cond_t cond;          /* CLOCK_MONOTONIC */
    bool stopping;                /* under mu */
    bool closed;                  /* under mu: the closed callback ran for the current connection */
    int subs_live;                /* under mu: subscriptions whose handler may still run */
    bool supervisor_running;
    pthread_t supervisor;
};

/* --- Helpers ----------------------------------------------------------- */

/* The first non-loopback IPv4 address, or 127.0.0.1 (what gorouter's
 * localip finds with its UDP trick, without touching the network). */
static void local_ipv4(char *out, size_t cap)
{
    snprintf(out, cap, "127.0.0.1");
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0)
        return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        if ((i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
            continue;
        const struct sockaddr_in *sin = (const struct sockaddr_in *)i->ifa_addr;
        if (inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)cap))
            break;
        snprintf(out, cap, "127.0.0.1");
    }
    freeifaddrs(ifs);
}

static void build_start_payload(cr_nats_client_t *nc)
{
    char ip[INET_ADDRSTRLEN];
    local_ipv4(ip, sizeof ip);
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "{\"id\":\"%s\",\"hosts\":[\"%s\"],\"minimumRegisterIntervalInSeconds\":%" PRId64
                     ",\"pruneThresholdInSeconds\":%" PRId64 "}",
                     nc->router_id, ip, (int64_t)(nc->cfg->start_response_delay_interval_ns / CR_NS_PER_SEC),
                     (int64_t)(nc->cfg->droplet_stale_threshold_ns / CR_NS_PER_SEC));
    nc->start_payload_len = (size_t)n;
    nc->start_payload = cr_xmemdup0(buf, (size_t)n);
}

static void publish_start(cr_nats_client_t *nc, natsConnection *conn, const char *why)
{
    natsStatus s = natsConnection_Publish(conn, "router.start", nc->start_payload,
                                          (int)nc->start_payload_len);
    if (s == NATS_OK) {
        atomic_fetch_add_explicit(&nc->starts_published, 1, memory_order_relaxed);
        CR_DEBUG(COMPONENT, "published router.start reason=%s", why);
        return;
    }
    uint64_t skipped = 0;
    if (cr_log_ratelimit_allow(&nc->publish_rl, LOG_INTERVAL_NS, &skipped))
        CR_WARN(COMPONENT, "router.start publish failed reason=%s error=\"%s\" suppressed=%" PRIu64,
                why, natsStatus_GetText(s), skipped);
}

static void mark_connected(cr_nats_client_t *nc)
{
    int64_t zero = 0;
    atomic_compare_exchange_strong(&nc->connected_since_ns, &zero, cr_now_mono_ns());
}

/* --- nats.c callbacks (its callback thread) ------------------------------ */

static void on_connected(natsConnection *conn, void *closure)
{
    cr_nats_client_t *nc = closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(conn, url, sizeof url);
    mark_connected(nc);
    CR_INFO(COMPONENT, "connected server=%s", url);
    publish_start(nc, conn, "connect");
}

static void on_disconnected(natsConnection *conn, void *closure)
{
    cr_nats_client_t *nc = closure;
    atomic_store(&nc->connected_since_ns, 0);
    pthread_mutex_lock(&nc->mu);
    bool stopping = nc->stopping;
    pthread_mutex_unlock(&nc->mu);
    if (!stopping)
        CR_WARN(COMPONENT, "disconnected; reconnecting");
}

static void on_reconnected(natsConnection *conn, void *closure)
{
    cr_nats_client_t *nc = closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(conn, url, sizeof url);
    atomic_store(&nc->connected_since_ns, 0);
    mark_connected(nc);
    atomic_fetch_add_explicit(&nc->reconnects, 1, memory_order_relaxed);
    CR_INFO(COMPONENT, "reconnected server=%s", url);
    publish_start(nc, conn, "reconnect");
}

static void on_closed(natsConnection *conn, void *closure)
{
    cr_nats_client_t *nc = closure;
    atomic_store(&nc->connected_since_ns, 0);
    pthread_mutex_lock(&nc->mu);
    bool expected = nc->stopping;
    nc->closed = true;
    pthread_cond_broadcast(&nc->cond);
    pthread_mutex_unlock(&nc->mu);
    if (expected) {
        CR_INFO(COMPONENT, "connection closed");
    } else {
        /* nats.c gives up on its own only for errors it will not retry, such
         * as a server certificate that does not verify: say which. */
        const char *why = NULL;
        natsConnection_GetLastError(conn, &why);
        CR_ERROR(COMPONENT, "connection closed unexpectedly; routes are kept, updates resume once it is recreated error=\"%s\"",
                 why && why[0] ? why : "-");
    }
}

static void on_error(natsConnection *conn, natsSubscription *sub, natsStatus err, void *closure)
{
    cr_nats_client_t *nc = closure;
    uint64_t skipped = 0;
    if (!cr_log_ratelimit_allow(&nc->slow_rl, LOG_INTERVAL_NS, &skipped))
        return;
    int64_t dropped = 0;
    if (sub)
        natsSubscription_GetDropped(sub, &dropped);
    CR_WARN(COMPONENT, "async error error=\"%s\" subject=%s dropped=%" PRId64 " suppressed=%" PRIu64,
            natsStatus_GetText(err), sub ? natsSubscription_GetSubject(sub) : "-", dropped,
            skipped);
}

/* Destroys the messages on_router_msg kept (its delivery thread, or teardown
 * after that thread is done). */
static void destroy_done_msgs(cr_nats_client_t *nc)
{
    for (size_t i = 0; i < nc->done_len; i++)
        natsMsg_Destroy(nc->done_msgs[i]);
    nc->done_len = 0;
}

/* on_router_msg is done with msg: destroy it with the batch. */
static void release_router_msg(cr_nats_client_t *nc, natsSubscription *sub, natsMsg *msg)
{
    nc->done_msgs[nc->done_len++] = msg;
    nc->msgs_since_trim++;
    int pending = 0;
    bool drained = natsSubscription_GetPending(sub, &pending, NULL) != NATS_OK || pending == 0;
    if (nc->done_len == DESTROY_BATCH || drained)
        destroy_done_msgs(nc);
    if (drained && nc->msgs_since_trim >= TRIM_AFTER_MSGS) {
        nc->msgs_since_trim = 0;
        malloc_trim(0);
    }
}

/* A subscription's handler has returned for the last time. */
static void on_sub_complete(void *closure)
{
    cr_nats_client_t *nc = closure;
    pthread_mutex_lock(&nc->mu);
    nc->subs_live--;
    pthread_cond_broadcast(&nc->cond);
    pthread_mutex_unlock(&nc->mu);
}

/* --- Message handlers (nats.c delivery threads; they destroy msg) ------- */

static void reject(cr_nats_client_t *nc, const char *subject, size_t len, const char *reason)
{
    atomic_fetch_add_explicit(&nc->messages_rejected, 1, memory_order_relaxed);
    uint64_t skipped = 0;
    if (cr_log_ratelimit_allow(&nc->bad_msg_rl, LOG_INTERVAL_NS, &skipped))
        CR_WARN(COMPONENT, "rejected message subject=%s bytes=%zu reason=\"%s\" suppressed=%" PRIu64,
                subject, len, reason, skipped);
}

static void on_router_msg(natsConnection *conn, natsSubscription *sub, natsMsg *msg, void *closure)
{
    cr_nats_client_t *nc = closure;
    const char *subject = natsMsg_GetSubject(msg);
    bool is_register = strcmp(subject, "router.register") == 0;
    if (!is_register && strcmp(subject, "router.unregister") != 0) {
        release_router_msg(nc, sub, msg);
        return;
    }
    atomic_fetch_add_explicit(&nc->messages_received, 1, memory_order_relaxed);

    const char *data = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    cr_register_msg_t rm;
    char err[160] = "";
    int rc = cr_register_msg_decode(data ? data : "", len > 0 ? (size_t)len : 0, &rm, err,
                                    sizeof err);
    if (rc != 0) {
        reject(nc, subject, len > 0 ? (size_t)len : 0, err[0] ? err : "malformed");
        release_router_msg(nc, sub, msg);
        return;
    }
    int64_t now = cr_now_mono_ns();
    if (is_register) {
        if (cr_registry_register(nc->reg, &rm, now) == 0)
            atomic_fetch_add_explicit(&nc->registers, 1, memory_order_relaxed);
        else
            reject(nc, subject, (size_t)len, "no usable uri");
    } else {
        cr_registry_unregister(nc->reg, &rm, now);
        atomic_fetch_add_explicit(&nc->unregisters, 1, memory_order_relaxed);
    }
    cr_register_msg_deinit(&rm);
    release_router_msg(nc, sub, msg);
}

static void on_greet(natsConnection *conn, natsSubscription *sub, natsMsg *msg, void *closure)
{
    cr_nats_client_t *nc = closure;
    const char *reply = natsMsg_GetReply(msg);
    if (reply && reply[0]) {
        natsStatus s = natsConnection_Publish(conn, reply, nc->start_payload,
                                              (int)nc->start_payload_len);
        if (s == NATS_OK)
            atomic_fetch_add_explicit(&nc->greets_answered, 1, memory_order_relaxed);
        else
            CR_WARN(COMPONENT, "greet reply failed error=\"%s\"", natsStatus_GetText(s));
    }
    natsMsg_Destroy(msg);
}

/* --- Public ------------------------------------------------------------ */

cr_nats_client_t *cr_nats_client_create(const cr_config_t *cfg, cr_registry_t *reg)
{
    cr_nats_client_t *nc = cr_xcalloc(1, sizeof *nc);
    nc->cfg = cfg;
    nc->reg = reg;
    char uuid[CR_UUID_STR_LEN + 1];
    cr_uuid4(uuid);
    snprintf(nc->router_id, sizeof nc->router_id, "%" PRIu32 "-%s", cfg->index, uuid);
    build_start_payload(nc);

    pthread_mutex_init(&nc->mu, NULL);
    pthread_rwlock_init(&nc->conn_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&nc->cond, &ca);
    pthread_condattr_destroy(&ca);
    return nc;
}

/* TLS to every server (gorouter's nats.tls_enabled): the server certificate
 * chain is verified against nats.ca_certs (PEM text) and the system store,
 * and nats.cert_chain + nats.private_key (PEM text) are presented to servers
 * that verify clients. nats.c parses the PEM here, so a bad certificate or key
 * fails at start, not at the first connect. */
static natsStatus set_tls_options(natsOptions *opts, const cr_config_t *cfg)
{
    bool have_cert = cfg->nats_cert_chain[0] != '\0';
    bool have_key = cfg->nats_private_key[0] != '\0';
    if (have_cert != have_key) {
        CR_ERROR(COMPONENT, "nats.cert_chain and nats.private_key must be set together");
        return NATS_INVALID_ARG;
    }
    natsStatus s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK && cfg->nats_ca_certs[0]) {
        s = natsOptions_SetCATrustedCertificates(opts, cfg->nats_ca_certs);
        if (s != NATS_OK)
            CR_ERROR(COMPONENT, "nats.ca_certs: cannot load the certificates");
    }
    if (s == NATS_OK && have_cert) {
        s = natsOptions_SetCertificatesChain(opts, cfg->nats_cert_chain, cfg->nats_private_key);
        if (s != NATS_OK)
            CR_ERROR(COMPONENT, "nats.cert_chain/nats.private_key: cannot load the client certificate");
    }
    return s;
}

static int build_options(cr_nats_client_t *nc)
{
    const cr_config_t *cfg = nc->cfg;
    if (cfg->nats_hosts_len == 0) {
        CR_ERROR(COMPONENT, "no nats.hosts configured");
        return -1;
    }
    const char **urls = cr_xcalloc(cfg->nats_hosts_len, sizeof *urls);
    for (size_t i = 0; i < cfg->nats_hosts_len; i++) {
        const char *h = cfg->nats_hosts[i].hostname;
        bool v6 = strchr(h, ':') != NULL && h[0] != '[';
        char buf[512];
        snprintf(buf, sizeof buf, "%s://%s%s%s:%u", cfg->nats_tls_enabled ? "tls" : "nats",
                 v6 ? "[" : "", h, v6 ? "]" : "", (unsigned)cfg->nats_hosts[i].port);
        urls[i] = cr_xstrdup(buf);
    }

    natsStatus s = natsOptions_Create(&nc->opts);
    if (s == NATS_OK)
        s = natsOptions_SetServers(nc->opts, urls, (int)cfg->nats_hosts_len);
    /* User info applies to every server URL without one; it never appears in
     * a URL we might log. */
    if (s == NATS_OK && cfg->nats_user && cfg->nats_user[0])
        s = natsOptions_SetUserInfo(nc->opts, cfg->nats_user, cfg->nats_pass ? cfg->nats_pass : "");
    if (s == NATS_OK && cfg->nats_tls_enabled)
        s = set_tls_options(nc->opts, cfg);
    if (s == NATS_OK)
        s = natsOptions_SetName(nc->opts, "crouter");
    if (s == NATS_OK)
        s = natsOptions_SetNoRandomize(nc->opts, false);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(nc->opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(nc->opts, RECONNECT_WAIT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(nc->opts, PING_INTERVAL_MS);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPendingMsgs(nc->opts, PENDING_MSGS_LIMIT);
    /* Publishes made while disconnected (router.start) are buffered up to
     * this size and flushed on reconnect. */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(nc->opts, 1024 * 1024);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(nc->opts, true, on_connected, nc);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(nc->opts, on_disconnected, nc);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(nc->opts, on_reconnected, nc);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(nc->opts, on_closed, nc);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(nc->opts, on_error, nc);

    for (size_t i = 0; i < cfg->nats_hosts_len; i++)
        free((char *)urls[i]);
    free(urls);
    if (s != NATS_OK) {
        CR_ERROR(COMPONENT, "bad NATS options error=\"%s\" detail=\"%s\"", natsStatus_GetText(s),
                 nats_GetLastError(NULL));
        return -1;
    }
    return 0;
}

static natsStatus subscribe(cr_nats_client_t *nc, int which, const char *subject,
                            natsMsgHandler handler)
{
    natsSubscription *sub = NULL;
    natsStatus s = natsConnection_Subscribe(&sub, nc->conn, subject, handler, nc);
    if (s != NATS_OK)
        return s;
    pthread_rwlock_wrlock(&nc->conn_lock);
    nc->subs[which] = sub;
    pthread_rwlock_unlock(&nc->conn_lock);
    pthread_mutex_lock(&nc->mu);
    nc->subs_live++;
    pthread_mutex_unlock(&nc->mu);
    s = natsSubscription_SetOnCompleteCB(sub, on_sub_complete, nc);
    if (s != NATS_OK) {
        pthread_mutex_lock(&nc->mu);
        nc->subs_live--;
        pthread_mutex_unlock(&nc->mu);
        return s;
    }
    return natsSubscription_SetPendingLimits(sub, PENDING_MSGS_LIMIT, PENDING_BYTES_LIMIT);
}

static void on_extra_msg(natsConnection *conn, natsSubscription *sub, natsMsg *msg, void *closure)
{
    const extra_sub_t *x = closure;
    x->fn(x->arg, natsMsg_GetSubject(msg), natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

/* Creates the connection and its subscriptions. 0 when the connection
 * exists (connected, or retrying in the background); -1 when it failed for
 * good, after logging why (the supervisor then retries later). Called by
 * start and then only by the supervisor, never concurrently. */
static int connect_and_subscribe(cr_nats_client_t *nc)
{
    pthread_mutex_lock(&nc->mu);
    nc->closed = false;
    pthread_mutex_unlock(&nc->mu);

    natsConnection *conn = NULL;
    natsStatus s = natsConnection_Connect(&conn, nc->opts);
    pthread_rwlock_wrlock(&nc->conn_lock);
    nc->conn = conn;
    pthread_rwlock_unlock(&nc->conn_lock);
    bool connected_now = s == NATS_OK;
    if (s == NATS_NOT_YET_CONNECTED) {
        CR_WARN(COMPONENT, "not connected to NATS yet; retrying every %d ms", RECONNECT_WAIT_MS);
        s = NATS_OK;
    }
    if (s != NATS_OK) {
        CR_ERROR(COMPONENT, "connect failed error=\"%s\" detail=\"%s\"", natsStatus_GetText(s),
                 nats_GetLastError(NULL));
        return -1;
    }
    /* Subscriptions made before the connection is up are sent when it is. */
    s = subscribe(nc, SUB_ROUTER, "router.*", on_router_msg);
    if (s == NATS_OK)
        s = subscribe(nc, SUB_GREET, "router.greet", on_greet);
    for (size_t i = 0; s == NATS_OK && i < nc->extra_len; i++) {
        natsSubscription *sub = NULL;
        s = natsConnection_Subscribe(&sub, nc->conn, nc->extra[i].subject, on_extra_msg, &nc->extra[i]);
        if (s == NATS_OK) {
            pthread_rwlock_wrlock(&nc->conn_lock);
            nc->subs[SUB_EXTRA0 + i] = sub;
            pthread_rwlock_unlock(&nc->conn_lock);
            pthread_mutex_lock(&nc->mu);
            nc->subs_live++;
            pthread_mutex_unlock(&nc->mu);
            s = natsSubscription_SetOnCompleteCB(sub, on_sub_complete, nc);
        }
    }
    if (s != NATS_OK) {
        /* The deferred first connect can already have failed for good (a TLS
         * handshake error closes the connection at once); name that error,
         * not the subscription's. */
        const char *why = NULL;
        if (natsConnection_IsClosed(nc->conn))
            natsConnection_GetLastError(nc->conn, &why);
        CR_ERROR(COMPONENT, "subscribe failed error=\"%s\" detail=\"%s\"", natsStatus_GetText(s),
                 why && why[0] ? why : nats_GetLastError(NULL));
        return -1;
    }
    if (connected_now) {
        /* nats.c calls on_connected only for a deferred connect. */
        if (natsConnection_Status(nc->conn) == NATS_CONN_STATUS_CONNECTED)
            mark_connected(nc);
        char url[256] = "";
        natsConnection_GetConnectedUrl(nc->conn, url, sizeof url);
        CR_INFO(COMPONENT, "connected server=%s", url);
        natsConnection_Flush(nc->conn);
        publish_start(nc, nc->conn, "connect");
    }
    return 0;
}

/* Closes the connection if needed, waits until nats.c is done with our
 * callbacks (closed callback ran, no handler can still be in the registry),
 * and frees it. Called by the supervisor and by destroy. */
static void teardown_connection(cr_nats_client_t *nc)
{
    bool handlers_done = true;
    if (nc->conn) {
        natsConnection_Close(nc->conn);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 5;
        pthread_mutex_lock(&nc->mu);
        while (!nc->closed || nc->subs_live > 0) {
            if (pthread_cond_timedwait(&nc->cond, &nc->mu, &ts) != 0) {
                CR_WARN(COMPONENT, "timed out waiting for NATS callbacks to finish");
                handlers_done = false;
                break;
            }
        }
        pthread_mutex_unlock(&nc->mu);
    }
    /* The batch belongs to the delivery thread until it is done; after a
     * timeout it may still run, so the kept messages are left to it. */
    if (handlers_done)
        destroy_done_msgs(nc);
    pthread_rwlock_wrlock(&nc->conn_lock);
    for (int i = 0; i < SUB__COUNT; i++) {
        natsSubscription_Destroy(nc->subs[i]);
        nc->subs[i] = NULL;
    }
    natsConnection_Destroy(nc->conn);
    nc->conn = NULL;
    pthread_rwlock_unlock(&nc->conn_lock);
    atomic_store(&nc->connected_since_ns, 0);
}

/* --- Supervisor thread ------------------------------------------------- */

static struct timespec mono_timespec(int64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / CR_NS_PER_SEC), .tv_nsec = (long)(ns % CR_NS_PER_SEC)};
    return ts;
}

/* Publishes router.start every publish_start_message_interval (0: never) and
 * rebuilds the connection after nats.c closed it for good. States: idle
 * (waiting for the next announcement or a close), backing off (closed,
 * waiting until recreate_at), recreating (mu released). */
static void *supervisor_main(void *arg)
{
    cr_nats_client_t *nc = arg;
    int64_t interval = nc->cfg->publish_start_message_interval_ns;
    int64_t next_announce = interval > 0 ? cr_now_mono_ns() + interval : INT64_MAX;
    int64_t backoff = RECREATE_BACKOFF_MIN_NS;
    int64_t recreate_at = 0; /* 0: the connection is not known to be closed */

    pthread_mutex_lock(&nc->mu);
    while (!nc->stopping) {
        int64_t now = cr_now_mono_ns();
        if (nc->closed && recreate_at == 0) {
            recreate_at = now + backoff;
            CR_WARN(COMPONENT, "connection closed for good; recreating it in %lld ms",
                    (long long)(backoff / CR_NS_PER_MS));
        }
        if (recreate_at != 0 && now >= recreate_at) {
            pthread_mutex_unlock(&nc->mu);
            teardown_connection(nc);
            bool ok = connect_and_subscribe(nc) == 0;
            pthread_mutex_lock(&nc->mu);
            recreate_at = 0;
            backoff = ok ? RECREATE_BACKOFF_MIN_NS
                         : (backoff * 2 > RECREATE_BACKOFF_MAX_NS ? RECREATE_BACKOFF_MAX_NS : backoff * 2);
            if (!ok)
                nc->closed = true; /* the failed attempt left nothing open: back off and retry */
            continue;
        }
        if (now >= next_announce) {
            pthread_mutex_unlock(&nc->mu);
            if (cr_nats_client_is_connected(nc))
                publish_start(nc, nc->conn, "interval");
            pthread_mutex_lock(&nc->mu);
            next_announce = now + interval;
            continue;
        }
        int64_t wake = next_announce;
        if (recreate_at != 0 && recreate_at < wake)
            wake = recreate_at;
        if (wake == INT64_MAX) {
            pthread_cond_wait(&nc->cond, &nc->mu);
        } else {
            struct timespec ts = mono_timespec(wake);
            pthread_cond_timedwait(&nc->cond, &nc->mu, &ts);
        }
    }
    pthread_mutex_unlock(&nc->mu);
    return NULL;
}

int cr_nats_client_start(cr_nats_client_t *nc)
{
    if (build_options(nc) != 0)
        return -1;
    if (connect_and_subscribe(nc) != 0) {
        /* Not fatal (unlike gorouter): the supervisor keeps trying. */
        pthread_mutex_lock(&nc->mu);
        nc->closed = true;
        pthread_mutex_unlock(&nc->mu);
    }
    if (pthread_create(&nc->supervisor, NULL, supervisor_main, nc) != 0) {
        CR_ERROR(COMPONENT, "cannot start the NATS supervisor thread");
        return -1;
    }
    nc->supervisor_running = true;
    return 0;
}

void cr_nats_client_destroy(cr_nats_client_t *nc)
{
    if (!nc)
        return;
    pthread_mutex_lock(&nc->mu);
    nc->stopping = true;
    pthread_cond_broadcast(&nc->cond);
    pthread_mutex_unlock(&nc->mu);
    if (nc->supervisor_running)
        pthread_join(nc->supervisor, NULL);

    teardown_connection(nc);
    natsOptions_Destroy(nc->opts);
    nc->opts = NULL;
    for (size_t i = 0; i < nc->extra_len; i++)
        free(nc->extra[i].subject);
    pthread_rwlock_destroy(&nc->conn_lock);
    pthread_cond_destroy(&nc->cond);
    pthread_mutex_destroy(&nc->mu);
    free(nc->start_payload);
    free(nc);
}

int cr_nats_client_add_subscription(cr_nats_client_t *nc, const char *subject, cr_nats_msg_fn fn,
                                    void *arg)
{
    if (nc->extra_len >= CR_NATS_MAX_EXTRA_SUBS || nc->conn || !subject || !fn)
        return -1;
    nc->extra[nc->extra_len++] = (extra_sub_t){.subject = cr_xstrdup(subject), .fn = fn, .arg = arg};
    return 0;
}

int cr_nats_client_publish(cr_nats_client_t *nc, const char *subject, const void *data, size_t len)
{
    int rc = -1;
    pthread_rwlock_rdlock(&nc->conn_lock);
    if (nc->conn && natsConnection_Publish(nc->conn, subject, data, (int)len) == NATS_OK)
        rc = 0;
    pthread_rwlock_unlock(&nc->conn_lock);
    return rc;
}

bool cr_nats_client_is_connected(const cr_nats_client_t *nc)
{
    return nc && atomic_load(&((cr_nats_client_t *)nc)->connected_since_ns) != 0;
}

int64_t cr_nats_client_connected_since_ns(const cr_nats_client_t *nc)
{
    return nc ? atomic_load(&((cr_nats_client_t *)nc)->connected_since_ns) : 0;
}

const char *cr_nats_client_router_id(const cr_nats_client_t *nc)
{
    return nc->router_id;
}

void cr_nats_client_get_stats(const cr_nats_client_t *ncc, cr_nats_stats_t *out)
{
    cr_nats_client_t *nc = (cr_nats_client_t *)ncc;
    memset(out, 0, sizeof *out);
    out->messages_received = atomic_load_explicit(&nc->messages_received, memory_order_relaxed);
    out->messages_rejected = atomic_load_explicit(&nc->messages_rejected, memory_order_relaxed);
    out->registers = atomic_load_explicit(&nc->registers, memory_order_relaxed);
    out->unregisters = atomic_load_explicit(&nc->unregisters, memory_order_relaxed);
    out->greets_answered = atomic_load_explicit(&nc->greets_answered, memory_order_relaxed);
    out->starts_published = atomic_load_explicit(&nc->starts_published, memory_order_relaxed);
    out->reconnects = atomic_load_explicit(&nc->reconnects, memory_order_relaxed);
    /* conn_lock keeps the supervisor from replacing the connection and its
     * subscriptions meanwhile; nats.c takes the connection's own lock. URLs
     * never carry the credentials (they are set with natsOptions_SetUserInfo). */
    pthread_rwlock_rdlock(&nc->conn_lock);
    if (nc->conn && natsConnection_Status(nc->conn) == NATS_CONN_STATUS_CONNECTED &&
        natsConnection_GetConnectedUrl(nc->conn, out->server, sizeof out->server) != NATS_OK)
        out->server[0] = '\0';
    for (int i = 0; i < SUB__COUNT; i++) {
        int64_t dropped = 0;
        if (nc->subs[i] && natsSubscription_GetDropped(nc->subs[i], &dropped) == NATS_OK &&
            dropped > 0)
            out->dropped += (uint64_t)dropped;
    }
    pthread_rwlock_unlock(&nc->conn_lock);
}

bool cr_nats_client_up_fn(void *arg)
{
    return cr_nats_client_is_connected(arg);
}
