/* test/unit/registry/test_registry_threads.c - readers against writers (registry/route_table.c).
 *
 * Reader threads look up, pick and use endpoints continuously while writers
 * register, replace, unregister and prune thousands of routes. Run under
 * ASan (a reader touching a freed pool, route or endpoint faults) and under
 * TSan (-DCROUTER_SANITIZE=thread) for data races.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/defs.h"
#include "common/log.h"
#include "registry/registry.h"

#define SEC CR_NS_PER_SEC
#define READERS 4
#define HOSTS 500

static cr_registry_t *new_registry(bool mode_503)
{
    cr_registry_options_t o = {
        .droplet_stale_threshold_ns = 120 * SEC,
        .default_lb_algo = CR_LB_ROUND_ROBIN,
        .empty_pool_response_code_503 = mode_503,
        .empty_pool_timeout_ns = 5 * SEC,
    };
    return cr_registry_create(&o);
}

static void make_msg(cr_register_msg_t *m, char *json, size_t cap, int host, int ip, const char *app)
{
    snprintf(json, cap,
             "{\"host\":\"10.2.%d.%d\",\"port\":%d,\"uris\":[\"h%d.example.com\",\"h%d.example.com/p/%d\",\"*.w%d.example.com\"],"
             "\"app\":\"%s\",\"private_instance_id\":\"id-%d-%d\",\"tags\":{\"component\":\"c\"}}",
             ip / 200, ip % 200, 8000 + ip % 1000, host, host, ip % 3, host % 50, app, host, ip);
    char err[128];
    if (cr_register_msg_decode(json, strlen(json), m, err, sizeof err) != 0)
        fail_msg("decode: %s", err);
}

typedef struct shared {
    cr_registry_t *reg;
    atomic_bool stop;
    atomic_ulong lookups;
    atomic_ulong hits;
} shared_t;

static void *reader(void *arg)
{
    shared_t *s = arg;
    cr_registry_reader_thread_register();
    unsigned seed = (unsigned)(uintptr_t)&seed;
    char host[64], path[32];
    unsigned long n = 0, hits = 0;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        seed = seed * 1103515245u + 12345u;
        int h = (int)((seed >> 8) % HOSTS);
        int kind = (int)((seed >> 20) % 3);
        if (kind == 2)
            snprintf(host, sizeof host, "x.y.w%d.example.com:80", h % 50);
        else
            snprintf(host, sizeof host, "H%d.Example.com", h);
        snprintf(path, sizeof path, "/p/%d/more?q", (int)((seed >> 4) % 4));

        cr_endpoint_t *picked = NULL;
        cr_registry_read_lock();
        const cr_route_t *r = cr_registry_lookup(s->reg, host, strlen(host), path, strlen(path));
        if (r) {
            const cr_pool_t *p = cr_route_pool(r);
            /* Touch everything a worker would. */
            size_t sum = strlen(r->key) + strlen(r->context_path);
            for (uint32_t i = 0; i < p->len; i++)
                sum += strlen(p->endpoints[i]->addr);
            if (p->len > 0) {
                uint32_t i = atomic_fetch_add_explicit((_Atomic uint32_t *)&r->rr_next, 1, memory_order_relaxed) % p->len;
                picked = cr_endpoint_retain(p->endpoints[i]);
                (void)cr_pool_find_by_id(p, picked->addr, strlen(picked->addr));
            }
            assert_true(sum > 0);
        }
        cr_registry_read_unlock();
        if (picked) {
            /* Used after the read section, as a worker does during a request. */
            atomic_fetch_add_explicit(&picked->in_flight, 1, memory_order_relaxed);
            assert_true(picked->app == NULL || strlen(picked->app) > 0);
            assert_true(picked->tags_len == 1 && strcmp(picked->tags[0].key, "component") == 0);
            /* The route's string, kept alive by the endpoint after the route goes. */
            assert_true(picked->context_path[0] == '\0' || picked->context_path[0] == '/');
            assert_true(picked->host && strncmp(picked->host, "10.2.", 5) == 0);
            atomic_fetch_sub_explicit(&picked->in_flight, 1, memory_order_relaxed);
            cr_endpoint_release(picked);
            hits++;
        }
        n++;
    }
    atomic_fetch_add(&s->lookups, n);
    atomic_fetch_add(&s->hits, hits);
    cr_registry_reader_thread_unregister();
    return NULL;
}

static void visit_nop(void *arg, const cr_route_t *route, const cr_pool_t *pool)
{
    size_t *n = arg;
    *n += strlen(route->key) + pool->len;
}

