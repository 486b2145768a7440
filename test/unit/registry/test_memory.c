/* test/unit/registry/test_memory.c - how the registry lays out and frees what
 * it holds (registry/endpoint.c, intern.c, route_table.c): endpoint strings
 * that outlive their route, interned strings freed with their last user,
 * one-endpoint pools inside their endpoint, indexed pools, host entries
 * replaced as routes come and go. Run under ASan, these catch a string or
 * route freed too early or never.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "common/defs.h"
#include "common/log.h"
#include "registry/internal.h"
#include "registry/registry.h"

#define SEC CR_NS_PER_SEC

static cr_registry_t *new_registry(void)
{
    cr_registry_options_t o = {
        .droplet_stale_threshold_ns = 120 * SEC,
        .default_lb_algo = CR_LB_ROUND_ROBIN,
    };
    return cr_registry_create(&o);
}

static void reg_json(cr_registry_t *reg, const char *json, int64_t now)
{
    cr_register_msg_t m;
    char err[128];
    if (cr_register_msg_decode(json, strlen(json), &m, err, sizeof err) != 0)
        fail_msg("decode failed: %s: %s", err, json);
    assert_int_equal(cr_registry_register(reg, &m, now), 0);
    cr_register_msg_deinit(&m);
}

static size_t unreg_json(cr_registry_t *reg, const char *json)
{
    cr_register_msg_t m;
    char err[128];
    if (cr_register_msg_decode(json, strlen(json), &m, err, sizeof err) != 0)
        fail_msg("decode failed: %s: %s", err, json);
    size_t n = cr_registry_unregister(reg, &m, 1);
    cr_register_msg_deinit(&m);
    return n;
}

/* Instance i of app "app-g" on uri: host 10.0.<i/250>.<i%250>, port 8000+i. */
static void reg_instance(cr_registry_t *reg, const char *uri, int i, const char *app)
{
    char json[768];
    snprintf(json, sizeof json,
             "{\"host\":\"10.0.%d.%d\",\"port\":%d,\"uris\":[\"%s\"],\"app\":\"%s\","
             "\"private_instance_id\":\"id-%d\",\"private_instance_index\":\"%d\","
             "\"availability_zone\":\"z1\",\"isolation_segment\":\"iso\","
             "\"tags\":{\"component\":\"route-emitter\",\"app_name\":\"%s\"}}",
             i / 250, i % 250, 8000 + i, uri, app, i, i % 4, app);
    reg_json(reg, json, 1);
}

static cr_endpoint_t *retain_first(cr_registry_t *reg, const char *host, const char *path)
{
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, host, strlen(host), path, strlen(path));
    cr_endpoint_t *ep = r && cr_route_pool(r)->len ? cr_endpoint_retain(cr_route_pool(r)->endpoints[0]) : NULL;
    cr_registry_read_unlock();
    return ep;
}

/* Runs every pending RCU free. */
static void quiesce(void)
{
    urcu_memb_barrier();
}

static void test_endpoint_strings_survive_replacement_and_route_removal(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    reg_instance(reg, "a.com/Shop", 1, "guid-a");
    cr_endpoint_t *ep = retain_first(reg, "a.com", "/Shop");
    assert_non_null(ep);
    /* Re-register with another app: a new endpoint takes the slot. */
    reg_instance(reg, "a.com/Shop", 1, "guid-b");
    cr_endpoint_t *now = retain_first(reg, "a.com", "/Shop");
    assert_ptr_not_equal(now, ep);
    assert_string_equal(now->app, "guid-b");
    cr_endpoint_release(now);
    /* Then the route goes (unregister), its memory after a grace period. */
    assert_int_equal(unreg_json(reg, "{\"host\":\"10.0.0.1\",\"port\":8001,\"uris\":[\"a.com/Shop\"]}"), 1);
    quiesce();
    cr_registry_destroy(reg);
    /* The old endpoint still reads everything, its route's strings too. */
    assert_string_equal(ep->addr, "10.0.0.1:8001");
    assert_string_equal(ep->host, "10.0.0.1");
    assert_string_equal(ep->app, "guid-a");
    assert_string_equal(ep->private_instance_id, "id-1");
    assert_string_equal(ep->private_instance_index, "1");
    assert_string_equal(ep->availability_zone, "z1");
    assert_string_equal(ep->isolation_segment, "iso");
    assert_string_equal(ep->protocol, "http1");
    assert_string_equal(ep->context_path, "/Shop");
    assert_string_equal(cr_registry__endpoint_route_key(ep), "a.com/shop");
    assert_int_equal(ep->tags_len, 2);
    for (uint32_t i = 0; i < ep->tags_len; i++) {
        if (strcmp(ep->tags[i].key, "app_name") == 0)
            assert_string_equal(ep->tags[i].value, "guid-a");
        else
            assert_string_equal(ep->tags[i].value, "route-emitter");
    }
    cr_endpoint_release(ep);
}

