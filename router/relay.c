/* router/relay.c - bytes from the backend to the client: response heads, bodies, tunnels.
 *
 * The response half of an exchange that proxy.c runs: parse response heads
 * from the backend buffer (1xx copied through, the final one rewritten with
 * the sticky cookie into the client output buffer), frame the body
 * (Content-Length, chunked with cr_chunked_scan, until close, or decoded
 * for HTTP/1.0 clients), and forward it with backpressure: the backend is
 * read only while the buffer has room, and the buffer empties only as fast
 * as the client takes it. After a 101 the two sockets are tunnelled byte for
 * byte. Failures before a response head go back to proxy.c
 * (cr_proxy__attempt_failed), which retries or answers 502. Once the head
 * and the buffered body bytes are out, a large Content-Length or
 * close-delimited body between plain sockets is spliced (splice.c).
 *
 * Threads: the owning worker only. Owns nothing beyond what the connection
 * owns (its uin and rs_out buffers).
 */
#include "router/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "router/rewrite.h"

static bool dechunk(cr_conn_t *c);

/* --- Pumping the response -------------------------------------------------------- */

static bool scan_response_body(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    if (ex->resp_done || c->uin.end <= (ex->dechunk ? ex->r_in : ex->r_scan))
        return true;
    uint32_t avail = c->uin.end - ex->r_scan;
    switch (ex->r_kind) {
    case CR_HTTP_BODY_LENGTH: {
        uint32_t n = ex->r_left < avail ? (uint32_t)ex->r_left : avail;
        ex->r_scan += n;
        ex->r_left -= n;
        if (ex->r_left == 0)
            ex->resp_done = true;
        return true;
    }
    case CR_HTTP_BODY_CHUNKED: {
        if (ex->dechunk)
            return dechunk(c);
        int64_t r = cr_chunked_scan(&ex->r_chunk, c->uin.data + ex->r_scan, avail);
        if (r == CR_EBAD)
            return false;
        if (r == CR_AGAIN) {
            ex->r_scan = c->uin.end;
        } else {
            ex->r_scan += (uint32_t)r;
            ex->resp_done = true;
        }
        return true;
    }
    case CR_HTTP_BODY_UNTIL_CLOSE:
        ex->r_scan = c->uin.end;
        return true;
    default:
        ex->resp_done = true;
        return true;
    }
}

/* An HTTP/1.0 client cannot read chunked framing: crouter forwards only
 * the chunk data and ends the body by closing (as Go's server does). The
 * data is compacted in place in uin: [uin.start, r_scan) is decoded data,
 * [r_in, uin.end) input not yet decoded. */
enum { DC_SIZE, DC_EXT, DC_SIZE_LF, DC_DATA, DC_DATA_CR, DC_DATA_LF, DC_TRAILER_START,
       DC_TRAILER_LINE, DC_TRAILER_LF, DC_END_LF, DC_DONE };

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static bool dechunk(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    char *d = c->uin.data;
    uint32_t in = ex->r_in, out = ex->r_scan, end = c->uin.end;
    while (in < end && ex->dc_state != DC_DONE) {
        char ch = d[in];
        switch (ex->dc_state) {
        case DC_SIZE: {
            int v = hex_value(ch);
            if (v >= 0) {
                if (ex->dc_digits++ >= 15)
                    return false;
                ex->dc_left = ex->dc_left * 16 + (uint64_t)v;
            } else if (ex->dc_digits && (ch == ';' || ch == ' ' || ch == '\t')) {
                ex->dc_state = DC_EXT;
            } else if (ex->dc_digits && ch == '\r') {
                ex->dc_state = DC_SIZE_LF;
            } else {
                return false;
            }
            in++;
            break;
        }
        case DC_EXT:
            if (ch == '\r')
                ex->dc_state = DC_SIZE_LF;
            in++;
            break;
        case DC_SIZE_LF:
            if (ch != '\n')
                return false;
            in++;
            ex->dc_digits = 0;
            ex->dc_state = ex->dc_left ? DC_DATA : DC_TRAILER_START;
            break;
        case DC_DATA: {
            uint32_t n = ex->dc_left < end - in ? (uint32_t)ex->dc_left : end - in;
            memmove(d + out, d + in, n);
            out += n;
            in += n;
            ex->dc_left -= n;
            if (!ex->dc_left)
                ex->dc_state = DC_DATA_CR;
            break;
        }
        case DC_DATA_CR:
            if (ch != '\r')
                return false;
            ex->dc_state = DC_DATA_LF;
            in++;
            break;
        case DC_DATA_LF:
            if (ch != '\n')
                return false;
            ex->dc_state = DC_SIZE;
            in++;
            break;
        case DC_TRAILER_START:
            ex->dc_state = ch == '\r' ? DC_END_LF : DC_TRAILER_LINE;
            in++;
            break;
        case DC_TRAILER_LINE:
            if (ch == '\r')
                ex->dc_state = DC_TRAILER_LF;
            in++;
            break;
        case DC_TRAILER_LF:
            if (ch != '\n')
                return false;
            ex->dc_state = DC_TRAILER_START;
            in++;
            break;
        case DC_END_LF:
            if (ch != '\n')
                return false;
            ex->dc_state = DC_DONE;
            in++;
            break;
        }
    }
    ex->r_in = in;
    ex->r_scan = out;
    if (ex->dc_state == DC_DONE) {
        ex->resp_done = true;
        if (in != end)
            ex->resp_keep_alive = false; /* bytes after the body: do not reuse */
        c->uin.end = out;
        ex->r_in = out;
    }
    return true;
}

