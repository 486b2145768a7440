/* router/proxy.c - one client connection and the exchanges it carries.
 *
 * A client connection runs one request at a time: read a head, route it,
 * stream it to a backend connection, stream the response back, then either
 * read the next head (keep-alive; bytes already buffered are the next
 * pipelined request) or close. drive() is the only place that advances it:
 * every event, timer or backend change calls drive(), which runs the step of
 * the current state until no step makes progress (edge-triggered I/O: a step
 * stops only on EAGAIN, a full buffer or a blocked destination).
 *
 * Client states (cr_client_state_t) and their timers:
 *   READ_HEAD      -> READ_BODY (routed), WRITE_RESPONSE (router error), CLOSING.
 *                     read-header timeout while a head is pending (and from
 *                     accept), frontend idle timeout between requests.
 *   READ_BODY      -> WAIT_UPSTREAM (request sent), WRITE_RESPONSE (response
 *                     head, early answers included, or 502), CLOSING.
 *   WAIT_UPSTREAM  -> WRITE_RESPONSE, TUNNEL (101), READ_BODY (retry), CLOSING.
 *                     Both arm endpoint_timeout, counted from the first attempt.
 *   WRITE_RESPONSE -> READ_HEAD (keep-alive), CLOSING. endpoint_timeout while
 *                     proxying, frontend idle timeout for a router answer.
 *   TUNNEL         -> CLOSING. frontend idle timeout (lazily re-armed).
 * The backend side has its own states (upstream.c); a failed dial leaves it
 * in CONNECT_FAILED, and the retry is the transition out of that state
 * (attempt_failed -> begin_attempt), never a loop around connect().
 *
 * Buffers. cin holds the request head for the whole exchange (the parsed
 * request points into it, so a retry can rewrite the head for another
 * endpoint); body bytes follow it and are forwarded from there. When every
 * body byte in cin was forwarded and more is coming, the body region is
 * reused, which makes the request no longer replayable. uin holds backend
 * input: the response head is rewritten into rs_out (after any forwarded
 * 1xx heads) and body bytes are forwarded from uin. Bytes move only between
 * a readable source and a writable destination: a blocked destination
 * stops reading from the source (backpressure), nothing buffers a body.
 * Framing is forwarded as received; Content-Length counting and
 * cr_chunked_scan() find where each body ends. The response direction
 * (heads, body framing, tunnels) lives in relay.c; large plain-TCP bodies
 * are spliced through a pipe instead of copied (splice.c).
 *
 * Threads: the owning worker only. Owns: the client socket, the buffers,
 * the references to endpoints it picked, its bound backend connection.
 */
#include "router/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "common/uuid.h"
#include "router/proxy_protocol.h"
#include "router/rewrite.h"

#define CR_SLACK_HEAD 2048          /* room for added request headers */

static bool begin_attempt(cr_conn_t *c, bool first);
static void respond_error(cr_conn_t *c, cr_proxy_error_t kind, const char *detail,
                          size_t detail_len, const char *reason);

const char *cr_client_state_name(cr_client_state_t s)
{
    switch (s) {
    case CR_CS_HANDSHAKE: return "handshake";
    case CR_CS_READ_HEAD: return "read_head";
    case CR_CS_READ_BODY: return "read_body";
    case CR_CS_WAIT_UPSTREAM: return "wait_upstream";
    case CR_CS_WRITE_RESPONSE: return "write_response";
    case CR_CS_TUNNEL: return "tunnel";
    case CR_CS_CLOSING: return "closing";
    }
    return "?";
}

static inline const cr_config_t *cfg_of(const cr_conn_t *c)
{
    return c->w->rt->cfg;
}

static inline uint32_t body_start(const cr_conn_t *c)
{
    return c->ex.hstart + c->ex.req.head_len;
}

/* A peer that writes one message in two small writes without TCP_NODELAY
 * (head, then body) waits for our ACK of the first before Nagle lets the
 * second go, while our delayed ACK waits up to 40 ms for data to ride on:
 * when a message is still incomplete after a read, ask for an immediate ACK.
 * A few times per message at most: bulk transfers ACK by themselves. */
#define CR_MAX_QUICKACKS 4

