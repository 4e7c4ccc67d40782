/* libFuzzer target: the LaTeX answer parser and the equality checker.
 * Input: "<answer>\n<reference>" (or the same text on both sides); both are
 * parsed, printed and compared under a small work budget and depth limit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "verifiers/expr.h"

static cel_verifier *verifier(void)
{
    static cel_verifier *v;
    if (!v) {
        cel_verify_config c;
        cel_verify_config_default(&c);
        c.work_budget = 200000;
        c.max_depth = 48;
        if (cel_verifier_create(&c, &v, NULL) != CEL_OK) abort();
    }
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) return 0;
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t na = nl ? (size_t)(nl - s) : size;
    const char *b = nl ? nl + 1 : s;
    size_t nb = nl ? size - na - 1 : size;
    _Alignas(16) char buf[8192];
    cel__ctx c;
    cel__ctx_init(&c, verifier(), buf, sizeof buf);
    const char *why = NULL;
    cel__node *ta = cel__latex_parse(&c, s, na, &why);
    cel__node *tb = cel__latex_parse(&c, b, nb, &why);
    char out[512];
    if (ta) cel__node_print(ta, out, sizeof out);
    if (tb) cel__node_print(tb, out, sizeof out);
    if (ta && tb) {
        bool e1 = cel__math_equal(&c, ta, tb);
        (void)e1;
        /* a tree equals itself unless a bound was hit or it has no value */
        (void)cel__math_equal(&c, ta, ta);
    }
    cel__ctx_done(&c);
    return 0;
}
