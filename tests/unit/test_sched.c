/* The scheduler (continuous batching, paged KV, sampling, events, threads)
 * driven through a MOCK backend: its KV "cache" stores each slot's token and
 * position, and a row's logits are a hash of the whole history read back
 * through the block table. A wrong block table, a missed copy-on-write or a
 * bad prefix reuse therefore changes the logits, and the tests compare
 * outputs against runs of each request alone. Scheduling logic only: the
 * real CPU backend is exercised by test_engine.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sample.h"
#include "engine/scheduler.h"
#include "test_sampling.h"

/* ------------------------------------------------------------ mock backend */

enum { MOCK_HASH = 0, MOCK_COUNT = 1 };
enum { V = 64, EOS = 63 };

typedef struct mock {
    cel_backend be;
    cel_model model;
    int mode;
    int32_t *slot_tok, *slot_pos;
    int fail_next;           /* forward calls to fail */
    int32_t nan_after;       /* rows whose last token is this get NaN logits (-1: never) */
    uint64_t n_forward, n_tokens, n_copies;
    int32_t max_batch;       /* largest n_tokens seen */
    char bad[256];           /* first inconsistency seen */
    /* the last batch's layout */
    int32_t last_n_seqs, last_new[64];
    /* device sampling (be.can_sample): rows asked for are sampled here with
     * cel_sample_u; with give_back every other one comes back as logits */
    bool give_back;
    uint64_t n_asked, n_dev, n_dev_back;
    cel_sample_scratch ws;
} mock;

static void mock_bad(mock *m, const char *fmt, int a, int b)
{
    if (!m->bad[0]) snprintf(m->bad, sizeof m->bad, fmt, a, b);
}

/* Logits of the row at position pos of a sequence whose history (read from
 * the KV slots) hashes to h and whose token at pos is last. */
static void mock_logits(const mock *m, uint64_t h, int32_t last, float *out)
{
    for (int32_t v = 0; v < V; v++) out[v] = (float)((cel_mix64(h * 131u + (uint64_t)v) >> 40) * (4.0 / 16777216.0));
    out[EOS] -= 3.0f; /* keep EOS unlikely unless counted to */
    if (m->mode == MOCK_COUNT) out[(last + 1) % V] = 10.0f;
}

static cel_status mock_forward(cel_backend *be, const cel_batch *b, cel_error *err)
{
    mock *m = (mock *)be;
    m->n_forward++;
    m->n_tokens += (uint64_t)b->n_tokens;
    if (b->n_tokens > m->max_batch) m->max_batch = b->n_tokens;
    if (m->fail_next > 0) {
        m->fail_next--;
        return cel_error_set(err, CEL_ERR_DEVICE, "mock: injected failure");
    }
    const int32_t bs = be->block_size;
    int32_t row = 0;
    m->last_n_seqs = b->n_seqs;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const cel_batch_seq *q = &b->seqs[s];
        if (s < 64) m->last_new[s] = q->n_new;
        if (q->first != row) mock_bad(m, "seq %d starts at row %d", s, q->first);
        if ((q->n_past + q->n_new + bs - 1) / bs > q->n_blocks) mock_bad(m, "seq %d: %d blocks too few", s, q->n_blocks);
        for (int32_t j = 0; j < q->n_new; j++) {
            int32_t pos = q->n_past + j;
            int32_t blk = q->block_table[pos / bs];
            if (blk < 0 || blk >= be->n_blocks) mock_bad(m, "block %d out of range at pos %d", blk, pos);
            int32_t slot = blk * bs + pos % bs;
            m->slot_tok[slot] = b->tokens[q->first + j];
            m->slot_pos[slot] = pos;
        }
        row += q->n_new;
    }
    if (row != b->n_tokens) mock_bad(m, "rows %d != n_tokens %d", row, b->n_tokens);
    for (int32_t o = 0; o < b->n_out; o++) {
        int32_t r = b->out_rows[o];
        const cel_batch_seq *q = NULL;
        for (int32_t s = 0; s < b->n_seqs; s++)
            if (r >= b->seqs[s].first && r < b->seqs[s].first + b->seqs[s].n_new) q = &b->seqs[s];
        if (!q) {
            mock_bad(m, "out row %d in no sequence (%d)", r, 0);
            continue;
        }
        int32_t pos = q->n_past + (r - q->first);
        uint64_t h = 0x1234;
        int32_t last = 0;
        for (int32_t p = 0; p <= pos; p++) {
            int32_t slot = q->block_table[p / bs] * bs + p % bs;
            if (m->slot_pos[slot] != p) mock_bad(m, "slot holds position %d, wanted %d", m->slot_pos[slot], p);
            last = m->slot_tok[slot];
            h = cel_mix64(h ^ (uint64_t)(uint32_t)last);
        }
        float *row = b->logits + (size_t)o * V;
        mock_logits(m, h, last, row);
        if (last == m->nan_after)
            for (int32_t v = 0; v < V; v++) row[v] = NAN;
        if (!b->sample) continue;
        const cel_batch_sample *rq = &b->sample[o];
        b->tokens_out[o] = -1;
        if (!rq->on) continue;
        if (m->give_back && (m->n_asked++ % 2)) { /* the device cannot finish this row: logits */
            m->n_dev_back++;
            continue;
        }
        cel_sampling sp;
        cel_sampling_default(&sp);
        sp.temperature = rq->temperature;
        sp.top_k = rq->top_k;
        sp.top_p = rq->top_p;
        sp.min_p = rq->min_p;
        sp.n_logprobs = rq->want_logprob ? 0 : -1;
        cel_sample_state st;
        cel_sample_state_init(&st, 0, 0);
        cel_sample_out so;
        cel_error e;
        if (cel_sample_u(&sp, NULL, 0, &st, row, &m->ws, rq->u, &so, &e) != CEL_OK) continue; /* NaN: logits */
        m->n_dev++;
        b->tokens_out[o] = so.token;
        b->logprob_out[o] = so.logprob;
        for (int32_t v = 0; v < V; v++) row[v] = NAN; /* a sampled row's logits are not to be read */
    }
    return CEL_OK;
}

