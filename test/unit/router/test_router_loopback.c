/* test/unit/router/test_router_loopback.c - the data path end to end on loopback, without NATS.
 *
 * One registry filled directly, one router (1 worker, port 0), and tiny
 * in-test backends: threads with blocking sockets on 127.0.0.1 port 0,
 * one thread per backend connection. Clients are raw sockets so every byte
 * on the wire is the test's choice. The drain test runs last: it drains
 * the shared router.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/defs.h"
#include "common/log.h"
#include "config/config.h"
#include "registry/registry.h"
#include "router/router.h"

/* --- Backends ---------------------------------------------------------------- */

typedef struct backend {
    int lfd;
    uint16_t port;
    char name[16];
    atomic_int requests;       /* request heads seen */
    atomic_int connections;    /* connections accepted */
    pthread_t thread;
} backend_t;

typedef struct {
    backend_t *be;
    int fd;
} be_conn_t;

static int read_some(int fd, char *buf, size_t cap)
{
    for (;;) {
        ssize_t n = recv(fd, buf, cap, 0);
        if (n < 0 && errno == EINTR)
            continue;
        return (int)n;
    }
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static const char *find_header(const char *head, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p && p[2] != '\r') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            *len = (size_t)(e - v);
            return v;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

/* A growing receive buffer for the simple blocking peers. */
typedef struct {
    char *data;
    size_t len, cap;
    int fd;
} rbuf_t;

static int rbuf_fill(rbuf_t *b)
{
    if (b->cap - b->len < 65536) {
        b->cap = b->cap ? b->cap * 2 : 131072;
        b->data = realloc(b->data, b->cap + 1);
    }
    int n = read_some(b->fd, b->data + b->len, b->cap - b->len);
    if (n > 0) {
        b->len += (size_t)n;
        b->data[b->len] = 0;
    }
    return n;
}

static void rbuf_consume(rbuf_t *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

/* Reads one head; returns its length (including CRLFCRLF) or -1. */
static int rbuf_head(rbuf_t *b)
{
    for (;;) {
        if (b->data) {
            char *e = strstr(b->data, "\r\n\r\n");
            if (e)
                return (int)(e - b->data + 4);
        }
        if (rbuf_fill(b) <= 0)
            return -1;
    }
}

/* Reads a body framed by the head (Content-Length or chunked) and decodes
 * it into out (malloc'd). Returns its length or -1. */
static long rbuf_body(rbuf_t *b, const char *head, char **out, bool until_close)
{
    size_t vl;
    const char *te = find_header(head, "Transfer-Encoding", &vl);
    const char *cl = find_header(head, "Content-Length", &vl);
    char *body = malloc(1);
    size_t blen = 0;
    if (te) {
        for (;;) {
            char *e;
            while (!(e = strstr(b->data ? b->data : "", "\r\n")))
                if (rbuf_fill(b) <= 0)
                    goto fail;
            size_t sz = strtoul(b->data, NULL, 16);
            rbuf_consume(b, (size_t)(e - b->data) + 2);
            if (sz == 0) {
                /* Trailer lines, then the empty line. */
                for (;;) {
                    char *eol;
                    while (!(eol = strstr(b->data ? b->data : "", "\r\n")))
                        if (rbuf_fill(b) <= 0)
                            goto fail;
                    size_t ll = (size_t)(eol - b->data);
                    rbuf_consume(b, ll + 2);
                    if (ll == 0)
                        break;
                }
                break;
            }
            while (b->len < sz + 2)
                if (rbuf_fill(b) <= 0)
                    goto fail;
            body = realloc(body, blen + sz + 1);
            memcpy(body + blen, b->data, sz);
            blen += sz;
            rbuf_consume(b, sz + 2);
        }
    } else if (cl || !until_close) {
        size_t n = cl ? strtoul(cl, NULL, 10) : 0;
        while (b->len < n)
            if (rbuf_fill(b) <= 0)
                goto fail;
        body = realloc(body, n + 1);
        memcpy(body, b->data, n);
        blen = n;
        rbuf_consume(b, n);
    } else {
        while (rbuf_fill(b) > 0)
            ;
        body = realloc(body, b->len + 1);
        memcpy(body, b->data, b->len);
        blen = b->len;
        rbuf_consume(b, b->len);
    }
    body[blen] = 0;
    *out = body;
    return (long)blen;
fail:
    free(body);
    return -1;
}

#define BIG_BYTES (64 * 1024 * 1024)
static atomic_int big_written;

static void *backend_conn_main(void *arg)
{
    be_conn_t *bc = arg;
    backend_t *be = bc->be;
    rbuf_t b = {.fd = bc->fd};
    for (;;) {
        int hl = rbuf_head(&b);
        if (hl < 0)
            break;
        char *head = strndup(b.data, (size_t)hl);
        rbuf_consume(&b, (size_t)hl);
        atomic_fetch_add(&be->requests, 1);
        size_t evl;
        if (find_header(head, "Expect", &evl)) {
            const char *cont = "HTTP/1.1 100 Continue\r\n\r\n";
            write_all(bc->fd, cont, strlen(cont));
        }
        char *body = NULL;
        long blen = rbuf_body(&b, head, &body, false);
        if (blen < 0) {
            free(head);
            break;
        }
        char path[256] = "";
        sscanf(head, "%*s %255s", path);
        size_t vl;
        if (strncmp(path, "/slow", 5) == 0)
            usleep(400 * 1000);
        if (strncmp(path, "/ws", 3) == 0 && find_header(head, "Upgrade", &vl)) {
            const char *r = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
            write_all(bc->fd, r, strlen(r));
            if (b.len)
                write_all(bc->fd, b.data, b.len);
            char buf[4096];
            int n;
            while ((n = read_some(bc->fd, buf, sizeof buf)) > 0)
                write_all(bc->fd, buf, (size_t)n);
            free(head);
            free(body);
            break;
        }
        if (strncmp(path, "/chunked", 8) == 0) {
            const char *r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
            int rc = write_all(bc->fd, r, strlen(r));
            free(head);
            free(body);
            if (rc != 0)
                break;
            continue;
        }
        if (strncmp(path, "/big", 4) == 0) {
            /* BIG_BYTES of body, written as fast as the proxy takes them. */
            char hdr[128];
            snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BIG_BYTES);
            int rc = write_all(bc->fd, hdr, strlen(hdr));
            static char block[65536];
            for (int i = 0; rc == 0 && i < BIG_BYTES / (int)sizeof block; i++) {
                memset(block, 'a' + i % 26, sizeof block);
                rc = write_all(bc->fd, block, sizeof block);
            }
            atomic_store(&big_written, 1);
            free(head);
            free(body);
            if (rc != 0)
                break;
            continue;
        }
        if (strncmp(path, "/close", 6) == 0) {
            free(head);
            free(body);
            break; /* EOF before any response byte */
        }
        char hdr[512];
        const char *payload;
        size_t plen;
        char small[400];
        if (strncmp(path, "/echo", 5) == 0) {
            payload = body;
            plen = (size_t)blen;
        } else {
            const char *host = find_header(head, "Host", &vl);
            snprintf(small, sizeof small, "%s %s %.*s", be->name, path, host ? (int)vl : 0,
                     host ? host : "");
            payload = small;
            plen = strlen(small);
        }
        snprintf(hdr, sizeof hdr,
                 "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Length: %zu\r\n\r\n", be->name,
                 plen);
        int rc = write_all(bc->fd, hdr, strlen(hdr));
        if (rc == 0 && plen)
            rc = write_all(bc->fd, payload, plen);
        free(head);
        free(body);
        if (rc != 0)
            break;
    }
    free(b.data);
    close(bc->fd);
    free(bc);
    return NULL;
}

static void *backend_main(void *arg)
{
    backend_t *be = arg;
    for (;;) {
        int fd = accept(be->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        atomic_fetch_add(&be->connections, 1);
        be_conn_t *bc = malloc(sizeof *bc);
        bc->be = be;
        bc->fd = fd;
        pthread_t t;
        pthread_create(&t, NULL, backend_conn_main, bc);
        pthread_detach(t);
    }
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 512), 0);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void backend_start(backend_t *be, const char *name)
{
    memset(be, 0, sizeof *be);
    snprintf(be->name, sizeof be->name, "%s", name);
    be->lfd = listen_any(&be->port);
    pthread_create(&be->thread, NULL, backend_main, be);
    pthread_detach(be->thread);
}

/* A port with nothing listening: connections are refused. */
static uint16_t dead_port(void)
{
    uint16_t port;
    int fd = listen_any(&port);
    close(fd);
    return port;
}

/* --- Fixture ------------------------------------------------------------------ */

static cr_config_t *cfg;
static cr_registry_t *reg;
static cr_router_t *rt;
static backend_t be_a, be_b;
static uint16_t port_dead1, port_dead2;

static void register_ep(const char *uri, uint16_t port, const char *id)
{
    char *uris[] = {(char *)uri};
    cr_register_msg_t m;
    memset(&m, 0, sizeof m);
    m.host = "127.0.0.1";
    m.port = port;
    m.uris = uris;
    m.uris_len = 1;
    m.app = "11111111-2222-3333-4444-555555555555";
    m.private_instance_id = (char *)id;
    m.private_instance_index = "0";
    m.lb_algo = -1;
    assert_int_equal(cr_registry_register(reg, &m, cr_now_mono_ns()), 0);
}

static int group_setup(void **state)
{
    cr_log_set_level(CR_LOG_WARN);
    backend_start(&be_a, "A");
    backend_start(&be_b, "B");
    port_dead1 = dead_port();
    port_dead2 = dead_port();
    cfg = cr_config_defaults();
    cfg->port = 0;
    cfg->workers = 1;
    cfg->max_request_header_bytes = 8192;
    cfg->endpoint_timeout_ns = 5 * CR_NS_PER_SEC;
    cfg->endpoint_dial_timeout_ns = 1 * CR_NS_PER_SEC;
    cr_registry_options_t o;
    cr_registry_options_from_config(cfg, &o);
    reg = cr_registry_create(&o);
    register_ep("a.test", be_a.port, "inst-a");
    register_ep("b.test", be_b.port, "inst-b");
    register_ep("retry.test", be_a.port, "inst-ra");
    register_ep("retry.test", port_dead1, "inst-rd");
    register_ep("dead.test", port_dead1, "inst-d1");
    register_ep("dead.test", port_dead2, "inst-d2");
    char err[256];
    rt = cr_router_create(cfg, reg, err, sizeof err);
    if (!rt)
        fail_msg("router: %s", err);
    assert_int_equal(cr_router_start(rt), 0);
    return 0;
}

static int group_teardown(void **state)
{
    cr_router_stop(rt);
    cr_router_destroy(rt);
    cr_registry_destroy(reg);
    cr_config_destroy(cfg);
    return 0;
}

/* --- Client ------------------------------------------------------------------- */

static int client_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(cr_router_port(rt)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

typedef struct {
    int status;
    char *head;
    char *body;
    long body_len;
} resp_t;

static void resp_free(resp_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Reads one response from b (status 0 when the connection closed first). */
static resp_t read_resp(rbuf_t *b, bool head_request)
{
    resp_t r = {0};
    int hl = rbuf_head(b);
    if (hl < 0)
        return r;
    r.head = strndup(b->data, (size_t)hl);
    rbuf_consume(b, (size_t)hl);
    sscanf(r.head, "HTTP/1.%*d %d", &r.status);
    if (head_request || r.status == 101 || r.status == 204 || r.status == 304) {
        r.body = strdup("");
        return r;
    }
    r.body_len = rbuf_body(b, r.head, &r.body, true);
    return r;
}

static bool has_header(const resp_t *r, const char *name, const char *value)
{
    size_t vl;
    const char *v = find_header(r->head, name, &vl);
    return v && (!value || (vl == strlen(value) && strncmp(v, value, vl) == 0));
}

static resp_t roundtrip(const char *req)
{
    int fd = client_connect();
    rbuf_t b = {.fd = fd};
    write_all(fd, req, strlen(req));
    resp_t r = read_resp(&b, false);
    free(b.data);
    close(fd);
    return r;
}

/* --- Tests ---------------------------------------------------------------------- */

static void test_routes_by_host(void **state)
{
    resp_t r = roundtrip("GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "A /x a.test");
    assert_true(has_header(&r, "X-Vcap-Request-Id", NULL));
    resp_free(&r);
    r = roundtrip("GET /y HTTP/1.1\r\nHost: B.TEST:80\r\n\r\n");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "B /y B.TEST:80");
    resp_free(&r);
}

static void test_unknown_route_is_404_with_gorouter_body(void **state)
{
    resp_t r = roundtrip("GET / HTTP/1.1\r\nHost: nope.test:8080\r\n\r\n");
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "404 Not Found: Requested route ('nope.test:8080') does not exist.\n");
    assert_true(has_header(&r, "X-Cf-Routererror", "unknown_route"));
    assert_true(has_header(&r, "Content-Type", "text/plain; charset=utf-8"));
    assert_true(has_header(&r, "X-Content-Type-Options", "nosniff"));
    resp_free(&r);
}

static void test_empty_host_is_400(void **state)
{
    resp_t r = roundtrip("GET / HTTP/1.1\r\nHost: \r\n\r\n");
    assert_int_equal(r.status, 400);
    assert_true(has_header(&r, "X-Cf-Routererror", "empty_host"));
    resp_free(&r);
}

static void test_keep_alive_1000_requests_one_connection(void **state)
{
    cr_router_counters_t before, after;
    cr_router_get_counters(rt, &before);
    int fd = client_connect();
    rbuf_t b = {.fd = fd};
    for (int i = 0; i < 1000; i++) {
        char req[128];
        snprintf(req, sizeof req, "GET /k%d HTTP/1.1\r\nHost: a.test\r\n\r\n", i);
        assert_int_equal(write_all(fd, req, strlen(req)), 0);
        resp_t r = read_resp(&b, false);
        assert_int_equal(r.status, 200);
        char want[64];
        snprintf(want, sizeof want, "A /k%d a.test", i);
        assert_string_equal(r.body, want);
        resp_free(&r);
    }
    free(b.data);
    close(fd);
    cr_router_get_counters(rt, &after);
    uint64_t connects = after.backend_connects - before.backend_connects;
    uint64_t reuses = after.backend_reuses - before.backend_reuses;
    assert_true(connects <= 1);
    assert_true(reuses >= 999);
}

static void test_pipelined_requests_answered_in_order(void **state)
{
    int fd = client_connect();
    rbuf_t b = {.fd = fd};
    const char *reqs = "GET /p1 HTTP/1.1\r\nHost: a.test\r\n\r\n"
                       "GET /p2 HTTP/1.1\r\nHost: b.test\r\n\r\n"
                       "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello"
                       "GET /p3 HTTP/1.1\r\nHost: a.test\r\n\r\n";
    write_all(fd, reqs, strlen(reqs));
    const char *want[] = {"A /p1 a.test", "B /p2 b.test", "hello", "A /p3 a.test"};
    for (int i = 0; i < 4; i++) {
        resp_t r = read_resp(&b, false);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, want[i]);
        resp_free(&r);
    }
    free(b.data);
    close(fd);
}

static void test_chunked_upload_is_echoed(void **state)
{
    int fd = client_connect();
    rbuf_t b = {.fd = fd};
    const char *h = "POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    write_all(fd, h, strlen(h));
    size_t total = 0;
    char chunk[5000];
    unsigned seed = 7;
    char *sent = malloc(400 * 5000);
    for (int i = 0; i < 400; i++) {
        size_t n = 1 + (size_t)(rand_r(&seed) % 4999);
        for (size_t k = 0; k < n; k++)
            chunk[k] = (char)('a' + rand_r(&seed) % 26);
        char sz[24];
        snprintf(sz, sizeof sz, "%zx\r\n", n);
        write_all(fd, sz, strlen(sz));
        write_all(fd, chunk, n);
        write_all(fd, "\r\n", 2);
        memcpy(sent + total, chunk, n);
        total += n;
    }
    write_all(fd, "0\r\n\r\n", 5);
    resp_t r = read_resp(&b, false);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, (long)total);
    assert_memory_equal(r.body, sent, total);
    resp_free(&r);
    /* The connection still works. */
    const char *q = "GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n";
    write_all(fd, q, strlen(q));
    r = read_resp(&b, false);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    free(sent);
    free(b.data);
    close(fd);
}

