/* Shared helpers for the verifier unit tests (test_verify_*.c). */
#ifndef CELINE_TEST_VERIFY_COMMON_H
#define CELINE_TEST_VERIFY_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/verify.h"

/* One table row: what the model wrote, the gold answer, and the verdict. */
typedef struct vcase {
    const char *response;
    const char *reference;
    int expect; /* 1 correct, 0 wrong */
} vcase;

static inline cel_verifier *tv_make(const cel_verify_config *cfg)
{
    cel_verifier *v = NULL;
    cel_error e;
    cel_error_clear(&e);
    if (cel_verifier_create(cfg, &v, &e) != CEL_OK) {
        fprintf(stderr, "verifier: %s\n", e.msg);
        abort();
    }
    return v;
}

static inline cel_verify_result tv_grade(const cel_verifier *v, cel_task task, const char *resp, const char *ref,
                                  const char *const *choices, size_t n_choices)
{
    cel_verify_item it;
    memset(&it, 0, sizeof it);
    it.task = task;
    it.response = resp;
    it.reference = ref;
    it.choices = choices;
    it.n_choices = n_choices;
    cel_verify_result r;
    cel_error e;
    cel_error_clear(&e);
    cel_status st = cel_verify_grade(v, &it, &r, &e);
    if (st != CEL_OK) {
        memset(&r, 0, sizeof r);
        snprintf(r.reason, sizeof r.reason, "ERROR %.80s", e.msg);
        r.correct = false;
    }
    return r;
}

/* Runs a table; prints every row that disagrees; returns the number of failures. */
static inline int tv_run_table(const cel_verifier *v, cel_task task, const char *name, const vcase *rows, size_t n,
                        const char *wrap)
{
    int fails = 0;
    char buf[4096];
    for (size_t i = 0; i < n; i++) {
        const char *resp = rows[i].response;
        if (wrap) {
            snprintf(buf, sizeof buf, wrap, rows[i].response);
            resp = buf;
        }
        cel_verify_result r = tv_grade(v, task, resp, rows[i].reference, NULL, 0);
        if ((int)r.correct != rows[i].expect) {
            fails++;
            printf("  [%s #%zu] response=<%s> reference=<%s> expected %s got %s (reason %s, extracted <%s>)\n", name,
                   i, resp, rows[i].reference, rows[i].expect ? "correct" : "wrong", r.correct ? "correct" : "wrong",
                   r.reason, r.has_extracted ? r.extracted : "(none)");
        }
    }
    printf("%s: %zu cases, %d failures\n", name, n, fails);
    return fails;
}

#define NROWS(a) (sizeof(a) / sizeof((a)[0]))

#endif
