/* test/unit/router/certs.h - throwaway certificates for TLS unit tests.
 *
 * Made in memory at test time with OpenSSL (EC P-256, valid from an hour ago
 * for a day): a CA, and leaves it signs for given DNS/IP SANs. Everything is
 * returned as malloc'd PEM text, the form crouter's config carries. Nothing
 * is written to disk; no private key is committed anywhere.
 */
#ifndef CR_TEST_CERTS_H
#define CR_TEST_CERTS_H

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

typedef struct test_cert {
    X509 *x509;                   /* owned */
    EVP_PKEY *key;                /* owned */
    char *cert_pem;               /* owned */
    char *key_pem;                /* owned */
} test_cert_t;

static inline char *bio_to_string(BIO *bio)
{
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *s = malloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(bio);
    return s;
}

static inline void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
}

/* Makes a certificate for cn. san is a subjectAltName value such as
 * "DNS:a.example,IP:127.0.0.1" (NULL: none). ca NULL = self-signed CA. */
static inline test_cert_t test_cert_make(const char *cn, const char *san, const test_cert_t *ca)
{
    test_cert_t c = {0};
    static long serial = 1;
    c.key = EVP_EC_gen("P-256");
    c.x509 = X509_new();
    X509_set_version(c.x509, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c.x509), serial++);
    X509_gmtime_adj(X509_getm_notBefore(c.x509), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c.x509), 86400);
    X509_set_pubkey(c.x509, c.key);
    X509_NAME *name = X509_get_subject_name(c.x509);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509 *issuer = ca ? ca->x509 : c.x509;
    X509_set_issuer_name(c.x509, X509_get_subject_name(issuer));
    if (!ca) {
        add_ext(c.x509, issuer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(c.x509, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(c.x509, issuer, NID_basic_constraints, "CA:FALSE");
        add_ext(c.x509, issuer, NID_ext_key_usage, "serverAuth,clientAuth");
    }
    if (san)
        add_ext(c.x509, issuer, NID_subject_alt_name, san);
    X509_sign(c.x509, ca ? ca->key : c.key, EVP_sha256());
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, c.x509);
    c.cert_pem = bio_to_string(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, c.key, NULL, NULL, 0, NULL, NULL);
    c.key_pem = bio_to_string(b);
    return c;
}

static inline void test_cert_free(test_cert_t *c)
{
    X509_free(c->x509);
    EVP_PKEY_free(c->key);
    free(c->cert_pem);
    free(c->key_pem);
    memset(c, 0, sizeof(*c));
}

#endif
