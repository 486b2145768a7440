/* Unit tests for router/persistence.c and the policy in config/persistence.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/defs.h"
#include "config/config.h"
#include "config/persistence.h"
#include "registry/message.h"
#include "router/persistence.h"

static void policy_with(cr_persist_policy_t *p, const char *secret, const char *previous)
{
    cr_persist_policy_defaults(p);
    p->mode = CR_PERSIST_INSERT;
    assert_int_equal(cr_persist_policy_set(p, CR_PK_SECRET, secret, true, NULL, 0), 0);
    assert_int_equal(cr_persist_policy_set(p, CR_PK_PREVIOUS_SECRET, previous, true, NULL, 0), 0);
}

static int encode(const cr_persist_keys_t *k, const cr_persist_cookie_t *c, char *out)
{
    int n = cr_persist_cookie_encode(k, c, out, CR_PERSIST_COOKIE_MAX);
    assert_true(n > 0);
    out[n] = '\0';
    return n;
}

/* --- policy ----------------------------------------------------------------- */

static void test_policy_defaults_match_the_issue(void **state)
{
    (void)state;
    cr_persist_policy_t p;
    cr_persist_policy_defaults(&p);
    assert_int_equal(p.mode, CR_PERSIST_VCAP);
    assert_true(p.http_only && p.indirect && p.fallback);
    assert_false(p.secure || p.nocache || p.learn_from_requests || p.fallback_to_source_ip);
    assert_int_equal(p.table_size, 100000);
    assert_int_equal(p.ip_prefix, 32);
    assert_string_equal(p.path, "/");
    assert_int_equal(p.set, 0);
    p.mode = CR_PERSIST_INSERT;
    assert_string_equal(cr_persist_policy_cookie(&p), "CROUTERID");
    p.mode = CR_PERSIST_PREFIX;
    assert_string_equal(cr_persist_policy_cookie(&p), "JSESSIONID");
}

static void test_policy_set_parses_every_kind_and_rejects_bad_values(void **state)
{
    (void)state;
    cr_persist_policy_t p;
    char err[256];
    cr_persist_policy_defaults(&p);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_MODE, "learn", true, err, sizeof err), 0);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_MAX_IDLE, "30m", true, err, sizeof err), 0);
    assert_int_equal(p.max_idle_ns, 30LL * 60 * CR_NS_PER_SEC);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_SECURE, "true", true, err, sizeof err), 0);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_SAME_SITE, "Lax", true, err, sizeof err), 0);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_TABLE_SIZE, "500", true, err, sizeof err), 0);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_TRUSTED_PROXIES, "10.0.0.0/8", true, err,
                                           sizeof err), 0);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_TRUSTED_PROXIES, "fd00::/8", false, err,
                                           sizeof err), 0);
    assert_int_equal(p.trusted_proxies_len, 2);
    assert_true(p.set & (1u << CR_PK_MODE));

    assert_int_equal(cr_persist_policy_set(&p, CR_PK_MODE, "sticky", true, err, sizeof err), CR_EBAD);
    assert_non_null(strstr(err, "session_persistence.mode"));
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_MAX_IDLE, "5x", true, err, sizeof err), CR_EBAD);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_COOKIE, "a;b", true, err, sizeof err), CR_EBAD);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_PATH, "/a\r\nX: y", true, err, sizeof err),
                     CR_EBAD);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_IP_PREFIX, "33", true, err, sizeof err), CR_EBAD);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_TRUSTED_PROXIES, "10.0.0.0/40", true, err,
                                           sizeof err), CR_EBAD);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_SECRET, "hunter2hunter2", true, err, sizeof err),
                     0);

    cr_persist_policy_defaults(&p);
    p.mode = CR_PERSIST_HEADER;
    assert_int_equal(cr_persist_policy_validate(&p, err, sizeof err), CR_EBAD);
    strcpy(p.header, "X-User");
    assert_int_equal(cr_persist_policy_validate(&p, err, sizeof err), 0);
}

static void test_policy_merge_takes_only_keys_the_route_set(void **state)
{
    (void)state;
    cr_persist_policy_t global, route, eff;
    cr_persist_policy_defaults(&global);
    assert_int_equal(cr_persist_policy_set(&global, CR_PK_SECRET, "s3cret", true, NULL, 0), 0);
    assert_int_equal(cr_persist_policy_set(&global, CR_PK_MAX_LIFE, "1h", true, NULL, 0), 0);
    cr_persist_policy_defaults(&route);
    assert_int_equal(cr_persist_policy_set(&route, CR_PK_MODE, "insert", true, NULL, 0), 0);
    assert_int_equal(cr_persist_policy_set(&route, CR_PK_COOKIE, "SRV", true, NULL, 0), 0);
    cr_persist_policy_merge(&eff, &global, &route);
    assert_int_equal(eff.mode, CR_PERSIST_INSERT);
    assert_string_equal(eff.cookie, "SRV");
    assert_string_equal(eff.secret, "s3cret");
    assert_int_equal(eff.max_life_ns, 3600LL * CR_NS_PER_SEC);
    assert_true(cr_persist_policy_differs(&eff, CR_PK_COOKIE));
    assert_false(cr_persist_policy_differs(&eff, CR_PK_PATH));
}

