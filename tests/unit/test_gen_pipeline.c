/* Unit tests for the MIND, rephrase and CrossThink pipelines over a scripted
 * mock backend: records and their fields, drop counts by reason, routing,
 * dedup, conversion, the difficulty filter, and determinism whatever order
 * the backend completes requests in. */
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

/* ================================================================== MIND */

static const char *const mind_srcs[] = {
    "@name alpha\n@kind mind\n@speakers Alice | Bob\n@system\nSYS alpha rules: write a careful conversation that stays "
    "strictly faithful to the context and adds nothing new at all\n@user\nSTYLE alpha "
    "between {{speaker1}} and {{speaker2}}\n{{text}}\n",
    "@name beta\n@kind mind\n@speakers Cat | Dog\n@output_tokens 300\n@user\nSTYLE beta {{style}}\n{{text}}\n",
};

static cel_finish mind_script(void *ud, const char *prompt, uint64_t seed, uint32_t sample, cel_buf *out)
{
    (void)ud;
    (void)sample;
    bool alpha = strstr(prompt, "STYLE alpha") != NULL;
    const char *a = alpha ? "Alice" : "Cat", *b = alpha ? "Bob" : "Dog";
    if (strstr(prompt, "MARKFAIL")) return CEL_FINISH_ERROR;
    if (strstr(prompt, "MARKTRUNC")) {
        dialogue(out, a, b, seed);
        return CEL_FINISH_LENGTH;
    }
    if (strstr(prompt, "MARKSTRUCT") && !alpha) {
        cel_buf_printf(out, "%s: only one turn here and that is all\n", a);
        return CEL_FINISH_STOP;
    }
    if (strstr(prompt, "MARKREPEAT") && alpha) {
        for (int i = 0; i < 30; i++) cel_buf_printf(out, "%s: the same words again\n", i % 2 ? b : a);
        return CEL_FINISH_STOP;
    }
    if (strstr(prompt, "MARKECHO") && alpha) {
        cel_buf_printf(out, "%s: SYS alpha rules: write a careful conversation that stays strictly faithful to the "
                            "context and adds nothing new at all\n%s: what do you mean by that\n%s: I am repeating my "
                            "instructions\n%s: please stop doing that now\n", a, b, a, b);
        return CEL_FINISH_STOP;
    }
    if (strstr(prompt, "MARKSHORT")) {
        for (int i = 0; i < 4; i++) cel_buf_printf(out, "%s: ok %d\n", i % 2 ? b : a, i);
        return CEL_FINISH_STOP;
    }
    cel_buf_puts(out, "Here is the conversation you asked for:\n\n");
    dialogue(out, a, b, seed);
    return CEL_FINISH_STOP;
}

/* Runs MIND over docs and returns the JSONL (and drops) in c. */
static void run_mind(const cel_mind_config *cfg, const cel_gen_doc *docs, size_t n, mock_order order, uint32_t per_poll,
                     collect *c, cel_gen_stats *stats, size_t *requests)
{
    mock_backend *m = mock_new(mind_script, NULL, order, per_poll);
    cel_gen_sink sink = {collect_record, collect_drop, c};
    cel_gen_pipeline *p;
    cel_error e;
    cel_status st = cel_mind_create(cfg, &m->base, &sink, &p, &e);
    if (st) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(st, CEL_OK);
    for (size_t i = 0; i < n; i++) assert_int_equal(cel_gen_pipeline_push(p, &docs[i], &e), CEL_OK);
    assert_int_equal(cel_gen_pipeline_drain(p, &e), CEL_OK);
    assert_int_equal(cel_gen_pipeline_inflight(p), 0);
    *stats = *cel_gen_pipeline_stats(p);
    if (requests) *requests = m->submitted;
    cel_gen_pipeline_free(p);
    cel_gen_backend_free(&m->base);
}

static const char *para(int k)
{
    static char buf[8][400];
    snprintf(buf[k % 8], sizeof buf[0],
             "Paragraph %d states that $x_%d = %d$ holds. It also computes $y = x + %d$ carefully. Nothing else is said here.",
             k, k, k, k);
    return buf[k % 8];
}

