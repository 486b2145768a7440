/* registry/pruner.c - the thread that prunes stale endpoints every interval.
 *
 * The thread sleeps on a condition variable (CLOCK_MONOTONIC) so stop wakes
 * it at once. With suspend_if_nats_down, a cycle is skipped while NATS is
 * down (endpoints cannot refresh then, so pruning would empty the table),
 * and the first cycle after recovery freshens every endpoint before pruning,
 * as gorouter does.
 * The thread runs at nice 19: a prune of 100,000 endpoints is ~0.1 s of CPU,
 * and on a saturated machine that CPU came out of the workers (request p99
 * 4.1 vs 2.2 ms in bench/scale's prune window at nice 0). Lookups never
 * wait for it (RCU), so only its CPU share matters. The same goes for
 * freeing what it removed: its call_rcu callbacks go to a call_rcu thread
 * of the pruners' own (one per process), created from a pruner thread and
 * so at nice 19 too, not to liburcu's default one, which frees for the
 * NATS thread at normal priority.
 * Threads: its own (registered with RCU by the registry on first use);
 * start/stop from the main thread. Owns: the thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include "common/clock.h"
#include "common/defs.h"
#include "common/log.h"
#include "common/thread.h"
#include "common/xalloc.h"
#include "registry/registry.h"

#define COMPONENT "pruner"

struct cr_pruner {
    cr_registry_t *reg;       /* borrowed */
    int64_t interval_ns;
    bool suspend_if_nats_down;
    cr_nats_up_fn nats_up;
    void *nats_up_arg;        /* borrowed */
    bool running;             /* a thread was started */
    bool stop;                /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
};

static struct timespec deadline_after(int64_t ns)
{
    int64_t t = cr_now_mono_ns() + ns;
    struct timespec ts = { .tv_sec = t / CR_NS_PER_SEC, .tv_nsec = t % CR_NS_PER_SEC };
    return ts;
}

/* The call_rcu thread for what pruners free: one per process, created by
 * the first pruner thread (a new thread inherits its creator's nice value)
 * and kept, like liburcu's default one (call_rcu_data_free would stop its
 * thread without joining it). */
static struct call_rcu_data *prune_frees;
static pthread_once_t prune_frees_once = PTHREAD_ONCE_INIT;

static void create_prune_frees(void)
{
    prune_frees = urcu_memb_create_call_rcu_data(0, -1);
}

static void *run(void *arg)
{
    cr_pruner_t *pr = arg;
    bool was_down = false;
    if (!cr_thread_set_nice(19))
        CR_DEBUG(COMPONENT, "could not lower the pruner's priority");
    pthread_once(&prune_frees_once, create_prune_frees);
    if (prune_frees)
        urcu_memb_set_thread_call_rcu_data(prune_frees);

    pthread_mutex_lock(&pr->mu);
    for (;;) {
        struct timespec until = deadline_after(pr->interval_ns);
        while (!pr->stop) {
            if (pthread_cond_timedwait(&pr->cond, &pr->mu, &until) == ETIMEDOUT)
                break;
        }
        if (pr->stop)
            break;
        pthread_mutex_unlock(&pr->mu);

        bool up = !pr->suspend_if_nats_down || !pr->nats_up || pr->nats_up(pr->nats_up_arg);
        if (!up) {
            if (!was_down)
                CR_INFO(COMPONENT, "prune-suspended reason=nats-unavailable");
            was_down = true;
        } else {
            int64_t now = cr_now_mono_ns();
            if (was_down) {
                CR_INFO(COMPONENT, "prune-resumed freshening=all-endpoints");
                cr_registry_freshen(pr->reg, now);
                was_down = false;
            }
            cr_registry_prune(pr->reg, now);
        }
        pthread_mutex_lock(&pr->mu);
    }
    pthread_mutex_unlock(&pr->mu);
    cr_registry_reader_thread_unregister();
    return NULL;
}

cr_pruner_t *cr_pruner_start(cr_registry_t *reg, int64_t interval_ns, bool suspend_if_nats_down,
                             cr_nats_up_fn nats_up, void *nats_up_arg)
{
    cr_pruner_t *pr = cr_xcalloc(1, sizeof *pr);
    pr->reg = reg;
    pr->interval_ns = interval_ns;
    pr->suspend_if_nats_down = suspend_if_nats_down;
    pr->nats_up = nats_up;
    pr->nats_up_arg = nats_up_arg;
    if (interval_ns <= 0)
        return pr; /* pruning disabled, as gorouter does for interval 0 */

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pr->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&pr->mu, NULL);
    int rc = pthread_create(&pr->thread, NULL, run, pr);
    if (rc != 0) {
        CR_ERROR(COMPONENT, "cannot start the pruner thread: error=%d", rc);
        pthread_cond_destroy(&pr->cond);
        pthread_mutex_destroy(&pr->mu);
        free(pr);
        return NULL;
    }
    pr->running = true;
    return pr;
}

void cr_pruner_stop(cr_pruner_t *pr)
{
    if (!pr)
        return;
    if (pr->running) {
        pthread_mutex_lock(&pr->mu);
        pr->stop = true;
        pthread_cond_signal(&pr->cond);
        pthread_mutex_unlock(&pr->mu);
        pthread_join(pr->thread, NULL);
        pthread_cond_destroy(&pr->cond);
        pthread_mutex_destroy(&pr->mu);
    }
    free(pr);
}