/* --- cookie codec ---------------------------------------------------------------- */

static void test_cookie_round_trips_with_and_without_times(void **state)
{
    (void)state;
    cr_persist_policy_t p;
    cr_persist_keys_t k;
    policy_with(&p, "secret-one", "");
    cr_persist_keys_init(&k, &p);
    char v[CR_PERSIST_COOKIE_MAX + 1];
    cr_persist_cookie_t c = {.id = 0x0123456789abcdefULL}, d;
    encode(&k, &c, v);
    assert_int_equal(cr_persist_cookie_decode(&k, v, strlen(v), &d), 0);
    assert_true(d.id == c.id);
    assert_false(d.has_times);
    c.has_times = true;
    c.first_seen_s = 1700000000;
    c.last_seen_s = 1700000100;
    encode(&k, &c, v);
    for (const char *s = v; *s; s++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *s));
    assert_int_equal(cr_persist_cookie_decode(&k, v, strlen(v), &d), 0);
    assert_true(d.has_times && d.first_seen_s == c.first_seen_s && d.last_seen_s == c.last_seen_s);
    assert_int_equal(d.key_idx, 0);
}

static void test_cookie_tampered_forged_retargeted_or_extended_is_rejected(void **state)
{
    (void)state;
    cr_persist_policy_t p, other;
    cr_persist_keys_t k, ko;
    policy_with(&p, "secret-one", "");
    policy_with(&other, "attacker", "");
    cr_persist_keys_init(&k, &p);
    cr_persist_keys_init(&ko, &other);
    char v[CR_PERSIST_COOKIE_MAX + 1];
    cr_persist_cookie_t c = {.id = 42, .has_times = true, .first_seen_s = 100, .last_seen_s = 200};
    cr_persist_cookie_t d;
    int n = encode(&k, &c, v);

    /* Every single-character change fails. */
    for (int i = 0; i < n; i++) {
        char t[CR_PERSIST_COOKIE_MAX + 1];
        memcpy(t, v, (size_t)n + 1);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        assert_int_equal(cr_persist_cookie_decode(&k, t, (size_t)n, &d), CR_EBAD);
    }
    /* Forged with another key; retargeted (other id) or extended (newer
     * times) under the attacker's key are rejected by ours. */
    cr_persist_cookie_t f = c;
    f.id = 43;
    encode(&ko, &f, v);
    assert_int_equal(cr_persist_cookie_decode(&k, v, strlen(v), &d), CR_EBAD);
    f = c;
    f.last_seen_s = 999999;
    encode(&ko, &f, v);
    assert_int_equal(cr_persist_cookie_decode(&k, v, strlen(v), &d), CR_EBAD);
    /* Truncated, too long, garbage, empty. */
    n = encode(&k, &c, v);
    assert_int_equal(cr_persist_cookie_decode(&k, v, (size_t)n - 1, &d), CR_EBAD);
    assert_int_equal(cr_persist_cookie_decode(&k, "", 0, &d), CR_EBAD);
    assert_int_equal(cr_persist_cookie_decode(&k, "!!!!", 4, &d), CR_EBAD);
    assert_int_equal(cr_persist_cookie_decode(&k, "10.0.0.1:8080", 13, &d), CR_EBAD);
}

static void test_cookie_secret_rotation_accepts_previous_and_issues_current(void **state)
{
    (void)state;
    cr_persist_policy_t old_p, new_p, later;
    cr_persist_keys_t ko, kn, kl;
    policy_with(&old_p, "old-secret", "");
    policy_with(&new_p, "new-secret", "old-secret");
    policy_with(&later, "newer-secret", "new-secret");
    cr_persist_keys_init(&ko, &old_p);
    cr_persist_keys_init(&kn, &new_p);
    cr_persist_keys_init(&kl, &later);
    char v[CR_PERSIST_COOKIE_MAX + 1];
    cr_persist_cookie_t c = {.id = 7}, d;
    encode(&ko, &c, v);
    assert_int_equal(cr_persist_cookie_decode(&kn, v, strlen(v), &d), 0);
    assert_int_equal(d.key_idx, 1);
    assert_int_equal(cr_persist_cookie_decode(&kl, v, strlen(v), &d), CR_EBAD);
    encode(&kn, &c, v);
    assert_int_equal(cr_persist_cookie_decode(&kn, v, strlen(v), &d), 0);
    assert_int_equal(d.key_idx, 0);
}