static void test_retries_skip_dead_endpoint(void **state)
{
    for (int i = 0; i < 20; i++) {
        resp_t r = roundtrip("GET /r HTTP/1.1\r\nHost: retry.test\r\n\r\n");
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "A /r retry.test");
        resp_free(&r);
    }
}

static void test_all_dead_is_502_endpoint_failure(void **state)
{
    resp_t r = roundtrip("GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n");
    assert_int_equal(r.status, 502);
    size_t vl;
    const char *v = find_header(r.head, "X-Cf-Routererror", &vl);
    assert_non_null(v);
    assert_true(strncmp(v, "endpoint_failure", 16) == 0);
    assert_string_equal(r.body, "502 Bad Gateway: Registered endpoint failed to handle the request.\n");
    resp_free(&r);
}

static void test_oversized_head_is_431(void **state)
{
    size_t n = 20000;
    char *req = malloc(n + 200);
    int len = snprintf(req, 200, "GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: ");
    memset(req + len, 'x', n);
    strcpy(req + len + n, "\r\n\r\n");
    resp_t r = roundtrip(req);
    assert_int_equal(r.status, 431);
    resp_free(&r);
    free(req);
}

static void test_smuggling_cl_te_is_400_and_backend_sees_nothing(void **state)
{
    int before = atomic_load(&be_a.requests);
    resp_t r = roundtrip("POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"
                         "Host: a.test\r\n\r\n");
    assert_int_equal(r.status, 400);
    resp_free(&r);
    usleep(50 * 1000);
    assert_int_equal(atomic_load(&be_a.requests), before);
}

