/* test/integration/test_security.c - issue 7, status API security with a
 * real crouter: near-miss credentials are 401, no secret reaches any log,
 * /routes on the routes port listens on 127.0.0.1 only even when the status
 * listener is on every interface.
 *
 * What test_foundation and the status server's unit tests already cover
 * (no credentials, a wrong password, /health without auth, the routes port
 * binding in-process) is not repeated; this file adds the credentials that
 * differ from the right ones by one byte, length or case, other schemes and
 * broken base64, the log and --check-config output of a run with status,
 * NATS, Authorization and cookie secrets in play, and the binding seen from
 * outside the process (/proc/net/tcp, a connect to 127.0.0.2).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testsupport.h"

#define STATUS_USER "status-admin"
#define STATUS_PASS "St4tus-Pa55-7f3a9c"
#define NATS_USER "nats-router"
#define NATS_PASS "N4ts-Secr3t-51b2e8"
#define BEARER "Bearer-T0ken-0d9e71"
#define SESSION "Sess10n-C00kie-aa41f0"

static ts_nats_t g_nats;
static natsConnection *g_nc;
static ts_crouter_t g_cr;
static ts_backend_t g_be;

/* Writes a config with the status listener on 0.0.0.0 (ts_crouter_spawn
 * always uses 127.0.0.1) and spawns crouter with it. */
static int spawn_with_config(ts_crouter_t *cr)
{
    memset(cr, 0, sizeof *cr);
    cr->exit_status = -1;
    cr->port = ts_free_port();
    cr->status_port = ts_free_port();
    cr->routes_port = ts_free_port();
    snprintf(cr->user, sizeof cr->user, STATUS_USER);
    snprintf(cr->pass, sizeof cr->pass, STATUS_PASS);
    ts_tmp_path(cr->config_path, sizeof cr->config_path, "crouter", ".yml");
    ts_tmp_path(cr->log_path, sizeof cr->log_path, "crouter", ".log");
    ts_tmp_path(cr->access_log_path, sizeof cr->access_log_path, "access", ".log");
    FILE *f = fopen(cr->config_path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port: %u\n"
            "status:\n  host: 0.0.0.0\n  port: %u\n  user: %s\n  pass: %s\n  routes:\n    port: %u\n"
            "nats:\n  user: %s\n  pass: %s\n  hosts:\n  - hostname: 127.0.0.1\n    port: %u\n"
            "workers: 2\nstart_response_delay_interval: 1s\nendpoint_timeout: 5s\n"
            "logging:\n  level: debug\naccess_log:\n  file: %s\n"
            "an_unknown_key: 1\n",
            cr->port, cr->status_port, STATUS_USER, STATUS_PASS, cr->routes_port, NATS_USER, NATS_PASS,
            g_nats.port, cr->access_log_path);
    fclose(f);
    ts_register_log("crouter log", cr->log_path);
    const char *argv[] = {ts_crouter_bin(), "-c", cr->config_path, NULL};
    cr->pid = ts_spawn(argv, cr->log_path);
    return cr->pid > 0 ? 0 : -1;
}

