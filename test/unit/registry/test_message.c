/* test/unit/registry/test_message.c - router.register JSON decoding (registry/message.c).
 *
 * Inputs are copied to the end of a guarded page so an over-read faults.
 * The fast path (plain flat messages) is checked against the jansson-only
 * decoder on edge cases and on a few hundred thousand mutated messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/defs.h"
#include "registry/internal.h"
#include "registry/message.h"

/* Copies s to the end of a readable page followed by a PROT_NONE page. */
static const char *guarded(const char *s, size_t len, void **map_out, size_t *map_len)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (len + pg - 1) / pg + 1;
    char *m = mmap(NULL, (pages + 1) * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    mprotect(m + pages * pg, pg, PROT_NONE);
    char *start = m + pages * pg - len;
    memcpy(start, s, len);
    *map_out = m;
    *map_len = (pages + 1) * pg;
    return start;
}

static int decode(const char *json, cr_register_msg_t *out, char *err, size_t err_cap)
{
    void *m;
    size_t ml;
    size_t len = strlen(json);
    const char *p = guarded(json, len, &m, &ml);
    int rc = cr_register_msg_decode(p, len, out, err, err_cap);
    munmap(m, ml);
    return rc;
}

static void expect_bad(const char *json, const char *reason_part)
{
    cr_register_msg_t m;
    char err[128] = "";
    int rc = decode(json, &m, err, sizeof err);
    if (rc != CR_EBAD)
        fail_msg("accepted: %s", json);
    if (reason_part && !strstr(err, reason_part))
        fail_msg("reason '%s' lacks '%s' for %s", err, reason_part, json);
    /* Nothing to free, and the struct is left zeroed. */
    assert_null(m.host);
    assert_null(m.uris);
    assert_null(m.tags);
}

static void test_decodes_every_field(void **state)
{
    (void)state;
    const char *json =
        "{\"host\":\"10.0.0.1\",\"port\":61001,\"tls_port\":61443,"
        "\"uris\":[\"a.example.com\",\"b.example.com/path\"],"
        "\"app\":\"1b2c\",\"private_instance_id\":\"pid-1\",\"private_instance_index\":\"2\","
        "\"tags\":{\"component\":\"route-emitter\",\"process_id\":\"proc\"},"
        "\"stale_threshold_in_seconds\":30,\"route_service_url\":\"https://rs.example.com\","
        "\"server_cert_domain_san\":\"san.example.com\",\"isolation_segment\":\"iso\","
        "\"protocol\":\"http2\",\"availability_zone\":\"z1\",\"endpoint_updated_at_ns\":1700000000000000000,"
        "\"options\":{\"loadbalancing\":\"least-connection\"},\"unknown\":{\"x\":[1,2]}}";
    cr_register_msg_t m;
    char err[64];
    assert_int_equal(decode(json, &m, err, sizeof err), 0);
    assert_string_equal(m.host, "10.0.0.1");
    assert_int_equal(m.port, 61001);
    assert_int_equal(m.tls_port, 61443);
    assert_int_equal(m.uris_len, 2);
    assert_string_equal(m.uris[0], "a.example.com");
    assert_string_equal(m.uris[1], "b.example.com/path");
    assert_string_equal(m.app, "1b2c");
    assert_string_equal(m.private_instance_id, "pid-1");
    assert_string_equal(m.private_instance_index, "2");
    assert_true(m.has_tags);
    assert_int_equal(m.tags_len, 2);
    assert_string_equal(m.tags[0].key, "component");
    assert_string_equal(m.tags[0].value, "route-emitter");
    assert_string_equal(m.tags[1].key, "process_id");
    assert_int_equal(m.stale_threshold_in_seconds, 30);
    assert_string_equal(m.route_service_url, "https://rs.example.com");
    assert_string_equal(m.server_cert_domain_san, "san.example.com");
    assert_string_equal(m.isolation_segment, "iso");
    assert_string_equal(m.protocol, "http2");
    assert_string_equal(m.availability_zone, "z1");
    assert_int_equal(m.endpoint_updated_at_ns, 1700000000000000000LL);
    assert_int_equal(m.lb_algo, CR_LB_LEAST_CONNECTION);
    cr_register_msg_deinit(&m);
    assert_null(m.host);
}

