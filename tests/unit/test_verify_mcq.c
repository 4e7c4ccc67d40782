/* Multiple-choice grading: the final committed letter, hedges, option text. */
#include "unit/test_verify_common.h"

/* Items without options: letters A-J; the reference is the gold letter. */
static const vcase letters[] = {
    {"The answer is (C).", "C", 1},
    {"The answer is (C).", "B", 0},
    {"Answer: C", "C", 1},
    {"answer: b", "B", 1},
    {"ANSWER: D", "D", 1},
    {"**Answer:** B", "B", 1},
    {"**Answer**: B", "B", 1},
    {"The correct answer is **B**.", "B", 1},
    {"\\boxed{B}", "B", 1},
    {"\\boxed{\\text{(B)}}", "B", 1},
    {"\\boxed{\\textbf{B}}", "B", 1},
    {"$\\boxed{(D)}$", "D", 1},
    {"Final answer: (A)", "A", 1},
    {"The answer is A because the others are wrong.", "A", 1},
    {"The answer is B) mitochondria", "B", 1},
    {"The answer is C. Paris is the capital.", "C", 1},
    {"Let me consider A and B. A is wrong since x. B fails too. The answer is (C).", "C", 1},
    {"Option A looks tempting. However the answer is D.", "D", 1},
    {"Option A looks tempting. However the answer is D.", "A", 0},
    {"The answer is A or B.", "A", 0},
    {"The answer is A or B.", "B", 0},
    {"The answer is either C or D", "C", 0},
    {"Answer: A, C", "A", 0},
    {"Answer: A and C", "C", 0},
    {"Answer: A/B", "A", 0},
    {"\\boxed{AC}", "A", 0},
    {"The answer is (K).", "C", 0},
    {"Answer: Z", "C", 0},
    {"I think it's B.\nThe answer is B", "B", 1},
    {"The answer is not A.\nOption C is correct.", "C", 1},
    {"After elimination, option C is the correct one.", "C", 1},
    {"Option B is correct.", "B", 1},
    {"The correct option is (E).", "E", 1},
    {"The correct choice is: J", "J", 1},
    {"I choose C", "C", 1},
    {"I'll go with D", "D", 1},
    {"Reasoning...\n\n**C**", "C", 1},
    {"Reasoning...\n(B)", "B", 1},
    {"Reasoning...\nB", "B", 1},
    {"Reasoning...\nC) The sky", "C", 1},
    {"A dog ran across the field.", "A", 0},
    {"", "A", 0},
    {"I do not know.", "A", 0},
    {"<think>The answer is A</think>The answer is B", "B", 1},
    {"<think>The answer is A</think>The answer is B", "A", 0},
    {"The answer is \\boxed{C}", "C", 1},
    {"\\boxed{A} hmm wait \\boxed{B}", "B", 1},
    {"The answer is (c)", "C", 1},
    {"The answer is: **(H)**", "H", 1},
    {"Answer: (J)", "J", 1},
    {"The final answer is $\\boxed{\\text{D}}$", "D", 1},
    {"The answer is A", "(A)", 1},
    {"Answer - b", "B", 1},
    {"final answer - (D)", "D", 1},
    {"Hence the final choice is E.", "E", 1},
    {"My final choice: (F)", "F", 1},
    {"We pick (G).", "G", 1},
    {"So (D) is correct.", "D", 1},
    {"Thus B is the correct answer.", "B", 1},
    {"C is the answer", "C", 1},
    {"A is the best way to see it, but the answer is D", "D", 1},
    {"Option D.", "D", 1},
    {"Choice A.", "A", 1},
    {"A. one\nB. two\nC. three\nTherefore: B", "B", 1},
    {"The options are A, B, C, and D", "A", 0},
    {"No clear answer here", "B", 0},
    {"Réponse : C", "C", 1},
    {"Respuesta: (B)", "B", 1},
    {"Antwort: D", "D", 1},
    {"答案：C", "C", 1},
    {"Ответ: B", "B", 1},
    {"Answer: Ｃ", "C", 1},
    {"答え：B", "B", 1},
    {"정답: D", "D", 1},
    {"الإجابة: ج", "C", 1},
    {"উত্তর: ব", "B", 1},
    {"Cevap: A", "A", 1},
    {"I believe it is (B), but A is possible.", "B", 1},
    {"It is A good question. The answer is C", "C", 1},
    {"The answer is A but maybe B", "A", 1},
};

static void test_mcq_letters(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    int fails = tv_run_table(v, CEL_TASK_MCQ, "mcq_letters", letters, NROWS(letters), NULL);
    cel_verifier_free(v);
    assert_int_equal(fails, 0);
}

static const char *const capitals[] = {"Berlin", "Paris", "Madrid", "Rome"};

