/* router/persistence.c - session persistence: keys, cookie codec, hashing, learn table.
 *
 * HMAC-SHA256 is built on libcrypto's SHA256_Init/Update/Final with the key
 * block XORed on the stack: the contexts are plain structs, so a MAC costs
 * four compression rounds and no allocation (the EVP_MAC and HMAC() paths
 * allocate a context per call, which the data path must not). These
 * functions are deprecated in OpenSSL 3 but kept; OPENSSL_SUPPRESS_DEPRECATED
 * says we know.
 *
 * Identities and rendezvous hashes are cached in the endpoint's atomic
 * fields: the inputs (addr, instance id, the route's policy) never change
 * for an endpoint, so a racing double computation stores the same value.
 *
 * Learn table: 16 shards, each a mutex, a bucket array of entry indices
 * (chained), an entry array of capacity/16 and an LRU list through the
 * entries (indices, 0 = none). A route's own table_size is a quota inside
 * the shared table: each shard keeps a slot per route present (count, quota
 * of ceil(table_size/16), and the route's own LRU list through its
 * entries), so a route at its quota evicts its own least recently used
 * entry, not another route's. Slots are preallocated too (a shard never
 * holds more routes than entries). Nothing is allocated after create. The
 * outbox is a bounded ring under its own mutex that the sync thread drains.
 * Threads: any. Owns: learn tables and their outbox.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "router/persistence.h"

#include <arpa/inet.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "common/log.h"
#include "common/uuid.h"
#include "common/xalloc.h"

/* --- keys and HMAC ------------------------------------------------------------ */

static uint8_t process_key[32];
static pthread_once_t process_key_once = PTHREAD_ONCE_INIT;

static void make_process_key(void)
{
    if (RAND_bytes(process_key, sizeof process_key) != 1) {
        for (size_t i = 0; i < sizeof process_key; i += 8) {
            uint64_t r = cr_random_u64();
            memcpy(process_key + i, &r, 8);
        }
    }
}

static void key_block(uint8_t block[64], const char *secret)
{
    size_t n = strlen(secret);
    memset(block, 0, 64);
    if (n > 64)
        SHA256((const unsigned char *)secret, n, block);
    else
        memcpy(block, secret, n);
}

void cr_persist_keys_init(cr_persist_keys_t *k, const cr_persist_policy_t *p)
{
    k->random = p->secret[0] == '\0';
    if (k->random) {
        pthread_once(&process_key_once, make_process_key);
        memset(k->block[0], 0, 64);
        memcpy(k->block[0], process_key, sizeof process_key);
    } else {
        key_block(k->block[0], p->secret);
    }
    k->has_previous = p->previous_secret[0] != '\0';
    if (k->has_previous)
        key_block(k->block[1], p->previous_secret);
    else
        memset(k->block[1], 0, 64);
}

void cr_persist_hmac(const cr_persist_keys_t *k, int idx, const void *msg, size_t len,
                     uint8_t out[32])
{
    uint8_t pad[64], inner[32];
    SHA256_CTX c;
    for (int i = 0; i < 64; i++)
        pad[i] = k->block[idx][i] ^ 0x36;
    SHA256_Init(&c);
    SHA256_Update(&c, pad, 64);
    SHA256_Update(&c, msg, len);
    SHA256_Final(inner, &c);
    for (int i = 0; i < 64; i++)
        pad[i] = k->block[idx][i] ^ 0x5c;
    SHA256_Init(&c);
    SHA256_Update(&c, pad, 64);
    SHA256_Update(&c, inner, 32);
    SHA256_Final(out, &c);
}

/* --- identity --------------------------------------------------------------------- */

static uint64_t load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint64_t cr_persist_identity(const cr_persist_keys_t *k, int idx, const char *addr,
                             const char *instance_id)
{
    /* "id" \0 addr \0 instance: the separators keep ("a","b\0c") apart
     * from ("a\0b","c") since neither field holds a NUL. */
    uint8_t msg[3 + 512];
    size_t n = 0;
    memcpy(msg, "id", 3);
    n = 3;
    size_t al = addr ? strlen(addr) : 0, il = instance_id ? strlen(instance_id) : 0;
    if (al > 255)
        al = 255;
    if (il > 255)
        il = 255;
    memcpy(msg + n, addr, al);
    n += al;
    msg[n++] = 0;
    if (il)
        memcpy(msg + n, instance_id, il);
    n += il;
    uint8_t mac[32];
    cr_persist_hmac(k, idx, msg, n, mac);
    uint64_t id = load_be64(mac);
    return id ? id : 1;
}

