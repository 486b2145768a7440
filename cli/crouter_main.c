/* cli/crouter_main.c - the crouter daemon: CLI, startup, signals, drain, shutdown.
 *
 * Modules are created in dependency order (config, registry, NATS client,
 * pruner, router, status server) and destroyed in reverse. Signals are
 * blocked before any thread exists and taken synchronously with sigwait in
 * the main thread, which does nothing else:
 * - SIGUSR1: /health answers 503 at once; after drain_wait (still serving)
 *   the router stops accepting; exit once no client connection is open or
 *   drain_timeout has passed (gorouter's drain).
 * - SIGTERM, SIGINT: the same without drain_wait (unlike gorouter, which
 *   stops at once, in-flight requests get up to drain_timeout to finish).
 * - SIGHUP: reopen the access log (gorouter cannot).
 * Once a drain has started, other stop signals are logged and ignored.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "api/status_server.h"
#include "common/clock.h"
#include "common/defs.h"
#include "common/log.h"
#include "config/config.h"
#include "registry/nats_client.h"
#include "registry/registry.h"
#include "router/persist_sync.h"
#include "router/router.h"

#ifndef CROUTER_VERSION
#define CROUTER_VERSION "0.1.0" /* CMakeLists.txt project(VERSION) when the build does not pass it */
#endif
#define COMPONENT "main"
#define DRAIN_POLL_NS (50 * CR_NS_PER_MS)

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: crouter -c FILE             run the router with the YAML config FILE\n"
            "       crouter --check-config -c FILE\n"
            "                                   validate FILE, print warnings, exit 0 or 1\n"
            "       crouter --help | --version\n"
            "\n"
            "Signals: SIGUSR1 drains (503 on /health for drain_wait, then finish in-flight\n"
            "requests within drain_timeout), SIGTERM/SIGINT stop after in-flight requests\n"
            "(at most drain_timeout), SIGHUP reopens the access log.\n");
}

/* Waits for one of set until deadline_ns (monotonic; 0 = forever). Returns
 * the signal number, or 0 when the deadline passed. */
static int wait_signal(const sigset_t *set, int64_t deadline_ns)
{
    for (;;) {
        int sig;
        if (deadline_ns == 0) {
            if (sigwait(set, &sig) == 0)
                return sig;
            continue;
        }
        int64_t left = deadline_ns - cr_now_mono_ns();
        if (left <= 0)
            return 0;
        struct timespec ts = {.tv_sec = (time_t)(left / CR_NS_PER_SEC),
                              .tv_nsec = (long)(left % CR_NS_PER_SEC)};
        sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0)
            return sig;
        if (errno == EAGAIN)
            return 0;
    }
}

/* Handles a signal that arrives while draining: SIGHUP still reopens logs;
 * anything else is logged and ignored, as gorouter does. */
static void on_signal_while_draining(int sig, cr_router_t *rt)
{
    if (sig == SIGHUP) {
        CR_INFO(COMPONENT, "SIGHUP: reopening logs");
        cr_router_reopen_logs(rt);
    } else if (sig > 0) {
        CR_INFO(COMPONENT, "already draining; ignoring signal=%s", strsignal(sig));
    }
}

static int write_pid_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = dprintf(fd, "%d\n", (int)getpid()) < 0 ? -EIO : 0;
    close(fd);
    return rc;
}

/* Runs until a stop signal has been handled; returns when the router may be
 * torn down. */
static void shutdown_step(const char *what)
{
    CR_INFO(COMPONENT, "stopping step=\"%s\"", what);
}

