/* test/integration/test_load.c - issue 7, load: many keep-alive clients and
 * slowloris connections must not slow normal traffic down.
 *
 * One crouter (2 workers), one fake backend. "Normal traffic" is sequential
 * GETs on one keep-alive connection (ts_load_latency). Its p99 is measured
 * unloaded, then with CONNS open keep-alive client connections (each made a
 * request and makes another every KEEPALIVE_INTERVAL_MS on average, spread
 * out: 500 requests/s for 10,000 connections) plus SLOWLORIS
 * connections trickling one header byte every 300 ms (reopened when crouter
 * closes them at read_header_timeout), then unloaded again. The loaded p99
 * must stay within 2x of the unloaded one; the larger of the two unloaded
 * measurements is the baseline, and a round that misses is repeated (at
 * most three), so one noisy sample on a shared machine does not decide the
 * outcome. Every figure is printed. ctest runs it alone (RUN_SERIAL).
 *
 * Sizes come from the environment: CROUTER_LOAD_CONNS (default 2000),
 * CROUTER_LOAD_SLOWLORIS (default 200), CROUTER_LOAD_SAMPLES (default
 * 2000, the unloaded measurements), CROUTER_LOAD_SECONDS (default 15: the
 * loaded measurement lasts this long, so most keep-alive connections send
 * a second request and every slowloris connection trickles ~50 bytes). The default run uses the defaults; the soak label runs the same
 * executable with 10,000 and 1,000 (test/soak/CMakeLists.txt).
 *
 * crouter is started with a soft RLIMIT_NOFILE of 1024, so the test also
 * shows that it raises its own limit to the hard one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "testsupport.h"
#include "ts_load.h"

#define HOST "load.example.com"
#define KEEPALIVE_INTERVAL_MS 20000

static ts_nats_t g_nats;
static natsConnection *g_nc;
static ts_crouter_t g_cr;
static ts_backend_t g_be;

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

static long count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 2;
}

static long status_kib(pid_t pid, const char *key)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *s = ts_read_file(path, NULL);
    if (!s)
        return -1;
    const char *p = strstr(s, key);
    long v = p ? strtol(p + strlen(key), NULL, 10) : -1;
    free(s);
    return v;
}

/* The soft "Max open files" limit of a process, from /proc/<pid>/limits. */
static long soft_nofile(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
    char *s = ts_read_file(path, NULL);
    if (!s)
        return -1;
    const char *p = strstr(s, "Max open files");
    long v = p ? strtol(p + strlen("Max open files"), NULL, 10) : -1;
    free(s);
    return v;
}

static int group_setup(void **state)
{
    (void)state;
    long conns = env_long("CROUTER_LOAD_CONNS", 2000), slow = env_long("CROUTER_LOAD_SLOWLORIS", 200);
    long have = ts_load_raise_nofile(conns + slow + 1024);
    if (have < conns + slow + 256) {
        fprintf(stderr, "RLIMIT_NOFILE hard limit too low: %ld for %ld connections\n", have, conns + slow);
        return -1;
    }
    if (ts_nats_start(&g_nats, false) != 0)
        return -1;
    g_nc = ts_nats_connect(&g_nats);
    if (!g_nc)
        return -1;
    if (ts_backend_start(&g_be, "load", NULL) != 0)
        return -1;
    /* crouter inherits a soft limit of 1024 and must raise it itself. */
    struct rlimit rl, low;
    getrlimit(RLIMIT_NOFILE, &rl);
    low = rl;
    low.rlim_cur = 1024;
    setrlimit(RLIMIT_NOFILE, &low);
    int rc = ts_crouter_spawn(&g_cr, &g_nats, "read_header_timeout: 10s\nfrontend_idle_timeout: 300s\n");
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rc != 0 || !ts_crouter_wait_healthy(&g_cr, 20000))
        return -1;
    ts_route_t r = {.port = g_be.port, .uris = {HOST}};
    if (ts_nats_register(g_nc, &r) != 0 || !ts_crouter_wait_route(&g_cr, HOST, 1, 5000))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (!ts_crouter_stop_clean(&g_cr, 20000)) {
        fprintf(stderr, "crouter exit status 0x%x after SIGTERM (expected exit 0)\n", (unsigned)g_cr.exit_status);
        rc = -1;
    }
    ts_nats_close(g_nc);
    ts_backend_stop(&g_be);
    ts_nats_stop(&g_nats);
    return rc;
}