uint64_t cr_persist_endpoint_identity(cr_endpoint_t *ep, const cr_persist_keys_t *k, int idx)
{
    uint64_t id = atomic_load_explicit(&ep->persist_id[idx], memory_order_relaxed);
    if (CR_LIKELY(id != 0))
        return id;
    id = cr_persist_identity(k, idx, ep->addr, ep->private_instance_id);
    atomic_store_explicit(&ep->persist_id[idx], id, memory_order_relaxed);
    return id;
}

cr_endpoint_t *cr_persist_find_identity(const cr_pool_t *pool, const cr_persist_keys_t *k,
                                        int idx, uint64_t id)
{
    for (uint32_t i = 0; i < pool->len; i++)
        if (cr_persist_endpoint_identity(pool->endpoints[i], k, idx) == id)
            return pool->endpoints[i];
    return NULL;
}

/* --- base64url ----------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
    }
    return o;
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes canonical unpadded base64url (unused trailing bits must be 0, so
 * each byte string has exactly one text). Returns bytes or -1. */
static int b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 == 1 || (n / 4) * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val(s[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1;
    return (int)o;
}

/* --- cookie codec ----------------------------------------------------------------------- */

#define COOKIE_VERSION 1
#define FLAG_TIMES 0x01
#define MAC_BYTES 12
#define PAYLOAD_MAX (2 + 8 + 8)

static const char mac_context[] = "crouter-persist-cookie";

static void cookie_mac(const cr_persist_keys_t *k, int idx, const uint8_t *payload, size_t n,
                       uint8_t mac[32])
{
    uint8_t msg[sizeof mac_context + PAYLOAD_MAX];
    memcpy(msg, mac_context, sizeof mac_context);
    memcpy(msg + sizeof mac_context, payload, n);
    cr_persist_hmac(k, idx, msg, sizeof mac_context + n, mac);
}

int cr_persist_cookie_encode(const cr_persist_keys_t *k, const cr_persist_cookie_t *c, char *out,
                             size_t cap)
{
    uint8_t raw[PAYLOAD_MAX + MAC_BYTES];
    size_t n = 0;
    raw[n++] = COOKIE_VERSION;
    raw[n++] = c->has_times ? FLAG_TIMES : 0;
    store_be64(raw + n, c->id);
    n += 8;
    if (c->has_times) {
        store_be32(raw + n, c->first_seen_s);
        store_be32(raw + n + 4, c->last_seen_s);
        n += 8;
    }
    uint8_t mac[32];
    cookie_mac(k, 0, raw, n, mac);
    memcpy(raw + n, mac, MAC_BYTES);
    n += MAC_BYTES;
    if (cap < (n + 2) / 3 * 4)
        return CR_ETOOBIG;
    return (int)b64_encode(raw, n, out);
}

/* Constant-time comparison of MAC_BYTES bytes. */
static bool mac_equal(const uint8_t *a, const uint8_t *b)
{
    uint8_t d = 0;
    for (int i = 0; i < MAC_BYTES; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

int cr_persist_cookie_decode(const cr_persist_keys_t *k, const char *v, size_t len,
                             cr_persist_cookie_t *out)
{
    uint8_t raw[PAYLOAD_MAX + MAC_BYTES];
    if (len > CR_PERSIST_COOKIE_MAX)
        return CR_EBAD;
    int n = b64_decode(v, len, raw, sizeof raw);
    if (n < 2 || raw[0] != COOKIE_VERSION || (raw[1] & ~FLAG_TIMES) != 0)
        return CR_EBAD;
    bool times = raw[1] & FLAG_TIMES;
    size_t payload = 2 + 8 + (times ? 8 : 0);
    if ((size_t)n != payload + MAC_BYTES)
        return CR_EBAD;
    uint8_t mac[32];
    int idx = -1;
    cookie_mac(k, 0, raw, payload, mac);
    if (mac_equal(mac, raw + payload))
        idx = 0;
    else if (k->has_previous) {
        cookie_mac(k, 1, raw, payload, mac);
        if (mac_equal(mac, raw + payload))
            idx = 1;
    }
    if (idx < 0)
        return CR_EBAD;
    memset(out, 0, sizeof *out);
    out->id = load_be64(raw + 2);
    out->has_times = times;
    if (times) {
        out->first_seen_s = load_be32(raw + 10);
        out->last_seen_s = load_be32(raw + 14);
    }
    out->key_idx = (uint8_t)idx;
    return 0;
}

bool cr_persist_cookie_expired(const cr_persist_cookie_t *c, const cr_persist_policy_t *p,
                               uint32_t now_s)
{
    if (p->max_idle_ns == 0 && p->max_life_ns == 0)
        return false;
    if (!c->has_times)
        return true; /* limits were added after it was issued: re-balance once */
    int64_t life = (int64_t)now_s - c->first_seen_s;
    int64_t idle = (int64_t)now_s - c->last_seen_s;
    if (p->max_life_ns && life * CR_NS_PER_SEC >= p->max_life_ns)
        return true;
    if (p->max_idle_ns && idle * CR_NS_PER_SEC >= p->max_idle_ns)
        return true;
    return false;
}

void cr_persist_id_token(uint64_t id, char out[CR_PERSIST_ID_CHARS])
{
    uint8_t raw[8];
    store_be64(raw, id);
    b64_encode(raw, 8, out);
}

int cr_persist_id_token_parse(const char *s, size_t len, uint64_t *id)
{
    uint8_t raw[8];
    if (len != CR_PERSIST_ID_CHARS || b64_decode(s, len, raw, sizeof raw) != 8)
        return CR_EBAD;
    *id = load_be64(raw);
    return 0;
}

/* --- hashing ------------------------------------------------------------------------------ */

static inline uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

uint64_t cr_persist_hash(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = fmix64(h ^ w) + 0x9e3779b97f4a7c15ULL;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < len; i++)
        w |= (uint64_t)p[i] << (8 * i);
    return fmix64(h ^ w ^ 0x5bd1e995ULL);
}

uint64_t cr_persist_endpoint_hash(cr_endpoint_t *ep)
{
    uint64_t h = atomic_load_explicit(&ep->persist_hash, memory_order_relaxed);
    if (CR_LIKELY(h != 0))
        return h;
    h = cr_persist_hash(ep->addr, strlen(ep->addr), 0x63726f75746572ULL);
    if (ep->private_instance_id)
        h = cr_persist_hash(ep->private_instance_id, strlen(ep->private_instance_id), h);
    if (h == 0)
        h = 1;
    atomic_store_explicit(&ep->persist_hash, h, memory_order_relaxed);
    return h;
}

uint64_t cr_persist_hrw_score(uint64_t kh, uint64_t eh)
{
    return fmix64(kh ^ fmix64(eh + 0x9e3779b97f4a7c15ULL));
}

size_t cr_persist_hrw_index(const uint64_t *hashes, size_t n, uint64_t kh)
{
    size_t best = 0;
    uint64_t best_score = cr_persist_hrw_score(kh, hashes[0]);
    for (size_t i = 1; i < n; i++) {
        uint64_t s = cr_persist_hrw_score(kh, hashes[i]);
        if (s > best_score) {
            best_score = s;
            best = i;
        }
    }
    return best;
}

cr_endpoint_t *cr_persist_find_hash(const cr_pool_t *pool, uint64_t h)
{
    for (uint32_t i = 0; i < pool->len; i++)
        if (cr_persist_endpoint_hash(pool->endpoints[i]) == h)
            return pool->endpoints[i];
    return NULL;
}

/* --- client address ------------------------------------------------------------------------- */

int cr_persist_parse_ip(const char *s, size_t len, uint8_t out[16])
{
    char buf[64];
    while (len && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof buf)
        return CR_EBAD;
    memcpy(buf, s, len);
    buf[len] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        return 0;
    }
    return inet_pton(AF_INET6, buf, out) == 1 ? 0 : CR_EBAD;
}

static bool is_trusted(const cr_persist_policy_t *p, const uint8_t addr[16])
{
    for (uint32_t i = 0; i < p->trusted_proxies_len; i++)
        if (cr_cidr_contains(&p->trusted_proxies[i], addr))
            return true;
    return false;
}

void cr_persist_client_addr(const cr_persist_policy_t *p, const uint8_t peer[16],
                            const char *const *values, const size_t *lens, size_t n,
                            uint8_t out[16])
{
    memcpy(out, peer, 16);
    if (!is_trusted(p, peer))
        return;
    /* Right to left over every entry of every header (later headers are
     * further right). */
    for (size_t h = n; h-- > 0;) {
        const char *v = values[h];
        size_t end = lens[h];
        for (;;) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            uint8_t a[16];
            if (cr_persist_parse_ip(v + start, end - start, a) != 0)
                return; /* garbage: keep the last trusted hop */
            memcpy(out, a, 16);
            if (!is_trusted(p, a))
                return;
            if (start == 0)
                break;
            end = start - 1;
        }
    }
}