static void test_minimal_message_leaves_optional_fields_empty(void **state)
{
    (void)state;
    cr_register_msg_t m;
    assert_int_equal(decode("{\"host\":\"h\",\"port\":80,\"uris\":[\"x.com\"],\"app\":\"\"}", &m, NULL, 0), 0);
    assert_null(m.app); /* "" is stored as NULL */
    assert_null(m.private_instance_id);
    assert_null(m.protocol);
    assert_false(m.has_tags);
    assert_int_equal(m.tls_port, 0);
    assert_int_equal(m.lb_algo, -1);
    assert_int_equal(m.stale_threshold_in_seconds, 0);
    cr_register_msg_deinit(&m);
}

static void test_keys_match_case_insensitively(void **state)
{
    (void)state;
    cr_register_msg_t m;
    const char *json = "{\"HOST\":\"h\",\"Port\":8080,\"URIs\":[\"x.com\"],\"Private_Instance_ID\":\"id\","
                       "\"TAGS\":{\"K\":\"V\"},\"Options\":{\"LoadBalancing\":\"round-robin\"}}";
    assert_int_equal(decode(json, &m, NULL, 0), 0);
    assert_string_equal(m.host, "h");
    assert_int_equal(m.port, 8080);
    assert_int_equal(m.uris_len, 1);
    assert_string_equal(m.private_instance_id, "id");
    /* Tag keys are data, not field names: kept as written. */
    assert_string_equal(m.tags[0].key, "K");
    assert_int_equal(m.lb_algo, CR_LB_ROUND_ROBIN);
    cr_register_msg_deinit(&m);
}

static void test_last_duplicate_wins_and_null_keeps_scalar(void **state)
{
    (void)state;
    cr_register_msg_t m;
    const char *json = "{\"host\":\"a\",\"Host\":\"b\",\"Port\":1,\"port\":null,\"uris\":[\"x.com\"]}";
    assert_int_equal(decode(json, &m, NULL, 0), 0);
    assert_string_equal(m.host, "b");
    assert_int_equal(m.port, 1);
    cr_register_msg_deinit(&m);
}

static void test_tags_null_differs_from_empty_map(void **state)
{
    (void)state;
    cr_register_msg_t m;
    assert_int_equal(decode("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"tags\":null}", &m, NULL, 0), 0);
    assert_false(m.has_tags);
    assert_int_equal(m.tags_len, 0);
    cr_register_msg_deinit(&m);
    assert_int_equal(decode("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"tags\":{}}", &m, NULL, 0), 0);
    assert_true(m.has_tags);
    assert_int_equal(m.tags_len, 0);
    cr_register_msg_deinit(&m);
    /* A null tag value decodes as "" (Go map[string]string). */
    assert_int_equal(decode("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"tags\":{\"a\":null}}", &m, NULL, 0), 0);
    assert_string_equal(m.tags[0].value, "");
    cr_register_msg_deinit(&m);
}

static void test_tls_port_alone_is_enough(void **state)
{
    (void)state;
    cr_register_msg_t m;
    assert_int_equal(decode("{\"host\":\"h\",\"tls_port\":443,\"uris\":[\"x\"]}", &m, NULL, 0), 0);
    assert_int_equal(m.port, 0);
    assert_int_equal(m.tls_port, 443);
    cr_register_msg_deinit(&m);
}

static void test_invalid_loadbalancing_is_ignored(void **state)
{
    (void)state;
    cr_register_msg_t m;
    assert_int_equal(decode("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"options\":{\"loadbalancing\":\"least-connections\"}}",
                            &m, NULL, 0), 0);
    assert_int_equal(m.lb_algo, -1);
    cr_register_msg_deinit(&m);
    assert_int_equal(decode("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"options\":{}}", &m, NULL, 0), 0);
    assert_int_equal(m.lb_algo, -1);
    cr_register_msg_deinit(&m);
}

static void test_empty_uris_are_dropped(void **state)
{
    (void)state;
    cr_register_msg_t m;
    assert_int_equal(decode("{\"host\":\"h\",\"port\":1,\"uris\":[\"\",null,\"y\"]}", &m, NULL, 0), 0);
    assert_int_equal(m.uris_len, 1);
    assert_string_equal(m.uris[0], "y");
    cr_register_msg_deinit(&m);
}

static void test_rejects_syntax_errors(void **state)
{
    (void)state;
    expect_bad("", "JSON");
    expect_bad("{", "JSON");
    expect_bad("{\"host\":\"h\",}", "JSON");
    expect_bad("{\"host\":\"h\"} trailing", "JSON");
    expect_bad("[1,2]", "object");
    expect_bad("\"str\"", NULL);
    expect_bad("null", NULL);
}

