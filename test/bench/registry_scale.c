/* test/bench/registry_scale.c - the registry's share of issue 8 item 5,
 * measured without NATS or sockets.
 *
 * Prints figures (no pass/fail beyond sanity checks):
 *   decode    cr_register_msg_decode of N bench/nats_flood-style messages.
 *   register  cr_registry_register of the decoded messages (new routes).
 *   absorb    decode + register + deinit per message, as on_router_msg does.
 *   memory    heap bytes per endpoint (mallinfo2 before/after), and the
 *             bytes of strings each one stores.
 *   prune     lookup latency percentiles on reader threads while one prune
 *             removes N endpoints, vs the same readers without a prune.
 *
 * Usage: registry_scale [N [LEVEL]] (default 100000 and "warn"; "info" logs
 * each new route as crouter's default configuration does). Run under a Release build; the
 * bench label keeps it out of plain ctest runs.
 */
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/defs.h"
#include "common/log.h"
#include "registry/registry.h"

#define SEC CR_NS_PER_SEC
#define READERS 2

static int format_msg(char *buf, size_t cap, long i, int ttl_s)
{
    return snprintf(buf, cap,
                    "{\"host\":\"127.0.0.1\",\"port\":%ld,\"uris\":[\"r%ld.scale.local\"],"
                    "\"app\":\"scale-app\",\"private_instance_id\":\"scale-instance-%ld\","
                    "\"private_instance_index\":\"0\",\"stale_threshold_in_seconds\":%d,"
                    "\"protocol\":\"http1\",\"endpoint_updated_at_ns\":1700000000000000000}",
                    61000 + i % 4, i, i, ttl_s);
}

static cr_registry_t *new_registry(void)
{
    cr_registry_options_t o = {
        .droplet_stale_threshold_ns = 120 * SEC,
        .default_lb_algo = CR_LB_ROUND_ROBIN,
    };
    return cr_registry_create(&o);
}

static double secs(int64_t a, int64_t b)
{
    return (double)(b - a) / 1e9;
}

static size_t heap_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static char **make_payloads(long n, int ttl_s, size_t **lens)
{
    char **p = malloc((size_t)n * sizeof *p);
    *lens = malloc((size_t)n * sizeof **lens);
    char buf[512];
    for (long i = 0; i < n; i++) {
        int len = format_msg(buf, sizeof buf, i, ttl_s);
        p[i] = malloc((size_t)len + 1);
        memcpy(p[i], buf, (size_t)len + 1);
        (*lens)[i] = (size_t)len;
    }
    return p;
}

static void phase_absorb(long n)
{
    size_t *lens;
    char **pl = make_payloads(n, 120, &lens);
    cr_register_msg_t *msgs = malloc((size_t)n * sizeof *msgs);
    char err[160];

    int64_t t0 = cr_now_mono_ns();
    for (long i = 0; i < n; i++) {
        if (cr_register_msg_decode(pl[i], lens[i], &msgs[i], err, sizeof err) != 0) {
            fprintf(stderr, "decode: %s\n", err);
            exit(1);
        }
    }
    int64_t t1 = cr_now_mono_ns();
    cr_registry_t *reg = new_registry();
    int64_t now = cr_now_mono_ns();
    for (long i = 0; i < n; i++)
        cr_registry_register(reg, &msgs[i], now);
    int64_t t2 = cr_now_mono_ns();
    for (long i = 0; i < n; i++)
        cr_register_msg_deinit(&msgs[i]);
    cr_registry_destroy(reg);

    /* The whole path, one message at a time, as on_router_msg runs it. */
    reg = new_registry();
    int64_t t3 = cr_now_mono_ns();
    for (long i = 0; i < n; i++) {
        cr_register_msg_t m;
        if (cr_register_msg_decode(pl[i], lens[i], &m, err, sizeof err) == 0) {
            cr_registry_register(reg, &m, cr_now_mono_ns());
            cr_register_msg_deinit(&m);
        }
    }
    int64_t t4 = cr_now_mono_ns();
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    cr_registry_destroy(reg);

    printf("decode    %ld msgs %.3f s = %.2f us/msg\n", n, secs(t0, t1), secs(t0, t1) * 1e6 / (double)n);
    printf("register  %ld new routes %.3f s = %.2f us/msg\n", n, secs(t1, t2),
           secs(t1, t2) * 1e6 / (double)n);
    printf("absorb    %ld msgs %.3f s = %.2f us/msg = %.0f msgs/s (endpoints %" PRIu64 ")\n", n,
           secs(t3, t4), secs(t3, t4) * 1e6 / (double)n, (double)n / secs(t3, t4), st.endpoints);
    for (long i = 0; i < n; i++)
        free(pl[i]);
    free(pl);
    free(lens);
    free(msgs);
}

static void phase_memory(long n)
{
    size_t *lens;
    char **pl = make_payloads(n, 120, &lens);
    char err[160];
    cr_registry_t *reg = new_registry();
    /* Warm up: RCU threads, first table buckets. */
    malloc_trim(0);
    size_t h0 = heap_used();
    size_t str_bytes = 0;
    for (long i = 0; i < n; i++) {
        cr_register_msg_t m;
        if (cr_register_msg_decode(pl[i], lens[i], &m, err, sizeof err) != 0)
            exit(1);
        cr_registry_register(reg, &m, cr_now_mono_ns());
        /* what the endpoint and route must store as text (NULs excluded):
         * route key, address, app, instance id and index, protocol */
        char addr[64];
        str_bytes += strlen(m.uris[0]) + (size_t)snprintf(addr, sizeof addr, "%s:%u", m.host, m.port) +
                     strlen(m.app) + strlen(m.private_instance_id) +
                     strlen(m.private_instance_index) + strlen(m.protocol);
        cr_register_msg_deinit(&m);
    }
    /* Let call_rcu free the superseded snapshots before measuring. */
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    size_t h1 = heap_used();
    double per = (double)(h1 - h0) / (double)n;
    double strs = (double)str_bytes / (double)n;
    printf("memory    %ld endpoints: heap +%.1f MiB = %.0f bytes/endpoint (strings %.0f, so %.0f beyond them)\n",
           n, (double)(h1 - h0) / 1048576.0, per, strs, per - strs);
    cr_registry_destroy(reg);
    for (long i = 0; i < n; i++)
        free(pl[i]);
    free(pl);
    free(lens);
}

