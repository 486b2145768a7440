/* router/internal.h - shared by router/ only; other folders keep out.
 *
 * The types the data-path files share: the per-worker loop (worker.c), the
 * client connection and its exchange (proxy.c), backend connections and
 * their idle pools (upstream.c), balancing (balancer.c) and the router
 * itself (router.c). See router/DESIGN.md for the architecture.
 */
#ifndef CR_ROUTER_INTERNAL_H
#define CR_ROUTER_INTERNAL_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "common/defs.h"
#include "config/config.h"
#include "registry/registry.h"
#include "router/access_log.h"
#include "router/counters.h"
#include "router/errors.h"
#include "router/http1.h"
#include "router/persistence.h"
#include "router/router.h"
#include "router/sticky.h"
#include "router/tls.h"

/* --- Tunables ------------------------------------------------------------ */

#define CR_BUF_SIZE            (16 * 1024)  /* pooled I/O buffer */
#define CR_BUF_POOL_KEEP       512          /* free pooled buffers kept per worker */
#define CR_BULK_BUF_SIZE       (64 * 1024)  /* a large upload's copying buffer (proxy.c) */
#define CR_BULK_POOL_KEEP      32           /* free bulk buffers kept per worker */
#define CR_RESP_MAX_HEAD       (64 * 1024)  /* response head limit (then 502) */
#define CR_RESP_MAX_HEADERS    256
#define CR_IDLE_PER_ENDPOINT   64           /* idle backend connections per address */
#define CR_IDLE_PER_WORKER     10000        /* idle backend connections per worker */
#define CR_IDLE_BUCKETS        4096         /* idle pool hash buckets (power of two) */
#define CR_UPSTREAM_IDLE_NS    (90 * CR_NS_PER_SEC)
#define CR_MAX_TRIED           8            /* endpoints remembered for retry exclusion */
#define CR_EVENTS_PER_WAIT     256
#define CR_REASON_CAP          160
/* Large plain-TCP bodies move through a pipe with splice(2) (splice.c). */
#define CR_SPLICE_MIN          (64 * 1024)  /* Content-Length bodies with this much left */
#define CR_PIPE_SIZE           (256 * 1024) /* asked of F_SETPIPE_SZ: the bytes one pipe holds */
#define CR_PIPE_MIN_SIZE       (64 * 1024)  /* a smaller pipe (pipe quota reached) is not used */
#define CR_PIPE_POOL_KEEP      64           /* empty pipes kept per worker */
#define CR_PIPES_PER_WORKER    1024         /* pipes open per worker at most (cr_pipe_limit) */

/* --- Timers: a hashed wheel with embedded entries -------------------------- */

#define CR_TICK_SHIFT   23                  /* a tick is 2^23 ns, about 8.4 ms */
#define CR_WHEEL_SLOTS  4096                /* about 34 s per turn; later deadlines wait a turn */

typedef enum { CR_TIMER_CLIENT = 1, CR_TIMER_UPSTREAM } cr_timer_kind_t;

typedef struct cr_timer {
    struct cr_timer *next;
    struct cr_timer **pprev;      /* NULL when not armed */
    int64_t deadline_ns;          /* monotonic */
    uint8_t kind;                 /* cr_timer_kind_t: which struct embeds it */
} cr_timer_t;

typedef struct cr_wheel {
    cr_timer_t *slots[CR_WHEEL_SLOTS];
    int64_t cur_tick;             /* last tick processed */
    uint32_t armed;
} cr_wheel_t;

/* --- Buffers --------------------------------------------------------------- */

/* A byte window [start, end) in data[0, cap). Pooled buffers are CR_BUF_SIZE
 * and come from the worker's free list; larger ones (big heads) are
 * malloc'd and freed when released. */
typedef struct cr_buf {
    char *data;                   /* owned (pooled or heap); NULL when released */
    uint32_t cap;
    uint32_t start;
    uint32_t end;
} cr_buf_t;

/* A pipe that carries body bytes between two sockets (splice.c): taken
 * from the worker's pool when a large body starts, returned when that body
 * ends; closed instead when bytes are left in it or the connection closes. */