static void test_rejects_type_mismatches(void **state)
{
    (void)state;
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"private_instance_index\":2}", "private_instance_index");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"tags\":{\"a\":1}}", "tags");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"tags\":[\"a\"]}", "tags");
    expect_bad("{\"host\":\"h\",\"port\":\"80\",\"uris\":[\"x\"]}", "port");
    expect_bad("{\"host\":\"h\",\"port\":65536,\"uris\":[\"x\"]}", "port");
    expect_bad("{\"host\":\"h\",\"port\":-1,\"uris\":[\"x\"]}", "port");
    expect_bad("{\"host\":\"h\",\"port\":80.5,\"uris\":[\"x\"]}", "port");
    expect_bad("{\"host\":\"h\",\"port\":1,\"tls_port\":70000,\"uris\":[\"x\"]}", "tls_port");
    expect_bad("{\"host\":5,\"port\":1,\"uris\":[\"x\"]}", "host");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":\"x\"}", "uris");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\",7]}", "uris");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"app\":{}}", "app");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"stale_threshold_in_seconds\":\"30\"}", "stale");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"options\":\"rr\"}", "options");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"options\":{\"loadbalancing\":1}}", "options");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"endpoint_updated_at_ns\":true}", "endpoint_updated_at_ns");
}

static void test_rejects_plain_http_route_service(void **state)
{
    (void)state;
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"route_service_url\":\"http://rs\"}", "https");
    cr_register_msg_t m;
    assert_int_equal(decode("{\"host\":\"h\",\"port\":1,\"uris\":[\"x\"],\"route_service_url\":\"\"}", &m, NULL, 0), 0);
    assert_null(m.route_service_url);
    cr_register_msg_deinit(&m);
}

static void test_rejects_missing_required_fields(void **state)
{
    (void)state;
    expect_bad("{\"port\":1,\"uris\":[\"x\"]}", "missing host");
    expect_bad("{\"host\":\"\",\"port\":1,\"uris\":[\"x\"]}", "missing host");
    expect_bad("{\"host\":\"h\",\"uris\":[\"x\"]}", "missing port");
    expect_bad("{\"host\":\"h\",\"port\":0,\"uris\":[\"x\"]}", "missing port");
    expect_bad("{\"host\":\"h\",\"port\":1}", "missing uris");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[]}", "missing uris");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":null}", "missing uris");
    expect_bad("{\"host\":\"h\",\"port\":1,\"uris\":[\"\"]}", "missing uris");
    expect_bad("{}", "missing host");
}

static void test_reason_never_echoes_payload(void **state)
{
    (void)state;
    char err[256];
    cr_register_msg_t m;
    decode("{\"host\":\"SECRETVALUE\",\"port\":\"SECRETPORT\",\"uris\":[\"x\"]}", &m, err, sizeof err);
    assert_null(strstr(err, "SECRET"));
    decode("{\"host\":\"SECRETVALUE\" oops", &m, err, sizeof err);
    assert_null(strstr(err, "SECRET"));
}

static void test_rejects_oversize_before_parsing(void **state)
{
    (void)state;
    size_t len = CR_REGISTER_MSG_MAX_BYTES + 1;
    char *big = malloc(len);
    memset(big, ' ', len); /* would be a syntax error if it were parsed */
    cr_register_msg_t m;
    char err[64];
    assert_int_equal(cr_register_msg_decode(big, len, &m, err, sizeof err), CR_ETOOBIG);
    free(big);
}

static void test_deinit_accepts_zeroed_struct(void **state)
{
    (void)state;
    cr_register_msg_t m;
    memset(&m, 0, sizeof m);
    cr_register_msg_deinit(&m);
    cr_register_msg_deinit(NULL);
}

/* Decode speed is measured in bench/, never asserted in a unit test; this
 * checks the shape the route emitter really sends. */