uint64_t cr_persist_ip_key(const uint8_t addr[16], unsigned ip_prefix, unsigned ip6_prefix)
{
    /* IPv4 is mapped into the last 32 bits, so its /N is /(N+96) here. */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t a[16];
    memcpy(a, addr, 16);
    unsigned bits = memcmp(addr, mapped, sizeof mapped) == 0
                        ? (ip_prefix > 32 ? 32 : ip_prefix) + 96
                        : (ip6_prefix > 128 ? 128 : ip6_prefix);
    for (unsigned i = bits; i < 128; i++)
        a[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
    return cr_persist_hash(a, 16, 0x73726369ULL);
}

/* --- learn table ---------------------------------------------------------------------------- */

#define SHARDS 16
#define OUTBOX_CAP 4096
/* A binding learned again (same value, same endpoint; learn mode sees the
 * app's Set-Cookie on every response) is published at most this often:
 * enough to keep the other routers' idle clocks running, without one NATS
 * message per response. */
#define REPUBLISH_NS (1000LL * 1000 * 1000)

typedef struct lentry {
    uint64_t route, value, endpoint;
    int64_t used_ns;
    int64_t published_ns;         /* last queued for (or received from) the other routers */
    uint32_t hnext;               /* bucket chain or free list; index + 1, 0 = end */
    uint32_t lprev, lnext;        /* LRU; index + 1 */
    uint32_t rslot;               /* its route's slot; index + 1 */
    uint32_t rprev, rnext;        /* the route's LRU; index + 1 */
    bool live;
} lentry_t;

/* A route with entries in a shard. */
typedef struct rslot {
    uint64_t route;
    uint32_t count;               /* its live entries in this shard */
    uint32_t quota;               /* entries it may keep in this shard; 0 = no own bound */
    uint32_t head, tail;          /* its most / least recently used entry; index + 1 */
    uint32_t hnext;               /* bucket chain or free list; index + 1 */
} rslot_t;

typedef struct shard {
    pthread_mutex_t mu;
    uint32_t cap, used;           /* entries allocated from e[] so far */
    uint32_t len;                 /* live entries */
    uint32_t mask;                /* buckets - 1 */
    uint32_t *buckets;            /* owned */
    lentry_t *e;                  /* owned, cap entries */
    uint32_t free_head;
    uint32_t lru_head, lru_tail;  /* most / least recently used */
    uint32_t *rbuckets;           /* owned, mask + 1 route chains */
    rslot_t *r;                   /* owned, cap slots */
    uint32_t rused, rfree;        /* slots handed out so far; free list */
} shard_t;

struct cr_persist_learn {
    shard_t shards[SHARDS];
    pthread_mutex_t out_mu;
    cr_persist_learned_t outbox[OUTBOX_CAP];
    uint32_t out_head, out_len;
    uint64_t out_dropped;
};

cr_persist_learn_t *cr_persist_learn_create(uint32_t capacity)
{
    if (capacity < SHARDS)
        capacity = SHARDS;
    cr_persist_learn_t *t = cr_xcalloc(1, sizeof *t);
    uint32_t per = (capacity + SHARDS - 1) / SHARDS;
    uint32_t nb = 1;
    while (nb < per)
        nb <<= 1;
    for (int i = 0; i < SHARDS; i++) {
        shard_t *s = &t->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->cap = per;
        s->mask = nb - 1;
        s->buckets = cr_xcalloc(nb, sizeof *s->buckets);
        s->e = cr_xcalloc(per, sizeof *s->e);
        s->rbuckets = cr_xcalloc(nb, sizeof *s->rbuckets);
        s->r = cr_xcalloc(per, sizeof *s->r);
    }
    pthread_mutex_init(&t->out_mu, NULL);
    return t;
}

void cr_persist_learn_destroy(cr_persist_learn_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_destroy(&t->shards[i].mu);
        free(t->shards[i].buckets);
        free(t->shards[i].e);
        free(t->shards[i].rbuckets);
        free(t->shards[i].r);
    }
    pthread_mutex_destroy(&t->out_mu);
    free(t);
}

