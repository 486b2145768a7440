/* router/splice.c - large bodies between plain TCP sockets through a pipe, with splice(2).
 *
 * Copying a body costs a recv() into a 16 KiB buffer and a send() out of it
 * per 16 KiB, and two copies of every byte. Once the head is forwarded and
 * every buffered body byte is out, the rest of a Content-Length body (at
 * least CR_SPLICE_MIN left) or of a close-delimited response moves
 * socket -> pipe -> socket instead: the kernel hands page references
 * along, crouter copies nothing, and a 256 KiB pipe (CR_PIPE_SIZE) moves
 * 16 times what a buffer does per call. Chunked bodies are still copied
 * (cr_chunked_scan must see them), and so is anything over TLS. Request
 * bodies splice only with splice_request_bodies: true; by default they are
 * copied through a 64 KiB buffer, which a backend on the same machine
 * reads far more cheaply (DESIGN.md, "Uploads are copied").
 *
 * Backpressure stays: the source is spliced only into free pipe room and
 * the pipe empties only as fast as the destination takes it, so a
 * connection holds at most one pipe's worth of a body (and releases its
 * copying buffers while it splices). A Content-Length source is never
 * asked for more than the body's remaining bytes, so what follows the
 * body (a pipelined request, bytes a backend should not have sent) stays
 * in the socket as with copying; a backend connection with bytes after
 * its spliced response (peeked once at the end) is not reused.
 *
 * Readiness: splice(SPLICE_F_NONBLOCK) from a socket returns EAGAIN both
 * when the socket is empty and when the pipe is full, and a short splice
 * can mean a full pipe (its slots are per page, not per byte). So the
 * source's readable flag is cleared only by EAGAIN on an empty pipe; with
 * bytes in the pipe, the pipe is emptied first and the source tried again.
 * A short splice into a socket means its send buffer filled, as a short
 * send() does, and clears writable.
 *
 * A spliced request body cannot be replayed (it was never buffered): the
 * exchange is marked like one whose body region was reused.
 *
 * Pipes: one per splicing exchange (cr_conn_t.pipe, one direction at a
 * time: a response splices only after its request was sent), from a
 * per-worker pool of empty pipes (CR_PIPE_POOL_KEEP kept, cr_pipe_limit()
 * open at most, then bodies are copied). Only a pipe whose body ended
 * goes back to the pool; the pipe of an aborted body or of a connection
 * that closes is closed.
 *
 * Threads: the owning worker only. Owns the worker's pooled pipes; the
 * connection owns the pipe it holds.
 */
#include "router/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- The pool -------------------------------------------------------------- */

