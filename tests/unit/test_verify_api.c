/* The verifier API: names and parsing, format requirements and reward values,
 * bounds (fail closed), advantages, batches on threads, and thread safety. */
#include <math.h>
#include <pthread.h>

#include "unit/test_verify_common.h"

static void test_names_and_parsing(void **state)
{
    (void)state;
    cel_task t;
    assert_true(cel_task_parse("math", &t) && t == CEL_TASK_MATH);
    assert_true(cel_task_parse("mcq", &t) && t == CEL_TASK_MCQ);
    assert_true(cel_task_parse("open", &t) && t == CEL_TASK_OPEN);
    assert_true(cel_task_parse("auto", &t) && t == CEL_TASK_AUTO);
    assert_false(cel_task_parse("Math", &t));
    assert_false(cel_task_parse(NULL, &t));
    assert_string_equal(cel_task_name(CEL_TASK_MCQ), "mcq");
    cel_adv_mode m;
    assert_true(cel_adv_mode_parse("grpo", &m) && m == CEL_ADV_GRPO);
    assert_true(cel_adv_mode_parse("dr_grpo", &m) && m == CEL_ADV_DR_GRPO);
    assert_true(cel_adv_mode_parse("rloo", &m) && m == CEL_ADV_RLOO);
    assert_true(cel_adv_mode_parse("none", &m) && m == CEL_ADV_NONE);
    assert_false(cel_adv_mode_parse("ppo", &m));
    assert_string_equal(cel_adv_mode_name(CEL_ADV_RLOO), "rloo");
    uint32_t f = 99;
    assert_true(cel_format_parse("none", &f) && f == 0);
    assert_true(cel_format_parse("boxed", &f) && f == CEL_FORMAT_BOXED);
    assert_true(cel_format_parse("think,boxed", &f) && f == (CEL_FORMAT_THINK | CEL_FORMAT_BOXED));
    assert_true(cel_format_parse("answer", &f) && f == CEL_FORMAT_ANSWER_LINE);
    assert_false(cel_format_parse("boxed,bogus", &f));
    assert_false(cel_format_parse("", &f));
    assert_false(cel_format_parse("none,boxed", &f));
    assert_string_equal(cel_extract_source_name(CEL_EXTRACT_BOXED), "boxed");
    assert_string_equal(cel_extract_source_name(CEL_EXTRACT_LAST_NUMBER), "last_number");
}

static void test_config_validation(void **state)
{
    (void)state;
    cel_verify_config c;
    cel_verify_config_default(&c);
    assert_true(c.reward_correct == 1.0 && c.reward_wrong == 0.0 && c.rel_tol == 1e-6 && c.format_either);
    cel_verifier *v = NULL;
    cel_error e;
    c.rel_tol = -1;
    assert_int_equal(cel_verifier_create(&c, &v, &e), CEL_ERR_INVALID);
    assert_null(v);
    cel_verify_config_default(&c);
    c.max_depth = 0;
    assert_int_equal(cel_verifier_create(&c, &v, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "max_depth"));
    cel_verify_config_default(&c);
    c.format = 1u << 9;
    assert_int_equal(cel_verifier_create(&c, &v, &e), CEL_ERR_INVALID);
    cel_verifier_free(NULL);
}