void cr_proxy__quickack(cr_io_t *io, uint8_t *count)
{
    if (*count >= CR_MAX_QUICKACKS || io->fd < 0)
        return;
    (*count)++;
    int one = 1;
    setsockopt(io->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

/* --- State and timers ------------------------------------------------------ */

/* The read-header deadline while a head is pending, else the idle one. */
static int64_t read_head_deadline(const cr_conn_t *c)
{
    const cr_config_t *cfg = cfg_of(c);
    bool pending = c->cin.end > c->cin.start || c->head_started_ns != 0;
    if (pending && cfg->read_header_timeout_ns > 0)
        return c->head_started_ns + cfg->read_header_timeout_ns;
    return c->last_active_ns + cfg->frontend_idle_timeout_ns;
}

/* The one place that moves the client state; arms the state's timer. */
void cr_proxy__set_state(cr_conn_t *c, cr_client_state_t s)
{
    cr_worker_t *w = c->w;
    c->state = s;
    switch (s) {
    case CR_CS_HANDSHAKE:
    case CR_CS_READ_HEAD:
        cr_timer_arm(w, &c->timer, read_head_deadline(c));
        break;
    case CR_CS_READ_BODY:
    case CR_CS_WAIT_UPSTREAM:
        cr_timer_arm(w, &c->timer, c->ex.deadline_ns);
        break;
    case CR_CS_WRITE_RESPONSE:
        if (c->ex.router_response)
            cr_timer_arm(w, &c->timer, w->now_ns + cfg_of(c)->frontend_idle_timeout_ns);
        else
            cr_timer_arm(w, &c->timer, c->ex.deadline_ns);
        break;
    case CR_CS_TUNNEL:
        cr_timer_arm(w, &c->timer, c->last_active_ns + cfg_of(c)->frontend_idle_timeout_ns);
        break;
    case CR_CS_CLOSING:
        cr_timer_cancel(w, &c->timer);
        break;
    }
}

/* --- Endpoint bookkeeping -------------------------------------------------- */

void cr_proxy__drop_in_flight(cr_conn_t *c)
{
    if (c->ex.ep_in_flight) {
        atomic_fetch_sub_explicit(&c->ex.ep->in_flight, 1, memory_order_relaxed);
        c->ex.ep_in_flight = false;
    }
}

static void release_endpoints(cr_conn_t *c)
{
    cr_proxy__drop_in_flight(c);
    if (CR_UNLIKELY(c->ex.persist.policy != NULL))
        cr_persist__release(c);
    cr_endpoint_release(c->ex.ep);
    c->ex.ep = NULL;
    for (uint32_t i = 0; i < c->ex.tried_len; i++)
        cr_endpoint_release(c->ex.tried[i]);
    c->ex.tried_len = 0;
}

static void detach_upstream(cr_conn_t *c, bool reusable)
{
    cr_upconn_t *u = c->up;
    if (!u)
        return;
    c->up = NULL;
    u->owner = NULL;
    if (reusable)
        cr_upstream__release_idle(u);
    else
        cr_upstream__close(u);
}

/* --- Access log and counters ----------------------------------------------- */

static cr_slice_t header_slice(const cr_conn_t *c, const char *name, size_t len)
{
    const cr_http_header_t *h = cr_http_find_header(c->ex.req.headers, c->ex.req.headers_len,
                                                    name, len);
    cr_slice_t s = {h ? h->value : NULL, h ? h->value_len : 0};
    return s;
}

static cr_slice_t str_slice(const char *s)
{
    cr_slice_t r = {s, s ? strlen(s) : 0};
    return r;
}

/* Once per request: counters, and the access log line when enabled. The
 * request head must still be in cin. */
void cr_proxy__account(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    cr_worker_t *w = c->w;
    if (ex->accounted)
        return;
    ex->accounted = true;
    int status = ex->status;
    if (status >= 100 && status < 600 && ex->error != CR_PERR_CLIENT_CLOSED)
        cr_counter_add(&w->counters.responses_by_class[status / 100], 1);
    else if (ex->error != CR_PERR_CLIENT_CLOSED)
        cr_counter_add(&w->counters.responses_by_class[0], 1);
    int64_t total_ns = w->now_ns - ex->received_mono_ns;
    if (ex->ep && !ex->router_response && ex->resp_head_mono_ns)
        cr_counter_add(&w->counters.response_time_us_total, (uint64_t)(total_ns / 1000));
    cr_counter_add(&w->counters.request_body_bytes, ex->req_body_bytes);
    cr_counter_add(&w->counters.response_body_bytes, ex->resp_body_bytes);

    cr_access_log_t *log = w->rt->access_log;
    if (!log || ex->req.head_len == 0)
        return;               /* no log line without a parsed request (as gorouter) */
    const cr_http_request_t *rq = &ex->req;
    cr_access_record_t rec;
    memset(&rec, 0, sizeof(rec));
    rec.host.ptr = rq->host;
    rec.host.len = rq->host_len;
    rec.received_at_real_ns = ex->received_real_ns;
    rec.method.ptr = rq->method;
    rec.method.len = rq->method_len;
    rec.uri.ptr = rq->target;
    rec.uri.len = rq->target_len;
    char proto[9] = "HTTP/1.1";
    proto[7] = (char)('0' + (rq->version_minor % 10));
    rec.proto.ptr = proto;
    rec.proto.len = 8;
    rec.status = status;
    rec.request_bytes = ex->req_body_bytes;
    rec.response_bytes = ex->resp_body_bytes;
    rec.referer = header_slice(c, "referer", 7);
    rec.user_agent = header_slice(c, "user-agent", 10);
    rec.client_addr.ptr = c->client_addr;
    rec.client_addr.len = c->client_addr_len;
    char xff[512];
    /* A failed exchange logs the endpoint it tried last, as gorouter does. */
    const cr_endpoint_t *logged_ep = ex->ep ? ex->ep : ex->tried_len ? ex->tried[ex->tried_len - 1] : NULL;
    if (logged_ep) {
        rec.backend_addr = str_slice(logged_ep->addr);
        /* As sent to the backend: every client value, then the client address. */
        size_t xl = 0;
        for (uint32_t i = 0; i < rq->headers_len; i++) {
            const cr_http_header_t *h = &rq->headers[i];
            if (h->name_len != 15 || !cr_http_token_eq(h->name, 15, "x-forwarded-for"))
                continue;
            int n = snprintf(xff + xl, sizeof(xff) - xl, "%.*s, ", (int)h->value_len, h->value);
            if (n < 0 || (size_t)n >= sizeof(xff) - xl)
                break;
            xl += (size_t)n;
        }
        int n = snprintf(xff + xl, sizeof(xff) - xl, "%s", c->client_ip);
        if (n > 0)
            xl += (size_t)n < sizeof(xff) - xl ? (size_t)n : sizeof(xff) - xl - 1;
        rec.x_forwarded_for.ptr = xff;
        rec.x_forwarded_for.len = xl;
        rec.x_forwarded_proto = header_slice(c, "x-forwarded-proto", 17);
        if (!rec.x_forwarded_proto.len)
            rec.x_forwarded_proto = str_slice(c->over_tls ? "https" : "http");
        rec.app_id = str_slice(logged_ep->app);
        rec.app_index = str_slice(logged_ep->private_instance_index);
        rec.instance_id = str_slice(logged_ep->private_instance_id);
    }
    rec.request_id.ptr = ex->request_id;
    rec.request_id.len = ex->request_id[0] ? CR_UUID_STR_LEN : 0;
    rec.response_time_s = (double)total_ns / 1e9;
    int64_t backend_ns = 0;
    if (ex->sent_mono_ns && ex->resp_head_mono_ns > ex->sent_mono_ns)
        backend_ns = ex->resp_head_mono_ns - ex->sent_mono_ns;
    rec.gorouter_time_s = (double)(total_ns - backend_ns) / 1e9;
    char rerr[CR_REASON_CAP + 32];
    size_t rl = cr_proxy_error_router_error(ex->error, ex->reason, rerr, sizeof(rerr));
    rec.router_error.ptr = rerr;
    rec.router_error.len = rl;
    cr_access_log_write(log, &rec);
}

/* --- Closing ---------------------------------------------------------------- */

void cr_proxy__close(cr_conn_t *c)
{
    if (c->state == CR_CS_CLOSING)
        return;
    cr_worker_t *w = c->w;
    detach_upstream(c, false);
    release_endpoints(c);
    cr_proxy__set_state(c, CR_CS_CLOSING);
    cr_tls_close(c->io.ssl);
    c->io.ssl = NULL;
    free(c->xfcc);
    c->xfcc = NULL;
    if (c->io.fd >= 0) {
        close(c->io.fd);
        c->io.fd = -1;
    }
    cr_buf_release(w, &c->cin);
    cr_buf_release(w, &c->uin);
    cr_buf_release(w, &c->rq_out);
    cr_buf_release(w, &c->rs_out);
    cr_pipe_close(w, &c->pipe);
    cr_counter_add(&w->counters.client_connections_open, (uint64_t)-1);
    cr_worker__reap_conn(w, c);
}

void cr_proxy__abort(cr_conn_t *c)
{
    cr_proxy__close(c);
}

/* The client went away with a request in progress: 499 in the log. */
void cr_proxy__client_closed(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    if (ex->req.head_len && !ex->resp_started && !ex->accounted) {
        ex->status = 499;
        ex->error = CR_PERR_CLIENT_CLOSED;
        snprintf(ex->reason, sizeof(ex->reason), "context canceled");
        cr_counter_add(&c->w->counters.errors[CR_PERR_CLIENT_CLOSED], 1);
    }
    cr_proxy__account(c);
    cr_proxy__close(c);
}

/* --- Starting and finishing requests --------------------------------------- */

static void reset_exchange(cr_conn_t *c)
{
    memset(&c->ex, 0, sizeof(c->ex));
}

/* The response is complete: log it, recycle what can be, then the next
 * request or close. */
static void finish_exchange(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    cr_worker_t *w = c->w;
    cr_proxy__account(c);
    if (c->up) {
        /* A backend that sent more after the response (in a later segment,
         * while the client was still taking the body) has spent the edge that
         * would have told the idle pool: look before pooling. */
        bool reusable = ex->resp_keep_alive && ex->req_sent && ex->resp_done &&
                        c->uin.start == c->uin.end && c->up->state == CR_US_RECEIVING &&
                        !c->up->io.hup && !c->up->io.eof &&
                        (!c->up->io.readable || c->up->io.ssl || cr_io__nothing_to_read(&c->up->io));
        detach_upstream(c, reusable);
    }
    release_endpoints(c);
    cr_buf_release(w, &c->uin);
    cr_buf_release(w, &c->rq_out);
    cr_buf_release(w, &c->rs_out);
    cr_pipe_release(w, &c->pipe);
    bool keep = ex->client_keep_alive && !c->close_after && !c->io.eof &&
                !atomic_load_explicit(&w->rt->draining, memory_order_relaxed);
    if (!keep) {
        cr_proxy__close(c);
        return;
    }
    /* The next request starts after this one's body. */
    uint32_t next = ex->has_body ? ex->b_scan : body_start(c);
    c->cin.start = next;
    if (c->cin.start >= c->cin.end) {
        c->cin.start = c->cin.end = 0;
        cr_buf_release(w, &c->cin);
    } else if (c->cin.cap > CR_BUF_SIZE && c->cin.end - c->cin.start <= CR_BUF_SIZE / 2) {
        /* Back from a big-head buffer to a pooled one. */
        cr_buf_t small = {0};
        cr_buf_acquire(w, &small);
        small.end = c->cin.end - c->cin.start;
        memcpy(small.data, c->cin.data + c->cin.start, small.end);
        cr_buf_release(w, &c->cin);
        c->cin = small;
    }
    reset_exchange(c);
    c->parse_pending = c->cin.end > c->cin.start;
    c->head_started_ns = c->cin.end > c->cin.start ? w->now_ns : 0;
    c->last_active_ns = w->now_ns;
    cr_proxy__set_state(c, CR_CS_READ_HEAD);
}

/* --- Router-made answers ---------------------------------------------------- */

static void respond_error(cr_conn_t *c, cr_proxy_error_t kind, const char *detail,
                          size_t detail_len, const char *reason)
{
    cr_exchange_t *ex = &c->ex;
    cr_worker_t *w = c->w;
    if (ex->resp_started) {
        /* Part of a response already went out: all we can do is close. */
        if (reason && reason != ex->reason)
            snprintf(ex->reason, sizeof(ex->reason), "%s", reason);
        cr_proxy__account(c);
        cr_proxy__close(c);
        return;
    }
    detach_upstream(c, false);
    cr_proxy__drop_in_flight(c);
    const cr_proxy_error_info_t *info = cr_proxy_error_info(kind);
    bool body_consumed = !ex->has_body || ex->b_done;
    bool keep = ex->req.keep_alive && body_consumed && kind != CR_PERR_BAD_REQUEST &&
                kind != CR_PERR_HEADERS_TOO_LARGE && !c->close_after;
    if (reason && reason != ex->reason)
        snprintf(ex->reason, sizeof(ex->reason), "%s", reason);
    cr_buf_acquire(w, &c->rs_out);
    c->rs_out.start = c->rs_out.end = 0;
    int n = cr_proxy_error_write(kind, detail, detail_len, ex->reason[0] ? ex->reason : NULL,
                                 keep, c->rs_out.data, c->rs_out.cap);
    if (n == CR_ETOOBIG) {
        cr_buf_grow(w, &c->rs_out, 64 * 1024);
        n = cr_proxy_error_write(kind, detail, detail_len, ex->reason[0] ? ex->reason : NULL,
                                 keep, c->rs_out.data, c->rs_out.cap);
    }
    c->rs_out.end = n > 0 ? (uint32_t)n : 0;
    ex->router_response = true;
    ex->status = info->status;
    ex->error = kind;
    ex->client_keep_alive = keep;
    ex->resp_head_done = ex->resp_done = true;
    cr_counter_add(&w->counters.errors[kind], 1);
    if (kind == CR_PERR_BAD_REQUEST)
        cr_counter_add(&w->counters.bad_requests, 1);
    cr_proxy__set_state(c, CR_CS_WRITE_RESPONSE);
}

/* Answers a head that cannot be parsed (400, 431) and closes afterwards. */
static void respond_bad_head(cr_conn_t *c, cr_proxy_error_t kind)
{
    memset(&c->ex.req, 0, sizeof(c->ex.req));
    respond_error(c, kind, NULL, 0, NULL);
}

/* --- Request body framing ---------------------------------------------------- */

/* Frames newly buffered body bytes. Returns false on bad chunked framing. */
static bool scan_request_body(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    if (ex->b_done || c->cin.end <= ex->b_scan)
        return true;
    uint32_t avail = c->cin.end - ex->b_scan;
    if (ex->req.body_kind == CR_HTTP_BODY_LENGTH) {
        uint32_t n = ex->b_left < avail ? (uint32_t)ex->b_left : avail;
        ex->b_scan += n;
        ex->b_left -= n;
        ex->req_body_bytes += n;
        if (ex->b_left == 0)
            ex->b_done = true;
        return true;
    }
    int64_t r = cr_chunked_scan(&ex->b_chunk, c->cin.data + ex->b_scan, avail);
    if (r == CR_EBAD)
        return false;
    if (r == CR_AGAIN) {
        ex->b_scan = c->cin.end;
    } else {
        ex->b_scan += (uint32_t)r;
        ex->b_done = true;
    }
    ex->req_body_bytes = ex->b_chunk.data_bytes;
    return true;
}

/* --- Reading heads ---------------------------------------------------------- */

static bool is_lower_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
}

/* "^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}:\d+$" */
static bool app_instance_valid(const char *v, size_t len)
{
    if (len < 38)
        return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? v[i] != '-' : !is_lower_hex(v[i]))
            return false;
    }
    if (v[36] != ':')
        return false;
    for (size_t i = 37; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return false;
    return true;
}

