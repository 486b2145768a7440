/* registry/intern.c - one shared copy of the strings many endpoints repeat.
 *
 * Every instance of an app registers the same app guid, tags, availability
 * zone and isolation segment, instances on one cell share its host address,
 * and private_instance_index is "0", "1", ... So endpoints hold a counted
 * reference to a shared copy of those strings instead of their own (see
 * cr_registry__endpoint_create); the last release frees the copy. Strings
 * unique to an endpoint (addr, private_instance_id) are not interned: the
 * entry's header would cost more than the copy.
 *
 * A chained hash table behind one mutex, doubled when it holds more entries
 * than buckets. Threads: writers intern (under the registry mutex); release
 * runs wherever an endpoint is freed: liburcu's call_rcu thread, or, rarely,
 * a worker that held the last reference (it takes this mutex for a probe).
 * Lookups never come here. Owns: the entries and the bucket array.
 */
#include "registry/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "common/hash.h"
#include "common/xalloc.h"

typedef struct istr {
    struct istr *next;
    uint32_t hash;
    uint32_t refs; /* under mu */
    char s[];
} istr_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static istr_t **buckets; /* owned; NULL until the first string */
static size_t n_buckets; /* a power of two */
static size_t n_entries;

static void grow(void)
{
    size_t nb = n_buckets ? n_buckets * 2 : 256;
    istr_t **nt = cr_xcalloc(nb, sizeof *nt);
    for (size_t i = 0; i < n_buckets; i++) {
        for (istr_t *e = buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = nt[e->hash & (nb - 1)];
            nt[e->hash & (nb - 1)] = e;
        }
    }
    free(buckets);
    buckets = nt;
    n_buckets = nb;
}

/* mu held. */
static const char *intern_locked(const char *s)
{
    size_t n = strlen(s);
    uint32_t h = cr_hash_short(s, n);
    if (n_entries >= n_buckets)
        grow();
    istr_t **slot = &buckets[h & (n_buckets - 1)];
    for (istr_t *e = *slot; e; e = e->next) {
        if (e->hash == h && strcmp(e->s, s) == 0) { /* not memcmp: e->s may be shorter */
            e->refs++;
            return e->s;
        }
    }
    istr_t *e = cr_xmalloc(sizeof *e + n + 1);
    e->hash = h;
    e->refs = 1;
    memcpy(e->s, s, n + 1);
    e->next = *slot;
    *slot = e;
    n_entries++;
    return e->s;
}

/* mu held. */
static void release_locked(const char *s)
{
    istr_t *e = CR_CONTAINER_OF(s, istr_t, s);
    if (--e->refs > 0)
        return;
    for (istr_t **p = &buckets[e->hash & (n_buckets - 1)]; *p; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            break;
        }
    }
    free(e);
    if (--n_entries == 0) {
        free(buckets);
        buckets = NULL;
        n_buckets = 0;
    }
}

void cr_registry__intern(const char *const *in, const char **out, size_t n)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] ? intern_locked(in[i]) : NULL;
    pthread_mutex_unlock(&mu);
}

void cr_registry__intern_release(const char *const *s, size_t n)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n; i++) {
        if (s[i])
            release_locked(s[i]);
    }
    pthread_mutex_unlock(&mu);
}

size_t cr_registry__intern_count(void)
{
    pthread_mutex_lock(&mu);
    size_t n = n_entries;
    pthread_mutex_unlock(&mu);
    return n;
}