static void test_upgrade_tunnels_bytes_both_ways(void **state)
{
    int fd = client_connect();
    rbuf_t b = {.fd = fd};
    const char *req = "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
    write_all(fd, req, strlen(req));
    resp_t r = read_resp(&b, false);
    assert_int_equal(r.status, 101);
    resp_free(&r);
    for (int i = 0; i < 50; i++) {
        char msg[64];
        snprintf(msg, sizeof msg, "ping-%d;", i);
        write_all(fd, msg, strlen(msg));
        while (b.len < strlen(msg))
            assert_true(rbuf_fill(&b) > 0);
        assert_memory_equal(b.data, msg, strlen(msg));
        rbuf_consume(&b, strlen(msg));
    }
    free(b.data);
    close(fd);
}

static void test_eof_without_response_is_not_retried_for_post(void **state)
{
    resp_t r = roundtrip("POST /close HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhi");
    assert_int_equal(r.status, 502);
    assert_true(has_header(&r, "X-Cf-Routererror", "endpoint_failure (EOF)"));
    resp_free(&r);
}

static void test_chunked_response_passes_through_and_is_decoded_for_http10(void **state)
{
    int fd = client_connect();
    rbuf_t b = {.fd = fd};
    for (int i = 0; i < 3; i++) {
        const char *q = "GET /chunked HTTP/1.1\r\nHost: a.test\r\n\r\n";
        write_all(fd, q, strlen(q));
        resp_t r = read_resp(&b, false);
        assert_int_equal(r.status, 200);
        assert_true(has_header(&r, "Transfer-Encoding", "chunked"));
        assert_string_equal(r.body, "hello world");
        resp_free(&r);
    }
    free(b.data);
    close(fd);

    fd = client_connect();
    b = (rbuf_t){.fd = fd};
    const char *q10 = "GET /chunked HTTP/1.0\r\nHost: a.test\r\n\r\n";
    write_all(fd, q10, strlen(q10));
    resp_t r = read_resp(&b, false);
    assert_int_equal(r.status, 200);
    assert_false(has_header(&r, "Transfer-Encoding", NULL));
    assert_true(strncmp(r.head, "HTTP/1.0 200", 12) == 0);
    assert_string_equal(r.body, "hello world"); /* read until close */
    resp_free(&r);
    free(b.data);
    close(fd);
}