static bool is_idempotent(const cr_http_request_t *rq)
{
    switch (rq->method_len) {
    case 3: return memcmp(rq->method, "GET", 3) == 0;
    case 4: return memcmp(rq->method, "HEAD", 4) == 0;
    case 5: return memcmp(rq->method, "TRACE", 5) == 0;
    case 7: return memcmp(rq->method, "OPTIONS", 7) == 0;
    default: return false;
    }
}

/* A complete head is in cin at cin.start: set the exchange up and route it. */
static void on_head(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    cr_worker_t *w = c->w;
    const cr_config_t *cfg = cfg_of(c);
    cr_counter_add(&w->counters.requests, 1);
    ex->hstart = c->cin.start;
    ex->received_mono_ns = w->now_ns;
    ex->received_real_ns = w->now_real_ns;
    ex->deadline_ns = w->now_ns + cfg->endpoint_timeout_ns;
    c->head_started_ns = 0;
    cr_uuid4(ex->request_id);
    ex->b_fwd = ex->b_scan = body_start(c);
    ex->has_body = ex->req.body_kind != CR_HTTP_BODY_NONE;
    ex->b_done = !ex->has_body;
    ex->b_left = ex->req.body_kind == CR_HTTP_BODY_LENGTH ? (uint64_t)ex->req.content_length : 0;
    cr_chunked_init(&ex->b_chunk);
    if (ex->has_body && !scan_request_body(c)) {
        respond_bad_head(c, CR_PERR_BAD_REQUEST);
        return;
    }
    if (!ex->req.host || ex->req.host_len == 0) {
        respond_error(c, CR_PERR_EMPTY_HOST, NULL, 0, NULL);
        return;
    }
    ex->attempts = 1;
    begin_attempt(c, true);
}

