/* test/integration/test_tls.c - issue 6: TLS to app instances, TLS on the front, PROXY protocol.
 *
 * Certificates are made at test time with the openssl CLI in the run's temp
 * dir (EC P-256): a CA; leaves it signs for the app instances
 * (app.tls.internal), for crouter's client certificate to backends, for
 * the two front names (a.example, b.example) and for a curl client; a
 * second CA and a leaf from it stand for an untrusted instance.
 *
 * TLS backends run in this process: a listener thread and one thread per
 * connection (blocking OpenSSL), answering keep-alive HTTP/1.1 with the
 * request head as the body, X-Backend, X-Client-Cert (the CN crouter
 * presented, or "none"), Set-Cookie JSESSIONID on /login and
 * Connection: close on /close; they count handshakes and resumed ones.
 * Plain backends are fake_backend.
 *
 * Two routers share one nats-server: A (client_cert_validation: request,
 * forwarded_client_cert: sanitize_set, enable_proxy, crouter's client
 * certificate for backends) carries most cases; B
 * (client_cert_validation: require, no client certificate for backends)
 * covers the required client certificate and the mTLS backend refusing a
 * router without one; a third router, started for one case, has
 * disable_http. Each failure case registers its own route, since a
 * TLS endpoint that fails its handshake is removed from the pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "testsupport.h"

/* --- Certificates ------------------------------------------------------------- */

typedef struct {
    char pem[512], key[512];
    char *pem_text, *key_text;    /* owned */
} cert_files_t;

static cert_files_t g_ca, g_other_ca, g_app, g_stranger, g_router, g_front_a, g_front_b, g_curl;

static int load_texts(cert_files_t *c)
{
    c->pem_text = ts_read_file(c->pem, NULL);
    c->key_text = ts_read_file(c->key, NULL);
    return c->pem_text && c->key_text ? 0 : -1;
}

static int make_ca(cert_files_t *c, const char *cn)
{
    char subj[128];
    ts_tmp_path(c->pem, sizeof c->pem, cn, ".pem");
    ts_tmp_path(c->key, sizeof c->key, cn, ".key");
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    const char *a[] = {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                       "-nodes", "-keyout", c->key, "-out", c->pem, "-days", "2", "-subj", subj,
                       "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign", NULL};
    return ts_openssl(a) == 0 ? load_texts(c) : -1;
}