/* Makes room in uin once everything decoded was forwarded. */
static void uin_compact(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    cr_buf_t *b = &c->uin;
    if (b->start != ex->r_scan || b->start == 0)
        return;
    if (!ex->dechunk) {
        if (b->start == b->end)
            b->start = b->end = ex->r_scan = 0;
        return;
    }
    uint32_t rest = b->end - ex->r_in;
    memmove(b->data, b->data + ex->r_in, rest);
    b->start = ex->r_scan = ex->r_in = 0;
    b->end = rest;
}

/* Removes the Transfer-Encoding line from the head at rs_out[from, end). */
static void drop_transfer_encoding(cr_conn_t *c, uint32_t from)
{
    cr_buf_t *b = &c->rs_out;
    char *p = b->data + from, *end = b->data + b->end;
    p = memchr(p, '\n', (size_t)(end - p));
    while (p && ++p < end && *p != '\r') {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            return;
        if ((size_t)(eol - p) > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0) {
            size_t cut = (size_t)(eol + 1 - p);
            memmove(p, eol + 1, (size_t)(end - eol - 1));
            b->end -= (uint32_t)cut;
            return;
        }
        p = eol;
    }
}

/* Appends n bytes to rs_out, growing it when needed. */
static char *rs_out_reserve(cr_conn_t *c, uint32_t n)
{
    cr_buf_t *b = &c->rs_out;
    cr_buf_acquire(c->w, b);
    if (b->start == b->end)
        b->start = b->end = 0;
    if (b->cap - b->end < n)
        cr_buf_grow(c->w, b, b->end + n);
    return b->data + b->end;
}

/* A final response head: rewrite it for the client. Returns false when the
 * head was unusable (the exchange was answered or closed). */
