/* test/unit/registry/test_route_table.c - lookup, register, unregister (registry/route_table.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "common/log.h"
#include "registry/registry.h"

#define SEC CR_NS_PER_SEC

static cr_registry_t *new_registry(bool mode_503, int64_t empty_timeout_ns)
{
    cr_registry_options_t o = {
        .droplet_stale_threshold_ns = 120 * SEC,
        .default_lb_algo = CR_LB_ROUND_ROBIN,
        .empty_pool_response_code_503 = mode_503,
        .empty_pool_timeout_ns = empty_timeout_ns,
    };
    return cr_registry_create(&o);
}

static int setup(void **state)
{
    *state = new_registry(false, 0);
    return 0;
}

static int teardown(void **state)
{
    cr_registry_destroy(*state);
    return 0;
}

/* Decodes a JSON message (asserting success). */
static cr_register_msg_t msg_of(const char *json)
{
    cr_register_msg_t m;
    char err[128];
    if (cr_register_msg_decode(json, strlen(json), &m, err, sizeof err) != 0)
        fail_msg("decode failed: %s: %s", err, json);
    return m;
}

static void reg_json(cr_registry_t *reg, const char *json, int64_t now)
{
    cr_register_msg_t m = msg_of(json);
    assert_int_equal(cr_registry_register(reg, &m, now), 0);
    cr_register_msg_deinit(&m);
}

static size_t unreg_json(cr_registry_t *reg, const char *json, int64_t now)
{
    cr_register_msg_t m = msg_of(json);
    size_t n = cr_registry_unregister(reg, &m, now);
    cr_register_msg_deinit(&m);
    return n;
}

/* Registers host:port on one uri with an optional instance id. */
static void reg_ep(cr_registry_t *reg, const char *uri, const char *host, int port, const char *id)
{
    char json[512];
    if (id)
        snprintf(json, sizeof json, "{\"host\":\"%s\",\"port\":%d,\"uris\":[\"%s\"],\"private_instance_id\":\"%s\"}",
                 host, port, uri, id);
    else
        snprintf(json, sizeof json, "{\"host\":\"%s\",\"port\":%d,\"uris\":[\"%s\"]}", host, port, uri);
    reg_json(reg, json, 1);
}

static size_t unreg_ep(cr_registry_t *reg, const char *uri, const char *host, int port)
{
    char json[512];
    snprintf(json, sizeof json, "{\"host\":\"%s\",\"port\":%d,\"uris\":[\"%s\"]}", host, port, uri);
    return unreg_json(reg, json, 1);
}

/* The key of the route a request finds, or NULL; copies into buf. */
static const char *find(cr_registry_t *reg, const char *host, const char *path, char *buf, size_t cap)
{
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, host, strlen(host), path, path ? strlen(path) : 0);
    const char *out = NULL;
    if (r) {
        snprintf(buf, cap, "%s", r->key);
        out = buf;
    }
    cr_registry_read_unlock();
    return out;
}

#define ASSERT_FINDS(reg, host, path, want)                                  \
    do {                                                                     \
        char _b[512];                                                        \
        const char *_k = find(reg, host, path, _b, sizeof _b);               \
        if ((want) == NULL) {                                                \
            if (_k)                                                          \
                fail_msg("%s%s: found %s, want none", host, path, _k);      \
        } else if (!_k || strcmp(_k, (want) ? (want) : "") != 0) {           \
            fail_msg("%s%s: found %s, want %s", host, path, _k ? _k : "none", \
                     (want) ? (want) : "none");                              \
        }                                                                    \
    } while (0)

/* Copies the addresses of a route's pool, in order, "a,b,c". */
static void pool_addrs(cr_registry_t *reg, const char *host, const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, host, strlen(host), path, strlen(path));
    if (r) {
        const cr_pool_t *p = cr_route_pool(r);
        for (uint32_t i = 0; i < p->len; i++) {
            strncat(out, p->endpoints[i]->addr, cap - strlen(out) - 1);
            if (i + 1 < p->len)
                strncat(out, ",", cap - strlen(out) - 1);
        }
    }
    cr_registry_read_unlock();
}