typedef struct cr_pipe {
    int fds[2];                   /* owned: read end, write end (valid when open) */
    uint32_t bytes;               /* in the pipe, not yet written out */
    uint32_t cap;                 /* pipe size */
    bool open;
} cr_pipe_t;

/* --- Epoll registrations --------------------------------------------------- */

typedef enum { CR_IO_LISTENER = 1, CR_IO_WAKE, CR_IO_CLIENT, CR_IO_UPSTREAM, CR_IO_TLS_LISTENER } cr_io_kind_t;

/* Edge-triggered readiness as last learnt: set by events, cleared when a
 * read or write comes up short. */
typedef struct cr_io {
    int fd;                       /* owned; -1 when closed */
    uint8_t kind;                 /* cr_io_kind_t */
    bool readable;
    bool writable;
    bool hup;                     /* RDHUP/HUP/ERR seen */
    bool eof;                     /* read returned 0 */
    bool rd_wants_write;          /* TLS: the last read needs the socket writable first */
    bool wr_wants_read;           /* TLS: the last write needs the socket readable first */
    SSL *ssl;                     /* owned: the TLS connection on fd, or NULL (plain) */
} cr_io_t;

typedef struct cr_worker cr_worker_t;
typedef struct cr_conn cr_conn_t;
typedef struct cr_upconn cr_upconn_t;

/* --- Backend connections (upstream.c) ------------------------------------- */

typedef enum {
    CR_US_CONNECTING = 0,         /* non-blocking connect in progress; dial timer */
    CR_US_TLS_HANDSHAKE,          /* connected, TLS handshake in progress; dial timer still armed */
    CR_US_CONNECT_FAILED,         /* dial failed; the owner retries or answers 502 */
    CR_US_SENDING,                /* bound; request being written */
    CR_US_RECEIVING,              /* bound; request written, response being read */
    CR_US_TUNNEL,                 /* after a 101: raw bytes both ways */
    CR_US_IDLE,                   /* in the keep-alive pool; idle timer */
    CR_US_CLOSED,                 /* fd closed; reaped at the end of the iteration */
} cr_upstream_state_t;

typedef union cr_sockaddr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
} cr_sockaddr_t;

struct cr_upconn {
    cr_io_t io;
    cr_worker_t *w;
    cr_upstream_state_t state;
    cr_timer_t timer;             /* dial timeout or pool idle timeout */
    cr_conn_t *owner;             /* borrowed: the bound client connection; NULL when idle */
    cr_upconn_t *b_next, *b_prev; /* idle pool hash bucket */
    cr_upconn_t *l_next, *l_prev; /* worker-wide idle list, most recent first */
    cr_upconn_t *reap_next;
    cr_sockaddr_t addr;
    socklen_t addr_len;
    uint32_t key_hash;
    int err;                      /* errno of a failed dial */
    bool reused;                  /* taken from the idle pool for this request */
    uint64_t tls_key;             /* TLS endpoint: session and pool key (address + SAN); 0 = plain */
    cr_tls_failure_t tls_fail;    /* why the TLS dial failed (kind NONE when it did not) */
};

const char *cr_upstream_state_name(cr_upstream_state_t s);
/* A connection to ep for owner: taken from the idle pool, else dialled.
 * Returns NULL only when no socket could be created (errno in *err). The
 * result is CONNECTING, SENDING (pooled or connected at once) or
 * CONNECT_FAILED (refused at once; u->err). */
cr_upconn_t *cr_upstream__acquire(cr_worker_t *w, const cr_endpoint_t *ep, cr_conn_t *owner,
                                  bool allow_pooled, int *err);
/* The bound connection became readable/writable after a connect: resolves
 * CONNECTING into SENDING, TLS_HANDSHAKE (TLS endpoints) or CONNECT_FAILED,
 * and advances TLS_HANDSHAKE into SENDING or CONNECT_FAILED (tls_fail set). */
void cr_upstream__check_connect(cr_upconn_t *u);
/* Returns a finished connection to the idle pool (or closes it when the
 * pool for its address or the worker is full). */