static void test_route_emitter_message_with_tls_port_and_tags_decodes(void **state)
{
    (void)state;
    const char *json =
        "{\"host\":\"10.0.16.12\",\"port\":61012,\"tls_port\":61014,\"uris\":[\"app-12.apps.example.com\"],"
        "\"app\":\"6d0e1d3a-0a4b-4b5c-9a57-0f7a7e8f2a11\",\"private_instance_id\":\"8a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b\","
        "\"private_instance_index\":\"0\",\"server_cert_domain_san\":\"8a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b\","
        "\"tags\":{\"component\":\"route-emitter\",\"process_id\":\"6d0e1d3a\",\"space_id\":\"x\"},"
        "\"stale_threshold_in_seconds\":120,\"endpoint_updated_at_ns\":1700000000000000000}";
    cr_register_msg_t m;
    assert_int_equal(cr_register_msg_decode(json, strlen(json), &m, NULL, 0), 0);
    assert_int_equal(m.port, 61012);
    assert_int_equal(m.tls_port, 61014);
    assert_int_equal(m.uris_len, 1);
    assert_true(m.has_tags);
    assert_int_equal(m.tags_len, 3);
    assert_string_equal(m.server_cert_domain_san, "8a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b");
    assert_int_equal(m.stale_threshold_in_seconds, 120);
    cr_register_msg_deinit(&m);
}

/* --- fast path against jansson ---------------------------------------- */

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* Decodes data both ways (guarded) and fails on any difference. Returns rc. */
static int check_same(const char *data, size_t len)
{
    void *m1, *m2;
    size_t l1, l2;
    const char *p1 = guarded(data, len, &m1, &l1);
    const char *p2 = guarded(data, len, &m2, &l2);
    cr_register_msg_t a, b;
    char ea[128] = "", eb[128] = "";
    int ra = cr_register_msg_decode(p1, len, &a, ea, sizeof ea);
    int rb = cr_register_msg__decode_jansson(p2, len, &b, eb, sizeof eb);
    munmap(m1, l1);
    munmap(m2, l2);
    if (ra != rb)
        fail_msg("rc %d vs jansson %d (%s) on %.*s", ra, rb, eb, (int)len, data);
    if (ra != 0) {
        assert_string_equal(ea, eb);
        return ra;
    }
    bool ok = same_str(a.host, b.host) && a.port == b.port && a.tls_port == b.tls_port &&
              a.uris_len == b.uris_len && same_str(a.app, b.app) &&
              same_str(a.private_instance_id, b.private_instance_id) &&
              same_str(a.private_instance_index, b.private_instance_index) &&
              same_str(a.route_service_url, b.route_service_url) &&
              same_str(a.server_cert_domain_san, b.server_cert_domain_san) &&
              same_str(a.isolation_segment, b.isolation_segment) && same_str(a.protocol, b.protocol) &&
              same_str(a.availability_zone, b.availability_zone) && a.tags_len == b.tags_len &&
              a.has_tags == b.has_tags && a.stale_threshold_in_seconds == b.stale_threshold_in_seconds &&
              a.endpoint_updated_at_ns == b.endpoint_updated_at_ns && a.lb_algo == b.lb_algo &&
              (a.persistence == NULL) == (b.persistence == NULL) &&
              strcmp(a.persistence_error, b.persistence_error) == 0;
    for (size_t i = 0; ok && i < a.uris_len; i++)
        ok = strcmp(a.uris[i], b.uris[i]) == 0;
    for (size_t i = 0; ok && i < a.tags_len; i++)
        ok = strcmp(a.tags[i].key, b.tags[i].key) == 0 && strcmp(a.tags[i].value, b.tags[i].value) == 0;
    cr_register_msg_deinit(&a);
    cr_register_msg_deinit(&b);
    if (!ok)
        fail_msg("fast path and jansson differ on %.*s", (int)len, data);
    return 0;
}

