/* router/access_log.c - gorouter-format access log, written off the hot path.
 *
 * Line format (gorouter accesslog/schema/access_log_record.go, with the
 * fields issue 3 lists):
 *   <host> - [<2006-01-02T15:04:05.000000000Z>] "<METHOD> <uri> <proto>"
 *   <status|"-"> <req bytes> <resp bytes> "<referer>" "<user agent>"
 *   "<client addr>" "<backend addr>" x_forwarded_for:"…" x_forwarded_proto:"…"
 *   vcap_request_id:"…" response_time:<s.6f> gorouter_time:<s.6f>
 *   app_id:"…" app_index:"…" instance_id:"…" x_cf_routererror:"…"\n
 * Quoted values use Go's strconv.Quote escaping (\" \\ \a \b \f \n \r \t
 * \v, \xNN for other control bytes, DEL and invalid UTF-8, \u00XX for C1
 * controls and the common invisible format/space characters; other valid
 * UTF-8 passes through). Empty values are "-"; a negative or NaN time is
 * "-". The host is written bare, as gorouter does, but with the same
 * escaping so no byte can break the line. The timestamp is UTC (gorouter
 * prints local time with a literal Z); its seconds part is formatted once
 * per second per thread.
 *
 * Queue: workers format into a per-thread buffer, then copy the line into one
 * byte ring under a mutex held only for the memcpy. When the ring lacks room
 * the line is dropped and counted; a slow disk never stalls a worker. One
 * writer thread writes the ring's committed bytes with writev(2) outside the
 * lock. It sleeps on a condition variable when the ring is empty (the first
 * line after idle wakes it) and otherwise naps briefly between batches so
 * that busy workers never pay for a wake-up; a ring more than half full
 * wakes it at once.
 *
 * Reopen (SIGHUP, after rotation): the caller asks and waits; the writer
 * first writes what was queued before the request to the old file, then
 * closes it and opens the path again (O_APPEND|O_CREAT, 0644). Close writes
 * everything queued, joins the writer and frees.
 *
 * Threads: any thread formats and queues; the writer thread owns the fd.
 * Owns: the ring, the path, the fd, the writer thread.
 */
#include "router/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/defs.h"
#include "common/log.h"
#include "common/xalloc.h"

#define RING_BYTES (4u << 20)         /* queue capacity: about 15k typical lines */
#define LINE_MAX_BYTES (32u << 10)    /* longest line; longer fields are truncated */
#define BATCH_NAP_NS (5 * CR_NS_PER_MS)

struct cr_access_log {
    pthread_mutex_t mu;
    pthread_cond_t wake;          /* writer: lines, reopen or stop */
    pthread_cond_t reopened;      /* callers of reopen: it is done */
    char *ring;                   /* owned; RING_BYTES */
    uint64_t head;                /* bytes ever committed (under mu) */
    uint64_t tail;                /* bytes ever written out (under mu) */
    bool writer_idle;             /* waiting for the first line (under mu) */
    bool stop;
    uint64_t reopen_asked;        /* generation counters (under mu) */
    uint64_t reopen_done;
    int reopen_rc;
    int fd;                       /* writer thread only, after open */
    char *path;                   /* owned */
    pthread_t writer;
    _Atomic uint64_t dropped;
    cr_log_ratelimit_t write_err_rl;
};

/* --- formatting --------------------------------------------------------- */

/* Truncation keeps the line whole and every field present: each field but
 * the URI is cut at FIELD_CAP output bytes, and while a field is written,
 * room stays reserved for the worst case of every later field (4 output
 * bytes per input byte, at most FIELD_CAP) plus the fixed text. The URI
 * takes what is left. */
#define FIELD_CAP 1024
#define FIXED_RESERVE 400             /* keys, separators, numbers, '\n' */

typedef struct fmt {
    char *p;
    char *end;                    /* one byte before the real end: room for '\n' */
    size_t reserve;               /* bytes kept for the fields after the current one */
} fmt_t;

