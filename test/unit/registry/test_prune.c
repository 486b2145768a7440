/* test/unit/registry/test_prune.c - TTL pruning, freshen and the pruner thread
 * (registry/route_table.c, registry/pruner.c). Time is passed in explicitly
 * (a fake clock) except for the thread tests, which use the real monotonic one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/defs.h"
#include "common/log.h"
#include "registry/registry.h"

#define SEC CR_NS_PER_SEC
#define T0 (1000 * SEC) /* fake clock origin */

static cr_registry_t *new_registry(void)
{
    cr_registry_options_t o = {
        .droplet_stale_threshold_ns = 120 * SEC,
        .default_lb_algo = CR_LB_ROUND_ROBIN,
    };
    return cr_registry_create(&o);
}

static void reg_at(cr_registry_t *reg, const char *json, int64_t now)
{
    cr_register_msg_t m;
    char err[128];
    if (cr_register_msg_decode(json, strlen(json), &m, err, sizeof err) != 0)
        fail_msg("decode: %s", err);
    assert_int_equal(cr_registry_register(reg, &m, now), 0);
    cr_register_msg_deinit(&m);
}

static uint32_t pool_len(cr_registry_t *reg, const char *host)
{
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, host, strlen(host), "/", 1);
    uint32_t n = r ? cr_route_pool(r)->len : UINT32_MAX;
    cr_registry_read_unlock();
    return n;
}

static bool has_route(cr_registry_t *reg, const char *host)
{
    return pool_len(reg, host) != UINT32_MAX;
}

static void test_default_ttl_is_droplet_threshold(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    reg_at(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"]}", T0);
    assert_int_equal(cr_registry_prune(reg, T0 + 120 * SEC), 0); /* exactly TTL: kept */
    assert_true(has_route(reg, "a.com"));
    assert_int_equal(cr_registry_prune(reg, T0 + 120 * SEC + 1), 1);
    assert_false(has_route(reg, "a.com"));
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.pruned, 1);
    assert_int_equal(st.routes, 0);
    assert_int_equal(st.endpoints, 0);
    cr_registry_destroy(reg);
}

static void test_message_threshold_shortens_but_never_lengthens(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    reg_at(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"short.com\"],\"stale_threshold_in_seconds\":30}", T0);
    reg_at(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"long.com\"],\"stale_threshold_in_seconds\":300}", T0);
    reg_at(reg, "{\"host\":\"10.0.0.3\",\"port\":80,\"uris\":[\"neg.com\"],\"stale_threshold_in_seconds\":-5}", T0);
    reg_at(reg, "{\"host\":\"10.0.0.4\",\"port\":80,\"uris\":[\"cap.com\"],\"stale_threshold_in_seconds\":120}", T0);

    cr_registry_read_lock();
    assert_int_equal(cr_route_pool(cr_registry_lookup(reg, "short.com", 9, "", 0))->endpoints[0]->ttl_s, 30);
    assert_int_equal(cr_route_pool(cr_registry_lookup(reg, "long.com", 8, "", 0))->endpoints[0]->ttl_s, 120);
    assert_int_equal(cr_route_pool(cr_registry_lookup(reg, "neg.com", 7, "", 0))->endpoints[0]->ttl_s, 120);
    cr_registry_read_unlock();

    assert_int_equal(cr_registry_prune(reg, T0 + 31 * SEC), 1);
    assert_false(has_route(reg, "short.com"));
    assert_true(has_route(reg, "long.com"));
    assert_int_equal(cr_registry_prune(reg, T0 + 121 * SEC), 3);
    assert_false(has_route(reg, "long.com"));
    assert_false(has_route(reg, "neg.com"));
    assert_false(has_route(reg, "cap.com"));
    cr_registry_destroy(reg);
}

static void test_tls_endpoints_are_never_pruned(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    reg_at(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"tls_port\":443,\"uris\":[\"a.com\"]}", T0);
    reg_at(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"]}", T0);
    assert_int_equal(cr_registry_prune(reg, T0 + 10000 * SEC), 1);
    assert_int_equal(pool_len(reg, "a.com"), 1);
    cr_registry_read_lock();
    assert_true(cr_route_pool(cr_registry_lookup(reg, "a.com", 5, "", 0))->endpoints[0]->tls);
    cr_registry_read_unlock();
    cr_registry_destroy(reg);
}

static void test_refresh_extends_life_and_keeps_order(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    reg_at(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"]}", T0);
    reg_at(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"]}", T0);
    reg_at(reg, "{\"host\":\"10.0.0.3\",\"port\":80,\"uris\":[\"a.com\"]}", T0);
    reg_at(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"]}", T0 + 100 * SEC);
    reg_at(reg, "{\"host\":\"10.0.0.3\",\"port\":80,\"uris\":[\"a.com\"]}", T0 + 100 * SEC);
    assert_int_equal(cr_registry_prune(reg, T0 + 150 * SEC), 1);
    cr_registry_read_lock();
    const cr_pool_t *p = cr_route_pool(cr_registry_lookup(reg, "a.com", 5, "", 0));
    assert_int_equal(p->len, 2);
    assert_string_equal(p->endpoints[0]->addr, "10.0.0.1:80");
    assert_string_equal(p->endpoints[1]->addr, "10.0.0.3:80");
    cr_registry_read_unlock();
    cr_registry_destroy(reg);
}