static void test_slow_client_backpressures_large_response(void **state)
{
    atomic_store(&big_written, 0);
    int fd = client_connect();
    rbuf_t b = {.fd = fd};
    const char *q = "GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n";
    write_all(fd, q, strlen(q));
    int hl = rbuf_head(&b);
    assert_true(hl > 0);
    assert_true(strncmp(b.data, "HTTP/1.1 200", 12) == 0);
    rbuf_consume(&b, (size_t)hl);
    /* The client does not read: the backend must block, not finish into
     * router memory (socket buffers hold a few MiB, not 64). */
    usleep(500 * 1000);
    assert_int_equal(atomic_load(&big_written), 0);
    size_t total = b.len;
    char buf[65536];
    int n;
    while (total < BIG_BYTES && (n = read_some(fd, buf, sizeof buf)) > 0)
        total += (size_t)n;
    assert_int_equal(total, BIG_BYTES);
    for (int i = 0; i < 100 && !atomic_load(&big_written); i++)
        usleep(10 * 1000);
    assert_int_equal(atomic_load(&big_written), 1);
    free(b.data);
    close(fd);
}

static void test_expect_100_continue_relayed(void **state)
{
    int fd = client_connect();
    rbuf_t b = {.fd = fd};
    const char *q = "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n"
                    "Expect: 100-continue\r\n\r\n";
    write_all(fd, q, strlen(q));
    resp_t r = read_resp(&b, true);
    assert_int_equal(r.status, 100);
    resp_free(&r);
    write_all(fd, "hello world", 11);
    r = read_resp(&b, false);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    resp_free(&r);
    free(b.data);
    close(fd);
}