static size_t room(const fmt_t *f)
{
    return (size_t)(f->end - f->p);
}

static void raw(fmt_t *f, const char *s, size_t n)
{
    if (n > room(f))
        n = room(f);
    memcpy(f->p, s, n);
    f->p += n;
}

#define RAW_LIT(f, lit) raw((f), (lit), sizeof(lit) - 1)

static void raw_uint(fmt_t *f, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    raw(f, tmp + i, sizeof(tmp) - i);
}

static const char hexdig[] = "0123456789abcdef";

/* Length of a valid UTF-8 sequence at s (of at most n bytes) and its code
 * point, or 0 when it is not valid (overlong, surrogate, out of range). */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v, min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        v = c & 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        v = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        v = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* Code points Go's unicode.IsPrint rejects that are likely in headers: C1
 * controls, non-ASCII spaces and invisible format characters. */
static bool unprintable(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0xa0) || cp == 0xad || (cp >= 0x2000 && cp <= 0x200f) ||
           (cp >= 0x2028 && cp <= 0x202f) || (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 ||
           cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb);
}

/* Escapes s into [f->p, limit) as strconv.Quote does, without the quotes.
 * Stops before an escape that would not fit whole. */
static void escape(fmt_t *f, const char *s, size_t n, const char *limit)
{
    const unsigned char *u = (const unsigned char *)s;
    char *p = f->p;
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        char esc[10];
        size_t elen = 0, consumed = 1;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            /* A run of bytes that need no escape: one copy. */
            size_t j = i + 1;
            while (j < n && u[j] >= 0x20 && u[j] < 0x7f && u[j] != '"' && u[j] != '\\')
                j++;
            size_t run = j - i;
            if (run > (size_t)(limit - p))
                run = (size_t)(limit - p);
            memcpy(p, u + i, run);
            p += run;
            i += run;
            if (i < j)
                break;
            continue;
        }
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            elen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            static const char named[] = "\a\b\f\n\r\t\v";
            static const char letter[] = "abfnrtv";
            const char *k = c ? memchr(named, c, sizeof(named) - 1) : NULL;
            esc[0] = '\\';
            if (k) {
                esc[1] = letter[k - named];
                elen = 2;
            } else {
                esc[1] = 'x';
                esc[2] = hexdig[c >> 4];
                esc[3] = hexdig[c & 15];
                elen = 4;
            }
        } else {
            uint32_t cp;
            size_t len = utf8_seq(u + i, n - i, &cp);
            if (len == 0) {
                esc[0] = '\\';
                esc[1] = 'x';
                esc[2] = hexdig[c >> 4];
                esc[3] = hexdig[c & 15];
                elen = 4;
            } else if (unprintable(cp)) {
                esc[0] = '\\';
                esc[1] = 'u';
                for (int d = 0; d < 4; d++)
                    esc[2 + d] = hexdig[(cp >> (12 - 4 * d)) & 15];
                elen = 6;
                consumed = len;
            } else {
                memcpy(esc, u + i, len);
                elen = len;
                consumed = len;
            }
        }
        if ((size_t)(limit - p) < elen)
            break;
        memcpy(p, esc, elen);
        p += elen;
        i += consumed;
    }
    f->p = p;
}

static bool empty(cr_slice_t s)
{
    return s.ptr == NULL || s.len == 0;
}

/* What a field may take at most, quotes included. */
static size_t need(cr_slice_t s)
{
    size_t n = empty(s) ? 1 : (s.len > FIELD_CAP / 4 ? FIELD_CAP : s.len * 4);
    return n + 2;
}

/* Where the current field must stop: FIELD_CAP bytes on (unless
 * unlimited), keep bytes before the end, and never into the reserve. */
static const char *field_limit(const fmt_t *f, size_t keep, bool unlimited)
{
    size_t avail = room(f);
    size_t hold = f->reserve + keep;
    size_t n = avail > hold ? avail - hold : 0;
    if (!unlimited && n > FIELD_CAP)
        n = FIELD_CAP;
    return f->p + n;
}

