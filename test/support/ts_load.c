/* test/support/ts_load.c - epoll load client (see ts_load.h).
 *
 * Connections live in one array; epoll's data.u32 is the index. The loop
 * wakes at least every TICK_MS to run timers by scanning the array, which
 * keeps the state per connection to a few fields and needs no timer
 * structure. TICK_MS is 1: with 10 ms, every tick sent the trickle bytes and
 * requests due in the last 10 ms at once, and crouter saw synchronised
 * bursts of about 40 events every 10 ms that independent clients do not
 * make (in one run each, the load test's probe p99 was 1.9x that of an
 * unloaded twin with 10 ms ticks, 1.2x with 1 ms ticks). Scanning 11,000 entries every millisecond costs the thread
 * about 5% of a core (4% with 10 ms ticks). Level-triggered epoll; EPOLLOUT is
 * asked for only while connecting or while a request is partly written.
 */
#include "ts_load.h"

#include "testsupport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 1
#define RBUF 8192

typedef enum { K_KEEPALIVE, K_SLOW } kind_t;
typedef enum { S_CLOSED, S_CONNECTING, S_SENDING, S_WAITING, S_IDLE, S_TRICKLE } cstate_t;

typedef struct lconn {
    int fd;
    kind_t kind;
    cstate_t state;
    bool answered;            /* keep-alive: had a response since it was opened */
    bool counted_inflight;
    uint32_t sent;            /* bytes of the current request written */
    uint32_t rlen;            /* bytes in rbuf */
    int64_t due_ms;           /* next request (idle) or next byte (trickle); 0 = none */
    int64_t body_left;        /* response body bytes still to skip; -1 = reading head */
    bool chunked;
    uint32_t slow_pos;        /* header bytes trickled on this connection */
    char *rbuf;
} lconn_t;

struct ts_load {
    ts_load_opts_t o;
    char req[512];
    size_t req_len;
    int ep;
    lconn_t *c;
    int n;
    int inflight;
    pthread_t thread;
    uint64_t rng;             /* jitter state; loop thread only */
    atomic_bool stop;
    atomic_uint_fast64_t requests, ok, other, ka_errors, ka_open, slow_open, slow_bytes, slow_closed;
};

long ts_load_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rlim_t w = (rlim_t)want;
    if (w > rl.rlim_max) {
        struct rlimit raised = {.rlim_cur = rl.rlim_cur, .rlim_max = w};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) /* fails unless privileged: then capped */
            rl.rlim_max = w;
    }
    if (w > rl.rlim_max)
        w = rl.rlim_max;
    if (rl.rlim_cur < w) {
        rl.rlim_cur = w;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            return -1;
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

static int64_t now_ms(void)
{
    return ts_now_ms();
}

static void set_events(ts_load_t *l, int i, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)i};
    epoll_ctl(l->ep, EPOLL_CTL_MOD, l->c[i].fd, &e);
}

static void inflight_done(ts_load_t *l, lconn_t *c)
{
    if (c->counted_inflight) {
        c->counted_inflight = false;
        l->inflight--;
    }
}

static void close_conn(ts_load_t *l, int i, bool by_server)
{
    lconn_t *c = &l->c[i];
    if (c->fd < 0)
        return;
    inflight_done(l, c);
    if (c->kind == K_KEEPALIVE) {
        if (c->answered && c->state != S_CONNECTING)
            atomic_fetch_sub(&l->ka_open, 1);
        if (by_server)
            atomic_fetch_add(&l->ka_errors, 1);
    } else {
        if (c->state == S_TRICKLE)
            atomic_fetch_sub(&l->slow_open, 1);
        if (by_server)
            atomic_fetch_add(&l->slow_closed, 1);
    }
    close(c->fd);
    c->fd = -1;
    c->state = S_CLOSED;
    c->answered = false;
    c->rlen = 0;
    c->due_ms = 0;
}

/* Starts a non-blocking connect. 0, or -1 when no fd could be had. */
static int open_conn(ts_load_t *l, int i)
{
    lconn_t *c = &l->c[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(l->o.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->state = S_CONNECTING;
    c->sent = 0;
    c->rlen = 0;
    c->slow_pos = 0;
    c->body_left = -1;
    c->counted_inflight = true;
    l->inflight++;
    struct epoll_event e = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &e) != 0) {
        close_conn(l, i, false);
        return -1;
    }
    return 0;
}

static const char SLOW_PREFIX[] = "GET / HTTP/1.1\r\nHost: slowloris.example.com\r\nX-Slow: ";