static void test_interned_strings_freed_when_last_user_goes(void **state)
{
    (void)state;
    size_t base = cr_registry__intern_count();
    cr_registry_t *reg = new_registry();
    for (int i = 0; i < 20; i++)
        reg_instance(reg, "shared.com", i, "guid-s");
    /* Shared: app, az, iso, 4 indexes, tag keys and values; one host each. */
    size_t held = cr_registry__intern_count() - base;
    assert_int_equal(held, 20 + 1 + 1 + 1 + 4 + 2 + 2 - 1 /* "guid-s" is app and app_name */);
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, "shared.com", 10, "", 0);
    const cr_pool_t *p = cr_route_pool(r);
    assert_int_equal(p->len, 20);
    assert_ptr_equal(p->endpoints[0]->app, p->endpoints[19]->app); /* one copy */
    assert_ptr_equal(p->endpoints[0]->tags[0].key, p->endpoints[19]->tags[0].key);
    cr_registry_read_unlock();

    cr_endpoint_t *kept = retain_first(reg, "shared.com", "");
    for (int i = 0; i < 20; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"host\":\"10.0.0.%d\",\"port\":%d,\"uris\":[\"shared.com\"]}", i, 8000 + i);
        assert_int_equal(unreg_json(reg, json), 1);
    }
    quiesce();
    /* The kept endpoint holds its own host and the shared strings. */
    assert_int_equal(cr_registry__intern_count() - base, 1 + 1 + 1 + 1 + 1 + 2 + 1);
    assert_string_equal(kept->app, "guid-s");
    cr_endpoint_release(kept);
    assert_int_equal(cr_registry__intern_count(), base);
    cr_registry_destroy(reg);
    assert_int_equal(cr_registry__intern_count(), base);
}

/* Registers n instances on uri and checks the pool's shape and lookups. */
static void check_pool_of(cr_registry_t *reg, const char *host, int n)
{
    for (int i = 0; i < n; i++)
        reg_instance(reg, host, i, "guid-p");
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, host, strlen(host), "", 0);
    assert_non_null(r);
    const cr_pool_t *p = cr_route_pool(r);
    assert_int_equal(p->len, (uint32_t)n);
    if (n == 1) {
        /* Inside its endpoint's allocation, right behind the struct. */
        const char *e = (const char *)p->endpoints[0];
        assert_true((const char *)p > e && (const char *)p < e + sizeof(cr_endpoint_t) + 64);
    }
    if (n <= CR_POOL_SCAN_MAX)
        assert_int_equal(p->id_index_mask, 0);
    else
        assert_true(p->id_index_mask + 1 >= 2u * (uint32_t)n);
    for (int i = 0; i < n; i++) {
        char id[32], addr[64];
        snprintf(id, sizeof id, "id-%d", i);
        snprintf(addr, sizeof addr, "10.0.%d.%d:%d", i / 250, i % 250, 8000 + i);
        assert_ptr_equal(cr_pool_find_by_id(p, id, strlen(id)), p->endpoints[i]);
        assert_ptr_equal(cr_pool_find_by_id(p, addr, strlen(addr)), p->endpoints[i]);
        assert_string_equal(p->endpoints[i]->private_instance_id, id);
    }
    assert_null(cr_pool_find_by_id(p, "id-x", 4));
    cr_registry_read_unlock();
}

static void test_pool_layouts_1_2_9_1000(void **state)
{
    (void)state;
    size_t base = cr_registry__intern_count();
    cr_registry_t *reg = new_registry();
    check_pool_of(reg, "one.com", 1);
    check_pool_of(reg, "two.com", 2);
    check_pool_of(reg, "nine.com", 9);
    check_pool_of(reg, "thousand.com", 1000);
    /* 1 -> 2 -> 1: an endpoint's inner pool is used once, so the pool left
     * holding endpoint 0 again is an allocation of its own. */
    reg_instance(reg, "one.com", 1, "guid-p");
    assert_int_equal(unreg_json(reg, "{\"host\":\"10.0.0.1\",\"port\":8001,\"uris\":[\"one.com\"]}"), 1);
    cr_registry_read_lock();
    const cr_pool_t *p = cr_route_pool(cr_registry_lookup(reg, "one.com", 7, "", 0));
    assert_int_equal(p->len, 1);
    assert_string_equal(p->endpoints[0]->addr, "10.0.0.0:8000");
    const char *e = (const char *)p->endpoints[0];
    assert_false((const char *)p > e && (const char *)p < e + sizeof(cr_endpoint_t) + 64);
    assert_ptr_equal(cr_pool_find_by_id(p, "id-0", 4), p->endpoints[0]);
    cr_registry_read_unlock();
    /* Replacing the endpoint gives it a fresh inner pool. */
    reg_json(reg, "{\"host\":\"10.0.0.0\",\"port\":8000,\"uris\":[\"one.com\"],\"app\":\"other\"}", 2);
    cr_registry_read_lock();
    p = cr_route_pool(cr_registry_lookup(reg, "one.com", 7, "", 0));
    assert_int_equal(p->len, 1);
    assert_string_equal(p->endpoints[0]->app, "other");
    e = (const char *)p->endpoints[0];
    assert_true((const char *)p > e && (const char *)p < e + sizeof(cr_endpoint_t) + 64);
    cr_registry_read_unlock();
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.routes, 4);
    assert_int_equal(st.endpoints, 1 + 2 + 9 + 1000);
    cr_registry_destroy(reg);
    assert_int_equal(cr_registry__intern_count(), base);
}

