/* common/defs.h - the error vocabulary and small macros every folder shares.
 *
 * Success is 0; failures are negative errno-style codes. Parsers return the
 * bytes they consumed (>= 0), CR_AGAIN when they need more input, or CR_EBAD
 * for malformed input. Header-only; depends on nothing else in the tree.
 */
#ifndef CR_COMMON_DEFS_H
#define CR_COMMON_DEFS_H

#include <stddef.h>
#include <stdint.h>

#define CR_AGAIN   (-1000) /* incomplete input: call again with more bytes */
#define CR_EBAD    (-1001) /* malformed input */
#define CR_ETOOBIG (-1002) /* input over a configured limit */

#define CR_CONTAINER_OF(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#define CR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define CR_LIKELY(x)   __builtin_expect(!!(x), 1)
#define CR_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define CR_NS_PER_MS  1000000LL
#define CR_NS_PER_SEC 1000000000LL

#endif