static inline uint64_t entry_key(uint64_t route, uint64_t value)
{
    return fmix64(route ^ fmix64(value));
}

static void lru_unlink(shard_t *s, uint32_t i)
{
    lentry_t *x = &s->e[i - 1];
    if (x->lprev)
        s->e[x->lprev - 1].lnext = x->lnext;
    else
        s->lru_head = x->lnext;
    if (x->lnext)
        s->e[x->lnext - 1].lprev = x->lprev;
    else
        s->lru_tail = x->lprev;
    x->lprev = x->lnext = 0;
}

static void lru_push_front(shard_t *s, uint32_t i)
{
    lentry_t *x = &s->e[i - 1];
    x->lprev = 0;
    x->lnext = s->lru_head;
    if (s->lru_head)
        s->e[s->lru_head - 1].lprev = i;
    s->lru_head = i;
    if (!s->lru_tail)
        s->lru_tail = i;
}

/* --- per-route slots: find, attach an entry, detach it, touch it --- */

static uint32_t rslot_find(const shard_t *s, uint64_t route)
{
    for (uint32_t j = s->rbuckets[fmix64(route) & s->mask]; j; j = s->r[j - 1].hnext)
        if (s->r[j - 1].route == route)
            return j;
    return 0;
}

/* Links entry i at the front of its route's list, making the slot when the
 * route has none here (there is always one free: routes <= entries). */