static void test_mind_records_and_drops(void **state)
{
    (void)state;
    cel_template_set *set = make_set(mind_srcs, 2);
    char d1[8192], d2[16384];
    snprintf(d1, sizeof d1, "%s\n\n%s", para(1), para(2));
    snprintf(d2, sizeof d2, "MARKSTRUCT %s\n\nMARKTRUNC %s\n\nMARKREPEAT %s\n\nMARKECHO %s\n\nMARKSHORT %s", para(3),
             para(4), para(5), para(6), para(7));
    cel_gen_doc docs[] = {{"doc1", d1, strlen(d1), NULL}, {"doc2", d2, strlen(d2), NULL}, {"empty", "  \n ", 4, NULL}};
    cel_mind_config cfg;
    cel_mind_config_default(&cfg);
    cfg.templates = set;
    cfg.chunk_tokens = 25; /* each paragraph (~20 words) is one chunk */
    cfg.min_output_tokens = 30;
    cfg.c.seed = 7;
    cfg.with_chunk = CEL_MIND_CHUNK_FIELD;
    collect c = {0};
    cel_gen_stats st;
    size_t nreq;
    run_mind(&cfg, docs, 3, MOCK_FIFO, 1, &c, &st, &nreq);
    /* doc1: 2 chunks x 2 styles kept; doc2: 5 chunks x 2 styles, variously dropped */
    assert_int_equal(st.docs, 3);
    assert_int_equal(st.docs_done, 3);
    assert_int_equal(st.units, 14);
    assert_int_equal(nreq, 14);
    assert_int_equal(st.requests, 14);
    assert_int_equal(st.dropped[CEL_DROP_DOC_EMPTY], 1);
    assert_int_equal(st.dropped[CEL_DROP_STRUCTURE], 1);       /* beta on MARKSTRUCT */
    assert_int_equal(st.dropped[CEL_DROP_TRUNCATED], 2);       /* both styles on MARKTRUNC */
    assert_int_equal(st.dropped[CEL_DROP_REPETITION], 1);      /* alpha on MARKREPEAT */
    assert_int_equal(st.dropped[CEL_DROP_PROMPT_ECHO], 1);     /* alpha on MARKECHO */
    assert_int_equal(st.dropped[CEL_DROP_TOO_SHORT], 2);       /* both on MARKSHORT (< 50 words) */
    assert_int_equal(st.records, 14 - 7);
    assert_int_equal(cel_gen_stats_dropped_total(&st), 8);
    json_t *recs = lines(&c.out);
    assert_int_equal(json_array_size(recs), 7);
    /* input order: doc1 chunk 0 alpha, beta; chunk 1 alpha, beta; then doc2's survivors */
    const char *want_ids[] = {"doc1/0/alpha", "doc1/0/beta", "doc1/1/alpha", "doc1/1/beta",
                              "doc2/0/alpha", "doc2/2/beta", "doc2/3/beta"};
    for (size_t i = 0; i < 7; i++) assert_string_equal(sget(json_array_get(recs, i), "id"), want_ids[i]);
    json_t *r0 = json_array_get(recs, 0);
    assert_string_equal(sget(r0, "source_id"), "doc1");
    assert_int_equal(json_integer_value(json_object_get(r0, "chunk_index")), 0);
    assert_string_equal(sget(r0, "style"), "alpha");
    assert_string_equal(sget(r0, "model"), "mock-model");
    assert_non_null(strstr(sget(r0, "template"), "alpha#"));
    assert_string_equal(sget(r0, "chunk"), para(1));
    const char *text = sget(r0, "text");
    assert_memory_equal(text, "Alice: (seed", 12); /* the preamble was removed */
    assert_int_equal(json_integer_value(json_object_get(r0, "tokens")), cel_gen_count_words(text, strlen(text)));
    json_t *smp = json_object_get(r0, "sampling");
    assert_true(json_is_object(smp));
    assert_int_equal(json_integer_value(json_object_get(smp, "max_tokens")), 1024);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_array_get(recs, 1), "sampling"), "max_tokens")), 300);
    /* each unit has its own seed, and the text was generated with it */
    json_int_t s0 = json_integer_value(json_object_get(r0, "seed"));
    json_int_t s1 = json_integer_value(json_object_get(json_array_get(recs, 1), "seed"));
    assert_true(s0 != s1 && s0 > 0);
    char want[64];
    snprintf(want, sizeof want, "(seed %llu) ", (unsigned long long)(s0 % 100000));
    assert_non_null(strstr(text, want));
    assert_int_equal(st.records, json_array_size(recs));
    /* the drop notices came in order with unit ids */
    assert_non_null(strstr(c.drops.data, "doc_empty empty\n"));
    assert_non_null(strstr(c.drops.data, "truncated doc2/1/alpha\n"));
    assert_true(strstr(c.drops.data, "structure doc2/0/beta") < strstr(c.drops.data, "truncated doc2/1/alpha"));
    json_decref(recs);
    cel_buf_free(&c.out);
    cel_buf_free(&c.drops);
    cel_template_set_free(set);
}

