/* test/fuzz/fuzz_register_message.c - libFuzzer target for router.register payloads.
 *
 * Decodes the input (cr_register_msg_decode), and when it is accepted
 * registers it into a small registry, looks every uri up, and unregisters
 * it again. Besides memory safety it checks that the decoder's output is
 * well formed and that register followed by unregister of the same message
 * leaves the table empty. Hosts that are not IP literals are swapped for one,
 * so the fuzzer never waits on DNS.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "registry/registry.h"

static cr_registry_t *reg;

static void check_msg(const cr_register_msg_t *m)
{
    if (!m->host || m->uris_len == 0 || (m->port == 0 && m->tls_port == 0))
        abort();
    for (size_t i = 0; i < m->uris_len; i++) {
        if (!m->uris[i] || m->uris[i][0] == '\0')
            abort();
    }
    if (m->lb_algo < -1 || m->lb_algo > CR_LB_LEAST_CONNECTION)
        abort();
    if (m->route_service_url && strncmp(m->route_service_url, "https", 5) != 0)
        abort();
    if (m->tags_len > 0 && !m->has_tags)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!reg) {
        cr_log_set_level(CR_LOG_ERROR);
        cr_registry_options_t o = {
            .droplet_stale_threshold_ns = 120 * CR_NS_PER_SEC,
            .default_lb_algo = CR_LB_ROUND_ROBIN,
        };
        reg = cr_registry_create(&o);
        cr_registry_reader_thread_register();
    }

    cr_register_msg_t m;
    char err[128];
    int rc = cr_register_msg_decode((const char *)data, size, &m, err, sizeof err);
    if (rc != 0) {
        if (rc != CR_EBAD && rc != CR_ETOOBIG)
            abort();
        return 0;
    }
    check_msg(&m);

    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, m.host, buf) != 1 && inet_pton(AF_INET6, m.host, buf) != 1) {
        free(m.host);
        m.host = cr_xstrdup("192.0.2.1");
    }

    int64_t now = 1000 * CR_NS_PER_SEC;
    if (cr_registry_register(reg, &m, now) == 0) {
        cr_registry_register(reg, &m, now + 1); /* a refresh */
        cr_registry_read_lock();
        for (size_t i = 0; i < m.uris_len; i++) {
            const char *u = m.uris[i];
            const char *slash = strchr(u, '/');
            size_t hl = slash ? (size_t)(slash - u) : strlen(u);
            const cr_route_t *r = cr_registry_lookup(reg, u, hl, slash ? slash : "", slash ? strlen(slash) : 0);
            if (r) {
                const cr_pool_t *p = cr_route_pool(r);
                for (uint32_t j = 0; j < p->len; j++) {
                    cr_endpoint_t *ep = p->endpoints[j];
                    if (cr_pool_find_by_id(p, ep->addr, strlen(ep->addr)) == NULL)
                        abort();
                }
            }
        }
        cr_registry_read_unlock();
    }
    cr_registry_unregister(reg, &m, now + 2);
    cr_registry_stats_t st;
    cr_registry_get_stats(reg, &st);
    if (st.routes != 0 || st.endpoints != 0)
        abort();
    cr_register_msg_deinit(&m);
    return 0;
}