static void test_format_and_rewards(void **state)
{
    (void)state;
    cel_verify_config c;
    cel_verify_config_default(&c);
    c.format = CEL_FORMAT_BOXED;
    cel_verifier *boxed = tv_make(&c);
    c.format = CEL_FORMAT_ANSWER_LINE;
    cel_verifier *line = tv_make(&c);
    c.format = CEL_FORMAT_THINK | CEL_FORMAT_BOXED;
    c.reward_correct_bad_format = 0.25;
    c.reward_wrong_good_format = 0.1;
    c.reward_wrong = -1;
    cel_verifier *think = tv_make(&c);
    c.format = CEL_FORMAT_BOXED | CEL_FORMAT_ANSWER_LINE;
    c.format_either = false;
    cel_verifier *both = tv_make(&c);

    cel_verify_result r = tv_grade(boxed, CEL_TASK_MATH, "\\boxed{4}", "4", NULL, 0);
    assert_true(r.correct && r.format_ok && r.reward == 1.0);
    r = tv_grade(boxed, CEL_TASK_MATH, "The answer is 4", "4", NULL, 0);
    assert_true(r.correct && !r.format_ok && r.reward == 0.0);
    assert_string_equal(r.reason, "bad_format");
    r = tv_grade(line, CEL_TASK_MATH, "work\nAnswer: 4", "4", NULL, 0);
    assert_true(r.format_ok && r.reward == 1.0);
    r = tv_grade(line, CEL_TASK_MATH, "work\n**Final Answer:** 4", "4", NULL, 0);
    assert_true(r.format_ok);
    r = tv_grade(line, CEL_TASK_MATH, "the answer is 4", "4", NULL, 0);
    assert_false(r.format_ok);
    r = tv_grade(line, CEL_TASK_MATH, "Answer:\n\n4", "4", NULL, 0);
    assert_true(r.format_ok && r.correct);

    r = tv_grade(think, CEL_TASK_MATH, "<think>hmm</think>\\boxed{4}", "4", NULL, 0);
    assert_true(r.correct && r.format_ok && r.reward == 1.0);
    r = tv_grade(think, CEL_TASK_MATH, "hmm</think>\\boxed{4}", "4", NULL, 0); /* <think> was in the prompt */
    assert_true(r.format_ok);
    r = tv_grade(think, CEL_TASK_MATH, "<think>hmm \\boxed{4}", "4", NULL, 0); /* never closed */
    assert_false(r.format_ok);
    assert_true(r.reward == 0.25);
    r = tv_grade(think, CEL_TASK_MATH, "<think>a</think><think>b</think>\\boxed{4}", "4", NULL, 0);
    assert_false(r.format_ok);
    r = tv_grade(think, CEL_TASK_MATH, "</think>x<think>\\boxed{4}", "4", NULL, 0);
    assert_false(r.format_ok);
    r = tv_grade(think, CEL_TASK_MATH, "<think>\\boxed{4}</think>", "4", NULL, 0); /* nothing after */
    assert_false(r.format_ok);
    r = tv_grade(think, CEL_TASK_MATH, "<think>x</think>\\boxed{5}", "4", NULL, 0);
    assert_true(!r.correct && r.format_ok && r.reward == 0.1);
    r = tv_grade(think, CEL_TASK_MATH, "<think>x \\boxed{5}", "4", NULL, 0);
    assert_true(!r.correct && !r.format_ok && r.reward == -1.0);

    r = tv_grade(both, CEL_TASK_MATH, "\\boxed{4}", "4", NULL, 0);
    assert_false(r.format_ok);
    r = tv_grade(both, CEL_TASK_MATH, "\\boxed{4}\nAnswer: 4", "4", NULL, 0);
    assert_true(r.format_ok);
    cel_verifier_free(boxed);
    cel_verifier_free(line);
    cel_verifier_free(think);
    cel_verifier_free(both);
}