/* Whether buf[from, end) completes a line (worth parsing again). */
static bool has_newline(const cr_buf_t *b, uint32_t from)
{
    return from < b->end && memchr(b->data + from, '\n', b->end - from) != NULL;
}

/* Whether a just-parsed request's body is copied through a CR_BULK_BUF_SIZE
 * buffer: a Content-Length body of at least CR_SPLICE_MIN that will not be
 * spliced (splice_request_bodies is off, or the client is on TLS; a body
 * that was to splice but falls back to copying, for a TLS backend or no
 * free pipe, keeps the 16 KiB buffer: nothing may move once the head's
 * slices are in use). recv/send of 64 KiB instead of 16 KiB make a quarter
 * of the syscalls and hand the backend 64 KiB segments; see "Large bodies"
 * in DESIGN.md for why uploads are copied rather than spliced by default. */
static bool wants_bulk_buffer(const cr_conn_t *c, const cr_buf_t *b)
{
    const cr_http_request_t *req = &c->ex.req;
    return req->body_kind == CR_HTTP_BODY_LENGTH && req->content_length >= CR_SPLICE_MIN &&
           (!c->w->splice_requests || c->io.ssl) && b->cap < CR_BULK_BUF_SIZE;
}

/* READ_HEAD: parse what is buffered, else read. Returns true on progress. */
static bool step_read_head(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    cr_router_t *rt = w->rt;
    cr_buf_t *b = &c->cin;
    if (c->parse_pending && b->data && b->end > b->start) {
        c->parse_pending = false;
        int r = cr_http1_parse_request(b->data + b->start, b->end - b->start, &rt->req_limits,
                                       c->headers, &c->ex.req);
        if (r > 0) {
            /* A body needs room after the head: move a big head to a bigger
             * buffer, and a large upload that is copied to a bulk buffer. */
            uint32_t head_end = b->start + (uint32_t)r;
            bool bulk = wants_bulk_buffer(c, b);
            if (bulk || (c->ex.req.body_kind != CR_HTTP_BODY_NONE && b->cap - head_end < 4096)) {
                if (b->start > 0) {
                    memmove(b->data, b->data + b->start, b->end - b->start);
                    b->end -= b->start;
                    b->start = 0;
                }
                if (bulk)
                    cr_buf_grow(w, b, CR_BULK_BUF_SIZE);
                else if (b->cap - (uint32_t)r < 4096)
                    cr_buf_grow(w, b, (uint32_t)r + CR_BUF_SIZE);
                c->parse_pending = true;
                return true; /* parse again: the slices moved */
            }
            on_head(c);
            return true;
        }
        if (r == CR_ETOOBIG) {
            respond_bad_head(c, CR_PERR_HEADERS_TOO_LARGE);
            return true;
        }
        if (r == CR_EBAD) {
            respond_bad_head(c, CR_PERR_BAD_REQUEST);
            return true;
        }
    }
    if (c->io.eof || c->client_gone) {
        cr_proxy__close(c);
        return true;
    }
    if (!c->io.readable) {
        if (b->data && b->end > b->start)
            cr_proxy__quickack(&c->io, &c->ex.quickacks_client); /* a partial head */
        return false;
    }
    cr_buf_acquire(w, b);
    if (b->end == b->cap) {
        if (b->start > 0) {
            memmove(b->data, b->data + b->start, b->end - b->start);
            b->end -= b->start;
            b->start = 0;
        } else if (b->cap < rt->req_limits.max_head_bytes + 4) {
            uint64_t cap = (uint64_t)b->cap * 4;
            if (cap > rt->req_limits.max_head_bytes + 4096u)
                cap = rt->req_limits.max_head_bytes + 4096u;
            cr_buf_grow(w, b, (uint32_t)cap);
        } else {
            respond_bad_head(c, CR_PERR_HEADERS_TOO_LARGE);
            return true;
        }
    }
    uint32_t before = b->end;
    ssize_t n = cr_io__read(&c->io, b);
    if (n > 0) {
        c->last_active_ns = w->now_ns;
        if (before == b->start) {
            c->head_started_ns = w->now_ns;
            cr_timer_arm(w, &c->timer, read_head_deadline(c));
        }
        /* Parse again only when a line was completed. */
        if (has_newline(b, before))
            c->parse_pending = true;
        return true;
    }
    if (n == 0 || (n < 0 && n != CR_AGAIN)) {
        cr_proxy__close(c);
        return true;
    }
    if (b->end == b->start && b->data) {
        /* Idle: the buffer goes back to the pool until bytes arrive. */
        b->start = b->end = 0;
        cr_buf_release(w, b);
    }
    return false;
}

/* --- Routing and attempts ------------------------------------------------------ */

