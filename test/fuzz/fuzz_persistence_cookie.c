/* fuzz_persistence_cookie: the session persistence cookie decoder (router/persistence.c).
 *
 * Decodes the input under a fixed secret and previous secret; whatever
 * decodes must re-encode (under the key that verified it) to the same text,
 * since the encoding is canonical. Also feeds the prefix-mode identity token
 * and the learn-table wire format parsers.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/persistence.h"
#include "router/persistence.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cr_persist_keys_t keys, prev_only;
    static int ready;
    if (!ready) {
        cr_persist_policy_t p;
        cr_persist_policy_defaults(&p);
        cr_persist_policy_set(&p, CR_PK_SECRET, "fuzz-secret", true, NULL, 0);
        cr_persist_policy_set(&p, CR_PK_PREVIOUS_SECRET, "fuzz-previous", true, NULL, 0);
        cr_persist_keys_init(&keys, &p);
        cr_persist_policy_set(&p, CR_PK_SECRET, "fuzz-previous", true, NULL, 0);
        cr_persist_policy_set(&p, CR_PK_PREVIOUS_SECRET, "", true, NULL, 0);
        cr_persist_keys_init(&prev_only, &p);
        ready = 1;
    }
    const char *s = (const char *)data;
    cr_persist_cookie_t c;
    if (cr_persist_cookie_decode(&keys, s, size, &c) == 0) {
        char out[CR_PERSIST_COOKIE_MAX];
        int n = cr_persist_cookie_encode(c.key_idx == 0 ? &keys : &prev_only, &c, out, sizeof out);
        if (n != (int)size || memcmp(out, s, size) != 0)
            abort();
    }
    uint64_t id;
    if (cr_persist_id_token_parse(s, size, &id) == 0) {
        char tok[CR_PERSIST_ID_CHARS];
        cr_persist_id_token(id, tok);
        if (memcmp(tok, s, sizeof tok) != 0)
            abort();
    }
    cr_persist_learned_t b;
    (void)cr_persist_learned_decode(s, size, &b);
    uint8_t addr[16];
    (void)cr_persist_parse_ip(s, size, addr);
    return 0;
}