static void run_readers_against_writer(bool mode_503)
{
    shared_t s = { .reg = new_registry(mode_503) };
    pthread_t th[READERS];
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, reader, &s);

    char json[512];
    int64_t now = 1000 * SEC;
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 2000; i++) {
            cr_register_msg_t m;
            make_msg(&m, json, sizeof json, i % HOSTS, i + round * 7, round % 2 ? "app-a" : "app-b");
            cr_registry_register(s.reg, &m, now + (i % 4) * SEC);
            cr_register_msg_deinit(&m);
        }
        for (int i = 0; i < 2000; i += 3) {
            cr_register_msg_t m;
            make_msg(&m, json, sizeof json, i % HOSTS, i + round * 7, "x");
            cr_registry_unregister(s.reg, &m, now);
            cr_register_msg_deinit(&m);
        }
        size_t sum = 0;
        cr_registry_for_each_route(s.reg, visit_nop, &sum);
        now += 60 * SEC;
        cr_registry_prune(s.reg, now);
        if (round == 3)
            cr_registry_freshen(s.reg, now);
    }
    cr_registry_prune(s.reg, now + 1000 * SEC);
    cr_registry_prune(s.reg, now + 2000 * SEC);
    atomic_store(&s.stop, true);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    cr_registry_stats_t st;
    cr_registry_get_stats(s.reg, &st);
    assert_int_equal(st.routes, 0);
    assert_int_equal(st.endpoints, 0);
    printf("lookups=%lu hits=%lu registers=%lu pruned=%lu\n", (unsigned long)atomic_load(&s.lookups),
           (unsigned long)atomic_load(&s.hits), (unsigned long)st.registers, (unsigned long)st.pruned);
    assert_true(atomic_load(&s.lookups) > 0);
    cr_registry_destroy(s.reg);
}

static void test_readers_never_see_freed_objects(void **state)
{
    (void)state;
    run_readers_against_writer(false);
}

static void test_readers_never_see_freed_objects_503_mode(void **state)
{
    (void)state;
    run_readers_against_writer(true);
}

/* --- registers racing prunes ------------------------------------------ */

#define FRESH 5000
#define STALE 5000

typedef struct race {
    cr_registry_t *reg;
    int64_t now;
    atomic_bool done;
    atomic_int prunes;
} race_t;

static void *pruner_loop(void *arg)
{
    race_t *r = arg;
    while (!atomic_load(&r->done)) {
        cr_registry_prune(r->reg, r->now);
        atomic_fetch_add(&r->prunes, 1);
    }
    return NULL;
}

static void *stale_writer(void *arg)
{
    race_t *r = arg;
    char json[256];
    for (int i = 0; i < STALE; i++) {
        snprintf(json, sizeof json, "{\"host\":\"10.9.%d.%d\",\"port\":80,\"uris\":[\"stale%d.com\",\"shared%d.com\"]}",
                 i / 250, i % 250, i, i % 100);
        cr_register_msg_t m;
        cr_register_msg_decode(json, strlen(json), &m, NULL, 0);
        cr_registry_register(r->reg, &m, r->now - 500 * SEC); /* already stale */
        cr_register_msg_deinit(&m);
    }
    return NULL;
}

static void test_routes_registered_during_prunes_are_never_lost(void **state)
{
    (void)state;
    race_t r = { .reg = new_registry(false), .now = 10000 * SEC };
    pthread_t pt[2], sw;
    pthread_create(&pt[0], NULL, pruner_loop, &r);
    pthread_create(&pt[1], NULL, pruner_loop, &r);
    pthread_create(&sw, NULL, stale_writer, &r);

    char json[256];
    for (int i = 0; i < FRESH; i++) {
        snprintf(json, sizeof json, "{\"host\":\"10.8.%d.%d\",\"port\":80,\"uris\":[\"fresh%d.com/p%d\",\"shared%d.com\"]}",
                 i / 250, i % 250, i, i % 7, i % 100);
        cr_register_msg_t m;
        cr_register_msg_decode(json, strlen(json), &m, NULL, 0);
        assert_int_equal(cr_registry_register(r.reg, &m, r.now), 0);
        cr_register_msg_deinit(&m);
    }
    pthread_join(sw, NULL);
    /* Let a few more prunes run over the final table. */
    int seen = atomic_load(&r.prunes);
    while (atomic_load(&r.prunes) < seen + 4)
        ;
    atomic_store(&r.done, true);
    pthread_join(pt[0], NULL);
    pthread_join(pt[1], NULL);
    printf("prune cycles during the race: %d\n", atomic_load(&r.prunes));

    cr_registry_read_lock();
    for (int i = 0; i < FRESH; i++) {
        char host[32], path[32];
        snprintf(host, sizeof host, "fresh%d.com", i);
        snprintf(path, sizeof path, "/p%d/x", i % 7);
        const cr_route_t *rt = cr_registry_lookup(r.reg, host, strlen(host), path, strlen(path));
        if (!rt || cr_route_pool(rt)->len != 1)
            fail_msg("lost %s%s", host, path);
        snprintf(host, sizeof host, "stale%d.com", i);
        assert_null(cr_registry_lookup(r.reg, host, strlen(host), "/", 1));
    }
    for (int i = 0; i < 100; i++) {
        char host[32];
        snprintf(host, sizeof host, "shared%d.com", i);
        const cr_route_t *rt = cr_registry_lookup(r.reg, host, strlen(host), "/", 1);
        assert_non_null(rt);
        assert_int_equal(cr_route_pool(rt)->len, FRESH / 100);
    }
    cr_registry_read_unlock();
    cr_registry_destroy(r.reg);
}

int main(void)
{
    cr_log_set_level(CR_LOG_WARN);
    cr_registry_reader_thread_register();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readers_never_see_freed_objects),
        cmocka_unit_test(test_readers_never_see_freed_objects_503_mode),
        cmocka_unit_test(test_routes_registered_during_prunes_are_never_lost),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cr_registry_reader_thread_unregister();
    return rc;
}