static bool on_response_head(cr_conn_t *c, const cr_http_response_t *resp)
{
    cr_worker_t *w = c->w;
    cr_router_t *rt = w->rt;
    cr_exchange_t *ex = &c->ex;
    ex->status = resp->status;
    ex->resp_head_done = true;
    ex->resp_head_mono_ns = w->now_ns;
    cr_proxy__drop_in_flight(c);
    if (resp->status == 101) {
        if (!ex->req.upgrade) {
            cr_proxy__attempt_failed(c, CR_FAIL_PROTO, 0, "unexpected 101 response");
            return false;
        }
        ex->upgrade = true;
    }
    ex->resp_keep_alive = resp->keep_alive && !rt->cfg->disable_keep_alives && !ex->upgrade;
    ex->dechunk = ex->req.version_minor == 0 && resp->body_kind == CR_HTTP_BODY_CHUNKED;
    ex->client_keep_alive = !ex->upgrade && !ex->dechunk && ex->req.keep_alive &&
                            resp->body_kind != CR_HTTP_BODY_UNTIL_CLOSE && ex->b_done &&
                            !c->close_after &&
                            !atomic_load_explicit(&rt->draining, memory_order_relaxed);
    char extra[1024];
    int extra_len = 0;
    uint64_t drop[CR_RESP_MAX_HEADERS / 64];
    const cr_persist_policy_t *ep_pol =
        ex->ep && ex->ep->persistence ? ex->ep->persistence : &rt->cfg->session_persistence;
    if (CR_UNLIKELY(ex->persist.policy != NULL)) {
        if (!ex->upgrade)
            extra_len = cr_persist__response(c, resp, extra, sizeof(extra), drop);
    } else if (!ex->upgrade && ex->ep && ep_pol->mode == CR_PERSIST_VCAP) {
        /* A route whose persistence mode is not vcap gets no __VCAP_ID__. */
        cr_sticky_response_ctx_t sctx = {
            .cfg = &rt->sticky,
            .request = &ex->sticky,
            .resp = resp,
            .endpoint = ex->ep,
            .context_path = ex->ep->context_path ? ex->ep->context_path : "",
            .over_tls = c->over_tls,
        };
        extra_len = cr_sticky_response_cookie(&sctx, extra, sizeof(extra));
        if (extra_len < 0)
            extra_len = 0;
        if (extra_len > 0)
            cr_counter_add(&w->counters.vcap_cookies_set, 1);
    }
    cr_response_rewrite_t rw = {
        .resp = resp,
        .request_id = ex->request_id,
        .client_keep_alive = ex->client_keep_alive,
        .upgrade = ex->upgrade,
        .client_version_minor = ex->req.version_minor,
        .extra = extra_len > 0 ? extra : NULL,
        .extra_len = (size_t)extra_len,
        .drop_mask = ex->persist.policy && extra_len > 0 ? drop : NULL,
    };
    uint32_t need = resp->head_len + 1024 + (uint32_t)extra_len;
    uint32_t head_from = 0;
    for (int i = 0; i < 3; i++) {
        char *out = rs_out_reserve(c, need);
        head_from = c->rs_out.end;
        int n = cr_rewrite_response_head(&rw, out, c->rs_out.cap - c->rs_out.end);
        if (n > 0) {
            c->rs_out.end += (uint32_t)n;
            break;
        }
        if (n != CR_ETOOBIG || i == 2) {
            cr_proxy__attempt_failed(c, CR_FAIL_PROTO, 0, "response head too large");
            return false;
        }
        need *= 2;
    }
    if (ex->dechunk)
        drop_transfer_encoding(c, head_from);
    c->uin.start += resp->head_len;
    ex->r_scan = ex->r_in = c->uin.start;
    ex->r_kind = (uint8_t)resp->body_kind;
    ex->r_left = resp->body_kind == CR_HTTP_BODY_LENGTH ? (uint64_t)resp->content_length : 0;
    cr_chunked_init(&ex->r_chunk);
    if (resp->body_kind == CR_HTTP_BODY_NONE)
        ex->resp_done = true;
    if (ex->upgrade) {
        c->up->state = CR_US_TUNNEL;
        cr_counter_add(&w->counters.upgrades, 1);
        /* Log the 101 now: the tunnel reuses cin, where the head lives. */
        cr_proxy__account(c);
        c->cin.start = ex->b_scan;
        c->last_active_ns = w->now_ns;
        cr_proxy__set_state(c, CR_CS_TUNNEL);
    } else {
        cr_proxy__set_state(c, CR_CS_WRITE_RESPONSE);
    }
    return true;
}

/* Parses response heads in uin: 1xx are copied through, the final one is
 * rewritten. Returns 1 on progress, 0 when more is needed, -1 on a change. */