void cr_upstream__release_idle(cr_upconn_t *u);
/* Closes the fd and queues the struct for reaping. Idempotent. */
void cr_upstream__close(cr_upconn_t *u);
void cr_upstream__on_event(cr_upconn_t *u, uint32_t events);
void cr_upstream__on_timer(cr_upconn_t *u);
/* Closes every idle connection of the worker, and its pooled splice pipes. */
void cr_upstream__close_all_idle(cr_worker_t *w);
/* Closes idle connections to the address of u (after one turned out stale). */
void cr_upstream__close_idle_like(cr_worker_t *w, const cr_sockaddr_t *addr, socklen_t len);

/* --- Balancing (balancer.c) ------------------------------------------------ */

typedef struct cr_pick_opts {
    int64_t now_ns;               /* monotonic */
    int64_t fail_window_ns;       /* skip endpoints failed within this (droplet_stale_threshold/4) */
    uint32_t max_conns;           /* per endpoint; 0 = unlimited */
    cr_endpoint_t *const *exclude;/* endpoints already tried by this request */
    uint32_t exclude_len;
} cr_pick_opts_t;

typedef struct cr_pick_result {
    cr_endpoint_t *ep;            /* borrowed from the pool (read section); NULL on error */
    cr_proxy_error_t err;         /* NONE, NO_ENDPOINTS, CONN_LIMIT, ENDPOINT_FAILURE */
    bool sticky_hit;              /* the requested instance was chosen */
    bool sticky_miss;             /* an instance was asked for and not chosen */
} cr_pick_result_t;

bool cr_balancer_is_overloaded(const cr_endpoint_t *ep, uint32_t max_conns);
bool cr_balancer_is_failed(const cr_endpoint_t *ep, int64_t now_ns, int64_t window_ns);
/* Round-robin over the pool from the route's cursor (advanced once). */
cr_endpoint_t *cr_balancer_round_robin(cr_route_t *route, const cr_pool_t *pool,
                                       const cr_pick_opts_t *o, cr_proxy_error_t *err);
/* Lowest in_flight, random tie-break; failures ignored. */
cr_endpoint_t *cr_balancer_least_conn(const cr_pool_t *pool, const cr_pick_opts_t *o,
                                      cr_proxy_error_t *err);
/* Consistent hashing of key (rendezvous): the same key keeps its endpoint
 * while that endpoint stays usable. */
cr_endpoint_t *cr_balancer_hash(const cr_pool_t *pool, const cr_pick_opts_t *o, uint64_t key,
                                cr_proxy_error_t *err);
/* The whole choice: the sticky instance when usable, else the route's
 * algorithm. sticky_id NULL = not sticky. Call in a read section. */
void cr_balancer_choose(cr_route_t *route, const cr_pool_t *pool, const cr_pick_opts_t *o,
                        const char *sticky_id, size_t sticky_len, bool must_be_sticky,
                        cr_pick_result_t *out);

/* --- Client connections and their exchange (proxy.c) ---------------------- */

typedef enum {
    CR_CS_READ_HEAD = 0,          /* reading a request head (or idle between requests) */
    CR_CS_READ_BODY,              /* routed; head and body being sent to the backend */
    CR_CS_WAIT_UPSTREAM,          /* request sent; waiting for the response head */
    CR_CS_WRITE_RESPONSE,         /* response (proxied or router-made) going to the client */
    CR_CS_TUNNEL,                 /* after a 101 */
    CR_CS_CLOSING,                /* closed; reaped at the end of the iteration */
    CR_CS_HANDSHAKE,              /* before the first head: PROXY protocol header, TLS handshake */
} cr_client_state_t;

/* Session persistence of one request on a route whose mode is not vcap
 * (persist_proxy.c). All zero on vcap routes: policy == NULL means none of
 * it applies. */