static void serve_until_stopped(const cr_config_t *cfg, const sigset_t *set, cr_router_t *rt,
                                cr_status_server_t *status)
{
    bool drain_wait = false;
    for (;;) {
        int sig = wait_signal(set, 0);
        if (sig == SIGHUP) {
            CR_INFO(COMPONENT, "SIGHUP: reopening logs");
            cr_router_reopen_logs(rt);
            continue;
        }
        if (sig == SIGUSR1) {
            drain_wait = true;
            break;
        }
        if (sig == SIGTERM || sig == SIGINT)
            break;
    }

    cr_status_server_set_draining(status, true);
    if (drain_wait && cfg->drain_wait_ns > 0) {
        CR_INFO(COMPONENT, "SIGUSR1: draining; health is 503, still serving for drain_wait=%" PRId64 "ms",
                (int64_t)(cfg->drain_wait_ns / CR_NS_PER_MS));
        int64_t until = cr_now_mono_ns() + cfg->drain_wait_ns;
        int sig;
        while ((sig = wait_signal(set, until)) != 0)
            on_signal_while_draining(sig, rt);
    }

    int64_t drain_timeout = cfg->drain_timeout_ns > 0 ? cfg->drain_timeout_ns : cfg->endpoint_timeout_ns;
    CR_INFO(COMPONENT, "draining: closing listeners open_connections=%" PRIu64 " drain_timeout=%" PRId64 "ms",
            cr_router_open_connections(rt), (int64_t)(drain_timeout / CR_NS_PER_MS));
    cr_router_drain(rt);
    int64_t deadline = cr_now_mono_ns() + drain_timeout;
    while (cr_router_open_connections(rt) > 0) {
        int64_t now = cr_now_mono_ns();
        if (now >= deadline) {
            CR_WARN(COMPONENT, "drain timed out open_connections=%" PRIu64,
                    cr_router_open_connections(rt));
            return;
        }
        int64_t next = now + DRAIN_POLL_NS < deadline ? now + DRAIN_POLL_NS : deadline;
        int sig;
        while ((sig = wait_signal(set, next)) != 0)
            on_signal_while_draining(sig, rt);
    }
    CR_INFO(COMPONENT, "drained: no open connections");
}