static void test_fast_path_matches_jansson_on_edge_cases(void **state)
{
    (void)state;
    const char *cases[] = {
        "{\"host\":\"10.0.0.1\",\"port\":8080,\"uris\":[\"a.com\"],\"endpoint_updated_at_ns\":9223372036854775807}",
        "{\"host\":\"10.0.0.1\",\"port\":8080,\"uris\":[\"a.com\"],\"endpoint_updated_at_ns\":9223372036854775808}",
        "{\"host\":\"10.0.0.1\",\"port\":8080,\"uris\":[\"a.com\"],\"endpoint_updated_at_ns\":-9223372036854775808}",
        "{\"host\":\"10.0.0.1\",\"port\":8080,\"uris\":[\"a.com\"],\"endpoint_updated_at_ns\":-9223372036854775809}",
        "{\"host\":\"10.0.0.1\",\"port\":8080,\"uris\":[\"a.com\"],\"stale_threshold_in_seconds\":-0}",
        "{\"host\":\"10.0.0.1\",\"port\":8080,\"uris\":[\"a.com\"],\"stale_threshold_in_seconds\":1.0}",
        "{\"host\":\"10.0.0.1\",\"port\":8080,\"uris\":[\"a.com\"],\"stale_threshold_in_seconds\":1e3}",
        "{\"host\":\"10.0.0.1\",\"port\":08080,\"uris\":[\"a.com\"]}",
        "{\"host\":\"10.0.0.1\",\"port\":65536,\"uris\":[\"a.com\"]}",
        "{\"host\":\"10.0.0.1\",\"port\":-1,\"uris\":[\"a.com\"]}",
        "{\"host\":\"10.0.0.1\",\"port\":65535,\"tls_port\":0,\"uris\":[\"a.com\",\"\",\"b.com\"]}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"Host\":\"10.0.0.2\",\"uris\":[\"a.com\"]}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"uris\":[\"b.com\"]}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"app\":null}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"\"}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"a\\\"b\"}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"app\":\"\xc3\xa9\"}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"tags\":{}}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"tags\":null}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"tags\":{\"a\":\"1\",\"a\":\"2\"}}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"tags\":{\"a\":\"1\",\"b\":null}}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"route_service_url\":\"http://x\"}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"route_service_url\":\"https://x\"}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"route_service_url\":\"http\"}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"private_instance_index\":3}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"unknown\":[1,2],\"x\":true,\"y\":false,\"z\":-5}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"options\":{\"loadbalancing\":\"least-connection\"}}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"]} x",
        "  {\"host\" : \"10.0.0.1\" ,\r\n\t\"port\":80 , \"uris\" : [ \"a.com\" , \"b.com\" ] }  ",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[]}",
        "{\"host\":\"10.0.0.1\",\"port\":0,\"uris\":[\"a.com\"]}",
        "{\"port\":80,\"uris\":[\"a.com\"]}",
        "{}",
        "[]",
        "",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],}",
        "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\",]}",
    };
    for (size_t i = 0; i < CR_ARRAY_LEN(cases); i++)
        check_same(cases[i], strlen(cases[i]));
}

/* The differential tests would pass if the fast path always gave up: the
 * plain messages it exists for must go through it. */
static void test_fast_path_decodes_plain_messages(void **state)
{
    (void)state;
    const char *plain[] = {
        "{\"host\":\"127.0.0.1\",\"port\":61000,\"uris\":[\"r1.scale.local\"],\"app\":\"scale-app\","
        "\"private_instance_id\":\"scale-instance-1\",\"private_instance_index\":\"0\","
        "\"stale_threshold_in_seconds\":120,\"protocol\":\"http1\",\"endpoint_updated_at_ns\":1700000000000000000}",
        "{\"host\":\"10.0.16.5\",\"port\":61001,\"tls_port\":61443,\"uris\":[\"app.example.com/p\"],"
        "\"tags\":{\"component\":\"route-emitter\",\"app_name\":\"app\"},\"availability_zone\":\"z1\"}",
        "  {\"host\" : \"10.0.0.1\" ,\r\n\t\"port\":80 , \"uris\" : [ \"a.com\" , \"b.com\" ] }  ",
    };
    for (size_t i = 0; i < CR_ARRAY_LEN(plain); i++) {
        cr_register_msg_t m;
        if (!cr_register_msg__decode_fast(plain[i], strlen(plain[i]), &m))
            fail_msg("the fast path gave up on %s", plain[i]);
        cr_register_msg_deinit(&m);
    }
}

/* Many tags go to jansson (the fast path's duplicate check is quadratic):
 * 20,000 distinct tags decode in well under a second and the same as
 * jansson. */
static void test_many_tags_leave_the_fast_path(void **state)
{
    (void)state;
    size_t cap = 400 * 1000, n = 0;
    char *msg = malloc(cap);
    assert_non_null(msg);
    n += (size_t)snprintf(msg + n, cap - n, "{\"host\":\"10.0.0.1\",\"port\":80,\"uris\":[\"a.com\"],\"tags\":{");
    for (int i = 0; i < 20000; i++)
        n += (size_t)snprintf(msg + n, cap - n, "%s\"%x\":\"\"", i ? "," : "", i);
    n += (size_t)snprintf(msg + n, cap - n, "}}");
    cr_register_msg_t m;
    assert_false(cr_register_msg__decode_fast(msg, n, &m));
    int64_t t0 = cr_now_mono_ns();
    assert_int_equal(check_same(msg, n), 0);
    int64_t took_ms = (cr_now_mono_ns() - t0) / 1000000;
    if (took_ms > 2000)
        fail_msg("20,000 tags took %lld ms to decode", (long long)took_ms);
    free(msg);
}