typedef struct cr_persist_exchange {
    const cr_persist_policy_t *policy; /* borrowed from owner's allocation, or the config's */
    cr_endpoint_t *owner;         /* ref: the endpoint whose allocation holds policy; NULL = config */
    uint64_t route_hash;          /* learn: cr_persist_hash of the route key */
    uint64_t value_hash;          /* learn: keyed hash of the request's session value; 0 = none */
    uint64_t prefix_id;           /* prefix: identity token of the request's cookie; 0 = none */
    cr_persist_cookie_t cookie;   /* insert/rewrite: the request's cookie, when has_cookie */
    bool has_cookie;              /* insert/rewrite: a genuine, unexpired cookie */
    bool bound;                   /* the request named an endpoint (cookie, prefix, table) */
    bool hit;                     /* ... and that endpoint was chosen */
} cr_persist_exchange_t;

/* Everything whose life is one request; zeroed when a request starts. */
typedef struct cr_exchange {
    cr_http_request_t req;        /* slices into conn->cin, valid until the exchange ends */
    cr_sticky_request_t sticky;
    cr_persist_exchange_t persist;
    uint32_t hstart;              /* head offset in cin */
    /* request body in cin: [hstart+head_len, ...) */
    uint32_t b_fwd;               /* next byte of cin to forward */
    uint32_t b_scan;              /* bytes of cin framed so far (forwardable up to here) */
    uint64_t b_left;              /* CONTENT_LENGTH: bytes still to frame */
    cr_chunked_t b_chunk;
    bool b_done;                  /* body end found at b_scan */
    bool b_reused_region;         /* body bytes were overwritten: the request cannot be replayed */
    bool req_sent;                /* head and whole body written to the current backend */
    bool head_sent;               /* the whole rewritten head was written */
    bool has_body;
    uint32_t rq_sent;             /* bytes of rq_out written */
    /* response */
    bool resp_head_done;          /* final response head parsed */
    bool resp_done;               /* whole response body read */
    bool resp_started;            /* bytes of a response went to the client */
    bool got_resp_bytes;          /* any byte from the backend in this attempt */
    bool resp_keep_alive;         /* backend allows reuse */
    bool client_keep_alive;       /* keep the client connection after this response */
    bool router_response;         /* rs_out holds a router-made response */
    bool upgrade;                 /* 101 received: tunnel */
    bool ep_in_flight;            /* we hold one of ep->in_flight */
    bool free_retry_used;         /* a stale pooled connection was retried once */
    bool accounted;               /* counters and access log done */
    uint8_t r_kind;               /* cr_http_body_kind_t of the response */
    uint8_t tried_len;
    uint16_t status;
    uint32_t r_scan;              /* bytes of uin framed (forwardable) */
    uint32_t r_in;                /* dechunking: next input byte of uin */
    uint8_t dc_state;             /* dechunking state (HTTP/1.0 client, chunked response) */
    uint8_t dc_digits;
    bool dechunk;                 /* forward chunk data only, end by closing */
    uint8_t quickacks_up;         /* TCP_QUICKACK set on partial backend input */
    uint8_t quickacks_client;     /* ... and on partial client input */
    bool b_splice;                /* the rest of the request body goes through conn->pipe */
    bool r_splice;                /* the rest of the response body goes through conn->pipe */
    bool r_src_done;              /* r_splice: the backend sent the whole body (into the pipe) */
    uint64_t dc_left;
    uint64_t r_left;
    cr_chunked_t r_chunk;
    uint32_t attempts;
    int dial_err;                 /* errno when no socket could be made */
    cr_endpoint_t *ep;            /* ref: the endpoint of the current/last attempt */
    cr_endpoint_t *tried[CR_MAX_TRIED]; /* refs: endpoints that failed */
    cr_proxy_error_t error;       /* router error for log/counters */
    cr_proxy_error_t fail_error;  /* answer when the attempts run out: NONE = ENDPOINT_FAILURE, or a TLS kind */
    int64_t received_mono_ns;
    int64_t received_real_ns;
    int64_t deadline_ns;          /* endpoint_timeout for all attempts together */
    int64_t sent_mono_ns;         /* request head written */
    int64_t resp_head_mono_ns;    /* response head received */
    uint64_t req_body_bytes;
    uint64_t resp_body_bytes;
    char request_id[40];
    char reason[CR_REASON_CAP];   /* endpoint_failure reason */
} cr_exchange_t;

