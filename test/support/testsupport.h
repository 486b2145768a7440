/* test/support/testsupport.h - helpers for crouter's integration tests.
 *
 * Everything a test needs to put a real crouter between libcurl (or a raw
 * socket) and fake backends, with a real nats-server feeding the registry:
 *
 *   - free loopback ports, a per-run temp dir, monotonic time;
 *   - process spawning with a registry of every spawned PID and a cleanup
 *     hook (atexit + fatal signals + PR_SET_PDEATHSIG) that kills them all,
 *     even when an assertion fails half-way through a test;
 *   - nats-server start/stop/restart on the same port;
 *   - crouter start from a generated gorouter-style YAML config, readiness
 *     by polling /health with a deadline, stop with its exit status;
 *   - nats.c helpers publishing gorouter's register/unregister JSON;
 *   - libcurl and raw-socket HTTP clients returning status, headers, body;
 *   - fake_backend processes (see fake_backend.c for what they answer).
 *
 * Nothing here sleeps to "let things settle": every wait polls a condition
 * until a deadline. Single-threaded use from the test's main thread, except
 * the HTTP clients, which are thread-safe per call.
 */
#ifndef CR_TEST_SUPPORT_H
#define CR_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>
#include <jansson.h>
#include <nats/nats.h>

/* ---------------------------------------------------------------- basics */

/* Must be called first in main(): installs the cleanup hook, creates the
 * temp dir, initialises libcurl and nats.c. */
void ts_init(const char *suite_name);

/* Call with cmocka's failure count as main()'s last act; returns it. On
 * success the temp dir is removed; on failure the tail of every crouter and
 * nats-server log is printed and the temp dir kept. */
int ts_finish(int failures);

/* The run's temp dir ("/tmp/crouter-it-<suite>-XXXXXX"). */
const char *ts_tmpdir(void);

/* A fresh path inside the temp dir: "<tmpdir>/<prefix>-<n><suffix>". */
void ts_tmp_path(char *out, size_t cap, const char *prefix, const char *suffix);

/* A loopback port nothing listens on right now (bound and released; a
 * process-wide counter avoids handing the same port out twice). */
uint16_t ts_free_port(void);

int64_t ts_now_ms(void);       /* monotonic */
int64_t ts_wall_ms(void);      /* epoch milliseconds */
void ts_sleep_ms(int ms);      /* only for pacing loops, never for waiting on a condition */

/* FNV-1a 64 over data, continuing from h (start with TS_FNV_INIT). */
#define TS_FNV_INIT 0xcbf29ce484222325ULL
uint64_t ts_fnv1a(uint64_t h, const void *data, size_t len);

/* Deterministic body bytes: byte i of a pattern stream. Fills len bytes
 * starting at stream offset off. The fake backend uses the same function. */
void ts_pattern_fill(unsigned char *buf, uint64_t off, size_t len);

/* FNV of the first len bytes of the pattern stream. */
uint64_t ts_pattern_fnv(uint64_t len);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455): out gets a
 * NUL-terminated base64 string (29 bytes with the NUL). */
void ts_ws_accept(const char *key, char out[32]);

/* Reads a whole file (NUL-terminated, malloc'd); NULL when missing. */
char *ts_read_file(const char *path, size_t *len_out);

/* Remembers a log file; ts_finish() prints its tail when a test failed. */
void ts_register_log(const char *title, const char *path);

/* Prints the last max_bytes of a file to stderr under a banner. */
void ts_print_file_tail(const char *title, const char *path, size_t max_bytes);

/* ------------------------------------------------------------ processes */

/* Spawns argv[0] (searched in PATH) with stdout and stderr appended to
 * log_path (or /dev/null when NULL). The child is registered for cleanup and
 * dies with the test process. Returns the pid, or -1. */
pid_t ts_spawn(const char *const argv[], const char *log_path);

/* Sends sig, waits up to timeout_ms for the exit (then SIGKILL), reaps and
 * unregisters. Returns the wait status (as from waitpid) or -1. */
