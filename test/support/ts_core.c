/* test/support/ts_core.c - temp dir, ports, time, checksums, process registry.
 *
 * Every child is registered in g_pids; ts_kill_all() (run at exit, on fatal
 * signals, and from ts_finish) SIGKILLs and reaps whatever is still there.
 * Children also get PR_SET_PDEATHSIG(SIGKILL), so they die with the test
 * process even when ctest SIGKILLs it on a timeout.
 */
#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define TS_MAX_PIDS 512
#define TS_MAX_LOGS 128

static volatile pid_t g_pids[TS_MAX_PIDS];
static char g_tmpdir[256];
static char g_suite[64];
static unsigned g_tmp_counter;
static uint16_t g_ports_used[4096];
static size_t g_ports_used_len;

typedef struct {
    char title[96];
    char path[512];
} ts_log_entry_t;
static ts_log_entry_t g_logs[TS_MAX_LOGS];
static size_t g_logs_len;

void ts_register_log(const char *title, const char *path)
{
    if (g_logs_len >= TS_MAX_LOGS)
        return;
    snprintf(g_logs[g_logs_len].title, sizeof g_logs[0].title, "%s", title);
    snprintf(g_logs[g_logs_len].path, sizeof g_logs[0].path, "%s", path);
    g_logs_len++;
}

static void registry_add(pid_t pid)
{
    for (size_t i = 0; i < TS_MAX_PIDS; i++) {
        if (g_pids[i] == 0) {
            g_pids[i] = pid;
            return;
        }
    }
    fprintf(stderr, "testsupport: process registry full, killing %d\n", (int)pid);
    kill(pid, SIGKILL);
}

static void registry_remove(pid_t pid)
{
    for (size_t i = 0; i < TS_MAX_PIDS; i++)
        if (g_pids[i] == pid)
            g_pids[i] = 0;
}

void ts_kill_all(void)
{
    for (size_t i = 0; i < TS_MAX_PIDS; i++) {
        pid_t p = g_pids[i];
        if (p > 0) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
            g_pids[i] = 0;
        }
    }
}

static void fatal_signal(int sig)
{
    /* Async-signal-safe: kill + waitpid only. */
    for (size_t i = 0; i < TS_MAX_PIDS; i++) {
        pid_t p = g_pids[i];
        if (p > 0) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void atexit_hook(void)
{
    ts_kill_all();
}

void ts_init(const char *suite_name)
{
    snprintf(g_suite, sizeof g_suite, "%s", suite_name);
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/crouter-it-%s-XXXXXX", suite_name);
    if (!mkdtemp(g_tmpdir)) {
        perror("mkdtemp");
        exit(2);
    }
    atexit(atexit_hook);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = fatal_signal;
        sigaction(sigs[i], &sa, NULL);
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_ALL);
    nats_Open(-1);
    fprintf(stderr, "testsupport: temp dir %s\n", g_tmpdir);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int ts_finish(int failures)
{
    ts_kill_all();
    if (failures) {
        for (size_t i = 0; i < g_logs_len; i++)
            ts_print_file_tail(g_logs[i].title, g_logs[i].path, 6000);
        fprintf(stderr, "testsupport: %d failure(s); logs kept in %s\n", failures, g_tmpdir);
    } else {
        nftw(g_tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    nats_Close();
    curl_global_cleanup();
    return failures;
}

const char *ts_tmpdir(void)
{
    return g_tmpdir;
}

void ts_tmp_path(char *out, size_t cap, const char *prefix, const char *suffix)
{
    snprintf(out, cap, "%s/%s-%u%s", g_tmpdir, prefix, ++g_tmp_counter, suffix ? suffix : "");
}

static bool port_used(uint16_t p)
{
    for (size_t i = 0; i < g_ports_used_len; i++)
        if (g_ports_used[i] == p)
            return true;
    return false;
}

uint16_t ts_free_port(void)
{
    for (int attempt = 0; attempt < 200; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return 0;
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        socklen_t al = sizeof a;
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
            close(fd);
            continue;
        }
        close(fd);
        uint16_t p = ntohs(a.sin_port);
        if (port_used(p))
            continue;
        if (g_ports_used_len < sizeof g_ports_used / sizeof g_ports_used[0])
            g_ports_used[g_ports_used_len++] = p;
        return p;
    }
    return 0;
}

int64_t ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ts_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ts_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

uint64_t ts_fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void ts_pattern_fill(unsigned char *buf, uint64_t off, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t x = off + i;
        buf[i] = (unsigned char)((x * 131u) ^ (x >> 9) ^ (x >> 17));
    }
}

uint64_t ts_pattern_fnv(uint64_t len)
{
    unsigned char buf[65536];
    uint64_t h = TS_FNV_INIT;
    for (uint64_t off = 0; off < len;) {
        size_t n = (size_t)((len - off) < sizeof buf ? (len - off) : sizeof buf);
        ts_pattern_fill(buf, off, n);
        h = ts_fnv1a(h, buf, n);
        off += n;
    }
    return h;
}

char *ts_read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

void ts_print_file_tail(const char *title, const char *path, size_t max_bytes)
{
    size_t len = 0;
    char *s = ts_read_file(path, &len);
    fprintf(stderr, "----- %s (%s) -----\n", title, path);
    if (s) {
        size_t start = len > max_bytes ? len - max_bytes : 0;
        fwrite(s + start, 1, len - start, stderr);
        if (len && s[len - 1] != '\n')
            fputc('\n', stderr);
        free(s);
    } else {
        fprintf(stderr, "(missing)\n");
    }
    fprintf(stderr, "----- end of %s -----\n", title);
}

pid_t ts_spawn(const char *const argv[], const char *log_path)
{
    int logfd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "testsupport: open %s: %s\n", log_path, strerror(errno));
        return -1;
    }
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        close(nullfd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "testsupport: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    close(nullfd);
    registry_add(pid);
    return pid;
}

bool ts_process_exited(pid_t pid, int *status)
{
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) {
        registry_remove(pid);
        if (status)
            *status = r == pid ? st : -1;
        return true;
    }
    return false;
}

