/* common/log.h - one-line structured logging shared by every module.
 *
 * A line is: timestamp, level, component, message, then key=value fields the
 * caller formats into the message. Thread-safe: each line is one write(2) to
 * stderr. Never log passwords, Authorization headers or cookie values.
 */
#ifndef CR_COMMON_LOG_H
#define CR_COMMON_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    CR_LOG_DEBUG = 0,
    CR_LOG_INFO,
    CR_LOG_WARN,
    CR_LOG_ERROR,
    CR_LOG_FATAL,
} cr_log_level_t;

extern _Atomic int cr_log_min_level;

void cr_log_set_level(cr_log_level_t level);
/* Parses "debug", "info", "warn"/"warning", "error", "fatal". 0 or -1. */
int cr_log_level_parse(const char *name, cr_log_level_t *out);
const char *cr_log_level_name(cr_log_level_t level);

static inline bool cr_log_enabled(cr_log_level_t level)
{
    return (int)level >= atomic_load_explicit(&cr_log_min_level, memory_order_relaxed);
}

void cr_log(cr_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CR_LOG(level, component, ...)                                  \
    do {                                                               \
        if (cr_log_enabled(level))                                     \
            cr_log(level, component, __VA_ARGS__);                     \
    } while (0)
#define CR_DEBUG(component, ...) CR_LOG(CR_LOG_DEBUG, component, __VA_ARGS__)
#define CR_INFO(component, ...)  CR_LOG(CR_LOG_INFO, component, __VA_ARGS__)
#define CR_WARN(component, ...)  CR_LOG(CR_LOG_WARN, component, __VA_ARGS__)
#define CR_ERROR(component, ...) CR_LOG(CR_LOG_ERROR, component, __VA_ARGS__)

/* A rate limiter for log lines about repeated events (bad NATS messages,
 * failing backends): at most one line per interval; the rest are counted and
 * reported with the next allowed line. Lock-free; any thread. Zero-init. */
typedef struct {
    _Atomic int64_t next_allowed_ns;
    _Atomic uint64_t suppressed;
} cr_log_ratelimit_t;

/* True when a line may be logged now; *suppressed_out gets how many were
 * skipped since the last allowed line. */
bool cr_log_ratelimit_allow(cr_log_ratelimit_t *rl, int64_t interval_ns, uint64_t *suppressed_out);

#endif