static void test_cookie_max_idle_and_max_life(void **state)
{
    (void)state;
    cr_persist_policy_t p;
    cr_persist_policy_defaults(&p);
    cr_persist_cookie_t c = {.id = 1, .has_times = true, .first_seen_s = 1000, .last_seen_s = 1000};
    assert_false(cr_persist_cookie_expired(&c, &p, 999999));
    p.max_idle_ns = 10 * CR_NS_PER_SEC;
    assert_false(cr_persist_cookie_expired(&c, &p, 1009));
    assert_true(cr_persist_cookie_expired(&c, &p, 1010));
    c.last_seen_s = 1005;
    assert_false(cr_persist_cookie_expired(&c, &p, 1010));
    p.max_idle_ns = 0;
    p.max_life_ns = 30 * CR_NS_PER_SEC;
    c.last_seen_s = 1029;
    assert_false(cr_persist_cookie_expired(&c, &p, 1029));
    assert_true(cr_persist_cookie_expired(&c, &p, 1030));
    c.has_times = false;
    assert_true(cr_persist_cookie_expired(&c, &p, 1001));
}

static void test_identity_reveals_neither_address_nor_instance_and_depends_on_the_key(void **state)
{
    (void)state;
    cr_persist_policy_t a, b;
    cr_persist_keys_t ka, kb;
    policy_with(&a, "alpha", "");
    policy_with(&b, "beta", "");
    cr_persist_keys_init(&ka, &a);
    cr_persist_keys_init(&kb, &b);
    uint64_t x = cr_persist_identity(&ka, 0, "10.0.0.1:8080", "inst-1");
    assert_true(x != cr_persist_identity(&kb, 0, "10.0.0.1:8080", "inst-1"));
    assert_true(x != cr_persist_identity(&ka, 0, "10.0.0.1:8080", "inst-2"));
    assert_true(x != cr_persist_identity(&ka, 0, "10.0.0.1:8081", "inst-1"));
    assert_true(x == cr_persist_identity(&ka, 0, "10.0.0.1:8080", "inst-1"));

    char tok[CR_PERSIST_ID_CHARS];
    uint64_t back = 0;
    cr_persist_id_token(x, tok);
    assert_int_equal(cr_persist_id_token_parse(tok, sizeof tok, &back), 0);
    assert_true(back == x);
    assert_null(memmem(tok, sizeof tok, "10.0", 4));
    assert_int_equal(cr_persist_id_token_parse(tok, sizeof tok - 1, &back), CR_EBAD);
}

static void test_find_identity_and_hash_in_a_pool(void **state)
{
    (void)state;
    cr_persist_policy_t p;
    cr_persist_keys_t k;
    policy_with(&p, "pool", "");
    cr_persist_keys_init(&k, &p);
    cr_endpoint_t eps[3];
    memset(eps, 0, sizeof eps);
    char *addrs[3] = {"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"};
    cr_pool_t *pool = calloc(1, sizeof *pool + 3 * sizeof(cr_endpoint_t *));
    pool->len = 3;
    for (int i = 0; i < 3; i++) {
        eps[i].addr = addrs[i];
        pool->endpoints[i] = &eps[i];
    }
    uint64_t id = cr_persist_identity(&k, 0, "10.0.0.2:1", NULL);
    assert_ptr_equal(cr_persist_find_identity(pool, &k, 0, id), &eps[1]);
    assert_null(cr_persist_find_identity(pool, &k, 0, id + 1));
    uint64_t h = cr_persist_endpoint_hash(&eps[2]);
    assert_ptr_equal(cr_persist_find_hash(pool, h), &eps[2]);
    free(pool);
}

/* --- consistent hashing ------------------------------------------------------------ */

#define KEYS 100000

static void test_rendezvous_adding_one_of_ten_moves_at_most_a_tenth_plus_two_percent(void **state)
{
    (void)state;
    uint64_t h[11];
    for (int i = 0; i < 11; i++) {
        char a[32];
        snprintf(a, sizeof a, "10.1.0.%d:61000", i + 1);
        h[i] = cr_persist_hash(a, strlen(a), 1);
    }
    size_t moved = 0, to_new = 0;
    for (uint32_t key = 0; key < KEYS; key++) {
        uint64_t kh = cr_persist_hash(&key, sizeof key, 99);
        size_t before = cr_persist_hrw_index(h, 10, kh);
        size_t after = cr_persist_hrw_index(h, 11, kh);
        if (before != after) {
            moved++;
            if (after == 10)
                to_new++;
        }
    }
    assert_true(moved == to_new);                 /* keys only move to the new endpoint */
    assert_true(moved <= KEYS / 10 + KEYS * 2 / 100);
    assert_true(moved >= KEYS / 20);              /* and it does get its share */
}

