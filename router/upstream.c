/* router/upstream.c - backend connections: dialling and the keep-alive pools.
 *
 * A backend connection belongs to one worker. While a request uses it, it is
 * bound to that client connection (u->owner) and its events drive the
 * owner's state machine (proxy.c). When the exchange ends cleanly it goes to
 * the worker's idle pool, keyed by the endpoint's socket address (not by the
 * endpoint object, which a re-register may replace): a hash of buckets with
 * the most recently used connection first, at most CR_IDLE_PER_ENDPOINT per
 * address and CR_IDLE_PER_WORKER in all (the least recently used goes
 * first), each closed after CR_UPSTREAM_IDLE_NS idle. Idle connections stay
 * registered with epoll: any input or hang-up on one means the backend
 * closed it (or misbehaves), so it is closed at once, which is the stale
 * check before reuse. The rare race (a close in flight while it is reused)
 * is a failure on a reused connection, which proxy.c retries.
 *
 * Threads: the owning worker only. Owns: the sockets and the idle pool.
 */
#include "router/internal.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <string.h>
#include <unistd.h>

#include "common/hash.h"

const char *cr_upstream_state_name(cr_upstream_state_t s)
{
    switch (s) {
    case CR_US_CONNECTING: return "connecting";
    case CR_US_TLS_HANDSHAKE: return "tls_handshake";
    case CR_US_CONNECT_FAILED: return "connect_failed";
    case CR_US_SENDING: return "sending";
    case CR_US_RECEIVING: return "receiving";
    case CR_US_TUNNEL: return "tunnel";
    case CR_US_IDLE: return "idle";
    case CR_US_CLOSED: return "closed";
    }
    return "?";
}

/* --- Keys ----------------------------------------------------------------- */

static uint32_t hash_addr(const cr_sockaddr_t *a, socklen_t len)
{
    const unsigned char *p;
    size_t n;
    uint16_t port;
    if (a->sa.sa_family == AF_INET6) {
        p = (const unsigned char *)&a->in6.sin6_addr;
        n = sizeof(a->in6.sin6_addr);
        port = a->in6.sin6_port;
    } else {
        p = (const unsigned char *)&a->in.sin_addr;
        n = sizeof(a->in.sin_addr);
        port = a->in.sin_port;
    }
    (void)len;
    return cr_hash_fold(cr_fnv1a32(CR_FNV1A32_SEED ^ port, p, n));
}

static bool same_addr(const cr_sockaddr_t *a, const cr_sockaddr_t *b)
{
    if (a->sa.sa_family != b->sa.sa_family)
        return false;
    if (a->sa.sa_family == AF_INET6)
        return a->in6.sin6_port == b->in6.sin6_port &&
               memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
    return a->in.sin_port == b->in.sin_port && a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
}

/* --- Idle pool ------------------------------------------------------------ */

static void idle_unlink(cr_worker_t *w, cr_upconn_t *u)
{
    cr_upconn_t **bucket = &w->idle_buckets[u->key_hash & (CR_IDLE_BUCKETS - 1)];
    if (u->b_prev)
        u->b_prev->b_next = u->b_next;
    else
        *bucket = u->b_next;
    if (u->b_next)
        u->b_next->b_prev = u->b_prev;
    if (u->l_prev)
        u->l_prev->l_next = u->l_next;
    else
        w->idle_head = u->l_next;
    if (u->l_next)
        u->l_next->l_prev = u->l_prev;
    else
        w->idle_tail = u->l_prev;
    u->b_next = u->b_prev = u->l_next = u->l_prev = NULL;
    w->idle_count--;
}

void cr_upstream__close(cr_upconn_t *u)
{
    if (u->state == CR_US_CLOSED)
        return;
    cr_worker_t *w = u->w;
    if (u->state == CR_US_IDLE)
        idle_unlink(w, u);
    cr_timer_cancel(w, &u->timer);
    cr_tls_close(u->io.ssl);
    u->io.ssl = NULL;
    if (u->io.fd >= 0) {
        close(u->io.fd);
        u->io.fd = -1;
    }
    u->state = CR_US_CLOSED;
    u->owner = NULL;
    cr_worker__reap_upconn(w, u);
}

/* An idle connection to addr; tls_key must match too (a TLS connection
 * was verified for one SAN; 0 = plain). */