int ts_count_pipe_fds(pid_t pid)
{
    char path[96], link[64];
    int n = 0;
    for (int fd = 3; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
        ssize_t l = readlink(path, link, sizeof link - 1);
        if (l > 0) {
            link[l] = '\0';
            n += strncmp(link, "pipe:", 5) == 0;
        }
    }
    return n;
}

int ts_wait_process(pid_t pid, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    int st;
    do {
        if (ts_process_exited(pid, &st))
            return st;
        ts_sleep_ms(10);
    } while (ts_now_ms() < deadline);
    return -1;
}

int ts_stop_process(pid_t pid, int sig, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    int st;
    if (ts_process_exited(pid, &st))
        return st;
    kill(pid, sig);
    st = ts_wait_process(pid, timeout_ms);
    if (st != -1)
        return st;
    fprintf(stderr, "testsupport: pid %d ignored signal %d for %d ms, SIGKILL\n", (int)pid, sig, timeout_ms);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    registry_remove(pid);
    return st;
}

static bool port_accepts(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

bool ts_wait_port_open(uint16_t port, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    do {
        if (port_accepts(port))
            return true;
        ts_sleep_ms(10);
    } while (ts_now_ms() < deadline);
    return false;
}

bool ts_wait_port_closed(uint16_t port, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    do {
        if (!port_accepts(port))
            return true;
        ts_sleep_ms(10);
    } while (ts_now_ms() < deadline);
    return false;
}

int ts_run_capture(const char *const argv[], int timeout_ms, char **output)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return -1;
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        int nullfd = open("/dev/null", O_RDONLY);
        dup2(nullfd, 0);
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "testsupport: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    registry_add(pid);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int64_t deadline = ts_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - ts_now_ms();
        if (left <= 0)
            break;
        struct pollfd p = {pfd[0], POLLIN, 0};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (len + 1024 + 1 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t n = read(pfd[0], buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(pfd[0]);
    buf[len] = '\0';
    int64_t left = deadline - ts_now_ms();
    int st = ts_wait_process(pid, left > 0 ? (int)left : 0);
    if (st == -1) {
        fprintf(stderr, "testsupport: %s timed out after %d ms\n", argv[0], timeout_ms);
        st = ts_stop_process(pid, SIGKILL, 1000);
        free(buf);
        if (output)
            *output = NULL;
        return -1;
    }
    if (output)
        *output = buf;
    else
        free(buf);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int ts_openssl(const char *const args[])
{
    const char *argv[40] = {"openssl"};
    size_t n = 1;
    for (size_t i = 0; args[i] && n + 1 < 40; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char *out = NULL;
    int rc = ts_run_capture(argv, 30000, &out);
    if (rc != 0)
        fprintf(stderr, "openssl %s failed (%d):\n%s\n", args[0], rc, out ? out : "");
    free(out);
    return rc == 0 ? 0 : -1;
}

void ts_ws_accept(const char *key, char out[32])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[256];
    snprintf(in, sizeof in, "%s%s", key, guid);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(in, strlen(in), md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}
