/* test/support/ts_http.c - libcurl and raw-socket HTTP clients, response helpers. */
#include "testsupport.h"

#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------- response helpers */

static void resp_init(ts_resp_t *r)
{
    memset(r, 0, sizeof *r);
    r->body_fnv = TS_FNV_INIT;
}

static void resp_clear_headers(ts_resp_t *r)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    r->headers = NULL;
    r->n_headers = 0;
}

static void resp_add_header(ts_resp_t *r, const char *name, size_t nl, const char *value, size_t vl)
{
    while (vl && (value[vl - 1] == ' ' || value[vl - 1] == '\t' || value[vl - 1] == '\r' || value[vl - 1] == '\n'))
        vl--;
    while (vl && (*value == ' ' || *value == '\t')) {
        value++;
        vl--;
    }
    r->headers = realloc(r->headers, (r->n_headers + 1) * sizeof *r->headers);
    r->headers[r->n_headers].name = strndup(name, nl);
    r->headers[r->n_headers].value = strndup(value, vl);
    r->n_headers++;
}

static void resp_append_body(ts_resp_t *r, const void *data, size_t len, bool keep, size_t *cap)
{
    r->body_fnv = ts_fnv1a(r->body_fnv, data, len);
    if (keep) {
        if (r->body_len + len + 1 > *cap) {
            size_t nc = *cap ? *cap : 4096;
            while (nc < r->body_len + len + 1)
                nc *= 2;
            r->body = realloc(r->body, nc);
            *cap = nc;
        }
        memcpy(r->body + r->body_len, data, len);
        r->body[r->body_len + len] = '\0';
    }
    r->body_len += len;
}

void ts_resp_free(ts_resp_t *r)
{
    resp_clear_headers(r);
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

const char *ts_resp_header_nth(const ts_resp_t *r, const char *name, size_t nth)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0 && nth-- == 0)
            return r->headers[i].value;
    return NULL;
}

const char *ts_resp_header(const ts_resp_t *r, const char *name)
{
    return ts_resp_header_nth(r, name, 0);
}

size_t ts_resp_header_count(const ts_resp_t *r, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            n++;
    return n;
}

const char *ts_resp_set_cookie(const ts_resp_t *r, const char *cookie_name)
{
    size_t nl = strlen(cookie_name);
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strcasecmp(r->headers[i].name, "Set-Cookie") != 0)
            continue;
        const char *v = r->headers[i].value;
        while (*v == ' ')
            v++;
        if (strncmp(v, cookie_name, nl) == 0 && v[nl] == '=')
            return v;
    }
    return NULL;
}

json_t *ts_resp_json(const ts_resp_t *r)
{
    if (!r->body)
        return NULL;
    return json_loadb(r->body, r->body_len, 0, NULL);
}

static json_t *echo_headers(json_t *echo)
{
    return json_object_get(echo, "headers");
}

const char *ts_echo_header(json_t *echo, const char *name)
{
    json_t *hs = echo_headers(echo);
    size_t i;
    json_t *h;
    json_array_foreach(hs, i, h) {
        const char *n = json_string_value(json_array_get(h, 0));
        if (n && strcasecmp(n, name) == 0)
            return json_string_value(json_array_get(h, 1));
    }
    return NULL;
}

size_t ts_echo_header_count(json_t *echo, const char *name)
{
    json_t *hs = echo_headers(echo);
    size_t i, n = 0;
    json_t *h;
    json_array_foreach(hs, i, h) {
        const char *hn = json_string_value(json_array_get(h, 0));
        if (hn && strcasecmp(hn, name) == 0)
            n++;
    }
    return n;
}

const char *ts_echo_str(json_t *echo, const char *key)
{
    return json_string_value(json_object_get(echo, key));
}

/* ---------------------------------------------------------------- libcurl */