struct cr_conn {
    cr_io_t io;
    cr_worker_t *w;
    cr_client_state_t state;
    cr_timer_t timer;             /* read-header, idle, endpoint or tunnel idle */
    cr_conn_t *next, *prev;       /* worker's list of open connections */
    cr_conn_t *reap_next;
    cr_upconn_t *up;              /* the bound backend connection, or NULL */
    cr_buf_t cin;                 /* client input; holds the request head during the exchange */
    cr_buf_t uin;                 /* backend input */
    cr_buf_t rq_out;              /* rewritten request head [0, end); rq_sent written */
    cr_buf_t rs_out;              /* bytes for the client before body bytes [start, end) */
    cr_pipe_t pipe;               /* spliced body bytes of the current exchange (one direction) */
    int64_t last_active_ns;       /* last byte from the client (lazy idle timers) */
    int64_t head_started_ns;      /* first byte of the pending head (read-header timeout) */
    bool close_after;             /* drain: close after the current response */
    bool parse_pending;           /* cin holds bytes the head parser has not seen complete */
    bool client_gone;             /* peer closed while we were waiting */
    bool over_tls;                /* accepted on the TLS listener */
    bool proxy_pending;           /* enable_proxy: a PROXY header may still come */
    bool tls_pending;             /* the TLS handshake is not finished */
    bool has_client_cert;         /* the TLS client presented a (verified) certificate */
    uint16_t xfcc_len;
    char *xfcc;                   /* owned: X-Forwarded-Client-Cert value (sanitize_set), or NULL */
    uint16_t client_port;
    uint8_t client_ip_len;
    uint8_t client_addr_len;
    char client_ip[48];
    char client_addr[56];         /* "ip:port" */
    cr_exchange_t ex;
    cr_http_header_t headers[];   /* max_request_headers entries for ex.req */
};

/* How an attempt failed (proxy.c decides on a retry). */
typedef enum { CR_FAIL_DIAL, CR_FAIL_IO, CR_FAIL_TIMEOUT, CR_FAIL_PROTO, CR_FAIL_TLS } cr_fail_kind_t;

const char *cr_client_state_name(cr_client_state_t s);
/* proxy.c internals shared with relay.c. */
void cr_proxy__set_state(cr_conn_t *c, cr_client_state_t s);
void cr_proxy__attempt_failed(cr_conn_t *c, cr_fail_kind_t kind, int err, const char *msg);
/* Counters and the access log line, once per request. */
void cr_proxy__account(cr_conn_t *c);
void cr_proxy__close(cr_conn_t *c);
/* The client went away: 499 when no response was started, then close. */
void cr_proxy__client_closed(cr_conn_t *c);
void cr_proxy__drop_in_flight(cr_conn_t *c);
/* TCP_QUICKACK on a socket whose message is incomplete (bounded by *count). */
void cr_proxy__quickack(cr_io_t *io, uint8_t *count);
/* relay.c: response direction. Returns 1 progress, 0 blocked, -1 when the
 * exchange changed state (answered, retried, closed, tunnel). */
int cr_relay__pump_response(cr_conn_t *c);
/* relay.c: TUNNEL state step; true on a state change. */
bool cr_relay__step_tunnel(cr_conn_t *c);
/* persist_proxy.c: session persistence beyond gorouter on the data path.
 * The policy in effect for a route: its first endpoint's, else the config's. */
const cr_persist_policy_t *cr_persist__route_policy(const cr_router_t *rt, const cr_pool_t *pool);
/* Request side, in the read section of begin_attempt(): on the first
 * attempt records the policy (taking a ref on its owner) and the request's
 * key, then picks into out like cr_balancer_choose(). */
void cr_persist__choose(cr_conn_t *c, cr_route_t *route, const cr_pool_t *pool,
                        const cr_persist_policy_t *pol, const cr_pick_opts_t *o, bool first,
                        cr_pick_result_t *out);