/* Writes the backend-bound head for the current endpoint into rq_out. */
static bool build_request_head(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    cr_exchange_t *ex = &c->ex;
    cr_request_rewrite_t rw = {
        .req = &ex->req,
        .client_ip = c->client_ip,
        .endpoint = ex->ep,
        .request_id = ex->request_id,
        .received_at_ms = ex->received_real_ns / CR_NS_PER_MS,
        .over_tls = c->over_tls,
        .upstream_keep_alive = !cfg_of(c)->disable_keep_alives,
    };
    switch (cr_tls_xfcc_action(cfg_of(c)->forwarded_client_cert, c->has_client_cert)) {
    case CR_XFCC_KEEP:
        break;
    case CR_XFCC_REPLACE:
        rw.xfcc_value = c->xfcc;
        rw.xfcc_value_len = c->xfcc_len;
        rw.drop_xfcc = true;
        break;
    case CR_XFCC_REMOVE:
        rw.drop_xfcc = true;
        break;
    }
    if (CR_UNLIKELY(ex->persist.policy != NULL))
        cr_persist__request_rewrite(c, &rw);
    uint32_t need = ex->req.head_len + CR_SLACK_HEAD + c->xfcc_len;
    if (need <= CR_BUF_SIZE)
        cr_buf_acquire(w, &c->rq_out);
    else
        cr_buf_grow(w, &c->rq_out, need);
    for (int i = 0; i < 3; i++) {
        int n = cr_rewrite_request_head(&rw, c->rq_out.data, c->rq_out.cap);
        if (n > 0) {
            c->rq_out.start = 0;
            c->rq_out.end = (uint32_t)n;
            return true;
        }
        if (n != CR_ETOOBIG)
            break;
        cr_buf_grow(w, &c->rq_out, c->rq_out.cap * 2);
    }
    return false;
}

/* Picks an endpoint for the current attempt (re-looking the route up: the
 * pool may have changed) and binds a backend connection. On the first
 * attempt routing errors are answered; on a retry a failed pick ends in
 * 502 with the previous failure's reason. Returns false when it answered. */
/* The answer once no attempt is left: a TLS failure keeps gorouter's code. */
static cr_proxy_error_t last_failure(const cr_conn_t *c)
{
    return c->ex.fail_error != CR_PERR_NONE ? c->ex.fail_error : CR_PERR_ENDPOINT_FAILURE;
}

static bool begin_attempt(cr_conn_t *c, bool first)
{
    cr_worker_t *w = c->w;
    cr_router_t *rt = w->rt;
    cr_exchange_t *ex = &c->ex;
    const cr_http_request_t *rq = &ex->req;
    const cr_http_header_t *ai = cr_http_find_header(rq->headers, rq->headers_len,
                                                      "x-cf-app-instance", 17);
    if (first && ai && !app_instance_valid(ai->value, ai->value_len)) {
        respond_error(c, CR_PERR_INVALID_APP_INSTANCE, NULL, 0, NULL);
        return false;
    }
    if (first)
        cr_sticky_from_request(&rt->sticky, rq, &ex->sticky);

    cr_pick_opts_t opts = {
        .now_ns = w->now_ns,
        .fail_window_ns = rt->fail_window_ns,
        .max_conns = cfg_of(c)->backends_max_conns,
        .exclude = ex->tried,
        .exclude_len = ex->tried_len,
    };
    cr_pick_result_t pick = {0};
    cr_registry_read_lock();
    const cr_route_t *route = cr_registry_lookup(rt->reg, rq->host, rq->host_len, rq->path,
                                                 rq->path_len);
    if (ai) {
        const char *colon = memchr(ai->value, ':', ai->value_len);
        size_t glen = (size_t)(colon - ai->value);
        cr_endpoint_t *ep = route ? cr_pool_find_by_app_index(cr_route_pool(route), ai->value,
                                                              glen, colon + 1,
                                                              ai->value_len - glen - 1)
                                  : NULL;
        if (!ep) {
            cr_registry_read_unlock();
            if (!first) {
                respond_error(c, last_failure(c), NULL, 0, NULL);
                return false;
            }
            char detail[512];
            int n = snprintf(detail, sizeof(detail), "%.*s%c%.*s%c%.*s",
                             (int)(ai->value_len - glen - 1), colon + 1, 0, (int)glen, ai->value,
                             0, (int)rq->host_len, rq->host);
            size_t dl = n < 0 ? 0 : (size_t)n < sizeof(detail) ? (size_t)n : sizeof(detail) - 1;
            respond_error(c, CR_PERR_UNKNOWN_INSTANCE, detail, dl, NULL);
            return false;
        }
        for (uint32_t i = 0; i < ex->tried_len; i++)
            if (ex->tried[i] == ep)
                ep = NULL;
        if (ep && cr_balancer_is_overloaded(ep, opts.max_conns))
            pick.err = CR_PERR_CONN_LIMIT;
        else if (!ep)
            pick.err = CR_PERR_ENDPOINT_FAILURE;
        pick.ep = pick.err == CR_PERR_NONE ? ep : NULL;
    } else if (!route) {
        pick.err = CR_PERR_UNKNOWN_ROUTE;
    } else {
        const cr_pool_t *pool = cr_route_pool(route);
        if (pool->len == 0) {
            pick.err = rt->cfg->empty_pool_response_code_503 ? CR_PERR_NO_ENDPOINTS
                                                             : CR_PERR_UNKNOWN_ROUTE;
        } else {
            /* Session persistence: the route's mode, unless it is gorouter's. */
            const cr_persist_policy_t *pol = ex->persist.policy;
            if (!pol)
                pol = cr_persist__route_policy(rt, pool);
            if (CR_LIKELY(pol->mode == CR_PERSIST_VCAP))
                cr_balancer_choose((cr_route_t *)route, pool, &opts, ex->sticky.instance_id,
                                   ex->sticky.instance_id_len, ex->sticky.must_be_sticky, &pick);
            else
                cr_persist__choose(c, (cr_route_t *)route, pool, pol, &opts, first, &pick);
        }
    }
    if (pick.ep) {
        cr_endpoint_retain(pick.ep);
        atomic_fetch_add_explicit(&pick.ep->in_flight, 1, memory_order_relaxed);
    }
    cr_registry_read_unlock();

    if (first && ex->sticky.instance_id) {
        cr_counter_add(&w->counters.sticky_requests, 1);
        if (pick.sticky_hit)
            cr_counter_add(&w->counters.sticky_hits, 1);
        else {
            cr_counter_add(&w->counters.sticky_misses, 1);
            CR_DEBUG("router", "sticky miss host=%.*s instance=%.*s", (int)rq->host_len,
                     rq->host, (int)ex->sticky.instance_id_len, ex->sticky.instance_id);
        }
    }
    if (!pick.ep) {
        if (!first) {
            respond_error(c, last_failure(c), NULL, 0, NULL);
            return false;
        }
        if (pick.err == CR_PERR_ENDPOINT_FAILURE)
            respond_error(c, pick.err, NULL, 0, "No endpoints available");
        else
            respond_error(c, pick.err, rq->host, rq->host_len, NULL);
        return false;
    }
    ex->ep = pick.ep;
    ex->ep_in_flight = true;
    if (!build_request_head(c)) {
        respond_error(c, CR_PERR_HEADERS_TOO_LARGE, NULL, 0, NULL);
        return false;
    }
    /* A fresh attempt: resend the head and the body from their start. A
     * splice that moved nothing yet (else the request is not replayable)
     * starts over once the new connection has the head. */
    if (ex->b_splice) {
        ex->b_splice = false;
        cr_pipe_release(w, &c->pipe);
    }
    ex->rq_sent = 0;
    ex->head_sent = false;
    ex->req_sent = false;
    ex->got_resp_bytes = false;
    ex->b_fwd = body_start(c);
    cr_buf_release(w, &c->uin);
    cr_buf_release(w, &c->rs_out);
    int err = 0;
    bool pooled = !cfg_of(c)->disable_keep_alives && !ex->free_retry_used;
    c->up = cr_upstream__acquire(w, ex->ep, c, pooled, &err);
    ex->dial_err = c->up ? 0 : err;
    ex->sent_mono_ns = 0;
    cr_proxy__set_state(c, CR_CS_READ_BODY);
    return true;
}

