/* router/worker.c - one worker thread: its epoll loop, timers, buffers and accept.
 *
 * Each worker owns an epoll instance, one SO_REUSEPORT listener (bound by
 * router.c), an eventfd that other threads write to wake it (drain, stop),
 * and every socket it accepts or dials: a connection never moves between
 * workers. Sockets are registered once, edge-triggered for in, out and
 * rdhup, so steady-state traffic makes no epoll_ctl calls; cr_io_t keeps the
 * readiness learnt from events until a short read or write clears it.
 *
 * Loop iteration: epoll_wait (timeout = the next non-empty timer slot),
 * refresh the cached clocks, dispatch events, run due timers, then reap:
 * connections closed during the iteration are recycled only here, so no
 * struct is freed inside its own callback and stale events in the same
 * batch still point at valid (closed) structs.
 *
 * Busy polling: a worker that spent more than half of the last 10 ms
 * handling events polls epoll without blocking for up to `busy_poll`
 * (default 50 us) before it sleeps. Under load the next event nearly always
 * arrives within that time, so the worker's CPU does not halt and the
 * processes that feed it (clients, backends) do not pay for waking it: on
 * this 2-core VM that was about +5% req/s for +6% CPU per request
 * (router/DESIGN.md, "Performance notes"). A lightly loaded worker never
 * spins.
 *
 * Timers are a hashed wheel of 4096 slots of about 8.4 ms with entries
 * embedded in their owners: arm and cancel are O(1) list operations and
 * nothing is allocated per timer. Deadlines beyond one turn stay in their
 * slot and are looked at again on the next turn.
 *
 * Memory: client connection structs, backend connection structs and 16 KiB
 * I/O buffers come from per-worker free lists; in the steady state a
 * request allocates nothing. Threads: only the worker itself, except
 * cr_worker__wake() (any thread).
 */
#include "router/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"

/* --- Buffers -------------------------------------------------------------- */

void cr_buf_acquire(cr_worker_t *w, cr_buf_t *b)
{
    if (b->data)
        return;
    if (w->free_bufs_len > 0)
        b->data = w->free_bufs[--w->free_bufs_len];
    else
        b->data = cr_xmalloc(CR_BUF_SIZE);
    b->cap = CR_BUF_SIZE;
    b->start = b->end = 0;
}

void cr_buf_release(cr_worker_t *w, cr_buf_t *b)
{
    if (!b->data)
        return;
    if (b->cap == CR_BUF_SIZE && w->free_bufs_len < w->free_bufs_cap)
        w->free_bufs[w->free_bufs_len++] = b->data;
    else if (b->cap == CR_BULK_BUF_SIZE && w->free_bulk_len < CR_BULK_POOL_KEEP)
        w->free_bulk[w->free_bulk_len++] = b->data;
    else
        free(b->data);
    b->data = NULL;
    b->cap = b->start = b->end = 0;
}

void cr_buf_grow(cr_worker_t *w, cr_buf_t *b, uint32_t cap)
{
    if (b->data && b->cap >= cap)
        return;
    char *p = cap == CR_BULK_BUF_SIZE && w->free_bulk_len > 0 ? w->free_bulk[--w->free_bulk_len]
                                                               : cr_xmalloc(cap);
    uint32_t start = b->start, end = b->end;
    if (b->data) {
        memcpy(p, b->data, end);
        cr_buf_release(w, b);
    } else {
        start = end = 0;
    }
    b->data = p;
    b->cap = cap;
    b->start = start;
    b->end = end;
}

/* --- Timers --------------------------------------------------------------- */

static void wheel_insert(cr_wheel_t *wh, cr_timer_t *t)
{
    int64_t tick = t->deadline_ns >> CR_TICK_SHIFT;
    if (tick <= wh->cur_tick)
        tick = wh->cur_tick + 1;
    cr_timer_t **slot = &wh->slots[tick & (CR_WHEEL_SLOTS - 1)];
    t->next = *slot;
    if (t->next)
        t->next->pprev = &t->next;
    t->pprev = slot;
    *slot = t;
}

