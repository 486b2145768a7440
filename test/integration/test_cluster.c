/* test/integration/test_cluster.c - issue 7 (distributed setup): many routers
 * on one NATS cluster.
 *
 * Each test starts a 3-node nats-server cluster on loopback (every node its
 * own client port and cluster port, --routes to the other two) and two
 * crouters configured with all three nodes. Apps register through a
 * publisher that prefers node 1 and heartbeats its registrations every
 * 500 ms, as a route emitter does; a load thread sends GETs for every route
 * to both routers over keep-alive connections and counts failures.
 *
 * - Failover: the node router A is connected to (from /varz nats_server) is
 *   SIGKILLed under load, then router B's node. Each router must be back on
 *   another node quickly, no route may be lost (the stale threshold is 3 s,
 *   so a slow failover would prune them) and no request may fail.
 * - Outage: all three nodes are SIGKILLed for longer than
 *   droplet_stale_threshold (2 s) with suspend_pruning_if_nats_unavailable:
 *   every route is still served. After the cluster returns, the routes whose
 *   app stopped heartbeating are pruned on schedule and the heartbeated ones
 *   stay, still without a failed request.
 * Figures (requests, failures, failover and prune times) go to stdout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testsupport.h"

#define NODES 3
#define ROUTERS 2
#define APPS 20

typedef struct {
    ts_nats_t node[NODES];
    uint16_t client_port[NODES], cluster_port[NODES];
    char cluster_arg[NODES][64], routes_arg[NODES][160], name[NODES][16];
    const char *args[NODES][12];
} cluster_t;

/* Registrations heartbeated by a thread; keep[i] false stops app i's. */
typedef struct {
    natsConnection *nc;
    ts_route_t routes[APPS];
    char uris[APPS][64];
    atomic_bool keep[APPS];
    atomic_bool stop;
    atomic_long rounds;
    pthread_t thread;
} heartbeat_t;

/* GETs for every route, alternating routers; only routes with want[i]. */
typedef struct {
    const ts_crouter_t *routers[ROUTERS];
    const heartbeat_t *hb;
    atomic_bool want[APPS];
    atomic_bool stop;
    atomic_long sent, failed;
    char first_failure[256];
    pthread_t thread;
} load_t;

typedef struct {
    cluster_t cl;
    ts_backend_t backend;
    ts_crouter_t cr[ROUTERS];
    bool started[ROUTERS];
    heartbeat_t hb;
    load_t load;
    bool hb_running, load_running;
} fx_t;

/* ------------------------------------------------------------- cluster */

static void cluster_start(cluster_t *c)
{
    for (int i = 0; i < NODES; i++) {
        c->client_port[i] = ts_free_port();
        c->cluster_port[i] = ts_free_port();
    }
    for (int i = 0; i < NODES; i++) {
        snprintf(c->name[i], sizeof c->name[i], "node-%d", i + 1);
        snprintf(c->cluster_arg[i], sizeof c->cluster_arg[i], "nats://127.0.0.1:%u", c->cluster_port[i]);
        size_t len = 0;
        for (int j = 0; j < NODES; j++)
            if (j != i)
                len += (size_t)snprintf(c->routes_arg[i] + len, sizeof c->routes_arg[i] - len, "%snats://127.0.0.1:%u",
                                        len ? "," : "", c->cluster_port[j]);
        const char *a[] = {"-n", c->name[i], "--cluster_name", "crouter-it", "--cluster", c->cluster_arg[i],
                           "--routes", c->routes_arg[i], NULL};
        memcpy(c->args[i], a, sizeof a);
        assert_int_equal(ts_nats_start_with_args(&c->node[i], c->client_port[i], c->args[i]), 0);
    }
}

static void cluster_kill_node(cluster_t *c, int i)
{
    if (c->node[i].pid > 0) {
        ts_stop_process(c->node[i].pid, SIGKILL, 5000);
        c->node[i].pid = 0;
    }
}

static void cluster_stop(cluster_t *c)
{
    for (int i = 0; i < NODES; i++)
        if (c->node[i].pid > 0)
            ts_nats_stop(&c->node[i]);
}