static int group_setup(void **state)
{
    (void)state;
    if (ts_nats_start(&g_nats, false) != 0)
        return -1;
    g_nc = ts_nats_connect(&g_nats);
    if (!g_nc)
        return -1;
    if (ts_backend_start(&g_be, "sec", NULL) != 0)
        return -1;
    if (spawn_with_config(&g_cr) != 0 || !ts_crouter_wait_healthy(&g_cr, 20000))
        return -1;
    ts_route_t r = {.port = g_be.port, .uris = {"sec.example.com"}, .private_instance_id = "sec-1"};
    if (ts_nats_register(g_nc, &r) != 0 || !ts_crouter_wait_route(&g_cr, "sec.example.com", 1, 5000))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = ts_crouter_stop(&g_cr, 15000);
    ts_nats_close(g_nc);
    ts_backend_stop(&g_be);
    ts_nats_stop(&g_nats);
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static long status_of(uint16_t port, const char *path, const char *userpwd, const char *header)
{
    ts_req_t req = {.path = path, .userpwd = userpwd, .headers = {header}};
    ts_resp_t r;
    ts_http(NULL, port, &req, &r);
    long s = r.status;
    if (s == 401 && !ts_resp_header(&r, "WWW-Authenticate"))
        s = -401; /* a 401 must carry the challenge */
    ts_resp_free(&r);
    return s;
}

static void test_near_miss_credentials_are_401_on_both_ports(void **state)
{
    (void)state;
    static const char *const wrong[] = {
        STATUS_USER ":" STATUS_PASS "x",                 /* one byte longer */
        STATUS_USER ":St4tus-Pa55-7f3a9",                /* one byte shorter */
        STATUS_USER ":St4tus-Pa55-7f3a9d",               /* last byte differs */
        STATUS_USER ":st4tus-pa55-7f3a9c",               /* case */
        "Status-Admin:" STATUS_PASS,                     /* user case */
        STATUS_USER "x:" STATUS_PASS,                    /* user longer */
        ":" STATUS_PASS,                                 /* no user */
        STATUS_USER ":",                                 /* no password */
        STATUS_PASS ":" STATUS_USER,                     /* swapped */
        STATUS_USER STATUS_PASS,                         /* no colon */
    };
    static const char *const bad_headers[] = {
        "Authorization: Basic !!!notbase64!!!",
        "Authorization: Bearer " STATUS_PASS,
        "Authorization: Basic",
        "Authorization: basic c3RhdHVzLWFkbWluOlN0NHR1cy1QYTU1LTdmM2E5Yw==", /* right pair, lower-case scheme */
    };
    uint16_t ports[] = {g_cr.status_port, g_cr.routes_port};
    for (size_t p = 0; p < 2; p++) {
        const char *paths[] = {"/routes", "/varz", "/metrics"};
        for (size_t k = 0; k < (p == 0 ? 3u : 1u); k++) {
            for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
                long s = status_of(ports[p], paths[k], wrong[i], NULL);
                if (s != 401)
                    fail_msg("GET %s on port %u with '%s': %ld, want 401 with WWW-Authenticate", paths[k],
                             ports[p], wrong[i], s);
            }
            for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
                long s = status_of(ports[p], paths[k], NULL, bad_headers[i]);
                /* RFC 7617: the scheme is case-insensitive, so "basic" with
                 * the right pair may pass; everything else must not. */
                bool lower_scheme = i == 3;
                if (s != 401 && !(lower_scheme && s == 200))
                    fail_msg("GET %s on port %u with '%s': %ld, want 401", paths[k], ports[p], bad_headers[i], s);
            }
            if (status_of(ports[p], paths[k], STATUS_USER ":" STATUS_PASS, NULL) != 200)
                fail_msg("GET %s on port %u with the right credentials is not 200", paths[k], ports[p]);
        }
    }
}

/* True when text contains needle anywhere (also across lines). */
static bool contains(const char *text, const char *needle)
{
    return text && strstr(text, needle) != NULL;
}