static void rslot_attach(shard_t *s, uint32_t i)
{
    lentry_t *x = &s->e[i - 1];
    uint32_t j = rslot_find(s, x->route);
    if (!j) {
        if (s->rfree) {
            j = s->rfree;
            s->rfree = s->r[j - 1].hnext;
        } else {
            j = ++s->rused;
        }
        rslot_t *r = &s->r[j - 1];
        uint32_t *b = &s->rbuckets[fmix64(x->route) & s->mask];
        *r = (rslot_t){.route = x->route, .hnext = *b};
        *b = j;
    }
    rslot_t *r = &s->r[j - 1];
    x->rslot = j;
    x->rprev = 0;
    x->rnext = r->head;
    if (r->head)
        s->e[r->head - 1].rprev = i;
    r->head = i;
    if (!r->tail)
        r->tail = i;
    r->count++;
}

/* Unlinks entry i from its route's list; frees the slot with its last entry. */
static void rslot_detach(shard_t *s, uint32_t i)
{
    lentry_t *x = &s->e[i - 1];
    uint32_t j = x->rslot;
    rslot_t *r = &s->r[j - 1];
    if (x->rprev)
        s->e[x->rprev - 1].rnext = x->rnext;
    else
        r->head = x->rnext;
    if (x->rnext)
        s->e[x->rnext - 1].rprev = x->rprev;
    else
        r->tail = x->rprev;
    x->rprev = x->rnext = x->rslot = 0;
    if (--r->count == 0) {
        uint32_t *pp = &s->rbuckets[fmix64(r->route) & s->mask];
        while (*pp != j)
            pp = &s->r[*pp - 1].hnext;
        *pp = r->hnext;
        r->hnext = s->rfree;
        s->rfree = j;
    }
}