/* Node index of a /varz nats_server URL, or -1. */
static int node_of(const cluster_t *c, const char *url)
{
    unsigned port = 0;
    const char *colon = url ? strrchr(url, ':') : NULL;
    if (!colon || sscanf(colon + 1, "%u", &port) != 1)
        return -1;
    for (int i = 0; i < NODES; i++)
        if (c->client_port[i] == port)
            return i;
    return -1;
}

/* The node a router is connected to (-1 while disconnected). */
static int router_node(const cluster_t *c, const ts_crouter_t *cr)
{
    json_t *v = ts_crouter_varz(cr);
    if (!v)
        return -1;
    int n = json_is_true(json_object_get(v, "nats_connected"))
                ? node_of(c, json_string_value(json_object_get(v, "nats_server")))
                : -1;
    json_decref(v);
    return n;
}

/* A publisher that prefers node 1 and fails over to the others. */
static natsConnection *cluster_publisher(const cluster_t *c)
{
    char urls[NODES][64];
    const char *list[NODES];
    for (int i = 0; i < NODES; i++) {
        snprintf(urls[i], sizeof urls[i], "nats://127.0.0.1:%u", c->client_port[i]);
        list[i] = urls[i];
    }
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    assert_int_equal(natsOptions_Create(&o), NATS_OK);
    natsOptions_SetServers(o, list, NODES);
    natsOptions_SetNoRandomize(o, true);
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 50);
    natsOptions_SetReconnectJitter(o, 0, 0);
    natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL);
    natsOptions_SetReconnectBufSize(o, 8 * 1024 * 1024);
    natsStatus s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    assert_int_equal(s, NATS_OK);
    return nc;
}

static char *router_yaml(const cluster_t *c, const char *extra)
{
    char *y = calloc(1, 4096);
    size_t len = (size_t)snprintf(y, 4096, "nats:\n  hosts:\n");
    for (int i = 0; i < NODES; i++)
        len += (size_t)snprintf(y + len, 4096 - len, "  - hostname: 127.0.0.1\n    port: %u\n", c->client_port[i]);
    snprintf(y + len, 4096 - len, "%s", extra);
    return y;
}

/* ------------------------------------------------------------ threads */

static void *heartbeat_main(void *arg)
{
    heartbeat_t *hb = arg;
    while (!atomic_load(&hb->stop)) {
        for (int i = 0; i < APPS; i++) {
            if (!atomic_load(&hb->keep[i]))
                continue;
            char *json = ts_route_json(&hb->routes[i]);
            /* While every node is down nats.c buffers (or refuses) the
             * publish; the next round repeats it anyway. */
            natsConnection_Publish(hb->nc, "router.register", json, (int)strlen(json));
            free(json);
        }
        atomic_fetch_add(&hb->rounds, 1);
        for (int t = 0; t < 10 && !atomic_load(&hb->stop); t++)
            ts_sleep_ms(50);
    }
    return NULL;
}

static void *load_main(void *arg)
{
    load_t *ld = arg;
    CURL *curl[ROUTERS];
    for (int r = 0; r < ROUTERS; r++)
        curl[r] = curl_easy_init();
    for (unsigned long k = 0; !atomic_load(&ld->stop); k++) {
        int app = (int)(k % APPS);
        if (!atomic_load(&ld->want[app]))
            continue;
        int r = (int)((k / APPS) % ROUTERS);
        ts_req_t req = {.host = ld->hb->uris[app], .path = "/cluster", .timeout_ms = 5000};
        ts_resp_t resp;
        int rc = ts_http(curl[r], ld->routers[r]->port, &req, &resp);
        atomic_fetch_add(&ld->sent, 1);
        if (rc != 0 || resp.status != 200) {
            if (atomic_fetch_add(&ld->failed, 1) == 0)
                snprintf(ld->first_failure, sizeof ld->first_failure, "router %d host %s: status %ld curl %d %s", r,
                         ld->hb->uris[app], resp.status, resp.curl_code,
                         ts_resp_header(&resp, "X-Cf-Routererror") ? ts_resp_header(&resp, "X-Cf-Routererror") : "");
        }
        ts_resp_free(&resp);
    }
    for (int r = 0; r < ROUTERS; r++)
        curl_easy_cleanup(curl[r]);
    return NULL;
}