static void test_rendezvous_removing_one_moves_only_its_keys(void **state)
{
    (void)state;
    uint64_t h[10], rest[9];
    for (int i = 0; i < 10; i++) {
        char a[32];
        snprintf(a, sizeof a, "10.2.0.%d:61000", i + 1);
        h[i] = cr_persist_hash(a, strlen(a), 1);
    }
    const size_t gone = 4;
    for (size_t i = 0, j = 0; i < 10; i++)
        if (i != gone)
            rest[j++] = h[i];
    size_t moved = 0, owned = 0;
    for (uint32_t key = 0; key < KEYS; key++) {
        uint64_t kh = cr_persist_hash(&key, sizeof key, 7);
        size_t before = cr_persist_hrw_index(h, 10, kh);
        uint64_t after = rest[cr_persist_hrw_index(rest, 9, kh)];
        if (before == gone)
            owned++;
        else if (h[before] != after)
            moved++;
    }
    assert_int_equal(moved, 0);
    assert_true(owned > KEYS / 20 && owned < KEYS / 5);
}

/* --- client address ------------------------------------------------------------------ */

static void ip(const char *s, uint8_t out[16])
{
    assert_int_equal(cr_persist_parse_ip(s, strlen(s), out), 0);
}

static void test_xff_rightmost_untrusted_entry_wins_only_behind_a_trusted_peer(void **state)
{
    (void)state;
    cr_persist_policy_t p;
    cr_persist_policy_defaults(&p);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_TRUSTED_PROXIES, "10.0.0.0/8", true, NULL, 0), 0);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_TRUSTED_PROXIES, "192.168.1.1", false, NULL, 0), 0);
    uint8_t peer[16], out[16], want[16];
    const char *vals[2] = {"6.6.6.6, 1.2.3.4", "192.168.1.1, 10.9.9.9"};
    size_t lens[2] = {strlen(vals[0]), strlen(vals[1])};

    ip("10.0.0.5", peer);
    cr_persist_client_addr(&p, peer, vals, lens, 2, out);
    ip("1.2.3.4", want);
    assert_memory_equal(out, want, 16); /* 6.6.6.6 is what the client claimed: ignored */

    ip("8.8.8.8", peer); /* untrusted peer: its X-Forwarded-For is not believed */
    cr_persist_client_addr(&p, peer, vals, lens, 2, out);
    assert_memory_equal(out, peer, 16);

    const char *all_trusted[1] = {"10.1.1.1,10.2.2.2"};
    size_t l1 = strlen(all_trusted[0]);
    ip("10.0.0.5", peer);
    cr_persist_client_addr(&p, peer, all_trusted, &l1, 1, out);
    ip("10.1.1.1", want);
    assert_memory_equal(out, want, 16);

    const char *junk[1] = {"1.2.3.4, junk"};
    size_t l2 = strlen(junk[0]);
    cr_persist_client_addr(&p, peer, junk, &l2, 1, out);
    assert_memory_equal(out, peer, 16);

    cr_persist_client_addr(&p, peer, NULL, NULL, 0, out);
    assert_memory_equal(out, peer, 16);
}

static void test_ip_prefix_masks_ipv4_and_ipv6(void **state)
{
    (void)state;
    uint8_t a[16], b[16], c[16], d[16];
    ip("203.0.113.7", a);
    ip("203.0.113.200", b);
    assert_true(cr_persist_ip_key(a, 32, 32 + 96u) != cr_persist_ip_key(b, 32, 32 + 96u));
    assert_true(cr_persist_ip_key(a, 24, 24 + 96u) == cr_persist_ip_key(b, 24, 24 + 96u));
    ip("2001:db8::1", c);
    ip("2001:db8::ff", d);
    assert_true(cr_persist_ip_key(c, 32, 32 + 96u) != cr_persist_ip_key(d, 32, 32 + 96u));
    assert_true(cr_persist_ip_key(c, 24, 24 + 96u) == cr_persist_ip_key(d, 24, 24 + 96u));
    ip("[2001:db8::1]", d);
    assert_memory_equal(c, d, 16);

    cr_cidr_t n;
    assert_int_equal(cr_cidr_parse("2001:db8::/32", &n), 0);
    assert_true(cr_cidr_contains(&n, c));
    assert_false(cr_cidr_contains(&n, a));
    char txt[64];
    assert_int_equal(cr_cidr_parse("10.1.2.3/16", &n), 0);
    cr_cidr_format(&n, txt, sizeof txt);
    assert_string_equal(txt, "10.1.0.0/16");
}

/* --- learn table ------------------------------------------------------------------ */

static cr_persist_learned_t binding(uint64_t route, uint64_t value, uint64_t ep)
{
    cr_persist_learned_t b = {.route = route, .value = value, .endpoint = ep, .ts_ms = 1};
    return b;
}