static cel_status mock_copy(cel_backend *be, int32_t src, int32_t dst, int32_t n, cel_error *err)
{
    mock *m = (mock *)be;
    m->n_copies++;
    const int32_t bs = be->block_size;
    for (int32_t i = 0; i < n; i++) {
        m->slot_tok[dst * bs + i] = m->slot_tok[src * bs + i];
        m->slot_pos[dst * bs + i] = m->slot_pos[src * bs + i];
    }
    for (int32_t i = n; i < bs; i++) m->slot_pos[dst * bs + i] = -1;
    return CEL_OK;
}

static cel_status mock_weights(cel_backend *be, cel_error *err) { return CEL_OK; }
static void mock_free(cel_backend *be)
{
    mock *m = (mock *)be;
    free(m->slot_tok);
    free(m->slot_pos);
    cel_sample_scratch_free(&m->ws);
    free(m);
}

static const cel_backend_vtbl mock_vtbl = {"mock", mock_forward, mock_copy, mock_weights, mock_free};

static mock *mock_new(int32_t n_blocks, int32_t bs, int mode)
{
    mock *m = calloc(1, sizeof *m);
    m->be.v = &mock_vtbl;
    m->be.model = &m->model;
    m->be.block_size = bs;
    m->be.n_blocks = n_blocks;
    m->model.hp.n_vocab = V;
    m->mode = mode;
    m->nan_after = -1;
    cel_error e;
    cel_sample_scratch_init(&m->ws, V, &e);
    m->slot_tok = calloc((size_t)n_blocks * (size_t)bs, sizeof *m->slot_tok);
    m->slot_pos = malloc((size_t)n_blocks * (size_t)bs * sizeof *m->slot_pos);
    for (int32_t i = 0; i < n_blocks * bs; i++) m->slot_pos[i] = -1;
    return m;
}

/* ------------------------------------------------------------ fake text */

/* token t -> piece: letters, with a few multi-letter pieces for stop tests */
static const char *piece_of(int32_t t)
{
    static const char *special[] = {"he", "llo wo", "rld", "!\n", "\n", "END", "x"};
    static char letters[26][2];
    if (t >= 40 && t < 47) return special[t - 40];
    if (t == EOS) return "<eos>";
    if (!letters[0][0])
        for (int i = 0; i < 26; i++) letters[i][0] = (char)('a' + i);
    return letters[t % 26];
}

static cel_status fake_push(void *ctx, cel_detok_stream *s, int32_t t, cel_buf *out, cel_error *err)
{
    return cel_buf_puts(out, piece_of(t));
}
static cel_status fake_flush(void *ctx, cel_detok_stream *s, cel_buf *out, cel_error *err) { return CEL_OK; }
static bool fake_eog(void *ctx, int32_t t) { return t == EOS; }
static const cel_sched_text fake_text = {NULL, NULL, fake_push, fake_flush, fake_eog};

/* ------------------------------------------------------------ harness */

typedef struct sample_out {
    int32_t ids[512];
    float lps[512];
    int n;
    char text[2048];
    size_t text_len;
    cel_finish fin;
    int n_final;
    int32_t n_cached;
    char error[200];
    pthread_mutex_t *mu;
} sample_out;

typedef struct req_out {
    sample_out s[8];
} req_out;

static void collect(void *ud, const cel_token_event *ev)
{
    req_out *r = ud;
    assert_true(ev->sample < 8);
    sample_out *o = &r->s[ev->sample];
    assert_int_equal(o->n_final, 0); /* nothing after the final event */
    if (ev->token >= 0) {
        assert_true(o->n < 512);
        o->lps[o->n] = ev->logprob;
        o->ids[o->n++] = ev->token;
        assert_int_equal(ev->n_gen_tokens, o->n);
    }
    assert_true(o->text_len + ev->text_len < sizeof o->text);
    memcpy(o->text + o->text_len, ev->text, ev->text_len);
    o->text_len += ev->text_len;
    o->text[o->text_len] = '\0';
    o->n_cached = ev->n_cached_tokens;
    if (ev->finish != CEL_FINISH_NONE) {
        o->fin = ev->finish;
        o->n_final++;
        if (ev->error) snprintf(o->error, sizeof o->error, "%s", ev->error);
    }
}

static cel_sched_params params(int32_t n_ctx, int32_t budget)
{
    cel_sched_params p;
    memset(&p, 0, sizeof p);
    p.n_ctx = n_ctx;
    p.max_seqs = 64;
    p.max_batch_tokens = budget;
    p.max_queue = 64;
    return p;
}

static cel_sched *mk(mock *m, cel_sched_params p)
{
    cel_sched *s;
    cel_error err;
    cel_status st = cel_sched_create(&m->be, &p, &fake_text, &s, &err);
    if (st != CEL_OK) fail_msg("create: %s", err.msg);
    return s;
}