static void test_mind_determinism(void **state)
{
    (void)state;
    cel_template_set *set = make_set(mind_srcs, 2);
    cel_buf docs_text[6];
    cel_gen_doc docs[6];
    char ids[6][16];
    for (int i = 0; i < 6; i++) {
        cel_buf_init(&docs_text[i]);
        for (int k = 0; k <= i; k++) cel_buf_printf(&docs_text[i], "%s%s", k ? "\n\n" : "", para(i + k));
        snprintf(ids[i], sizeof ids[i], "d%d", i);
        docs[i] = (cel_gen_doc){ids[i], docs_text[i].data, docs_text[i].len, NULL};
    }
    cel_mind_config cfg;
    cel_mind_config_default(&cfg);
    cfg.templates = set;
    cfg.chunk_tokens = 25;
    cfg.c.seed = 99;
    /* the same job under different completion orders and windows gives identical bytes */
    struct {
        mock_order order;
        uint32_t per_poll, window;
    } runs[] = {{MOCK_FIFO, 1, 64}, {MOCK_LIFO, 3, 64}, {MOCK_RANDOM, 2, 2}, {MOCK_RANDOM, 5, 1}};
    cel_buf first;
    cel_buf_init(&first);
    for (size_t r = 0; r < 4; r++) {
        cfg.c.max_inflight_docs = runs[r].window;
        collect c = {0};
        cel_gen_stats st;
        run_mind(&cfg, docs, 6, runs[r].order, runs[r].per_poll, &c, &st, NULL);
        assert_int_equal(st.records, 2 * 21);
        if (r == 0) cel_buf_append(&first, c.out.data, c.out.len);
        else assert_string_equal(first.data, c.out.data);
        cel_buf_free(&c.out);
        cel_buf_free(&c.drops);
    }
    /* another job seed changes the texts */
    cfg.c.seed = 100;
    collect c = {0};
    cel_gen_stats st;
    run_mind(&cfg, docs, 6, MOCK_FIFO, 1, &c, &st, NULL);
    assert_string_not_equal(first.data, c.out.data);
    cel_buf_free(&c.out);
    cel_buf_free(&c.drops);

    /* random styles: one unit per chunk, the pick fixed by the seed, both styles used over 21 chunks */
    cfg.c.seed = 99;
    cfg.mode = CEL_MIND_STYLES_RANDOM;
    collect a = {0}, b = {0};
    run_mind(&cfg, docs, 6, MOCK_FIFO, 1, &a, &st, NULL);
    assert_int_equal(st.units, 21);
    assert_int_equal(st.records, 21);
    run_mind(&cfg, docs, 6, MOCK_RANDOM, 4, &b, &st, NULL);
    assert_string_equal(a.out.data, b.out.data);
    assert_non_null(strstr(a.out.data, "\"style\":\"alpha\""));
    assert_non_null(strstr(a.out.data, "\"style\":\"beta\""));
    cel_buf_free(&a.out);
    cel_buf_free(&a.drops);
    cel_buf_free(&b.out);
    cel_buf_free(&b.drops);

    /* one listed style; concat mode puts the chunk before the dialogue */
    cfg.mode = CEL_MIND_STYLES_ALL;
    const char *only[] = {"beta"};
    cfg.styles = only;
    cfg.n_styles = 1;
    cfg.with_chunk = CEL_MIND_CHUNK_CONCAT;
    collect o = {0};
    run_mind(&cfg, docs, 1, MOCK_FIFO, 1, &o, &st, NULL);
    assert_int_equal(st.records, 1);
    json_t *recs = lines(&o.out);
    const char *text = sget(json_array_get(recs, 0), "text");
    assert_memory_equal(text, para(0), strlen(para(0)));
    assert_memory_equal(text + strlen(para(0)), "\n\nCat: ", 7);
    json_decref(recs);
    cel_buf_free(&o.out);
    cel_buf_free(&o.drops);
    /* unknown or mistyped style names are errors */
    const char *bad[] = {"gamma"};
    cfg.styles = bad;
    mock_backend *m = mock_new(mind_script, NULL, MOCK_FIFO, 1);
    cel_gen_sink sink = {collect_record, NULL, &o};
    cel_gen_pipeline *p;
    cel_error e;
    assert_int_equal(cel_mind_create(&cfg, &m->base, &sink, &p, &e), CEL_ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "gamma"));
    cel_gen_backend_free(&m->base);
    for (int i = 0; i < 6; i++) cel_buf_free(&docs_text[i]);
    cel_buf_free(&first);
    cel_template_set_free(set);
}

