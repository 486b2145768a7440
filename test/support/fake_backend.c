/* test/support/fake_backend.c - an HTTP/1.1 backend for crouter's integration tests.
 *
 * fake_backend --port P --name NAME [--mode MODE] [--delay-ms N]
 *              [--set-cookie VALUE]... [--header "Name: value"]...
 *
 * One thread per connection; keep-alive and pipelining are honoured. Every
 * request head it parses is counted (except GET /count).
 *
 * --mode (applies to every request):
 *   normal          the per-path behaviour below (default)
 *   reset           read the request head, then reset the connection (RST)
 *                   before sending a byte
 *   hang            read the request head, never answer
 *   malformed       answer bytes that are not an HTTP response, then close
 *   close-mid-body  announce Content-Length 100000, send 1000 bytes, close
 * --delay-ms N      sleep N ms before answering each request
 * --set-cookie V    add "Set-Cookie: V" to every normal response
 * --header H        add header line H to every normal response
 *
 * Normal mode, by path:
 *   /count                {"count":N,"smuggled":M,"connections":C,"open":O}
 *                         (O = connections open now, this one included)
 *   /slow?ms=N            sleep N ms, then the echo reply
 *   /cookie?set=V...      the echo reply plus one "Set-Cookie: V" per set=
 *   /header?h=Name:%20V   the echo reply plus those header lines
 *   /download?bytes=N[&chunked=1]  N pattern bytes (ts_pattern_fill)
 *   /echo                 streams the request body back, chunked
 *   /reset /hang /malformed /close-mid-body   as the modes above
 *   /status/NNN           the echo reply with status NNN
 *   /big-header?bytes=N   200 whose head carries an X-Big header of N bytes
 *   Upgrade: websocket    101 with Sec-WebSocket-Accept, then echoes raw bytes
 *   anything else         200, X-Backend: NAME, JSON echo:
 *     {"backend","method","target","version","headers":[[name,value]...],
 *      "body_len","body_fnv","remote"}
 * Expect: 100-continue on a request with a body gets "100 Continue" first.
 * Every response carries X-Backend: NAME.
 */
#include "testsupport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

typedef enum { MODE_NORMAL, MODE_RESET, MODE_HANG, MODE_MALFORMED, MODE_CLOSE_MID } bmode_t;

static const char *g_name = "backend";
static bmode_t g_mode = MODE_NORMAL;
static int g_delay_ms;
static const char *g_cookies[32];
static size_t g_n_cookies;
static const char *g_headers[32];
static size_t g_n_headers;
static atomic_long g_count;
static atomic_long g_smuggled;
static atomic_long g_connections;
static atomic_long g_open;

#define MAX_HEAD (4u << 20)

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
    char remote[64];
} bconn_t;

typedef struct {
    char *name;
    char *value;
} hdr_t;

typedef struct {
    char method[32];
    char *target;
    char version[16];
    hdr_t *h;
    size_t nh;
} req_t;

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
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

