/* common/uuid.c - per-thread xoshiro256** and UUIDv4 formatting. */
#include "uuid.h"

#include <stdbool.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static _Thread_local uint64_t rng_state[4];
static _Thread_local bool rng_seeded;

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void seed(void)
{
    if (getrandom(rng_state, sizeof rng_state, 0) != (ssize_t)sizeof rng_state) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rng_state[0] = (uint64_t)ts.tv_nsec ^ 0x9E3779B97F4A7C15ULL;
        rng_state[1] = (uint64_t)ts.tv_sec * 0xBF58476D1CE4E5B9ULL;
        rng_state[2] = (uint64_t)(uintptr_t)&rng_state ^ 0x94D049BB133111EBULL;
        rng_state[3] = 0x2545F4914F6CDD1DULL;
    }
    rng_seeded = true;
}

uint64_t cr_random_u64(void)
{
    if (!rng_seeded)
        seed();
    uint64_t *s = rng_state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void cr_uuid4(char out[CR_UUID_STR_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    uint64_t a = cr_random_u64(), c = cr_random_u64();
    memcpy(b, &a, 8);
    memcpy(b + 8, &c, 8);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}