static void format_dial_reason(cr_conn_t *c, int err)
{
    char msg[96];
    if (err == ETIMEDOUT) {
        snprintf(msg, sizeof(msg), "i/o timeout");
    } else {
        snprintf(msg, sizeof(msg), "connect: %s", strerror(err));
        msg[9] = (char)(msg[9] >= 'A' && msg[9] <= 'Z' ? msg[9] + 32 : msg[9]);
    }
    snprintf(c->ex.reason, sizeof(c->ex.reason), "dial tcp %s: %s",
             c->ex.ep ? c->ex.ep->addr : "?", msg);
}

/* An attempt failed before the response head: retry on another endpoint
 * when the rules allow (a transition back to READ_BODY), else answer 502. */
void cr_proxy__attempt_failed(cr_conn_t *c, cr_fail_kind_t kind, int err, const char *msg)
{
    cr_worker_t *w = c->w;
    cr_exchange_t *ex = &c->ex;
    cr_tls_failure_t alert;
    if (kind == CR_FAIL_IO && c->up && c->up->io.ssl && !ex->got_resp_bytes &&
        cr_tls_alert_failure(c->up->io.ssl, &alert)) {
        /* With TLS 1.3 a refused client certificate arrives as an alert
         * after the handshake, on the first read. */
        kind = CR_FAIL_TLS;
        ex->fail_error = alert.kind;
        msg = alert.reason;
    }
    bool reused = c->up && c->up->reused;
    cr_sockaddr_t addr;
    socklen_t addr_len = 0;
    if (c->up) {
        addr = c->up->addr;
        addr_len = c->up->addr_len;
    }
    switch (kind) {
    case CR_FAIL_DIAL:
        format_dial_reason(c, err);
        break;
    case CR_FAIL_IO:
        if (err == 0)
            snprintf(ex->reason, sizeof(ex->reason), "EOF");
        else if (err == ECONNRESET)
            snprintf(ex->reason, sizeof(ex->reason), "read: connection reset by peer");
        else
            snprintf(ex->reason, sizeof(ex->reason), "%s", strerror(err));
        break;
    case CR_FAIL_TIMEOUT:
        snprintf(ex->reason, sizeof(ex->reason), "timeout");
        break;
    case CR_FAIL_PROTO:
        snprintf(ex->reason, sizeof(ex->reason), "%s", msg ? msg : "malformed response");
        break;
    case CR_FAIL_TLS:
        snprintf(ex->reason, sizeof(ex->reason), "%s", msg ? msg : "tls: handshake failure");
        break;
    }
    detach_upstream(c, false);
    cr_counter_add(&w->counters.backend_failures, 1);
    cr_proxy__drop_in_flight(c);
    bool stale = reused && kind == CR_FAIL_IO;
    if (stale && addr_len)
        cr_upstream__close_idle_like(w, &addr, addr_len);
    if (ex->ep && ex->ep->tls && (kind == CR_FAIL_DIAL || kind == CR_FAIL_TLS)) {
        /* gorouter prunes a TLS endpoint that fails to dial or handshake:
         * TLS endpoints are exempt from TTL pruning, so this is how they go. */
        if (cr_registry_remove_endpoint(w->rt->reg, ex->ep))
            CR_INFO("router", "tls endpoint removed endpoint=%s reason=\"%s\"", ex->ep->addr,
                    ex->reason);
    } else if (ex->ep && !stale && (kind == CR_FAIL_DIAL || (kind == CR_FAIL_IO && err == ECONNRESET))) {
        int64_t now = w->now_ns ? w->now_ns : 1;
        atomic_store_explicit(&ex->ep->failed_at_ns, now, memory_order_relaxed);
    }
    if (ex->ep) {
        if (!stale && ex->tried_len < CR_MAX_TRIED)
            ex->tried[ex->tried_len++] = ex->ep;
        else
            cr_endpoint_release(ex->ep);
        ex->ep = NULL;
    }
    bool retriable = false;
    if (kind == CR_FAIL_DIAL || kind == CR_FAIL_TLS)
        retriable = true;
    else if (kind == CR_FAIL_IO)
        retriable = !ex->got_resp_bytes &&
                    (!ex->head_sent || reused || (is_idempotent(&ex->req) && !ex->has_body));
    bool replayable = !ex->b_reused_region;
    bool free_retry = stale && !ex->free_retry_used;
    bool budget = free_retry || ex->attempts < cfg_of(c)->backends_max_attempts;
    if (retriable && replayable && budget && w->now_ns < ex->deadline_ns && !c->client_gone) {
        CR_DEBUG("router", "retrying request_id=%s reason=\"%s\"", ex->request_id, ex->reason);
        if (free_retry)
            ex->free_retry_used = true;
        else
            ex->attempts++;
        cr_counter_add(&w->counters.retries, 1);
        begin_attempt(c, false);
        return;
    }
    static cr_log_ratelimit_t rl;
    uint64_t skipped;
    if (cr_log_ratelimit_allow(&rl, 5 * CR_NS_PER_SEC, &skipped))
        CR_WARN("router", "backend failed reason=\"%s\" request_id=%s suppressed=%llu",
                ex->reason, ex->request_id, (unsigned long long)skipped);
    respond_error(c, last_failure(c), NULL, 0, ex->reason);
}

