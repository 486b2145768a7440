/* bench/nats_flood.c - a fast router.register publisher for bench/scale.
 *
 * Publishes gorouter-format registration messages with nats.c, as fast as the
 * connection takes them (nats.c batches publishes in its write buffer), or
 * at a fixed rate. Three modes:
 *
 *   nats_flood URL register  COUNT [FIRST [TTL_S]]   COUNT routes "r<i>.scale.local"
 *   nats_flood URL heartbeat URI PORT INTERVAL_MS SECONDS [TTL_S]
 *   nats_flood URL churn     URI PORTS RATE SECONDS  (PORTS: "p1,p2,...")
 *
 * register: route i (FIRST <= i < FIRST+COUNT) points to 127.0.0.1 on one of
 * the ports in $FLOOD_PORTS (comma separated, default 8080), chosen as
 * i % n, with its own private_instance_id; prints the publish time and rate
 * once the server has acknowledged everything (a flush round trip).
 * heartbeat: re-registers one endpoint every INTERVAL_MS for SECONDS.
 * churn: RATE pairs per second of router.unregister + router.register for
 * the endpoints of URI, one port after the other, so the pool always keeps
 * all but one of its endpoints; paced in 10 ms slices for SECONDS. With
 * FLOOD_SUBJECT_PREFIX=p it publishes p.unregister and p.register instead:
 * the same load on the publisher and nats-server with nothing for a router
 * to do (bench/scale's control runs).
 * Every mode ends by itself. Exit status 0 on success, 1 on a NATS error,
 * 2 on a usage error.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#define MAX_PORTS 64

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    nanosleep(&ts, NULL);
}

/* Parses "p1,p2,..." into ports; returns how many (0 on a bad list). */
static int parse_ports(const char *s, int *ports)
{
    int n = 0;
    while (*s && n < MAX_PORTS) {
        char *end;
        long p = strtol(s, &end, 10);
        if (end == s || p <= 0 || p > 65535)
            return 0;
        ports[n++] = (int)p;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return 0;
    }
    return n;
}

/* Formats one registration into buf (cap bytes); returns its length. */
static int format_register(char *buf, size_t cap, const char *uri, int port, const char *instance,
                           int ttl_s)
{
    return snprintf(buf, cap,
                    "{\"host\":\"127.0.0.1\",\"port\":%d,\"uris\":[\"%s\"],"
                    "\"app\":\"scale-app\",\"private_instance_id\":\"%s\","
                    "\"private_instance_index\":\"0\",\"stale_threshold_in_seconds\":%d,"
                    "\"protocol\":\"http1\",\"endpoint_updated_at_ns\":%" PRId64 "}",
                    port, uri, instance, ttl_s, wall_ns());
}

static int publish(natsConnection *nc, const char *subject, const char *data, int len)
{
    natsStatus s = natsConnection_Publish(nc, subject, data, len);
    if (s != NATS_OK) {
        fprintf(stderr, "nats_flood: publish %s: %s\n", subject, natsStatus_GetText(s));
        return -1;
    }
    return 0;
}

static int run_register(natsConnection *nc, long count, long first, int ttl_s)
{
    int ports[MAX_PORTS];
    const char *env = getenv("FLOOD_PORTS");
    int nports = parse_ports(env && *env ? env : "8080", ports);
    if (nports == 0) {
        fprintf(stderr, "nats_flood: bad FLOOD_PORTS\n");
        return 2;
    }
    char uri[64], inst[64], msg[512];
    int64_t t0 = now_ns();
    for (long i = first; i < first + count; i++) {
        snprintf(uri, sizeof uri, "r%ld.scale.local", i);
        snprintf(inst, sizeof inst, "scale-instance-%ld", i);
        int len = format_register(msg, sizeof msg, uri, ports[i % nports], inst, ttl_s);
        if (publish(nc, "router.register", msg, len) != 0)
            return 1;
    }
    int64_t t1 = now_ns();
    natsStatus s = natsConnection_FlushTimeout(nc, 60000);
    int64_t t2 = now_ns();
    if (s != NATS_OK) {
        fprintf(stderr, "nats_flood: flush: %s\n", natsStatus_GetText(s));
        return 1;
    }
    printf("{\"published\":%ld,\"publish_s\":%.4f,\"flushed_s\":%.4f,\"msgs_per_s\":%.0f}\n", count,
           (double)(t1 - t0) / 1e9, (double)(t2 - t0) / 1e9,
           (double)count * 1e9 / (double)(t2 - t0));
    return 0;
}

