/* bench/floor_forward.c - the cheapest possible "proxy", to measure the floor.
 *
 * A 1:1 TCP forwarder: every accepted client gets its own connection to one
 * backend, and bytes are copied both ways without looking at them. No HTTP
 * parsing, routing, headers, timers or logging. It does, per keep-alive
 * request, exactly the socket work any HTTP proxy must do (read the request,
 * send it on, read the response, send it back), so the kernel's share of a
 * proxy's CPU per request shows here with almost nothing on top. bench/floor
 * runs it beside HAProxy and crouter; it is a measuring tool, not a product.
 *
 * Three modes:
 *   epoll  level-triggered epoll with recv/send, as crouter and HAProxy use;
 *   splice the same loop, but each direction moves through a 1 MiB pipe with
 *          splice(2) instead of a buffer (crouter splices responses of 64 KiB
 *          or more): the floor for large bodies;
 *   uring  io_uring (liburing): a recv per socket, answered by a send linked
 *          to the next recv, submitted in batches with one io_uring_enter per
 *          loop turn (single issuer, deferred task work).
 *
 * Usage: floor_forward epoll|splice|uring LISTEN_PORT BACKEND_PORT (127.0.0.1 only)
 * Single-threaded. Each pair of sockets owns one 64 KiB buffer per direction
 * (splice: one pipe per direction instead).
 *
 * Limits, fine for wrk's keep-alive traffic and nothing else: epoll and
 * uring copy every byte through user space (for large bodies they are
 * copying proxies, not a lower bound); end of stream or an error on either
 * side closes both at once (no half-close); a backend connection is made
 * per client, blocking, in the loop.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#if __has_include(<liburing.h>)
#include <liburing.h>
#define HAVE_URING 1
#endif

#define DIRECTION_BUF_SIZE (64 * 1024)
#define DIRECTION_PIPE_SIZE (1024 * 1024)

static bool use_splice; /* epoll loop: move bytes through pipes */

/* One socket of a pair, and the bytes read from it that still go to its peer. */
struct side {
    int fd;
    struct side *peer;
    struct pair *pair;
    size_t sent; /* bytes of buf (or of the pipe's contents) already written to the peer */
    size_t len;  /* bytes in buf, or put into the pipe by the last splice in */
    int pipe_fds[2]; /* splice mode: [0] read end, [1] write end; else -1 */
    bool waiting_out; /* epoll: the peer's socket was full; events were changed */
    bool recv_armed; /* uring: a recv (possibly queued behind a send) is in flight */
    char buf[DIRECTION_BUF_SIZE];
};

struct pair {
    struct side client, backend;
    bool closing;
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in a = loopback(port);
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1024) != 0)
        die("listen");
    return fd;
}

/* A blocking connect (loopback answers at once), then non-blocking. -1 on failure. */
static int connect_backend(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    set_nodelay(fd);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Returns a pair for an accepted client, connected to the backend; NULL (and
 * the client closed) when the backend cannot be reached. Caller owns it. */
static struct pair *pair_open(int client_fd, int backend_port) {
    int backend_fd = connect_backend(backend_port);
    struct pair *p = backend_fd < 0 ? NULL : calloc(1, sizeof *p);
    if (!p) {
        if (backend_fd >= 0)
            close(backend_fd);
        close(client_fd);
        return NULL;
    }
    set_nodelay(client_fd);
    p->client = (struct side){.fd = client_fd, .peer = &p->backend, .pair = p,
                              .pipe_fds = {-1, -1}};
    p->backend = (struct side){.fd = backend_fd, .peer = &p->client, .pair = p,
                               .pipe_fds = {-1, -1}};
    if (use_splice) {
        struct side *sides[2] = {&p->client, &p->backend};
        for (int i = 0; i < 2; i++) {
            if (pipe2(sides[i]->pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0)
                die("pipe2");
            fcntl(sides[i]->pipe_fds[1], F_SETPIPE_SZ, DIRECTION_PIPE_SIZE);
        }
    }
    return p;
}

static void pair_free(struct pair *p) {
    struct side *sides[2] = {&p->client, &p->backend};
    for (int i = 0; i < 2; i++) {
        close(sides[i]->fd);
        if (sides[i]->pipe_fds[0] >= 0) {
            close(sides[i]->pipe_fds[0]);
            close(sides[i]->pipe_fds[1]);
        }
    }
    free(p);
}

/* ----------------------------------------------------------------- epoll */

/* What a side's fd waits for: input while its own buffer is empty, output
 * while the peer's bytes to it are pending. */
static uint32_t wanted_events(const struct side *s) {
    return (s->len == 0 ? EPOLLIN : 0) | (s->peer->len > s->peer->sent ? EPOLLOUT : 0);
}

static void update_events(int ep, struct side *s) {
    struct epoll_event ev = {.events = wanted_events(s), .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

/* Writes what `from` holds to its peer. False when the pair must close. */
static bool flush_to_peer(int ep, struct side *from) {
    while (from->sent < from->len) {
        ssize_t n = use_splice
                        ? splice(from->pipe_fds[0], NULL, from->peer->fd, NULL,
                                 from->len - from->sent, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                        : send(from->peer->fd, from->buf + from->sent, from->len - from->sent,
                               MSG_NOSIGNAL);
        if (n > 0) {
            from->sent += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            from->waiting_out = true;
            update_events(ep, from); /* stop reading this side */
            update_events(ep, from->peer);
            return true;
        } else {
            return false;
        }
    }
    from->len = from->sent = 0;
    if (from->waiting_out) {
        from->waiting_out = false;
        update_events(ep, from);
        update_events(ep, from->peer);
    }
    return true;
}

static void run_epoll(int listen_fd, int backend_port) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, events[256];
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev) != 0)
        die("epoll");
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        struct pair *closed[256];
        int n_closed = 0;
        for (int i = 0; i < n; i++) {
            struct side *s = events[i].data.ptr;
            if (!s) {
                int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK);
                struct pair *p = fd < 0 ? NULL : pair_open(fd, backend_port);
                if (!p)
                    continue;
                struct epoll_event c = {.events = EPOLLIN, .data.ptr = &p->client};
                struct epoll_event b = {.events = EPOLLIN, .data.ptr = &p->backend};
                epoll_ctl(ep, EPOLL_CTL_ADD, p->client.fd, &c);
                epoll_ctl(ep, EPOLL_CTL_ADD, p->backend.fd, &b);
                continue;
            }
            if (s->pair->closing)
                continue;
            bool ok = !(events[i].events & (EPOLLERR | EPOLLHUP));
            if (ok && (events[i].events & EPOLLOUT))
                ok = flush_to_peer(ep, s->peer);
            if (ok && s->len == 0 && (events[i].events & EPOLLIN)) {
                ssize_t got = use_splice ? splice(s->fd, NULL, s->pipe_fds[1], NULL,
                                                  DIRECTION_PIPE_SIZE,
                                                  SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                                         : recv(s->fd, s->buf, DIRECTION_BUF_SIZE, 0);
                if (got > 0) {
                    s->len = (size_t)got;
                    ok = flush_to_peer(ep, s);
                } else if (got == 0 || errno != EAGAIN) {
                    ok = false;
                }
            }
            if (!ok) {
                s->pair->closing = true; /* freed after this batch: later events may name it */
                closed[n_closed++] = s->pair;
            }
        }
        for (int i = 0; i < n_closed; i++)
            pair_free(closed[i]); /* close() also removes the fds from the epoll set */
    }
}

/* ---------------------------------------------------------------- io_uring */
#ifdef HAVE_URING
enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 }; /* low bits of user_data */

