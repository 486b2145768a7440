/* router/tls.c - OpenSSL contexts, non-blocking handshakes and I/O, failure classes.
 *
 * Backend side: one SSL_CTX trusting the system store plus ca_certs (as
 * gorouter's CA pool), with the optional client certificate. Each
 * connection checks the endpoint's server_cert_domain_san with
 * SSL_set1_host. Resumption: OpenSSL does not resume client sessions by
 * itself, so new sessions (TLS 1.3 tickets arrive after the handshake) are
 * kept in a small table of 1024 slots indexed by a 64-bit hash of the
 * endpoint's address and name, behind a mutex taken once per dial; a new
 * connection to the same endpoint offers the saved session. A collision
 * overwrites the older entry, which only costs a full handshake.
 *
 * Front side: one SSL_CTX per tls_pem entry, all with the same settings;
 * the first is the one accepted connections start with, and the SNI
 * callback switches to the entry whose leaf certificate matches the name
 * (X509_check_host, wildcards included). ALPN offers only http/1.1.
 *
 * Failure classes follow gorouter's round_tripper error handler: a reply
 * that is not TLS or a failed handshake -> 525; a certificate the CA store
 * does not trust (or expired) -> 526; a certificate not valid for the SAN
 * -> 503; the backend rejecting our certificate -> 496. The reasons mimic
 * Go's error strings, which operators grep for.
 *
 * Every failure path clears OpenSSL's per-thread error queue, so the next
 * SSL_get_error on the worker sees only its own errors. Threads: contexts
 * are built and freed on the main thread; the rest runs on any worker.
 */
#include "router/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/defs.h"
#include "common/log.h"
#include "common/xalloc.h"

#define SESSION_SLOTS 1024  /* power of two */

typedef struct session_slot {
    uint64_t key;
    SSL_SESSION *sess;            /* ref, or NULL */
} session_slot_t;

struct cr_tls_client {
    SSL_CTX *ctx;                 /* owned */
    bool skip_verify;
    pthread_mutex_t lock;         /* guards slots */
    session_slot_t slots[SESSION_SLOTS];
    size_t cached;
};

struct cr_tls_server {
    SSL_CTX **ctxs;               /* owned, one per tls_pem entry */
    X509 **leaves;                /* borrowed from each ctx (its certificate) */
    size_t n;
};

static int session_key_idx = -1;  /* SSL ex_data: the session key (uint64 in a pointer) */
static int client_idx = -1;       /* SSL_CTX ex_data: the cr_tls_client_t */
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

/* OpenSSL is initialised without its atexit cleanup: nats.c frees
 * OpenSSL's compression-method stack in its own final cleanup, so OpenSSL
 * freeing it again at exit crashes the process (whichever library
 * initialises OpenSSL first decides whether the atexit handler exists). */
static void init_indexes(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT | OPENSSL_INIT_LOAD_SSL_STRINGS, NULL);
    session_key_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    client_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Writes OpenSSL's last error (or fallback) into err and clears the queue. */
static void ossl_error(char *err, size_t cap, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, cap, "%s%s%s", what, buf[0] ? ": " : "", buf);
    ERR_clear_error();
}

/* --- PEM loading -------------------------------------------------------------- */

/* Adds every certificate of pem to store. Returns the count, -1 on bad PEM. */
static int add_pem_to_store(X509_STORE *store, const char *pem)
{
    if (!pem || !*pem)
        return 0;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio)
        return -1;
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(store, x);  /* a duplicate is not an error worth failing on */
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(bio);
    return n > 0 ? n : -1;
}

/* Installs chain_pem (leaf first) and key_pem as ctx's certificate. */
static int use_cert_and_key(SSL_CTX *ctx, const char *chain_pem, const char *key_pem, char *err,
                            size_t err_cap, const char *what)
{
    BIO *cb = BIO_new_mem_buf(chain_pem, -1);
    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    X509 *leaf = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    int rc = -1;
    if (!leaf || !key || SSL_CTX_use_certificate(ctx, leaf) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ossl_error(err, err_cap, what);
        goto out;
    }
    X509 *extra;
    while ((extra = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            ossl_error(err, err_cap, what);
            goto out;
        }
    }
    ERR_clear_error();
    rc = 0;
out:
    EVP_PKEY_free(key);
    X509_free(leaf);
    BIO_free(kb);
    BIO_free(cb);
    return rc;
}

/* --- Backend context ----------------------------------------------------------- */