static void assert_no_secret(const char *what, const char *text)
{
    static const char *const secrets[] = {STATUS_PASS, NATS_PASS, BEARER, SESSION,
                                          /* base64 of the status pair and of its password part */
                                          "c3RhdHVzLWFkbWluOlN0NHR1cy1QYTU1LTdmM2E5Yw"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (contains(text, secrets[i]))
            fail_msg("%s contains the secret '%s'", what, secrets[i]);
}

static void test_credentials_never_appear_in_logs_or_check_config(void **state)
{
    (void)state;
    /* failed and successful status auth, at debug level */
    assert_int_equal(status_of(g_cr.status_port, "/routes", STATUS_USER ":wrong-" STATUS_PASS, NULL), 401);
    assert_int_equal(status_of(g_cr.status_port, "/varz", STATUS_USER ":" STATUS_PASS, NULL), 200);
    assert_int_equal(status_of(g_cr.routes_port, "/routes", STATUS_USER ":" STATUS_PASS, NULL), 200);
    /* proxied requests carrying an Authorization header and a session
     * cookie with an unknown __VCAP_ID__ (crouter logs sticky misses at
     * debug level) */
    for (int i = 0; i < 3; i++) {
        ts_req_t req = {.host = "sec.example.com",
                        .headers = {"Authorization: " BEARER, "Cookie: JSESSIONID=" SESSION "; __VCAP_ID__=gone-1"}};
        ts_resp_t r;
        assert_int_equal(ts_http(NULL, g_cr.port, &req, &r), 0);
        assert_int_equal(r.status, 200);
        ts_resp_free(&r);
    }
    ts_req_t unknown = {.host = "nobody.example.com", .headers = {"Authorization: " BEARER}};
    ts_resp_t r;
    assert_int_equal(ts_http(NULL, g_cr.port, &unknown, &r), 0);
    assert_int_equal(r.status, 404);
    ts_resp_free(&r);

    /* --check-config of the same file (warns about an_unknown_key), and of
     * a broken copy (an error naming a key next to the secrets) */
    const char *argv[] = {ts_crouter_bin(), "--check-config", "-c", g_cr.config_path, NULL};
    char *out = NULL;
    int rc = ts_run_capture(argv, 20000, &out);
    assert_int_equal(rc, 0);
    assert_true(contains(out, "an_unknown_key"));
    assert_no_secret("crouter --check-config output", out);
    free(out);
    char broken[512];
    ts_tmp_path(broken, sizeof broken, "broken", ".yml");
    char *cfg = ts_read_file(g_cr.config_path, NULL);
    assert_non_null(cfg);
    FILE *f = fopen(broken, "w");
    assert_non_null(f);
    fprintf(f, "%sdroplet_stale_threshold: soon\n", cfg);
    fclose(f);
    free(cfg);
    const char *argv2[] = {ts_crouter_bin(), "--check-config", "-c", broken, NULL};
    rc = ts_run_capture(argv2, 20000, &out);
    assert_int_not_equal(rc, 0);
    assert_true(contains(out, "droplet_stale_threshold"));
    assert_no_secret("crouter --check-config output for a broken config", out);
    free(out);

    /* The logs, now: wait until the access log has the requests above. */
    int64_t deadline = ts_now_ms() + 5000;
    char *alog = NULL;
    for (;;) {
        alog = ts_read_file(g_cr.access_log_path, NULL);
        if ((alog && contains(alog, "nobody.example.com")) || ts_now_ms() > deadline)
            break;
        free(alog);
        alog = NULL;
        ts_sleep_ms(50);
    }
    assert_non_null(alog);
    assert_no_secret("the access log", alog);
    free(alog);
    char *log = ts_read_file(g_cr.log_path, NULL);
    assert_non_null(log);
    assert_true(contains(log, "debug")); /* the run logged at debug level */
    assert_no_secret("crouter's log", log);
    free(log);
}

/* The listening address of a TCP port from /proc/net/tcp ("0100007F" is
 * 127.0.0.1, "00000000" is 0.0.0.0); "" when not listening. */
static void listen_addr(uint16_t port, char out[16])
{
    out[0] = '\0';
    char *tcp = ts_read_file("/proc/net/tcp", NULL);
    assert_non_null(tcp);
    char want[8];
    snprintf(want, sizeof want, ":%04X", port);
    for (char *line = strchr(tcp, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char local[64], remote[64], st[8];
        if (sscanf(line + 1, "%*d: %63s %63s %7s", local, remote, st) != 3)
            continue;
        char *colon = strchr(local, ':');
        if (colon && strcmp(colon, want) == 0 && strcmp(st, "0A") == 0) {
            snprintf(out, 16, "%.*s", (int)(colon - local), local);
            break;
        }
    }
    free(tcp);
}

static bool connects(const char *ip, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void test_routes_port_listens_on_loopback_only_even_with_status_on_all_interfaces(void **state)
{
    (void)state;
    char routes[16], status[16];
    listen_addr(g_cr.routes_port, routes);
    listen_addr(g_cr.status_port, status);
    fprintf(stderr, "listening: status %s:%u, routes %s:%u (hex, from /proc/net/tcp)\n", status, g_cr.status_port,
            routes, g_cr.routes_port);
    assert_string_equal(status, "00000000");   /* status.host: 0.0.0.0 */
    assert_string_equal(routes, "0100007F");   /* 127.0.0.1, whatever status.host says */
    /* 127.0.0.2 is loopback too, but only a wildcard listener accepts there */
    assert_true(connects("127.0.0.2", g_cr.status_port));
    assert_false(connects("127.0.0.2", g_cr.routes_port));
    assert_true(connects("127.0.0.1", g_cr.routes_port));
}

int main(void)
{
    ts_init("security");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_near_miss_credentials_are_401_on_both_ports),
        cmocka_unit_test(test_credentials_never_appear_in_logs_or_check_config),
        cmocka_unit_test(test_routes_port_listens_on_loopback_only_even_with_status_on_all_interfaces),
    };
    return ts_finish(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