static cr_upconn_t *take_idle(cr_worker_t *w, const cr_sockaddr_t *addr, socklen_t len,
                              uint64_t tls_key)
{
    uint32_t h = hash_addr(addr, len);
    for (cr_upconn_t *u = w->idle_buckets[h & (CR_IDLE_BUCKETS - 1)]; u; u = u->b_next) {
        if (u->key_hash == h && same_addr(&u->addr, addr) && u->tls_key == tls_key) {
            idle_unlink(w, u);
            cr_timer_cancel(w, &u->timer);
            return u;
        }
    }
    return NULL;
}

void cr_upstream__release_idle(cr_upconn_t *u)
{
    cr_worker_t *w = u->w;
    u->owner = NULL;
    if (u->io.hup || u->io.eof || u->io.fd < 0) {
        cr_upstream__close(u);
        return;
    }
    cr_upconn_t **bucket = &w->idle_buckets[u->key_hash & (CR_IDLE_BUCKETS - 1)];
    uint32_t same = 0;
    for (cr_upconn_t *o = *bucket; o; o = o->b_next)
        if (o->key_hash == u->key_hash && same_addr(&o->addr, &u->addr) &&
            ++same >= CR_IDLE_PER_ENDPOINT) {
            cr_upstream__close(u);
            return;
        }
    if (w->idle_count >= CR_IDLE_PER_WORKER && w->idle_tail)
        cr_upstream__close(w->idle_tail);
    u->state = CR_US_IDLE;
    u->b_prev = NULL;
    u->b_next = *bucket;
    if (*bucket)
        (*bucket)->b_prev = u;
    *bucket = u;
    u->l_prev = NULL;
    u->l_next = w->idle_head;
    if (w->idle_head)
        w->idle_head->l_prev = u;
    else
        w->idle_tail = u;
    w->idle_head = u;
    w->idle_count++;
    cr_timer_arm(w, &u->timer, w->now_ns + CR_UPSTREAM_IDLE_NS);
}

void cr_upstream__close_all_idle(cr_worker_t *w)
{
    while (w->idle_head)
        cr_upstream__close(w->idle_head);
    /* The worker's empty splice pipes are idle resources too (worker exit). */
    cr_pipe_close_pool(w);
}

void cr_upstream__close_idle_like(cr_worker_t *w, const cr_sockaddr_t *addr, socklen_t len)
{
    cr_upconn_t **bucket = &w->idle_buckets[hash_addr(addr, len) & (CR_IDLE_BUCKETS - 1)];
    cr_upconn_t *u = *bucket;
    while (u) {
        if (!same_addr(&u->addr, addr)) {
            u = u->b_next;
            continue;
        }
        idle_unlink(w, u);
        cr_timer_cancel(w, &u->timer);
        u->state = CR_US_SENDING; /* not idle any more: close without unlinking twice */
        cr_upstream__close(u);
        u = *bucket;
    }
}

/* --- Dialling ------------------------------------------------------------- */

cr_upconn_t *cr_upstream__acquire(cr_worker_t *w, const cr_endpoint_t *ep, cr_conn_t *owner,
                                  bool allow_pooled, int *err)
{
    const cr_sockaddr_t *addr = (const cr_sockaddr_t *)&ep->sockaddr;
    socklen_t len = ep->sockaddr_len;
    uint64_t tls_key = ep->tls ? cr_tls_session_key(ep->addr, ep->server_cert_domain_san) : 0;
    if (allow_pooled && len) {
        cr_upconn_t *u = take_idle(w, addr, len, tls_key);
        if (u) {
            u->owner = owner;
            u->reused = true;
            u->state = CR_US_SENDING;
            cr_counter_add(&w->counters.backend_reuses, 1);
            return u;
        }
    }
    if (!len) {
        *err = EADDRNOTAVAIL;
        return NULL;
    }
    int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    cr_upconn_t *u = cr_worker__alloc_upconn(w);
    u->io.fd = fd;
    memcpy(&u->addr, addr, len);
    u->addr_len = len;
    u->key_hash = hash_addr(addr, len);
    u->owner = owner;
    u->tls_key = tls_key;
    cr_counter_add(&w->counters.backend_connects, 1);
    if (tls_key) {
        u->io.ssl = cr_tls_client_ssl_new(w->rt->tls_client, fd, ep->server_cert_domain_san,
                                          tls_key, &u->tls_fail);
        if (!u->io.ssl) {
            u->err = EPROTO;
            u->state = CR_US_CONNECT_FAILED;
            close(fd);
            u->io.fd = -1;
            return u;
        }
    }
    int r;
    do {
        r = connect(fd, &addr->sa, len);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EINPROGRESS) {
        u->err = errno;
        u->state = CR_US_CONNECT_FAILED;
        close(fd);
        u->io.fd = -1;
        return u;
    }
    if (cr_worker__watch(w, &u->io) != 0) {
        u->err = errno ? errno : EIO;
        u->state = CR_US_CONNECT_FAILED;
        close(fd);
        u->io.fd = -1;
        return u;
    }
    if (r == 0 && !u->io.ssl) {
        u->state = CR_US_SENDING;
        u->io.writable = true;
    } else {
        /* TLS: the dial timeout covers the handshake too. */
        u->state = r == 0 ? CR_US_TLS_HANDSHAKE : CR_US_CONNECTING;
        u->io.writable = r == 0;
        int64_t dl = w->now_ns + w->rt->cfg->endpoint_dial_timeout_ns;
        cr_timer_arm(w, &u->timer, dl);
    }
    return u;
}