int ts_stop_process(pid_t pid, int sig, int timeout_ms);

/* Non-blocking: true when pid has exited (it is then reaped and unregistered
 * and *status set). */
bool ts_process_exited(pid_t pid, int *status);

/* Waits up to timeout_ms for pid to exit by itself; returns the wait status
 * or -1 on timeout (the process is left running). */
int ts_wait_process(pid_t pid, int timeout_ms);

/* Pipe fds pid holds beyond 0-2 (crouter's splice pipes: two per pipe). */
int ts_count_pipe_fds(pid_t pid);

/* Kills every registered process (SIGKILL) and reaps them. Also the
 * atexit/signal hook. */
void ts_kill_all(void);

/* Polls until something accepts TCP connections on 127.0.0.1:port. */
bool ts_wait_port_open(uint16_t port, int timeout_ms);

/* Polls until nothing accepts on 127.0.0.1:port. */
bool ts_wait_port_closed(uint16_t port, int timeout_ms);

/* Runs a command to completion (no shell), capturing stdout+stderr into a
 * malloc'd string. Returns the exit code (or -1; 128+sig when killed). */
int ts_run_capture(const char *const argv[], int timeout_ms, char **output);

/* Runs `openssl` with args (NULL-terminated, without "openssl"; at most 38)
 * for test certificates. Returns 0, or -1 after printing its output. */
int ts_openssl(const char *const args[]);

/* ----------------------------------------------------------- nats-server */

typedef struct ts_nats {
    pid_t pid;
    uint16_t port;
    bool trace;            /* started with -V: every protocol line is logged */
    char url[64];          /* nats://127.0.0.1:<port> */
    char log_path[512];
    const char *const *extra_args; /* borrowed, NULL-terminated; passed again on restart */
} ts_nats_t;

/* Starts nats-server -a 127.0.0.1 -p <free port> [-V], waits until it
 * accepts. 0 or -1. */
int ts_nats_start(ts_nats_t *n, bool trace);

/* The same on a given port (e.g. one a crouter already tries to reach). */
int ts_nats_start_on_port(ts_nats_t *n, uint16_t port, bool trace);

/* The same with extra nats-server arguments (TLS, cluster), kept in n for
 * restarts: extra_args (NULL-terminated) must outlive n. */
int ts_nats_start_with_args(ts_nats_t *n, uint16_t port, const char *const extra_args[]);

/* Starts n again on its port with its arguments after it was stopped or
 * killed (new log file). 0 or -1. */
int ts_nats_start_again(ts_nats_t *n);

/* SIGTERM and wait; the port is kept in n for a restart. */
int ts_nats_stop(ts_nats_t *n);

/* Stop, then start again on the same port (new log file). 0 or -1. */
int ts_nats_restart(ts_nats_t *n);

/* A nats.c connection that reconnects forever, every 50 ms. */
natsConnection *ts_nats_connect(const ts_nats_t *n);

/* Waits until nc is connected (after a server restart) and flushed. */
bool ts_nats_wait_connected(natsConnection *nc, int timeout_ms);

void ts_nats_close(natsConnection *nc);

/* One endpoint registration, gorouter's router.register JSON. Unset string
 * fields are omitted; uris is NULL-terminated. */
typedef struct ts_route {
    const char *host;                 /* default "127.0.0.1" */
    uint16_t port;
    const char *uris[8];
    const char *app;
    const char *private_instance_id;
    const char *private_instance_index;
    int stale_threshold_in_seconds;   /* 0 = omitted */
    const char *tags_json;            /* e.g. "{\"component\":\"x\"}" */
    const char *lb_algo;              /* options.loadbalancing */
} ts_route_t;

/* Builds the message JSON (malloc'd). */
char *ts_route_json(const ts_route_t *r);

