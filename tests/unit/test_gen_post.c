/* Unit tests for the post-processors and filters on hand-written outputs:
 * MIND dialogue structure, Diverse-QA pairs, knowledge lists, CrossThink
 * items (MCQ gold among options, short open answers, conversion). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"

static const char *const TS[2] = {"Teacher", "Student"};

static cel_gen_drop check(const char *text, cel_buf *out)
{
    cel_gen_drop why;
    cel_buf_reset(out);
    assert_int_equal(cel_mind_check_dialogue(text, strlen(text), TS, 2, out, &why), CEL_OK);
    return why;
}

static void test_dialogue(void **state)
{
    (void)state;
    cel_buf out;
    cel_buf_init(&out);
    /* preamble removed, bold labels normalised, multi-line turns kept */
    assert_int_equal(check("Sure! Here is the conversation:\n\n"
                           "**Student:** What is $x$?\n"
                           "**Teacher:** It is the unknown.\nWe solve for it.\n"
                           "Student: So $x = 2$?\n\n"
                           "teacher: Yes, $x = 2$.",
                           &out),
                     CEL_DROP__COUNT);
    assert_string_equal(out.data, "Student: What is $x$?\n\nTeacher: It is the unknown.\nWe solve for it.\n\n"
                                  "Student: So $x = 2$?\n\nTeacher: Yes, $x = 2$.");
    /* only one turn each */
    assert_int_equal(check("Student: Why?\nTeacher: Because.", &out), CEL_DROP_STRUCTURE);
    /* no recognised speakers at all */
    assert_int_equal(check("Alice: hi\nBob: hello\nAlice: bye\nBob: bye", &out), CEL_DROP_STRUCTURE);
    /* the same speaker twice in a row */
    assert_int_equal(check("Student: a\nStudent: b\nTeacher: c\nTeacher: d", &out), CEL_DROP_NOT_ALTERNATING);
    /* an empty turn */
    assert_int_equal(check("Student: a\nTeacher:\nStudent: b\nTeacher: c", &out), CEL_DROP_STRUCTURE);
    /* a label mentioned inside a line is not a turn */
    assert_int_equal(check("Student: the Teacher: said so\nTeacher: yes\nStudent: ok\nTeacher: fine", &out),
                     CEL_DROP__COUNT);
    /* longest label wins when one is a prefix of the other */
    const char *const P[2] = {"Student", "Student B"};
    cel_gen_drop why;
    cel_buf_reset(&out);
    const char *t = "Student B: one\nStudent: two\nStudent B: three\nStudent: four";
    assert_int_equal(cel_mind_check_dialogue(t, strlen(t), P, 2, &out, &why), CEL_OK);
    assert_int_equal(why, CEL_DROP__COUNT);
    cel_buf_free(&out);
}