typedef struct {
    cr_registry_t *reg;
    long n_hosts;
    _Atomic bool *stop;
    int64_t *lat;
    size_t lat_len, lat_cap;
    unsigned seed;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    char host[64];
    cr_registry_reader_thread_register();
    while (!atomic_load_explicit(r->stop, memory_order_relaxed)) {
        /* One steady route and random others, as a worker sees traffic. */
        r->seed = r->seed * 1103515245u + 12345u;
        long i = (long)(r->seed >> 8) % r->n_hosts;
        int hl = (r->seed & 1) ? snprintf(host, sizeof host, "steady.local")
                               : snprintf(host, sizeof host, "r%ld.scale.local", i);
        int64_t t0 = cr_now_mono_ns();
        cr_registry_read_lock();
        const cr_route_t *rt = cr_registry_lookup(r->reg, host, (size_t)hl, "/", 1);
        if (rt)
            (void)cr_route_pool(rt)->len;
        cr_registry_read_unlock();
        int64_t d = cr_now_mono_ns() - t0;
        if (r->lat_len < r->lat_cap)
            r->lat[r->lat_len++] = d;
    }
    cr_registry_reader_thread_unregister();
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Runs READERS lookup threads while fn runs on this thread (or for idle_ns
 * when fn is NULL); prints p50/p99/p99.9/max of the lookups. */
static void with_readers(const char *label, cr_registry_t *reg, long n_hosts,
                         size_t (*fn)(cr_registry_t *, int64_t), int64_t fn_now, int64_t idle_ns)
{
    _Atomic bool stop = false;
    reader_t rs[READERS];
    pthread_t th[READERS];
    for (int i = 0; i < READERS; i++) {
        rs[i] = (reader_t){.reg = reg, .n_hosts = n_hosts, .stop = &stop, .lat_cap = 20 * 1000 * 1000,
                           .seed = (unsigned)(i * 7919 + 1)};
        rs[i].lat = malloc(rs[i].lat_cap * sizeof *rs[i].lat);
        pthread_create(&th[i], NULL, reader_main, &rs[i]);
    }
    int64_t t0 = cr_now_mono_ns();
    size_t removed = 0;
    if (fn) {
        removed = fn(reg, fn_now);
    } else {
        struct timespec ts = {.tv_sec = idle_ns / SEC, .tv_nsec = idle_ns % SEC};
        nanosleep(&ts, NULL);
    }
    int64_t t1 = cr_now_mono_ns();
    atomic_store(&stop, true);
    size_t total = 0;
    for (int i = 0; i < READERS; i++) {
        pthread_join(th[i], NULL);
        total += rs[i].lat_len;
    }
    int64_t *all = malloc(total * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < READERS; i++) {
        memcpy(all + k, rs[i].lat, rs[i].lat_len * sizeof *all);
        k += rs[i].lat_len;
        free(rs[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_i64);
    printf("%-9s %.3f s, removed %zu; %zu lookups on %d threads: p50 %.2f us p99 %.2f us "
           "p99.9 %.2f us max %.2f us\n",
           label, secs(t0, t1), removed, total, READERS, (double)all[total / 2] / 1e3,
           (double)all[total * 99 / 100] / 1e3, (double)all[total * 999 / 1000] / 1e3,
           (double)all[total - 1] / 1e3);
    free(all);
}

static void phase_prune(long n)
{
    size_t *lens;
    char **pl = make_payloads(n, 10, &lens);
    char err[160];
    cr_registry_t *reg = new_registry();
    int64_t t = 1000 * SEC;
    const char *steady = "{\"host\":\"127.0.0.1\",\"port\":61000,\"uris\":[\"steady.local\"]}";
    cr_register_msg_t m;
    cr_register_msg_decode(steady, strlen(steady), &m, err, sizeof err);
    cr_registry_register(reg, &m, t + 100 * SEC);
    cr_register_msg_deinit(&m);
    for (long i = 0; i < n; i++) {
        if (cr_register_msg_decode(pl[i], lens[i], &m, err, sizeof err) != 0)
            exit(1);
        cr_registry_register(reg, &m, t);
        cr_register_msg_deinit(&m);
    }
    with_readers("no-prune", reg, n, NULL, 0, SEC / 2);
    with_readers("prune", reg, n, cr_registry_prune, t + 20 * SEC, 0);
    cr_registry_destroy(reg);
    for (long i = 0; i < n; i++)
        free(pl[i]);
    free(pl);
    free(lens);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    if (n <= 0)
        n = 100000;
    cr_log_level_t level = CR_LOG_WARN;
    if (argc > 2 && cr_log_level_parse(argv[2], &level) != 0)
        level = CR_LOG_WARN;
    cr_log_set_level(level);
    phase_absorb(n);
    phase_memory(n);
    phase_prune(n);
    return 0;
}