/* Over-size or adversarial input scores 0 with a reason, quickly. */
static void test_bounds_fail_closed(void **state)
{
    (void)state;
    cel_verify_config c;
    cel_verify_config_default(&c);
    c.max_response_bytes = 1000;
    cel_verifier *v = tv_make(&c);
    char *big = malloc(5000);
    memset(big, 'a', 4999);
    big[4999] = 0;
    cel_verify_result r = tv_grade(v, CEL_TASK_MATH, big, "1", NULL, 0);
    assert_false(r.correct);
    assert_string_equal(r.reason, "too_long");
    cel_verifier_free(v);
    free(big);

    v = tv_make(NULL);
    /* deep nesting: the parser's depth bound */
    size_t n = 3000;
    char *deep = malloc(2 * n + 32);
    strcpy(deep, "\\boxed{");
    size_t k = strlen(deep);
    for (size_t i = 0; i < 600; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (size_t i = 0; i < 600; i++) deep[k++] = ')';
    deep[k++] = '}';
    deep[k] = 0;
    uint64_t t0 = cel_now_ns();
    r = tv_grade(v, CEL_TASK_MATH, deep, "1", NULL, 0);
    assert_false(r.correct);
    assert_string_equal(r.reason, "too_deep");
    /* nested \frac and \sqrt */
    k = strlen("\\boxed{");
    for (size_t i = 0; i < 300; i++) memcpy(deep + k, "\\sqrt{", 6), k += 6;
    deep[k++] = '4';
    for (size_t i = 0; i < 300; i++) deep[k++] = '}';
    deep[k++] = '}';
    deep[k] = 0;
    r = tv_grade(v, CEL_TASK_MATH, deep, "1", NULL, 0);
    assert_false(r.correct);
    free(deep);
    /* a long flat sum hits the work budget, not the clock */
    cel_verify_config_default(&c);
    c.work_budget = 2000;
    cel_verifier *small = tv_make(&c);
    cel_buf b;
    cel_buf_init(&b);
    cel_buf_puts(&b, "\\boxed{");
    for (int i = 0; i < 900; i++) cel_buf_puts(&b, "x+");
    cel_buf_puts(&b, "1}");
    r = tv_grade(small, CEL_TASK_MATH, b.data, "900x+1", NULL, 0);
    assert_false(r.correct);
    assert_string_equal(r.reason, "work_budget");
    /* with the default budget the same sum is graded (and correct) */
    r = tv_grade(v, CEL_TASK_MATH, b.data, "900x+1", NULL, 0);
    assert_true(r.correct);
    cel_buf_free(&b);
    /* exponent towers stay finite and quick */
    r = tv_grade(v, CEL_TASK_MATH, "\\boxed{9^{9^{9^{9}}}}", "1", NULL, 0);
    assert_false(r.correct);
    r = tv_grade(v, CEL_TASK_MATH, "\\boxed{100000!}", "1", NULL, 0);
    assert_false(r.correct);
    assert_true(cel_now_ns() - t0 < 2000000000ull);
    cel_verifier_free(small);
    /* a 1 MiB response of pathological repeats, for every task: linear work
     * (the unclosed-\boxed{ case was quadratic in a first version: 40 s) */
    static const char *const pats[] = {"\\boxed{", "\\boxed{(", "answer is: ", "option A is ", "$1$ ", "\\(", "{{{",
                                       "}}}", "The answer is A or ", "\\frac{", "<think>", "</think>"};
    size_t big_n = (size_t)1 << 20;
    char *rep = malloc(big_n + 1);
    for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++) {
        size_t m = strlen(pats[p]);
        for (size_t i = 0; i < big_n; i++) rep[i] = pats[p][i % m];
        rep[big_n] = 0;
        for (int task = CEL_TASK_MATH; task <= CEL_TASK_OPEN; task++) {
            uint64_t t1 = cel_now_ns();
            r = tv_grade(v, (cel_task)task, rep, task == CEL_TASK_MCQ ? "C" : "1", NULL, 0);
            uint64_t dt = cel_now_ns() - t1;
            if (dt > 500000000ull) printf("slow: pattern %zu task %d: %.1f ms\n", p, task, (double)dt / 1e6);
            assert_true(dt < 500000000ull); /* well under a second even on a loaded machine */
        }
    }
    free(rep);
    cel_verifier_free(v);
}

/* A reference written as a long worked solution: its last \boxed{} is the
 * gold answer even past max_answer_bytes; the fallback source is reported. */
static void test_worked_reference_and_sources(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    cel_buf ref;
    cel_buf_init(&ref);
    for (int i = 0; i < 200; i++) cel_buf_puts(&ref, "We add the next term and simplify the sum again. ");
    cel_buf_puts(&ref, "So the total is $\\boxed{\\frac{7}{3}}$.");
    assert_true(ref.len > 4096);
    cel_verify_result r = tv_grade(v, CEL_TASK_MATH, "Answer: $2\\frac13$", ref.data, NULL, 0);
    assert_true(r.correct);
    r = tv_grade(v, CEL_TASK_MATH, "Answer: $2\\frac14$", ref.data, NULL, 0);
    assert_false(r.correct);
    cel_buf_free(&ref);
    r = tv_grade(v, CEL_TASK_MATH, "we find the point $(3, 4)$ works", "(3,4)", NULL, 0);
    assert_true(r.correct);
    assert_int_equal(r.source, CEL_EXTRACT_LAST_MATH);
    assert_string_equal(cel_extract_source_name(r.source), "last_math");
    assert_string_equal(r.extracted, "(3, 4)");
    r = tv_grade(v, CEL_TASK_MATH, "with $x$ we get 12 in the end", "12", NULL, 0);
    assert_true(r.correct);
    assert_int_equal(r.source, CEL_EXTRACT_LAST_NUMBER);
    cel_verifier_free(v);
}

