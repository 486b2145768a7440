/* test/support/ts_load.h - an epoll load client for the load and soak tests.
 *
 * One background thread with one epoll instance drives three kinds of
 * client connection to 127.0.0.1:port:
 *   - keep-alive: sends one request when connected, then idles on the open
 *     connection and sends another every keepalive_interval_ms (0 = never
 *     again); with closed_loop, the next request leaves as soon as the
 *     previous response is complete (steady load for soaks);
 *   - slowloris: sends a request line, then one header byte every
 *     slowloris_interval_ms and never finishes the head; reconnects when the
 *     server closes it (as an attacker would);
 * Responses are parsed just enough to frame them (status line,
 * Content-Length or chunked). The caller raises RLIMIT_NOFILE first
 * (ts_load_raise_nofile). Counters are read with ts_load_stats at any time.
 *
 * ts_load_latency measures sequential requests on one keep-alive connection
 * from the calling thread: the "normal traffic" whose percentiles a load
 * test compares with and without the background load. ts_load_latency_pair
 * alternates requests between two servers, so a loaded one and an unloaded
 * twin are measured in the same moments.
 */
#ifndef CR_TS_LOAD_H
#define CR_TS_LOAD_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ts_load ts_load_t;

typedef struct ts_load_opts {
    uint16_t port;
    const char *host;              /* Host header of every request */
    const char *path;              /* default "/" */
    int keepalive_conns;
    int keepalive_interval_ms;     /* mean gap between a connection's requests, jittered
                                      +-50% so they do not come in bursts; 0 = one request */
    bool closed_loop;              /* back-to-back requests on every keep-alive connection */
    bool spread_first_gap;         /* the gap after a connection's first response is uniform in
                                      [0, keepalive_interval_ms), so connections opened together
                                      reach the steady rate (conns / interval) at once instead of
                                      after interval/2 */
    int slowloris_conns;
    int slowloris_interval_ms;     /* default 300 */
    int max_inflight;              /* connects + requests in flight at once; default 256 */
} ts_load_opts_t;

typedef struct ts_load_stats {
    uint64_t requests;             /* sent by keep-alive connections */
    uint64_t responses_2xx;
    uint64_t responses_other;      /* any other status */
    uint64_t keepalive_errors;     /* refused, reset or closed by the server */
    uint64_t keepalive_open;       /* connected and answered at least once, still open */
    uint64_t slowloris_open;       /* connected, trickling */
    uint64_t slowloris_bytes;      /* header bytes trickled so far */
    uint64_t slowloris_closed;     /* closed by the server (then reopened) */
} ts_load_stats_t;

/* Raises this process's RLIMIT_NOFILE soft limit to want, first raising the
 * hard limit to want when that is below and the process may (root or
 * CAP_SYS_RESOURCE; otherwise the soft limit is capped by the hard one).
 * Returns the new soft limit. */
long ts_load_raise_nofile(long want);

/* Starts the client thread. NULL on failure (out of fds, epoll). */
ts_load_t *ts_load_start(const ts_load_opts_t *opts);

/* Polls until every keep-alive connection has had its first response and
 * every slowloris connection is open, or timeout_ms passes. */
bool ts_load_wait_established(ts_load_t *l, int timeout_ms);

void ts_load_stats(ts_load_t *l, ts_load_stats_t *out);

/* Stops the thread, closes every connection, frees l (NULL is fine). */
void ts_load_stop(ts_load_t *l);

typedef struct ts_latency {
    long n;                        /* requests measured */
    long errors;                   /* non-200 answers or broken connections */
    double p50_us, p99_us, max_us;
} ts_latency_t;

/* Sequential GETs (Host: host, path) on one keep-alive connection,
 * reconnecting if the server closes it: at least n of them and for at least
 * min_ms milliseconds. 0, or -1 when nothing worked. */
int ts_load_latency(uint16_t port, const char *host, const char *path, int n, int min_ms, ts_latency_t *out);

/* The same on two servers at once, alternating one request to port_a, one
 * to port_b: at least n on each and for at least min_ms. Both see the same
 * moments of the machine, so one can serve as the other's control. 0, or -1
 * when nothing worked on either. */
int ts_load_latency_pair(uint16_t port_a, uint16_t port_b, const char *host, const char *path, int n, int min_ms,
                         ts_latency_t *out_a, ts_latency_t *out_b);

#endif