/* Moves entry i to the front of its route's list. */
static void rslot_touch(shard_t *s, uint32_t i)
{
    lentry_t *x = &s->e[i - 1];
    rslot_t *r = &s->r[x->rslot - 1];
    if (r->head == i)
        return;
    s->e[x->rprev - 1].rnext = x->rnext;
    if (x->rnext)
        s->e[x->rnext - 1].rprev = x->rprev;
    else
        r->tail = x->rprev;
    x->rprev = 0;
    x->rnext = r->head;
    s->e[r->head - 1].rprev = i;
    r->head = i;
}

/* Removes entry i (index + 1) from its bucket chain, the LRU list and its
 * route, and puts it on the free list. */
static void entry_remove(shard_t *s, uint32_t i)
{
    lentry_t *x = &s->e[i - 1];
    rslot_detach(s, i);
    uint32_t *pp = &s->buckets[entry_key(x->route, x->value) & s->mask];
    while (*pp && *pp != i)
        pp = &s->e[*pp - 1].hnext;
    if (*pp)
        *pp = x->hnext;
    lru_unlink(s, i);
    x->live = false;
    x->hnext = s->free_head;
    s->free_head = i;
    s->len--;
}

static uint32_t find_entry(shard_t *s, uint64_t k, uint64_t route, uint64_t value)
{
    for (uint32_t i = s->buckets[k & s->mask]; i; i = s->e[i - 1].hnext) {
        const lentry_t *x = &s->e[i - 1];
        if (x->route == route && x->value == value)
            return i;
    }
    return 0;
}

static shard_t *shard_of(cr_persist_learn_t *t, uint64_t k)
{
    return &t->shards[(k >> 59) & (SHARDS - 1)];
}

void cr_persist_learn_put(cr_persist_learn_t *t, const cr_persist_learned_t *b, int64_t now_ns,
                          uint32_t route_limit, bool publish)
{
    uint64_t k = entry_key(b->route, b->value);
    shard_t *s = shard_of(t, k);
    /* The route's quota in each shard; ceil, so the whole table rounds up
     * to a multiple of SHARDS the same way. */
    uint32_t quota = route_limit ? (route_limit + SHARDS - 1) / SHARDS : 0;
    bool queue = publish;
    pthread_mutex_lock(&s->mu);
    uint32_t i = find_entry(s, k, b->route, b->value);
    uint32_t j = rslot_find(s, b->route);
    if (j && quota)
        s->r[j - 1].quota = quota;
    if (i) {
        lentry_t *x = &s->e[i - 1];
        if (publish && x->endpoint == b->endpoint && now_ns - x->published_ns < REPUBLISH_NS)
            queue = false;
        lru_unlink(s, i);
        rslot_touch(s, i);
    } else {
        /* At its quota (its own, else the one last given for it): the
         * route gives up its own least recently used entry. */
        while (j && s->r[j - 1].quota && s->r[j - 1].count >= s->r[j - 1].quota) {
            entry_remove(s, s->r[j - 1].tail);
            j = rslot_find(s, b->route);
        }
        if (s->free_head) {
            i = s->free_head;
            s->free_head = s->e[i - 1].hnext;
        } else if (s->used < s->cap) {
            i = ++s->used;
        } else {
            i = s->lru_tail;
            entry_remove(s, i);
            s->free_head = s->e[i - 1].hnext; /* take it back off the free list */
        }
        lentry_t *x = &s->e[i - 1];
        x->route = b->route;
        x->value = b->value;
        x->live = true;
        x->hnext = s->buckets[k & s->mask];
        s->buckets[k & s->mask] = i;
        s->len++;
        rslot_attach(s, i);
        if (quota)
            s->r[x->rslot - 1].quota = quota;
    }
    s->e[i - 1].endpoint = b->endpoint;
    s->e[i - 1].used_ns = now_ns;
    if (queue || !publish)
        s->e[i - 1].published_ns = now_ns;
    lru_push_front(s, i);
    pthread_mutex_unlock(&s->mu);

    if (queue) {
        pthread_mutex_lock(&t->out_mu);
        if (t->out_len < OUTBOX_CAP) {
            t->outbox[(t->out_head + t->out_len) % OUTBOX_CAP] = *b;
            t->out_len++;
        } else {
            t->out_dropped++;
        }
        pthread_mutex_unlock(&t->out_mu);
    }
}