static void test_fast_path_matches_jansson_on_mutations(void **state)
{
    (void)state;
    const char *seeds[] = {
        "{\"host\":\"127.0.0.1\",\"port\":61000,\"uris\":[\"r1.scale.local\"],\"app\":\"scale-app\","
        "\"private_instance_id\":\"scale-instance-1\",\"private_instance_index\":\"0\","
        "\"stale_threshold_in_seconds\":120,\"protocol\":\"http1\",\"endpoint_updated_at_ns\":1700000000000000000}",
        "{\"host\":\"10.0.16.5\",\"port\":61001,\"tls_port\":61443,\"uris\":[\"app.apps.example.com\",\"app.example.com/p\"],"
        "\"app\":\"6d0e1d3a-0a4b-4b5c-9a57-0f7a7e8f2a11\",\"private_instance_id\":\"9f1e\",\"private_instance_index\":\"2\","
        "\"server_cert_domain_san\":\"9f1e\",\"availability_zone\":\"z1\",\"isolation_segment\":\"\","
        "\"tags\":{\"component\":\"route-emitter\",\"app_name\":\"app\",\"space_id\":\"s\"},"
        "\"route_service_url\":\"https://rs.example.com\",\"stale_threshold_in_seconds\":120}",
        "{\"HOST\":\"h\",\"Port\":1,\"URIS\":[\"a\"],\"extra\":\"x\",\"n\":-12,\"t\":true}",
    };
    const char alphabet[] = "\"\\,:{}[]09- aHntel.\x01\xc3u";
    unsigned seed = 12345;
    char buf[1024];
    int ok = 0;
    for (int it = 0; it < 150000; it++) {
        const char *s = seeds[it % CR_ARRAY_LEN(seeds)];
        size_t len = strlen(s);
        memcpy(buf, s, len);
        int muts = 1 + (int)((seed >> 16) % 3);
        for (int k = 0; k < muts; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % (len ? len : 1);
            char ch = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
            switch ((seed >> 28) % 4) {
            case 0: buf[at] = ch; break;                                         /* replace */
            case 1: memmove(buf + at, buf + at + 1, len - at - 1); len--; break; /* delete */
            case 2:                                                              /* insert */
                if (len + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = ch;
                    len++;
                }
                break;
            default: { /* copy a slice elsewhere (duplicate keys, nesting) */
                size_t from = (seed >> 4) % len, n = 1 + (seed >> 12) % 24;
                if (from + n > len)
                    n = len - from;
                if (len + n < sizeof buf) {
                    char tmp[32];
                    memcpy(tmp, buf + from, n);
                    memmove(buf + at + n, buf + at, len - at);
                    memcpy(buf + at, tmp, n);
                    len += n;
                }
            }
            }
            if (len == 0)
                break;
        }
        ok += check_same(buf, len) == 0;
    }
    print_message("mutated messages still valid: %d of 150000\n", ok);
    assert_true(ok > 1000); /* the comparison covered accepted messages too */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes_every_field),
        cmocka_unit_test(test_minimal_message_leaves_optional_fields_empty),
        cmocka_unit_test(test_keys_match_case_insensitively),
        cmocka_unit_test(test_last_duplicate_wins_and_null_keeps_scalar),
        cmocka_unit_test(test_tags_null_differs_from_empty_map),
        cmocka_unit_test(test_tls_port_alone_is_enough),
        cmocka_unit_test(test_invalid_loadbalancing_is_ignored),
        cmocka_unit_test(test_empty_uris_are_dropped),
        cmocka_unit_test(test_rejects_syntax_errors),
        cmocka_unit_test(test_rejects_type_mismatches),
        cmocka_unit_test(test_rejects_plain_http_route_service),
        cmocka_unit_test(test_rejects_missing_required_fields),
        cmocka_unit_test(test_reason_never_echoes_payload),
        cmocka_unit_test(test_rejects_oversize_before_parsing),
        cmocka_unit_test(test_deinit_accepts_zeroed_struct),
        cmocka_unit_test(test_route_emitter_message_with_tls_port_and_tags_decodes),
        cmocka_unit_test(test_fast_path_matches_jansson_on_edge_cases),
        cmocka_unit_test(test_fast_path_matches_jansson_on_mutations),
        cmocka_unit_test(test_fast_path_decodes_plain_messages),
        cmocka_unit_test(test_many_tags_leave_the_fast_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
