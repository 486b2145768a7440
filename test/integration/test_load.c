/* test/integration/test_load.c - issue 7, load: 10,000 keep-alive clients and
 * 1,000 slowloris connections must not slow normal traffic down.
 *
 * One crouter (2 workers), its unloaded twin, one fake backend. "Normal traffic" is sequential
 * GETs on one keep-alive connection (ts_load_latency, the probe). The
 * background load is CONNS keep-alive client connections (each makes a
 * request when it opens and then one every KEEPALIVE_INTERVAL_MS on average,
 * 500 requests/s for 10,000 connections, spread from the start) plus
 * SLOWLORIS connections trickling one header byte every 300 ms; crouter cuts
 * those at read_header_timeout (2 s here, so the cuts and the reconnects
 * that follow fall inside every loaded window).
 *
 * How the comparison is made fair. On a shared 2-core machine the probe's
 * p99 over one second swings 10-20x from one second to the next with
 * nothing changed in crouter (other builds, tests and fuzzers come and go):
 * measured once unloaded (0.2 s) and once loaded (15 s), the ratio ranged
 * 0.2x to 2.9x, and even alternating 3-second unloaded and loaded windows
 * five times gave 0.13x to 3.6x. So the "unloaded p99" is that of a twin:
 * a second crouter with the same config and route that never gets the
 * load, measured in the same moments. The probe alternates one request to
 * crouter, one to the twin (ts_load_latency_pair), in slices of SLICE_MS
 * (and at least 1,000 requests each, so a slice's p99 rests on 10 or more
 * samples); machine noise lands on both. The result is the median over the
 * loaded slices of crouter's p99 over the twin's p99 in the same slice.
 * The run alternates CYCLES times between an unloaded window (both idle: the
 * same ratio shows the pair is balanced, ~1x) and a loaded one of
 * WINDOW_MS each; the load is opened before each loaded window and closed
 * after it, and the next window starts only when crouter has closed its side
 * of every load connection. crouter's own loaded-over-unloaded medians are
 * printed too, for comparison.
 *
 * What the twin does not see: the machine-wide cost of the load (the load
 * generator's thread, crouter's CPU for the load on the shared cores) slows
 * both, so it cancels out. In production the clients are elsewhere; what
 * this test holds crouter to is the part it controls: a worker busy with
 * 5,500 connections, slowloris bytes, cuts and reconnects must still answer
 * normal traffic promptly.
 *
 * How it still fails. A crouter that slows down under the load slows every
 * loaded slice of crouter and none of the twin's: e.g. a worker that stalls
 * for 1 ms every 10 ms while the load is open, or an accept/close storm at
 * each read_header_timeout cut that delays more than 1% of requests, moves
 * the median ratio above 2. Checked once by hand: SIGSTOP for 1 ms in
 * every 5 ms on the loaded crouter for the whole run (a python loop beside
 * the test) gave 4.89x and failed the test; the same run without the
 * stalls gives 1.1-1.5x. The load itself is checked too: every
 * keep-alive connection opens, answers 2xx and stays open, crouter holds a
 * descriptor for each connection, slowloris connections are cut by crouter
 * and reconnect.
 *
 * Sizes come from the environment: CROUTER_LOAD_CONNS (default 10000),
 * CROUTER_LOAD_SLOWLORIS (default 1000), CROUTER_LOAD_CYCLES (default 5),
 * CROUTER_LOAD_WINDOW_MS (default 3000), CROUTER_LOAD_SLICE_MS (default
 * 1000). The default run takes about 45 s in a Release build; the soak label
 * runs the same executable with 20 cycles (test/soak/CMakeLists.txt). The
 * test raises its own RLIMIT_NOFILE (the hard limit too when it may) and
 * fails, naming the limit, when it cannot get CONNS + SLOWLORIS + 256.
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

#include <jansson.h>

#include "testsupport.h"
#include "ts_load.h"

#define HOST "load.example.com"
#define KEEPALIVE_INTERVAL_MS 20000

static ts_nats_t g_nats;
static natsConnection *g_nc;
static ts_crouter_t g_cr;   /* gets the load */
static ts_crouter_t g_twin; /* same config and route, never loaded: the control */
static ts_backend_t g_be;

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