static void test_qa_pairs_and_diverse(void **state)
{
    (void)state;
    const char *out = "Here are some questions.\n"
                      "Question: Is water wet?\nAnswer: Yes.\n\n"
                      "**Question 2:** Which is larger?\nA) 3\nB) 5\n**Answer:** B) 5\n\n"
                      "1. Q: Compare cats and dogs.\nA: Cats purr;\ndogs bark.\n"
                      "Question: dangling without answer\n";
    cel_qa_pair *p;
    size_t n;
    cel_error e;
    assert_int_equal(cel_gen_parse_qa_pairs(out, strlen(out), &p, &n, &e), CEL_OK);
    assert_int_equal(n, 3);
    assert_int_equal(p[0].q_len, strlen("Is water wet?"));
    assert_memory_equal(p[1].q, "Which is larger?\nA) 3\nB) 5", p[1].q_len);
    assert_memory_equal(p[1].a, "B) 5", p[1].a_len);
    assert_memory_equal(p[2].a, "Cats purr;\ndogs bark.", p[2].a_len);
    free(p);

    /* 300 source tokens -> 2 pairs kept of 3, appended to the source; shuffle depends on the seed only */
    cel_buf a, b;
    cel_buf_init(&a);
    cel_buf_init(&b);
    size_t kept, parsed;
    assert_int_equal(cel_gen_diverse_qa("  Source text.  ", 16, 300, out, strlen(out), 150, 42, &a, &kept, &parsed, &e),
                     CEL_OK);
    assert_int_equal(kept, 2);
    assert_int_equal(parsed, 3);
    assert_memory_equal(a.data, "Source text.\n\nQuestion: ", 24);
    size_t qcount = 0;
    for (const char *s = a.data; (s = strstr(s, "\nQuestion: ")); s++) qcount++;
    assert_int_equal(qcount, 2);
    assert_null(strstr(a.data, "**")); /* emphasis removed */
    assert_int_equal(cel_gen_diverse_qa("Source text.", 12, 300, out, strlen(out), 150, 42, &b, &kept, &parsed, &e),
                     CEL_OK);
    assert_string_equal(a.data, b.data);
    /* a different seed gives some other order over a few tries */
    bool differs = false;
    for (uint64_t s = 1; s < 20 && !differs; s++) {
        cel_buf_reset(&b);
        cel_gen_diverse_qa("Source text.", 12, 300, out, strlen(out), 150, s, &b, &kept, &parsed, &e);
        differs = strcmp(a.data, b.data) != 0;
    }
    assert_true(differs);
    /* short source: at least one pair; long source: all pairs */
    cel_buf_reset(&b);
    cel_gen_diverse_qa("S", 1, 10, out, strlen(out), 150, 1, &b, &kept, &parsed, &e);
    assert_int_equal(kept, 1);
    cel_buf_reset(&b);
    cel_gen_diverse_qa("S", 1, 5000, out, strlen(out), 150, 1, &b, &kept, &parsed, &e);
    assert_int_equal(kept, 3);
    /* nothing parsable */
    cel_buf_reset(&b);
    assert_int_equal(cel_gen_diverse_qa("S", 1, 500, "no pairs here", 13, 150, 1, &b, &kept, &parsed, &e), CEL_OK);
    assert_int_equal(parsed, 0);
    assert_int_equal(b.len, 0);
    cel_buf_free(&a);
    cel_buf_free(&b);
}

static void test_knowledge_list(void **state)
{
    (void)state;
    const char *in = "- Water boils at 100 C.\n"
                     "  * The **speed** of light is 299,792 km/s.\n"
                     "\n"
                     "3. Paris is the capital of France.\n"
                     "\xe2\x80\xa2 A byte has 8 bits.\n"
                     "(a) Pi is about 3.14159.\n"
                     "b) e is about 2.718.\n"
                     "-5 is negative.\n"
                     "1.5 is a number.\n";
    cel_buf out;
    cel_buf_init(&out);
    assert_int_equal(cel_gen_knowledge_list_clean(in, strlen(in), &out), CEL_OK);
    assert_string_equal(out.data, "Water boils at 100 C.\n"
                                  "The speed of light is 299,792 km/s.\n"
                                  "Paris is the capital of France.\n"
                                  "A byte has 8 bits.\n"
                                  "Pi is about 3.14159.\n"
                                  "e is about 2.718.\n"
                                  "-5 is negative.\n"
                                  "1.5 is a number.");
    cel_buf_free(&out);
}