static void visit_keys(void *arg, const cr_route_t *route, const cr_pool_t *pool)
{
    (void)pool;
    char *out = arg;
    strcat(out, route->key);
    strcat(out, " ");
}

static void test_host_entry_replaced_as_routes_come_and_go(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    const char *paths[] = { "h.com/b", "h.com", "h.com/a/b", "h.com/a", "H.com/C" };
    for (int i = 0; i < 5; i++)
        reg_instance(reg, paths[i], i, "guid-h");
    cr_endpoint_t *held = retain_first(reg, "h.com", "/a/b");
    /* Remove from the middle, the front and the back of the sorted array. */
    const int order[] = { 3, 2, 4, 0 };
    for (int k = 0; k < 4; k++) {
        int i = order[k];
        char json[256];
        snprintf(json, sizeof json, "{\"host\":\"10.0.0.%d\",\"port\":%d,\"uris\":[\"%s\"]}", i, 8000 + i, paths[i]);
        assert_int_equal(unreg_json(reg, json), 1);
        char keys[256] = "";
        cr_registry_for_each_route(reg, visit_keys, keys);
        cr_registry_stats_t st;
        cr_registry_get_stats(reg, &st);
        assert_int_equal(st.routes, 4 - k);
    }
    char keys[256] = "";
    cr_registry_for_each_route(reg, visit_keys, keys);
    assert_string_equal(keys, "h.com ");
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, "h.com", 5, "/a/b/c", 6);
    assert_non_null(r);
    assert_string_equal(r->key, "h.com");
    cr_registry_read_unlock();
    /* Prune takes the last route and the host entry with it. */
    assert_int_equal(cr_registry_prune(reg, 1 + 121 * SEC), 1);
    cr_registry_read_lock();
    assert_null(cr_registry_lookup(reg, "h.com", 5, "/", 1));
    cr_registry_read_unlock();
    quiesce();
    assert_string_equal(held->context_path, "/a/b");
    assert_string_equal(cr_registry__endpoint_route_key(held), "h.com/a/b");
    cr_endpoint_release(held);
    cr_registry_destroy(reg);
}

static void test_prune_across_hosts_with_many_routes(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry();
    /* 3,000 hosts of 1-3 routes; every other route is refreshed later. */
    for (int i = 0; i < 6000; i++) {
        char uri[64], json[256];
        snprintf(uri, sizeof uri, "h%d.com/p%d", i % 3000, i % 7);
        snprintf(json, sizeof json, "{\"host\":\"10.1.0.1\",\"port\":%d,\"uris\":[\"%s\"]}", 1000 + i, uri);
        reg_json(reg, json, (i % 2) ? 100 * SEC : 1);
    }
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    size_t eps = st.endpoints;
    assert_int_equal(cr_registry_prune(reg, 1 + 121 * SEC), eps / 2);
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.endpoints, eps - eps / 2);
    assert_int_equal(cr_registry_prune(reg, 100 * SEC + 121 * SEC), eps - eps / 2);
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.routes, 0);
    assert_int_equal(st.endpoints, 0);
    cr_registry_destroy(reg);
}

int main(void)
{
    cr_log_set_level(CR_LOG_WARN);
    cr_registry_reader_thread_register();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_strings_survive_replacement_and_route_removal),
        cmocka_unit_test(test_interned_strings_freed_when_last_user_goes),
        cmocka_unit_test(test_pool_layouts_1_2_9_1000),
        cmocka_unit_test(test_host_entry_replaced_as_routes_come_and_go),
        cmocka_unit_test(test_prune_across_hosts_with_many_routes),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cr_registry_reader_thread_unregister();
    return rc;
}
