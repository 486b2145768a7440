/* common/log.c - formats log lines and writes each with one write(2).
 *
 * Control bytes in a message are escaped: one event is always one line,
 * whatever a route name or instance id from NATS contains.
 */
#include "log.h"

#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic int cr_log_min_level = CR_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

void cr_log_set_level(cr_log_level_t level)
{
    atomic_store(&cr_log_min_level, (int)level);
}

int cr_log_level_parse(const char *name, cr_log_level_t *out)
{
    for (int i = 0; i <= CR_LOG_FATAL; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (cr_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = CR_LOG_WARN;
        return 0;
    }
    return -1;
}

const char *cr_log_level_name(cr_log_level_t level)
{
    return (level >= CR_LOG_DEBUG && level <= CR_LOG_FATAL) ? level_names[level] : "?";
}

/* Copies src[0..n) to out, escaping control bytes (\n, \r, \t, \xHH) so
 * that a value from the network or a NATS message (a route with "\r\n" in
 * it) can never end the line early and forge another. Stops before an
 * escape that would not fit. Returns the bytes written. */
static size_t put_escaped(char *out, size_t cap, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c >= 0x20 && c != 0x7f) {
            if (o + 1 > cap)
                break;
            out[o++] = (char)c;
            continue;
        }
        char esc = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : 0;
        size_t need = esc ? 2 : 4;
        if (o + need > cap)
            break;
        out[o++] = '\\';
        if (esc) {
            out[o++] = esc;
        } else {
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    return o;
}

void cr_log(cr_log_level_t level, const char *component, const char *fmt, ...)
{
    char line[2048];
    char msg[2048];
    int64_t now = cr_now_real_ns();
    time_t secs = (time_t)(now / 1000000000LL);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ %-5s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)((now % 1000000000LL) / 1000), cr_log_level_name(level),
                     component);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t msg_len = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    size_t len = (size_t)n + put_escaped(line + n, sizeof line - (size_t)n - 1, msg, msg_len);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

bool cr_log_ratelimit_allow(cr_log_ratelimit_t *rl, int64_t interval_ns, uint64_t *suppressed_out)
{
    int64_t now = cr_now_mono_ns();
    int64_t next = atomic_load_explicit(&rl->next_allowed_ns, memory_order_relaxed);
    if (now >= next &&
        atomic_compare_exchange_strong(&rl->next_allowed_ns, &next, now + interval_ns)) {
        uint64_t s = atomic_exchange(&rl->suppressed, 0);
        if (suppressed_out)
            *suppressed_out = s;
        return true;
    }
    atomic_fetch_add_explicit(&rl->suppressed, 1, memory_order_relaxed);
    return false;
}