/* The sizes of one run, from the environment (see the header). */
typedef struct load_plan {
    long conns, slow;
    int cycles, window_ms, slice_ms;
} load_plan_t;

static load_plan_t plan_from_env(void)
{
    load_plan_t p = {.conns = env_long("CROUTER_LOAD_CONNS", 10000),
                     .slow = env_long("CROUTER_LOAD_SLOWLORIS", 1000),
                     .cycles = (int)env_long("CROUTER_LOAD_CYCLES", 5),
                     .window_ms = (int)env_long("CROUTER_LOAD_WINDOW_MS", 3000),
                     .slice_ms = (int)env_long("CROUTER_LOAD_SLICE_MS", 1000)};
    if (p.cycles < 1)
        p.cycles = 1;
    if (p.slice_ms < 100)
        p.slice_ms = 100;
    if (p.window_ms < p.slice_ms)
        p.window_ms = p.slice_ms;
    return p;
}

static int slices_per_window(const load_plan_t *p)
{
    return p->window_ms / p->slice_ms;
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
    load_plan_t p = plan_from_env();
    long conns = p.conns, slow = p.slow;
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
    const char *yaml = "read_header_timeout: 2s\nfrontend_idle_timeout: 300s\n";
    int rc = ts_crouter_spawn(&g_cr, &g_nats, yaml);
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rc != 0 || !ts_crouter_wait_healthy(&g_cr, 20000))
        return -1;
    if (ts_crouter_spawn(&g_twin, &g_nats, yaml) != 0 || !ts_crouter_wait_healthy(&g_twin, 20000))
        return -1;
    ts_route_t r = {.port = g_be.port, .uris = {HOST}};
    if (ts_nats_register(g_nc, &r) != 0 || !ts_crouter_wait_route(&g_cr, HOST, 1, 5000) ||
        !ts_crouter_wait_route(&g_twin, HOST, 1, 5000))
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
    if (!ts_crouter_stop_clean(&g_twin, 20000)) {
        fprintf(stderr, "twin crouter exit status 0x%x after SIGTERM (expected exit 0)\n",
                (unsigned)g_twin.exit_status);
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

/* Per-slice figures of one kind of window (unloaded or loaded), over all
 * cycles: the p99 of crouter (loaded in loaded windows) and of its twin
 * (never loaded), measured in the same slice. */
typedef struct slice_set {
    double *p99_us, *twin_p99_us, *ratio; /* owned; ratio = p99 / twin's p99 */
    int n;
    long requests, errors;
    double max_us;
} slice_set_t;

static slice_set_t slice_set_new(int cap)
{
    return (slice_set_t){.p99_us = calloc((size_t)cap, sizeof(double)),
                         .twin_p99_us = calloc((size_t)cap, sizeof(double)),
                         .ratio = calloc((size_t)cap, sizeof(double))};
}

static void slice_set_free(slice_set_t *set)
{
    free(set->p99_us);
    free(set->twin_p99_us);
    free(set->ratio);
}

#define MIN_SLICE_REQUESTS 1000 /* per crouter, so that a slice's p99 rests on >= 10 samples */

/* Measures one window as slices of the paired probe (one request to crouter,
 * one to its twin, and so on); appends their figures to set. Fails the test
 * on any probe error. */
static void measure_window(const load_plan_t *p, const char *what, int cycle, slice_set_t *set)
{
    int k = slices_per_window(p);
    long requests0 = set->requests;
    fprintf(stderr, "cycle %d %-8s p99 per slice, crouter/twin (us):", cycle, what);
    for (int i = 0; i < k; i++) {
        ts_latency_t lat, twin;
        assert_int_equal(ts_load_latency_pair(g_cr.port, g_twin.port, HOST, "/", MIN_SLICE_REQUESTS, p->slice_ms,
                                              &lat, &twin),
                         0);
        set->p99_us[set->n] = lat.p99_us;
        set->twin_p99_us[set->n] = twin.p99_us;
        set->ratio[set->n] = lat.p99_us / twin.p99_us;
        set->n++;
        set->requests += lat.n;
        set->errors += lat.errors + twin.errors;
        if (lat.max_us > set->max_us)
            set->max_us = lat.max_us;
        fprintf(stderr, " %.0f/%.0f", lat.p99_us, twin.p99_us);
    }
    fprintf(stderr, " (%ld requests each)\n", set->requests - requests0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double *s = malloc((size_t)n * sizeof *s);
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    free(s);
    return m;
}

/* crouter's count of open client connections, from /varz; -1 if unreadable. */
static long client_connections_open(void)
{
    json_t *v = ts_crouter_varz(&g_cr);
    json_t *x = v ? json_object_get(v, "client_connections_open") : NULL;
    long n = json_is_integer(x) ? (long)json_integer_value(x) : -1;
    json_decref(v);
    return n;
}

/* Waits until crouter has closed its side of every client connection (pooled
 * backend connections stay), then 200 ms more for the kernel's share. */
static void wait_client_connections_closed(int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    long open;
    while ((open = client_connections_open()) != 0 && ts_now_ms() < deadline)
        ts_sleep_ms(50);
    if (open != 0)
        fail_msg("crouter still counts %ld open client connections %d ms after the load closed", open, timeout_ms);
    ts_sleep_ms(200);
}

/* Opens the load, measures one loaded window, checks that the load really
 * was there, closes it and waits for crouter to let go of it. */
static void loaded_window(const load_plan_t *p, int cycle, long fds_unloaded, slice_set_t *loaded)
{
    ts_load_opts_t o = {.port = g_cr.port, .host = HOST, .keepalive_conns = (int)p->conns,
                        .keepalive_interval_ms = KEEPALIVE_INTERVAL_MS, .spread_first_gap = true,
                        .slowloris_conns = (int)p->slow, .slowloris_interval_ms = 300};
    int64_t t0 = ts_now_ms();
    ts_load_t *l = ts_load_start(&o);
    assert_non_null(l);
    bool up = ts_load_wait_established(l, 60000);
    int64_t t_up = ts_now_ms() - t0;
    ts_load_stats_t s0, s1;
    ts_load_stats(l, &s0);
    long fds_loaded = count_fds(g_cr.pid), rss_loaded = status_kib(g_cr.pid, "VmRSS:");
    if (!up) {
        ts_load_stop(l);
        fail_msg("only %llu of %ld keep-alive and %llu of %ld slowloris connections came up",
                 (unsigned long long)s0.keepalive_open, p->conns, (unsigned long long)s0.slowloris_open, p->slow);
    }

    measure_window(p, "loaded", cycle, loaded);

    ts_load_stats(l, &s1);
    int64_t t_stop = ts_now_ms();
    ts_load_stop(l);
    wait_client_connections_closed(30000);
    fprintf(stderr, "cycle %d load: up in %lld ms (crouter %ld fds, RSS %ld KiB); in the window %llu requests "
                    "(%llu 2xx, %llu other), %llu keep-alive errors, %llu keep-alive open, %llu slowloris cut "
                    "and reopened, %llu header bytes trickled; closed and let go in %lld ms\n",
            cycle, (long long)t_up, fds_loaded, rss_loaded, (unsigned long long)(s1.requests - s0.requests),
            (unsigned long long)(s1.responses_2xx - s0.responses_2xx),
            (unsigned long long)(s1.responses_other - s0.responses_other), (unsigned long long)s1.keepalive_errors,
            (unsigned long long)s1.keepalive_open, (unsigned long long)s1.slowloris_closed,
            (unsigned long long)s1.slowloris_bytes, (long long)(ts_now_ms() - t_stop));

    /* The load really was there: every keep-alive connection stayed open and
     * answered, crouter held a descriptor for each client, it cut the
     * slowloris connections at read_header_timeout and they came back. */
    if (s1.keepalive_open < (uint64_t)p->conns || s1.keepalive_errors != 0 || s1.responses_other != 0)
        fail_msg("background keep-alive connections failed: open %llu of %ld, errors %llu, non-2xx %llu",
                 (unsigned long long)s1.keepalive_open, p->conns, (unsigned long long)s1.keepalive_errors,
                 (unsigned long long)s1.responses_other);
    if (fds_loaded < fds_unloaded + p->conns + p->slow * 9 / 10)
        fail_msg("crouter held %ld descriptors under load, want at least %ld", fds_loaded,
                 fds_unloaded + p->conns + p->slow * 9 / 10);
    if (p->window_ms >= 3000 && s1.slowloris_closed < (uint64_t)p->slow * 9 / 10)
        fail_msg("crouter cut only %llu of %ld slowloris connections at read_header_timeout",
                 (unsigned long long)s1.slowloris_closed, p->slow);
    if (s1.slowloris_bytes < (uint64_t)p->slow * 5)
        fail_msg("slowloris connections trickled only %llu bytes", (unsigned long long)s1.slowloris_bytes);
    if (p->conns >= 1000 && s1.requests - s0.requests < (uint64_t)p->conns * (uint64_t)p->window_ms / KEEPALIVE_INTERVAL_MS / 2)
        fail_msg("only %llu background requests in the loaded window", (unsigned long long)(s1.requests - s0.requests));
}

static void test_keepalive_and_slowloris_load_keeps_p99_within_2x(void **state)
{
    (void)state;
    load_plan_t p = plan_from_env();
    int cap = p.cycles * slices_per_window(&p);
    slice_set_t unloaded = slice_set_new(cap), loaded = slice_set_new(cap);
    fprintf(stderr, "%ld keep-alive + %ld slowloris connections; %d cycles of an unloaded and a loaded window of "
                    "%d ms, slices of %d ms\n",
            p.conns, p.slow, p.cycles, p.window_ms, p.slice_ms);
    ts_latency_t warm, warm_twin;
    assert_int_equal(ts_load_latency_pair(g_cr.port, g_twin.port, HOST, "/", 300, 0, &warm, &warm_twin), 0);
    long fds_unloaded = count_fds(g_cr.pid);
    int64_t t0 = ts_now_ms();
    for (int cycle = 1; cycle <= p.cycles; cycle++) {
        measure_window(&p, "unloaded", cycle, &unloaded);
        loaded_window(&p, cycle, fds_unloaded, &loaded);
    }
    assert_int_equal(unloaded.errors + loaded.errors, 0);
    double ratio = median(loaded.ratio, loaded.n), control = median(unloaded.ratio, unloaded.n);
    double on_off = median(loaded.p99_us, loaded.n) / median(unloaded.p99_us, unloaded.n);
    fprintf(stderr, "unloaded windows: crouter median p99 %.0f us (max %.0f us), twin %.0f us; "
                    "median per-slice ratio %.2fx (the pair's balance, ~1)\n",
            median(unloaded.p99_us, unloaded.n), unloaded.max_us, median(unloaded.twin_p99_us, unloaded.n), control);
    fprintf(stderr, "loaded windows:   crouter median p99 %.0f us (max %.0f us), twin %.0f us\n",
            median(loaded.p99_us, loaded.n), loaded.max_us, median(loaded.twin_p99_us, loaded.n));
    fprintf(stderr, "crouter's median p99 loaded over unloaded windows (machine noise not paired): %.2fx\n", on_off);
    fprintf(stderr, "%ld keep-alive + %ld slowloris connections: loaded/unloaded p99 ratio %.2fx (median per-slice "
                    "ratio to the unloaded twin; limit 2x), %lld ms of cycles\n",
            p.conns, p.slow, ratio, (long long)(ts_now_ms() - t0));
    slice_set_free(&unloaded);
    slice_set_free(&loaded);
    if (ratio > 2.0)
        fail_msg("normal traffic's p99 under load is %.2fx that of the unloaded twin (median of %d slices; limit 2x)",
                 ratio, cap);
    assert_true(ts_crouter_alive(&g_cr));
    assert_true(ts_crouter_alive(&g_twin));
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
