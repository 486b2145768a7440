/* test/fuzz/fuzz_config.c - libFuzzer target for the YAML config loader.
 *
 * Feeds arbitrary bytes to cr_config_load_string() and checks the contract
 * either way: a failure leaves a NUL-terminated message that starts with the
 * name, a success holds every invariant finalize() promises. ASan catches
 * leaks and over-reads; the loader's budgets keep alias bombs fast.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    cr_config_t *cfg = cr_config_load_string((const char *)data, size, "fuzz.yml", err, sizeof err);
    if (!cfg) {
        if (memchr(err, '\0', sizeof err) == NULL || strncmp(err, "fuzz.yml:", 9) != 0)
            abort();
        return 0;
    }
    if (cfg->workers < 1 || cfg->max_request_header_bytes == 0 ||
        cfg->max_request_header_bytes > 1024 * 1024 || cfg->max_request_headers == 0 ||
        cfg->backends_max_attempts == 0 || cfg->nats_hosts_len == 0 ||
        cfg->droplet_stale_threshold_ns < cfg->start_response_delay_interval_ns ||
        cfg->drain_timeout_ns < 0 || cfg->endpoint_timeout_ns < 0)
        abort();
    for (size_t i = 0; i < cfg->nats_hosts_len; i++)
        if (!cfg->nats_hosts[i].hostname || !cfg->nats_hosts[i].hostname[0])
            abort();
    for (size_t i = 0; i < cfg->sticky_session_cookie_names_len; i++)
        if (!cfg->sticky_session_cookie_names[i][0])
            abort();
    for (size_t i = 0; i < cfg->warnings_len; i++)
        if (!cfg->warnings[i])
            abort();
    if (!cfg->status_host || !cfg->status_user || !cfg->status_pass || !cfg->nats_user ||
        !cfg->nats_pass || !cfg->access_log_file || !cfg->logging_level || !cfg->pid_file || !cfg->zone)
        abort();
    cr_config_destroy(cfg);
    return 0;
}