/* TLS_HANDSHAKE -> SENDING or CONNECT_FAILED (tls_fail says why). */
static void step_handshake(cr_upconn_t *u)
{
    switch (cr_tls_connect_step(u->io.ssl, &u->tls_fail)) {
    case CR_TLS_DONE:
        cr_timer_cancel(u->w, &u->timer);
        u->state = CR_US_SENDING;
        u->io.writable = true;
        break;
    case CR_TLS_WANT_READ:
        u->io.readable = false;
        break;
    case CR_TLS_WANT_WRITE:
        u->io.writable = false;
        break;
    case CR_TLS_FAILED:
        cr_timer_cancel(u->w, &u->timer);
        u->err = EPROTO;
        u->state = CR_US_CONNECT_FAILED;
        break;
    }
}

void cr_upstream__check_connect(cr_upconn_t *u)
{
    if (u->state == CR_US_TLS_HANDSHAKE) {
        step_handshake(u);
        return;
    }
    if (u->state != CR_US_CONNECTING || !(u->io.writable || u->io.hup))
        return;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(u->io.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr == 0 && u->io.hup && !u->io.writable)
        soerr = ECONNREFUSED;
    if (soerr != 0) {
        cr_timer_cancel(u->w, &u->timer);
        u->err = soerr;
        u->state = CR_US_CONNECT_FAILED;
        return;
    }
    if (u->io.ssl) {
        u->state = CR_US_TLS_HANDSHAKE;
        step_handshake(u);
        return;
    }
    cr_timer_cancel(u->w, &u->timer);
    u->state = CR_US_SENDING;
}

void cr_upstream__on_event(cr_upconn_t *u, uint32_t events)
{
    if (events & (EPOLLIN)) {
        u->io.readable = true;
        if (u->io.wr_wants_read) {
            u->io.wr_wants_read = false;
            u->io.writable = true;
        }
    }
    if (events & EPOLLOUT) {
        u->io.writable = true;
        if (u->io.rd_wants_write) {
            u->io.rd_wants_write = false;
            u->io.readable = true;
        }
    }
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        u->io.hup = true;
        u->io.readable = true; /* read to learn EOF or the error */
    }
    if (u->state == CR_US_IDLE) {
        /* Input or a hang-up on an idle connection: the backend closed it.
         * TLS 1.3 session tickets arriving late are input, not a close. */
        if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ||
            ((events & EPOLLIN) && !(u->io.ssl && cr_tls_idle_still_usable(u->io.ssl))))
            cr_upstream__close(u);
        return;
    }
    if (u->owner)
        cr_proxy__on_upstream_event(u->owner);
}

void cr_upstream__on_timer(cr_upconn_t *u)
{
    if (u->state == CR_US_IDLE) {
        cr_upstream__close(u);
        return;
    }
    if (u->state == CR_US_CONNECTING || u->state == CR_US_TLS_HANDSHAKE) {
        if (u->state == CR_US_TLS_HANDSHAKE)
            cr_tls_timeout_failure(&u->tls_fail);
        u->err = ETIMEDOUT;
        u->state = CR_US_CONNECT_FAILED;
        if (u->owner)
            cr_proxy__on_upstream_event(u->owner);
    }
}