static bool pipe_get(cr_worker_t *w, cr_pipe_t *p)
{
    if (w->free_pipes_len > 0) {
        *p = w->free_pipes[--w->free_pipes_len];
        p->open = true;
        return true;
    }
    if (w->pipes_open >= w->pipes_max)
        return false;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return false;
    /* Best effort: an unprivileged process over its pipe quota keeps the
     * default size (the kernel may even shrink it; F_GETPIPE_SZ tells). */
    (void)fcntl(fds[1], F_SETPIPE_SZ, CR_PIPE_SIZE);
    int cap = fcntl(fds[1], F_GETPIPE_SZ);
    if (cap < CR_PIPE_MIN_SIZE) {
        /* Over the per-user pipe quota (pipe-user-pages-soft) the kernel hands
         * out 2-page pipes: slower than copying through the 16 KiB buffers,
         * and pooling one would keep it for good. Copy instead. */
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    p->fds[0] = fds[0];
    p->fds[1] = fds[1];
    p->bytes = 0;
    p->cap = (uint32_t)cap;
    p->open = true;
    w->pipes_open++;
    return true;
}

uint32_t cr_pipe_limit(uint64_t nofile, uint32_t workers)
{
    /* Pipes take at most a quarter of the descriptors: the rest is for
     * client and backend sockets, which a pipe shortage only slows (the
     * body is copied) but an fd shortage refuses. */
    uint64_t per_worker = nofile / 4 / 2 / (workers ? workers : 1);
    return per_worker < CR_PIPES_PER_WORKER ? (uint32_t)per_worker : CR_PIPES_PER_WORKER;
}

void cr_pipe_release(cr_worker_t *w, cr_pipe_t *p)
{
    if (!p->open)
        return;
    if (p->bytes == 0 && w->free_pipes_len < CR_PIPE_POOL_KEEP) {
        w->free_pipes[w->free_pipes_len++] = *p;
    } else {
        close(p->fds[0]);
        close(p->fds[1]);
        w->pipes_open--;
    }
    memset(p, 0, sizeof(*p));
}

void cr_pipe_close(cr_worker_t *w, cr_pipe_t *p)
{
    if (!p->open)
        return;
    close(p->fds[0]);
    close(p->fds[1]);
    w->pipes_open--;
    memset(p, 0, sizeof(*p));
}

void cr_pipe_close_pool(cr_worker_t *w)
{
    while (w->free_pipes_len > 0) {
        cr_pipe_t *p = &w->free_pipes[--w->free_pipes_len];
        close(p->fds[0]);
        close(p->fds[1]);
        w->pipes_open--;
    }
}

/* --- Moving bytes ------------------------------------------------------------ */

/* Socket -> pipe, at most max bytes. Returns bytes, 0 at EOF (src->eof),
 * CR_AGAIN, or -errno. See the header for when readable is cleared. */
static ssize_t splice_in(cr_io_t *src, cr_pipe_t *p, size_t max)
{
    ssize_t r;
    do {
        r = splice(src->fd, NULL, p->fds[1], NULL, max, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
        p->bytes += (uint32_t)r;
        return r;
    }
    if (r == 0) {
        src->readable = false;
        src->eof = true;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (p->bytes == 0)
            src->readable = false;
        return CR_AGAIN;
    }
    src->readable = false;
    return -errno;
}

/* Pipe -> socket. Returns bytes, 0 when the socket would block (writable
 * cleared), or -errno. */
static ssize_t splice_out(cr_pipe_t *p, cr_io_t *dst)
{
    ssize_t r;
    do {
        r = splice(p->fds[0], NULL, dst->fd, NULL, p->bytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
        if ((uint32_t)r < p->bytes)
            dst->writable = false;
        p->bytes -= (uint32_t)r;
        return r;
    }
    if (r == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
        dst->writable = false;
        return 0;
    }
    return -errno;
}

static bool can_splice(const cr_conn_t *c)
{
    return c->up && !c->io.ssl && !c->up->io.ssl && c->io.fd >= 0 && c->up->io.fd >= 0 &&
           !c->pipe.open;
}

/* --- Request bodies (client -> backend) --------------------------------------- */

bool cr_splice__start_request(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    if (ex->b_done || ex->req.body_kind != CR_HTTP_BODY_LENGTH || ex->b_left < CR_SPLICE_MIN ||
        !can_splice(c) || c->up->state != CR_US_SENDING || ex->rq_sent != c->rq_out.end ||
        ex->b_fwd != c->cin.end || ex->b_scan != c->cin.end)
        return false;
    if (!pipe_get(c->w, &c->pipe))
        return false;
    /* b_reused_region is set when the first byte moves: until then a failed
     * attempt (a stale pooled connection, say) may still be retried. */
    ex->b_splice = true;
    return true;
}

int cr_splice__pump_request(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    cr_exchange_t *ex = &c->ex;
    cr_pipe_t *p = &c->pipe;
    int progress = 0;
    for (;;) {
        cr_upconn_t *u = c->up;
        bool moved = false;
        if (!ex->b_done && c->io.readable && p->bytes < p->cap) {
            size_t room = p->cap - p->bytes;
            ssize_t n = splice_in(&c->io, p, ex->b_left < room ? (size_t)ex->b_left : room);
            if (n > 0) {
                ex->b_reused_region = true; /* spliced bytes cannot be sent again */
                c->last_active_ns = w->now_ns;
                ex->b_left -= (uint64_t)n;
                ex->req_body_bytes += (uint64_t)n;
                if (ex->b_left == 0)
                    ex->b_done = true;
                moved = true;
            } else if (n == 0 || n != CR_AGAIN) {
                cr_proxy__client_closed(c);
                return -1;
            }
        }
        if (!u || u->state != CR_US_SENDING)
            return progress | moved;
        if (p->bytes && u->io.writable) {
            ssize_t n = splice_out(p, &u->io);
            if (n < 0) {
                cr_proxy__attempt_failed(c, CR_FAIL_IO, (int)-n, NULL);
                return -1;
            }
            moved |= n > 0;
        }
        if (ex->b_done && p->bytes == 0) {
            ex->b_splice = false;
            cr_pipe_release(w, p);
            ex->req_sent = true;
            u->state = CR_US_RECEIVING;
            if (c->state == CR_CS_READ_BODY)
                cr_proxy__set_state(c, CR_CS_WAIT_UPSTREAM);
            return 1;
        }
        if (!moved)
            return progress;
        progress = 1;
    }
}

/* --- Response bodies (backend -> client) --------------------------------------- */

bool cr_splice__start_response(cr_conn_t *c)
{
    cr_exchange_t *ex = &c->ex;
    if (!ex->resp_head_done || ex->resp_done || ex->dechunk || ex->upgrade || !ex->req_sent)
        return false;
    if (!(ex->r_kind == CR_HTTP_BODY_LENGTH && ex->r_left >= CR_SPLICE_MIN) &&
        ex->r_kind != CR_HTTP_BODY_UNTIL_CLOSE)
        return false;
    if (!can_splice(c) || c->up->state != CR_US_RECEIVING || c->rs_out.start != c->rs_out.end ||
        c->uin.start != c->uin.end || c->uin.start != ex->r_scan)
        return false;
    if (!pipe_get(c->w, &c->pipe))
        return false;
    /* Nothing is buffered in either: give them back while the body streams. */
    cr_buf_release(c->w, &c->uin);
    cr_buf_release(c->w, &c->rs_out);
    ex->r_scan = ex->r_in = 0;
    ex->r_splice = true;
    return true;
}

/* The backend failed or closed before the end of a Content-Length body:
 * the client sees the connection close (as relay.c's upstream_ended). */
static void truncated(cr_conn_t *c, int err)
{
    cr_exchange_t *ex = &c->ex;
    snprintf(ex->reason, sizeof(ex->reason), "%s", err ? strerror(err) : "unexpected EOF");
    cr_proxy__account(c);
    cr_proxy__close(c);
}

int cr_splice__pump_response(cr_conn_t *c)
{
    cr_worker_t *w = c->w;
    cr_exchange_t *ex = &c->ex;
    cr_pipe_t *p = &c->pipe;
    cr_upconn_t *u = c->up;
    int progress = 0;
    if (!u) {
        cr_proxy__close(c);
        return -1;
    }
    for (;;) {
        bool moved = false;
        if (!ex->r_src_done && u->io.readable && p->bytes < p->cap) {
            size_t room = p->cap - p->bytes;
            size_t want = room;
            if (ex->r_kind == CR_HTTP_BODY_LENGTH && ex->r_left < room)
                want = (size_t)ex->r_left;
            ssize_t n = splice_in(&u->io, p, want);
            if (n > 0) {
                ex->got_resp_bytes = true;
                if (ex->r_kind == CR_HTTP_BODY_LENGTH) {
                    ex->r_left -= (uint64_t)n;
                    ex->r_src_done = ex->r_left == 0;
                }
                moved = true;
            } else if (n == 0 && ex->r_kind == CR_HTTP_BODY_UNTIL_CLOSE) {
                ex->r_src_done = true;
                moved = true;
            } else if (n != CR_AGAIN) {
                truncated(c, n == 0 ? 0 : (int)-n);
                return -1;
            }
        }
        if (p->bytes && c->io.writable) {
            ssize_t n = splice_out(p, &c->io);
            if (n < 0) {
                cr_proxy__client_closed(c);
                return -1;
            }
            if (n > 0) {
                ex->resp_body_bytes += (uint64_t)n;
                moved = true;
            }
        }
        if (ex->r_src_done && p->bytes == 0) {
            ex->r_splice = false;
            ex->resp_done = true;
            cr_pipe_release(w, p);
            /* Bytes the backend sent beyond a spliced Content-Length body are
             * still in its socket (copying would have read them into uin,
             * which stops reuse). */
            if (ex->resp_keep_alive && u->io.readable && !cr_io__nothing_to_read(&u->io))
                ex->resp_keep_alive = false;
            return 1;
        }
        if (!moved)
            return progress;
        progress = 1;
    }
}
