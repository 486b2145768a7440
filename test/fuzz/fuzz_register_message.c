/* test/fuzz/fuzz_register_message.c - libFuzzer target for router.register payloads.
 *
 * Decodes the input (cr_register_msg_decode), and when it is accepted
 * registers it into a small registry, looks every uri up, and unregisters
 * it again. Besides memory safety it checks that the decoder's output is
 * well formed, that the decoder (whose fast path handles plain flat
 * messages without jansson) agrees field for field and on the error text
 * with the jansson-only decoder, and that register followed by unregister
 * of the same message leaves the table empty. Hosts that are not IP literals are swapped for one,
 * so the fuzzer never waits on DNS.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/defs.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "registry/internal.h"
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

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The jansson-only decoder must give the same verdict and the same fields. */
static void check_same_as_jansson(const uint8_t *data, size_t size, int rc, const cr_register_msg_t *a,
                                  const char *err)
{
    cr_register_msg_t b;
    char eb[128];
    int rb = cr_register_msg__decode_jansson((const char *)data, size, &b, eb, sizeof eb);
    if (rb != rc)
        abort();
    if (rc != 0) {
        if (strcmp(err, eb) != 0)
            abort();
        return;
    }
    bool ok = same_str(a->host, b.host) && a->port == b.port && a->tls_port == b.tls_port &&
              a->uris_len == b.uris_len && same_str(a->app, b.app) &&
              same_str(a->private_instance_id, b.private_instance_id) &&
              same_str(a->private_instance_index, b.private_instance_index) &&
              same_str(a->route_service_url, b.route_service_url) &&
              same_str(a->server_cert_domain_san, b.server_cert_domain_san) &&
              same_str(a->isolation_segment, b.isolation_segment) && same_str(a->protocol, b.protocol) &&
              same_str(a->availability_zone, b.availability_zone) && a->tags_len == b.tags_len &&
              a->has_tags == b.has_tags && a->stale_threshold_in_seconds == b.stale_threshold_in_seconds &&
              a->endpoint_updated_at_ns == b.endpoint_updated_at_ns && a->lb_algo == b.lb_algo &&
              (a->persistence == NULL) == (b.persistence == NULL) &&
              strcmp(a->persistence_error, b.persistence_error) == 0;
    for (size_t i = 0; ok && i < a->uris_len; i++)
        ok = strcmp(a->uris[i], b.uris[i]) == 0;
    for (size_t i = 0; ok && i < a->tags_len; i++)
        ok = strcmp(a->tags[i].key, b.tags[i].key) == 0 && strcmp(a->tags[i].value, b.tags[i].value) == 0;
    cr_register_msg_deinit(&b);
    if (!ok)
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
    char err[128] = "";
    int rc = cr_register_msg_decode((const char *)data, size, &m, err, sizeof err);
    check_same_as_jansson(data, size, rc, &m, err);
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
