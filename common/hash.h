/* common/hash.h - FNV-1a, the hash of short keys in the registry and router.
 *
 * Keys here are short (instance ids, "10.0.0.1:61000", socket addresses,
 * interned strings) and hash tables are powers of two, so callers take
 * cr_hash_short(): FNV-1a with its high bits folded into the low ones.
 * cr_fnv1a32() is the raw step for keys made of several parts.
 */
#ifndef CROUTER_COMMON_HASH_H
#define CROUTER_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

#define CR_FNV1A32_SEED 2166136261u

/* Continues FNV-1a from h (CR_FNV1A32_SEED to start) over data[0, n). */
static inline uint32_t cr_fnv1a32(uint32_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* For power-of-two tables: the high bits folded into the low ones. */
static inline uint32_t cr_hash_fold(uint32_t h)
{
    return h ^ (h >> 15);
}

static inline uint32_t cr_hash_short(const void *data, size_t n)
{
    return cr_hash_fold(cr_fnv1a32(CR_FNV1A32_SEED, data, n));
}

#endif