typedef struct {
    ts_resp_t *resp;
    bool keep;
    size_t cap;
    uint64_t up_len, up_off;
} curl_ctx_t;

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    curl_ctx_t *ctx = arg;
    size_t len = size * nmemb;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        resp_clear_headers(ctx->resp);
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (colon)
        resp_add_header(ctx->resp, data, (size_t)(colon - data), colon + 1, len - (size_t)(colon + 1 - data));
    return len;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    curl_ctx_t *ctx = arg;
    resp_append_body(ctx->resp, data, size * nmemb, ctx->keep, &ctx->cap);
    return size * nmemb;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *arg)
{
    curl_ctx_t *ctx = arg;
    uint64_t left = ctx->up_len - ctx->up_off;
    size_t n = size * nmemb;
    if (n > left)
        n = (size_t)left;
    ts_pattern_fill((unsigned char *)buf, ctx->up_off, n);
    ctx->up_off += n;
    return n;
}

static bool has_header(const ts_req_t *req, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < sizeof req->headers / sizeof req->headers[0] && req->headers[i]; i++)
        if (strncasecmp(req->headers[i], name, nl) == 0 && (req->headers[i][nl] == ':' || req->headers[i][nl] == ';'))
            return true;
    return false;
}

int ts_http(CURL *reuse, uint16_t port, const ts_req_t *req, ts_resp_t *out)
{
    resp_init(out);
    CURL *c = reuse ? reuse : curl_easy_init();
    if (reuse)
        curl_easy_reset(c);
    curl_ctx_t ctx = {.resp = out, .keep = !req->sink_checksum};

    char url[2048];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, req->path ? req->path : "/");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req->timeout_ms ? req->timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &ctx);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &ctx);
    curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 3000L);

    struct curl_slist *hl = NULL;
    char hostline[600];
    if (req->host) {
        snprintf(hostline, sizeof hostline, "Host: %s", req->host);
        hl = curl_slist_append(hl, hostline);
    }
    for (size_t i = 0; i < sizeof req->headers / sizeof req->headers[0] && req->headers[i]; i++)
        hl = curl_slist_append(hl, req->headers[i]);
    if (!has_header(req, "Expect"))
        hl = curl_slist_append(hl, "Expect:");
    if (req->chunked_upload)
        hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);

    if (req->userpwd) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, req->userpwd);
    }
    if (req->upload_pattern_len) {
        ctx.up_len = req->upload_pattern_len;
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &ctx);
        if (!req->chunked_upload)
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->upload_pattern_len);
    } else if (req->body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (req->method) {
        if (strcmp(req->method, "HEAD") == 0)
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        else
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    }

    CURLcode rc = curl_easy_perform(c);
    out->curl_code = (int)rc;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &out->connects);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &out->total_s);
    if (!out->body && ctx.keep) {
        out->body = calloc(1, 1);
    }
    curl_slist_free_all(hl);
    if (!reuse)
        curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

int ts_get(uint16_t port, const char *host, const char *path, ts_resp_t *out)
{
    ts_req_t req = {.host = host, .path = path};
    return ts_http(NULL, port, &req, out);
}

/* ------------------------------------------------------------- raw socket */