/* --------------------------------------------------------------- fixture */

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    *state = f;
    return ts_backend_start(&f->backend, "cluster-app", NULL);
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    int rc = 0;
    if (f->load_running) {
        atomic_store(&f->load.stop, true);
        pthread_join(f->load.thread, NULL);
    }
    if (f->hb_running) {
        atomic_store(&f->hb.stop, true);
        pthread_join(f->hb.thread, NULL);
    }
    for (int r = 0; r < ROUTERS; r++) {
        if (!f->started[r])
            continue;
        if (!ts_crouter_stop_clean(&f->cr[r], 10000))
            rc = -1;
    }
    ts_nats_close(f->hb.nc);
    cluster_stop(&f->cl);
    ts_backend_stop(&f->backend);
    free(f);
    return rc;
}

/* Cluster, routers, publisher and heartbeats; waits until both routers
 * route every app. */
static void bring_up(fx_t *f, const char *router_extra)
{
    cluster_start(&f->cl);
    char *y = router_yaml(&f->cl, router_extra);
    for (int r = 0; r < ROUTERS; r++) {
        f->started[r] = true;
        assert_int_equal(ts_crouter_start(&f->cr[r], NULL, y), 0);
    }
    free(y);

    heartbeat_t *hb = &f->hb;
    hb->nc = cluster_publisher(&f->cl);
    for (int i = 0; i < APPS; i++) {
        snprintf(hb->uris[i], sizeof hb->uris[i], "app%d.cluster.example.com", i);
        hb->routes[i] = (ts_route_t){.port = f->backend.port, .uris = {hb->uris[i]}};
        atomic_store(&hb->keep[i], true);
    }
    assert_int_equal(pthread_create(&hb->thread, NULL, heartbeat_main, hb), 0);
    f->hb_running = true;
    for (int r = 0; r < ROUTERS; r++)
        for (int i = 0; i < APPS; i++)
            if (!ts_crouter_wait_route(&f->cr[r], hb->uris[i], 1, 20000))
                fail_msg("router %d never saw %s", r, hb->uris[i]);

    load_t *ld = &f->load;
    for (int r = 0; r < ROUTERS; r++)
        ld->routers[r] = &f->cr[r];
    ld->hb = hb;
    for (int i = 0; i < APPS; i++)
        atomic_store(&ld->want[i], true);
    assert_int_equal(pthread_create(&ld->thread, NULL, load_main, ld), 0);
    f->load_running = true;
}

static void stop_load(fx_t *f)
{
    atomic_store(&f->load.stop, true);
    pthread_join(f->load.thread, NULL);
    f->load_running = false;
}

/* Number of the apps (those with which[i], or all when NULL) that a
 * router's /routes lists with exactly one endpoint. */
static int routes_present(const ts_crouter_t *cr, const heartbeat_t *hb, const bool *which)
{
    json_t *routes = ts_crouter_routes(cr);
    assert_non_null(routes);
    int n = 0;
    for (int i = 0; i < APPS; i++) {
        if (which && !which[i])
            continue;
        json_t *eps = json_object_get(routes, hb->uris[i]);
        if (json_is_array(eps) && json_array_size(eps) == 1)
            n++;
    }
    json_decref(routes);
    return n;
}

/* Kills the node router r is on and returns how long the router took to be
 * connected to another one (ms). */
static int64_t kill_routers_node(fx_t *f, int r, int *killed)
{
    int node = -1;
    int64_t deadline = ts_now_ms() + 10000;
    while ((node = router_node(&f->cl, &f->cr[r])) < 0 && ts_now_ms() < deadline)
        ts_sleep_ms(20);
    assert_true(node >= 0);
    int64_t t0 = ts_now_ms();
    cluster_kill_node(&f->cl, node);
    *killed = node;
    int now = -1;
    deadline = t0 + 15000;
    while (ts_now_ms() < deadline) {
        now = router_node(&f->cl, &f->cr[r]);
        if (now >= 0 && now != node)
            break;
        ts_sleep_ms(10);
    }
    if (now < 0 || now == node)
        fail_msg("router %d did not fail over from node %d within 15 s", r, node + 1);
    return ts_now_ms() - t0;
}

/* ----------------------------------------------------------------- tests */