static uint64_t submit(cel_sched *s, const int32_t *prompt, size_t n, uint32_t n_samples, cel_sampling sp,
                       req_out *out)
{
    cel_request r = {.prompt = prompt, .n_prompt = n, .n = n_samples, .sampling = sp, .cb = collect, .ud = out};
    uint64_t id;
    cel_error err;
    cel_status st = cel_sched_submit(s, &r, &id, &err);
    if (st != CEL_OK) fail_msg("submit: %s", err.msg);
    return id;
}

static void run(cel_sched *s)
{
    cel_error err;
    if (cel_sched_run_until_idle(s, &err) != CEL_OK) fail_msg("run: %s", err.msg);
}

static void make_prompt(int32_t *p, int n, uint64_t seed)
{
    cel_rng r;
    cel_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) p[i] = (int32_t)(cel_rng_next(&r) % 40); /* no EOS, no special pieces */
}

/* Runs one request alone on a fresh scheduler (the reference output). */
static void run_alone(const int32_t *prompt, size_t n, uint32_t n_samples, cel_sampling sp, req_out *out)
{
    mock *m = mock_new(256, 16, MOCK_HASH);
    cel_sched *s = mk(m, params(4096, 512));
    memset(out, 0, sizeof *out);
    submit(s, prompt, n, n_samples, sp, out);
    run(s);
    assert_string_equal(m->bad, "");
    cel_sched_free(s);
    mock_free(&m->be);
}

static void assert_same(const sample_out *a, const sample_out *b)
{
    assert_int_equal(a->n, b->n);
    assert_memory_equal(a->ids, b->ids, (size_t)a->n * sizeof a->ids[0]);
    assert_int_equal(a->fin, b->fin);
}

/* ------------------------------------------------------------ tests */