static void wheel_unlink(cr_timer_t *t)
{
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    t->next = NULL;
    t->pprev = NULL;
}

void cr_timer_arm(cr_worker_t *w, cr_timer_t *t, int64_t deadline_ns)
{
    if (t->pprev) {
        /* Same slot: only the deadline moves (the common re-arm). */
        if ((t->deadline_ns >> CR_TICK_SHIFT) == (deadline_ns >> CR_TICK_SHIFT) &&
            (deadline_ns >> CR_TICK_SHIFT) > w->wheel.cur_tick) {
            t->deadline_ns = deadline_ns;
            return;
        }
        wheel_unlink(t);
        w->wheel.armed--;
    }
    t->deadline_ns = deadline_ns;
    wheel_insert(&w->wheel, t);
    w->wheel.armed++;
}

void cr_timer_cancel(cr_worker_t *w, cr_timer_t *t)
{
    if (!t->pprev)
        return;
    wheel_unlink(t);
    w->wheel.armed--;
}

static void fire_timer(cr_timer_t *t)
{
    if (t->kind == CR_TIMER_CLIENT)
        cr_proxy__on_timer(CR_CONTAINER_OF(t, cr_conn_t, timer));
    else
        cr_upstream__on_timer(CR_CONTAINER_OF(t, cr_upconn_t, timer));
}

static void run_timers(cr_worker_t *w)
{
    cr_wheel_t *wh = &w->wheel;
    int64_t now_tick = w->now_ns >> CR_TICK_SHIFT;
    /* After a long stall, one lap of the wheel visits every slot once. */
    int64_t ticks_behind = now_tick - wh->cur_tick;
    if (ticks_behind > CR_WHEEL_SLOTS)
        wh->cur_tick = now_tick - CR_WHEEL_SLOTS;
    while (wh->cur_tick < now_tick) {
        int64_t tick = ++wh->cur_tick;
        cr_timer_t **slot = &wh->slots[tick & (CR_WHEEL_SLOTS - 1)];
        /* Detach the slot: callbacks may arm timers, which go to later ticks. */
        cr_timer_t *list = *slot;
        *slot = NULL;
        if (list)
            list->pprev = &list;
        while (list) {
            cr_timer_t *t = list;
            wheel_unlink(t);
            if (t->deadline_ns <= w->now_ns) {
                wh->armed--;
                fire_timer(t);
            } else {
                /* A later turn (or later in this tick): back into the wheel. */
                wheel_insert(wh, t);
            }
        }
    }
}

/* Milliseconds until the next non-empty slot (looked up to ~2 s ahead). */
static int next_timeout_ms(cr_worker_t *w)
{
    cr_wheel_t *wh = &w->wheel;
    if (wh->armed == 0)
        return -1;
    int64_t tick = wh->cur_tick + 1;
    int64_t limit = tick + 256;
    while (tick < limit && !wh->slots[tick & (CR_WHEEL_SLOTS - 1)])
        tick++;
    int64_t due_ns = (tick + 1) << CR_TICK_SHIFT;
    int64_t ms = (due_ns - w->now_ns + 999999) / 1000000;
    if (ms < 0)
        ms = 0;
    return (int)ms;
}

/* --- I/O helpers ---------------------------------------------------------- */

/* TLS: readiness is cleared only when OpenSSL asks to wait (a record is
 * decrypted per call, so a short read says nothing about the socket); a
 * read that must write first (or the reverse) waits for the other event. */
static ssize_t tls_send2(cr_io_t *io, const char *a, size_t alen, const char *b, size_t blen)
{
    cr_tls_step_t want = CR_TLS_WANT_WRITE;
    ssize_t r = cr_tls_write2(io->ssl, a, alen, b, blen, &want);
    if (r != CR_AGAIN)
        return r;
    if (want == CR_TLS_WANT_READ) {
        io->readable = false;
        io->wr_wants_read = true;
    }
    io->writable = false;
    return 0;
}