static void test_host_is_normalised(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "App.Example.COM:8443", "10.0.0.1", 8080, NULL);
    ASSERT_FINDS(reg, "app.example.com", "/", "app.example.com");
    ASSERT_FINDS(reg, "APP.EXAMPLE.COM:80", "/x?y=1", "app.example.com");
    ASSERT_FINDS(reg, "other.example.com", "/", NULL);
    reg_ep(reg, "[::1]:8080/v6", "::1", 80, NULL);
    ASSERT_FINDS(reg, "[::1]:9999", "/v6/a", "[::1]/v6");
    ASSERT_FINDS(reg, "[::1]", "/v6", "[::1]/v6");
}

static void test_path_is_normalised(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "a.com/Foo/Bar/?q=1", "10.0.0.1", 80, NULL);
    ASSERT_FINDS(reg, "a.com", "/foo/bar", "a.com/foo/bar");
    ASSERT_FINDS(reg, "a.com", "/FOO/BAR/", "a.com/foo/bar");
    ASSERT_FINDS(reg, "a.com", "/foo/bar?x=/y", "a.com/foo/bar");
    ASSERT_FINDS(reg, "a.com", "/foo", NULL);
    /* Leading '/' is optional in registered uris: "b.com//x" is b.com/x. */
    reg_ep(reg, "b.com//x", "10.0.0.1", 80, NULL);
    ASSERT_FINDS(reg, "b.com", "/x/y", "b.com/x");

    char addrs[256];
    pool_addrs(reg, "a.com", "/foo/bar", addrs, sizeof addrs);
    assert_string_equal(addrs, "10.0.0.1:80");
    /* The same route with another spelling shares the pool. */
    reg_ep(reg, "A.com/foo/bar", "10.0.0.2", 80, NULL);
    pool_addrs(reg, "a.com", "/foo/bar", addrs, sizeof addrs);
    assert_string_equal(addrs, "10.0.0.1:80,10.0.0.2:80");
    /* The context path keeps the first registration's spelling. */
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, "a.com", 5, "/foo/bar", 8);
    assert_string_equal(r->context_path, "/Foo/Bar");
    assert_string_equal(r->host, "a.com");
    assert_string_equal(cr_route_pool(r)->endpoints[0]->context_path, "/Foo/Bar");
    cr_registry_read_unlock();
}

static void test_longest_path_wins_on_segment_boundaries(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "a.com", "10.0.0.1", 80, NULL);
    reg_ep(reg, "a.com/app", "10.0.0.2", 80, NULL);
    reg_ep(reg, "a.com/app/v2", "10.0.0.3", 80, NULL);
    ASSERT_FINDS(reg, "a.com", "/", "a.com");
    ASSERT_FINDS(reg, "a.com", "", "a.com");
    ASSERT_FINDS(reg, "a.com", "/app", "a.com/app");
    ASSERT_FINDS(reg, "a.com", "/app/", "a.com/app");
    ASSERT_FINDS(reg, "a.com", "/app/x", "a.com/app");
    ASSERT_FINDS(reg, "a.com", "/application", "a.com");
    ASSERT_FINDS(reg, "a.com", "/app/v2/z", "a.com/app/v2");
    ASSERT_FINDS(reg, "a.com", "/app/v21", "a.com/app");
    ASSERT_FINDS(reg, "a.com", "/APP/V2", "a.com/app/v2");
}

static void test_empty_deeper_pool_never_hides_live_parent(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry(true, 60 * SEC);
    reg_ep(reg, "a.com", "10.0.0.1", 80, NULL);
    reg_ep(reg, "a.com/foo", "10.0.0.2", 80, NULL);
    assert_int_equal(unreg_ep(reg, "a.com/foo", "10.0.0.2", 80), 1);
    /* a.com/foo is kept empty (503 mode) but a.com is live. */
    ASSERT_FINDS(reg, "a.com", "/foo/x", "a.com");
    /* With no live parent the deepest empty route is returned (503). */
    reg_ep(reg, "b.com/foo", "10.0.0.3", 80, NULL);
    unreg_ep(reg, "b.com/foo", "10.0.0.3", 80);
    ASSERT_FINDS(reg, "b.com", "/foo/x", "b.com/foo");
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, "b.com", 5, "/foo", 4);
    assert_non_null(r);
    assert_int_equal(cr_route_pool(r)->len, 0);
    cr_registry_read_unlock();
    cr_registry_destroy(reg);
}