/* Writes what is left of the request; moves to WAITING when done. */
static void send_request(ts_load_t *l, int i)
{
    lconn_t *c = &l->c[i];
    if (c->state != S_SENDING) {
        c->state = S_SENDING;
        c->sent = 0;
        c->body_left = -1;
        if (!c->counted_inflight) {
            c->counted_inflight = true;
            l->inflight++;
        }
        atomic_fetch_add(&l->requests, 1);
    }
    while (c->sent < l->req_len) {
        ssize_t w = send(c->fd, l->req + c->sent, l->req_len - c->sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            set_events(l, i, EPOLLIN | EPOLLOUT);
            return;
        }
        if (w <= 0) {
            close_conn(l, i, true);
            return;
        }
        c->sent += (uint32_t)w;
    }
    c->state = S_WAITING;
    set_events(l, i, EPOLLIN);
}

/* Sends the request line and Host at once, then one header byte per call. */
static void trickle(ts_load_t *l, int i)
{
    lconn_t *c = &l->c[i];
    const char *data = "a";
    size_t len = 1;
    if (c->slow_pos == 0) {
        data = SLOW_PREFIX;
        len = sizeof SLOW_PREFIX - 1;
    }
    ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL);
    if (w <= 0) {
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        close_conn(l, i, true);
        return;
    }
    c->slow_pos += (uint32_t)w;
    atomic_fetch_add(&l->slow_bytes, 1);
    c->due_ms = now_ms() + l->o.slowloris_interval_ms;
}

static void on_connected(ts_load_t *l, int i)
{
    lconn_t *c = &l->c[i];
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        close_conn(l, i, true);
        return;
    }
    if (c->kind == K_SLOW) {
        inflight_done(l, c);
        c->state = S_TRICKLE;
        atomic_fetch_add(&l->slow_open, 1);
        set_events(l, i, EPOLLIN);
        trickle(l, i);
        return;
    }
    send_request(l, i);
}

/* A delay uniform in [0, range_ms). */
static int64_t uniform_ms(ts_load_t *l, int range_ms)
{
    l->rng = l->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int64_t)((l->rng >> 33) % (uint64_t)range_ms);
}

/* A delay uniform in [interval/2, 3*interval/2): connections opened
 * together spread their later requests out instead of firing in bursts. */
static int64_t jitter_ms(ts_load_t *l, int interval_ms)
{
    return interval_ms / 2 + uniform_ms(l, interval_ms);
}

/* Parses whole responses out of rbuf; returns false when the connection
 * was closed. */
static bool parse_responses(ts_load_t *l, int i)
{
    lconn_t *c = &l->c[i];
    for (;;) {
        if (c->body_left < 0) {
            char *end = c->rlen >= 4 ? memmem(c->rbuf, c->rlen, "\r\n\r\n", 4) : NULL;
            if (!end) {
                if (c->rlen == RBUF) {
                    close_conn(l, i, true); /* a head bigger than we allow */
                    return false;
                }
                return true;
            }
            size_t head = (size_t)(end - c->rbuf) + 4;
            int status = c->rlen > 12 ? atoi(c->rbuf + 9) : 0;
            c->chunked = false;
            long long cl = 0;
            for (char *p = c->rbuf; p < end;) {
                char *nl = memchr(p, '\n', (size_t)(end - p));
                if (!nl)
                    break;
                if (strncasecmp(p, "content-length:", 15) == 0)
                    cl = atoll(p + 15);
                else if (strncasecmp(p, "transfer-encoding:", 18) == 0)
                    c->chunked = true;
                p = nl + 1;
            }
            if (status >= 200 && status < 300)
                atomic_fetch_add(&l->ok, 1);
            else
                atomic_fetch_add(&l->other, 1);
            memmove(c->rbuf, c->rbuf + head, c->rlen - head);
            c->rlen -= (uint32_t)head;
            c->body_left = c->chunked ? 0 : cl;
        }
        if (c->chunked) {
            /* Our backends end a chunked body with "0\r\n\r\n"; skip to it. */
            char *z = c->rlen >= 5 ? memmem(c->rbuf, c->rlen, "0\r\n\r\n", 5) : NULL;
            if (!z) {
                if (c->rlen > 5) {
                    memmove(c->rbuf, c->rbuf + c->rlen - 5, 5);
                    c->rlen = 5;
                }
                return true;
            }
            size_t used = (size_t)(z - c->rbuf) + 5;
            memmove(c->rbuf, c->rbuf + used, c->rlen - used);
            c->rlen -= (uint32_t)used;
            c->chunked = false;
        } else {
            size_t take = (int64_t)c->rlen < c->body_left ? c->rlen : (size_t)c->body_left;
            memmove(c->rbuf, c->rbuf + take, c->rlen - take);
            c->rlen -= (uint32_t)take;
            c->body_left -= (int64_t)take;
            if (c->body_left > 0)
                return true;
        }
        /* a whole response */
        c->body_left = -1;
        inflight_done(l, c);
        bool first = !c->answered;
        if (first) {
            c->answered = true;
            atomic_fetch_add(&l->ka_open, 1);
        }
        c->state = S_IDLE;
        if (l->o.closed_loop)
            c->due_ms = 1; /* at once, on this tick */
        else if (l->o.keepalive_interval_ms <= 0)
            c->due_ms = 0;
        else if (first && l->o.spread_first_gap)
            c->due_ms = now_ms() + uniform_ms(l, l->o.keepalive_interval_ms);
        else
            c->due_ms = now_ms() + jitter_ms(l, l->o.keepalive_interval_ms);
        if (c->rlen == 0)
            return true;
    }
}