/* a then b, in one writev when the socket takes them whole. */
static int write_two(int fd, const char *a, size_t alen, const char *b, size_t blen)
{
    struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
    ssize_t n;
    do {
        n = writev(fd, iov, blen ? 2 : 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    size_t done = (size_t)n;
    if (done < alen)
        return write_all(fd, a + done, alen - done) || write_all(fd, b, blen);
    done -= alen;
    return done < blen ? write_all(fd, b + done, blen - done) : 0;
}

static int write_str(int fd, const char *s)
{
    return write_all(fd, s, strlen(s));
}

/* 1 = more bytes, 0 = EOF/error. */
static int fill(bconn_t *c)
{
    if (c->len + 65536 > c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 131072;
        while (nc < c->len + 65536)
            nc *= 2;
        c->buf = realloc(c->buf, nc);
        c->cap = nc;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        c->len += (size_t)n;
        return 1;
    }
}

static void consume(bconn_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static void req_free(req_t *r)
{
    free(r->target);
    for (size_t i = 0; i < r->nh; i++) {
        free(r->h[i].name);
        free(r->h[i].value);
    }
    free(r->h);
    memset(r, 0, sizeof *r);
}

static const char *req_header(const req_t *r, const char *name)
{
    for (size_t i = 0; i < r->nh; i++)
        if (strcasecmp(r->h[i].name, name) == 0)
            return r->h[i].value;
    return NULL;
}

static bool header_has_token(const req_t *r, const char *name, const char *token)
{
    for (size_t i = 0; i < r->nh; i++)
        if (strcasecmp(r->h[i].name, name) == 0 && strcasestr(r->h[i].value, token))
            return true;
    return false;
}

/* Reads and parses one request head. 1 = ok, 0 = EOF, -1 = garbage. */
static int read_head(bconn_t *c, req_t *r)
{
    char *end;
    for (;;) {
        end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end)
            break;
        if (c->len > MAX_HEAD)
            return -1;
        if (!fill(c))
            return 0;
    }
    size_t head_len = (size_t)(end - c->buf) + 4;
    char *head = strndup(c->buf, head_len - 2);
    consume(c, head_len);
    char *save = NULL;
    char *line = strtok_r(head, "\r\n", &save);
    if (!line) {
        free(head);
        return -1;
    }
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2) {
        free(head);
        return -1;
    }
    snprintf(r->method, sizeof r->method, "%.*s", (int)(sp1 - line), line);
    r->target = strndup(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    snprintf(r->version, sizeof r->version, "%s", sp2 + 1);
    while ((line = strtok_r(NULL, "\r\n", &save))) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        r->h = realloc(r->h, (r->nh + 1) * sizeof *r->h);
        r->h[r->nh].name = strndup(line, (size_t)(colon - line));
        r->h[r->nh].value = strndup(v, vl);
        r->nh++;
    }
    free(head);
    return 1;
}

typedef void (*body_sink_fn)(void *arg, const char *data, size_t len);

/* Reads the request body (Content-Length or chunked) and feeds it to sink.
 * Returns the length, or -1 on a broken body. */
static long long read_body(bconn_t *c, const req_t *r, body_sink_fn sink, void *arg)
{
    long long total = 0;
    if (header_has_token(r, "Transfer-Encoding", "chunked")) {
        for (;;) {
            char *eol;
            while (!(eol = c->len >= 2 ? memmem(c->buf, c->len, "\r\n", 2) : NULL))
                if (c->len > 4096 || !fill(c))
                    return -1;
            unsigned long long sz = strtoull(c->buf, NULL, 16);
            consume(c, (size_t)(eol - c->buf) + 2);
            if (sz == 0) {
                /* trailers up to the empty line */
                for (;;) {
                    while (!(eol = c->len >= 2 ? memmem(c->buf, c->len, "\r\n", 2) : NULL))
                        if (c->len > 65536 || !fill(c))
                            return -1;
                    bool empty = eol == c->buf;
                    consume(c, (size_t)(eol - c->buf) + 2);
                    if (empty)
                        return total;
                }
            }
            while (sz) {
                if (!c->len && !fill(c))
                    return -1;
                size_t take = c->len < sz ? c->len : (size_t)sz;
                sink(arg, c->buf, take);
                consume(c, take);
                sz -= take;
                total += (long long)take;
            }
            while (c->len < 2)
                if (!fill(c))
                    return -1;
            consume(c, 2);
        }
    }
    const char *cl = req_header(r, "Content-Length");
    unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
    while (n) {
        if (!c->len && !fill(c))
            return -1;
        size_t take = c->len < n ? c->len : (size_t)n;
        sink(arg, c->buf, take);
        consume(c, take);
        n -= take;
        total += (long long)take;
    }
    return total;
}

static bool has_body(const req_t *r)
{
    if (header_has_token(r, "Transfer-Encoding", "chunked"))
        return true;
    const char *cl = req_header(r, "Content-Length");
    return cl && strtoull(cl, NULL, 10) > 0;
}

static void fnv_sink(void *arg, const char *data, size_t len)
{
    uint64_t *h = arg;
    *h = ts_fnv1a(*h, data, len);
}

typedef struct {
    int fd;
    bool failed;
} echo_sink_t;

static void chunk_sink(void *arg, const char *data, size_t len)
{
    echo_sink_t *e = arg;
    char hdr[32];
    snprintf(hdr, sizeof hdr, "%zx\r\n", len);
    if (e->failed || write_str(e->fd, hdr) || write_all(e->fd, data, len) || write_str(e->fd, "\r\n"))
        e->failed = true;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static char *url_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else if (s[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* The nth value of query parameter key (malloc'd, decoded), or NULL. */
static char *query_param(const char *target, const char *key, size_t nth)
{
    const char *q = strchr(target, '?');
    if (!q)
        return NULL;
    size_t kl = strlen(key);
    for (const char *p = q + 1; *p;) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        if (seg > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            if (nth-- == 0)
                return url_decode(p + kl + 1, seg - kl - 1);
        }
        p += seg;
        if (*p == '&')
            p++;
    }
    return NULL;
}

static bool path_is(const char *target, const char *path)
{
    size_t pl = strlen(path);
    return strncmp(target, path, pl) == 0 && (target[pl] == '\0' || target[pl] == '?');
}

static bool wants_close(const req_t *r)
{
    if (header_has_token(r, "Connection", "close"))
        return true;
    if (strcmp(r->version, "HTTP/1.0") == 0 && !header_has_token(r, "Connection", "keep-alive"))
        return true;
    return false;
}

static void reset_conn(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

/* Appends the extra header lines (global and per-request) to a buffer. */
static void extra_headers(const req_t *r, char **buf, size_t *len, size_t *cap)
{
    const char *lines[128];
    char *owned[128];
    size_t n = 0, no = 0;
    for (size_t i = 0; i < g_n_cookies && n < 128; i++)
        lines[n++] = g_cookies[i];
    size_t first_hdr = n;
    for (size_t i = 0; i < g_n_headers && n < 128; i++)
        lines[n++] = g_headers[i];
    /* per-request cookies and headers */
    char *v;
    size_t k;
    for (k = 0; no < 64 && (v = query_param(r->target, "set", k)); k++)
        owned[no++] = v;
    size_t query_cookies = no;
    for (k = 0; no < 128 && (v = query_param(r->target, "h", k)); k++)
        owned[no++] = v;
    for (size_t i = 0; i < n + no; i++) {
        const char *line;
        bool cookie;
        if (i < n) {
            line = lines[i];
            cookie = i < first_hdr;
        } else {
            line = owned[i - n];
            cookie = (i - n) < query_cookies;
        }
        size_t need = strlen(line) + 32;
        if (*len + need > *cap) {
            *cap = (*cap + need) * 2;
            *buf = realloc(*buf, *cap);
        }
        *len += (size_t)sprintf(*buf + *len, "%s%s\r\n", cookie ? "Set-Cookie: " : "", line);
    }
    for (size_t i = 0; i < no; i++)
        free(owned[i]);
}

static int send_echo(bconn_t *c, const req_t *r, int status, long long body_len, uint64_t fnv, bool close_after)
{
    json_t *o = json_object();
    json_object_set_new(o, "backend", json_string(g_name));
    json_object_set_new(o, "method", json_string(r->method));
    json_object_set_new(o, "target", json_string(r->target));
    json_object_set_new(o, "version", json_string(r->version));
    json_t *hs = json_array();
    for (size_t i = 0; i < r->nh; i++) {
        json_t *pair = json_array();
        json_array_append_new(pair, json_stringn_nocheck(r->h[i].name, strlen(r->h[i].name)));
        json_array_append_new(pair, json_stringn_nocheck(r->h[i].value, strlen(r->h[i].value)));
        json_array_append_new(hs, pair);
    }
    json_object_set_new(o, "headers", hs);
    json_object_set_new(o, "body_len", json_integer(body_len));
    char fnvs[24];
    snprintf(fnvs, sizeof fnvs, "%016llx", (unsigned long long)fnv);
    json_object_set_new(o, "body_fnv", json_string(fnvs));
    json_object_set_new(o, "remote", json_string(c->remote));
    char *body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(o);
    size_t blen = strlen(body);
    bool no_body = status == 204 || status == 304 || strcmp(r->method, "HEAD") == 0;

    size_t cap = 1024, len = 0;
    char *head = malloc(cap);
    len += (size_t)snprintf(head, cap, "HTTP/1.1 %d %s\r\nX-Backend: %s\r\nContent-Type: application/json\r\n",
                            status, reason(status), g_name);
    extra_headers(r, &head, &len, &cap);
    char tail[128];
    if (status == 204 || status == 304)
        snprintf(tail, sizeof tail, "%s\r\n", close_after ? "Connection: close\r\n" : "");
    else
        snprintf(tail, sizeof tail, "Content-Length: %zu\r\n%s\r\n", blen, close_after ? "Connection: close\r\n" : "");
    if (len + strlen(tail) + 1 > cap) {
        cap = len + strlen(tail) + 1;
        head = realloc(head, cap);
    }
    memcpy(head + len, tail, strlen(tail));
    len += strlen(tail);
    /* Head and body in one writev, as a real server does for small
     * responses: a backend killed between two writes would hand crouter a
     * head without its body (a 200 cut short that no retry can mend), and
     * the SIGKILL test would fail on the test's own timing. */
    int rc = write_two(c->fd, head, len, body, no_body ? 0 : blen);
    free(head);
    free(body);
    return rc;
}

static int send_download(bconn_t *c, const req_t *r, bool close_after)
{
    char *bs = query_param(r->target, "bytes", 0);
    char *ch = query_param(r->target, "chunked", 0);
    unsigned long long total = bs ? strtoull(bs, NULL, 10) : 0;
    bool chunked = ch && strcmp(ch, "1") == 0;
    free(bs);
    free(ch);
    char head[256];
    if (chunked)
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Type: application/octet-stream\r\n"
                 "Transfer-Encoding: chunked\r\n%s\r\n", g_name, close_after ? "Connection: close\r\n" : "");
    else
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Type: application/octet-stream\r\n"
                 "Content-Length: %llu\r\n%s\r\n", g_name, total, close_after ? "Connection: close\r\n" : "");
    if (write_str(c->fd, head))
        return -1;
    unsigned char buf[65536];
    for (unsigned long long off = 0; off < total;) {
        size_t n = (size_t)((total - off) < sizeof buf ? (total - off) : sizeof buf);
        ts_pattern_fill(buf, off, n);
        if (chunked) {
            char ch_hdr[32];
            snprintf(ch_hdr, sizeof ch_hdr, "%zx\r\n", n);
            if (write_str(c->fd, ch_hdr) || write_all(c->fd, buf, n) || write_str(c->fd, "\r\n"))
                return -1;
        } else if (write_all(c->fd, buf, n)) {
            return -1;
        }
        off += n;
    }
    if (chunked && write_str(c->fd, "0\r\n\r\n"))
        return -1;
    return 0;
}

/* After a 101: echo every byte back until either side closes. */
static void ws_echo(bconn_t *c)
{
    if (c->len) {
        if (write_all(c->fd, c->buf, c->len))
            return;
        c->len = 0;
    }
    char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        if (write_all(c->fd, buf, (size_t)n))
            return;
    }
}

static void hang(bconn_t *c)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
    }
}