static void test_503_mode_without_timeout_removes_emptied_route_at_once(void **state)
{
    (void)state;
    /* gorouter keeps emptied pools only when empty_pool_timeout > 0. */
    cr_registry_t *reg = new_registry(true, 0);
    reg_ep(reg, "gone.com", "10.0.0.1", 80, NULL);
    assert_int_equal(unreg_ep(reg, "gone.com", "10.0.0.1", 80), 1);
    cr_registry_read_lock();
    assert_null(cr_registry_lookup(reg, "gone.com", 8, "/", 1));
    cr_registry_read_unlock();
    cr_registry_destroy(reg);
}

static void test_wildcards_multi_level_most_specific_first(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "*.example.com", "10.0.0.1", 80, NULL);
    reg_ep(reg, "*.b.example.com", "10.0.0.2", 80, NULL);
    ASSERT_FINDS(reg, "x.example.com", "/", "*.example.com");
    ASSERT_FINDS(reg, "x.y.z.example.com", "/", "*.example.com");
    ASSERT_FINDS(reg, "a.b.example.com", "/", "*.b.example.com");
    ASSERT_FINDS(reg, "A.B.Example.Com:443", "/p", "*.b.example.com");
    ASSERT_FINDS(reg, "example.com", "/", NULL);
    ASSERT_FINDS(reg, "example.org", "/", NULL);
    /* A wildcard with a path matches only under that path. */
    reg_ep(reg, "*.c.example.com/api", "10.0.0.3", 80, NULL);
    ASSERT_FINDS(reg, "q.c.example.com", "/api/x", "*.c.example.com/api");
    ASSERT_FINDS(reg, "q.c.example.com", "/web", "*.example.com");
}

static void test_exact_host_beats_wildcard(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "*.example.com/deep/path", "10.0.0.1", 80, NULL);
    reg_ep(reg, "a.example.com", "10.0.0.2", 80, NULL);
    ASSERT_FINDS(reg, "a.example.com", "/deep/path", "a.example.com");
    /* An exact host without a matching prefix falls through to wildcards. */
    reg_ep(reg, "b.example.com/only", "10.0.0.3", 80, NULL);
    ASSERT_FINDS(reg, "b.example.com", "/deep/path", "*.example.com/deep/path");
    ASSERT_FINDS(reg, "b.example.com", "/only", "b.example.com/only");
}

static void test_refresh_keeps_endpoint_replace_keeps_slot(void **state)
{
    cr_registry_t *reg = *state;
    reg_json(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"x\"}", 10);
    reg_json(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"x\"}", 10);
    reg_json(reg, "{\"host\":\"10.0.0.3\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"x\"}", 10);
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, "a.com", 5, "/", 1);
    cr_endpoint_t *before = cr_endpoint_retain(cr_route_pool(r)->endpoints[1]);
    cr_registry_read_unlock();

    /* Equal fields: the same endpoint, only the timestamp moves. */
    reg_json(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"x\"}", 20);
    cr_registry_read_lock();
    r = cr_registry_lookup(reg, "a.com", 5, "/", 1);
    assert_ptr_equal(cr_route_pool(r)->endpoints[1], before);
    assert_int_equal(atomic_load(&before->refreshed_at_ns), 20);
    cr_registry_read_unlock();

    /* Different fields: a new endpoint in the same slot. */
    reg_json(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"y\"}", 30);
    char addrs[256];
    pool_addrs(reg, "a.com", "/", addrs, sizeof addrs);
    assert_string_equal(addrs, "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80");
    cr_registry_read_lock();
    r = cr_registry_lookup(reg, "a.com", 5, "/", 1);
    const cr_endpoint_t *after = cr_route_pool(r)->endpoints[1];
    assert_ptr_not_equal(after, before);
    assert_string_equal(after->app, "y");
    cr_registry_read_unlock();
    /* The old one is still ours to use until we release it. */
    assert_string_equal(before->app, "x");
    cr_endpoint_release(before);

    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.routes, 1);
    assert_int_equal(st.endpoints, 3);
    assert_int_equal(st.registers, 5);
}