static void test_backend_errors_and_abandon(void **state)
{
    (void)state;
    cel_template_set *set = make_set(mind_srcs, 2);
    char d[4096];
    snprintf(d, sizeof d, "MARKFAIL %s", para(1));
    cel_gen_doc doc = {"f", d, strlen(d), NULL};
    cel_mind_config cfg;
    cel_mind_config_default(&cfg);
    cfg.templates = set;
    collect c = {0};
    cel_gen_stats st;
    run_mind(&cfg, &doc, 1, MOCK_FIFO, 1, &c, &st, NULL);
    assert_int_equal(st.dropped[CEL_DROP_GEN_ERROR], 2);
    assert_int_equal(st.records, 0);
    assert_non_null(strstr(c.drops.data, "gen_error f/0/alpha"));
    cel_buf_free(&c.out);
    cel_buf_free(&c.drops);
    /* freeing a pipeline with requests in flight, then the backend: no leak, no use-after-free */
    mock_backend *m = mock_new(mind_script, NULL, MOCK_FIFO, 1);
    cel_gen_sink sink = {collect_record, NULL, &c};
    cel_gen_pipeline *p;
    cel_error e;
    assert_int_equal(cel_mind_create(&cfg, &m->base, &sink, &p, &e), CEL_OK);
    cel_gen_doc ok = {"x", para(2), strlen(para(2)), NULL};
    assert_int_equal(cel_gen_pipeline_push(p, &ok, &e), CEL_OK);
    assert_int_equal(cel_gen_backend_pending(&m->base), 2);
    cel_gen_pipeline_free(p);
    cel_gen_backend_free(&m->base);
    cel_buf_free(&c.out);
    cel_template_set_free(set);
}

/* ============================================================== rephrase */

static const char *const rp_srcs[] = {
    "@name wiki\n@kind rephrase\n@quality low\n@input_tokens 30\n@output_tokens 60\n@keep_tokens 8..50\n"
    "@lead_in Here is the text:\n@user\nPROMPT wiki\n{{text}}\n",
    "@name dqa\n@kind rephrase\n@quality high\n@input_tokens 40\n@output_tokens 120\n@keep_tokens 6..118\n"
    "@post diverse_qa\n@user\nPROMPT dqa\n{{text}}\n",
    "@name klist\n@kind rephrase\n@quality high\n@input_tokens 40\n@output_tokens 60\n@keep_tokens 4..58\n"
    "@post knowledge_list\n@user\nPROMPT klist\n{{text}}\n",
};

static cel_finish rp_script(void *ud, const char *prompt, uint64_t seed, uint32_t sample, cel_buf *out)
{
    (void)ud;
    (void)sample;
    if (strstr(prompt, "PROMPT wiki")) {
        if (strstr(prompt, "NOLEAD")) cel_buf_puts(out, "Sure, a rewrite follows with many words in it for you now.");
        else if (strstr(prompt, "SHORTOUT")) cel_buf_puts(out, "Here is the text: tiny.");
        else if (strstr(prompt, "LONGOUT")) {
            cel_buf_puts(out, "Here is the text:");
            for (int i = 0; i < 55; i++) cel_buf_puts(out, " word");
        } else
            cel_buf_printf(out, "**Here is the text:** A clean encyclopedic rewrite numbered %llu of the segment.",
                           (unsigned long long)(seed % 1000));
    } else if (strstr(prompt, "PROMPT dqa")) {
        if (strstr(prompt, "NOPAIRS")) cel_buf_puts(out, "I cannot write questions about this text at all sorry.");
        else
            for (int i = 0; i < 5; i++) cel_buf_printf(out, "Question: What is fact %d?\nAnswer: Fact %d is true.\n\n", i, i);
    } else {
        cel_buf_puts(out, "- Fact one is stated.\n* Fact two is stated.\n2. Fact three.\n");
    }
    return CEL_FINISH_STOP;
}