static void test_invalid_items(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    cel_verify_item it;
    memset(&it, 0, sizeof it);
    cel_verify_result r;
    cel_error e;
    it.reference = "1";
    assert_int_equal(cel_verify_grade(v, &it, &r, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "response"));
    it.response = "1";
    it.reference = NULL;
    assert_int_equal(cel_verify_grade(v, &it, &r, &e), CEL_ERR_INVALID);
    it.reference = "1";
    it.task = (cel_task)42;
    assert_int_equal(cel_verify_grade(v, &it, &r, &e), CEL_ERR_INVALID);
    it.task = CEL_TASK_MCQ;
    it.reference = "12";
    assert_int_equal(cel_verify_grade(v, &it, &r, &e), CEL_ERR_INVALID);
    assert_false(r.correct);
    /* response_len limits what is read: "4" of "4 garbage" */
    it.task = CEL_TASK_MATH;
    it.reference = "4";
    it.response = "\\boxed{4}\\boxed{5}";
    it.response_len = 9;
    assert_int_equal(cel_verify_grade(v, &it, &r, &e), CEL_OK);
    assert_true(r.correct);
    cel_verifier_free(v);
}

static void test_advantages(void **state)
{
    (void)state;
    double r[] = {1, 0, 0, 1, 1, 0.5};
    uint64_t g[] = {7, 7, 7, 7, 9, 11};
    double a[6];
    assert_int_equal(cel_advantages(r, g, 6, CEL_ADV_GRPO, false, a, NULL), CEL_OK);
    /* group 7: mean 0.5, unbiased std sqrt(1/3) */
    double sd = sqrt(1.0 / 3.0);
    assert_true(fabs(a[0] - 0.5 / (sd + 1e-6)) < 1e-9);
    assert_true(fabs(a[1] + 0.5 / (sd + 1e-6)) < 1e-9);
    assert_true(a[4] == 0.0 && a[5] == 0.0); /* groups of one */
    assert_int_equal(cel_advantages(r, g, 6, CEL_ADV_DR_GRPO, false, a, NULL), CEL_OK);
    assert_true(fabs(a[0] - 0.5) < 1e-12 && fabs(a[2] + 0.5) < 1e-12 && a[4] == 0.0);
    assert_int_equal(cel_advantages(r, g, 6, CEL_ADV_RLOO, false, a, NULL), CEL_OK);
    /* r0 = 1, others mean (0+0+1)/3 */
    assert_true(fabs(a[0] - (1.0 - 1.0 / 3.0)) < 1e-12);
    assert_true(fabs(a[1] - (0.0 - 2.0 / 3.0)) < 1e-12);
    assert_true(a[5] == 0.0);
    /* equal rewards: zero advantage, no division blow-up */
    double same[] = {1, 1, 1};
    uint64_t sg[] = {1, 1, 1};
    assert_int_equal(cel_advantages(same, sg, 3, CEL_ADV_GRPO, false, a, NULL), CEL_OK);
    assert_true(a[0] == 0 && a[1] == 0 && a[2] == 0);
    /* whitening: mean 0, std 1 over the batch */
    assert_int_equal(cel_advantages(r, g, 6, CEL_ADV_DR_GRPO, true, a, NULL), CEL_OK);
    double m = 0, v = 0;
    for (int i = 0; i < 6; i++) m += a[i];
    m /= 6;
    for (int i = 0; i < 6; i++) v += (a[i] - m) * (a[i] - m);
    v /= 5;
    assert_true(fabs(m) < 1e-9 && fabs(sqrt(v) - 1.0) < 1e-4);
    double nan_r[] = {NAN};
    uint64_t one[] = {0};
    assert_int_equal(cel_advantages(nan_r, one, 1, CEL_ADV_GRPO, false, a, NULL), CEL_ERR_INVALID);
    assert_int_equal(cel_advantages(r, g, 6, (cel_adv_mode)9, false, a, NULL), CEL_ERR_INVALID);
    assert_int_equal(cel_advantages(NULL, NULL, 0, CEL_ADV_GRPO, false, NULL, NULL), CEL_OK);
}