static void test_freshen_resets_every_endpoint(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    for (int i = 0; i < 20; i++) {
        char json[128];
        snprintf(json, sizeof json, "{\"host\":\"10.0.0.%d\",\"port\":80,\"uris\":[\"h%d.com\",\"all.com\"]}", i, i);
        reg_at(reg, json, T0);
    }
    cr_registry_freshen(reg, T0 + 500 * SEC);
    assert_int_equal(cr_registry_prune(reg, T0 + 600 * SEC), 0);
    assert_int_equal(pool_len(reg, "all.com"), 20);
    assert_int_equal(cr_registry_prune(reg, T0 + 621 * SEC), 40);
    assert_false(has_route(reg, "all.com"));
    assert_false(has_route(reg, "h7.com"));
    cr_registry_destroy(reg);
}

static void test_prune_many_routes_in_chunks(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    for (int i = 0; i < 10000; i++) {
        char json[160];
        snprintf(json, sizeof json, "{\"host\":\"10.1.%d.%d\",\"port\":80,\"uris\":[\"r%d.com/p%d\"]}",
                 i / 250, i % 250, i % 3000, i);
        reg_at(reg, json, i % 2 ? T0 : T0 + 100 * SEC);
    }
    assert_int_equal(cr_registry_prune(reg, T0 + 150 * SEC), 5000);
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.routes, 5000);
    assert_int_equal(st.endpoints, 5000);
    assert_int_equal(cr_registry_prune(reg, T0 + 300 * SEC), 5000);
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.routes, 0);
    assert_int_equal(st.pruned, 10000);
    cr_registry_destroy(reg);
}

/* --- the pruner thread ------------------------------------------------- */

typedef struct nats_fake {
    atomic_bool up;
    atomic_int calls;
} nats_fake_t;

static bool fake_nats_up(void *arg)
{
    nats_fake_t *f = arg;
    atomic_fetch_add(&f->calls, 1);
    return atomic_load(&f->up);
}

static void wait_calls(nats_fake_t *f, int at_least)
{
    for (int i = 0; i < 5000 && atomic_load(&f->calls) < at_least; i++) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_true(atomic_load(&f->calls) >= at_least);
}

static void test_pruner_skips_while_nats_down_then_freshens(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    int64_t old = cr_now_mono_ns() - 1000 * SEC; /* long stale */
    reg_at(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"]}", old);

    nats_fake_t f = { false, 0 };
    cr_pruner_t *pr = cr_pruner_start(reg, 5 * CR_NS_PER_MS, true, fake_nats_up, &f);
    assert_non_null(pr);
    wait_calls(&f, 4);
    assert_true(has_route(reg, "a.com")); /* suspended: not pruned */

    atomic_store(&f.up, true);
    int seen = atomic_load(&f.calls);
    wait_calls(&f, seen + 3);
    assert_true(has_route(reg, "a.com")); /* freshened on recovery, then kept */

    /* Pruning itself works again: a stale newcomer goes. */
    reg_at(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"b.com\"]}", old);
    seen = atomic_load(&f.calls);
    wait_calls(&f, seen + 3);
    assert_false(has_route(reg, "b.com"));
    assert_true(has_route(reg, "a.com"));
    cr_pruner_stop(pr);
    cr_registry_destroy(reg);
}

static void test_pruner_without_suspend_prunes_when_down(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    reg_at(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"]}", cr_now_mono_ns() - 1000 * SEC);
    nats_fake_t f = { false, 0 };
    cr_pruner_t *pr = cr_pruner_start(reg, 5 * CR_NS_PER_MS, false, fake_nats_up, &f);
    for (int i = 0; i < 5000 && has_route(reg, "a.com"); i++) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_false(has_route(reg, "a.com"));
    cr_pruner_stop(pr);
    cr_registry_destroy(reg);
}

static void test_pruner_interval_zero_does_nothing(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    reg_at(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"]}", cr_now_mono_ns() - 1000 * SEC);
    cr_pruner_t *pr = cr_pruner_start(reg, 0, false, NULL, NULL);
    assert_non_null(pr);
    struct timespec ts = { 0, 20000000 };
    nanosleep(&ts, NULL);
    assert_true(has_route(reg, "a.com"));
    cr_pruner_stop(pr);
    cr_pruner_stop(NULL);
    cr_registry_destroy(reg);
}

static void test_pruner_stops_promptly(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    cr_pruner_t *pr = cr_pruner_start(reg, 3600 * SEC, false, NULL, NULL);
    int64_t t = cr_now_mono_ns();
    cr_pruner_stop(pr);
    assert_true(cr_now_mono_ns() - t < 2 * SEC);
    cr_registry_destroy(reg);
}

int main(void)
{
    cr_log_set_level(CR_LOG_WARN);
    cr_registry_reader_thread_register();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_ttl_is_droplet_threshold),
        cmocka_unit_test(test_message_threshold_shortens_but_never_lengthens),
        cmocka_unit_test(test_tls_endpoints_are_never_pruned),
        cmocka_unit_test(test_refresh_extends_life_and_keeps_order),
        cmocka_unit_test(test_freshen_resets_every_endpoint),
        cmocka_unit_test(test_prune_many_routes_in_chunks),
        cmocka_unit_test(test_pruner_skips_while_nats_down_then_freshens),
        cmocka_unit_test(test_pruner_without_suspend_prunes_when_down),
        cmocka_unit_test(test_pruner_interval_zero_does_nothing),
        cmocka_unit_test(test_pruner_stops_promptly),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cr_registry_reader_thread_unregister();
    return rc;
}
