/* common/uuid.h - random version-4 UUIDs for request ids and router ids.
 *
 * Fast enough for one per request: a per-thread xoshiro256** generator
 * seeded from getrandom(2). Not for secrets (use OpenSSL's RAND_bytes).
 */
#ifndef CR_COMMON_UUID_H
#define CR_COMMON_UUID_H

#include <stdint.h>

#define CR_UUID_STR_LEN 36

/* Writes 36 characters plus a NUL into out. Any thread. */
void cr_uuid4(char out[CR_UUID_STR_LEN + 1]);

/* A fast per-thread random 64-bit number (same generator). */
uint64_t cr_random_u64(void);

#endif