static void test_crouter_raised_its_open_file_limit(void **state)
{
    (void)state;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    long soft = soft_nofile(g_cr.pid);
    fprintf(stderr, "crouter open-file soft limit %ld (started with 1024, hard %llu)\n", soft,
            (unsigned long long)rl.rlim_max);
    if (rl.rlim_max > 1024 && soft != (long)rl.rlim_max)
        fail_msg("crouter's soft RLIMIT_NOFILE is %ld, want the hard limit %llu", soft,
                 (unsigned long long)rl.rlim_max);
}

static void print_latency(const char *what, const ts_latency_t *l)
{
    fprintf(stderr, "%-30s n=%ld errors=%ld p50=%.0f us p99=%.0f us max=%.0f us\n", what, l->n, l->errors,
            l->p50_us, l->p99_us, l->max_us);
}

/* One round: unloaded, loaded, unloaded. Fails the test outright when the
 * load itself misbehaves (errors, connections lost); returns the loaded p99
 * over the larger unloaded p99. */
static double load_round(int round, long conns, long slow, int samples, int loaded_ms)
{
    ts_latency_t warm, base1, loaded, base2;
    fprintf(stderr, "--- round %d\n", round);
    assert_int_equal(ts_load_latency(g_cr.port, HOST, "/", 300, 0, &warm), 0);
    assert_int_equal(ts_load_latency(g_cr.port, HOST, "/", samples, 0, &base1), 0);
    print_latency("unloaded (before)", &base1);
    long fds0 = count_fds(g_cr.pid), rss0 = status_kib(g_cr.pid, "VmRSS:");

    ts_load_opts_t o = {.port = g_cr.port, .host = HOST, .keepalive_conns = (int)conns,
                        .keepalive_interval_ms = KEEPALIVE_INTERVAL_MS, .slowloris_conns = (int)slow,
                        .slowloris_interval_ms = 300};
    int64_t t0 = ts_now_ms();
    ts_load_t *l = ts_load_start(&o);
    assert_non_null(l);
    bool up = ts_load_wait_established(l, 60000);
    int64_t t_up = ts_now_ms() - t0;
    ts_load_stats_t s0;
    ts_load_stats(l, &s0);
    fprintf(stderr, "load: %llu keep-alive + %llu slowloris connections open after %lld ms "
                    "(%llu requests, %llu 2xx, %llu other, %llu errors)\n",
            (unsigned long long)s0.keepalive_open, (unsigned long long)s0.slowloris_open, (long long)t_up,
            (unsigned long long)s0.requests, (unsigned long long)s0.responses_2xx,
            (unsigned long long)s0.responses_other, (unsigned long long)s0.keepalive_errors);
    if (!up) {
        ts_load_stop(l);
        fail_msg("only %llu of %ld keep-alive and %llu of %ld slowloris connections came up",
                 (unsigned long long)s0.keepalive_open, conns, (unsigned long long)s0.slowloris_open, slow);
    }
    long fds1 = count_fds(g_cr.pid);

    assert_int_equal(ts_load_latency(g_cr.port, HOST, "/", samples, loaded_ms, &loaded), 0);
    print_latency("loaded", &loaded);
    ts_load_stats_t s1;
    ts_load_stats(l, &s1);
    long rss1 = status_kib(g_cr.pid, "VmRSS:");
    ts_load_stop(l);
    fprintf(stderr, "during the loaded measurement: %llu keep-alive open, %llu slowloris open, "
                    "%llu header bytes trickled, %llu slowloris closed by crouter, %llu background requests "
                    "(%llu 2xx, %llu other), %llu keep-alive errors\n",
            (unsigned long long)s1.keepalive_open, (unsigned long long)s1.slowloris_open,
            (unsigned long long)s1.slowloris_bytes, (unsigned long long)s1.slowloris_closed,
            (unsigned long long)s1.requests, (unsigned long long)s1.responses_2xx,
            (unsigned long long)s1.responses_other, (unsigned long long)s1.keepalive_errors);
    fprintf(stderr, "crouter: %ld fds before, %ld with the load; RSS %ld KiB before, %ld KiB with the load\n", fds0,
            fds1, rss0, rss1);

    assert_int_equal(ts_load_latency(g_cr.port, HOST, "/", samples, 0, &base2), 0);
    print_latency("unloaded (after)", &base2);

    assert_int_equal(loaded.errors, 0);
    assert_int_equal(base1.errors + base2.errors, 0);
    /* The load really was there: every keep-alive connection stayed open and
     * answered, crouter held a descriptor for each client, slowloris bytes
     * kept arriving. */
    if (s1.keepalive_open < (uint64_t)conns || s1.keepalive_errors != 0 || s1.responses_other != 0)
        fail_msg("background keep-alive connections failed: open %llu of %ld, errors %llu, non-2xx %llu",
                 (unsigned long long)s1.keepalive_open, conns, (unsigned long long)s1.keepalive_errors,
                 (unsigned long long)s1.responses_other);
    if (fds1 < fds0 + conns + slow * 9 / 10)
        fail_msg("crouter held %ld descriptors under load, want at least %ld", fds1, fds0 + conns + slow * 9 / 10);
    if (s1.slowloris_bytes < (uint64_t)slow * 10)
        fail_msg("slowloris connections trickled only %llu bytes", (unsigned long long)s1.slowloris_bytes);

    double base = base1.p99_us > base2.p99_us ? base1.p99_us : base2.p99_us;
    double ratio = loaded.p99_us / base;
    fprintf(stderr, "round %d: p99 unloaded %.0f us (max of %.0f, %.0f), loaded %.0f us: %.2fx (limit 2x)\n",
            round, base, base1.p99_us, base2.p99_us, loaded.p99_us, ratio);
    return ratio;
}