static int parse_response(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    cr_exchange_t *ex = &c->ex;
    bool is_head = ex->req.method_len == 4 && memcmp(ex->req.method, "HEAD", 4) == 0;
    int progress = 0;
    while (!ex->resp_head_done && c->uin.end > c->uin.start) {
        cr_http_response_t resp;
        int r = cr_http1_parse_response(c->uin.data + c->uin.start, c->uin.end - c->uin.start,
                                        &w->rt->resp_limits, w->resp_headers, is_head, &resp);
        if (r == CR_AGAIN) {
            if (c->uin.end == c->uin.cap) {
                if (c->uin.start > 0) {
                    memmove(c->uin.data, c->uin.data + c->uin.start, c->uin.end - c->uin.start);
                    c->uin.end -= c->uin.start;
                    c->uin.start = 0;
                } else if (c->uin.cap < CR_RESP_MAX_HEAD) {
                    cr_buf_grow(w, &c->uin, CR_RESP_MAX_HEAD);
                } else {
                    cr_proxy__attempt_failed(c, CR_FAIL_PROTO, 0, "Too many response headers");
                    return -1;
                }
            }
            return progress;
        }
        if (r < 0) {
            cr_proxy__attempt_failed(c, CR_FAIL_PROTO, 0, "malformed HTTP response");
            return -1;
        }
        if (resp.status >= 100 && resp.status < 200 && resp.status != 101) {
            /* Interim (100 Continue, 103): to the client as received. */
            char *out = rs_out_reserve(c, (uint32_t)r);
            memcpy(out, c->uin.data + c->uin.start, (size_t)r);
            c->rs_out.end += (uint32_t)r;
            c->uin.start += (uint32_t)r;
            progress = 1;
            continue;
        }
        return on_response_head(c, &resp) ? 1 : -1;
    }
    return progress;
}

/* The backend closed or failed while a response was expected or streaming. */
static void upstream_ended(cr_conn_t *c, int err)
{
    cr_exchange_t *ex = &c->ex;
    if (!ex->resp_head_done) {
        if (ex->resp_started || c->rs_out.end > c->rs_out.start) {
            /* A 1xx went (or is going) out: no 502 can follow it. */
            cr_proxy__close(c);
            return;
        }
        cr_proxy__attempt_failed(c, CR_FAIL_IO, err, NULL);
        return;
    }
    if (ex->r_kind == CR_HTTP_BODY_UNTIL_CLOSE && err == 0) {
        ex->resp_done = true;
        return;
    }
    /* Truncated body: the client sees the connection close. */
    snprintf(ex->reason, sizeof(ex->reason), "%s", err ? strerror(err) : "unexpected EOF");
    cr_proxy__account(c);
    cr_proxy__close(c);
}