static ssize_t tls_read(cr_io_t *io, cr_buf_t *b)
{
    cr_tls_step_t want = CR_TLS_WANT_READ;
    ssize_t r = cr_tls_read(io->ssl, b->data + b->end, b->cap - b->end, &want);
    if (r > 0) {
        b->end += (uint32_t)r;
        return r;
    }
    io->readable = false;
    if (r == 0) {
        io->eof = true;
        return 0;
    }
    if (r == CR_AGAIN && want == CR_TLS_WANT_WRITE) {
        io->writable = false;
        io->rd_wants_write = true;
    }
    return r;
}

ssize_t cr_io__send2(cr_io_t *io, const char *a, size_t alen, const char *b, size_t blen)
{
    if (io->ssl)
        return tls_send2(io, a, alen, b, blen);
    struct iovec iov[2];
    int n = 0;
    if (alen) {
        iov[n].iov_base = (void *)a;
        iov[n].iov_len = alen;
        n++;
    }
    if (blen) {
        iov[n].iov_base = (void *)b;
        iov[n].iov_len = blen;
        n++;
    }
    if (n == 0)
        return 0;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t r;
    do {
        /* send() skips sendmsg's msghdr and iovec import. */
        r = n == 1 ? send(io->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT)
                   : sendmsg(io->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            io->writable = false;
            return 0;
        }
        return -errno;
    }
    if ((size_t)r < alen + blen)
        io->writable = false;
    return r;
}

bool cr_io__nothing_to_read(cr_io_t *io)
{
    char ch;
    ssize_t r = recv(io->fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        io->readable = false;
        return true;
    }
    return false;
}

ssize_t cr_io__read(cr_io_t *io, cr_buf_t *b)
{
    if (io->ssl)
        return tls_read(io, b);
    size_t room = b->cap - b->end;
    ssize_t r;
    do {
        r = recv(io->fd, b->data + b->end, room, MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
        b->end += (uint32_t)r;
        /* A short read on a stream socket means it is drained (epoll(7)),
         * except after a reported hang-up: that edge is spent, and what is
         * left to read is the EOF (or an error), which no event announces. */
        if ((size_t)r < room && !io->hup)
            io->readable = false;
        return r;
    }
    if (r == 0) {
        io->readable = false;
        io->eof = true;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        io->readable = false;
        return CR_AGAIN;
    }
    io->readable = false;
    return -errno;
}

int cr_worker__watch(cr_worker_t *w, cr_io_t *io)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = io};
    return epoll_ctl(w->epfd, EPOLL_CTL_ADD, io->fd, &ev) == 0 ? 0 : -errno;
}

/* --- Structs and reaping -------------------------------------------------- */

static cr_conn_t *alloc_conn(cr_worker_t *w)
{
    cr_conn_t *c = w->free_conns;
    if (c)
        w->free_conns = c->next;
    else
        c = cr_xmalloc(w->rt->conn_size);
    memset(c, 0, offsetof(cr_conn_t, headers));
    c->w = w;
    c->io.fd = -1;
    c->io.kind = CR_IO_CLIENT;
    c->timer.kind = CR_TIMER_CLIENT;
    return c;
}

cr_upconn_t *cr_worker__alloc_upconn(cr_worker_t *w)
{
    cr_upconn_t *u = w->free_ups;
    if (u)
        w->free_ups = u->reap_next;
    else
        u = cr_xmalloc(sizeof(*u));
    memset(u, 0, sizeof(*u));
    u->w = w;
    u->io.fd = -1;
    u->io.kind = CR_IO_UPSTREAM;
    u->timer.kind = CR_TIMER_UPSTREAM;
    return u;
}

void cr_worker__reap_conn(cr_worker_t *w, cr_conn_t *c)
{
    /* Off the open list now; recycled after the iteration. */
    if (c->prev)
        c->prev->next = c->next;
    else if (w->conns == c)
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    c->reap_next = w->reap_conns;
    w->reap_conns = c;
}