/* Releases this field's share of the reserve before it is written. */
static void take(fmt_t *f, cr_slice_t s)
{
    size_t n = need(s);
    f->reserve = f->reserve > n ? f->reserve - n : 0;
}

/* "value" escaped, or "-" when empty; then the separator. */
static void quoted(fmt_t *f, cr_slice_t s, const char *sep)
{
    take(f, s);
    if (empty(s)) {
        RAW_LIT(f, "\"-\"");
    } else if (room(f) >= 2) {
        *f->p++ = '"';
        escape(f, s.ptr, s.len, field_limit(f, 1, false));
        *f->p++ = '"';
    }
    raw(f, sep, strlen(sep));
}

static void bare(fmt_t *f, cr_slice_t s, bool unlimited)
{
    take(f, s);
    if (empty(s))
        RAW_LIT(f, "-");
    else
        escape(f, s.ptr, s.len, field_limit(f, 0, unlimited));
}

static void seconds(fmt_t *f, double v)
{
    if (!(v >= 0) || isinf(v)) {
        RAW_LIT(f, "\"-\"");
    } else if (v < 1e9) {
        /* Integer microseconds: what %.6f prints, without printf's cost. */
        uint64_t us = (uint64_t)(v * 1e6 + 0.5);
        raw_uint(f, us / 1000000);
        char frac[7];
        uint64_t r = us % 1000000;
        frac[0] = '.';
        for (int i = 6; i >= 1; i--) {
            frac[i] = (char)('0' + r % 10);
            r /= 10;
        }
        raw(f, frac, 7);
    } else {
        char tmp[64];
        int n = snprintf(tmp, sizeof(tmp), "%.6f", v);
        if (n > 0)
            raw(f, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
    }
    RAW_LIT(f, " ");
}

/* "2006-01-02T15:04:05.000000000Z" for a wall-clock time in ns. */
static void timestamp(fmt_t *f, int64_t ns)
{
    static __thread int64_t cached_sec = INT64_MIN;
    static __thread char cached[20];
    if (ns < 0)
        ns = 0;
    int64_t sec = ns / CR_NS_PER_SEC;
    uint32_t frac = (uint32_t)(ns % CR_NS_PER_SEC);
    if (sec != cached_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        char tmp[64];
        snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d", (tm.tm_year + 1900) % 10000,
                 (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
                 tm.tm_sec % 100);
        memcpy(cached, tmp, 19);
        cached_sec = sec;
    }
    char buf[31];
    memcpy(buf, cached, 19);
    buf[19] = '.';
    for (int i = 28; i >= 20; i--) {
        buf[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    buf[29] = 'Z';
    raw(f, buf, 30);
}

size_t cr_access_log_format(const cr_access_record_t *rec, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    fmt_t f = {out, out + cap - 1, FIXED_RESERVE};
    const cr_slice_t *fields[] = {
        &rec->host, &rec->method, &rec->uri, &rec->proto, &rec->referer, &rec->user_agent,
        &rec->client_addr, &rec->backend_addr, &rec->x_forwarded_for, &rec->x_forwarded_proto,
        &rec->request_id, &rec->app_id, &rec->app_index, &rec->instance_id, &rec->router_error,
    };
    for (size_t i = 0; i < CR_ARRAY_LEN(fields); i++)
        f.reserve += need(*fields[i]);

    bare(&f, rec->host, false);
    RAW_LIT(&f, " - [");
    timestamp(&f, rec->received_at_real_ns);
    RAW_LIT(&f, "] \"");
    bare(&f, rec->method, false);
    RAW_LIT(&f, " ");
    bare(&f, rec->uri, true);
    RAW_LIT(&f, " ");
    bare(&f, rec->proto, false);
    RAW_LIT(&f, "\" ");
    if (rec->status > 0)
        raw_uint(&f, (uint64_t)rec->status);
    else
        RAW_LIT(&f, "\"-\"");
    RAW_LIT(&f, " ");
    raw_uint(&f, rec->request_bytes);
    RAW_LIT(&f, " ");
    raw_uint(&f, rec->response_bytes);
    RAW_LIT(&f, " ");
    quoted(&f, rec->referer, " ");
    quoted(&f, rec->user_agent, " ");
    quoted(&f, rec->client_addr, " ");
    quoted(&f, rec->backend_addr, " x_forwarded_for:");
    quoted(&f, rec->x_forwarded_for, " x_forwarded_proto:");
    quoted(&f, rec->x_forwarded_proto, " vcap_request_id:");
    quoted(&f, rec->request_id, " response_time:");
    seconds(&f, rec->response_time_s);
    RAW_LIT(&f, "gorouter_time:");
    seconds(&f, rec->gorouter_time_s);
    RAW_LIT(&f, "app_id:");
    quoted(&f, rec->app_id, " app_index:");
    quoted(&f, rec->app_index, " instance_id:");
    quoted(&f, rec->instance_id, " x_cf_routererror:");
    quoted(&f, rec->router_error, "");
    *f.p++ = '\n'; /* f.end kept this byte free */
    return (size_t)(f.p - out);
}

/* --- queue and writer ---------------------------------------------------- */

static int open_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

/* Writes ring bytes [from, to) (ring offsets as totals) to fd. */
static void write_out(cr_access_log_t *log, uint64_t from, uint64_t to)
{
    while (from < to) {
        size_t off = (size_t)(from % RING_BYTES);
        size_t n = (size_t)(to - from);
        struct iovec iov[2];
        int iovcnt = 1;
        iov[0].iov_base = log->ring + off;
        if (off + n > RING_BYTES) {
            iov[0].iov_len = RING_BYTES - off;
            iov[1].iov_base = log->ring;
            iov[1].iov_len = n - iov[0].iov_len;
            iovcnt = 2;
        } else {
            iov[0].iov_len = n;
        }
        ssize_t w = log->fd >= 0 ? writev(log->fd, iov, iovcnt) : -1;
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            uint64_t suppressed = 0;
            int err = log->fd >= 0 ? errno : EBADF;
            if (cr_log_ratelimit_allow(&log->write_err_rl, 10 * CR_NS_PER_SEC, &suppressed))
                CR_ERROR("access_log", "write failed, lines lost path=%s error=\"%s\" suppressed=%llu",
                         log->path, strerror(err), (unsigned long long)suppressed);
            return;
        }
        from += (uint64_t)w;
    }
}

static void do_reopen(cr_access_log_t *log, int *rc_out)
{
    int fd = open_path(log->path);
    if (fd < 0) {
        CR_ERROR("access_log", "reopen failed, keeping the old file path=%s error=\"%s\"",
                 log->path, strerror(-fd));
        *rc_out = fd;
        return;
    }
    if (log->fd >= 0)
        close(log->fd);
    log->fd = fd;
    *rc_out = 0;
}

static void timed_nap(cr_access_log_t *log)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += BATCH_NAP_NS;
    if (ts.tv_nsec >= CR_NS_PER_SEC) {
        ts.tv_sec++;
        ts.tv_nsec -= CR_NS_PER_SEC;
    }
    pthread_cond_timedwait(&log->wake, &log->mu, &ts);
}

static void *writer_main(void *arg)
{
    cr_access_log_t *log = arg;
    pthread_mutex_lock(&log->mu);
    for (;;) {
        while (log->head == log->tail && !log->stop && log->reopen_asked == log->reopen_done) {
            log->writer_idle = true;
            pthread_cond_wait(&log->wake, &log->mu);
            log->writer_idle = false;
        }
        uint64_t from = log->tail, to = log->head;
        uint64_t reopen_gen = log->reopen_asked;
        bool reopen = reopen_gen != log->reopen_done;
        bool stopping = log->stop;
        pthread_mutex_unlock(&log->mu);

        write_out(log, from, to);
        int rc = 0;
        if (reopen)
            do_reopen(log, &rc);

        pthread_mutex_lock(&log->mu);
        log->tail = to;
        if (reopen) {
            log->reopen_rc = rc;
            log->reopen_done = reopen_gen;
            pthread_cond_broadcast(&log->reopened);
        }
        if (stopping && log->head == log->tail)
            break;
        /* Let a batch gather unless someone waits or the ring fills. */
        if (!log->stop && log->reopen_asked == log->reopen_done && to != from &&
            log->head - log->tail < RING_BYTES / 2)
            timed_nap(log);
    }
    pthread_mutex_unlock(&log->mu);
    return NULL;
}

cr_access_log_t *cr_access_log_open(const char *path, char *err, size_t err_cap)
{
    int fd = open_path(path);
    if (fd < 0) {
        if (err && err_cap)
            snprintf(err, err_cap, "access_log.file: cannot open %s: %s", path, strerror(-fd));
        return NULL;
    }
    cr_access_log_t *log = cr_xcalloc(1, sizeof(*log));
    log->fd = fd;
    log->path = cr_xstrdup(path);
    log->ring = cr_xmalloc(RING_BYTES);
    pthread_mutex_init(&log->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&log->reopened, NULL);
    int rc = pthread_create(&log->writer, NULL, writer_main, log);
    if (rc != 0) {
        if (err && err_cap)
            snprintf(err, err_cap, "access_log: cannot start the writer thread: %s",
                     strerror(rc));
        pthread_cond_destroy(&log->reopened);
        pthread_cond_destroy(&log->wake);
        pthread_mutex_destroy(&log->mu);
        close(fd);
        free(log->ring);
        free(log->path);
        free(log);
        return NULL;
    }
    return log;
}

void cr_access_log_write(cr_access_log_t *log, const cr_access_record_t *rec)
{
    static __thread char line[LINE_MAX_BYTES];
    size_t n = cr_access_log_format(rec, line, sizeof(line));

    pthread_mutex_lock(&log->mu);
    uint64_t used = log->head - log->tail;
    if (CR_UNLIKELY(RING_BYTES - used < n || log->stop)) {
        pthread_mutex_unlock(&log->mu);
        atomic_fetch_add_explicit(&log->dropped, 1, memory_order_relaxed);
        return;
    }
    size_t off = (size_t)(log->head % RING_BYTES);
    size_t first = n <= RING_BYTES - off ? n : RING_BYTES - off;
    memcpy(log->ring + off, line, first);
    memcpy(log->ring, line + first, n - first);
    log->head += n;
    bool wake = log->writer_idle || used + n >= RING_BYTES / 2;
    pthread_mutex_unlock(&log->mu);
    if (wake)
        pthread_cond_signal(&log->wake);
}

int cr_access_log_reopen(cr_access_log_t *log)
{
    pthread_mutex_lock(&log->mu);
    uint64_t gen = ++log->reopen_asked;
    pthread_cond_signal(&log->wake);
    while (log->reopen_done < gen)
        pthread_cond_wait(&log->reopened, &log->mu);
    int rc = log->reopen_rc;
    pthread_mutex_unlock(&log->mu);
    return rc;
}

uint64_t cr_access_log_dropped(const cr_access_log_t *log)
{
    return atomic_load_explicit(&log->dropped, memory_order_relaxed);
}

void cr_access_log_close(cr_access_log_t *log)
{
    if (!log)
        return;
    pthread_mutex_lock(&log->mu);
    log->stop = true;
    pthread_cond_signal(&log->wake);
    pthread_mutex_unlock(&log->mu);
    pthread_join(log->writer, NULL);
    if (log->fd >= 0)
        close(log->fd);
    log->fd = -1;
    pthread_cond_destroy(&log->reopened);
    pthread_cond_destroy(&log->wake);
    pthread_mutex_destroy(&log->mu);
    free(log->ring);
    log->ring = NULL;
    free(log->path);
    log->path = NULL;
    free(log);
}