bool cr_persist_learn_get(cr_persist_learn_t *t, uint64_t route, uint64_t value, int64_t now_ns,
                          int64_t max_idle_ns, uint64_t *endpoint)
{
    uint64_t k = entry_key(route, value);
    shard_t *s = shard_of(t, k);
    bool found = false;
    pthread_mutex_lock(&s->mu);
    uint32_t i = find_entry(s, k, route, value);
    if (i) {
        lentry_t *x = &s->e[i - 1];
        if (max_idle_ns > 0 && now_ns - x->used_ns > max_idle_ns) {
            entry_remove(s, i);
        } else {
            x->used_ns = now_ns;
            lru_unlink(s, i);
            lru_push_front(s, i);
            rslot_touch(s, i);
            *endpoint = x->endpoint;
            found = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

uint32_t cr_persist_learn_size(cr_persist_learn_t *t)
{
    uint32_t n = 0;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&t->shards[i].mu);
        n += t->shards[i].len;
        pthread_mutex_unlock(&t->shards[i].mu);
    }
    return n;
}

uint32_t cr_persist_learn_route_size(cr_persist_learn_t *t, uint64_t route)
{
    uint32_t n = 0;
    for (int i = 0; i < SHARDS; i++) {
        shard_t *s = &t->shards[i];
        pthread_mutex_lock(&s->mu);
        uint32_t j = rslot_find(s, route);
        if (j)
            n += s->r[j - 1].count;
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}

size_t cr_persist_learn_take_outbox(cr_persist_learn_t *t, cr_persist_learned_t *out, size_t max)
{
    pthread_mutex_lock(&t->out_mu);
    size_t n = 0;
    while (n < max && t->out_len > 0) {
        out[n++] = t->outbox[t->out_head];
        t->out_head = (t->out_head + 1) % OUTBOX_CAP;
        t->out_len--;
    }
    pthread_mutex_unlock(&t->out_mu);
    return n;
}

int cr_persist_learned_encode(const cr_persist_learned_t *b, char *out, size_t cap)
{
    int n = snprintf(out, cap, "1 %016llx %016llx %016llx %lld", (unsigned long long)b->route,
                     (unsigned long long)b->value, (unsigned long long)b->endpoint,
                     (long long)b->ts_ms);
    if (n < 0 || (size_t)n >= cap)
        return CR_ETOOBIG;
    return n;
}

static int parse_hex64(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    if (end - s < 17 || *s != ' ')
        return -1;
    s++;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++, s++) {
        char c = *s;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    *p = s;
    return 0;
}

int cr_persist_learned_decode(const char *s, size_t len, cr_persist_learned_t *out)
{
    const char *p = s, *end = s + len;
    if (len < 2 || p[0] != '1')
        return CR_EBAD;
    p++;
    if (parse_hex64(&p, end, &out->route) != 0 || parse_hex64(&p, end, &out->value) != 0 ||
        parse_hex64(&p, end, &out->endpoint) != 0)
        return CR_EBAD;
    if (p == end || *p != ' ' || ++p == end)
        return CR_EBAD;
    int64_t ts = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9' || ts > INT64_MAX / 10 - 10)
            return CR_EBAD;
        ts = ts * 10 + (*p - '0');
    }
    out->ts_ms = ts;
    return 0;
}

uint64_t cr_persist_value_hash(const cr_persist_keys_t *k, uint64_t route, const char *value,
                               size_t len)
{
    uint8_t msg[8 + 256 + 6];
    memcpy(msg, "learn", 6);
    store_be64(msg + 6, route);
    if (len > 256)
        len = 256; /* longer session values are rare; their first 256 bytes decide */
    memcpy(msg + 14, value, len);
    uint8_t mac[32];
    cr_persist_hmac(k, 0, msg, 14 + len, mac);
    return load_be64(mac);
}