/* --- Pumping the request ------------------------------------------------------- */

/* Moves request bytes client -> backend. Returns 1 on progress, 0 when
 * blocked, -1 when the exchange changed state (failure, close). */
static int pump_request(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    cr_exchange_t *ex = &c->ex;
    int progress = 0;
    for (;;) {
        cr_upconn_t *u = c->up;
        bool moved = false;
        if (ex->b_splice ||
            (!ex->b_done && ex->b_left >= CR_SPLICE_MIN && w->splice_requests &&
             cr_splice__start_request(c))) {
            /* The rest of a large body goes through a pipe (splice.c). */
            int r = cr_splice__pump_request(c);
            return r < 0 ? -1 : (progress | r);
        }
        /* Read more body when there is room. */
        if (!ex->b_done && c->io.readable && c->cin.end < c->cin.cap) {
            ssize_t n = cr_io__read(&c->io, &c->cin);
            if (n > 0) {
                c->last_active_ns = w->now_ns;
                if (!scan_request_body(c)) {
                    cr_counter_add(&w->counters.bad_requests, 1);
                    if (ex->resp_started) {
                        cr_proxy__close(c);
                    } else {
                        ex->has_body = true;
                        ex->b_done = false;
                        respond_error(c, CR_PERR_BAD_REQUEST, NULL, 0, NULL);
                    }
                    return -1;
                }
                moved = true;
                if (!ex->b_done && !c->io.readable)
                    cr_proxy__quickack(&c->io, &ex->quickacks_client);
            } else if (n == 0 || n != CR_AGAIN) {
                cr_proxy__client_closed(c);
                return -1;
            }
        }
        if (!u || u->state != CR_US_SENDING)
            return progress | moved;
        uint32_t head_left = c->rq_out.end - ex->rq_sent;
        uint32_t blen = ex->b_scan - ex->b_fwd;
        if (head_left == 0 && blen == 0) {
            if (ex->b_done) {
                ex->req_sent = true;
                u->state = CR_US_RECEIVING;
                if (c->state == CR_CS_READ_BODY)
                    cr_proxy__set_state(c, CR_CS_WAIT_UPSTREAM);
                return 1;
            }
            if (ex->b_fwd == c->cin.end && ex->b_fwd > body_start(c)) {
                /* Everything buffered was forwarded: reuse the body region. */
                c->cin.end = ex->b_fwd = ex->b_scan = body_start(c);
                ex->b_reused_region = true;
                moved = true;
            }
            if (!moved)
                return progress;
            progress = 1;
            continue;
        }
        if (!u->io.writable)
            return progress | moved;
        ssize_t n = cr_io__send2(&u->io, c->rq_out.data + ex->rq_sent, head_left,
                                 c->cin.data + ex->b_fwd, blen);
        if (n < 0) {
            cr_proxy__attempt_failed(c, CR_FAIL_IO, (int)-n, NULL);
            return -1;
        }
        uint32_t hn = (uint32_t)n < head_left ? (uint32_t)n : head_left;
        ex->rq_sent += hn;
        ex->b_fwd += (uint32_t)n - hn;
        if (hn && ex->rq_sent == c->rq_out.end) {
            ex->head_sent = true;
            ex->sent_mono_ns = w->now_ns;
        }
        if (n == 0 && !moved)
            return progress;
        progress = 1;
    }
}

/* --- The exchange ------------------------------------------------------------- */

/* A hang-up seen while nothing is read from the client: gone for good, or
 * a half-close after pipelined bytes? */