static void test_batch(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    enum { N = 400 };
    cel_verify_item *items = calloc(N, sizeof *items);
    cel_verify_result *r1 = calloc(N, sizeof *r1), *r4 = calloc(N, sizeof *r4);
    char (*resp)[64] = calloc(N, 64);
    char (*grp)[16] = calloc(N, 16);
    for (int i = 0; i < N; i++) {
        snprintf(resp[i], 64, "so \\boxed{%d}", i % 3 == 0 ? 5 : 6);
        snprintf(grp[i], 16, "g%d", i / 4);
        items[i].task = CEL_TASK_MATH;
        items[i].response = resp[i];
        items[i].reference = "5";
        items[i].group = (i % 50 == 49) ? NULL : grp[i];
    }
    /* one bad item: an error record, not a failed batch */
    items[10].reference = NULL;
    size_t nerr = 99;
    assert_int_equal(cel_verify_batch(v, items, N, CEL_ADV_GRPO, false, 1, r1, &nerr, NULL), CEL_OK);
    assert_int_equal(nerr, 1);
    assert_true(strncmp(r1[10].reason, "error: ", 7) == 0);
    assert_int_equal(cel_verify_batch(v, items, N, CEL_ADV_GRPO, false, 4, r4, &nerr, NULL), CEL_OK);
    assert_int_equal(nerr, 1);
    for (int i = 0; i < N; i++) {
        assert_true(r1[i].reward == r4[i].reward);
        assert_true(r1[i].advantage == r4[i].advantage);
        assert_true(r1[i].has_advantage);
        if (i != 10) assert_int_equal(r1[i].correct, i % 3 == 0);
    }
    /* group g0 = items 0..3: rewards 1,0,0,1 */
    assert_true(r1[0].advantage > 0.8 && r1[1].advantage < -0.8);
    assert_true(r1[49].advantage == 0.0); /* no group: a group of one */
    assert_int_equal(cel_verify_batch(v, items, N, CEL_ADV_NONE, false, 2, r4, NULL, NULL), CEL_OK);
    assert_false(r4[0].has_advantage);
    assert_int_equal(cel_verify_batch(v, items, 0, CEL_ADV_GRPO, false, 2, r4, NULL, NULL), CEL_OK);
    free(items), free(r1), free(r4), free(resp), free(grp);
    cel_verifier_free(v);
}

/* Many threads share one verifier and agree with the single-threaded answers. */
typedef struct {
    const cel_verifier *v;
    int bad;
} tharg;

static const struct {
    cel_task t;
    const char *resp, *ref;
    int ok;
} mix[] = {
    {CEL_TASK_MATH, "\\boxed{\\frac{1}{2}}", "0.5", 1}, {CEL_TASK_MATH, "The answer is x^2-1", "(x-1)(x+1)", 1},
    {CEL_TASK_MCQ, "The answer is (C).", "C", 1},       {CEL_TASK_MCQ, "The answer is A or B", "A", 0},
    {CEL_TASK_OPEN, "Answer: Paris", "paris", 1},        {CEL_TASK_MATH, "\\boxed{(1,2)}", "[1,2]", 0},
};

static void *worker(void *p)
{
    tharg *a = p;
    for (int rep = 0; rep < 500; rep++)
        for (size_t i = 0; i < sizeof mix / sizeof mix[0]; i++) {
            cel_verify_result r = tv_grade(a->v, mix[i].t, mix[i].resp, mix[i].ref, NULL, 0);
            if ((int)r.correct != mix[i].ok) a->bad++;
        }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    pthread_t th[4];
    tharg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].v = v, args[i].bad = 0;
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    cel_verifier_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_parsing), cmocka_unit_test(test_config_validation),
        cmocka_unit_test(test_format_and_rewards), cmocka_unit_test(test_bounds_fail_closed),
        cmocka_unit_test(test_invalid_items),      cmocka_unit_test(test_advantages),
        cmocka_unit_test(test_worked_reference_and_sources),
        cmocka_unit_test(test_batch),              cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