int ts_conn_open(ts_conn_t *c, uint16_t port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

int ts_conn_send(ts_conn_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ts_conn_send_str(ts_conn_t *c, const char *s)
{
    return ts_conn_send(c, s, strlen(s));
}

/* Reads more bytes into the buffer; 1 = got some, 0 = EOF/reset, -1 = timeout. */
static int conn_fill(ts_conn_t *c, int64_t deadline)
{
    if (c->eof)
        return 0;
    for (;;) {
        int64_t left = deadline - ts_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {c->fd, POLLIN, 0};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return -1;
        if (c->len + 65536 > c->cap) {
            c->cap = c->cap ? c->cap * 2 : 131072;
            while (c->cap < c->len + 65536)
                c->cap *= 2;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->eof = true;
            return 0;
        }
        c->len += (size_t)n;
        return 1;
    }
}

static void conn_consume(ts_conn_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static const char *find_crlf(const char *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if (p[i] == '\r' && p[i + 1] == '\n')
            return p + i;
    return NULL;
}

int ts_conn_read_exact(ts_conn_t *c, void *out, size_t len, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    while (c->len < len)
        if (conn_fill(c, deadline) <= 0)
            return -1;
    memcpy(out, c->buf, len);
    conn_consume(c, len);
    return 0;
}

/* Reads one CRLF-terminated line (without CRLF) into a malloc'd string. */
static char *conn_line(ts_conn_t *c, int64_t deadline)
{
    for (;;) {
        const char *e = find_crlf(c->buf, c->len);
        if (e) {
            size_t n = (size_t)(e - c->buf);
            char *s = strndup(c->buf, n);
            conn_consume(c, n + 2);
            return s;
        }
        if (conn_fill(c, deadline) <= 0)
            return NULL;
    }
}

int ts_conn_read_response(ts_conn_t *c, ts_resp_t *out, bool head_only, int timeout_ms)
{
    resp_init(out);
    int64_t deadline = ts_now_ms() + timeout_ms;
    char *line = conn_line(c, deadline);
    if (!line || strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12) {
        free(line);
        out->curl_code = -1;
        return -1;
    }
    out->status = strtol(line + 9, NULL, 10);
    free(line);
    for (;;) {
        line = conn_line(c, deadline);
        if (!line) {
            out->curl_code = -1;
            return -1;
        }
        if (!*line) {
            free(line);
            break;
        }
        char *colon = strchr(line, ':');
        if (colon)
            resp_add_header(out, line, (size_t)(colon - line), colon + 1, strlen(colon + 1));
        free(line);
    }
    size_t cap = 0;
    out->body = calloc(1, 1);
    if (head_only || out->status < 200 || out->status == 204 || out->status == 304)
        return 0;
    const char *te = ts_resp_header(out, "Transfer-Encoding");
    const char *cl = ts_resp_header(out, "Content-Length");
    if (te && strcasecmp(te, "chunked") == 0) {
        for (;;) {
            line = conn_line(c, deadline);
            if (!line)
                goto fail;
            unsigned long long sz = strtoull(line, NULL, 16);
            free(line);
            if (sz == 0) {
                /* trailers until the empty line */
                for (;;) {
                    line = conn_line(c, deadline);
                    if (!line)
                        goto fail;
                    bool end = !*line;
                    free(line);
                    if (end)
                        return 0;
                }
            }
            while (c->len < sz + 2)
                if (conn_fill(c, deadline) <= 0)
                    goto fail;
            resp_append_body(out, c->buf, (size_t)sz, true, &cap);
            conn_consume(c, (size_t)sz + 2);
        }
    } else if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        while (n) {
            if (!c->len && conn_fill(c, deadline) <= 0)
                goto fail;
            size_t take = c->len < n ? c->len : (size_t)n;
            resp_append_body(out, c->buf, take, true, &cap);
            conn_consume(c, take);
            n -= take;
        }
    } else {
        for (;;) {
            if (c->len) {
                resp_append_body(out, c->buf, c->len, true, &cap);
                conn_consume(c, c->len);
            }
            int r = conn_fill(c, deadline);
            if (r == 0)
                break;
            if (r < 0)
                goto fail;
        }
    }
    return 0;
fail:
    out->curl_code = -1;
    return -1;
}

bool ts_conn_wait_closed(ts_conn_t *c, int timeout_ms, size_t *extra_bytes)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    size_t extra = c->len;
    c->len = 0;
    bool closed = false;
    for (;;) {
        int r = conn_fill(c, deadline);
        if (r == 0) {
            closed = true;
            break;
        }
        if (r < 0)
            break;
        extra += c->len;
        c->len = 0;
    }
    if (extra_bytes)
        *extra_bytes = extra;
    return closed;
}

void ts_conn_close(ts_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}