void cr_worker__reap_upconn(cr_worker_t *w, cr_upconn_t *u)
{
    u->reap_next = w->reap_ups;
    w->reap_ups = u;
}

static void reap(cr_worker_t *w)
{
    while (w->reap_conns) {
        cr_conn_t *c = w->reap_conns;
        w->reap_conns = c->reap_next;
        c->next = w->free_conns;
        w->free_conns = c;
    }
    while (w->reap_ups) {
        cr_upconn_t *u = w->reap_ups;
        w->reap_ups = u->reap_next;
        u->reap_next = w->free_ups;
        w->free_ups = u;
    }
}

/* --- Accept --------------------------------------------------------------- */

void cr_worker__format_peer(cr_conn_t *c, const struct sockaddr *ss)
{
    const void *a;
    int fam = ss->sa_family;
    uint16_t port;
    if (fam == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        a = &s6->sin6_addr;
        port = ntohs(s6->sin6_port);
        /* v4-mapped addresses print as plain IPv4 (Go does the same). */
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            fam = AF_INET;
            a = (const char *)&s6->sin6_addr + 12;
        }
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        a = &s4->sin_addr;
        port = ntohs(s4->sin_port);
    }
    if (!inet_ntop(fam, a, c->client_ip, sizeof(c->client_ip)))
        strcpy(c->client_ip, "0.0.0.0");
    c->client_ip_len = (uint8_t)strlen(c->client_ip);
    c->client_port = port;
    int n = fam == AF_INET6
                ? snprintf(c->client_addr, sizeof(c->client_addr), "[%s]:%u", c->client_ip, port)
                : snprintf(c->client_addr, sizeof(c->client_addr), "%s:%u", c->client_ip, port);
    c->client_addr_len = (uint8_t)(n < 0 ? 0 : n >= (int)sizeof(c->client_addr)
                                                   ? (int)sizeof(c->client_addr) - 1
                                                   : n);
}

static void on_accept(cr_worker_t *w, bool tls)
{
    for (int i = 0; i < 64; i++) {
        int lfd = tls ? w->tls_listen_fd : w->listen_fd;
        if (lfd < 0)
            return;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                static cr_log_ratelimit_t rl;
                uint64_t skipped;
                if (cr_log_ratelimit_allow(&rl, 10 * CR_NS_PER_SEC, &skipped))
                    CR_WARN("router", "accept failed: %s worker=%u suppressed=%llu",
                            strerror(errno), w->id, (unsigned long long)skipped);
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        cr_conn_t *c = alloc_conn(w);
        c->io.fd = fd;
        cr_worker__format_peer(c, (const struct sockaddr *)&ss);
        if (tls) {
            c->over_tls = true;
            c->io.ssl = cr_tls_server_ssl_new(w->rt->tls_server, fd);
        }
        if ((tls && !c->io.ssl) || cr_worker__watch(w, &c->io) != 0) {
            cr_tls_close(c->io.ssl);
            c->io.ssl = NULL;
            close(fd);
            c->next = w->free_conns;
            w->free_conns = c;
            continue;
        }
        c->next = w->conns;
        if (w->conns)
            w->conns->prev = c;
        w->conns = c;
        cr_counter_add(&w->counters.client_connections, 1);
        cr_counter_add(&w->counters.client_connections_open, 1);
        cr_proxy__on_accept(c);
    }
}

/* --- Drain and stop ------------------------------------------------------- */

static void close_listener(cr_worker_t *w)
{
    if (w->tls_listen_fd >= 0) {
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->tls_listen_fd, NULL);
        close(w->tls_listen_fd);
        w->tls_listen_fd = -1;
    }
    if (w->listen_fd < 0)
        return;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->listen_fd, NULL);
    close(w->listen_fd);
    w->listen_fd = -1;
}