static int make_leaf(cert_files_t *c, const cert_files_t *ca, const char *cn, const char *ext,
                     const char *serial)
{
    char csr[512], extfile[512], subj[128];
    ts_tmp_path(c->pem, sizeof c->pem, cn, ".pem");
    ts_tmp_path(c->key, sizeof c->key, cn, ".key");
    ts_tmp_path(csr, sizeof csr, cn, ".csr");
    ts_tmp_path(extfile, sizeof extfile, cn, ".ext");
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    FILE *f = fopen(extfile, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", ext);
    fclose(f);
    const char *req[] = {"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                         "-nodes", "-keyout", c->key, "-out", csr, "-subj", subj, NULL};
    const char *sign[] = {"x509", "-req", "-in", csr, "-CA", ca->pem, "-CAkey", ca->key,
                          "-set_serial", serial, "-days", "2", "-out", c->pem, "-extfile", extfile, NULL};
    if (ts_openssl(req) != 0 || ts_openssl(sign) != 0)
        return -1;
    return load_texts(c);
}

static void free_cert(cert_files_t *c)
{
    free(c->pem_text);
    free(c->key_text);
    c->pem_text = c->key_text = NULL;
}

/* --- In-process TLS backends ---------------------------------------------------- */

typedef struct tlsb {
    char name[32];
    uint16_t port;
    int lfd;
    SSL_CTX *ctx;                 /* owned; kept until exit (connection threads use it) */
    pthread_t thread;
    atomic_int stop;
    atomic_long requests, handshakes, resumed;
} tlsb_t;

typedef struct {
    tlsb_t *b;
    int fd;
} tlsb_conn_arg_t;

static void *tlsb_conn_main(void *arg)
{
    tlsb_conn_arg_t a = *(tlsb_conn_arg_t *)arg;
    free(arg);
    tlsb_t *b = a.b;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(a.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(b->ctx);
    SSL_set_fd(ssl, a.fd);
    if (SSL_accept(ssl) != 1)
        goto out;
    atomic_fetch_add(&b->handshakes, 1);
    if (SSL_session_reused(ssl))
        atomic_fetch_add(&b->resumed, 1);
    X509 *peer = SSL_get0_peer_certificate(ssl);
    char cn[128] = "none";
    if (peer)
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
    char head[16384];
    for (;;) {
        size_t len = 0;
        char *end = NULL;
        while (!end) {
            if (len + 1 >= sizeof head)
                goto out;
            int n = SSL_read(ssl, head + len, (int)(sizeof head - 1 - len));
            if (n <= 0)
                goto out;
            len += (size_t)n;
            head[len] = '\0';
            end = strstr(head, "\r\n\r\n");
        }
        atomic_fetch_add(&b->requests, 1);
        size_t head_len = (size_t)(end - head) + 4;
        char path[256] = "/";
        sscanf(head, "%*s %255s", path);
        bool login = strncmp(path, "/login", 6) == 0;
        bool close_after = strncmp(path, "/close", 6) == 0;
        char resp[20000];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: %s\r\n"
                         "X-Client-Cert: %s\r\n%s%sContent-Length: %zu\r\n\r\n%.*s",
                         b->name, cn, login ? "Set-Cookie: JSESSIONID=sess-1; Path=/\r\n" : "",
                         close_after ? "Connection: close\r\n" : "", head_len, (int)head_len, head);
        if (SSL_write(ssl, resp, n) != n || close_after)
            goto out;
    }
out:
    SSL_shutdown(ssl);
    SSL_free(ssl);
    ERR_clear_error();
    close(a.fd);
    return NULL;
}

static void *tlsb_accept_main(void *arg)
{
    tlsb_t *b = arg;
    while (!atomic_load(&b->stop)) {
        struct pollfd p = {.fd = b->lfd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int fd = accept(b->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        tlsb_conn_arg_t *a = malloc(sizeof *a);
        a->b = b;
        a->fd = fd;
        pthread_t t;
        if (pthread_create(&t, NULL, tlsb_conn_main, a) != 0) {
            close(fd);
            free(a);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

/* A TLS backend serving cert; with require_client_cert it demands a
 * certificate signed by the test CA. */
static int tlsb_start(tlsb_t *b, const char *name, const cert_files_t *cert, bool require_client_cert)
{
    memset(b, 0, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name);
    b->ctx = SSL_CTX_new(TLS_server_method());
    if (!b->ctx || SSL_CTX_use_certificate_chain_file(b->ctx, cert->pem) != 1 ||
        SSL_CTX_use_PrivateKey_file(b->ctx, cert->key, SSL_FILETYPE_PEM) != 1)
        return -1;
    if (require_client_cert) {
        if (SSL_CTX_load_verify_locations(b->ctx, g_ca.pem, NULL) != 1)
            return -1;
        SSL_CTX_set_verify(b->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    static const unsigned char sid[] = "tlsb";
    SSL_CTX_set_session_id_context(b->ctx, sid, sizeof sid - 1);
    b->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(b->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (bind(b->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(b->lfd, 64) != 0 ||
        getsockname(b->lfd, (struct sockaddr *)&sa, &sl) != 0)
        return -1;
    b->port = ntohs(sa.sin_port);
    return pthread_create(&b->thread, NULL, tlsb_accept_main, b) == 0 ? 0 : -1;
}

static void tlsb_stop(tlsb_t *b)
{
    if (!b->port)
        return;
    atomic_store(&b->stop, 1);
    pthread_join(b->thread, NULL);
    close(b->lfd);
    b->port = 0;
}

/* --- HTTPS client ----------------------------------------------------------------- */

typedef struct {
    long status;
    int curl_code;
    char headers[8192];
    size_t headers_len;
    char *body;                   /* owned, NUL-terminated */
    size_t body_len;
    char subject[256];            /* the server certificate's subject as curl saw it */
} hresp_t;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    hresp_t *r = arg;
    size_t len = size * n;
    r->body = realloc(r->body, r->body_len + len + 1);
    memcpy(r->body + r->body_len, p, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    hresp_t *r = arg;
    size_t len = size * n;
    if (len > 5 && strncmp(p, "HTTP/", 5) == 0)
        r->headers_len = 0; /* a new (final) response head */
    if (r->headers_len + len < sizeof r->headers) {
        memcpy(r->headers + r->headers_len, p, len);
        r->headers_len += len;
        r->headers[r->headers_len] = '\0';
    }
    return len;
}

/* GET https://<name>:<port><path> resolved to 127.0.0.1, trusting the test
 * CA; cookie and client certificate optional. */
static void https_get(uint16_t port, const char *name, const char *path, const char *cookie,
                      const cert_files_t *client_cert, hresp_t *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    char url[256], resolve[128];
    snprintf(url, sizeof url, "https://%s:%u%s", name, port, path);
    snprintf(resolve, sizeof resolve, "%s:%u:127.0.0.1", name, port);
    struct curl_slist *res = curl_slist_append(NULL, resolve);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_RESOLVE, res);
    curl_easy_setopt(c, CURLOPT_CAINFO, g_ca.pem);
    curl_easy_setopt(c, CURLOPT_CERTINFO, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    if (cookie)
        curl_easy_setopt(c, CURLOPT_COOKIE, cookie);
    if (client_cert) {
        curl_easy_setopt(c, CURLOPT_SSLCERT, client_cert->pem);
        curl_easy_setopt(c, CURLOPT_SSLKEY, client_cert->key);
    }
    out->curl_code = (int)curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    struct curl_certinfo *ci = NULL;
    if (curl_easy_getinfo(c, CURLINFO_CERTINFO, &ci) == CURLE_OK && ci && ci->num_of_certs > 0) {
        for (struct curl_slist *s = ci->certinfo[0]; s; s = s->next)
            if (strncmp(s->data, "Subject:", 8) == 0)
                snprintf(out->subject, sizeof out->subject, "%s", s->data + 8);
    }
    curl_slist_free_all(res);
    curl_easy_cleanup(c);
}

/* The value of header name in a raw head (case-insensitive), into out. */
static const char *head_value(const char *head, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = head; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t l = strcspn(v, "\r\n");
            snprintf(out, cap, "%.*s", (int)l, v);
            return out;
        }
    }
    out[0] = '\0';
    return NULL;
}

static void hresp_free(hresp_t *r)
{
    free(r->body);
    r->body = NULL;
}

/* --- Fixture -------------------------------------------------------------------------- */

static ts_nats_t g_nats;
static natsConnection *g_nc;
static ts_crouter_t g_a, g_b;
static uint16_t g_ssl_a, g_ssl_b;
static tlsb_t g_good, g_untrusted, g_mtls, g_s1, g_s2, g_closer;
static ts_backend_t g_plain;

/* Appends "<key>: |" (after key_indent spaces) and pem's lines indented by
 * text_indent spaces. */
static void yaml_block(char *out, size_t cap, int key_indent, int text_indent, const char *key,
                       const char *pem)
{
    size_t len = strlen(out);
    len += (size_t)snprintf(out + len, cap - len, "%*s%s: |\n", key_indent, "", key);
    for (const char *p = pem; *p && len < cap;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l)
            len += (size_t)snprintf(out + len, cap - len, "%*s%.*s\n", text_indent, "", (int)l, p);
        p += l + (nl ? 1 : 0);
    }
}

static void cat(char *out, size_t cap, const char *s)
{
    strncat(out, s, cap - strlen(out) - 1);
}

/* Router A's YAML (router_a), else B's: B's front settings are b_front
 * (NULL: "client_cert_validation: require"). */
static char *router_yaml(uint16_t ssl_port, bool router_a, const char *b_front)
{
    size_t cap = 64 * 1024;
    char *y = calloc(1, cap);
    snprintf(y, cap, "enable_ssl: true\nssl_port: %u\nmin_tls_version: TLSv1.2\n", ssl_port);
    cat(y, cap, "tls_pem:\n");
    cat(y, cap, "- ");
    yaml_block(y, cap, 0, 4, "cert_chain", g_front_a.pem_text);
    yaml_block(y, cap, 2, 4, "private_key", g_front_a.key_text);
    cat(y, cap, "- ");
    yaml_block(y, cap, 0, 4, "cert_chain", g_front_b.pem_text);
    yaml_block(y, cap, 2, 4, "private_key", g_front_b.key_text);
    yaml_block(y, cap, 0, 2, "client_ca_certs", g_ca.pem_text);
    /* gorouter's ca_certs is a list of PEM strings. */
    cat(y, cap, "ca_certs:\n- |\n");
    for (const char *p = g_ca.pem_text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        size_t len = strlen(y);
        if (l)
            snprintf(y + len, cap - len, "  %.*s\n", (int)l, p);
        p += l + (nl ? 1 : 0);
    }
    if (router_a) {
        cat(y, cap, "client_cert_validation: request\nforwarded_client_cert: sanitize_set\n"
                    "enable_proxy: true\nbackends:\n");
        yaml_block(y, cap, 2, 4, "cert_chain", g_router.pem_text);
        yaml_block(y, cap, 2, 4, "private_key", g_router.key_text);
    } else {
        cat(y, cap, b_front ? b_front : "client_cert_validation: require\n");
    }
    return y;
}

static int group_setup(void **state)
{
    (void)state;
    if (make_ca(&g_ca, "crouter-tls-ca") != 0 || make_ca(&g_other_ca, "crouter-other-ca") != 0 ||
        make_leaf(&g_app, &g_ca, "app", "subjectAltName=DNS:app.tls.internal\nextendedKeyUsage=serverAuth", "11") != 0 ||
        make_leaf(&g_stranger, &g_other_ca, "stranger",
                  "subjectAltName=DNS:app.tls.internal\nextendedKeyUsage=serverAuth", "12") != 0 ||
        make_leaf(&g_router, &g_ca, "router-instance", "extendedKeyUsage=clientAuth", "13") != 0 ||
        make_leaf(&g_front_a, &g_ca, "a.example", "subjectAltName=DNS:a.example\nextendedKeyUsage=serverAuth", "14") != 0 ||
        make_leaf(&g_front_b, &g_ca, "b.example", "subjectAltName=DNS:b.example,DNS:*.b.example\nextendedKeyUsage=serverAuth", "15") != 0 ||
        make_leaf(&g_curl, &g_ca, "curl-client", "extendedKeyUsage=clientAuth", "16") != 0)
        return -1;
    if (tlsb_start(&g_good, "good", &g_app, false) != 0 ||
        tlsb_start(&g_untrusted, "untrusted", &g_stranger, false) != 0 ||
        tlsb_start(&g_mtls, "mtls", &g_app, true) != 0 ||
        tlsb_start(&g_s1, "s1", &g_app, false) != 0 || tlsb_start(&g_s2, "s2", &g_app, false) != 0 ||
        tlsb_start(&g_closer, "closer", &g_app, false) != 0)
        return -1;
    if (ts_backend_start(&g_plain, "plain", NULL) != 0)
        return -1;
    if (ts_nats_start(&g_nats, false) != 0 || !(g_nc = ts_nats_connect(&g_nats)))
        return -1;
    g_ssl_a = ts_free_port();
    g_ssl_b = ts_free_port();
    char *ya = router_yaml(g_ssl_a, true, NULL), *yb = router_yaml(g_ssl_b, false, NULL);
    int rc = ts_crouter_start(&g_a, &g_nats, ya) == 0 && ts_crouter_start(&g_b, &g_nats, yb) == 0 ? 0 : -1;
    free(ya);
    free(yb);
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    ts_crouter_t *all[2] = {&g_a, &g_b};
    for (int i = 0; i < 2; i++) {
        if (!ts_crouter_stop_clean(all[i], 15000))
            rc = -1;
    }
    ts_nats_close(g_nc);
    ts_nats_stop(&g_nats);
    ts_backend_stop(&g_plain);
    tlsb_t *bs[] = {&g_good, &g_untrusted, &g_mtls, &g_s1, &g_s2, &g_closer};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++)
        tlsb_stop(bs[i]);
    cert_files_t *cs[] = {&g_ca, &g_other_ca, &g_app, &g_stranger, &g_router, &g_front_a, &g_front_b, &g_curl};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        free_cert(cs[i]);
    return rc;
}

/* Registers uri -> 127.0.0.1:tls_port over TLS with the SAN to check. */
static void reg_tls(const char *uri, uint16_t tls_port, const char *san, const char *instance)
{
    ts_route_t r = {.port = tls_port, .uris = {uri}, .app = "tls-app", .private_instance_id = instance};
    char *s = ts_route_json(&r);
    json_t *o = json_loads(s, 0, NULL);
    free(s);
    json_object_set_new(o, "tls_port", json_integer(tls_port));
    if (san)
        json_object_set_new(o, "server_cert_domain_san", json_string(san));
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    assert_int_equal(ts_nats_publish(g_nc, "router.register", s, strlen(s)), 0);
    free(s);
}

static void wait_routes(const char *uri, size_t n)
{
    assert_true(ts_crouter_wait_route(&g_a, uri, n, 10000));
    assert_true(ts_crouter_wait_route(&g_b, uri, n, 10000));
}

/* --- To backends ------------------------------------------------------------------------ */

static void test_tls_backend_with_valid_certificate_and_san_gives_200(void **state)
{
    (void)state;
    reg_tls("good.tls", g_good.port, "app.tls.internal", "good-0");
    wait_routes("good.tls", 1);
    long before = atomic_load(&g_good.handshakes);
    for (int i = 0; i < 5; i++) {
        ts_resp_t r;
        assert_int_equal(ts_get(g_a.port, "good.tls", "/hello", &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(ts_resp_header(&r, "X-Backend"), "good");
        /* This backend asks for no client certificate. */
        assert_string_equal(ts_resp_header(&r, "X-Client-Cert"), "none");
        char v[128];
        assert_non_null(head_value(r.body, "X-Forwarded-Proto", v, sizeof v));
        assert_string_equal(v, "http");
        ts_resp_free(&r);
    }
    /* Kept alive and pooled: at most one handshake per worker. */
    assert_true(atomic_load(&g_good.handshakes) - before <= 2);
}

static void test_tls_sessions_are_resumed_on_redial(void **state)
{
    (void)state;
    reg_tls("closer.tls", g_closer.port, "app.tls.internal", "closer-0");
    wait_routes("closer.tls", 1);
    for (int i = 0; i < 6; i++) {
        ts_resp_t r;
        assert_int_equal(ts_get(g_a.port, "closer.tls", "/close", &r), 0);
        assert_int_equal(r.status, 200);
        ts_resp_free(&r);
    }
    assert_true(atomic_load(&g_closer.handshakes) >= 6);
    /* Each worker resumes after its first full handshake. */
    assert_true(atomic_load(&g_closer.resumed) >= 3);
}

static void assert_tls_failure(const char *uri, long status, const char *reason_part)
{
    ts_resp_t r;
    assert_int_equal(ts_get(g_a.port, uri, "/", &r), 0);
    if (r.status != status)
        fail_msg("%s: status %ld, want %ld (X-Cf-Routererror: %s)", uri, r.status, status,
                 ts_resp_header(&r, "X-Cf-Routererror") ? ts_resp_header(&r, "X-Cf-Routererror") : "-");
    const char *e = ts_resp_header(&r, "X-Cf-Routererror");
    assert_non_null(e);
    if (strncmp(e, "endpoint_failure (", 18) != 0 || !strcasestr(e, reason_part))
        fail_msg("%s: X-Cf-Routererror: %s, want endpoint_failure (...%s...)", uri, e, reason_part);
    ts_resp_free(&r);
    /* The endpoint that failed its handshake left A's pool. */
    assert_true(ts_crouter_wait_route(&g_a, uri, 0, 10000));
}

static void test_wrong_san_gives_503(void **state)
{
    (void)state;
    reg_tls("wrongsan.tls", g_good.port, "wrong.tls.internal", "wrongsan-0");
    wait_routes("wrongsan.tls", 1);
    assert_tls_failure("wrongsan.tls", 503, "x509: certificate is valid for app.tls.internal, not wrong.tls.internal");
}

static void test_untrusted_ca_gives_526(void **state)
{
    (void)state;
    reg_tls("untrusted.tls", g_untrusted.port, "app.tls.internal", "untrusted-0");
    wait_routes("untrusted.tls", 1);
    assert_tls_failure("untrusted.tls", 526, "x509: certificate signed by unknown authority");
}

static void test_plain_backend_on_the_tls_port_gives_525(void **state)
{
    (void)state;
    reg_tls("plain.tls", g_plain.port, "app.tls.internal", "plain-0");
    wait_routes("plain.tls", 1);
    /* A plain server either answers the ClientHello with garbage or waits
     * for more of it: "first record does not look like a TLS handshake"
     * or "TLS handshake timeout", both 525. */
    assert_tls_failure("plain.tls", 525, "tls");
}

static void test_mtls_backend_needs_the_client_certificate(void **state)
{
    (void)state;
    reg_tls("mtls.tls", g_mtls.port, "app.tls.internal", "mtls-0");
    wait_routes("mtls.tls", 1);
    ts_resp_t r;
    assert_int_equal(ts_get(g_a.port, "mtls.tls", "/", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(ts_resp_header(&r, "X-Client-Cert"), "router-instance");
    ts_resp_free(&r);
    /* B has no client certificate for backends: the backend refuses it.
     * With TLS 1.3 that happens after the handshake, as an alert (496) or,
     * when the backend's reset overtakes it, a reset (502). */
    assert_int_equal(ts_get(g_b.port, "mtls.tls", "/", &r), 0);
    if (r.status != 496 && r.status != 502)
        fail_msg("B: status %ld", r.status);
    const char *e = ts_resp_header(&r, "X-Cf-Routererror");
    assert_non_null(e);
    assert_non_null(strstr(e, "endpoint_failure"));
    ts_resp_free(&r);
    /* A still has it and still succeeds. */
    assert_int_equal(ts_get(g_a.port, "mtls.tls", "/", &r), 0);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
}

/* --- On the front ------------------------------------------------------------------------ */

static void register_plain(const char *uri)
{
    ts_route_t r = {.port = g_plain.port, .uris = {uri}};
    assert_int_equal(ts_nats_register(g_nc, &r), 0);
    wait_routes(uri, 1);
}

static void test_front_serves_each_sni_name_its_certificate(void **state)
{
    (void)state;
    register_plain("a.example");
    register_plain("b.example");
    static const char *const names[] = {"a.example", "b.example"};
    for (int i = 0; i < 2; i++) {
        hresp_t r;
        https_get(g_ssl_a, names[i], "/sni", NULL, NULL, &r);
        if (r.curl_code != 0)
            fail_msg("%s: curl error %d", names[i], r.curl_code);
        assert_int_equal(r.status, 200);
        if (!strstr(r.subject, names[i]))
            fail_msg("%s: served certificate subject \"%s\"", names[i], r.subject);
        /* The backend saw the request as HTTPS. */
        ts_resp_t tr = {.body = r.body, .body_len = r.body_len};
        json_t *echo = ts_resp_json(&tr);
        assert_non_null(echo);
        assert_string_equal(ts_echo_header(echo, "X-Forwarded-Proto"), "https");
        json_decref(echo);
        hresp_free(&r);
    }
}

static void test_client_certificate_required_or_absent(void **state)
{
    (void)state;
    register_plain("a.example");
    hresp_t r;
    /* B requires a client certificate: without one the handshake fails. */
    https_get(g_ssl_b, "a.example", "/", NULL, NULL, &r);
    assert_int_not_equal(r.curl_code, 0);
    assert_int_equal(r.status, 0);
    hresp_free(&r);
    https_get(g_ssl_b, "a.example", "/", NULL, &g_curl, &r);
    assert_int_equal(r.curl_code, 0);
    assert_int_equal(r.status, 200);
    hresp_free(&r);
    /* A only requests one: both work, and sanitize_set forwards it as XFCC. */
    https_get(g_ssl_a, "a.example", "/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    ts_resp_t tr = {.body = r.body, .body_len = r.body_len};
    json_t *echo = ts_resp_json(&tr);
    assert_null(ts_echo_header(echo, "X-Forwarded-Client-Cert"));
    json_decref(echo);
    hresp_free(&r);
    https_get(g_ssl_a, "a.example", "/", NULL, &g_curl, &r);
    assert_int_equal(r.status, 200);
    tr.body = r.body;
    tr.body_len = r.body_len;
    echo = ts_resp_json(&tr);
    const char *xfcc = ts_echo_header(echo, "X-Forwarded-Client-Cert");
    assert_non_null(xfcc);
    /* Base64 of the DER: the PEM body without armour and line breaks. */
    char want[4096] = "";
    const char *p = strstr(g_curl.pem_text, "-----\n") + 6;
    const char *end = strstr(p, "-----END");
    for (; p < end; p++)
        if (*p != '\n')
            strncat(want, p, 1);
    assert_string_equal(xfcc, want);
    json_decref(echo);
    hresp_free(&r);
}

static void test_sticky_sessions_over_tls_on_both_sides(void **state)
{
    (void)state;
    reg_tls("sticky.b.example", g_s1.port, "app.tls.internal", "inst-s1");
    reg_tls("sticky.b.example", g_s2.port, "app.tls.internal", "inst-s2");
    assert_true(ts_crouter_wait_route(&g_a, "sticky.b.example", 2, 10000));
    hresp_t r;
    https_get(g_ssl_a, "sticky.b.example", "/login", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char backend[32], cookie[256], vcap[64] = "";
    head_value(r.headers, "X-Backend", backend, sizeof backend);
    for (const char *p = r.headers; (p = strcasestr(p, "Set-Cookie: __VCAP_ID__=")) != NULL; p++)
        sscanf(p + 24, "%63[^;\r\n]", vcap);
    assert_string_equal(vcap, strcmp(backend, "s1") == 0 ? "inst-s1" : "inst-s2");
    /* The backend saw HTTPS; the JSESSIONID it set had no Secure, so neither has __VCAP_ID__. */
    char v[64];
    head_value(r.body, "X-Forwarded-Proto", v, sizeof v);
    assert_string_equal(v, "https");
    hresp_free(&r);
    snprintf(cookie, sizeof cookie, "JSESSIONID=sess-1; __VCAP_ID__=%s", vcap);
    for (int i = 0; i < 6; i++) {
        https_get(g_ssl_a, "sticky.b.example", "/again", cookie, NULL, &r);
        assert_int_equal(r.status, 200);
        char b2[32];
        head_value(r.headers, "X-Backend", b2, sizeof b2);
        assert_string_equal(b2, backend);
        hresp_free(&r);
    }
    /* Failover: the instance is gone; the re-issued cookie is Secure over TLS. */
    https_get(g_ssl_a, "sticky.b.example", "/again", "JSESSIONID=sess-1; __VCAP_ID__=inst-gone", NULL, &r);
    assert_int_equal(r.status, 200);
    const char *sc = strcasestr(r.headers, "Set-Cookie: __VCAP_ID__=");
    assert_non_null(sc);
    char line[256];
    sscanf(sc, "%255[^\r\n]", line);
    if (!strstr(line, "; Secure"))
        fail_msg("failover cookie without Secure: %s", line);
    hresp_free(&r);
}

static void test_disable_http_leaves_only_the_tls_listener(void **state)
{
    (void)state;
    ts_crouter_t c;
    uint16_t ssl_port = ts_free_port();
    char *y = router_yaml(ssl_port, false, "disable_http: true\nclient_cert_validation: none\n");
    assert_int_equal(ts_crouter_start(&c, &g_nats, y), 0);
    free(y);
    ts_conn_t conn;
    assert_int_equal(ts_conn_open(&conn, c.port), -1);
    ts_route_t route = {.port = g_plain.port, .uris = {"a.example"}};
    assert_int_equal(ts_nats_register(g_nc, &route), 0);
    assert_true(ts_crouter_wait_route(&c, "a.example", 1, 10000));
    hresp_t r;
    https_get(ssl_port, "a.example", "/", NULL, NULL, &r);
    assert_int_equal(r.curl_code, 0);
    assert_int_equal(r.status, 200);
    hresp_free(&r);
    int st = ts_crouter_stop(&c, 15000);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* --- PROXY protocol ------------------------------------------------------------------------ */

static json_t *proxied_echo(const void *hdr, size_t hdr_len, const char *host)
{
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, g_a.port), 0);
    char req[256];
    snprintf(req, sizeof req, "GET /pp HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host);
    assert_int_equal(ts_conn_send(&c, hdr, hdr_len), 0);
    assert_int_equal(ts_conn_send_str(&c, req), 0);
    ts_resp_t r;
    assert_int_equal(ts_conn_read_response(&c, &r, false, 10000), 0);
    assert_int_equal(r.status, 200);
    json_t *echo = ts_resp_json(&r);
    ts_resp_free(&r);
    ts_conn_close(&c);
    assert_non_null(echo);
    return echo;
}

static void test_proxy_protocol_v1_and_v2_client_address_in_xff(void **state)
{
    (void)state;
    register_plain("pp.example");
    const char *v1 = "PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n";
    json_t *echo = proxied_echo(v1, strlen(v1), "pp.example");
    assert_string_equal(ts_echo_header(echo, "X-Forwarded-For"), "203.0.113.9");
    json_decref(echo);
    unsigned char v2[28] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
                            0x21, 0x11, 0x00, 0x0c, 198, 51, 100, 23, 127, 0, 0, 1,
                            0x9c, 0x40, 0x00, 0x50};
    echo = proxied_echo(v2, sizeof v2, "pp.example");
    assert_string_equal(ts_echo_header(echo, "X-Forwarded-For"), "198.51.100.23");
    json_decref(echo);
    /* The access log names the PROXY source as the client. */
    bool logged = false;
    for (int64_t dl = ts_now_ms() + 5000; !logged && ts_now_ms() < dl; ts_sleep_ms(20)) {
        char *log = ts_read_file(g_a.access_log_path, NULL);
        logged = log && strstr(log, "\"203.0.113.9:40000\"") && strstr(log, "\"198.51.100.23:40000\"");
        free(log);
    }
    assert_true(logged);
    /* Without a PROXY header the connection is served as is. */
    echo = proxied_echo("", 0, "pp.example");
    assert_string_equal(ts_echo_header(echo, "X-Forwarded-For"), "127.0.0.1");
    json_decref(echo);
}

static void test_proxy_protocol_before_tls_on_the_ssl_port(void **state)
{
    (void)state;
    register_plain("a.example");
    ts_conn_t c;
    assert_int_equal(ts_conn_open(&c, g_ssl_a), 0);
    const char *v1 = "PROXY TCP6 2001:db8::7 ::1 40000 443\r\n";
    assert_int_equal(ts_conn_send(&c, v1, strlen(v1)), 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, g_ca.pem, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, c.fd);
    SSL_set_tlsext_host_name(ssl, "a.example");
    SSL_set1_host(ssl, "a.example");
    struct timeval tv = {.tv_sec = 10};
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(SSL_connect(ssl), 1);
    const char *req = "GET /pp HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    assert_int_equal(SSL_write(ssl, req, (int)strlen(req)), (int)strlen(req));
    char buf[16384];
    size_t len = 0;
    int n;
    while (len + 1 < sizeof buf && (n = SSL_read(ssl, buf + len, (int)(sizeof buf - 1 - len))) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "\"2001:db8::7\""));
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    ts_conn_close(&c);
}

int main(void)
{
    ts_init("tls");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_backend_with_valid_certificate_and_san_gives_200),
        cmocka_unit_test(test_tls_sessions_are_resumed_on_redial),
        cmocka_unit_test(test_wrong_san_gives_503),
        cmocka_unit_test(test_untrusted_ca_gives_526),
        cmocka_unit_test(test_plain_backend_on_the_tls_port_gives_525),
        cmocka_unit_test(test_mtls_backend_needs_the_client_certificate),
        cmocka_unit_test(test_front_serves_each_sni_name_its_certificate),
        cmocka_unit_test(test_client_certificate_required_or_absent),
        cmocka_unit_test(test_sticky_sessions_over_tls_on_both_sides),
        cmocka_unit_test(test_disable_http_leaves_only_the_tls_listener),
        cmocka_unit_test(test_proxy_protocol_v1_and_v2_client_address_in_xff),
        cmocka_unit_test(test_proxy_protocol_before_tls_on_the_ssl_port),
    };
    return ts_finish(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
