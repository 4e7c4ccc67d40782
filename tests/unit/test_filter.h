/*
 * test_filter.h - narrowing a test program from the environment, for the
 * GPU run (tests/gpu/run.sh): a CUDA fault is sticky for the process's
 * context, so after a failure the script reruns one test (or one decode
 * path) per process to say which one broke. Include after cmocka.h.
 */
#ifndef CEL_TEST_FILTER_H
#define CEL_TEST_FILTER_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* CEL_TEST_FILTER=glob runs only the tests whose names match (cmocka's
 * filter: '*' and '?'). */
static inline void cel_test_filter_from_env(void)
{
    const char *f = getenv("CEL_TEST_FILTER");
    if (f && *f) cmocka_set_test_filter(f);
}

/* Whether name is one of the items of the comma-separated list. */
static inline bool cel_test_list_has(const char *list, const char *name)
{
    const size_t n = strlen(name);
    while (*list) {
        size_t k = strcspn(list, ",");
        if (k == n && !strncmp(list, name, n)) return true;
        list += k;
        if (*list == ',') list++;
    }
    return false;
}

#endif
