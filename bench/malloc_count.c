/* bench/malloc_count.c - an LD_PRELOAD library that counts heap allocations per thread.
 *
 * Wraps malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign and
 * free; each thread counts its own calls in a slot of a fixed table (no locks,
 * no allocation: a slot is claimed with one atomic increment on the thread's
 * first call). A report lists one line per thread:
 *
 *   tid=1234 name=crouter-w0 malloc=10 calloc=2 realloc=0 memalign=0 free=12 bytes=4096
 *
 * then a "total" line. It is written to $MALLOC_COUNT_OUT (appended; stderr
 * when unset) on SIGUSR2 and at exit. The script sends SIGUSR2 before and
 * after a measured phase and subtracts. Thread names are read from
 * /proc/self/task/<tid>/comm at report time (the name a thread set after its
 * first allocation); a thread that has exited keeps the name it had then.
 *
 * The real functions come from dlsym(RTLD_NEXT); dlsym itself may call calloc
 * before they are known, which is served from a small static arena.
 * The report uses only async-signal-safe calls (open, read, write).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_THREADS 512

struct slot {
    _Atomic uint64_t malloc_calls, calloc_calls, realloc_calls, memalign_calls, free_calls;
    _Atomic uint64_t bytes;   /* requested bytes, summed */
    pid_t tid;
    char name[16];            /* at first allocation */
};

static struct slot slots[MAX_THREADS];
static struct slot overflow_slot;          /* threads beyond MAX_THREADS */
static atomic_int nslots;
static __thread struct slot *my_slot __attribute__((tls_model("initial-exec")));

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

/* Bootstrap arena for dlsym's own calloc, never freed. */
static _Alignas(16) char boot[8192];
static size_t boot_used;

static int is_boot(const void *p)
{
    return (const char *)p >= boot && (const char *)p < boot + sizeof boot;
}

static void resolve(void)
{
    static atomic_int state; /* 0 unresolved, 1 resolving, 2 done */
    int expected = 0;
    if (atomic_load(&state) == 2)
        return;
    if (!atomic_compare_exchange_strong(&state, &expected, 1)) {
        while (atomic_load(&state) != 2)
            ;
        return;
    }
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    atomic_store(&state, 2);
}

static struct slot *slot(void)
{
    if (my_slot)
        return my_slot;
    int i = atomic_fetch_add(&nslots, 1);
    struct slot *s = i < MAX_THREADS ? &slots[i] : &overflow_slot;
    s->tid = (pid_t)syscall(SYS_gettid);
    prctl(PR_GET_NAME, s->name, 0, 0, 0);
    my_slot = s;
    return s;
}

void *malloc(size_t n)
{
    struct slot *s = slot();
    atomic_fetch_add_explicit(&s->malloc_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes, n, memory_order_relaxed);
    resolve();
    return real_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    if (!real_calloc) {
        /* dlsym is resolving: serve from the arena (zeroed, static). */
        size_t want = (n * size + 15) & ~(size_t)15;
        if (boot_used + want > sizeof boot)
            return NULL;
        void *p = boot + boot_used;
        boot_used += want;
        return p;
    }
    struct slot *s = slot();
    atomic_fetch_add_explicit(&s->calloc_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes, n * size, memory_order_relaxed);
    return real_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    struct slot *s = slot();
    atomic_fetch_add_explicit(&s->realloc_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes, n, memory_order_relaxed);
    resolve();
    if (is_boot(p)) {
        void *q = real_malloc(n);
        if (q)
            memcpy(q, p, n < sizeof boot ? n : sizeof boot);
        return q;
    }
    return real_realloc(p, n);
}

void free(void *p)
{
    if (!p || is_boot(p))
        return;
    struct slot *s = slot();
    atomic_fetch_add_explicit(&s->free_calls, 1, memory_order_relaxed);
    resolve();
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    struct slot *s = slot();
    atomic_fetch_add_explicit(&s->memalign_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes, n, memory_order_relaxed);
    resolve();
    return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    struct slot *s = slot();
    atomic_fetch_add_explicit(&s->memalign_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes, n, memory_order_relaxed);
    resolve();
    return real_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n)
{
    struct slot *s = slot();
    atomic_fetch_add_explicit(&s->memalign_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes, n, memory_order_relaxed);
    resolve();
    return real_memalign(align, n);
}