static void test_new_instance_id_on_same_address_takes_over_slot(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "a.com", "10.0.0.1", 80, "old-id");
    reg_ep(reg, "a.com", "10.0.0.2", 80, "other");
    reg_ep(reg, "a.com", "10.0.0.1", 80, "new-id");
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, "a.com", 5, "/", 1);
    const cr_pool_t *p = cr_route_pool(r);
    assert_int_equal(p->len, 2);
    assert_string_equal(p->endpoints[0]->private_instance_id, "new-id");
    assert_null(cr_pool_find_by_id(p, "old-id", 6));
    assert_ptr_equal(cr_pool_find_by_id(p, "new-id", 6), p->endpoints[0]);
    cr_registry_read_unlock();
}

static void test_unregister_ignores_instance_id_and_other_fields(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "a.com", "10.0.0.1", 80, "id-1");
    reg_ep(reg, "a.com", "10.0.0.2", 80, "id-2");
    assert_int_equal(unreg_json(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],"
                                     "\"private_instance_id\":\"something-else\",\"app\":\"z\"}", 1), 1);
    char addrs[256];
    pool_addrs(reg, "a.com", "/", addrs, sizeof addrs);
    assert_string_equal(addrs, "10.0.0.2:80");
    /* Unknown address or route: nothing happens. */
    assert_int_equal(unreg_ep(reg, "a.com", "10.0.0.9", 80), 0);
    assert_int_equal(unreg_ep(reg, "nope.com", "10.0.0.2", 80), 0);
    /* The last endpoint gone: the route disappears (no 503 mode). */
    assert_int_equal(unreg_ep(reg, "a.com", "10.0.0.2", 80), 1);
    ASSERT_FINDS(reg, "a.com", "/", NULL);
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.routes, 0);
    assert_int_equal(st.endpoints, 0);
    assert_int_equal(st.unregisters, 2);
}

static void test_tls_port_is_the_address(void **state)
{
    cr_registry_t *reg = *state;
    reg_json(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"tls_port\":443,\"uris\":[\"a.com\"]}", 1);
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, "a.com", 5, "/", 1);
    const cr_endpoint_t *ep = cr_route_pool(r)->endpoints[0];
    assert_string_equal(ep->addr, "10.0.0.1:443");
    assert_true(ep->tls);
    assert_int_equal(ep->port, 443);
    assert_int_equal(ep->sockaddr_len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(ep->sockaddr.in.sin_port), 443);
    assert_string_equal(ep->protocol, "http1");
    cr_registry_read_unlock();
    /* Unregister with port only does not match the TLS address. */
    assert_int_equal(unreg_ep(reg, "a.com", "10.0.0.1", 80), 0);
    assert_int_equal(unreg_json(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"tls_port\":443,\"uris\":[\"a.com\"]}", 1), 1);
}

static void test_endpoint_addresses_resolve(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "v6.com", "::1", 8080, NULL);
    reg_ep(reg, "name.com", "localhost", 8080, NULL);
    reg_ep(reg, "bad.com", "no-such-host.invalid", 8080, NULL);
    cr_registry_read_lock();
    const cr_endpoint_t *ep = cr_route_pool(cr_registry_lookup(reg, "v6.com", 6, "", 0))->endpoints[0];
    assert_string_equal(ep->addr, "[::1]:8080");
    assert_int_equal(ep->sockaddr.sa.sa_family, AF_INET6);
    ep = cr_route_pool(cr_registry_lookup(reg, "name.com", 8, "", 0))->endpoints[0];
    assert_true(ep->sockaddr_len > 0);
    ep = cr_route_pool(cr_registry_lookup(reg, "bad.com", 7, "", 0))->endpoints[0];
    assert_int_equal(ep->sockaddr_len, 0);
    cr_registry_read_unlock();
}