static void test_learn_table_evicts_least_recently_used_beyond_capacity(void **state)
{
    (void)state;
    cr_persist_learn_t *t = cr_persist_learn_create(64);
    uint64_t ep = 0;
    for (uint64_t v = 1; v <= 1000; v++) {
        cr_persist_learned_t b = binding(1, v, v * 10);
        cr_persist_learn_put(t, &b, (int64_t)v, 0, false);
        /* keep value 1 hot */
        assert_true(cr_persist_learn_get(t, 1, 1, (int64_t)v, 0, &ep));
        assert_true(ep == 10);
    }
    assert_true(cr_persist_learn_size(t) <= 64);
    assert_true(cr_persist_learn_get(t, 1, 1000, 2000, 0, &ep));
    assert_true(ep == 10000);
    assert_false(cr_persist_learn_get(t, 1, 2, 2000, 0, &ep));
    assert_false(cr_persist_learn_get(t, 2, 1000, 2000, 0, &ep)); /* other route */
    cr_persist_learn_destroy(t);
}

static void test_learn_table_expires_idle_entries_and_refreshes_on_use(void **state)
{
    (void)state;
    cr_persist_learn_t *t = cr_persist_learn_create(1000);
    cr_persist_learned_t b = binding(5, 6, 7);
    uint64_t ep = 0;
    cr_persist_learn_put(t, &b, 0, 0, true);
    assert_true(cr_persist_learn_get(t, 5, 6, 90, 100, &ep));
    assert_true(cr_persist_learn_get(t, 5, 6, 180, 100, &ep)); /* refreshed at 90 */
    assert_false(cr_persist_learn_get(t, 5, 6, 281, 100, &ep));
    assert_int_equal(cr_persist_learn_size(t), 0);
    b = binding(5, 6, 8);
    cr_persist_learn_put(t, &b, 300, 0, false);
    assert_true(cr_persist_learn_get(t, 5, 6, 301, 100, &ep));
    assert_true(ep == 8);

    cr_persist_learned_t out[4];
    assert_int_equal(cr_persist_learn_take_outbox(t, out, 4), 1);
    assert_true(out[0].endpoint == 7);
    assert_int_equal(cr_persist_learn_take_outbox(t, out, 4), 0);
    cr_persist_learn_destroy(t);
}