static void on_readable(ts_load_t *l, int i)
{
    lconn_t *c = &l->c[i];
    for (;;) {
        if (c->kind == K_SLOW) {
            char sink[512];
            ssize_t r = recv(c->fd, sink, sizeof sink, 0);
            if (r > 0)
                continue; /* a 408/431 before the close */
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            close_conn(l, i, true);
            return;
        }
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            close_conn(l, i, true);
            return;
        }
        c->rlen += (uint32_t)r;
        if (!parse_responses(l, i))
            return;
    }
}

static void run_timers(ts_load_t *l)
{
    int64_t now = now_ms();
    for (int i = 0; i < l->n; i++) {
        lconn_t *c = &l->c[i];
        if (c->state == S_CLOSED) {
            if (l->inflight < l->o.max_inflight)
                open_conn(l, i);
            continue;
        }
        if (c->due_ms == 0 || c->due_ms > now)
            continue;
        if (c->state == S_IDLE && (l->o.closed_loop || l->inflight < l->o.max_inflight)) {
            c->due_ms = 0;
            send_request(l, i);
        } else if (c->state == S_TRICKLE) {
            trickle(l, i);
        }
    }
}

static void *load_main(void *arg)
{
    ts_load_t *l = arg;
    struct epoll_event ev[256];
    int64_t next_tick = 0;
    while (!atomic_load(&l->stop)) {
        int64_t now = now_ms();
        if (now >= next_tick) {
            run_timers(l);
            next_tick = now + TICK_MS;
        }
        int n = epoll_wait(l->ep, ev, 256, TICK_MS);
        for (int k = 0; k < n; k++) {
            int i = (int)ev[k].data.u32;
            lconn_t *c = &l->c[i];
            if (c->fd < 0)
                continue;
            if (c->state == S_CONNECTING) {
                if (ev[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    on_connected(l, i);
                continue;
            }
            if (c->state == S_SENDING && (ev[k].events & EPOLLOUT))
                send_request(l, i);
            if (c->fd >= 0 && (ev[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(l, i);
        }
        if (l->o.closed_loop) {
            /* closed loop: answer-to-request without waiting for a tick */
            for (int k = 0; k < n; k++) {
                int i = (int)ev[k].data.u32;
                if (l->c[i].state == S_IDLE && l->c[i].due_ms) {
                    l->c[i].due_ms = 0;
                    send_request(l, i);
                }
            }
        }
    }
    return NULL;
}

ts_load_t *ts_load_start(const ts_load_opts_t *opts)
{
    ts_load_t *l = calloc(1, sizeof *l);
    l->o = *opts;
    l->rng = (uint64_t)ts_now_ms() | 1;
    if (!l->o.path)
        l->o.path = "/";
    if (l->o.slowloris_interval_ms <= 0)
        l->o.slowloris_interval_ms = 300;
    if (l->o.max_inflight <= 0)
        l->o.max_inflight = 256;
    l->req_len = (size_t)snprintf(l->req, sizeof l->req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ts_load\r\n\r\n",
                                  l->o.path, l->o.host);
    l->n = l->o.keepalive_conns + l->o.slowloris_conns;
    l->c = calloc((size_t)l->n, sizeof *l->c);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0) {
        free(l->c);
        free(l);
        return NULL;
    }
    /* Slowloris connections are spread among the keep-alive ones, so both
     * kinds open together. */
    int stride = l->o.slowloris_conns > 0 ? l->n / l->o.slowloris_conns : 0;
    for (int i = 0; i < l->n; i++) {
        l->c[i].fd = -1;
        bool slow = stride > 0 && i % stride == 0 && i / stride < l->o.slowloris_conns;
        l->c[i].kind = slow ? K_SLOW : K_KEEPALIVE;
        if (l->c[i].kind == K_KEEPALIVE)
            l->c[i].rbuf = malloc(RBUF);
    }
    if (pthread_create(&l->thread, NULL, load_main, l) != 0) {
        close(l->ep);
        for (int i = 0; i < l->n; i++)
            free(l->c[i].rbuf);
        free(l->c);
        free(l);
        return NULL;
    }
    return l;
}

void ts_load_stats(ts_load_t *l, ts_load_stats_t *s)
{
    s->requests = atomic_load(&l->requests);
    s->responses_2xx = atomic_load(&l->ok);
    s->responses_other = atomic_load(&l->other);
    s->keepalive_errors = atomic_load(&l->ka_errors);
    s->keepalive_open = atomic_load(&l->ka_open);
    s->slowloris_open = atomic_load(&l->slow_open);
    s->slowloris_bytes = atomic_load(&l->slow_bytes);
    s->slowloris_closed = atomic_load(&l->slow_closed);
}

bool ts_load_wait_established(ts_load_t *l, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    int slow = 0;
    for (int i = 0; i < l->n; i++)
        slow += l->c[i].kind == K_SLOW;
    int ka = l->n - slow;
    do {
        ts_load_stats_t s;
        ts_load_stats(l, &s);
        if (s.keepalive_open >= (uint64_t)ka && s.slowloris_open >= (uint64_t)slow)
            return true;
        ts_sleep_ms(50);
    } while (ts_now_ms() < deadline);
    return false;
}

void ts_load_stop(ts_load_t *l)
{
    if (!l)
        return;
    atomic_store(&l->stop, true);
    pthread_join(l->thread, NULL);
    for (int i = 0; i < l->n; i++) {
        if (l->c[i].fd >= 0)
            close(l->c[i].fd);
        free(l->c[i].rbuf);
    }
    close(l->ep);
    free(l->c);
    free(l);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One probe target: its connection and the durations measured on it. */
typedef struct probe {
    uint16_t port;
    ts_conn_t conn;
    double *us;               /* owned */
    size_t cap;
    ts_latency_t *out;
} probe_t;

/* One request on p's keep-alive connection (opened or reopened as needed);
 * records its duration or an error. */
static void probe_once(probe_t *p, const char *req, size_t len)
{
    if ((size_t)p->out->n == p->cap) {
        p->cap *= 2;
        p->us = realloc(p->us, p->cap * sizeof *p->us);
    }
    if (p->conn.fd < 0 && ts_conn_open(&p->conn, p->port) != 0) {
        p->out->errors++;
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ts_resp_t r;
    memset(&r, 0, sizeof r);
    int rc = ts_conn_send(&p->conn, req, len) == 0 ? ts_conn_read_response(&p->conn, &r, false, 10000) : -1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != 0 || r.status != 200) {
        p->out->errors++;
        ts_conn_close(&p->conn);
    } else {
        p->us[p->out->n++] = (double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3;
    }
    ts_resp_free(&r);
}

/* Closes the connection and fills the percentiles; 0, or -1 when no
 * request worked. */
static int probe_finish(probe_t *p)
{
    ts_conn_close(&p->conn);
    ts_latency_t *out = p->out;
    if (out->n == 0) {
        free(p->us);
        return -1;
    }
    qsort(p->us, (size_t)out->n, sizeof *p->us, cmp_double);
    out->p50_us = p->us[(out->n - 1) / 2];
    out->p99_us = p->us[(long)((double)(out->n - 1) * 0.99)];
    out->max_us = p->us[out->n - 1];
    free(p->us);
    return 0;
}

/* Sequential requests alternating over targets (count 1 or 2): at least n
 * on each and for at least min_ms. */
static int probe_run(probe_t *t, int count, const char *host, const char *path, int n, int min_ms)
{
    char req[512];
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ts_latency\r\n\r\n",
                       path ? path : "/", host);
    for (int k = 0; k < count; k++) {
        memset(t[k].out, 0, sizeof *t[k].out);
        t[k].conn = (ts_conn_t){.fd = -1};
        t[k].cap = n > 0 ? (size_t)n : 1;
        t[k].us = calloc(t[k].cap, sizeof *t[k].us);
    }
    int64_t until = ts_now_ms() + min_ms;
    for (int i = 0; i < n || ts_now_ms() < until; i++)
        for (int k = 0; k < count; k++)
            probe_once(&t[k], req, (size_t)len);
    int rc = 0;
    for (int k = 0; k < count; k++)
        if (probe_finish(&t[k]) != 0)
            rc = -1;
    return rc;
}

int ts_load_latency(uint16_t port, const char *host, const char *path, int n, int min_ms, ts_latency_t *out)
{
    probe_t t = {.port = port, .out = out};
    return probe_run(&t, 1, host, path, n, min_ms);
}

int ts_load_latency_pair(uint16_t port_a, uint16_t port_b, const char *host, const char *path, int n, int min_ms,
                         ts_latency_t *out_a, ts_latency_t *out_b)
{
    probe_t t[2] = {{.port = port_a, .out = out_a}, {.port = port_b, .out = out_b}};
    return probe_run(t, 2, host, path, n, min_ms);
}