typedef struct {
    const char *resp;
    const char *ref;
    int expect;
    const char *reason;
} mrow;

static const mrow with_choices[] = {
    {"The answer is (B).", "B", 1, "correct"},
    {"The answer is Paris.", "B", 1, "correct"},
    {"The answer is paris", "B", 1, "correct"},
    {"\\boxed{Paris}", "B", 1, "correct"},
    {"\\boxed{\\text{Paris}}", "B", 1, "correct"},
    {"The answer is Rome, because it is old.", "B", 0, "wrong_answer"},
    {"The answer is (E).", "B", 0, "invalid_option"},
    {"The answer is B or C", "B", 0, "hedged"},
    {"Answer: B, C", "B", 0, "multiple_answers"},
    {"no idea", "B", 0, "no_answer"},
    {"Answer: D", "Rome", 1, "correct"}, /* a reference given as the option text */
    {"Answer: D", "D", 1, "correct"},
    {"Answer: B", "(B)", 1, "correct"},
};

static void test_mcq_choices(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    int fails = 0;
    for (size_t i = 0; i < NROWS(with_choices); i++) {
        cel_verify_result r = tv_grade(v, CEL_TASK_MCQ, with_choices[i].resp, with_choices[i].ref, capitals, 4);
        if ((int)r.correct != with_choices[i].expect || strcmp(r.reason, with_choices[i].reason) != 0) {
            printf("  [choices #%zu] <%s> ref %s: got %d/%s want %d/%s\n", i, with_choices[i].resp,
                   with_choices[i].ref, r.correct, r.reason, with_choices[i].expect, with_choices[i].reason);
            fails++;
        }
    }
    /* what was extracted and from where */
    cel_verify_result r = tv_grade(v, CEL_TASK_MCQ, "So. The answer is Paris.", "B", capitals, 4);
    assert_string_equal(r.extracted, "B");
    assert_int_equal(r.source, CEL_EXTRACT_MCQ_TEXT);
    r = tv_grade(v, CEL_TASK_MCQ, "So. The answer is (B).", "B", capitals, 4);
    assert_int_equal(r.source, CEL_EXTRACT_ANSWER_PHRASE);
    assert_string_equal(r.extracted, "B");
    r = tv_grade(v, CEL_TASK_MCQ, "x \\boxed{B}", "B", capitals, 4);
    assert_int_equal(r.source, CEL_EXTRACT_BOXED);
    r = tv_grade(v, CEL_TASK_MCQ, "I choose B", "B", capitals, 4);
    assert_int_equal(r.source, CEL_EXTRACT_MCQ_LETTER);
    /* auto: options make it MCQ */
    r = tv_grade(v, CEL_TASK_AUTO, "The answer is B", "B", capitals, 4);
    assert_int_equal(r.task, CEL_TASK_MCQ);
    assert_true(r.correct);
    r = tv_grade(v, CEL_TASK_AUTO, "The answer is B", "B", NULL, 0);
    assert_int_equal(r.task, CEL_TASK_MCQ);
    /* a reference that is neither a letter of the options nor an option's text is an error */
    cel_verify_item it;
    memset(&it, 0, sizeof it);
    it.task = CEL_TASK_MCQ;
    it.response = "Answer: A";
    it.reference = "F";
    it.choices = capitals;
    it.n_choices = 4;
    cel_error e;
    cel_error_clear(&e);
    assert_int_equal(cel_verify_grade(v, &it, &r, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "not a letter"));
    it.reference = "London";
    assert_int_equal(cel_verify_grade(v, &it, &r, &e), CEL_ERR_INVALID);
    cel_verifier_free(v);
    assert_int_equal(fails, 0);
}

/* More options than A-J: K is valid when the item has 12 options. */
static void test_mcq_many_options(void **state)
{
    (void)state;
    const char *opts[12] = {"o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8", "o9", "o10", "o11", "o12"};
    cel_verifier *v = tv_make(NULL);
    cel_verify_result r = tv_grade(v, CEL_TASK_MCQ, "The answer is (K)", "K", opts, 12);
    assert_true(r.correct);
    r = tv_grade(v, CEL_TASK_MCQ, "The answer is (M)", "K", opts, 12);
    assert_false(r.correct);
    assert_string_equal(r.reason, "invalid_option");
    r = tv_grade(v, CEL_TASK_MCQ, "The answer is (C)", "C", opts, 3);
    assert_true(r.correct);
    r = tv_grade(v, CEL_TASK_MCQ, "The answer is (D)", "C", opts, 3);
    assert_string_equal(r.reason, "invalid_option");
    cel_verifier_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mcq_letters),
        cmocka_unit_test(test_mcq_choices),
        cmocka_unit_test(test_mcq_many_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