static void start_drain(cr_worker_t *w)
{
    w->drained = true;
    close_listener(w);
    cr_conn_t *c = w->conns;
    while (c) {
        cr_conn_t *next = c->next; /* drain may unlink c */
        cr_proxy__drain(c);
        c = next;
    }
}

static void close_everything(cr_worker_t *w)
{
    close_listener(w);
    while (w->conns)
        cr_proxy__abort(w->conns);
    cr_upstream__close_all_idle(w);
    reap(w);
}

/* --- The loop ------------------------------------------------------------- */

static void on_wake(cr_worker_t *w)
{
    uint64_t v;
    while (read(w->wake_fd, &v, sizeof(v)) > 0)
        ;
}

static void dispatch(cr_worker_t *w, struct epoll_event *ev)
{
    cr_io_t *io = ev->data.ptr;
    switch (io->kind) {
    case CR_IO_LISTENER:
        on_accept(w, false);
        break;
    case CR_IO_TLS_LISTENER:
        on_accept(w, true);
        break;
    case CR_IO_WAKE:
        on_wake(w);
        break;
    case CR_IO_CLIENT:
        if (io->fd >= 0)
            cr_proxy__on_client_event(CR_CONTAINER_OF(io, cr_conn_t, io), ev->events);
        break;
    case CR_IO_UPSTREAM:
        if (io->fd >= 0)
            cr_upstream__on_event(CR_CONTAINER_OF(io, cr_upconn_t, io), ev->events);
        break;
    default:
        break;
    }
}

#define CR_LOAD_WINDOW_NS (10 * 1000 * 1000)

/* Called when the worker has handled everything it was woken for: books the
 * time since the last wake-up as work and, at the end of each window, decides
 * whether the next waits poll first. */
static void account_work(cr_worker_t *w)
{
    int64_t now = cr_now_mono_ns();
    w->load_window_work_ns += now - w->now_ns;
    int64_t elapsed = now - w->load_window_start_ns;
    if (elapsed >= CR_LOAD_WINDOW_NS) {
        w->busy_polling = w->busy_poll_ns > 0 && 2 * w->load_window_work_ns > elapsed;
        w->load_window_start_ns = now;
        w->load_window_work_ns = 0;
    }
}

/* epoll_wait, polling without blocking for up to busy_poll_ns first when the
 * worker is busy. */
static int wait_for_events(cr_worker_t *w, struct epoll_event *events)
{
    if (w->busy_polling) {
        int64_t until = cr_now_mono_ns() + w->busy_poll_ns;
        do {
            int n = epoll_wait(w->epfd, events, CR_EVENTS_PER_WAIT, 0);
            if (n != 0)
                return n;
        } while (cr_now_mono_ns() < until);
    }
    return epoll_wait(w->epfd, events, CR_EVENTS_PER_WAIT, next_timeout_ms(w));
}