/* Raises the soft RLIMIT_NOFILE to the hard limit: every client and backend
 * connection is a descriptor, and the usual soft limit of 1024 would cap a
 * router at a few hundred concurrent requests. Logs the change; a failure is
 * only a warning (the router still works, with fewer connections). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        CR_WARN(COMPONENT, "cannot raise the open-file limit soft=%llu hard=%llu: %s",
                (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
        return;
    }
    CR_INFO(COMPONENT, "open-file limit raised from=%llu to=%llu", (unsigned long long)was,
            (unsigned long long)rl.rlim_cur);
}

static int run(const cr_config_t *cfg)
{
    int exit_code = 1;
    char err[512] = "";
    cr_registry_t *reg = NULL;
    cr_nats_client_t *nats = NULL;
    cr_persist_sync_t *learn_sync = NULL;
    cr_pruner_t *pruner = NULL;
    cr_router_t *rt = NULL;
    cr_status_server_t *status = NULL;
    cr_log_level_t level = CR_LOG_INFO;
    if (cr_log_level_parse(cfg->logging_level, &level) == 0)
        cr_log_set_level(level);
    for (size_t i = 0; i < cfg->warnings_len; i++)
        CR_WARN(COMPONENT, "config: %s", cfg->warnings[i]);
    raise_fd_limit();

    /* Every thread created from here on inherits this mask, so only
     * sigwait in this thread sees these signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    bool pid_written = false;
    if (cfg->pid_file && cfg->pid_file[0]) {
        int rc = write_pid_file(cfg->pid_file);
        if (rc != 0) {
            CR_LOG(CR_LOG_FATAL, COMPONENT, "cannot write pid_file=%s: %s", cfg->pid_file, strerror(-rc));
            return 1;
        }
        pid_written = true;
    }

    cr_registry_options_t ropts;
    cr_registry_options_from_config(cfg, &ropts);
    reg = cr_registry_create(&ropts);
    if (!reg) {
        CR_LOG(CR_LOG_FATAL, COMPONENT, "cannot create the route registry");
        goto out_pid;
    }
    /* The router exists before NATS starts: learn-table sharing subscribes on
     * the NATS client before its first connection. */
    nats = cr_nats_client_create(cfg, reg);
    rt = cr_router_create(cfg, reg, err, sizeof err);
    if (!rt) {
        CR_LOG(CR_LOG_FATAL, COMPONENT, "cannot create the router: %s", err);
        goto out_nats;
    }
    /* Learn-table sharing is best effort: without it each router learns alone. */
    learn_sync = cr_persist_sync_start(cr_router_learn_table(rt), nats);
    if (!learn_sync)
        CR_WARN(COMPONENT, "session persistence learn table not shared over NATS");
    if (cr_nats_client_start(nats) != 0) {
        CR_LOG(CR_LOG_FATAL, COMPONENT, "cannot start the NATS client");
        goto out_sync;
    }
    pruner = cr_pruner_start(reg, cfg->prune_stale_droplets_interval_ns,
                             cfg->suspend_pruning_if_nats_unavailable, cr_nats_client_up_fn, nats);
    if (!pruner) {
        CR_LOG(CR_LOG_FATAL, COMPONENT, "cannot start the pruner");
        goto out_sync;
    }
    if (cr_router_start(rt) != 0) {
        CR_LOG(CR_LOG_FATAL, COMPONENT, "cannot start the router workers");
        goto out_pruner;
    }
    cr_status_sources_t src = {.cfg = cfg, .registry = reg, .nats = nats, .router = rt};
    status = cr_status_server_start(&src, err, sizeof err);
    if (!status) {
        CR_LOG(CR_LOG_FATAL, COMPONENT, "cannot start the status server: %s", err);
        goto out_router_started;
    }
    CR_INFO(COMPONENT,
            "crouter " CROUTER_VERSION " started pid=%d proxy_port=%u status_port=%u routes_port=%u "
            "workers=%" PRIu32 " router_id=%s",
            (int)getpid(), (unsigned)cr_router_port(rt), (unsigned)cr_status_server_port(status),
            (unsigned)cr_status_server_routes_port(status), cfg->workers,
            cr_nats_client_router_id(nats));

    serve_until_stopped(cfg, &set, rt, status);
    exit_code = 0;

    /* Each step is logged as it starts, so a stop that hangs names its cause. */
    shutdown_step("status server");
    cr_status_server_stop(status);
out_router_started:
    shutdown_step("workers");
    cr_router_stop(rt);
out_pruner:
    shutdown_step("pruner");
    cr_pruner_stop(pruner);
out_sync:
    shutdown_step("learn table sync");
    cr_persist_sync_stop(learn_sync);
out_nats:
    /* NATS goes before the router: its handlers write the router's learn table. */
    shutdown_step("nats");
    cr_nats_client_destroy(nats);
    /* Releases nats.c's own threads and memory (the leak checker sees them). */
    nats_CloseAndWait(2000);
    shutdown_step("router and registry");
    cr_router_destroy(rt);
    cr_registry_destroy(reg);
out_pid:
    if (pid_written)
        unlink(cfg->pid_file);
    CR_INFO(COMPONENT, "stopped exit_code=%d", exit_code);
    return exit_code;
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 1000 };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'v'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool check_only = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:hv", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case OPT_CHECK:
            check_only = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'v':
            printf("crouter " CROUTER_VERSION "\n");
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc || !config_path) {
        fprintf(stderr, "crouter: %s\n", config_path ? "unexpected argument" : "missing -c FILE");
        usage(stderr);
        return 1;
    }

    char err[512] = "";
    cr_config_t *cfg = cr_config_load_file(config_path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "crouter: %s\n", err);
        return 1;
    }
    int rc;
    if (check_only) {
        for (size_t i = 0; i < cfg->warnings_len; i++)
            printf("warning: %s\n", cfg->warnings[i]);
        printf("config OK\n");
        rc = 0;
    } else {
        rc = run(cfg);
    }
    cr_config_destroy(cfg);
    return rc;
}