/* Latency percentiles on a shared 2-core machine are noisy: up to three
 * rounds, and one within 2x passes. A crouter that really slows down under
 * the load fails all three. */
static void test_keepalive_and_slowloris_load_keeps_p99_within_2x(void **state)
{
    (void)state;
    long conns = env_long("CROUTER_LOAD_CONNS", 2000), slow = env_long("CROUTER_LOAD_SLOWLORIS", 200);
    int samples = (int)env_long("CROUTER_LOAD_SAMPLES", 2000);
    int loaded_ms = (int)env_long("CROUTER_LOAD_SECONDS", 15) * 1000;
    double best = 1e9;
    for (int round = 1; round <= 3 && best > 2.0; round++) {
        double r = load_round(round, conns, slow, samples, loaded_ms);
        if (r < best)
            best = r;
    }
    fprintf(stderr, "%ld keep-alive + %ld slowloris connections: best loaded/unloaded p99 ratio %.2fx\n", conns,
            slow, best);
    if (best > 2.0)
        fail_msg("loaded p99 was more than 2x the unloaded p99 in every round (best %.2fx)", best);
    assert_true(ts_crouter_alive(&g_cr));
}

int main(void)
{
    ts_init("load");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crouter_raised_its_open_file_limit),
        cmocka_unit_test(test_keepalive_and_slowloris_load_keeps_p99_within_2x),
    };
    return ts_finish(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