/* ------------------------------------------------ async-signal-safe report */

struct out {
    char buf[256];
    size_t len;
    int fd;
};

static void out_flush(struct out *o)
{
    size_t off = 0;
    while (off < o->len) {
        ssize_t w = write(o->fd, o->buf + off, o->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    o->len = 0;
}

static void out_str(struct out *o, const char *s)
{
    for (; *s; s++) {
        if (o->len == sizeof o->buf)
            out_flush(o);
        o->buf[o->len++] = *s;
    }
}

static void out_u64(struct out *o, uint64_t v)
{
    char tmp[24];
    int i = sizeof tmp;
    tmp[--i] = '\0';
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_str(o, tmp + i);
}

/* Copies the current name of thread tid into name (16 bytes) when it still runs. */
static void current_name(pid_t tid, char *name)
{
    char path[64] = "/proc/self/task/";
    struct out p = {.len = 0};
    out_str(&p, path);
    out_u64(&p, (uint64_t)tid);
    out_str(&p, "/comm");
    p.buf[p.len] = '\0';
    int fd = open(p.buf, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char tmp[17];
    ssize_t n = read(fd, tmp, 16);
    close(fd);
    if (n <= 0)
        return;
    if (tmp[n - 1] == '\n')
        n--;
    memcpy(name, tmp, (size_t)n);
    name[n] = '\0';
}

static void field(struct out *o, const char *key, uint64_t v)
{
    out_str(o, " ");
    out_str(o, key);
    out_str(o, "=");
    out_u64(o, v);
}

static void report(const char *why)
{
    const char *path = getenv("MALLOC_COUNT_OUT");
    struct out o = {.len = 0, .fd = 2};
    if (path && *path) {
        o.fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (o.fd < 0)
            o.fd = 2;
    }
    int n = atomic_load(&nslots);
    if (n > MAX_THREADS)
        n = MAX_THREADS;
    uint64_t tot[6] = {0};
    out_str(&o, "report ");
    out_str(&o, why);
    out_str(&o, "\n");
    for (int i = 0; i <= n; i++) {
        struct slot *s = i < n ? &slots[i] : &overflow_slot;
        if (i == n && atomic_load(&nslots) <= MAX_THREADS)
            break;
        uint64_t v[6] = {atomic_load(&s->malloc_calls), atomic_load(&s->calloc_calls),
                         atomic_load(&s->realloc_calls), atomic_load(&s->memalign_calls),
                         atomic_load(&s->free_calls), atomic_load(&s->bytes)};
        char name[17];
        memcpy(name, s->name, 16);
        name[16] = '\0';
        current_name(s->tid, name);
        for (char *c = name; *c; c++)
            if (*c == ' ' || *c == '=')
                *c = '_';
        out_str(&o, "tid=");
        out_u64(&o, (uint64_t)s->tid);
        out_str(&o, " name=");
        out_str(&o, name[0] ? name : "-");
        field(&o, "malloc", v[0]);
        field(&o, "calloc", v[1]);
        field(&o, "realloc", v[2]);
        field(&o, "memalign", v[3]);
        field(&o, "free", v[4]);
        field(&o, "bytes", v[5]);
        out_str(&o, "\n");
        for (int k = 0; k < 6; k++)
            tot[k] += v[k];
    }
    out_str(&o, "total");
    field(&o, "malloc", tot[0]);
    field(&o, "calloc", tot[1]);
    field(&o, "realloc", tot[2]);
    field(&o, "memalign", tot[3]);
    field(&o, "free", tot[4]);
    field(&o, "bytes", tot[5]);
    out_str(&o, "\nend\n");
    out_flush(&o);
    if (o.fd != 2)
        close(o.fd);
}

static void on_sigusr2(int sig)
{
    int saved = errno;
    (void)sig;
    report("signal");
    errno = saved;
}

__attribute__((constructor)) static void malloc_count_init(void)
{
    resolve();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr2;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
}

__attribute__((destructor)) static void malloc_count_fini(void)
{
    report("exit");
}