static void test_lb_algo_switches_and_sticks(void **state)
{
    cr_registry_t *reg = *state;
    reg_ep(reg, "a.com", "10.0.0.1", 80, NULL);
    cr_registry_read_lock();
    const cr_route_t *r = cr_registry_lookup(reg, "a.com", 5, "", 0);
    assert_int_equal(atomic_load(&r->lb_algo), CR_LB_ROUND_ROBIN);
    cr_registry_read_unlock();
    reg_json(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"],\"options\":{\"loadbalancing\":\"least-connection\"}}", 1);
    reg_ep(reg, "a.com", "10.0.0.3", 80, NULL); /* no option: does not reset */
    reg_json(reg, "{\"host\":\"10.0.0.4\",\"port\":80,\"uris\":[\"a.com\"],\"options\":{\"loadbalancing\":\"bogus\"}}", 1);
    cr_registry_read_lock();
    r = cr_registry_lookup(reg, "a.com", 5, "", 0);
    assert_int_equal(atomic_load(&r->lb_algo), CR_LB_LEAST_CONNECTION);
    assert_int_equal(cr_route_pool(r)->endpoints[1]->lb_algo, CR_LB_LEAST_CONNECTION);
    assert_int_equal(cr_route_pool(r)->endpoints[0]->lb_algo, -1);
    cr_registry_read_unlock();
}

static void test_503_mode_keeps_empty_route_until_timeout(void **state)
{
    (void)state;
    cr_registry_t *reg = new_registry(true, 10 * SEC);
    reg_ep(reg, "a.com", "10.0.0.1", 80, NULL);
    assert_int_equal(unreg_json(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"]}", 100 * SEC), 1);
    ASSERT_FINDS(reg, "a.com", "/", "a.com");
    cr_registry_prune(reg, 105 * SEC);
    ASSERT_FINDS(reg, "a.com", "/", "a.com");
    /* A register refills it and resets the clock. */
    reg_json(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"]}", 106 * SEC);
    char addrs[64];
    pool_addrs(reg, "a.com", "/", addrs, sizeof addrs);
    assert_string_equal(addrs, "10.0.0.2:80");
    unreg_json(reg, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"]}", 107 * SEC);
    cr_registry_prune(reg, 116 * SEC);
    ASSERT_FINDS(reg, "a.com", "/", "a.com");
    cr_registry_prune(reg, 118 * SEC);
    ASSERT_FINDS(reg, "a.com", "/", NULL);
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.routes, 0);
    cr_registry_destroy(reg);
}

static void test_find_by_id_hits_instance_id_and_address(void **state)
{
    cr_registry_t *reg = *state;
    char id[32];
    for (int i = 0; i < 50; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.0.1.%d", i);
        snprintf(id, sizeof id, "inst-%d", i);
        reg_ep(reg, "a.com", host, 8000 + i, i % 5 ? id : NULL);
    }
    cr_registry_read_lock();
    const cr_pool_t *p = cr_route_pool(cr_registry_lookup(reg, "a.com", 5, "", 0));
    assert_int_equal(p->len, 50);
    for (int i = 0; i < 50; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.1.%d:%d", i, 8000 + i);
        snprintf(id, sizeof id, "inst-%d", i);
        assert_ptr_equal(cr_pool_find_by_id(p, addr, strlen(addr)), p->endpoints[i]);
        if (i % 5)
            assert_ptr_equal(cr_pool_find_by_id(p, id, strlen(id)), p->endpoints[i]);
        else
            assert_null(cr_pool_find_by_id(p, id, strlen(id)));
    }
    assert_null(cr_pool_find_by_id(p, "inst-1x", 7));
    assert_null(cr_pool_find_by_id(p, "inst-1", 5)); /* length matters */
    assert_null(cr_pool_find_by_id(p, "", 0));
    assert_null(cr_pool_find_by_id(p, "inst-1\0", 7)); /* embedded NUL */
    cr_registry_read_unlock();
}

static void test_find_by_app_index_compares_strings(void **state)
{
    cr_registry_t *reg = *state;
    const char *guid = "6d0e1d3a-0a4b-4b5c-9a57-0f7a7e8f2a11";
    char json[512];
    snprintf(json, sizeof json, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"%s\",\"private_instance_index\":\"1\"}", guid);
    reg_json(reg, json, 1);
    snprintf(json, sizeof json, "{\"host\":\"10.0.0.2\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"%s\",\"private_instance_index\":\"01\"}", guid);
    reg_json(reg, json, 1);
    cr_registry_read_lock();
    const cr_pool_t *p = cr_route_pool(cr_registry_lookup(reg, "a.com", 5, "", 0));
    assert_ptr_equal(cr_pool_find_by_app_index(p, guid, strlen(guid), "1", 1), p->endpoints[0]);
    assert_ptr_equal(cr_pool_find_by_app_index(p, guid, strlen(guid), "01", 2), p->endpoints[1]);
    assert_null(cr_pool_find_by_app_index(p, guid, strlen(guid), "2", 1));
    assert_null(cr_pool_find_by_app_index(p, "other", 5, "1", 1));
    cr_registry_read_unlock();
}

