/* test_gen_fixture.h - fixtures shared by the generators' pipeline unit tests
 * (test_gen_pipeline.c, test_gen_difficulty.c, test_job.c, test_job_spec.c): template
 * sets from source strings, JSONL parsing helpers, a seeded MIND dialogue,
 * the scripted CrossThink backend with its runner, and what the job tests
 * share (pipeline maker context, stopper hooks, options). Header-only test code; include after cmocka.h and test_gen_mock.h.
 * The functions are static inline so that a test using only some of them
 * (test_job.c, test_job_spec.c) compiles without
 * unused-function warnings. */
#ifndef TEST_GEN_FIXTURE_H
#define TEST_GEN_FIXTURE_H

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "celine/generate.h"
#include "celine/job.h"
#include "test_gen_mock.h"

static inline cel_template_set *make_set(const char *const *srcs, size_t n)
{
    cel_template_set *s;
    cel_error e;
    assert_int_equal(cel_template_set_create(&s, &e), CEL_OK);
    for (size_t i = 0; i < n; i++) {
        cel_template *t;
        cel_status st = cel_template_parse(NULL, srcs[i], strlen(srcs[i]), &t, &e);
        if (st) fprintf(stderr, "%s\n", e.msg);
        assert_int_equal(st, CEL_OK);
        assert_int_equal(cel_template_set_add(s, t, &e), CEL_OK);
    }
    return s;
}

static inline json_t *parse_line(const char *line, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je);
    assert_non_null(j);
    return j;
}

/* Splits JSONL into an array of objects. */
static inline json_t *lines(const cel_buf *b)
{
    json_t *arr = json_array();
    const char *p = b->data ? b->data : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_array_append_new(arr, parse_line(p, (size_t)(nl - p)));
        p = nl + 1;
    }
    return arr;
}

static inline const char *sget(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* ================================================================== MIND */

/* Writes a 4-turn dialogue of ~60 words between speakers a and b that depends
 * on the seed (so a test can tell which unit seed produced a record). */
static inline void dialogue(cel_buf *out, const char *a, const char *b, uint64_t seed)
{
    static const char *const turns[4] = {
        "could you explain why the first equation in this chunk holds for every value we consider",
        "certainly, we start from the definition given above and substitute each known quantity step by step",
        "so after substituting we simplify both sides and compare the remaining terms carefully, right",
        "exactly, and once both sides agree the claim follows directly from the stated assumptions"};
    for (int t = 0; t < 4; t++)
        cel_buf_printf(out, "%s: (seed %llu) %s\n", t % 2 ? b : a, (unsigned long long)(seed % 100000), turns[t]);
}

/* ============================================================ CrossThink */

static const char *const ct_srcs[] = {
    "@name qa_mcq\n@kind qa\n@task mcq\n@user\nSYNTH mcq {{n}}\n{{text}}\n",
    "@name qa_open\n@kind qa\n@task open\n@user\nSYNTH open {{n}}\n{{text}}\n",
    "@name rl_mcq\n@kind rl\n@task mcq\n@user\nSOLVE {{question}}\n{{options}}\n",
    "@name rl_open\n@kind rl\n@task open\n@user\nSOLVE {{question}}\n",
};

static inline cel_finish ct_script(void *ud, const char *prompt, uint64_t seed, uint32_t sample, cel_buf *out)
{
    (void)ud;
    (void)seed;
    if (strncmp(prompt, "SYNTH mcq", 9) == 0) {
        const char *tag = strstr(prompt, "DOCB") ? "B" : "A";
        cel_buf_printf(out, "Question: Shared question about sums?\nA) 1\nB) 2\nC) 3\nD) 4\nAnswer: B\n\n"
                            "Question: EASY question %s one?\nA) red\nB) blue\nAnswer: A\n\n"
                            "Question: HARD question %s two?\nA) cat\nB) dog\nC) a very long option text with many many words in it here\nAnswer: C\n\n"
                            "Question: Broken gold %s?\nA) x\nB) y\nAnswer: F\n",
                       tag, tag, tag);
    } else if (strncmp(prompt, "SYNTH open", 10) == 0) {
        if (strstr(prompt, "DOCB")) return CEL_FINISH_STOP; /* empty output: no items */
        cel_buf_puts(out, "Question: What is six times seven?\nAnswer: 42\n\n"
                          "Question: Describe it at length?\nAnswer: one two three four five six seven eight nine ten eleven\n");
    } else if (strncmp(prompt, "SOLVE", 5) == 0) {
        /* the difficulty filter: EASY items are always solved, HARD ones by sample 0 only */
        if (strstr(prompt, "EASY")) cel_buf_puts(out, "Thinking... \\boxed{A}");
        else if (strstr(prompt, "HARD")) cel_buf_puts(out, sample == 0 ? "\\boxed{C}" : "\\boxed{A}");
        else if (strstr(prompt, "six times")) cel_buf_puts(out, "\\boxed{42}");
        else cel_buf_puts(out, "\\boxed{B}");
    }
    return CEL_FINISH_STOP;
}

static inline void run_ct(const cel_crossthink_config *cfg, const cel_gen_doc *docs, size_t n, mock_order order, collect *c,
                   cel_gen_stats *st)
{
    mock_backend *m = mock_new(ct_script, NULL, order, 3);
    cel_gen_sink sink = {collect_record, collect_drop, c};
    cel_gen_pipeline *p;
    cel_error e;
    cel_status s = cel_crossthink_create(cfg, &m->base, &sink, &p, &e);
    if (s) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(s, CEL_OK);
    for (size_t i = 0; i < n; i++) assert_int_equal(cel_gen_pipeline_push(p, &docs[i], &e), CEL_OK);
    assert_int_equal(cel_gen_pipeline_drain(p, &e), CEL_OK);
    *st = *cel_gen_pipeline_stats(p);
    cel_gen_pipeline_free(p);
    cel_gen_backend_free(&m->base);
}

/* ================================================================== jobs */

/* What a job test's cel_job_pipeline_fn gets: the templates and the backend. */
typedef struct job_maker {
    cel_template_set *set;
    cel_gen_backend *be;
} job_maker;

/* A cel_job_hooks.cancelled that asks the job to stop from its at-th check on
 * (calls counts the checks), so a test can interrupt a job at many points. */
typedef struct stopper {
    int calls, at;
} stopper;
static inline bool stop_at(void *ud)
{
    stopper *s = ud;
    return ++s->calls >= s->at;
}

/* The hooks of a job that stops as stop says (NULL: runs to the end). */
static inline cel_job_hooks stop_hooks(stopper *stop)
{
    cel_job_hooks h = {0};
    h.cancelled = stop ? stop_at : NULL;
    h.ud = stop;
    return h;
}

/* The job options every job test starts from: the defaults, one input file
 * (inputs[0], which must outlive the run), out_dir out and a checkpoint at
 * every document. */
static inline void job_opts_one(cel_job_opts *o, const char *const *inputs, const char *out)
{
    cel_job_opts_default(o);
    o->inputs = inputs;
    o->n_inputs = 1;
    o->out_dir = out;
    o->checkpoint_s = 0;
}

#endif