static void test_app_instance_header(void **state)
{
    resp_t r = roundtrip("GET / HTTP/1.1\r\nHost: a.test\r\nX-Cf-App-Instance: nope\r\n\r\n");
    assert_int_equal(r.status, 400);
    assert_true(has_header(&r, "X-Cf-Routererror", "invalid_cf_app_instance_header"));
    resp_free(&r);
    r = roundtrip("GET / HTTP/1.1\r\nHost: a.test\r\n"
                  "X-Cf-App-Instance: 11111111-2222-3333-4444-555555555555:7\r\n\r\n");
    assert_int_equal(r.status, 400);
    assert_true(has_header(&r, "X-Cf-Routererror", "unknown_route"));
    resp_free(&r);
    r = roundtrip("GET /i HTTP/1.1\r\nHost: a.test\r\n"
                  "X-Cf-App-Instance: 11111111-2222-3333-4444-555555555555:0\r\n\r\n");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "A /i a.test");
    resp_free(&r);
}

typedef struct {
    int fd;
    resp_t r;
} slow_t;

static void *slow_reader(void *arg)
{
    slow_t *s = arg;
    rbuf_t b = {.fd = s->fd};
    s->r = read_resp(&b, false);
    free(b.data);
    return NULL;
}

static void test_drain_completes_in_flight_request(void **state)
{
    slow_t s = {.fd = client_connect()};
    const char *req = "GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n";
    write_all(s.fd, req, strlen(req));
    pthread_t t;
    pthread_create(&t, NULL, slow_reader, &s);
    usleep(100 * 1000);
    cr_router_drain(rt);
    pthread_join(t, NULL);
    assert_int_equal(s.r.status, 200);
    assert_string_equal(s.r.body, "A /slow a.test");
    assert_true(has_header(&s.r, "Connection", "close"));
    resp_free(&s.r);
    /* The connection is closed afterwards. */
    char c;
    assert_int_equal(read_some(s.fd, &c, 1), 0);
    close(s.fd);
    for (int i = 0; i < 100 && cr_router_open_connections(rt) != 0; i++)
        usleep(10 * 1000);
    assert_int_equal(cr_router_open_connections(rt), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_by_host),
        cmocka_unit_test(test_unknown_route_is_404_with_gorouter_body),
        cmocka_unit_test(test_empty_host_is_400),
        cmocka_unit_test(test_keep_alive_1000_requests_one_connection),
        cmocka_unit_test(test_pipelined_requests_answered_in_order),
        cmocka_unit_test(test_chunked_upload_is_echoed),
        cmocka_unit_test(test_retries_skip_dead_endpoint),
        cmocka_unit_test(test_all_dead_is_502_endpoint_failure),
        cmocka_unit_test(test_oversized_head_is_431),
        cmocka_unit_test(test_smuggling_cl_te_is_400_and_backend_sees_nothing),
        cmocka_unit_test(test_upgrade_tunnels_bytes_both_ways),
        cmocka_unit_test(test_eof_without_response_is_not_retried_for_post),
        cmocka_unit_test(test_chunked_response_passes_through_and_is_decoded_for_http10),
        cmocka_unit_test(test_slow_client_backpressures_large_response),
        cmocka_unit_test(test_expect_100_continue_relayed),
        cmocka_unit_test(test_app_instance_header),
        cmocka_unit_test(test_drain_completes_in_flight_request),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