uint64_t cr_tls_session_key(const char *addr, const char *san)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = addr ? addr : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    h = (h ^ '|') * 0x100000001b3ULL;
    for (const char *p = san ? san : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    return h ? h : 1;
}

/* OpenSSL hands us each new client session (TLS 1.3: every ticket). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    cr_tls_client_t *tc = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), client_idx);
    uint64_t key = (uint64_t)(uintptr_t)SSL_get_ex_data(ssl, session_key_idx);
    if (!tc || !key || !SSL_SESSION_is_resumable(sess))
        return 0;
    session_slot_t *slot = &tc->slots[key & (SESSION_SLOTS - 1)];
    pthread_mutex_lock(&tc->lock);
    SSL_SESSION *old = slot->sess;
    if (!old)
        tc->cached++;
    slot->key = key;
    slot->sess = sess;
    pthread_mutex_unlock(&tc->lock);
    SSL_SESSION_free(old);
    return 1; /* we keep the reference */
}

cr_tls_client_t *cr_tls_client_create(const cr_config_t *cfg, char *err, size_t err_cap)
{
    pthread_once(&idx_once, init_indexes);
    cr_tls_client_t *tc = cr_xcalloc(1, sizeof(*tc));
    pthread_mutex_init(&tc->lock, NULL);
    tc->skip_verify = cfg->skip_ssl_validation;
    tc->ctx = SSL_CTX_new(TLS_client_method());
    if (!tc->ctx) {
        ossl_error(err, err_cap, "backend TLS context");
        goto fail;
    }
    SSL_CTX_set_ex_data(tc->ctx, client_idx, tc);
    SSL_CTX_set_min_proto_version(tc->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(tc->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(tc->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(tc->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(tc->ctx, on_new_session);
    if (tc->skip_verify) {
        SSL_CTX_set_verify(tc->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(tc->ctx, SSL_VERIFY_PEER, NULL);
        if (SSL_CTX_set_default_verify_paths(tc->ctx) != 1)
            ERR_clear_error(); /* no system store: ca_certs alone */
        if (add_pem_to_store(SSL_CTX_get_cert_store(tc->ctx), cfg->ca_certs) < 0) {
            snprintf(err, err_cap, "ca_certs: invalid PEM");
            goto fail;
        }
    }
    if (cfg->backends_cert_chain && cfg->backends_cert_chain[0] &&
        use_cert_and_key(tc->ctx, cfg->backends_cert_chain, cfg->backends_private_key, err, err_cap,
                         "backends.cert_chain/private_key") != 0)
        goto fail;
    return tc;
fail:
    cr_tls_client_destroy(tc);
    return NULL;
}

void cr_tls_client_destroy(cr_tls_client_t *tc)
{
    if (!tc)
        return;
    for (size_t i = 0; i < SESSION_SLOTS; i++)
        SSL_SESSION_free(tc->slots[i].sess);
    SSL_CTX_free(tc->ctx);
    pthread_mutex_destroy(&tc->lock);
    free(tc);
}

void cr_tls_client_forget_session(cr_tls_client_t *tc, uint64_t key)
{
    session_slot_t *slot = &tc->slots[key & (SESSION_SLOTS - 1)];
    SSL_SESSION *old = NULL;
    pthread_mutex_lock(&tc->lock);
    if (slot->sess && slot->key == key) {
        old = slot->sess;
        slot->sess = NULL;
        tc->cached--;
    }
    pthread_mutex_unlock(&tc->lock);
    SSL_SESSION_free(old);
}

size_t cr_tls_client_cached_sessions(cr_tls_client_t *tc)
{
    pthread_mutex_lock(&tc->lock);
    size_t n = tc->cached;
    pthread_mutex_unlock(&tc->lock);
    return n;
}

static bool is_ip_literal(const char *s)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

SSL *cr_tls_client_ssl_new(cr_tls_client_t *tc, int fd, const char *san, uint64_t session_key,
                           cr_tls_failure_t *fail)
{
    bool has_san = san && *san;
    if (!has_san && !tc->skip_verify) {
        /* Go refuses to verify a certificate without a name to check. */
        fail->kind = CR_PERR_ENDPOINT_FAILURE;
        snprintf(fail->reason, sizeof(fail->reason),
                 "tls: either ServerName or InsecureSkipVerify must be specified in the tls.Config");
        return NULL;
    }
    SSL *ssl = SSL_new(tc->ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1)
        goto fail;
    SSL_set_ex_data(ssl, session_key_idx, (void *)(uintptr_t)session_key);
    if (has_san) {
        if (!is_ip_literal(san) && SSL_set_tlsext_host_name(ssl, san) != 1)
            goto fail;
        if (!tc->skip_verify) {
            /* SSL_set1_host takes IP literals too (matched against IP SANs). */
            if (SSL_set1_host(ssl, san) != 1)
                goto fail;
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        }
    }
    session_slot_t *slot = &tc->slots[session_key & (SESSION_SLOTS - 1)];
    pthread_mutex_lock(&tc->lock);
    if (slot->sess && slot->key == session_key)
        SSL_set_session(ssl, slot->sess); /* takes its own reference */
    pthread_mutex_unlock(&tc->lock);
    SSL_set_connect_state(ssl);
    return ssl;
fail:
    fail->kind = CR_PERR_ENDPOINT_FAILURE;
    ossl_error(fail->reason, sizeof(fail->reason), "tls");
    SSL_free(ssl);
    return NULL;
}

/* --- Classifying handshake failures ------------------------------------------- */

/* "a, b, c" from the certificate's DNS and IP SANs (Go's message lists them). */
static void cert_names(X509 *cert, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int n = names ? sk_GENERAL_NAME_num(names) : 0;
    for (int i = 0; i < n && len + 4 < cap; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char ip[INET6_ADDRSTRLEN];
        const char *s = NULL;
        int slen = 0;
        if (g->type == GEN_DNS) {
            s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
            slen = ASN1_STRING_length(g->d.dNSName);
        } else if (g->type == GEN_IPADD) {
            int l = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            if ((l == 4 && inet_ntop(AF_INET, a, ip, sizeof(ip))) ||
                (l == 16 && inet_ntop(AF_INET6, a, ip, sizeof(ip)))) {
                s = ip;
                slen = (int)strlen(ip);
            }
        }
        if (!s)
            continue;
        int w = snprintf(out + len, cap - len, "%s%.*s", len ? ", " : "", slen, s);
        if (w < 0 || (size_t)w >= cap - len)
            break;
        len += (size_t)w;
    }
    GENERAL_NAMES_free(names);
    /* Control bytes from a hostile certificate never reach a header. */
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            *p = '?';
}

static void classify_verify(SSL *ssl, long vr, cr_tls_failure_t *f)
{
    if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        char names[96];
        X509 *peer = SSL_get0_peer_certificate(ssl);
        if (!peer) {
            /* A failed verification leaves the leaf only in the received chain. */
            STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
            peer = chain && sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;
        }
        const char *want = SSL_get0_peername(ssl);
        if (peer)
            cert_names(peer, names, sizeof(names));
        else
            names[0] = '\0';
        if (!want) {
            X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
            want = vp ? X509_VERIFY_PARAM_get0_host(vp, 0) : NULL;
        }
        f->kind = CR_PERR_TLS_HOSTNAME;
        if (names[0])
            snprintf(f->reason, sizeof(f->reason), "x509: certificate is valid for %s, not %s",
                     names, want ? want : "?");
        else
            snprintf(f->reason, sizeof(f->reason), "x509: certificate is not valid for %s",
                     want ? want : "?");
        return;
    }
    f->kind = CR_PERR_TLS_UNTRUSTED;
    switch (vr) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        snprintf(f->reason, sizeof(f->reason),
                 "x509: certificate has expired or is not yet valid");
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        snprintf(f->reason, sizeof(f->reason), "x509: certificate signed by unknown authority");
        break;
    default:
        snprintf(f->reason, sizeof(f->reason), "x509: %s", X509_verify_cert_error_string(vr));
        break;
    }
}

/* An alert the peer sent (OpenSSL reports alert N as reason 1000 + N). */
static bool classify_alert(int reason, cr_tls_failure_t *f)
{
    if (reason < SSL_AD_REASON_OFFSET || reason > SSL_AD_REASON_OFFSET + 255)
        return false;
    int alert = reason - SSL_AD_REASON_OFFSET;
    switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REQUIRED:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
        f->kind = CR_PERR_TLS_CERT_REQUIRED;
        break;
    default:
        f->kind = CR_PERR_TLS_HANDSHAKE;
        break;
    }
    const char *s = SSL_alert_desc_string_long(alert);
    snprintf(f->reason, sizeof(f->reason), "remote error: tls: %s", s ? s : "alert");
    for (char *p = f->reason; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32); /* Go's alert strings are lower case */
    return true;
}

static void classify_failure(SSL *ssl, int ret, int sslerr, int saved_errno, cr_tls_failure_t *f)
{
    long vr = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_error();
    int reason = e ? ERR_GET_REASON(e) : 0;
    if (vr != X509_V_OK && reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        classify_verify(ssl, vr, f);
    } else if (e && classify_alert(reason, f)) {
        /* filled */
    } else if (e && (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
                     reason == SSL_R_UNKNOWN_PROTOCOL || reason == SSL_R_HTTP_REQUEST ||
                     reason == SSL_R_WRONG_SSL_VERSION ||
                     reason == SSL_R_UNSUPPORTED_PROTOCOL)) {
        f->kind = CR_PERR_TLS_HANDSHAKE;
        snprintf(f->reason, sizeof(f->reason), "tls: first record does not look like a TLS handshake");
    } else if (vr != X509_V_OK) {
        classify_verify(ssl, vr, f);
    } else if (sslerr == SSL_ERROR_ZERO_RETURN || (sslerr == SSL_ERROR_SYSCALL && saved_errno == 0) ||
               (e && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        f->kind = CR_PERR_TLS_HANDSHAKE;
        snprintf(f->reason, sizeof(f->reason), "EOF");
    } else if (sslerr == SSL_ERROR_SYSCALL) {
        f->kind = CR_PERR_TLS_HANDSHAKE;
        if (saved_errno == ECONNRESET)
            snprintf(f->reason, sizeof(f->reason), "read: connection reset by peer");
        else
            snprintf(f->reason, sizeof(f->reason), "%s", strerror(saved_errno));
    } else {
        f->kind = CR_PERR_TLS_HANDSHAKE;
        const char *rs = e ? ERR_reason_error_string(e) : NULL;
        snprintf(f->reason, sizeof(f->reason), "tls: %s", rs ? rs : "handshake failure");
    }
    (void)ret;
    ERR_clear_error();
}

cr_tls_step_t cr_tls_connect_step(SSL *ssl, cr_tls_failure_t *fail)
{
    ERR_clear_error();
    errno = 0;
    int ret = SSL_do_handshake(ssl);
    if (ret == 1)
        return CR_TLS_DONE;
    int saved = errno;
    int se = SSL_get_error(ssl, ret);
    if (se == SSL_ERROR_WANT_READ)
        return CR_TLS_WANT_READ;
    if (se == SSL_ERROR_WANT_WRITE)
        return CR_TLS_WANT_WRITE;
    classify_failure(ssl, ret, se, saved, fail);
    return CR_TLS_FAILED;
}

void cr_tls_timeout_failure(cr_tls_failure_t *fail)
{
    fail->kind = CR_PERR_TLS_HANDSHAKE;
    snprintf(fail->reason, sizeof(fail->reason), "net/http: TLS handshake timeout");
}

bool cr_tls_alert_failure(SSL *ssl, cr_tls_failure_t *fail)
{
    (void)ssl;
    unsigned long e = ERR_peek_error();
    bool r = e && classify_alert(ERR_GET_REASON(e), fail);
    ERR_clear_error();
    return r;
}

/* --- Front context ------------------------------------------------------------- */

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    cr_tls_server_t *ts = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (!name || ts->n < 2)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < ts->n; i++) {
        if (ts->leaves[i] && X509_check_host(ts->leaves[i], name, 0, 0, NULL) == 1) {
            if (i > 0)
                SSL_set_SSL_CTX(ssl, ts->ctxs[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* unknown name: the default certificate */
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char h11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    (void)ssl;
    (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, h11, sizeof(h11), in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* no ALPN: HTTP/1.1 anyway */
}

/* OpenSSL's spelling of cipher_suites (IANA names like Go's translated). */
static void openssl_cipher_list(const char *list, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char name[128];
        if (n > 0 && n < sizeof(name)) {
            memcpy(name, p, n);
            name[n] = '\0';
            const char *o = strncmp(name, "TLS_", 4) == 0 ? OPENSSL_cipher_name(name) : name;
            if (o && strcmp(o, "(NONE)") != 0) {
                int w = snprintf(out + len, cap - len, "%s%s", len ? ":" : "", o);
                if (w < 0 || (size_t)w >= cap - len)
                    break;
                len += (size_t)w;
            }
        }
        p = end ? end + 1 : p + n;
    }
}

static SSL_CTX *server_ctx(const cr_config_t *cfg, const cr_tls_pem_t *pem, size_t idx,
                           char *err, size_t err_cap)
{
    char what[64];
    snprintf(what, sizeof(what), "tls_pem[%zu]", idx);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ossl_error(err, err_cap, what);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_min_proto_version(ctx, cfg->min_tls_version) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, cfg->max_tls_version) != 1) {
        ossl_error(err, err_cap, "min_tls_version/max_tls_version");
        goto fail;
    }
    char ciphers[1024];
    openssl_cipher_list(cfg->cipher_suites, ciphers, sizeof(ciphers));
    if (cfg->min_tls_version < TLS1_3_VERSION && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
        ossl_error(err, err_cap, "cipher_suites");
        goto fail;
    }
    if (use_cert_and_key(ctx, pem->cert_chain, pem->private_key, err, err_cap, what) != 0)
        goto fail;
    static const unsigned char sid_ctx[] = "crouter";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (cfg->client_cert_validation != CR_CLIENT_CERT_NONE) {
        int mode = SSL_VERIFY_PEER;
        if (cfg->client_cert_validation == CR_CLIENT_CERT_REQUIRE)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        if (add_pem_to_store(store, cfg->client_ca_certs) < 0 ||
            add_pem_to_store(store, cfg->ca_certs) < 0) {
            snprintf(err, err_cap, "client_ca_certs: invalid PEM");
            goto fail;
        }
        /* Tell clients which CAs we accept (client_ca_certs only). */
        if (cfg->client_ca_certs && cfg->client_ca_certs[0]) {
            STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
            BIO *bio = BIO_new_mem_buf(cfg->client_ca_certs, -1);
            X509 *x;
            while (names && bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
                X509_NAME *nm = X509_NAME_dup(X509_get_subject_name(x));
                if (nm)
                    sk_X509_NAME_push(names, nm);
                X509_free(x);
            }
            ERR_clear_error();
            BIO_free(bio);
            if (names)
                SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

cr_tls_server_t *cr_tls_server_create(const cr_config_t *cfg, char *err, size_t err_cap)
{
    pthread_once(&idx_once, init_indexes);
    if (cfg->tls_pem_len == 0) {
        snprintf(err, err_cap, "tls_pem: no certificate");
        return NULL;
    }
    cr_tls_server_t *ts = cr_xcalloc(1, sizeof(*ts));
    ts->ctxs = cr_xcalloc(cfg->tls_pem_len, sizeof(SSL_CTX *));
    ts->leaves = cr_xcalloc(cfg->tls_pem_len, sizeof(X509 *));
    for (size_t i = 0; i < cfg->tls_pem_len; i++) {
        ts->ctxs[i] = server_ctx(cfg, &cfg->tls_pem[i], i, err, err_cap);
        if (!ts->ctxs[i])
            goto fail;
        ts->n = i + 1;
        ts->leaves[i] = SSL_CTX_get0_certificate(ts->ctxs[i]);
    }
    SSL_CTX_set_tlsext_servername_callback(ts->ctxs[0], on_servername);
    SSL_CTX_set_tlsext_servername_arg(ts->ctxs[0], ts);
    return ts;
fail:
    cr_tls_server_destroy(ts);
    return NULL;
}

void cr_tls_server_destroy(cr_tls_server_t *ts)
{
    if (!ts)
        return;
    for (size_t i = 0; i < ts->n; i++)
        SSL_CTX_free(ts->ctxs[i]);
    free(ts->ctxs);
    free(ts->leaves);
    free(ts);
}

SSL *cr_tls_server_ssl_new(cr_tls_server_t *ts, int fd)
{
    SSL *ssl = SSL_new(ts->ctxs[0]);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

cr_tls_step_t cr_tls_accept_step(SSL *ssl, char *reason, size_t reason_cap)
{
    ERR_clear_error();
    errno = 0;
    int ret = SSL_do_handshake(ssl);
    if (ret == 1)
        return CR_TLS_DONE;
    int saved = errno;
    int se = SSL_get_error(ssl, ret);
    if (se == SSL_ERROR_WANT_READ)
        return CR_TLS_WANT_READ;
    if (se == SSL_ERROR_WANT_WRITE)
        return CR_TLS_WANT_WRITE;
    if (reason && reason_cap) {
        unsigned long e = ERR_peek_error();
        const char *rs = e ? ERR_reason_error_string(e) : NULL;
        if (rs)
            snprintf(reason, reason_cap, "%s", rs);
        else if (se == SSL_ERROR_SYSCALL && saved)
            snprintf(reason, reason_cap, "%s", strerror(saved));
        else
            snprintf(reason, reason_cap, "EOF");
    }
    ERR_clear_error();
    return CR_TLS_FAILED;
}

/* --- Data ---------------------------------------------------------------------- */

ssize_t cr_tls_read(SSL *ssl, char *buf, size_t len, cr_tls_step_t *want)
{
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    int ret = SSL_read_ex(ssl, buf, len, &got);
    if (ret == 1)
        return (ssize_t)got;
    int saved = errno;
    int se = SSL_get_error(ssl, ret);
    switch (se) {
    case SSL_ERROR_WANT_READ:
        *want = CR_TLS_WANT_READ;
        return CR_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = CR_TLS_WANT_WRITE;
        return CR_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return saved ? -saved : 0;
    default:
        /* The error queue is left for cr_tls_alert_failure(); every
         * entry point here clears it before calling OpenSSL. */
        return -EPROTO;
    }
}

ssize_t cr_tls_write2(SSL *ssl, const char *a, size_t alen, const char *b, size_t blen,
                      cr_tls_step_t *want)
{
    char joined[16384];
    const char *p = a;
    size_t n = alen;
    if (alen && blen && alen + blen <= sizeof(joined)) {
        /* One record for a head and a small body. */
        memcpy(joined, a, alen);
        memcpy(joined + alen, b, blen);
        p = joined;
        n = alen + blen;
    } else if (!alen) {
        p = b;
        n = blen;
    }
    if (n == 0)
        return 0;
    ERR_clear_error();
    size_t done = 0;
    errno = 0;
    int ret = SSL_write_ex(ssl, p, n, &done);
    if (ret == 1)
        return (ssize_t)done;
    int saved = errno;
    int se = SSL_get_error(ssl, ret);
    if (se == SSL_ERROR_WANT_WRITE || se == SSL_ERROR_WANT_READ) {
        *want = se == SSL_ERROR_WANT_WRITE ? CR_TLS_WANT_WRITE : CR_TLS_WANT_READ;
        return CR_AGAIN;
    }
    ERR_clear_error();
    if (se == SSL_ERROR_SYSCALL && saved)
        return -saved;
    return -EPROTO;
}

bool cr_tls_idle_still_usable(SSL *ssl)
{
    char ch;
    size_t got = 0;
    int ret = SSL_peek_ex(ssl, &ch, 1, &got);
    if (ret == 1)
        return false; /* application data on an idle connection: not ours to take */
    int se = SSL_get_error(ssl, ret);
    ERR_clear_error();
    return se == SSL_ERROR_WANT_READ;
}

void cr_tls_close(SSL *ssl)
{
    if (!ssl)
        return;
    if (SSL_is_init_finished(ssl))
        SSL_shutdown(ssl); /* one non-blocking try at close_notify */
    ERR_clear_error();
    SSL_free(ssl);
}

/* --- X-Forwarded-Client-Cert -------------------------------------------------- */

cr_xfcc_action_t cr_tls_xfcc_action(cr_xfcc_mode_t mode, bool has_client_cert)
{
    switch (mode) {
    case CR_XFCC_ALWAYS_FORWARD:
        return CR_XFCC_KEEP;
    case CR_XFCC_FORWARD:
        return has_client_cert ? CR_XFCC_KEEP : CR_XFCC_REMOVE;
    case CR_XFCC_SANITIZE_SET:
        return has_client_cert ? CR_XFCC_REPLACE : CR_XFCC_REMOVE;
    }
    return CR_XFCC_REMOVE;
}

int cr_tls_xfcc_encode(const unsigned char *der, size_t der_len, char *out, size_t cap)
{
    size_t need = 4 * ((der_len + 2) / 3) + 1;
    if (der_len > INT32_MAX / 2 || need > cap)
        return CR_ETOOBIG;
    int n = EVP_EncodeBlock((unsigned char *)out, der, (int)der_len);
    return n < 0 ? CR_ETOOBIG : n;
}

int cr_tls_xfcc_value(SSL *ssl, char *out, size_t cap)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (!peer)
        return 0;
    unsigned char *der = NULL;
    int len = i2d_X509(peer, &der);
    if (len <= 0) {
        ERR_clear_error();
        return 0;
    }
    int n = cr_tls_xfcc_encode(der, (size_t)len, out, cap);
    OPENSSL_free(der);
    return n;
}
