/* test/fuzz/fuzz_duration.c - libFuzzer target for cr_duration_parse().
 *
 * The input becomes a C string (cut at the first NUL, as the config loader
 * would never pass one). Besides memory safety it checks one property of
 * Go's grammar: a duration that parses without a sign parses with a leading
 * '-' to its negation. Balancing names are parsed too and must round-trip.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 2);
    if (!s)
        return 0;
    s[0] = '-';
    memcpy(s + 1, data, size);
    s[size + 1] = '\0';

    int64_t ns = 0, neg = 0;
    if (cr_duration_parse(s + 1, &ns) == 0 && s[1] != '-' && s[1] != '+') {
        if (cr_duration_parse(s, &neg) != 0 || neg != -ns)
            abort();
    }
    cr_lb_algo_t algo;
    if (cr_lb_algo_parse(s + 1, &algo) == 0 && strcmp(cr_lb_algo_name(algo), s + 1) != 0)
        abort();
    free(s);
    return 0;
}