static void test_router_fails_over_to_another_node_without_losing_a_route_or_request(void **state)
{
    fx_t *f = *state;
    bring_up(f, "droplet_stale_threshold: 3s\nprune_stale_droplets_interval: 1s\n");
    ts_sleep_ms(1000); /* pacing: load before the first kill */

    int a_node = router_node(&f->cl, &f->cr[0]), b_node = router_node(&f->cl, &f->cr[1]);
    int killed_a = -1, killed_b = -1;
    int64_t failover_a = kill_routers_node(f, 0, &killed_a);
    int64_t failover_b = -1;
    int b_now = router_node(&f->cl, &f->cr[1]);
    if (b_now < 0 || f->cl.node[b_now].pid > 0) {
        /* B was elsewhere (or is moving): kill its node too, keeping one. */
        int alive = 0;
        for (int i = 0; i < NODES; i++)
            alive += f->cl.node[i].pid > 0;
        if (alive > 1)
            failover_b = kill_routers_node(f, 1, &killed_b);
    }
    /* Three stale thresholds of traffic and heartbeats after the kills: a
     * route whose registrations were lost would be pruned meanwhile. */
    long rounds0 = atomic_load(&f->hb.rounds);
    ts_sleep_ms(9000);
    assert_true(atomic_load(&f->hb.rounds) > rounds0 + 5);
    stop_load(f);

    long sent = atomic_load(&f->load.sent), failed = atomic_load(&f->load.failed);
    int present[ROUTERS];
    for (int r = 0; r < ROUTERS; r++)
        present[r] = routes_present(&f->cr[r], &f->hb, NULL);
    printf("cluster failover: router A on node %d, B on node %d; killed node %d (A back in %lld ms)",
           a_node + 1, b_node + 1, killed_a + 1, (long long)failover_a);
    if (killed_b >= 0)
        printf(", then node %d (B back in %lld ms)", killed_b + 1, (long long)failover_b);
    else
        printf(", B moved with A");
    printf("; requests sent %ld, failed %ld; routes present A %d/%d, B %d/%d\n", sent, failed, present[0], APPS,
           present[1], APPS);
    if (failed)
        fail_msg("%ld of %ld requests failed; first: %s", failed, sent, f->load.first_failure);
    assert_true(sent > 100);
    assert_int_equal(present[0], APPS);
    assert_int_equal(present[1], APPS);
    for (int r = 0; r < ROUTERS; r++)
        assert_true(ts_crouter_alive(&f->cr[r]));
}