static bool client_went_away(cr_conn_t *c)
{
    if (!c->io.hup || c->client_gone)
        return c->client_gone;
    char ch;
    ssize_t r = recv(c->io.fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        c->client_gone = true;
    c->io.hup = false;
    return c->client_gone;
}

static bool step_exchange(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    cr_client_state_t s0 = c->state;
    if (ex->router_response) {
        uint32_t len = c->rs_out.end - c->rs_out.start;
        if (len && c->io.writable) {
            ssize_t n = cr_io__send2(&c->io, c->rs_out.data + c->rs_out.start, len, NULL, 0);
            if (n < 0) {
                cr_proxy__client_closed(c);
                return true;
            }
            c->rs_out.start += (uint32_t)n;
            if (n > 0)
                ex->resp_started = true;
        }
        if (c->rs_out.start == c->rs_out.end) {
            finish_exchange(c);
            return true;
        }
        return false;
    }
    if (!ex->resp_head_done && ex->b_done && client_went_away(c)) {
        cr_proxy__client_closed(c);
        return true;
    }
    cr_upconn_t *u = c->up;
    if (!u) {
        /* No socket could be made: a failed dial. */
        cr_proxy__attempt_failed(c, CR_FAIL_DIAL, ex->dial_err ? ex->dial_err : EMFILE, NULL);
        return true;
    }
    if (u->state == CR_US_CONNECTING || u->state == CR_US_TLS_HANDSHAKE) {
        cr_upstream__check_connect(u);
        if (u->state == CR_US_CONNECTING || u->state == CR_US_TLS_HANDSHAKE)
            return pump_request(c) > 0;
    }
    if (u->state == CR_US_CONNECT_FAILED) {
        if (u->tls_fail.kind != CR_PERR_NONE) {
            ex->fail_error = u->tls_fail.kind;
            cr_proxy__attempt_failed(c, CR_FAIL_TLS, u->err, u->tls_fail.reason);
        } else {
            cr_proxy__attempt_failed(c, CR_FAIL_DIAL, u->err, NULL);
        }
        return true;
    }
    bool progress = false;
    if (!ex->req_sent) {
        int r = pump_request(c);
        if (r < 0 || c->state != s0)
            return true;
        progress |= r > 0;
    }
    int r = cr_relay__pump_response(c);
    if (r < 0 || c->state == CR_CS_CLOSING || c->state == CR_CS_TUNNEL)
        return true;
    progress |= r > 0;
    if (ex->resp_done && c->rs_out.start == c->rs_out.end && c->uin.start >= ex->r_scan &&
        c->state == CR_CS_WRITE_RESPONSE) {
        if (!ex->req_sent) {
            /* Answered before the whole request was sent: this connection
             * cannot carry the next request. */
            ex->client_keep_alive = false;
        }
        finish_exchange(c);
        return true;
    }
    return progress || c->state != s0;
}

/* --- PROXY protocol and TLS handshake ------------------------------------------- */

/* Reads a PROXY header without taking a byte of what follows (it may be a
 * TLS ClientHello): peek, parse, then consume exactly the header. */
static bool step_proxy_header(cr_conn_t *c)
{
    char buf[CR_PROXY_V2_MAX];
    ssize_t n = recv(c->io.fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        c->io.readable = false;
        return false;
    }
    if (n <= 0) {
        cr_proxy__close(c);
        return true;
    }
    cr_proxy_header_t h;
    int r = cr_proxy_protocol_parse(buf, (size_t)n, &h);
    if (r == CR_AGAIN && (size_t)n < sizeof(buf) && !c->io.hup) {
        c->io.readable = false; /* new bytes raise a new edge */
        return false;
    }
    if (r < 0) {
        CR_DEBUG("router", "bad PROXY protocol header client=%s", c->client_addr);
        cr_proxy__close(c);
        return true;
    }
    if (r > 0) {
        ssize_t got = recv(c->io.fd, buf, (size_t)r, MSG_DONTWAIT);
        if (got != r) {
            cr_proxy__close(c);
            return true;
        }
        if (h.has_addr)
            cr_worker__format_peer(c, &h.src.sa);
    }
    c->proxy_pending = false;
    return true;
}

/* HANDSHAKE: the PROXY header (enable_proxy), then the TLS handshake (TLS
 * listener); then READ_HEAD. A failed handshake closes without a word. */
static bool step_handshake(cr_conn_t *c)
{
    if (c->proxy_pending) {
        if (!c->io.readable)
            return false;
        return step_proxy_header(c);
    }
    if (c->tls_pending) {
        char reason[128];
        switch (cr_tls_accept_step(c->io.ssl, reason, sizeof(reason))) {
        case CR_TLS_WANT_READ:
            c->io.readable = false;
            return false;
        case CR_TLS_WANT_WRITE:
            c->io.writable = false;
            return false;
        case CR_TLS_FAILED:
            CR_DEBUG("router", "tls handshake failed client=%s reason=\"%s\"", c->client_addr, reason);
            cr_proxy__close(c);
            return true;
        case CR_TLS_DONE:
            break;
        }
        c->tls_pending = false;
        c->has_client_cert = SSL_get0_peer_certificate(c->io.ssl) != NULL;
        if (c->has_client_cert && cfg_of(c)->forwarded_client_cert == CR_XFCC_SANITIZE_SET) {
            char tmp[8192];
            int n = cr_tls_xfcc_value(c->io.ssl, tmp, sizeof(tmp));
            if (n > 0) {
                c->xfcc = cr_xmemdup0(tmp, (size_t)n);
                c->xfcc_len = (uint16_t)n;
            }
        }
        c->io.readable = true; /* the request may already sit in OpenSSL's buffer */
        c->io.writable = true;
    }
    c->last_active_ns = c->w->now_ns;
    cr_proxy__set_state(c, CR_CS_READ_HEAD);
    return true;
}

/* --- Driving --------------------------------------------------------------------- */

static void drive(cr_conn_t *c)
{
    for (;;) {
        bool progress;
        switch (c->state) {
        case CR_CS_HANDSHAKE:
            progress = step_handshake(c);
            break;
        case CR_CS_READ_HEAD:
            progress = step_read_head(c);
            break;
        case CR_CS_READ_BODY:
        case CR_CS_WAIT_UPSTREAM:
        case CR_CS_WRITE_RESPONSE:
            progress = step_exchange(c);
            break;
        case CR_CS_TUNNEL:
            progress = cr_relay__step_tunnel(c);
            break;
        default:
            return;
        }
        if (!progress)
            return;
    }
}

void cr_proxy__on_accept(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    c->last_active_ns = w->now_ns;
    c->head_started_ns = w->now_ns; /* the first head is due within read_header_timeout */
    c->io.writable = true;
    c->io.readable = true;          /* try at once: the request often came with the SYN-ACK's ACK */
    c->proxy_pending = cfg_of(c)->enable_proxy;
    c->tls_pending = c->io.ssl != NULL;
    cr_proxy__set_state(c, c->proxy_pending || c->tls_pending ? CR_CS_HANDSHAKE : CR_CS_READ_HEAD);
    drive(c);
}

void cr_proxy__on_client_event(cr_conn_t *c, uint32_t events)
{
    if (events & EPOLLIN) {
        c->io.readable = true;
        if (c->io.wr_wants_read) {
            c->io.wr_wants_read = false;
            c->io.writable = true;
        }
    }
    if (events & EPOLLOUT) {
        c->io.writable = true;
        if (c->io.rd_wants_write) {
            c->io.rd_wants_write = false;
            c->io.readable = true;
        }
    }
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        c->io.hup = true;
        c->io.readable = true;
        if (events & (EPOLLHUP | EPOLLERR))
            c->client_gone = true;
    }
    drive(c);
}

void cr_proxy__on_upstream_event(cr_conn_t *c)
{
    drive(c);
}

void cr_proxy__on_timer(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    switch (c->state) {
    case CR_CS_HANDSHAKE:
    case CR_CS_READ_HEAD: {
        int64_t dl = read_head_deadline(c);
        if (w->now_ns < dl) {
            cr_timer_arm(w, &c->timer, dl);
            return;
        }
        /* Slowloris or idle: close without an answer. */
        cr_proxy__close(c);
        return;
    }
    case CR_CS_READ_BODY:
    case CR_CS_WAIT_UPSTREAM:
        if (w->now_ns < c->ex.deadline_ns) {
            cr_timer_arm(w, &c->timer, c->ex.deadline_ns);
            return;
        }
        if (c->up && (c->up->state == CR_US_CONNECTING || c->up->state == CR_US_TLS_HANDSHAKE)) {
            c->up->err = ETIMEDOUT;
            c->up->state = CR_US_CONNECT_FAILED;
        }
        cr_proxy__attempt_failed(c, CR_FAIL_TIMEOUT, ETIMEDOUT, NULL);
        drive(c);
        return;
    case CR_CS_WRITE_RESPONSE:
        if (!c->ex.router_response) {
            snprintf(c->ex.reason, sizeof(c->ex.reason), "timeout");
            cr_proxy__account(c);
        }
        cr_proxy__close(c);
        return;
    case CR_CS_TUNNEL: {
        int64_t dl = c->last_active_ns + cfg_of(c)->frontend_idle_timeout_ns;
        if (w->now_ns < dl) {
            cr_timer_arm(w, &c->timer, dl);
            return;
        }
        cr_proxy__close(c);
        return;
    }
    default:
        return;
    }
}

void cr_proxy__drain(cr_conn_t *c)
{
    if (c->state == CR_CS_HANDSHAKE ||
        (c->state == CR_CS_READ_HEAD && c->cin.end == c->cin.start)) {
        cr_proxy__close(c);
        return;
    }
    c->close_after = true;
}