static struct io_uring ring;

static struct io_uring_sqe *next_sqe(void) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    if (!sqe) {
        fprintf(stderr, "floor_forward: io_uring submission queue full\n");
        exit(1);
    }
    return sqe;
}

static void queue_recv(struct side *s, unsigned flags) {
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_recv(sqe, s->fd, s->buf, DIRECTION_BUF_SIZE, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)s | OP_RECV);
    sqe->flags |= flags;
    s->recv_armed = true;
}

static void queue_accept(int listen_fd) {
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, OP_ACCEPT);
}

/* Shuts both sockets so their pending recvs finish; the pair is freed once
 * neither side has one in flight. */
static void pair_close_uring(struct pair *p) {
    if (!p->closing) {
        p->closing = true;
        shutdown(p->client.fd, SHUT_RDWR);
        shutdown(p->backend.fd, SHUT_RDWR);
    }
    if (!p->client.recv_armed && !p->backend.recv_armed)
        pair_free(p);
}

static void on_recv(struct side *s, int res) {
    s->recv_armed = false;
    if (res <= 0 || s->pair->closing) {
        pair_close_uring(s->pair);
        return;
    }
    /* The send must finish (MSG_WAITALL: all of it) before the next recv may
     * reuse the buffer: link them. Both go into one submission: a submit
     * between them would cut the link. Only a failed send reports (skip
     * success), and then its linked recv reports nothing at all. */
    if (io_uring_sq_space_left(&ring) < 2)
        io_uring_submit(&ring);
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_send(sqe, s->peer->fd, s->buf, (size_t)res, MSG_NOSIGNAL | MSG_WAITALL);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)s | OP_SEND);
    sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
    queue_recv(s, 0);
}

static void run_uring(int listen_fd, int backend_port) {
    struct io_uring_params params = {0};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                   IORING_SETUP_COOP_TASKRUN;
    int rc = io_uring_queue_init_params(4096, &ring, &params);
    if (rc < 0) {
        fprintf(stderr, "floor_forward: io_uring: %s\n", strerror(-rc));
        exit(1);
    }
    queue_accept(listen_fd);
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t data = io_uring_cqe_get_data64(cqe);
            struct side *s = (struct side *)(uintptr_t)(data & ~(uint64_t)7);
            switch (data & 7) {
            case OP_ACCEPT:
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    queue_accept(listen_fd);
                if (cqe->res >= 0) {
                    struct pair *p = pair_open(cqe->res, backend_port);
                    if (p) {
                        queue_recv(&p->client, 0);
                        queue_recv(&p->backend, 0);
                    }
                }
                break;
            case OP_RECV:
                on_recv(s, cqe->res);
                break;
            case OP_SEND:
                /* A failed send. Its linked recv was cancelled without a CQE
                 * (a failed CQE_SKIP_SUCCESS request drops its links' CQEs),
                 * so this is that side's last completion: nothing of it is in
                 * flight, and the pair cannot have been freed yet. */
                s->recv_armed = false;
                pair_close_uring(s->pair);
                break;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
#endif

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "epoll") != 0 && strcmp(argv[1], "splice") != 0 &&
                      strcmp(argv[1], "uring") != 0)) {
        fprintf(stderr, "usage: floor_forward epoll|splice|uring LISTEN_PORT BACKEND_PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int listen_fd = listen_on(atoi(argv[2])), backend_port = atoi(argv[3]);
    use_splice = strcmp(argv[1], "splice") == 0;
    if (use_splice || strcmp(argv[1], "epoll") == 0) {
        run_epoll(listen_fd, backend_port);
    } else {
#ifdef HAVE_URING
        run_uring(listen_fd, backend_port);
#else
        fprintf(stderr, "floor_forward: built without liburing (install liburing-dev)\n");
        return 1;
#endif
    }
    return 0;
}