static void test_count_and_text(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_COUNT);
    cel_sched *s = mk(m, params(1024, 512));
    int32_t prompt[3] = {5, 6, 7};
    req_out o = {0};
    submit(s, prompt, 3, 1, test_sampling(0, 0, 5, false), &o);
    run(s);
    assert_string_equal(m->bad, "");
    assert_int_equal(o.s[0].n, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(o.s[0].ids[i], 8 + i);
    assert_string_equal(o.s[0].text, "ijklm");
    assert_int_equal(o.s[0].fin, CEL_FINISH_LENGTH);
    assert_int_equal(o.s[0].n_final, 1);
    cel_engine_stats st;
    cel_sched_get_stats(s, &st);
    assert_int_equal(st.gen_tokens, 5);
    assert_int_equal(st.prompt_tokens, 3);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(m->n_tokens, 3 + 4); /* prompt once, then one token per decode */
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_eos_and_stop_tokens(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_COUNT);
    cel_sched *s = mk(m, params(1024, 512));
    int32_t prompt[2] = {1, 59};
    req_out o = {0}, o2 = {0}, o3 = {0};
    submit(s, prompt, 2, 1, test_sampling(0, 0, 50, false), &o); /* 60 61 62 63=EOS */
    cel_sampling sp = test_sampling(0, 0, 50, false);
    int32_t stop_tok = 61;
    sp.stop_tokens = &stop_tok;
    sp.n_stop_tokens = 1;
    submit(s, prompt, 2, 1, sp, &o2);
    sp = test_sampling(0, 0, 6, false);
    sp.ignore_eos = true;
    submit(s, prompt, 2, 1, sp, &o3);
    run(s);
    assert_int_equal(o.s[0].n, 4);
    assert_int_equal(o.s[0].ids[3], EOS);
    assert_int_equal(o.s[0].fin, CEL_FINISH_STOP);
    assert_string_equal(o.s[0].text, "ijk"); /* 60 61 62 -> i j k; EOS text never emitted */
    assert_int_equal(o2.s[0].n, 2);
    assert_int_equal(o2.s[0].fin, CEL_FINISH_STOP);
    assert_string_equal(o2.s[0].text, "i");
    assert_int_equal(o3.s[0].n, 6); /* runs through EOS */
    assert_int_equal(o3.s[0].ids[4], 0);
    assert_int_equal(o3.s[0].fin, CEL_FINISH_LENGTH);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_stop_string_across_tokens(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_COUNT);
    cel_sched *s = mk(m, params(1024, 512));
    int32_t prompt[1] = {39}; /* generates 40 41 42 ...: "he" "llo wo" "rld" "!\n" "\n" "END" */
    const char *stops1[] = {"o wor"};
    const char *stops2[] = {"\n\n", "zzz"};
    const char *stops3[] = {"never"};
    req_out o1 = {0}, o2 = {0}, o3 = {0};
    cel_sampling sp = test_sampling(0, 0, 20, false);
    sp.stop = stops1;
    sp.n_stop = 1;
    submit(s, prompt, 1, 1, sp, &o1);
    sp.stop = stops2;
    sp.n_stop = 2;
    submit(s, prompt, 1, 1, sp, &o2);
    sp = test_sampling(0, 0, 4, false);
    sp.stop = stops3;
    sp.n_stop = 1;
    submit(s, prompt, 1, 1, sp, &o3);
    run(s);
    assert_int_equal(o1.s[0].fin, CEL_FINISH_STOP);
    assert_string_equal(o1.s[0].text, "hell");
    assert_int_equal(o1.s[0].n, 3); /* the stop string completed at the third token */
    assert_int_equal(o2.s[0].fin, CEL_FINISH_STOP);
    assert_string_equal(o2.s[0].text, "hello world!");
    assert_int_equal(o2.s[0].n, 5);
    assert_int_equal(o3.s[0].fin, CEL_FINISH_LENGTH);
    assert_string_equal(o3.s[0].text, "hello world!\n");
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_chunked_prefill_equals_unchunked(void **state)
{
    (void)state;
    int32_t prompt[75];
    make_prompt(prompt, 75, 11);
    req_out ref;
    run_alone(prompt, 75, 1, test_sampling(0.8f, 3, 30, false), &ref);
    assert_int_equal(ref.s[0].n, 30);
    const int32_t budgets[] = {1, 7, 16, 33};
    for (size_t k = 0; k < sizeof budgets / sizeof budgets[0]; k++) {
        mock *m = mock_new(64, 16, MOCK_HASH);
        cel_sched *s = mk(m, params(4096, budgets[k]));
        req_out o = {0};
        submit(s, prompt, 75, 1, test_sampling(0.8f, 3, 30, false), &o);
        run(s);
        assert_string_equal(m->bad, "");
        assert_true(m->max_batch <= budgets[k]);
        assert_same(&o.s[0], &ref.s[0]);
        cel_sched_free(s);
        mock_free(&m->be);
    }
}

static void test_decode_first_then_prefill_chunks(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_HASH);
    cel_sched *s = mk(m, params(4096, 10));
    int32_t a[4], b[40];
    make_prompt(a, 4, 1);
    make_prompt(b, 40, 2);
    req_out oa = {0}, ob = {0};
    submit(s, a, 4, 1, test_sampling(0, 0, 20, false), &oa);
    cel_error err;
    bool did;
    assert_int_equal(cel_sched_step(s, &did, &err), CEL_OK); /* a's prompt */
    assert_int_equal(oa.s[0].n, 1);
    submit(s, b, 40, 1, test_sampling(0, 0, 5, false), &ob);
    assert_int_equal(cel_sched_step(s, &did, &err), CEL_OK);
    assert_int_equal(m->last_n_seqs, 2);
    assert_int_equal(m->last_new[0], 1); /* a's decode token first */
    assert_int_equal(m->last_new[1], 9); /* then b's chunk in the rest of the budget */
    cel_engine_stats st;
    cel_sched_get_stats(s, &st);
    assert_int_equal(st.last_batch_tokens, 10);
    assert_int_equal(st.running, 2);
    run(s);
    assert_string_equal(m->bad, "");
    req_out ra, rb;
    run_alone(a, 4, 1, test_sampling(0, 0, 20, false), &ra);
    run_alone(b, 40, 1, test_sampling(0, 0, 5, false), &rb);
    assert_same(&oa.s[0], &ra.s[0]);
    assert_same(&ob.s[0], &rb.s[0]);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_batch_invariance(void **state)
{
    (void)state;
    enum { NR = 6 };
    int32_t prompts[NR][50];
    int lens[NR] = {50, 3, 17, 32, 33, 20};
    uint32_t ns[NR] = {1, 3, 1, 2, 1, 4};
    req_out ref[NR], got[NR];
    for (int i = 0; i < NR; i++) {
        make_prompt(prompts[i], lens[i], 100 + (uint64_t)i);
        cel_sampling sp = test_sampling(i % 2 ? 1.0f : 0.7f, 1000 + (uint64_t)i, 25, false);
        sp.top_k = i == 2 ? 5 : 0;
        sp.top_p = i == 3 ? 0.9f : 1.0f;
        sp.repetition_penalty = i == 4 ? 1.3f : 1.0f;
        sp.frequency_penalty = i == 5 ? 0.5f : 0.0f;
        run_alone(prompts[i], (size_t)lens[i], ns[i], sp, &ref[i]);
    }
    /* all together, with a small budget so prefill and decode mix */
    mock *m = mock_new(256, 16, MOCK_HASH);
    cel_sched *s = mk(m, params(4096, 24));
    memset(got, 0, sizeof got);
    for (int i = 0; i < NR; i++) {
        cel_sampling sp = test_sampling(i % 2 ? 1.0f : 0.7f, 1000 + (uint64_t)i, 25, false);
        sp.top_k = i == 2 ? 5 : 0;
        sp.top_p = i == 3 ? 0.9f : 1.0f;
        sp.repetition_penalty = i == 4 ? 1.3f : 1.0f;
        sp.frequency_penalty = i == 5 ? 0.5f : 0.0f;
        submit(s, prompts[i], (size_t)lens[i], ns[i], sp, &got[i]);
    }
    run(s);
    assert_string_equal(m->bad, "");
    for (int i = 0; i < NR; i++)
        for (uint32_t k = 0; k < ns[i]; k++) assert_same(&got[i].s[k], &ref[i].s[k]);
    /* the samples of one request differ from each other (own RNG streams) */
    assert_memory_not_equal(got[1].s[0].ids, got[1].s[1].ids, 25 * sizeof(int32_t));
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_n_samples_share_prompt(void **state)
{
    (void)state;
    int32_t prompt[40];
    make_prompt(prompt, 40, 7);
    mock *m = mock_new(64, 16, MOCK_HASH);
    cel_sched *s = mk(m, params(4096, 512));
    req_out o = {0};
    submit(s, prompt, 40, 4, test_sampling(1.0f, 77, 10, false), &o);
    run(s);
    assert_string_equal(m->bad, "");
    /* the prompt was computed once; each sample then computes 9 tokens */
    assert_int_equal(m->n_tokens, 40 + 4 * 9);
    cel_sched_counters c;
    cel_sched_get_counters(s, &c);
    assert_int_equal(c.kv_cow, 3); /* three samples copy the shared partial block; the last writes in place */
    assert_int_equal(m->n_copies, 3);
    /* sample i of n=4 equals sample i of the same request with n=3 */
    req_out r3;
    run_alone(prompt, 40, 3, test_sampling(1.0f, 77, 10, false), &r3);
    for (int k = 0; k < 3; k++) assert_same(&o.s[k], &r3.s[k]);
    for (int k = 0; k < 4; k++) assert_int_equal(o.s[k].n_final, 1);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_prefix_cache_reuse(void **state)
{
    (void)state;
    int32_t a[70], b[70];
    make_prompt(a, 70, 21);
    memcpy(b, a, sizeof b);
    for (int i = 64; i < 70; i++) b[i] = (a[i] + 1) % 40;
    mock *m = mock_new(64, 16, MOCK_HASH);
    cel_sched *s = mk(m, params(4096, 512));
    req_out oa = {0}, ob = {0};
    submit(s, a, 70, 1, test_sampling(0, 0, 4, false), &oa);
    run(s);
    uint64_t t0 = m->n_tokens;
    submit(s, b, 70, 1, test_sampling(0, 0, 4, false), &ob);
    run(s);
    assert_string_equal(m->bad, "");
    assert_int_equal(ob.s[0].n_cached, 64);
    assert_int_equal(m->n_tokens - t0, 6 + 3);
    cel_engine_stats st;
    cel_sched_get_stats(s, &st);
    assert_int_equal(st.cached_tokens, 64);
    assert_int_equal(st.prefix_hits, 1);
    req_out rb;
    run_alone(b, 70, 1, test_sampling(0, 0, 4, false), &rb);
    assert_same(&ob.s[0], &rb.s[0]);
    /* the whole prompt cached: the last token is still computed for its logits */
    req_out oc = {0};
    submit(s, a, 64, 1, test_sampling(0, 0, 2, false), &oc);
    run(s);
    assert_int_equal(oc.s[0].n_cached, 48);

    /* weights changed: the cache is dropped */
    cel_error err;
    assert_int_equal(cel_sched_weights_changed(s, NULL, NULL, &err), CEL_OK);
    req_out od = {0};
    submit(s, a, 70, 1, test_sampling(0, 0, 1, false), &od);
    run(s);
    assert_int_equal(od.s[0].n_cached, 0);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_same_step_prefix_dedupe(void **state)
{
    (void)state;
    enum { NR = 5 };
    int32_t p[NR][40];
    make_prompt(p[0], 40, 5);
    for (int i = 1; i < NR; i++) {
        memcpy(p[i], p[0], sizeof p[0]);
        for (int k = 32; k < 40; k++) p[i][k] = (p[0][k] + i) % 40;
    }
    mock *m = mock_new(64, 16, MOCK_HASH);
    cel_sched *s = mk(m, params(4096, 512));
    req_out o[NR];
    memset(o, 0, sizeof o);
    for (int i = 0; i < NR; i++) submit(s, p[i], 40, 1, test_sampling(0, 0, 3, false), &o[i]);
    run(s);
    assert_string_equal(m->bad, "");
    /* the shared 32 tokens were computed once, not five times */
    assert_int_equal(m->n_tokens, 32 + NR * 8 + NR * 2);
    cel_sched_counters c;
    cel_sched_get_counters(s, &c);
    assert_true(c.deferrals > 0);
    for (int i = 1; i < NR; i++) assert_int_equal(o[i].s[0].n_cached, 32);
    for (int i = 0; i < NR; i++) {
        req_out r;
        run_alone(p[i], 40, 1, test_sampling(0, 0, 3, false), &r);
        assert_same(&o[i].s[0], &r.s[0]);
    }
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_preemption(void **state)
{
    (void)state;
    enum { NR = 5 };
    int32_t p[NR][10];
    req_out ref[NR], got[NR];
    memset(got, 0, sizeof got);
    for (int i = 0; i < NR; i++) {
        make_prompt(p[i], 10, 300 + (uint64_t)i);
        run_alone(p[i], 10, i == 2 ? 2 : 1, test_sampling(0.9f, (uint64_t)i, 24, false), &ref[i]);
    }
    /* 12 blocks of 4 tokens: each sequence needs up to 9 blocks */
    mock *m = mock_new(12, 4, MOCK_HASH);
    cel_sched *s = mk(m, params(48, 64));
    for (int i = 0; i < NR; i++) submit(s, p[i], 10, i == 2 ? 2 : 1, test_sampling(0.9f, (uint64_t)i, 24, false), &got[i]);
    run(s);
    assert_string_equal(m->bad, "");
    cel_sched_counters c;
    cel_sched_get_counters(s, &c);
    assert_true(c.preemptions > 0);
    for (int i = 0; i < NR; i++)
        for (int k = 0; k < (i == 2 ? 2 : 1); k++) {
            assert_int_equal(got[i].s[k].n_final, 1);
            assert_same(&got[i].s[k], &ref[i].s[k]);
        }
    cel_engine_stats st;
    cel_sched_get_stats(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_never_fits_and_context_full(void **state)
{
    (void)state;
    mock *m = mock_new(12, 4, MOCK_HASH); /* 48 tokens of KV */
    cel_sched *s = mk(m, params(100, 64));
    int32_t p[120];
    make_prompt(p, 120, 9);
    req_out big = {0}, huge = {0}, fits = {0};
    submit(s, p, 60, 2, test_sampling(0, 0, 5, false), &big);
    submit(s, p, 120, 1, test_sampling(0, 0, 5, false), &huge);
    submit(s, p, 40, 1, test_sampling(0, 0, 0, false), &fits); /* max_tokens 0: until the context is full */
    run(s);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(big.s[k].fin, CEL_FINISH_ERROR);
        assert_non_null(strstr(big.s[k].error, "KV pool"));
        assert_int_equal(big.s[k].n_final, 1);
    }
    assert_int_equal(huge.s[0].fin, CEL_FINISH_ERROR);
    assert_non_null(strstr(huge.s[0].error, "context of 100"));
    assert_int_equal(fits.s[0].fin, CEL_FINISH_LENGTH);
    assert_int_equal(fits.s[0].n, 8); /* 40 + 8 = 48 = the pool */
    cel_sched_counters c;
    cel_sched_get_counters(s, &c);
    assert_int_equal(c.n_ctx, 48);
    cel_error err;
    cel_completion out[1];
    assert_int_equal(cel_sched_generate(s, p, 48, 1, &(cel_sampling){.top_p = 1, .repetition_penalty = 1}, out, &err),
                     CEL_ERR_LIMIT);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_cancel(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_HASH);
    cel_sched *s = mk(m, params(4096, 512));
    int32_t p[20];
    make_prompt(p, 20, 4);
    req_out a = {0}, b = {0};
    uint64_t ida = submit(s, p, 20, 2, test_sampling(1.0f, 1, 400, false), &a);
    cel_error err;
    bool did;
    for (int i = 0; i < 3; i++) assert_int_equal(cel_sched_step(s, &did, &err), CEL_OK);
    assert_int_equal(a.s[0].n, 3);
    cel_engine_stats st;
    cel_sched_get_stats(s, &st);
    assert_true(st.kv_blocks_used > 0);
    cel_sched_cancel(s, ida);
    uint64_t idb = submit(s, p, 5, 3, test_sampling(0, 0, 5, false), &b);
    cel_sched_cancel(s, idb); /* cancelled while still queued */
    cel_sched_cancel(s, 9999); /* unknown ids are ignored */
    assert_int_equal(cel_sched_step(s, &did, &err), CEL_OK);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(a.s[k].fin, CEL_FINISH_CANCELLED);
        assert_int_equal(a.s[k].n_final, 1);
        assert_int_equal(a.s[k].n, 3);
    }
    for (int k = 0; k < 3; k++) {
        assert_int_equal(b.s[k].fin, CEL_FINISH_CANCELLED);
        assert_int_equal(b.s[k].n, 0);
    }
    cel_sched_get_stats(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.queued, 0);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_queue_bound_and_free_cancels(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_HASH);
    cel_sched_params pp = params(4096, 512);
    pp.max_queue = 2;
    cel_sched *s = mk(m, pp);
    int32_t p[4] = {1, 2, 3, 4};
    req_out a = {0}, b = {0}, c = {0};
    submit(s, p, 4, 1, test_sampling(0, 0, 3, false), &a);
    submit(s, p, 4, 1, test_sampling(0, 0, 3, false), &b);
    cel_request r = {.prompt = p, .n_prompt = 4, .n = 1, .sampling = test_sampling(0, 0, 3, false), .cb = collect, .ud = &c};
    cel_error err;
    uint64_t id;
    assert_int_equal(cel_sched_submit(s, &r, &id, &err), CEL_ERR_BUSY);
    assert_non_null(strstr(err.msg, "queue full"));
    bool did;
    assert_int_equal(cel_sched_step(s, &did, &err), CEL_OK); /* both admitted: room again */
    assert_int_equal(cel_sched_submit(s, &r, &id, &err), CEL_OK);
    /* bad requests are refused at submit with the reason */
    int32_t badp[2] = {1, V};
    r.prompt = badp;
    r.n_prompt = 2;
    assert_int_equal(cel_sched_submit(s, &r, &id, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "prompt token 1"));
    r.n_prompt = 0;
    assert_int_equal(cel_sched_submit(s, &r, &id, &err), CEL_ERR_INVALID);
    r.prompt = p;
    r.n_prompt = 4;
    r.sampling.top_p = 2.0f;
    assert_int_equal(cel_sched_submit(s, &r, &id, &err), CEL_ERR_INVALID);
    /* freeing with work pending ends everything CANCELLED */
    cel_sched_free(s);
    assert_int_equal(a.s[0].fin, CEL_FINISH_CANCELLED);
    assert_int_equal(b.s[0].fin, CEL_FINISH_CANCELLED);
    assert_int_equal(c.s[0].fin, CEL_FINISH_CANCELLED);
    assert_int_equal(c.s[0].n_final, 1);
    mock_free(&m->be);
}

static void test_forward_failure(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_HASH);
    cel_sched *s = mk(m, params(4096, 512));
    int32_t p[8];
    make_prompt(p, 8, 8);
    req_out a = {0}, b = {0};
    submit(s, p, 8, 2, test_sampling(0, 0, 3, false), &a);
    m->fail_next = 1;
    run(s);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(a.s[k].fin, CEL_FINISH_ERROR);
        assert_non_null(strstr(a.s[k].error, "injected"));
    }
    submit(s, p, 8, 1, test_sampling(0, 0, 3, false), &b); /* the engine goes on */
    run(s);
    assert_int_equal(b.s[0].fin, CEL_FINISH_LENGTH);
    assert_int_equal(b.s[0].n, 3);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_sampling_failure_is_per_sample(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_HASH);
    m->nan_after = 33;
    cel_sched *s = mk(m, params(4096, 512));
    int32_t a[5] = {1, 2, 3, 4, 33}, b[5] = {1, 2, 3, 4, 5};
    req_out oa = {0}, ob = {0}, oc = {0};
    submit(s, a, 5, 3, test_sampling(1.0f, 1, 6, false), &oa); /* its first logits are NaN: all three samples fail */
    submit(s, b, 5, 2, test_sampling(1.0f, 2, 6, false), &ob); /* same batch, unaffected */
    run(s);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(oa.s[k].fin, CEL_FINISH_ERROR);
        assert_int_equal(oa.s[k].n_final, 1);
        assert_non_null(strstr(oa.s[k].error, "not finite"));
    }
    for (int k = 0; k < 2; k++) {
        assert_int_equal(ob.s[k].n_final, 1);
        assert_true(ob.s[k].fin == CEL_FINISH_LENGTH || ob.s[k].fin == CEL_FINISH_ERROR);
        /* a sample that drew token 33 fails at that point; the others finish */
        bool drew = false;
        for (int i = 0; i < ob.s[k].n; i++) drew |= ob.s[k].ids[i] == 33;
        assert_int_equal(ob.s[k].fin == CEL_FINISH_ERROR, drew);
        if (!drew) assert_int_equal(ob.s[k].n, 6);
    }
    submit(s, b, 5, 1, test_sampling(0, 0, 4, false), &oc); /* the engine goes on */
    run(s);
    assert_int_equal(oc.s[0].fin, CEL_FINISH_LENGTH);
    cel_engine_stats st;
    cel_sched_get_stats(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.running, 0);
    cel_sched_free(s);
    mock_free(&m->be);
}

/* ---- threads ---- */

typedef struct tctx {
    cel_sched *s;
    int idx;
    req_out out[4];
    int32_t prompts[4][12];
} tctx;

static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int done_count;

static void collect_count(void *ud, const cel_token_event *ev)
{
    collect(ud, ev);
    if (ev->finish != CEL_FINISH_NONE) {
        pthread_mutex_lock(&done_mu);
        done_count++;
        pthread_cond_signal(&done_cv);
        pthread_mutex_unlock(&done_mu);
    }
}

static void *submitter(void *arg)
{
    tctx *t = arg;
    for (int i = 0; i < 4; i++) {
        make_prompt(t->prompts[i], 12, (uint64_t)(t->idx * 10 + i));
        cel_request r = {.prompt = t->prompts[i], .n_prompt = 12, .n = 1,
                         .sampling = test_sampling(0.8f, (uint64_t)(t->idx * 10 + i), 8, false), .cb = collect_count,
                         .ud = &t->out[i]};
        cel_error err;
        uint64_t id;
        while (cel_sched_submit(t->s, &r, &id, &err) == CEL_ERR_BUSY) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* Device sampling through the scheduler: a backend that samples the rows it
 * is asked for (the mock, with cel_sample_u and the uniform the scheduler
 * drew) - or gives every other one back as logits - yields exactly the
 * tokens and logprobs of the logits-only path, for a mix of requests: the
 * ones with penalties or logprob alternatives stay on the CPU, forks
 * sample their first token on the CPU, the rest go to the device. */
static void test_device_sampling_equals_host(void **state)
{
    (void)state;
    enum { NR = 7 };
    cel_sampling sps[NR];
    uint32_t ns[NR] = {1, 3, 1, 1, 1, 2, 1};
    for (int i = 0; i < NR; i++) {
        sps[i] = test_sampling(1.0f, 100 + (uint64_t)i, 12, false);
        sps[i].n_logprobs = 0;
    }
    sps[0].top_p = 0.9f;
    sps[1].top_k = 5;
    sps[1].temperature = 0.7f;
    sps[2].temperature = 0.0f;             /* greedy: no uniform */
    sps[3].repetition_penalty = 1.2f;      /* CPU */
    sps[4].n_logprobs = 2;                 /* CPU */
    sps[5].top_k = 2000;                   /* >= V: off, device */
    sps[5].min_p = 0.2f;
    sps[6].n_logprobs = -1;
    sps[6].top_p = 0.5f;
    req_out ref[NR], got[3][NR];
    int32_t prompts[NR][9];
    for (int i = 0; i < NR; i++) make_prompt(prompts[i], 5 + i % 4, 7000 + (uint64_t)i);
    for (int mode = -1; mode < 3; mode++) {
        mock *m = mock_new(256, 16, MOCK_HASH);
        m->be.can_sample = mode >= 0;
        m->give_back = mode == 1;
        cel_sched_params p = params(4096, mode == 2 ? 7 : 512); /* mode 2: small steps, prompts chunked */
        cel_sched *s = mk(m, p);
        req_out *o = mode < 0 ? ref : got[mode];
        memset(o, 0, sizeof(req_out) * NR);
        for (int i = 0; i < NR; i++) submit(s, prompts[i], (size_t)(5 + i % 4), ns[i], sps[i], &o[i]);
        run(s);
        assert_string_equal(m->bad, "");
        if (mode >= 0) {
            assert_true(m->n_dev > 20);
            if (mode == 1) assert_true(m->n_dev_back > 10);
        } else {
            assert_int_equal(m->n_dev, 0);
        }
        cel_sched_free(s);
        mock_free(&m->be);
    }
    for (int mode = 0; mode < 3; mode++)
        for (int i = 0; i < NR; i++)
            for (uint32_t k = 0; k < ns[i]; k++) {
                assert_same(&ref[i].s[k], &got[mode][i].s[k]);
                assert_int_equal(got[mode][i].s[k].n, 12);
                assert_memory_equal(ref[i].s[k].lps, got[mode][i].s[k].lps, 12 * sizeof(float));
            }
    /* the samples are not all alike (the draws matter) */
    assert_memory_not_equal(ref[1].s[0].ids, ref[1].s[1].ids, 12 * sizeof(int32_t));
}

static void test_engine_thread(void **state)
{
    (void)state;
    mock *m = mock_new(256, 16, MOCK_HASH);
    cel_sched_params pp = params(4096, 64);
    pp.max_queue = 3; /* forces BUSY retries */
    cel_sched *s = mk(m, pp);
    cel_error err;
    assert_int_equal(cel_sched_start(s, &err), CEL_OK);
    bool did;
    assert_int_equal(cel_sched_step(s, &did, &err), CEL_ERR_INVALID); /* the thread owns stepping */
    done_count = 0;
    tctx t[4];
    memset(t, 0, sizeof t);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        t[i].s = s;
        t[i].idx = i;
        pthread_create(&th[i], NULL, submitter, &t[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    pthread_mutex_lock(&done_mu);
    while (done_count < 16) pthread_cond_wait(&done_cv, &done_mu);
    pthread_mutex_unlock(&done_mu);
    /* generate() on a running engine waits for its own request */
    int32_t p[5] = {1, 2, 3, 4, 5};
    cel_sampling sp = test_sampling(0, 0, 4, false);
    cel_completion c[2];
    assert_int_equal(cel_sched_generate(s, p, 5, 2, &sp, c, &err), CEL_OK);
    assert_int_equal(c[0].n_ids, 4);
    assert_memory_equal(c[0].ids, c[1].ids, 4 * sizeof(int32_t)); /* greedy: both samples agree */
    cel_completion_free(&c[0]);
    cel_completion_free(&c[1]);
    cel_sched_stop(s);
    assert_string_equal(m->bad, "");
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 4; k++) {
            req_out r;
            run_alone(t[i].prompts[k], 12, 1, test_sampling(0.8f, (uint64_t)(i * 10 + k), 8, false), &r);
            assert_same(&t[i].out[k].s[0], &r.s[0]);
        }
    /* idle engine thread sleeps; stop + start again works */
    assert_int_equal(cel_sched_start(s, &err), CEL_OK);
    cel_sched_free(s);
    mock_free(&m->be);
}

static void test_generate_collects(void **state)
{
    (void)state;
    mock *m = mock_new(64, 16, MOCK_COUNT);
    cel_sched *s = mk(m, params(1024, 512));
    int32_t p[1] = {39};
    cel_sampling sp = test_sampling(0, 0, 3, false);
    const char *stop[] = {"wo"};
    sp.stop = stop;
    sp.n_stop = 1;
    cel_completion c[1];
    cel_error err;
    assert_int_equal(cel_sched_generate(s, p, 1, 1, &sp, c, &err), CEL_OK);
    assert_string_equal(c[0].text, "hello ");
    assert_int_equal(c[0].n_ids, 2);
    assert_int_equal(c[0].ids[0], 40);
    assert_int_equal(c[0].finish, CEL_FINISH_STOP);
    assert_true(c[0].logprobs[0] < 0 && c[0].logprobs[0] > -0.1f); /* 10 vs <= 4: nearly certain */
    cel_completion_free(&c[0]);
    /* a stop string right at the start: empty text, still a string */
    const char *stop0[] = {"hel"};
    sp.stop = stop0;
    assert_int_equal(cel_sched_generate(s, p, 1, 1, &sp, c, &err), CEL_OK);
    assert_string_equal(c[0].text, "");
    assert_int_equal(c[0].n_ids, 2);
    cel_completion_free(&c[0]);
    assert_int_equal(cel_sched_generate(s, p, 1, 0, &sp, c, &err), CEL_ERR_INVALID);
    cel_sched_free(s);
    mock_free(&m->be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_and_text),
        cmocka_unit_test(test_eos_and_stop_tokens),
        cmocka_unit_test(test_stop_string_across_tokens),
        cmocka_unit_test(test_chunked_prefill_equals_unchunked),
        cmocka_unit_test(test_decode_first_then_prefill_chunks),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_n_samples_share_prompt),
        cmocka_unit_test(test_prefix_cache_reuse),
        cmocka_unit_test(test_same_step_prefix_dedupe),
        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_never_fits_and_context_full),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_queue_bound_and_free_cancels),
        cmocka_unit_test(test_forward_failure),
        cmocka_unit_test(test_sampling_failure_is_per_sample),
        cmocka_unit_test(test_device_sampling_equals_host),
        cmocka_unit_test(test_engine_thread),
        cmocka_unit_test(test_generate_collects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
