/* router/persistence.h - session persistence beyond gorouter (issue 5): the pure pieces.
 *
 * - Keys: HMAC-SHA256 keys from a policy's secret and previous_secret (or
 *   the random per-process key when secret is empty).
 * - Endpoint identity: a keyed hash of "addr \0 private_instance_id" (64
 *   bits), so a cookie names an instance without revealing either.
 * - Cookie codec: base64url of {version, flags, identity, first-seen,
 *   last-seen (only with max_idle/max_life), truncated MAC}; verified with
 *   secret then previous_secret; issued with secret only.
 * - Consistent hashing: rendezvous (highest random weight) over a fast
 *   unkeyed endpoint hash, for source_ip and header modes.
 * - Client address: the peer, or with a trusted peer the rightmost
 *   X-Forwarded-For entry that is not a trusted proxy; /N masking.
 * - Learn table: (route, value) -> endpoint hash, sharded, bounded, LRU,
 *   idle expiry, plus its NATS wire format and an outbox for sharing.
 * The policy itself (keys, defaults, parsing) is config/persistence.h.
 * Everything here is callable from any thread; the learn table locks one
 * shard mutex per operation.
 */
#ifndef CR_ROUTER_PERSISTENCE_H
#define CR_ROUTER_PERSISTENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/persistence.h"
#include "registry/endpoint_types.h"

#define CR_PERSIST_LEARN_SUBJECT "crouter.persistence.learn"
#define CR_PERSIST_COOKIE_MAX 48      /* bytes of an encoded cookie value, with room to spare */
#define CR_PERSIST_PREFIX_SEP '~'     /* prefix mode: "<identity>~<app value>" */
#define CR_PERSIST_ID_CHARS 11        /* prefix mode: base64url of the 64-bit identity */

/* --- keys ------------------------------------------------------------------ */

typedef struct cr_persist_keys {
    uint8_t block[2][64];         /* HMAC key blocks: [0] secret, [1] previous_secret */
    bool has_previous;
    bool random;                  /* [0] is the per-process key (secret was empty) */
} cr_persist_keys_t;

/* Prepares keys from p's secrets. Never fails; no allocation. */
void cr_persist_keys_init(cr_persist_keys_t *k, const cr_persist_policy_t *p);

/* HMAC-SHA256(key block idx, msg) into out[32]. No allocation. */
void cr_persist_hmac(const cr_persist_keys_t *k, int idx, const void *msg, size_t len,
                     uint8_t out[32]);

/* --- endpoint identity --------------------------------------------------------- */

/* The keyed identity of ep under key idx (never 0). */
uint64_t cr_persist_identity(const cr_persist_keys_t *k, int idx, const char *addr,
                             const char *instance_id);

/* The endpoint of pool whose identity under key idx is id, or NULL. A scan
 * over the pool comparing each endpoint's cached identity (computed once
 * per endpoint and key, stored in its atomic persist_id[idx]). In a read
 * section. */
cr_endpoint_t *cr_persist_find_identity(const cr_pool_t *pool, const cr_persist_keys_t *k,
                                        int idx, uint64_t id);

/* The identity of ep under key idx, cached in ep. */
uint64_t cr_persist_endpoint_identity(cr_endpoint_t *ep, const cr_persist_keys_t *k, int idx);

/* --- cookie codec ----------------------------------------------------------------- */

typedef struct cr_persist_cookie {
    uint64_t id;                  /* endpoint identity */
    uint32_t first_seen_s;        /* epoch seconds; with has_times */
    uint32_t last_seen_s;
    bool has_times;
    uint8_t key_idx;              /* decode: which key verified it (0 secret, 1 previous) */
} cr_persist_cookie_t;

/* Writes the base64url value (no padding) into out. Returns its length or
 * CR_ETOOBIG. The MAC is made with key 0 and the identity must be the one
 * under key 0. */
int cr_persist_cookie_encode(const cr_persist_keys_t *k, const cr_persist_cookie_t *c, char *out,
                             size_t cap);

/* Decodes and verifies v[0..len). Returns 0, or CR_EBAD when malformed or
 * when neither key's MAC matches (a forged, tampered or foreign value). */
int cr_persist_cookie_decode(const cr_persist_keys_t *k, const char *v, size_t len,
                             cr_persist_cookie_t *out);

/* Whether a genuine cookie is past max_idle or max_life at now_s. */
bool cr_persist_cookie_expired(const cr_persist_cookie_t *c, const cr_persist_policy_t *p,
                               uint32_t now_s);

/* Prefix mode: writes the 11-character identity token (base64url of the
 * 64-bit identity; authenticated by being an identity at all: a guessed
 * value matches no endpoint but with 2^-64 odds). */
void cr_persist_id_token(uint64_t id, char out[CR_PERSIST_ID_CHARS]);
/* Parses an 11-character token. 0 or CR_EBAD. */
int cr_persist_id_token_parse(const char *s, size_t len, uint64_t *id);

/* --- hashing ------------------------------------------------------------------------ */

