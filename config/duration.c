/* config/duration.c - Go-style durations and balancing algorithm names.
 *
 * cr_duration_parse() follows Go's time.ParseDuration exactly, so a gorouter
 * config means the same here: an optional sign, then one or more
 * "<number><unit>" pairs ("1h30m", "1.5h", ".5s"), or a lone "0". Numbers are
 * accumulated as unsigned 64-bit integers and every step checks for overflow
 * against 2^63 (2^63 itself only for a negative result), so a fuzzed input
 * cannot wrap around. Pure functions; any thread. Owns nothing.
 */
#include "config/config.h"

#include "common/defs.h"

#include <string.h>

#define MAX_ABS ((uint64_t)1 << 63)

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Consumes leading decimal digits into *x. Returns -1 on overflow. */
static int leading_int(const char **s, uint64_t *x)
{
    uint64_t v = 0;
    const char *p = *s;
    for (; is_digit(*p); p++) {
        if (v > MAX_ABS / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > MAX_ABS)
            return -1;
    }
    *s = p;
    *x = v;
    return 0;
}

/* Consumes the digits after a '.'; digits past what fits are skipped, as Go
 * does, since they cannot change the result by a whole nanosecond. */
static void leading_fraction(const char **s, uint64_t *x, double *scale)
{
    uint64_t v = 0;
    double sc = 1;
    int overflow = 0;
    const char *p = *s;
    for (; is_digit(*p); p++) {
        if (overflow)
            continue;
        if (v > (MAX_ABS - 1) / 10) {
            overflow = 1;
            continue;
        }
        uint64_t y = v * 10 + (uint64_t)(*p - '0');
        if (y > MAX_ABS) {
            overflow = 1;
            continue;
        }
        v = y;
        sc *= 10;
    }
    *s = p;
    *x = v;
    *scale = sc;
}

static const struct {
    const char *name;
    uint64_t ns;
} units[] = {
    {"ns", 1},
    {"us", 1000},
    {"\xc2\xb5s", 1000}, /* U+00B5 micro sign */
    {"\xce\xbcs", 1000}, /* U+03BC Greek small letter mu */
    {"ms", 1000000},
    {"s", 1000000000},
    {"m", 60ULL * 1000000000},
    {"h", 3600ULL * 1000000000},
};

static int unit_ns(const char *u, size_t len, uint64_t *out)
{
    for (size_t i = 0; i < CR_ARRAY_LEN(units); i++) {
        if (strlen(units[i].name) == len && memcmp(units[i].name, u, len) == 0) {
            *out = units[i].ns;
            return 0;
        }
    }
    return -1;
}

int cr_duration_parse(const char *s, int64_t *out_ns)
{
    if (!s || !out_ns)
        return CR_EBAD;
    int neg = 0;
    if (*s == '-' || *s == '+') {
        neg = *s == '-';
        s++;
    }
    if (strcmp(s, "0") == 0) {
        *out_ns = 0;
        return 0;
    }
    if (*s == '\0')
        return CR_EBAD;

    uint64_t d = 0;
    while (*s) {
        if (!(*s == '.' || is_digit(*s)))
            return CR_EBAD;
        const char *start = s;
        uint64_t v = 0, f = 0;
        double scale = 1;
        if (leading_int(&s, &v) != 0)
            return CR_EBAD;
        int pre = s != start;
        int post = 0;
        if (*s == '.') {
            s++;
            const char *fstart = s;
            leading_fraction(&s, &f, &scale);
            post = s != fstart;
        }
        if (!pre && !post)
            return CR_EBAD; /* "." or ".s" */

        const char *ustart = s;
        while (*s && *s != '.' && !is_digit(*s))
            s++;
        uint64_t unit;
        if (s == ustart || unit_ns(ustart, (size_t)(s - ustart), &unit) != 0)
            return CR_EBAD; /* missing or unknown unit */

        if (v > MAX_ABS / unit)
            return CR_EBAD;
        v *= unit;
        if (f > 0) {
            /* Go computes this in float64 too; the result is < unit. */
            v += (uint64_t)((double)f * ((double)unit / scale));
            if (v > MAX_ABS)
                return CR_EBAD;
        }
        d += v;
        if (d > MAX_ABS)
            return CR_EBAD;
    }
    if (neg) {
        *out_ns = d == MAX_ABS ? INT64_MIN : -(int64_t)d;
        return 0;
    }
    if (d > MAX_ABS - 1)
        return CR_EBAD;
    *out_ns = (int64_t)d;
    return 0;
}

int cr_lb_algo_parse(const char *s, cr_lb_algo_t *out)
{
    if (!s || !out)
        return CR_EBAD;
    if (strcmp(s, "round-robin") == 0) {
        *out = CR_LB_ROUND_ROBIN;
        return 0;
    }
    if (strcmp(s, "least-connection") == 0) {
        *out = CR_LB_LEAST_CONNECTION;
        return 0;
    }
    return CR_EBAD;
}

const char *cr_lb_algo_name(cr_lb_algo_t algo)
{
    switch (algo) {
    case CR_LB_ROUND_ROBIN:
        return "round-robin";
    case CR_LB_LEAST_CONNECTION:
        return "least-connection";
    }
    return "unknown";
}