/* Cookie edits for the backend-bound head (indirect, prefix removal). */
struct cr_request_rewrite;
void cr_persist__request_rewrite(const cr_conn_t *c, struct cr_request_rewrite *rw);
/* Response side: writes the lines to add (Set-Cookie, Cache-Control) into
 * extra and sets bit i of drop (CR_RESP_MAX_HEADERS bits, cleared here) for
 * every backend Set-Cookie it replaces; learns bindings. Returns bytes
 * written; when they do not fit, 0 and nothing dropped. */
int cr_persist__response(cr_conn_t *c, const cr_http_response_t *resp, char *extra, size_t cap,
                         uint64_t drop[CR_RESP_MAX_HEADERS / 64]);
/* Drops the exchange's policy reference (end of the exchange). */
void cr_persist__release(cr_conn_t *c);

/* A new accepted connection (state READ_HEAD). */
void cr_proxy__on_accept(cr_conn_t *c);
/* Client socket events and timers. */
void cr_proxy__on_client_event(cr_conn_t *c, uint32_t events);
void cr_proxy__on_timer(cr_conn_t *c);
/* The bound backend connection changed (event, connect result). */
void cr_proxy__on_upstream_event(cr_conn_t *c);
/* Drain: close if idle, else close after the current response. */
void cr_proxy__drain(cr_conn_t *c);
/* Closes the connection (and its backend side) without answering. */
void cr_proxy__abort(cr_conn_t *c);

/* --- The worker (worker.c) -------------------------------------------------- */

struct cr_worker {
    cr_router_counters_t counters;/* this worker is the only writer */
    cr_router_t *rt;
    uint32_t id;
    int epfd;                     /* owned */
    int wake_fd;                  /* owned eventfd */
    int listen_fd;                /* owned; -1 after drain (or with disable_http) */
    cr_io_t listen_io;
    int tls_listen_fd;            /* owned: the ssl_port listener; -1 without enable_ssl */
    cr_io_t tls_listen_io;
    cr_io_t wake_io;
    pthread_t thread;
    bool thread_started;
    bool drained;
    int64_t now_ns;               /* monotonic, refreshed after each epoll_wait */
    int64_t now_real_ns;
    int64_t busy_poll_ns;         /* cfg busy_poll: the longest non-blocking poll before sleeping */
    bool splice_requests;         /* cfg splice_request_bodies */
    int64_t load_window_start_ns; /* start of the current CR_LOAD_WINDOW_NS window */
    int64_t load_window_work_ns;  /* time spent handling events in that window */
    bool busy_polling;            /* the last window was more than half work: poll before sleeping */
    cr_wheel_t wheel;
    cr_conn_t *conns;             /* open client connections */
    cr_conn_t *free_conns;        /* recycled structs (linked by next) */
    cr_conn_t *reap_conns;
    cr_upconn_t *free_ups;
    cr_upconn_t *reap_ups;
    char **free_bufs;             /* CR_BUF_SIZE buffers */
    char *free_bulk[CR_BULK_POOL_KEEP]; /* CR_BULK_BUF_SIZE buffers */
    uint32_t free_bulk_len;
    uint32_t free_bufs_len;
    uint32_t free_bufs_cap;
    cr_pipe_t free_pipes[CR_PIPE_POOL_KEEP]; /* empty pipes */
    uint32_t free_pipes_len;
    uint32_t pipes_open;          /* pooled and in use */
    uint32_t pipes_max;           /* cr_pipe_limit() at start; beyond, bodies are copied */
    cr_upconn_t *idle_buckets[CR_IDLE_BUCKETS];
    cr_upconn_t *idle_head, *idle_tail;
    uint32_t idle_count;
    cr_http_header_t resp_headers[CR_RESP_MAX_HEADERS]; /* scratch for response heads */
};

struct cr_router {
    const cr_config_t *cfg;       /* borrowed */
    cr_registry_t *reg;           /* borrowed */
    cr_worker_t **workers;        /* owned, n_workers */
    uint32_t n_workers;
    uint16_t port;
    atomic_bool draining;
    atomic_bool stopping;
    bool started;
    cr_access_log_t *access_log;  /* owned, or NULL */
    cr_tls_client_t *tls_client;  /* owned: TLS to endpoints with tls_port */
    cr_tls_server_t *tls_server;  /* owned: the ssl_port front, or NULL without enable_ssl */
    uint16_t ssl_port;            /* bound TLS port, 0 without enable_ssl */
    cr_sticky_config_t sticky;
    cr_http_limits_t req_limits;
    cr_http_limits_t resp_limits;
    int64_t fail_window_ns;
    cr_persist_learn_t *learn;    /* owned: the learn table of session persistence */
    size_t conn_size;             /* sizeof(cr_conn_t) + the header array */
};