static void sleep_ms(int ms)
{
    if (ms > 0)
        ts_sleep_ms(ms);
}

/* Serves one request. Returns true to keep the connection. */
static bool serve_one(bconn_t *c)
{
    req_t r;
    memset(&r, 0, sizeof r);
    int hr = read_head(c, &r);
    if (hr <= 0) {
        if (hr < 0)
            write_str(c->fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        req_free(&r);
        return false;
    }
    bool is_count = path_is(r.target, "/count");
    if (!is_count) {
        atomic_fetch_add(&g_count, 1);
        if (strstr(r.target, "smuggled"))
            atomic_fetch_add(&g_smuggled, 1);
    }
    bool keep = !wants_close(&r);
    bool ok = true;

    bmode_t mode = g_mode;
    if (mode == MODE_NORMAL) {
        if (path_is(r.target, "/reset"))
            mode = MODE_RESET;
        else if (path_is(r.target, "/hang"))
            mode = MODE_HANG;
        else if (path_is(r.target, "/malformed"))
            mode = MODE_MALFORMED;
        else if (path_is(r.target, "/close-mid-body"))
            mode = MODE_CLOSE_MID;
    }
    if (mode == MODE_RESET) {
        reset_conn(c->fd);
        req_free(&r);
        return false;
    }
    if (mode == MODE_HANG) {
        hang(c);
        req_free(&r);
        return false;
    }

    if (has_body(&r) && header_has_token(&r, "Expect", "100-continue") &&
        write_str(c->fd, "HTTP/1.1 100 Continue\r\n\r\n")) {
        req_free(&r);
        return false;
    }

    if (is_count) {
        uint64_t h = TS_FNV_INIT;
        read_body(c, &r, fnv_sink, &h);
        char body[200], resp[440];
        snprintf(body, sizeof body, "{\"count\":%ld,\"smuggled\":%ld,\"connections\":%ld,\"open\":%ld}",
                 atomic_load(&g_count), atomic_load(&g_smuggled), atomic_load(&g_connections),
                 atomic_load(&g_open));
        snprintf(resp, sizeof resp,
                 "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 g_name, strlen(body), body);
        ok = write_str(c->fd, resp) == 0;
        req_free(&r);
        return ok && keep;
    }

    const char *upgrade = req_header(&r, "Upgrade");
    if (upgrade && strcasestr(upgrade, "websocket")) {
        const char *key = req_header(&r, "Sec-WebSocket-Key");
        char accept[32] = "";
        ts_ws_accept(key ? key : "", accept);
        char resp[512];
        snprintf(resp, sizeof resp,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\nX-Backend: %s\r\n\r\n", accept, g_name);
        if (write_str(c->fd, resp) == 0)
            ws_echo(c);
        req_free(&r);
        return false;
    }

    if (mode == MODE_MALFORMED) {
        uint64_t h = TS_FNV_INIT;
        read_body(c, &r, fnv_sink, &h);
        sleep_ms(g_delay_ms);
        write_str(c->fd, "NOT-HTTP garbage \x01\x02\r\n\r\n");
        req_free(&r);
        return false;
    }
    if (mode == MODE_CLOSE_MID) {
        uint64_t h = TS_FNV_INIT;
        read_body(c, &r, fnv_sink, &h);
        sleep_ms(g_delay_ms);
        char head[200];
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Length: 100000\r\n\r\n", g_name);
        unsigned char part[1000];
        ts_pattern_fill(part, 0, sizeof part);
        if (write_str(c->fd, head) == 0)
            write_all(c->fd, part, sizeof part);
        req_free(&r);
        return false;
    }

    if (path_is(r.target, "/big-header")) {
        uint64_t h = TS_FNV_INIT;
        read_body(c, &r, fnv_sink, &h);
        char *bs = query_param(r.target, "bytes", 0);
        size_t n = bs ? (size_t)strtoull(bs, NULL, 10) : 0;
        free(bs);
        if (n > MAX_HEAD)
            n = MAX_HEAD;
        char *big = malloc(n + 256);
        int hl = snprintf(big, 256, "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nX-Big: ", g_name);
        memset(big + hl, 'b', n);
        static const char tail[] = "\r\nContent-Length: 2\r\n\r\nok";
        memcpy(big + hl + n, tail, sizeof tail - 1);
        ok = write_all(c->fd, big, (size_t)hl + n + sizeof tail - 1) == 0;
        free(big);
        req_free(&r);
        return ok && keep;
    }

    if (path_is(r.target, "/echo")) {
        char head[256];
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Type: application/octet-stream\r\n"
                 "Transfer-Encoding: chunked\r\n%s\r\n", g_name, keep ? "" : "Connection: close\r\n");
        if (write_str(c->fd, head)) {
            req_free(&r);
            return false;
        }
        echo_sink_t es = {c->fd, false};
        long long n = read_body(c, &r, chunk_sink, &es);
        ok = n >= 0 && !es.failed && write_str(c->fd, "0\r\n\r\n") == 0;
        req_free(&r);
        return ok && keep;
    }

    uint64_t h = TS_FNV_INIT;
    long long body_len = read_body(c, &r, fnv_sink, &h);
    if (body_len < 0) {
        req_free(&r);
        return false;
    }
    sleep_ms(g_delay_ms);
    if (path_is(r.target, "/slow")) {
        char *ms = query_param(r.target, "ms", 0);
        sleep_ms(ms ? atoi(ms) : 1000);
        free(ms);
    }
    if (path_is(r.target, "/download")) {
        ok = send_download(c, &r, !keep) == 0;
    } else {
        int status = 200;
        if (strncmp(r.target, "/status/", 8) == 0) {
            status = atoi(r.target + 8);
            if (status < 100 || status > 999)
                status = 200;
        }
        ok = send_echo(c, &r, status, body_len, h, !keep) == 0;
    }
    req_free(&r);
    return ok && keep;
}

static void *conn_thread(void *arg)
{
    bconn_t *c = arg;
    while (serve_one(c)) {
    }
    atomic_fetch_sub(&g_open, 1);
    close(c->fd);
    free(c->buf);
    free(c);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: fake_backend --port P --name NAME [--mode normal|reset|hang|malformed|close-mid-body]\n"
                    "                    [--delay-ms N] [--set-cookie V]... [--header H]...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int port = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "--name") == 0)
            g_name = v;
        else if (strcmp(a, "--delay-ms") == 0)
            g_delay_ms = atoi(v);
        else if (strcmp(a, "--set-cookie") == 0 && g_n_cookies < 32)
            g_cookies[g_n_cookies++] = v;
        else if (strcmp(a, "--header") == 0 && g_n_headers < 32)
            g_headers[g_n_headers++] = v;
        else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "normal") == 0)
                g_mode = MODE_NORMAL;
            else if (strcmp(v, "reset") == 0)
                g_mode = MODE_RESET;
            else if (strcmp(v, "hang") == 0)
                g_mode = MODE_HANG;
            else if (strcmp(v, "malformed") == 0)
                g_mode = MODE_MALFORMED;
            else if (strcmp(v, "close-mid-body") == 0)
                g_mode = MODE_CLOSE_MID;
            else
                usage();
        } else {
            usage();
        }
        i++;
    }
    if (port < 0 || port > 65535)
        usage();
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1024) != 0) {
        fprintf(stderr, "fake_backend %s: bind/listen 127.0.0.1:%d: %s\n", g_name, port, strerror(errno));
        return 1;
    }
    fprintf(stderr, "fake_backend %s: listening on 127.0.0.1:%d\n", g_name, port);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    for (;;) {
        struct sockaddr_in ra;
        socklen_t rl = sizeof ra;
        int fd = accept4(lfd, (struct sockaddr *)&ra, &rl, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                ts_sleep_ms(10);
                continue;
            }
            fprintf(stderr, "fake_backend %s: accept: %s\n", g_name, strerror(errno));
            return 1;
        }
        atomic_fetch_add(&g_connections, 1);
        atomic_fetch_add(&g_open, 1);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        bconn_t *c = calloc(1, sizeof *c);
        c->fd = fd;
        char ip[INET_ADDRSTRLEN] = "";
        inet_ntop(AF_INET, &ra.sin_addr, ip, sizeof ip);
        snprintf(c->remote, sizeof c->remote, "%s:%u", ip, ntohs(ra.sin_port));
        pthread_t t;
        if (pthread_create(&t, &attr, conn_thread, c) != 0) {
            atomic_fetch_sub(&g_open, 1);
            close(fd);
            free(c);
        }
    }
}