/* Moves response bytes backend -> client. Returns 1/0/-1 as pump_request. */
int cr_relay__pump_response(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    cr_exchange_t *ex = &c->ex;
    if (ex->r_splice)
        return cr_splice__pump_response(c);
    int progress = 0;
    for (;;) {
        cr_upconn_t *u = c->up;
        bool moved = false;
        if (u && !ex->resp_done && (u->state == CR_US_SENDING || u->state == CR_US_RECEIVING) &&
            u->io.readable) {
            cr_buf_acquire(w, &c->uin);
            if (ex->resp_head_done)
                uin_compact(c);
            if (c->uin.end < c->uin.cap) {
                ssize_t n = cr_io__read(&u->io, &c->uin);
                if (n > 0) {
                    ex->got_resp_bytes = true;
                    moved = true;
                } else if (n == 0 || n != CR_AGAIN) {
                    upstream_ended(c, n == 0 ? 0 : (int)-n);
                    if (c->state == CR_CS_CLOSING || c->up != u || !ex->resp_done)
                        return -1;
                    moved = true;
                }
            }
        }
        if (!ex->resp_head_done) {
            int r = parse_response(c);
            if (r < 0)
                return -1;
            if (c->state == CR_CS_TUNNEL)
                return 1;
            moved |= r > 0;
        }
        if (ex->resp_head_done && !scan_response_body(c)) {
            snprintf(ex->reason, sizeof(ex->reason), "malformed chunked response");
            cr_proxy__account(c);
            cr_proxy__close(c);
            return -1;
        }
        uint32_t hlen = c->rs_out.end - c->rs_out.start;
        uint32_t blen = ex->resp_head_done ? ex->r_scan - c->uin.start : 0;
        if (hlen && blen && blen <= 4096 && c->rs_out.cap - c->rs_out.end >= blen) {
            /* A small body rides in the head's buffer: one send(), not sendmsg(). */
            memcpy(c->rs_out.data + c->rs_out.end, c->uin.data + c->uin.start, blen);
            c->rs_out.end += blen;
            c->uin.start += blen;
            ex->resp_body_bytes += blen;
            hlen += blen;
            blen = 0;
        }
        if ((hlen || blen) && c->io.writable) {
            ssize_t n = cr_io__send2(&c->io, c->rs_out.data + c->rs_out.start, hlen,
                                     c->uin.data + c->uin.start, blen);
            if (n < 0) {
                cr_proxy__client_closed(c);
                return -1;
            }
            if (n > 0) {
                ex->resp_started = true;
                uint32_t hn = (uint32_t)n < hlen ? (uint32_t)n : hlen;
                c->rs_out.start += hn;
                c->uin.start += (uint32_t)n - hn;
                ex->resp_body_bytes += (uint32_t)n - hn;
                moved = true;
            }
            if (ex->resp_head_done)
                uin_compact(c);
        }
        if (ex->resp_head_done && !ex->resp_done && ex->r_kind != CR_HTTP_BODY_CHUNKED &&
            cr_splice__start_response(c)) {
            /* Head and buffered body are out: the rest goes through a pipe. */
            return cr_splice__pump_response(c) < 0 ? -1 : 1;
        }
        if (!moved) {
            if (!ex->resp_done && ex->got_resp_bytes && u && !u->io.readable)
                cr_proxy__quickack(&u->io, &ex->quickacks_up);
            return progress;
        }
        progress = 1;
    }
}

/* --- Tunnel -------------------------------------------------------------------- */

/* Moves bytes src -> dst through buf. Returns 1 progress, 0 blocked, -1 closed. */
static int tunnel_dir(cr_io_t *src, cr_buf_t *buf, cr_io_t *dst, cr_worker_t *w)
{
    int progress = 0;
    for (;;) {
        bool moved = false;
        if (buf->end > buf->start && dst->writable) {
            ssize_t n = cr_io__send2(dst, buf->data + buf->start, buf->end - buf->start, NULL, 0);
            if (n < 0)
                return -1;
            buf->start += (uint32_t)n;
            moved = n > 0;
        }
        if (buf->start == buf->end) {
            buf->start = buf->end = 0;
            if (src->eof)
                return -1;
        }
        if (src->readable && buf->end < buf->cap) {
            cr_buf_acquire(w, buf);
            ssize_t n = cr_io__read(src, buf);
            if (n > 0)
                moved = true;
            else if (n == 0 || n != CR_AGAIN)
                moved = true; /* eof: flush, then close */
            if (n < 0 && n != CR_AGAIN)
                return -1;
        }
        if (!moved)
            return progress;
        progress = 1;
    }
}

bool cr_relay__step_tunnel(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    cr_upconn_t *u = c->up;
    if (!u) {
        cr_proxy__close(c);
        return true;
    }
    /* The 101 head (and any bytes after it) go first. */
    uint32_t hlen = c->rs_out.end - c->rs_out.start;
    if (hlen && c->io.writable) {
        ssize_t n = cr_io__send2(&c->io, c->rs_out.data + c->rs_out.start, hlen, NULL, 0);
        if (n < 0) {
            cr_proxy__close(c);
            return true;
        }
        c->rs_out.start += (uint32_t)n;
    }
    if (c->rs_out.start != c->rs_out.end)
        return false;
    cr_buf_acquire(w, &c->cin);
    cr_buf_acquire(w, &c->uin);
    int a = tunnel_dir(&c->io, &c->cin, &u->io, w);
    int b = a < 0 ? -1 : tunnel_dir(&u->io, &c->uin, &c->io, w);
    if (a < 0 || b < 0) {
        cr_proxy__close(c);
        return true;
    }
    if (a > 0 || b > 0)
        c->last_active_ns = w->now_ns;
    return false;
}