/* Publishes router.register / router.unregister and flushes. 0 or -1. */
int ts_nats_register(natsConnection *nc, const ts_route_t *r);
int ts_nats_unregister(natsConnection *nc, const ts_route_t *r);

/* Publishes raw bytes on a subject and flushes. */
int ts_nats_publish(natsConnection *nc, const char *subject, const void *data, size_t len);

/* ---------------------------------------------------------------- crouter */

typedef struct ts_crouter {
    pid_t pid;
    uint16_t port;          /* proxy */
    uint16_t status_port;
    uint16_t routes_port;
    char user[32];
    char pass[32];
    char config_path[512];
    char log_path[512];
    char access_log_path[512];
    int exit_status;        /* wait status after ts_crouter_stop(), -1 before */
} ts_crouter_t;

/* Path of the crouter binary: $CROUTER_BIN, else the build's. */
const char *ts_crouter_bin(void);
/* Path of crouterctl: $CROUTERCTL_BIN, else the build's. */
const char *ts_crouterctl_bin(void);
/* Path of fake_backend: $FAKE_BACKEND_BIN, else the build's. */
const char *ts_fake_backend_bin(void);

/* Writes the config and spawns crouter; does not wait. extra_yaml (may be
 * NULL) is appended; a top-level key it sets replaces the generated one.
 * Defaults: free ports, status on 127.0.0.1 with user/pass, NATS from nats
 * (may be NULL: then a port where nothing listens), workers 2,
 * start_response_delay_interval 1s, endpoint_timeout 5s,
 * endpoint_dial_timeout 1s, logging.level info, access_log.file in the temp
 * dir. 0 or -1. */
int ts_crouter_spawn(ts_crouter_t *cr, const ts_nats_t *nats, const char *extra_yaml);

/* Polls /health until 200 (fails fast when crouter exits). */
bool ts_crouter_wait_healthy(ts_crouter_t *cr, int timeout_ms);

/* spawn + wait_healthy; on failure prints the log and returns -1. */
int ts_crouter_start(ts_crouter_t *cr, const ts_nats_t *nats, const char *extra_yaml);

/* SIGTERM, wait up to timeout_ms (then SIGKILL); returns the wait status and
 * prints the log tail when it is not a clean exit 0. */
int ts_crouter_stop(ts_crouter_t *cr, int timeout_ms);

/* ts_crouter_stop(), and true only when crouter exited by itself with
 * status 0 (a clean drain), which every suite's teardown requires. */
bool ts_crouter_stop_clean(ts_crouter_t *cr, int timeout_ms);

/* True while the process runs. */
bool ts_crouter_alive(ts_crouter_t *cr);

/* GET http://127.0.0.1:<routes_port>/routes with auth, parsed. NULL on
 * failure. */
json_t *ts_crouter_routes(const ts_crouter_t *cr);

/* Polls /routes until route key has exactly n endpoints (n = 0: key absent). */
bool ts_crouter_wait_route(const ts_crouter_t *cr, const char *key, size_t n, int timeout_ms);

/* GET /varz with auth, parsed. */
json_t *ts_crouter_varz(const ts_crouter_t *cr);

/* --------------------------------------------------------- fake backends */

typedef struct ts_backend {
    pid_t pid;
    uint16_t port;
    char name[32];
    char log_path[512];
} ts_backend_t;

/* Starts fake_backend --port <free> --name name [extra args...] (NULL-
 * terminated list) and waits until it accepts. 0 or -1. */
int ts_backend_start(ts_backend_t *b, const char *name, const char *const extra_args[]);
void ts_backend_stop(ts_backend_t *b);

/* Requests the backend saw (excluding /count), straight from the backend.
 * -1 on error. smuggled (may be NULL) gets how many targets contained
 * "smuggled". */
long ts_backend_count(const ts_backend_t *b, long *smuggled);

/* ------------------------------------------------------------ HTTP client */

typedef struct ts_header {
    char *name;
    char *value;
} ts_header_t;

