/* Unit test for the CrossThink difficulty filter: k answers sampled per item
 * from a scripted mock backend, graded by the real verifiers; items solved
 * k of k times are dropped, the rest carry their solve rate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"
#include "test_gen_mock.h"

#include "test_gen_fixture.h"

static void test_crossthink_difficulty(void **state)
{
    (void)state;
    cel_template_set *set = make_set(ct_srcs, 4);
    cel_verifier *v;
    cel_error e;
    assert_int_equal(cel_verifier_create(NULL, &v, &e), CEL_OK);
    cel_gen_doc docs[] = {{"a", "DOCA some source text about numbers.", 36, NULL}};
    cel_crossthink_config cfg;
    cel_crossthink_config_default(&cfg);
    cfg.templates = set;
    cfg.difficulty_k = 4;
    cfg.verifier = v;
    collect c = {0}, c2 = {0};
    cel_gen_stats st;
    run_ct(&cfg, docs, 1, MOCK_RANDOM, &c, &st);
    /* shared (always answered B = gold): too easy; EASY: too easy; HARD: solved 1 of 4; open 42: too easy */
    json_t *recs = lines(&c.out);
    assert_int_equal(json_array_size(recs), 1);
    json_t *r = json_array_get(recs, 0);
    assert_string_equal(sget(r, "id"), "a/0/mcq/2");
    assert_true(json_real_value(json_object_get(r, "solve_rate")) == 0.25);
    assert_int_equal(st.dropped[CEL_DROP_TOO_EASY], 3);
    assert_int_equal(st.samples, 2 + 4 * 4); /* 2 syntheses + 4 items x k */
    json_decref(recs);
    /* deterministic across completion orders */
    run_ct(&cfg, docs, 1, MOCK_LIFO, &c2, &st);
    assert_string_equal(c.out.data, c2.out.data);
    cel_buf_free(&c.out);
    cel_buf_free(&c.drops);
    cel_buf_free(&c2.out);
    cel_buf_free(&c2.drops);
    cel_verifier_free(v);
    cel_template_set_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crossthink_difficulty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