static void test_learned_wire_format_round_trips_and_rejects_junk(void **state)
{
    (void)state;
    cr_persist_learned_t b = {.route = 0xfedcba9876543210ULL, .value = 1, .endpoint = UINT64_MAX,
                              .ts_ms = 1700000000123LL}, d;
    char buf[128];
    int n = cr_persist_learned_encode(&b, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(cr_persist_learned_decode(buf, (size_t)n, &d), 0);
    assert_memory_equal(&b, &d, sizeof b);
    assert_int_equal(cr_persist_learned_decode(buf, (size_t)n - 20, &d), CR_EBAD);
    assert_int_equal(cr_persist_learned_decode("2 x", 3, &d), CR_EBAD);
    assert_int_equal(cr_persist_learned_decode("", 0, &d), CR_EBAD);
}

static void test_value_hash_is_keyed_and_per_route(void **state)
{
    (void)state;
    cr_persist_policy_t a, b;
    cr_persist_keys_t ka, kb;
    policy_with(&a, "shared", "");
    policy_with(&b, "other", "");
    cr_persist_keys_init(&ka, &a);
    cr_persist_keys_init(&kb, &b);
    uint64_t x = cr_persist_value_hash(&ka, 1, "abc", 3);
    assert_true(x == cr_persist_value_hash(&ka, 1, "abc", 3));
    assert_true(x != cr_persist_value_hash(&ka, 2, "abc", 3));
    assert_true(x != cr_persist_value_hash(&kb, 1, "abc", 3));
}


static void test_ip6_prefix_defaults_to_ip_prefix_plus_96_and_can_say_64(void **state)
{
    (void)state;
    cr_persist_policy_t p;
    char err[256];
    cr_persist_policy_defaults(&p);
    assert_int_equal(cr_persist_policy_ip6_prefix(&p), 128);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_IP_PREFIX, "24", true, err, sizeof err), 0);
    assert_int_equal(cr_persist_policy_ip6_prefix(&p), 120); /* derived, as before the key */
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_IP6_PREFIX, "64", true, err, sizeof err), 0);
    assert_int_equal(cr_persist_policy_ip6_prefix(&p), 64);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_IP6_PREFIX, "0", true, err, sizeof err), 0);
    assert_int_equal(cr_persist_policy_ip6_prefix(&p), 0);
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_IP6_PREFIX, "129", true, err, sizeof err),
                     CR_EBAD);
    assert_non_null(strstr(err, "session_persistence.ip6_prefix"));
    assert_int_equal(cr_persist_policy_set(&p, CR_PK_IP6_PREFIX, "-1", true, err, sizeof err),
                     CR_EBAD);
    assert_true(cr_persist_policy_differs(&p, CR_PK_IP6_PREFIX));

    /* A route's ip6_prefix overrides; a route giving only ip_prefix keeps
     * the global ip6_prefix when one was given, else derives it. */
    cr_persist_policy_t global, route, eff;
    cr_persist_policy_defaults(&global);
    cr_persist_policy_defaults(&route);
    assert_int_equal(cr_persist_policy_set(&route, CR_PK_IP_PREFIX, "16", true, NULL, 0), 0);
    cr_persist_policy_merge(&eff, &global, &route);
    assert_int_equal(cr_persist_policy_ip6_prefix(&eff), 112);
    assert_int_equal(cr_persist_policy_set(&global, CR_PK_IP6_PREFIX, "56", true, NULL, 0), 0);
    cr_persist_policy_merge(&eff, &global, &route);
    assert_int_equal(cr_persist_policy_ip6_prefix(&eff), 56);
    assert_int_equal(eff.ip_prefix, 16);

    /* Masking: /64 joins one IPv6 /64; IPv4 keeps its own /N. */
    uint8_t a[16], b[16], c[16], v4a[16], v4b[16];
    assert_int_equal(cr_persist_parse_ip("2001:db8:1:2::1", 15, a), 0);
    assert_int_equal(cr_persist_parse_ip("2001:db8:1:2:ffff::9", 20, b), 0);
    assert_int_equal(cr_persist_parse_ip("2001:db8:1:3::1", 15, c), 0);
    assert_true(cr_persist_ip_key(a, 32, 64) == cr_persist_ip_key(b, 32, 64));
    assert_true(cr_persist_ip_key(a, 32, 64) != cr_persist_ip_key(c, 32, 64));
    assert_true(cr_persist_ip_key(a, 32, 128) != cr_persist_ip_key(b, 32, 128));
    assert_true(cr_persist_ip_key(a, 32, 0) == cr_persist_ip_key(c, 32, 0));
    assert_int_equal(cr_persist_parse_ip("198.51.100.1", 12, v4a), 0);
    assert_int_equal(cr_persist_parse_ip("198.51.100.77", 13, v4b), 0);
    assert_true(cr_persist_ip_key(v4a, 32, 64) != cr_persist_ip_key(v4b, 32, 64));
    assert_true(cr_persist_ip_key(v4a, 24, 64) == cr_persist_ip_key(v4b, 24, 64));
    assert_true(cr_persist_ip_key(v4a, 24, 0) != cr_persist_ip_key(a, 24, 0));

    /* The same keys from YAML and from a register message. */
    const char *yaml = "session_persistence:\n  mode: source_ip\n  ip_prefix: 24\n"
                       "  ip6_prefix: 64\n";
    cr_config_t *cfg = cr_config_load_string(yaml, strlen(yaml), "t.yml", err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cr_persist_policy_ip6_prefix(&cfg->session_persistence), 64);
    cr_config_destroy(cfg);
    const char *bad = "session_persistence:\n  ip6_prefix: 200\n";
    assert_null(cr_config_load_string(bad, strlen(bad), "t.yml", err, sizeof err));
    assert_non_null(strstr(err, "ip6_prefix"));
    const char *msg = "{\"host\":\"h\",\"port\":1,\"uris\":[\"a\"],\"options\":"
                      "{\"session_persistence\":{\"mode\":\"source_ip\",\"ip6_prefix\":48}}}";
    cr_register_msg_t m;
    assert_int_equal(cr_register_msg_decode(msg, strlen(msg), &m, err, sizeof err), 0);
    assert_non_null(m.persistence);
    assert_int_equal(cr_persist_policy_ip6_prefix(m.persistence), 48);
    assert_true(m.persistence->set & (1u << CR_PK_IP6_PREFIX));
    cr_register_msg_deinit(&m);
}

static void test_learn_repeats_are_published_at_most_once_a_second(void **state)
{
    (void)state;
    const int64_t ms = 1000 * 1000;
    cr_persist_learn_t *t = cr_persist_learn_create(1000);
    cr_persist_learned_t out[8];
    cr_persist_learned_t b = binding(1, 2, 3);
    cr_persist_learn_put(t, &b, 5 * ms, 0, true);      /* new: queued */
    cr_persist_learn_put(t, &b, 500 * ms, 0, true);    /* the same binding again: not */
    assert_int_equal(cr_persist_learn_take_outbox(t, out, 8), 1);
    b.endpoint = 4;
    cr_persist_learn_put(t, &b, 600 * ms, 0, true);    /* a new endpoint: queued at once */
    cr_persist_learn_put(t, &b, 1599 * ms, 0, true);   /* within a second of that: not */
    assert_int_equal(cr_persist_learn_take_outbox(t, out, 8), 1);
    assert_int_equal(out[0].endpoint, 4);
    cr_persist_learn_put(t, &b, 1601 * ms, 0, true);   /* a second later: again */
    assert_int_equal(cr_persist_learn_take_outbox(t, out, 8), 1);
    cr_persist_learn_put(t, &b, 1700 * ms, 0, false);  /* received from another router */
    cr_persist_learn_put(t, &b, 2000 * ms, 0, true);   /* ... counts as published */
    assert_int_equal(cr_persist_learn_take_outbox(t, out, 8), 0);
    uint64_t ep = 0;
    assert_true(cr_persist_learn_get(t, 1, 2, 2000 * ms, 0, &ep));
    assert_int_equal(ep, 4);
    cr_persist_learn_destroy(t);
}