static void run_rephrase(const cel_rephrase_config *cfg, const cel_gen_doc *docs, size_t n, mock_order order,
                         collect *c, cel_gen_stats *st, cel_status want_push)
{
    mock_backend *m = mock_new(rp_script, NULL, order, 2);
    cel_gen_sink sink = {collect_record, collect_drop, c};
    cel_gen_pipeline *p;
    cel_error e;
    assert_int_equal(cel_rephrase_create(cfg, &m->base, &sink, &p, &e), CEL_OK);
    cel_status last = CEL_OK;
    for (size_t i = 0; i < n && !last; i++) last = cel_gen_pipeline_push(p, &docs[i], &e);
    assert_int_equal(last, want_push);
    if (!last) assert_int_equal(cel_gen_pipeline_drain(p, &e), CEL_OK);
    else assert_non_null(strstr(e.msg, "quality"));
    *st = *cel_gen_pipeline_stats(p);
    cel_gen_pipeline_free(p);
    cel_gen_backend_free(&m->base);
}

static void test_rephrase(void **state)
{
    (void)state;
    cel_template_set *set = make_set(rp_srcs, 3);
    /* 35 words on 3 lines: one segment for dqa/klist (budget 40), two for wiki (budget 30) */
    const char *body = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu\n"
                       "nu xi omicron pi rho sigma tau upsilon phi chi psi omega one two\n"
                       "three four five six seven eight nine ten eleven twelve";
    char low[600], high[600], none[600], nolead[600], longline[2000];
    snprintf(low, sizeof low, "%s", body);
    snprintf(high, sizeof high, "%s", body);
    snprintf(none, sizeof none, "NOPAIRS %s", body);
    snprintf(nolead, sizeof nolead, "NOLEAD %s", body);
    cel_buf ll;
    cel_buf_init(&ll);
    for (int i = 0; i < 50; i++) cel_buf_puts(&ll, "long ");
    snprintf(longline, sizeof longline, "%s\n%s", ll.data, body);
    cel_buf_free(&ll);
    cel_gen_doc docs[] = {
        {"low", low, strlen(low), "3"},          /* bucket 3 < 12: wiki only */
        {"high", high, strlen(high), "high"},    /* dqa + klist */
        {"none", none, strlen(none), NULL},      /* no quality: every prompt */
        {"tiny", "just a few words", 16, NULL},  /* < 30 tokens */
        {"nolead", nolead, strlen(nolead), "0"}, /* wiki without its lead-in */
        {"ll", longline, strlen(longline), "19"},/* a 50-word line over every budget */
    };
    cel_rephrase_config cfg;
    cel_rephrase_config_default(&cfg);
    cfg.templates = set;
    cfg.qa_tokens_per_pair = 10;
    cfg.c.seed = 5;
    collect c = {0};
    cel_gen_stats st;
    run_rephrase(&cfg, docs, 6, MOCK_RANDOM, &c, &st, CEL_OK);
    json_t *recs = lines(&c.out);
    /* prompts run in name order (dqa, klist, wiki). low: wiki x2 segments; high: dqa + klist;
     * none: klist + wiki x2 (dqa had no pairs); nolead: the first wiki segment (which holds
     * the marker) lacks its lead-in; ll: dqa + klist on the lines after the long one */
    const char *want[] = {"low/wiki/0",  "low/wiki/1",    "high/dqa/0", "high/klist/0", "none/klist/0",
                          "none/wiki/0", "none/wiki/1", "nolead/wiki/1", "ll/dqa/0",   "ll/klist/0"};
    size_t nw = sizeof want / sizeof want[0];
    assert_int_equal(json_array_size(recs), nw);
    for (size_t i = 0; i < nw; i++) assert_string_equal(sget(json_array_get(recs, i), "id"), want[i]);
    assert_int_equal(st.dropped[CEL_DROP_DOC_TOO_SHORT], 1);
    assert_int_equal(st.dropped[CEL_DROP_NO_LEAD_IN], 1);
    assert_int_equal(st.dropped[CEL_DROP_NO_QA_PAIRS], 1);
    assert_int_equal(st.dropped[CEL_DROP_SEGMENT_TOO_LONG], 2); /* the long line, once per high prompt */
    /* dqa: 35-word source, 10 tokens per pair -> 4 of 5 pairs kept, 1 unused (twice: high, ll) */
    assert_int_equal(st.dropped[CEL_DROP_QA_UNUSED], 2);
    json_t *w = json_array_get(recs, 0);
    assert_string_equal(sget(w, "prompt"), "wiki");
    assert_string_equal(sget(w, "quality"), "low");
    const char *wt = sget(w, "text");
    assert_memory_equal(wt, "A clean encyclopedic rewrite", 28); /* lead-in (bold) removed */
    json_t *q = json_array_get(recs, 2);
    const char *qt = sget(q, "text");
    assert_memory_equal(qt, body, strlen(body)); /* the source comes first */
    size_t nq = 0;
    for (const char *s = qt; (s = strstr(s, "\nQuestion: ")); s++) nq++;
    assert_int_equal(nq, 4);
    assert_string_equal(sget(json_array_get(recs, 3), "text"), "Fact one is stated.\nFact two is stated.\nFact three.");
    json_t *smp = json_object_get(w, "sampling");
    assert_true(json_real_value(json_object_get(smp, "temperature")) == 0.5);
    assert_int_equal(json_integer_value(json_object_get(smp, "max_tokens")), 60);
    json_decref(recs);
    cel_buf_free(&c.out);
    cel_buf_free(&c.drops);

    /* output bounds (the marker on every line reaches both wiki segments) */
    cel_buf so, lo;
    cel_buf_init(&so);
    cel_buf_init(&lo);
    for (const char *x = body; x;) {
        const char *nl = strchr(x, '\n');
        size_t n = nl ? (size_t)(nl - x + 1) : strlen(x);
        cel_buf_puts(&so, "SHORTOUT ");
        cel_buf_append(&so, x, n);
        cel_buf_puts(&lo, "LONGOUT ");
        cel_buf_append(&lo, x, n);
        x = nl ? nl + 1 : NULL;
    }
    cel_gen_doc bd[] = {{"so", so.data, so.len, "low"}, {"lo", lo.data, lo.len, "low"}};
    collect c2 = {0};
    run_rephrase(&cfg, bd, 2, MOCK_FIFO, &c2, &st, CEL_OK);
    assert_int_equal(st.records, 0);
    assert_int_equal(st.dropped[CEL_DROP_TOO_SHORT], 2);
    assert_int_equal(st.dropped[CEL_DROP_TOO_LONG], 2);
    cel_buf_free(&so);
    cel_buf_free(&lo);
    cel_buf_free(&c2.out);
    cel_buf_free(&c2.drops);

    /* routing off: every prompt for every document */
    cfg.route_by_quality = false;
    collect c3 = {0};
    run_rephrase(&cfg, docs, 1, MOCK_FIFO, &c3, &st, CEL_OK);
    assert_int_equal(st.records, 4);
    cel_buf_free(&c3.out);
    cel_buf_free(&c3.drops);

    /* an unrecognised quality label stops the job with a message naming the document */
    cfg.route_by_quality = true;
    cel_gen_doc badq = {"bq", body, strlen(body), "excellent"};
    collect c4 = {0};
    run_rephrase(&cfg, &badq, 1, MOCK_FIFO, &c4, &st, CEL_ERR_INVALID);
    cel_buf_free(&c4.out);
    cel_buf_free(&c4.drops);
    assert_string_equal(cel_rephrase_quality_bucket("12", 12), "high");
    assert_string_equal(cel_rephrase_quality_bucket("11.5", 12), "low");
    assert_string_equal(cel_rephrase_quality_bucket("Medium-High", 12), "high");
    assert_null(cel_rephrase_quality_bucket("12abc", 12));
    cel_template_set_free(set);
}