/* Buffers. */
void cr_buf_acquire(cr_worker_t *w, cr_buf_t *b);
void cr_buf_release(cr_worker_t *w, cr_buf_t *b);
/* Grows to at least cap bytes, keeping [0, end). */
void cr_buf_grow(cr_worker_t *w, cr_buf_t *b, uint32_t cap);

/* Pipes and splicing (splice.c). */
/* Starts splicing the rest of a request (response) body when it is large,
 * both sockets are plain TCP and every buffered byte was forwarded; true
 * when the exchange now splices (ex.b_splice, ex.r_splice). */
bool cr_splice__start_request(cr_conn_t *c);
bool cr_splice__start_response(cr_conn_t *c);
/* Pumps for a splicing exchange; return 1/0/-1 as the copying pumps. */
int cr_splice__pump_request(cr_conn_t *c);
int cr_splice__pump_response(cr_conn_t *c);
/* Returns the connection's pipe to the pool (closed when not empty). */
void cr_pipe_release(cr_worker_t *w, cr_pipe_t *p);
/* Closes the connection's pipe (the connection closes). */
void cr_pipe_close(cr_worker_t *w, cr_pipe_t *p);
/* Closes the worker's pooled pipes. */
void cr_pipe_close_pool(cr_worker_t *w);
/* Pipes one worker may hold open: a quarter of the fd limit nofile shared by
 * workers (two fds a pipe), at most CR_PIPES_PER_WORKER. */
uint32_t cr_pipe_limit(uint64_t nofile, uint32_t workers);

/* Timers. */
void cr_timer_arm(cr_worker_t *w, cr_timer_t *t, int64_t deadline_ns);
void cr_timer_cancel(cr_worker_t *w, cr_timer_t *t);
static inline bool cr_timer_is_armed(const cr_timer_t *t) { return t->pprev != NULL; }

/* Adds the worker's ssl_port listener (before start); the worker owns fd. */
int cr_worker__add_tls_listener(cr_worker_t *w, int fd);
/* Sets c's client_ip/client_addr from a socket address (accept, PROXY protocol). */
void cr_worker__format_peer(cr_conn_t *c, const struct sockaddr *sa);

/* Epoll registration of a new socket (edge-triggered, in+out+rdhup). */
int cr_worker__watch(cr_worker_t *w, cr_io_t *io);

/* Structs are recycled at the end of the loop iteration. */
void cr_worker__reap_conn(cr_worker_t *w, cr_conn_t *c);
void cr_worker__reap_upconn(cr_worker_t *w, cr_upconn_t *u);
cr_upconn_t *cr_worker__alloc_upconn(cr_worker_t *w);

cr_worker_t *cr_worker__create(cr_router_t *rt, uint32_t id, int listen_fd, char *err,
                               size_t err_cap);
int cr_worker__start(cr_worker_t *w);
void cr_worker__wake(cr_worker_t *w);
void cr_worker__join(cr_worker_t *w);
void cr_worker__destroy(cr_worker_t *w);

/* Sends what it can; returns bytes written, 0 when it would block (io->writable
 * cleared), -errno on error. */
ssize_t cr_io__send2(cr_io_t *io, const char *a, size_t alen, const char *b, size_t blen);
/* Reads into b's free tail; returns bytes, 0 at EOF (io->eof), CR_AGAIN when
 * nothing is available, -errno on error. */
/* Peeks at a plain socket: true (and readable cleared) when nothing, not even
 * EOF, waits to be read. */
bool cr_io__nothing_to_read(cr_io_t *io);
ssize_t cr_io__read(cr_io_t *io, cr_buf_t *b);

#endif