static void test_one_message_registers_every_uri(void **state)
{
    cr_registry_t *reg = *state;
    reg_json(reg, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\",\"b.com/x\",\"a.com\"]}", 1);
    ASSERT_FINDS(reg, "a.com", "/", "a.com");
    ASSERT_FINDS(reg, "b.com", "/x", "b.com/x");
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    assert_int_equal(st.routes, 2);
    assert_int_equal(st.endpoints, 2);
    /* No usable uri (only a path) is an error. */
    cr_register_msg_t m = msg_of("{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"/only-path\"]}");
    assert_int_equal(cr_registry_register(reg, &m, 1), CR_EBAD);
    cr_register_msg_deinit(&m);
}

static void visit_count(void *arg, const cr_route_t *route, const cr_pool_t *pool)
{
    (void)route;
    size_t *n = arg;
    n[0]++;
    n[1] += pool->len;
}

static void test_for_each_route_visits_all(void **state)
{
    cr_registry_t *reg = *state;
    for (int i = 0; i < 300; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "h%d.com/p%d", i % 100, i);
        reg_ep(reg, uri, "10.0.0.1", 80, NULL);
        reg_ep(reg, uri, "10.0.0.2", 80, NULL);
    }
    size_t n[2] = { 0, 0 };
    cr_registry_for_each_route(reg, visit_count, n);
    assert_int_equal(n[0], 300);
    assert_int_equal(n[1], 600);
}

static void test_remove_endpoint_by_identity(void **state)
{
    cr_registry_t *reg = *state;
    reg_json(reg, "{\"host\":\"10.0.0.1\",\"tls_port\":443,\"uris\":[\"a.com/x\"]}", 1);
    reg_json(reg, "{\"host\":\"10.0.0.2\",\"tls_port\":443,\"uris\":[\"a.com/x\"]}", 1);
    cr_registry_read_lock();
    cr_endpoint_t *ep = cr_endpoint_retain(cr_route_pool(cr_registry_lookup(reg, "a.com", 5, "/x", 2))->endpoints[0]);
    cr_registry_read_unlock();
    assert_int_equal(cr_registry_remove_endpoint(reg, ep), 1);
    assert_int_equal(cr_registry_remove_endpoint(reg, ep), 0);
    char addrs[64];
    pool_addrs(reg, "a.com", "/x", addrs, sizeof addrs);
    assert_string_equal(addrs, "10.0.0.2:443");
    cr_endpoint_release(ep);
}

int main(void)
{
    cr_log_set_level(CR_LOG_WARN);
    cr_registry_reader_thread_register();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_host_is_normalised, setup, teardown),
        cmocka_unit_test(test_503_mode_without_timeout_removes_emptied_route_at_once),
        cmocka_unit_test_setup_teardown(test_path_is_normalised, setup, teardown),
        cmocka_unit_test_setup_teardown(test_longest_path_wins_on_segment_boundaries, setup, teardown),
        cmocka_unit_test(test_empty_deeper_pool_never_hides_live_parent),
        cmocka_unit_test_setup_teardown(test_wildcards_multi_level_most_specific_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exact_host_beats_wildcard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_keeps_endpoint_replace_keeps_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_instance_id_on_same_address_takes_over_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unregister_ignores_instance_id_and_other_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_port_is_the_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_addresses_resolve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lb_algo_switches_and_sticks, setup, teardown),
        cmocka_unit_test(test_503_mode_keeps_empty_route_until_timeout),
        cmocka_unit_test_setup_teardown(test_find_by_id_hits_instance_id_and_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_by_app_index_compares_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_message_registers_every_uri, setup, teardown),
        cmocka_unit_test_setup_teardown(test_for_each_route_visits_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_endpoint_by_identity, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cr_registry_reader_thread_unregister();
    return rc;
}