typedef struct ts_resp {
    long status;            /* 0 when no response */
    int curl_code;          /* CURLE_* of the transfer (raw client: 0 or -1) */
    ts_header_t *headers;   /* of the final response */
    size_t n_headers;
    char *body;             /* NUL-terminated; NULL with sink_checksum */
    size_t body_len;
    uint64_t body_fnv;      /* FNV-1a of the body (always computed) */
    long connects;          /* new connections curl made for this request */
    double total_s;
} ts_resp_t;

typedef struct ts_req {
    const char *method;             /* default GET (POST when a body is given) */
    const char *host;               /* Host header value; NULL = "127.0.0.1:<port>" */
    const char *path;               /* default "/" */
    const char *headers[24];        /* extra "Name: value" lines, NULL-terminated */
    const char *body;               /* request body */
    size_t body_len;
    uint64_t upload_pattern_len;    /* >0: body is this many pattern bytes */
    bool chunked_upload;            /* Transfer-Encoding: chunked */
    const char *userpwd;            /* basic auth "user:pass" */
    bool sink_checksum;             /* don't keep the body, only len + fnv */
    long timeout_ms;                /* default 10000 */
} ts_req_t;

/* One request to http://127.0.0.1:port<path>. curl may be NULL (a fresh
 * handle is used) or a handle kept for keep-alive reuse. Returns 0 when a
 * response arrived, else -1 (out->curl_code says why). */
int ts_http(CURL *curl, uint16_t port, const ts_req_t *req, ts_resp_t *out);

/* Convenience GET with a Host header. */
int ts_get(uint16_t port, const char *host, const char *path, ts_resp_t *out);

/* First header value with this name (case-insensitive), or NULL. */
const char *ts_resp_header(const ts_resp_t *r, const char *name);
/* Number of headers with this name; nth value (0-based). */
size_t ts_resp_header_count(const ts_resp_t *r, const char *name);
const char *ts_resp_header_nth(const ts_resp_t *r, const char *name, size_t nth);

/* The Set-Cookie value (the whole line after "Set-Cookie: ") whose cookie
 * name is exactly cookie_name, or NULL. */
const char *ts_resp_set_cookie(const ts_resp_t *r, const char *cookie_name);

/* Parses the body as the fake backend's echo JSON (NULL when it is not). */
json_t *ts_resp_json(const ts_resp_t *r);

void ts_resp_free(ts_resp_t *r);

/* Headers the backend saw, from its echo JSON: first value / count. */
const char *ts_echo_header(json_t *echo, const char *name);
size_t ts_echo_header_count(json_t *echo, const char *name);
const char *ts_echo_str(json_t *echo, const char *key);

/* ------------------------------------------------------------- raw socket */

typedef struct ts_conn {
    int fd;
    char *buf;              /* bytes read but not consumed */
    size_t len, cap;
    bool eof;
} ts_conn_t;

/* Connects to 127.0.0.1:port (blocking socket). 0 or -1. */
int ts_conn_open(ts_conn_t *c, uint16_t port);
int ts_conn_send(ts_conn_t *c, const void *data, size_t len);
int ts_conn_send_str(ts_conn_t *c, const char *s);

/* Reads one HTTP response (status line, headers, body framed by
 * Content-Length, chunked or close; none for 1xx/204/304 or when head_only).
 * 0, or -1 on timeout/EOF/garbage. */
int ts_conn_read_response(ts_conn_t *c, ts_resp_t *out, bool head_only, int timeout_ms);

/* Reads exactly len bytes into out. 0 or -1. */
int ts_conn_read_exact(ts_conn_t *c, void *out, size_t len, int timeout_ms);

/* True when the peer closes (EOF or reset) within timeout_ms; bytes that
 * arrive meanwhile are counted into *extra_bytes (may be NULL). */
bool ts_conn_wait_closed(ts_conn_t *c, int timeout_ms, size_t *extra_bytes);

void ts_conn_close(ts_conn_t *c);

#endif