static void test_learn_route_table_size_bounds_its_entries_in_the_shared_table(void **state)
{
    (void)state;
    cr_persist_learn_t *t = cr_persist_learn_create(16000);
    uint64_t ep = 0;
    /* Route 1 (table_size 160, i.e. 10 per shard) learns 5000 values;
     * route 2 (the global size) learns 3000 and keeps them all. */
    for (uint64_t v = 1; v <= 3000; v++) {
        cr_persist_learned_t b = binding(2, v, 7);
        cr_persist_learn_put(t, &b, (int64_t)v, 16000, false);
    }
    for (uint64_t v = 1; v <= 5000; v++) {
        cr_persist_learned_t b = binding(1, v, 9);
        cr_persist_learn_put(t, &b, (int64_t)(3000 + v), 160, false);
        if (v >= 100 && v % 20 == 0) /* v = 100 stays recent: hits keep it */
            assert_true(cr_persist_learn_get(t, 1, 100, (int64_t)(3000 + v), 0, &ep));
    }
    uint32_t n1 = cr_persist_learn_route_size(t, 1);
    assert_true(n1 <= 160);
    assert_true(n1 >= 100); /* most shards full to their quota */
    assert_int_equal(cr_persist_learn_route_size(t, 2), 3000);
    assert_int_equal(cr_persist_learn_size(t), n1 + 3000);
    assert_true(cr_persist_learn_get(t, 1, 5000, 9000, 0, &ep)); /* newest kept */
    assert_int_equal(ep, 9);
    assert_true(cr_persist_learn_get(t, 1, 100, 9000, 0, &ep)); /* used recently: kept */
    assert_false(cr_persist_learn_get(t, 1, 1, 9000, 0, &ep)); /* old: its route evicted it */
    for (uint64_t v = 1; v <= 3000; v += 97)
        assert_true(cr_persist_learn_get(t, 2, v, 9000, 0, &ep)); /* untouched */

    /* A binding from another router (limit 0) obeys the quota last given. */
    for (uint64_t v = 10001; v <= 12000; v++) {
        cr_persist_learned_t b = binding(1, v, 9);
        cr_persist_learn_put(t, &b, 9000 + (int64_t)v, 0, false);
    }
    assert_true(cr_persist_learn_route_size(t, 1) <= 160);
    /* A route never seen here with limit 0: only the table's bound. */
    for (uint64_t v = 1; v <= 2000; v++) {
        cr_persist_learned_t b = binding(3, v, 9);
        cr_persist_learn_put(t, &b, 30000 + (int64_t)v, 0, false);
    }
    assert_int_equal(cr_persist_learn_route_size(t, 3), 2000);
    /* Idle expiry and removal keep the per-route counts right. */
    assert_false(cr_persist_learn_get(t, 3, 5, 1000000, 10, &ep));
    assert_int_equal(cr_persist_learn_route_size(t, 3), 1999);

    /* Quota 1 per shard (table_size 1..16): removing the last entry frees
     * the route's slot, and the next one takes it again. */
    cr_persist_learn_t *small = cr_persist_learn_create(16);
    for (uint64_t v = 1; v <= 200; v++) {
        cr_persist_learned_t b = binding(4 + v % 3, v, v);
        cr_persist_learn_put(small, &b, (int64_t)v, 1, false);
        assert_true(cr_persist_learn_size(small) <= 16);
    }
    for (uint64_t r = 4; r <= 6; r++)
        assert_true(cr_persist_learn_route_size(small, r) <= 16);
    cr_persist_learn_destroy(small);
    cr_persist_learn_destroy(t);
}

/* --- config block and register message ------------------------------------------ */

static void test_config_block_and_allow_route_flag_load(void **state)
{
    (void)state;
    const char *yaml = "session_persistence:\n"
                       "  mode: insert\n"
                       "  cookie: SRV\n"
                       "  max_idle: 30m\n"
                       "  secure: true\n"
                       "  trusted_proxies: [10.0.0.0/8, \"::1\"]\n"
                       "allow_route_session_persistence: false\n";
    char err[256] = "";
    cr_config_t *cfg = cr_config_load_string(yaml, strlen(yaml), "t.yml", err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->session_persistence.mode, CR_PERSIST_INSERT);
    assert_string_equal(cfg->session_persistence.cookie, "SRV");
    assert_int_equal(cfg->session_persistence.max_idle_ns, 1800LL * CR_NS_PER_SEC);
    assert_true(cfg->session_persistence.secure);
    assert_int_equal(cfg->session_persistence.trusted_proxies_len, 2);
    assert_false(cfg->allow_route_session_persistence);
    cr_config_destroy(cfg);

    cfg = cr_config_defaults();
    assert_true(cfg->allow_route_session_persistence);
    assert_int_equal(cfg->session_persistence.mode, CR_PERSIST_VCAP);
    cr_config_destroy(cfg);

    const char *bad = "session_persistence:\n  mode: header\n";
    assert_null(cr_config_load_string(bad, strlen(bad), "t.yml", err, sizeof err));
    assert_non_null(strstr(err, "header"));
    const char *unknown = "session_persistence:\n  modus: insert\n";
    assert_null(cr_config_load_string(unknown, strlen(unknown), "t.yml", err, sizeof err));
    assert_non_null(strstr(err, "modus"));
}

