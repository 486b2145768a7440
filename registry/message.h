/* registry/message.h - decodes gorouter's router.register / router.unregister JSON.
 *
 * Compatible with gorouter's RegistryMessage: keys match case-insensitively,
 * unknown keys are ignored, and a type mismatch fails the whole message
 * (private_instance_index must be a string, tags a map of strings,
 * route_service_url must start with "https"). Unlike gorouter, a message
 * without host, port (or tls_port) or uris is rejected, and one over
 * CR_REGISTER_MSG_MAX_BYTES is rejected before parsing.
 * Pure functions; any thread.
 */
#ifndef CR_REGISTRY_MESSAGE_H
#define CR_REGISTRY_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "registry/endpoint_types.h"

#define CR_REGISTER_MSG_MAX_BYTES (256 * 1024)

typedef struct cr_register_msg {
    char *host;                   /* owned */
    uint16_t port;
    uint16_t tls_port;            /* 0 = none */
    char **uris;                  /* owned array of owned strings */
    size_t uris_len;
    char *app;                    /* owned or NULL (NULL also for "") */
    char *private_instance_id;
    char *private_instance_index;
    char *route_service_url;
    char *server_cert_domain_san;
    char *isolation_segment;
    char *protocol;
    char *availability_zone;
    cr_tag_t *tags;               /* owned */
    size_t tags_len;
    bool has_tags;                /* "tags" present and not null */
    int64_t stale_threshold_in_seconds; /* 0 when absent */
    int64_t endpoint_updated_at_ns;
    int8_t lb_algo;               /* -1 = none or invalid (an invalid name is ignored, as gorouter does) */
    /* options.session_persistence (issue 5): the keys the route sets, owned,
     * NULL when absent or invalid. An invalid object does not fail the
     * message: persistence_error says why and the endpoint gets the default
     * policy. The registry replaces it by the effective policy before use. */
    cr_persist_policy_t *persistence;
    char persistence_error[160];  /* "" = none */
} cr_register_msg_t;

/* Decodes data[0..len). On success returns 0 and fills out (caller then owns
 * it and calls cr_register_msg_deinit). On failure returns CR_EBAD or
 * CR_ETOOBIG, writes a short reason into err (never the payload itself), and
 * leaves nothing to free. */
int cr_register_msg_decode(const char *data, size_t len, cr_register_msg_t *out,
                           char *err, size_t err_cap);

/* Frees what decode allocated; accepts a zeroed struct. */
void cr_register_msg_deinit(cr_register_msg_t *msg);

#endif