static void test_items_mcq(void **state)
{
    (void)state;
    const char *out = "Here are the questions:\n\n"
                      "Question: What is 2+2?\nA) 3\nB) 4\nC) 5\nD) 22\nAnswer: B\n\n"
                      "**Question 2:** Which planet is largest?\n(A) Mars\n(B) Jupiter\n(C) Venus\n**Answer:** (B) Jupiter\n\n"
                      "Question: Gold not among options?\nA) x\nB) y\nAnswer: E\n\n"
                      "Question: Answer given as option text?\nA. red\nB. green\nC. blue\nAnswer: Blue\n\n"
                      "Question: Answer text matching nothing\nA) one\nB) two\nAnswer: three\n\n"
                      "Question: Missing answer\nA) one\nB) two\n\n"
                      "Question: Only one option\nA) one\nAnswer: A\n\n"
                      "Question: Options out of order\nA) one\nC) two\nAnswer: A\n\n"
                      "Question: Wrapped option\nA) a long option that\ncontinues here\nB) short\nAnswer: A\n"
                      "Explanation: the first option is right.\n";
    cel_qa_item *it;
    size_t n;
    uint64_t drops[CEL_DROP__COUNT] = {0};
    cel_error e;
    assert_int_equal(cel_gen_parse_qa_items(out, strlen(out), CEL_TASK_MCQ, 10, &it, &n, drops, &e), CEL_OK);
    assert_int_equal(n, 4);
    assert_string_equal(it[0].question, "What is 2+2?");
    assert_int_equal(it[0].n_options, 4);
    assert_string_equal(it[0].options[1], "4");
    assert_string_equal(it[0].answer, "B");
    assert_string_equal(it[1].question, "Which planet is largest?");
    assert_string_equal(it[1].answer, "B");
    assert_string_equal(it[2].answer, "C"); /* "Blue" matched option C's text */
    assert_string_equal(it[3].options[0], "a long option that continues here");
    assert_string_equal(it[3].answer, "A");
    assert_int_equal(drops[CEL_DROP_GOLD_NOT_IN_OPTIONS], 2);
    assert_int_equal(drops[CEL_DROP_ITEM_MALFORMED], 3);
    /* MCQ -> open: the gold option's text becomes the reference */
    assert_int_equal(cel_qa_item_to_open(&it[1], 10, &e), CEL_OK);
    assert_int_equal(it[1].task, CEL_TASK_OPEN);
    assert_string_equal(it[1].answer, "Jupiter");
    assert_int_equal(it[1].n_options, 0);
    assert_int_equal(cel_qa_item_to_open(&it[3], 3, &e), CEL_ERR_INVALID); /* 6-word gold > 3 */
    assert_int_equal(cel_qa_item_to_open(&it[1], 10, &e), CEL_ERR_INVALID); /* already open */
    for (size_t i = 0; i < n; i++) cel_qa_item_free(&it[i]);
    free(it);
}

static void test_items_open(void **state)
{
    (void)state;
    const char *out = "Question: What is the capital of France?\nAnswer: Paris\n\n"
                      "Q: How many legs does a spider have?\nA: 8\n\n"
                      "Question: Explain photosynthesis.\nAnswer: Plants turn light, water and carbon dioxide into sugar and oxygen over time.\n\n"
                      "Question: Answer on the next line?\nAnswer:\n**42**\n\n"
                      "Question: An MCQ in the open batch\nA) x\nB) y\nAnswer: A\n\n"
                      "Question: no answer at all\n";
    cel_qa_item *it;
    size_t n;
    uint64_t drops[CEL_DROP__COUNT] = {0};
    cel_error e;
    assert_int_equal(cel_gen_parse_qa_items(out, strlen(out), CEL_TASK_OPEN, 10, &it, &n, drops, &e), CEL_OK);
    assert_int_equal(n, 3);
    assert_string_equal(it[0].answer, "Paris");
    assert_string_equal(it[1].question, "How many legs does a spider have?");
    assert_string_equal(it[1].answer, "8");
    assert_string_equal(it[2].answer, "42");
    assert_int_equal(drops[CEL_DROP_ANSWER_TOO_LONG], 1);
    assert_int_equal(drops[CEL_DROP_ITEM_MALFORMED], 2);
    for (size_t i = 0; i < n; i++) cel_qa_item_free(&it[i]);
    free(it);
    /* the word limit is a parameter: 13 words pass with 13 */
    uint64_t d2[CEL_DROP__COUNT] = {0};
    assert_int_equal(cel_gen_parse_qa_items(out, strlen(out), CEL_TASK_OPEN, 13, &it, &n, d2, &e), CEL_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) cel_qa_item_free(&it[i]);
    free(it);
    assert_int_equal(cel_gen_parse_qa_items(out, strlen(out), CEL_TASK_MATH, 10, &it, &n, d2, &e), CEL_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dialogue),
        cmocka_unit_test(test_qa_pairs_and_diverse),
        cmocka_unit_test(test_knowledge_list),
        cmocka_unit_test(test_items_mcq),
        cmocka_unit_test(test_items_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