static int run_heartbeat(natsConnection *nc, const char *uri, int port, long interval_ms,
                         long seconds, int ttl_s)
{
    char msg[512];
    int64_t end = now_ns() + (int64_t)seconds * 1000000000;
    long sent = 0;
    while (now_ns() < end) {
        int len = format_register(msg, sizeof msg, uri, port, "heartbeat-instance", ttl_s);
        if (publish(nc, "router.register", msg, len) != 0)
            return 1;
        natsConnection_FlushTimeout(nc, 5000);
        sent++;
        sleep_ns(interval_ms * 1000000);
    }
    printf("{\"heartbeats\":%ld}\n", sent);
    return 0;
}

static int run_churn(natsConnection *nc, const char *uri, const char *port_list, long rate,
                     long seconds)
{
    int ports[MAX_PORTS];
    int nports = parse_ports(port_list, ports);
    if (nports == 0 || rate <= 0) {
        fprintf(stderr, "nats_flood: churn needs PORTS and RATE > 0\n");
        return 2;
    }
    char msg[512], inst[64], unregister_subject[128], register_subject[128];
    const char *prefix = getenv("FLOOD_SUBJECT_PREFIX");
    if (!prefix || !*prefix)
        prefix = "router";
    snprintf(unregister_subject, sizeof unregister_subject, "%s.unregister", prefix);
    snprintf(register_subject, sizeof register_subject, "%s.register", prefix);
    const int64_t slice_ns = 10 * 1000000;
    int64_t start = now_ns(), end = start + (int64_t)seconds * 1000000000;
    long pairs = 0;
    while (now_ns() < end) {
        /* Catch up to the pairs due by now, then sleep one slice. */
        long due = (long)((double)(now_ns() - start) * (double)rate / 1e9);
        for (; pairs < due; pairs++) {
            int port = ports[pairs % nports];
            snprintf(inst, sizeof inst, "bench-instance-%d", (int)(pairs % nports) + 1);
            int len = format_register(msg, sizeof msg, uri, port, inst, 3600);
            if (publish(nc, unregister_subject, msg, len) != 0 ||
                publish(nc, register_subject, msg, len) != 0)
                return 1;
        }
        natsConnection_Flush(nc);
        sleep_ns(slice_ns);
    }
    double elapsed_s = (double)(now_ns() - start) / 1e9;
    printf("{\"pairs\":%ld,\"seconds\":%.3f,\"pairs_per_s\":%.0f}\n", pairs, elapsed_s,
           (double)pairs / elapsed_s);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: nats_flood URL register COUNT [FIRST [TTL_S]]\n"
                    "       nats_flood URL heartbeat URI PORT INTERVAL_MS SECONDS [TTL_S]\n"
                    "       nats_flood URL churn URI PORTS RATE SECONDS\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    const char *url = argv[1], *mode = argv[2];
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK) /* a large write buffer: fewer, bigger writes while flooding */
        s = natsOptions_SetIOBufSize(opts, 1024 * 1024);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, "crouter-nats-flood");
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, opts);
    if (s != NATS_OK) {
        fprintf(stderr, "nats_flood: connect %s: %s\n", url, natsStatus_GetText(s));
        natsOptions_Destroy(opts);
        return 1;
    }
    int rc;
    if (strcmp(mode, "register") == 0 && argc >= 4)
        rc = run_register(nc, atol(argv[3]), argc > 4 ? atol(argv[4]) : 0,
                          argc > 5 ? atoi(argv[5]) : 3600);
    else if (strcmp(mode, "heartbeat") == 0 && argc >= 7)
        rc = run_heartbeat(nc, argv[3], atoi(argv[4]), atol(argv[5]), atol(argv[6]),
                           argc > 7 ? atoi(argv[7]) : 3600);
    else if (strcmp(mode, "churn") == 0 && argc >= 7)
        rc = run_churn(nc, argv[3], argv[4], atol(argv[5]), atol(argv[6]));
    else
        rc = usage();
    natsConnection_FlushTimeout(nc, 10000);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_Close();
    return rc;
}