static void test_cluster_outage_keeps_routes_then_prunes_only_unregistered_ones(void **state)
{
    fx_t *f = *state;
    bring_up(f, "droplet_stale_threshold: 2s\nprune_stale_droplets_interval: 1s\n"
                "suspend_pruning_if_nats_unavailable: true\n");
    /* Apps with an odd index stop heartbeating just before the outage. */
    bool gone[APPS], kept[APPS];
    for (int i = 0; i < APPS; i++) {
        gone[i] = i % 2 == 1;
        kept[i] = !gone[i];
        if (gone[i])
            atomic_store(&f->hb.keep[i], false);
    }
    long rounds0 = atomic_load(&f->hb.rounds);
    while (atomic_load(&f->hb.rounds) < rounds0 + 2)
        ts_sleep_ms(20);

    int64_t t_down = ts_now_ms();
    for (int i = 0; i < NODES; i++)
        cluster_kill_node(&f->cl, i);
    long sent0 = atomic_load(&f->load.sent);
    /* The routers notice the dead sockets asynchronously (nats.c's
     * disconnect callback): under ThreadSanitizer the first /varz poll
     * could beat it. Wait for it (bounded), then it must stay down. */
    for (int r = 0; r < ROUTERS; r++) {
        bool down = false;
        while (!down && ts_now_ms() < t_down + 3000) {
            json_t *v = ts_crouter_varz(&f->cr[r]);
            assert_non_null(v);
            down = !json_is_true(json_object_get(v, "nats_connected"));
            json_decref(v);
            if (!down)
                ts_sleep_ms(20);
        }
        assert_true(down);
    }
    /* The outage: 2.5 stale thresholds plus a prune interval. */
    int64_t until = t_down + 6000;
    while (ts_now_ms() < until) {
        for (int r = 0; r < ROUTERS; r++) {
            json_t *v = ts_crouter_varz(&f->cr[r]);
            assert_non_null(v);
            assert_false(json_is_true(json_object_get(v, "nats_connected")));
            json_decref(v);
        }
        ts_sleep_ms(250);
    }
    long outage_sent = atomic_load(&f->load.sent) - sent0;
    long outage_failed = atomic_load(&f->load.failed);
    int during[ROUTERS];
    for (int r = 0; r < ROUTERS; r++)
        during[r] = routes_present(&f->cr[r], &f->hb, NULL);

    /* The cluster returns; the load now only asks for the kept apps. */
    for (int i = 0; i < APPS; i++)
        atomic_store(&f->load.want[i], kept[i]);
    int64_t t_up = ts_now_ms();
    for (int i = 0; i < NODES; i++)
        assert_int_equal(ts_nats_start_again(&f->cl.node[i]), 0);
    int64_t reconnected_ms[ROUTERS], pruned_ms[ROUTERS];
    for (int r = 0; r < ROUTERS; r++) {
        reconnected_ms[r] = pruned_ms[r] = -1;
    }
    int64_t deadline = t_up + 20000;
    while (ts_now_ms() < deadline && (pruned_ms[0] < 0 || pruned_ms[1] < 0)) {
        for (int r = 0; r < ROUTERS; r++) {
            if (reconnected_ms[r] < 0 && router_node(&f->cl, &f->cr[r]) >= 0)
                reconnected_ms[r] = ts_now_ms() - t_up;
            if (reconnected_ms[r] >= 0 && pruned_ms[r] < 0 && routes_present(&f->cr[r], &f->hb, gone) == 0)
                pruned_ms[r] = ts_now_ms() - t_up;
        }
        ts_sleep_ms(50);
    }
    /* Heartbeated apps must still be there two thresholds later. */
    ts_sleep_ms(4000);
    stop_load(f);
    int kept_present[ROUTERS];
    for (int r = 0; r < ROUTERS; r++)
        kept_present[r] = routes_present(&f->cr[r], &f->hb, kept);
    long sent = atomic_load(&f->load.sent), failed = atomic_load(&f->load.failed);

    printf("cluster outage: all %d nodes down %lld ms (stale threshold 2 s): %ld requests, %ld failed, "
           "routes served A %d/%d B %d/%d\n",
           NODES, (long long)(t_up - t_down), outage_sent, outage_failed, during[0], APPS, during[1], APPS);
    printf("cluster outage: after restart routers reconnected in %lld / %lld ms; unregistered routes pruned "
           "%lld / %lld ms after restart; heartbeated routes kept A %d/%d B %d/%d; requests total %ld, failed %ld\n",
           (long long)reconnected_ms[0], (long long)reconnected_ms[1], (long long)pruned_ms[0],
           (long long)pruned_ms[1], kept_present[0], APPS / 2, kept_present[1], APPS / 2, sent, failed);

    if (failed)
        fail_msg("%ld of %ld requests failed; first: %s", failed, sent, f->load.first_failure);
    assert_true(outage_sent > 50);
    assert_int_equal(during[0], APPS);
    assert_int_equal(during[1], APPS);
    for (int r = 0; r < ROUTERS; r++) {
        if (reconnected_ms[r] < 0 || pruned_ms[r] < 0)
            fail_msg("router %d: reconnected after %lld ms, unregistered routes pruned after %lld ms (-1 = never)",
                     r, (long long)reconnected_ms[r], (long long)pruned_ms[r]);
        /* On schedule: within a stale threshold and two prune intervals of
         * the reconnect (plus polling slack), not at once. */
        assert_true(pruned_ms[r] - reconnected_ms[r] <= 2000 + 2 * 1000 + 1000);
        assert_true(pruned_ms[r] - reconnected_ms[r] >= 1000);
        assert_int_equal(kept_present[r], APPS / 2);
    }
}

int main(void)
{
    ts_init("cluster");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_router_fails_over_to_another_node_without_losing_a_route_or_request,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cluster_outage_keeps_routes_then_prunes_only_unregistered_ones,
                                        fx_setup, fx_teardown),
    };
    return ts_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