static void *worker_main(void *arg)
{
    cr_worker_t *w = arg;
    cr_router_t *rt = w->rt;
    char name[16];
    snprintf(name, sizeof(name), "crouter-w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    /* splice(2) into a socket has no MSG_NOSIGNAL: a reset peer would raise
     * SIGPIPE in this thread, which kills a process that did not ignore it
     * (the CLI does; a program embedding the router may not). Blocked, it
     * stays pending and the call fails with EPIPE. */
    sigset_t sigpipe;
    sigemptyset(&sigpipe);
    sigaddset(&sigpipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigpipe, NULL);
    cr_registry_reader_thread_register();
    struct epoll_event events[CR_EVENTS_PER_WAIT];
    w->now_ns = cr_now_mono_ns();
    w->now_real_ns = cr_now_real_ns();
    w->wheel.cur_tick = w->now_ns >> CR_TICK_SHIFT;
    w->busy_poll_ns = rt->cfg->busy_poll_ns;
    w->splice_requests = rt->cfg->splice_request_bodies;
    struct rlimit nofile;
    uint64_t nofile_soft = getrlimit(RLIMIT_NOFILE, &nofile) == 0 ? nofile.rlim_cur : 1024;
    w->pipes_max = cr_pipe_limit(nofile_soft, rt->cfg->workers);
    w->load_window_start_ns = w->now_ns;
    while (!atomic_load_explicit(&rt->stopping, memory_order_acquire)) {
        if (!w->drained && atomic_load_explicit(&rt->draining, memory_order_acquire))
            start_drain(w);
        account_work(w);
        int n = wait_for_events(w, events);
        w->now_ns = cr_now_mono_ns();
        w->now_real_ns = cr_now_real_ns();
        if (n < 0 && errno != EINTR) {
            CR_ERROR("router", "epoll_wait failed: %s worker=%u", strerror(errno), w->id);
            break;
        }
        for (int i = 0; i < n; i++)
            dispatch(w, &events[i]);
        run_timers(w);
        reap(w);
    }
    close_everything(w);
    cr_registry_reader_thread_unregister();
    return NULL;
}

cr_worker_t *cr_worker__create(cr_router_t *rt, uint32_t id, int listen_fd, char *err,
                               size_t err_cap)
{
    cr_worker_t *w = aligned_alloc(64, (sizeof(cr_worker_t) + 63) & ~(size_t)63);
    if (!w) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    memset(w, 0, sizeof(*w));
    w->rt = rt;
    w->id = id;
    w->listen_fd = listen_fd;
    w->tls_listen_fd = -1;
    w->free_bufs_cap = CR_BUF_POOL_KEEP;
    w->free_bufs = cr_xcalloc(w->free_bufs_cap, sizeof(char *));
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->epfd < 0 || w->wake_fd < 0) {
        snprintf(err, err_cap, "worker %u: epoll/eventfd: %s", id, strerror(errno));
        goto fail;
    }
    w->listen_io.fd = listen_fd;
    w->listen_io.kind = CR_IO_LISTENER;
    w->wake_io.fd = w->wake_fd;
    w->wake_io.kind = CR_IO_WAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->listen_io};
    if (listen_fd >= 0 && epoll_ctl(w->epfd, EPOLL_CTL_ADD, listen_fd, &ev) != 0)
        goto fail_ctl; /* disable_http: no plain listener */
    ev.data.ptr = &w->wake_io;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) != 0)
        goto fail_ctl;
    return w;
fail_ctl:
    snprintf(err, err_cap, "worker %u: epoll_ctl: %s", id, strerror(errno));
fail:
    w->listen_fd = -1; /* still the caller's on failure */
    cr_worker__destroy(w);
    return NULL;
}

int cr_worker__add_tls_listener(cr_worker_t *w, int fd)
{
    w->tls_listen_io.fd = fd;
    w->tls_listen_io.kind = CR_IO_TLS_LISTENER;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->tls_listen_io};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -errno;
    w->tls_listen_fd = fd;
    return 0;
}

int cr_worker__start(cr_worker_t *w)
{
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return -1;
    w->thread_started = true;
    return 0;
}

void cr_worker__wake(cr_worker_t *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r; /* a full counter already wakes the worker */
}

void cr_worker__join(cr_worker_t *w)
{
    if (!w->thread_started)
        return;
    pthread_join(w->thread, NULL);
    w->thread_started = false;
}

void cr_worker__destroy(cr_worker_t *w)
{
    if (!w)
        return;
    if (w->conns || w->idle_head)
        close_everything(w);
    close_listener(w);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    if (w->epfd >= 0)
        close(w->epfd);
    while (w->free_conns) {
        cr_conn_t *c = w->free_conns;
        w->free_conns = c->next;
        free(c);
    }
    while (w->free_ups) {
        cr_upconn_t *u = w->free_ups;
        w->free_ups = u->reap_next;
        free(u);
    }
    for (uint32_t i = 0; i < w->free_bufs_len; i++)
        free(w->free_bufs[i]);
    for (uint32_t i = 0; i < w->free_bulk_len; i++)
        free(w->free_bulk[i]);
    free(w->free_bufs);
    free(w);
}