/* ============================================================ CrossThink (script and runner: test_gen_fixture.h) */

static void test_crossthink(void **state)
{
    (void)state;
    cel_template_set *set = make_set(ct_srcs, 4);
    cel_gen_doc docs[] = {{"a", "DOCA some source text about numbers.", 36, NULL},
                          {"b", "DOCB other source text about colours.", 37, NULL}};
    cel_crossthink_config cfg;
    cel_crossthink_config_default(&cfg);
    cfg.templates = set;
    cfg.c.seed = 3;
    collect c = {0};
    cel_gen_stats st;
    run_ct(&cfg, docs, 2, MOCK_LIFO, &c, &st);
    json_t *recs = lines(&c.out);
    /* a: mcq shared, easy, hard + open 42; b: mcq easy, hard (shared is a duplicate) */
    const char *want[] = {"a/0/mcq/0", "a/0/mcq/1", "a/0/mcq/2", "a/0/open/0", "b/0/mcq/1", "b/0/mcq/2"};
    assert_int_equal(json_array_size(recs), 6);
    for (size_t i = 0; i < 6; i++) assert_string_equal(sget(json_array_get(recs, i), "id"), want[i]);
    assert_int_equal(st.dropped[CEL_DROP_DUPLICATE], 1);
    assert_int_equal(st.dropped[CEL_DROP_GOLD_NOT_IN_OPTIONS], 2);
    assert_int_equal(st.dropped[CEL_DROP_ANSWER_TOO_LONG], 1);
    assert_int_equal(st.dropped[CEL_DROP_NO_ITEMS], 1);
    json_t *r = json_array_get(recs, 0);
    assert_string_equal(sget(r, "task"), "mcq");
    assert_string_equal(sget(r, "reference"), "B");
    assert_string_equal(sget(r, "question"), "Shared question about sums?");
    assert_string_equal(sget(r, "prompt"), "SOLVE Shared question about sums?\nA) 1\nB) 2\nC) 3\nD) 4");
    json_t *ch = json_object_get(r, "choices");
    assert_int_equal(json_array_size(ch), 4);
    assert_string_equal(json_string_value(json_array_get(ch, 3)), "4");
    json_t *o = json_array_get(recs, 3);
    assert_string_equal(sget(o, "task"), "open");
    assert_string_equal(sget(o, "reference"), "42");
    assert_null(json_object_get(o, "choices"));
    assert_null(json_object_get(o, "solve_rate"));
    json_decref(recs);
    cel_buf_free(&c.out);
    cel_buf_free(&c.drops);

    /* MCQ -> open: references become the gold text; the 12-word gold is too long */
    cfg.mcq_to_open = true;
    collect c2 = {0};
    run_ct(&cfg, docs, 1, MOCK_FIFO, &c2, &st);
    recs = lines(&c2.out);
    assert_int_equal(json_array_size(recs), 3);
    assert_string_equal(sget(json_array_get(recs, 0), "task"), "open");
    assert_string_equal(sget(json_array_get(recs, 0), "reference"), "2");
    assert_string_equal(sget(json_array_get(recs, 1), "reference"), "red");
    assert_string_equal(sget(json_array_get(recs, 0), "prompt"), "SOLVE Shared question about sums?");
    assert_int_equal(st.dropped[CEL_DROP_ANSWER_TOO_LONG], 2);
    json_decref(recs);
    cel_buf_free(&c2.out);
    cel_buf_free(&c2.drops);
    cfg.mcq_to_open = false;

    /* the difficulty filter without a verifier is refused */
    cfg.difficulty_k = 4;
    mock_backend *m = mock_new(ct_script, NULL, MOCK_FIFO, 1);
    cel_gen_sink sink = {collect_record, NULL, &c2};
    cel_gen_pipeline *p;
    cel_error e;
    assert_int_equal(cel_crossthink_create(&cfg, &m->base, &sink, &p, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "verifier"));
    cel_gen_backend_free(&m->base);
    cel_template_set_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mind_records_and_drops),
        cmocka_unit_test(test_mind_determinism),
        cmocka_unit_test(test_backend_errors_and_abandon),
        cmocka_unit_test(test_rephrase),
        cmocka_unit_test(test_crossthink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