static void test_register_message_override_parsed_and_invalid_one_kept_apart(void **state)
{
    (void)state;
    const char *ok = "{\"host\":\"127.0.0.1\",\"port\":8080,\"uris\":[\"a.example\"],"
                     "\"options\":{\"session_persistence\":{\"mode\":\"insert\",\"cookie\":\"SRV\","
                     "\"max_idle\":\"30m\",\"secure\":true,\"table_size\":10,"
                     "\"trusted_proxies\":[\"10.0.0.0/8\"]}}}";
    cr_register_msg_t m;
    char err[128];
    assert_int_equal(cr_register_msg_decode(ok, strlen(ok), &m, err, sizeof err), 0);
    assert_non_null(m.persistence);
    assert_int_equal(m.persistence->mode, CR_PERSIST_INSERT);
    assert_true(m.persistence->secure);
    assert_int_equal(m.persistence->table_size, 10);
    assert_int_equal(m.persistence->max_idle_ns, 1800LL * CR_NS_PER_SEC);
    assert_true(m.persistence->set & (1u << CR_PK_COOKIE));
    assert_false(m.persistence->set & (1u << CR_PK_SECRET));
    cr_register_msg_deinit(&m);

    const char *bad = "{\"host\":\"127.0.0.1\",\"port\":8080,\"uris\":[\"a.example\"],"
                      "\"options\":{\"session_persistence\":{\"mode\":\"sticky\"}}}";
    assert_int_equal(cr_register_msg_decode(bad, strlen(bad), &m, err, sizeof err), 0);
    assert_null(m.persistence);
    assert_non_null(strstr(m.persistence_error, "mode"));
    cr_register_msg_deinit(&m);

    const char *dur_number = "{\"host\":\"h\",\"port\":1,\"uris\":[\"a\"],"
                             "\"options\":{\"session_persistence\":{\"max_idle\":30}}}";
    assert_int_equal(cr_register_msg_decode(dur_number, strlen(dur_number), &m, err, sizeof err), 0);
    assert_null(m.persistence);
    assert_true(m.persistence_error[0] != '\0');
    cr_register_msg_deinit(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_defaults_match_the_issue),
        cmocka_unit_test(test_policy_set_parses_every_kind_and_rejects_bad_values),
        cmocka_unit_test(test_policy_merge_takes_only_keys_the_route_set),
        cmocka_unit_test(test_cookie_round_trips_with_and_without_times),
        cmocka_unit_test(test_cookie_tampered_forged_retargeted_or_extended_is_rejected),
        cmocka_unit_test(test_cookie_secret_rotation_accepts_previous_and_issues_current),
        cmocka_unit_test(test_cookie_max_idle_and_max_life),
        cmocka_unit_test(test_identity_reveals_neither_address_nor_instance_and_depends_on_the_key),
        cmocka_unit_test(test_find_identity_and_hash_in_a_pool),
        cmocka_unit_test(test_rendezvous_adding_one_of_ten_moves_at_most_a_tenth_plus_two_percent),
        cmocka_unit_test(test_rendezvous_removing_one_moves_only_its_keys),
        cmocka_unit_test(test_xff_rightmost_untrusted_entry_wins_only_behind_a_trusted_peer),
        cmocka_unit_test(test_ip_prefix_masks_ipv4_and_ipv6),
        cmocka_unit_test(test_learn_table_evicts_least_recently_used_beyond_capacity),
        cmocka_unit_test(test_learn_table_expires_idle_entries_and_refreshes_on_use),
        cmocka_unit_test(test_learn_route_table_size_bounds_its_entries_in_the_shared_table),
        cmocka_unit_test(test_learn_repeats_are_published_at_most_once_a_second),
        cmocka_unit_test(test_ip6_prefix_defaults_to_ip_prefix_plus_96_and_can_say_64),
        cmocka_unit_test(test_learned_wire_format_round_trips_and_rejects_junk),
        cmocka_unit_test(test_value_hash_is_keyed_and_per_route),
        cmocka_unit_test(test_config_block_and_allow_route_flag_load),
        cmocka_unit_test(test_register_message_override_parsed_and_invalid_one_kept_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
