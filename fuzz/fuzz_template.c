/* libFuzzer target: the template parser and the parsers of generated text.
 * Input: [selector byte][bytes]. Selector % 4 picks: 0 a template file
 * (parsed, and rendered with the rest as {{text}} when it loads); 1 QA items
 * (MCQ and open) and Diverse-QA pairs; 2 a MIND conversation check and a
 * knowledge-list clean-up; 3 LaTeX-aware chunking and Nemotron-CC
 * segmentation with the approximate counter. None may crash, hang or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "celine/generate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    cel_error e;
    switch (data[0] % 4) {
    case 0: {
        cel_template *t = NULL;
        if (cel_template_parse("fuzz.tmpl", s, n, &t, &e) == CEL_OK) {
            cel_buf sys, usr;
            cel_buf_init(&sys);
            cel_buf_init(&usr);
            cel_tmpl_var vars[] = {{"text", s, n}, {"speaker1", "A", 1}, {"speaker2", "B", 1}, {"style", "x", 1},
                                   {"n", "3", 1}, {"question", "q?", 2}, {"options", "A) a", 4}};
            (void)cel_template_render(t, vars, sizeof vars / sizeof vars[0], &sys, &usr, &e);
            cel_buf_free(&sys);
            cel_buf_free(&usr);
            cel_template_free(t);
        }
        break;
    }
    case 1: {
        for (int k = 0; k < 2; k++) {
            cel_qa_item *it = NULL;
            size_t ni = 0;
            uint64_t drops[CEL_DROP__COUNT] = {0};
            if (cel_gen_parse_qa_items(s, n, k ? CEL_TASK_OPEN : CEL_TASK_MCQ, 10, &it, &ni, drops, &e) == CEL_OK) {
                for (size_t i = 0; i < ni; i++) {
                    if (it[i].task == CEL_TASK_MCQ) (void)cel_qa_item_to_open(&it[i], 10, &e);
                    cel_qa_item_free(&it[i]);
                }
                free(it);
            }
        }
        cel_buf out;
        cel_buf_init(&out);
        size_t kept, parsed;
        (void)cel_gen_diverse_qa("source", 6, 400, s, n, 150, 1, &out, &kept, &parsed, &e);
        cel_buf_free(&out);
        break;
    }
    case 2: {
        const char *const sp[2] = {"Teacher", "Student"};
        cel_buf out;
        cel_buf_init(&out);
        cel_gen_drop why;
        (void)cel_mind_check_dialogue(s, n, sp, 2, &out, &why);
        cel_buf_reset(&out);
        (void)cel_gen_knowledge_list_clean(s, n, &out);
        cel_buf_free(&out);
        (void)cel_gen_repetition(s, n, 5);
        (void)cel_gen_overlap(s, n, s, n / 2, 8);
        break;
    }
    default: {
        cel_gen_counter c = cel_gen_counter_approx();
        cel_chunk *ch = NULL;
        size_t nc = 0, nl, ns;
        size_t budget = 1 + (n % 64);
        if (cel_gen_chunk(s, n, budget, &c, &ch, &nc, &e) == CEL_OK) free(ch);
        if (cel_gen_segment(s, n, budget, 2, &c, &ch, &nc, &nl, &ns, &e) == CEL_OK) free(ch);
        break;
    }
    }
    return 0;
}