/* A fast 64-bit hash (not keyed; for tables and rendezvous). */
uint64_t cr_persist_hash(const void *data, size_t len, uint64_t seed);

/* The unkeyed rendezvous hash of ep (addr + instance id), cached in ep. */
uint64_t cr_persist_endpoint_hash(cr_endpoint_t *ep);

/* Rendezvous weight of endpoint hash eh for key hash kh. */
uint64_t cr_persist_hrw_score(uint64_t kh, uint64_t eh);

/* The index in hashes[0..n) with the highest weight for kh; n must be > 0. */
size_t cr_persist_hrw_index(const uint64_t *hashes, size_t n, uint64_t kh);

/* --- client address ------------------------------------------------------------------ */

/* Parses a textual IPv4/IPv6 address (IPv6 may be bracketed) into 16
 * bytes, IPv4 mapped. 0 or CR_EBAD. */
int cr_persist_parse_ip(const char *s, size_t len, uint8_t out[16]);

/* The client address for source-IP hashing: peer, unless peer is in
 * p->trusted_proxies; then the X-Forwarded-For entries (values[0..n), each
 * a comma list, in header order) are walked from the right and the first
 * one that is not a trusted proxy is the client; an unparsable entry stops
 * the walk at the last trusted address. */
void cr_persist_client_addr(const cr_persist_policy_t *p, const uint8_t peer[16],
                            const char *const *values, const size_t *lens, size_t n,
                            uint8_t out[16]);

/* Hash key of addr masked to /ip_prefix (0..32) when it is IPv4 (mapped,
 * ::ffff:0:0/96), else to /ip6_prefix (0..128; see
 * cr_persist_policy_ip6_prefix). */
uint64_t cr_persist_ip_key(const uint8_t addr[16], unsigned ip_prefix, unsigned ip6_prefix);

/* --- learn table ------------------------------------------------------------------------ */

typedef struct cr_persist_learn cr_persist_learn_t;

/* One learned binding, also the NATS message body. */
typedef struct cr_persist_learned {
    uint64_t route;               /* cr_persist_hash of the route key */
    uint64_t value;               /* keyed hash of the session value (never the value) */
    uint64_t endpoint;            /* cr_persist_endpoint_hash of the instance */
    int64_t ts_ms;                /* epoch ms when learned */
} cr_persist_learned_t;

/* A table of at most capacity entries (>= 16) over 16 shards. */
cr_persist_learn_t *cr_persist_learn_create(uint32_t capacity);
void cr_persist_learn_destroy(cr_persist_learn_t *t);    /* accepts NULL */

/* Inserts or refreshes route/value -> endpoint at now_ns (monotonic).
 * route_limit is the route's table_size: the route keeps at most that many
 * entries (rounded up to a multiple of 16: ceil(route_limit/16) per shard),
 * evicting its own least recently used one beyond; 0 = the limit last
 * given for the route here (a binding from another router), or none. A
 * route's limit above the table's capacity is bounded by the capacity. When
 * the shard is full its least recently used entry (any route) goes. With
 * publish, the binding is also queued for the other routers (outbox,
 * bounded: dropped when full), except when it only repeats the entry's
 * endpoint within a second of the last time it was queued or received. */
void cr_persist_learn_put(cr_persist_learn_t *t, const cr_persist_learned_t *b, int64_t now_ns,
                          uint32_t route_limit, bool publish);

/* Looks up route/value; an entry idle for longer than max_idle_ns (0 = no
 * limit) is removed and not returned. A hit refreshes its use time and LRU
 * position. Returns true with *endpoint. */
bool cr_persist_learn_get(cr_persist_learn_t *t, uint64_t route, uint64_t value, int64_t now_ns,
                          int64_t max_idle_ns, uint64_t *endpoint);

/* Entries held now, in all and for one route. */
uint32_t cr_persist_learn_size(cr_persist_learn_t *t);
uint32_t cr_persist_learn_route_size(cr_persist_learn_t *t, uint64_t route);

/* Moves up to max queued bindings into out; returns how many. */
size_t cr_persist_learn_take_outbox(cr_persist_learn_t *t, cr_persist_learned_t *out, size_t max);

/* Wire format: "1 <route> <value> <endpoint> <ts_ms>" (hex, hex, hex,
 * decimal). Encode returns the length (< cap) or CR_ETOOBIG; decode
 * returns 0 or CR_EBAD. */
int cr_persist_learned_encode(const cr_persist_learned_t *b, char *out, size_t cap);
int cr_persist_learned_decode(const char *s, size_t len, cr_persist_learned_t *out);

/* The keyed hash of a session value for route (learn mode). */
uint64_t cr_persist_value_hash(const cr_persist_keys_t *k, uint64_t route, const char *value,
                               size_t len);

/* The endpoint of pool whose rendezvous hash is h, or NULL (scan over
 * cached hashes). In a read section. */
cr_endpoint_t *cr_persist_find_hash(const cr_pool_t *pool, uint64_t h);

#endif
