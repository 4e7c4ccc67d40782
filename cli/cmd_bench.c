/* `celine bench`: prefill and decode throughput of the local engine, and the
 * cost of n samples of one prompt against one sample's prefill. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/backend.h" /* cel_backend_kv_block_bytes: to size the KV pool for the run */
#include "celine/engine.h"
#include "cli.h"

static const cel_cli_cmd *self(void);

typedef struct run_ctx {
    int target;                 /* samples in the run */
    int n_first, n_final;
    uint64_t n_tokens;
    double t_all_first;         /* when the last sample got its first token */
    uint64_t tokens_at_all_first;
    char error[256];
} run_ctx;

static void on_event(void *ud, const cel_token_event *ev)
{
    run_ctx *c = ud;
    if (ev->token >= 0) {
        c->n_tokens++;
        if (ev->n_gen_tokens == 1 && ++c->n_first == c->target) {
            c->t_all_first = cel_now_sec();
            c->tokens_at_all_first = c->n_tokens;
        }
    }
    if (ev->finish != CEL_FINISH_NONE) {
        c->n_final++;
        if (ev->finish == CEL_FINISH_ERROR && !c->error[0])
            snprintf(c->error, sizeof c->error, "%s", ev->error ? ev->error : "unknown error");
    }
}

typedef struct result {
    double seconds;        /* submit to idle */
    double first_seconds;  /* submit to every sample's first token */
    double decode_tok_s;   /* tokens after that point / time after it */
    uint64_t prompt_computed;
} result;

/* Runs `batch` requests of `n` samples each on random prompts of P tokens
 * (distinct per request and per call: nothing comes from the prefix cache
 * unless n > 1 shares it) generating G tokens each, on this thread. */
static int run_once(const char *name, cel_engine *e, int32_t n_vocab, int batch, uint32_t n, int P, int G,
                    uint64_t seed, result *r)
{
    cel_error err;
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.target = batch * (int)n;
    int32_t *prompt = malloc((size_t)P * sizeof *prompt);
    if (!prompt) return cel_cli_fail(name, "out of memory");
    cel_sampling sp;
    cel_sampling_default(&sp);
    sp.max_tokens = G;
    sp.ignore_eos = true;
    sp.temperature = n > 1 ? 1.0f : 0.0f; /* samples of one prompt should differ */
    sp.seed = seed;
    cel_engine_stats st0, st1;
    cel_engine_get_stats(e, &st0);
    cel_rng rng;
    cel_rng_seed(&rng, seed);
    double t0 = cel_now_sec();
    for (int b = 0; b < batch; b++) {
        for (int i = 0; i < P; i++) prompt[i] = (int32_t)(cel_rng_next(&rng) % (uint64_t)n_vocab);
        cel_request rq = {.prompt = prompt, .n_prompt = (size_t)P, .n = n, .sampling = sp, .cb = on_event, .ud = &c};
        uint64_t id;
        if (cel_engine_submit(e, &rq, &id, &err)) {
            free(prompt);
            return cel_cli_fail(name, "%s", err.msg);
        }
    }
    free(prompt);
    if (cel_engine_run_until_idle(e, &err)) return cel_cli_fail(name, "%s", err.msg);
    double t1 = cel_now_sec();
    if (c.error[0]) return cel_cli_fail(name, "generation failed: %s", c.error);
    cel_engine_get_stats(e, &st1);
    r->seconds = t1 - t0;
    r->first_seconds = c.t_all_first - t0;
    double dt = t1 - c.t_all_first;
    r->decode_tok_s = dt > 0 ? (double)(c.n_tokens - c.tokens_at_all_first) / dt : 0.0;
    r->prompt_computed = st1.prompt_tokens - st0.prompt_tokens;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static json_t *json_list(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static int run(int argc, char **argv)
{
    const char *model = NULL, *backend = "cpu";
    int64_t batch = 1, P = 512, G = 128, threads = 0, reps = 3, samples = 16, batch_tokens = 512, DP = -1;
    bool json = false, no_shared = false;
    const cel_cli_opt opts[] = {
        {"model", CEL_OPT_STR, &model, "PATH", "model: a .gguf file or a Hugging Face folder"},
        {"batch", CEL_OPT_INT, &batch, "B", "parallel sequences (default 1)"},
        {"prompt-tokens", CEL_OPT_INT, &P, "P", "prompt tokens per sequence (default 512)"},
        {"gen-tokens", CEL_OPT_INT, &G, "G", "generated tokens per sequence (default 128)"},
        {"decode-prompt-tokens", CEL_OPT_INT, &DP, "N", "prompt tokens in the decode run (default: P; 1 measures decode from an empty context, like llama-bench's tg)"},
        {"threads", CEL_OPT_INT, &threads, "N", "CPU threads (default: all cores)"},
        {"reps", CEL_OPT_INT, &reps, "R", "repetitions; medians are reported (default 3)"},
        {"samples", CEL_OPT_INT, &samples, "N", "samples of one prompt in the shared-prefix case (default 16)"},
        {"no-shared", CEL_OPT_FLAG, &no_shared, NULL, "skip the shared-prefix case"},
        {"batch-tokens", CEL_OPT_INT, &batch_tokens, "N", "tokens per forward pass (default 512)"},
        {"backend", CEL_OPT_STR, &backend, "NAME", "cpu or cuda (default cpu)"},
        {"json", CEL_OPT_FLAG, &json, NULL, "print the results as one JSON object"},
    };
    int rc = cel_cli_parse(self(), argc, argv, opts, sizeof opts / sizeof opts[0], NULL, 0, NULL);
    if (rc) return cel_cli_exit(rc);
    const char *name = self()->name;
    if (!model) return cel_cli_usage(name, "--model is required (see --help)");
    if (DP < 0) DP = P;
    if (DP < 1 || DP > 1000000 || batch < 1 || batch > 4096 || P < 1 || P > 1000000 || G < 2 || G > 1000000 || reps < 1 || reps > 1000 ||
        samples < 1 || samples > 4096 || threads < 0 || threads > 4096 || batch_tokens < 1 || batch_tokens > 1 << 20) {
        return cel_cli_usage(name, "out of range: --batch 1..4096, --prompt-tokens >= 1, --gen-tokens >= 2, --reps 1..1000, "
                                   "--samples 1..4096, --batch-tokens >= 1");
    }
    cel_backend_kind bk;
    if ((rc = cel_cli_backend(name, backend, &bk))) return rc;

    cel_error err;
    cel_model *m = NULL;
    if ((rc = cel_cli_model_load(name, model, NULL, false, &m))) return rc;
    const int32_t bs = 16;
    int64_t seqs = batch > samples || no_shared ? batch : samples;
    int64_t per_seq = ((P > DP ? P : DP) + G + bs) / bs + 1;
    cel_engine_params ep;
    cel_cli_engine_params(&ep, bk, threads);
    ep.block_size = bs;
    ep.n_ctx = (int32_t)((P > DP ? P : DP) + G + 1);
    ep.max_seqs = (int32_t)seqs;
    ep.max_batch_tokens = (int32_t)batch_tokens;
    ep.kv_bytes = cel_backend_kv_block_bytes(&m->hp, bs, bk) * (size_t)(seqs * per_seq + 2 * per_seq);
    cel_engine *e = NULL;
    if (cel_engine_create(m, &ep, &e, &err)) {
        cel_model_free(m);
        return cel_cli_fail(name, "%s", err.msg);
    }
    int status = 0;
    const int32_t V = m->hp.n_vocab;
    if (!threads) threads = cel_cpu_count();
    int R = (int)reps;
    double *pre = calloc((size_t)R, sizeof *pre), *dec = calloc((size_t)R, sizeof *dec),
           *t1 = calloc((size_t)R, sizeof *t1), *tn = calloc((size_t)R, sizeof *tn);
    uint64_t shared_computed = 0;
    result r;
    if (!pre || !dec || !t1 || !tn) {
        status = cel_cli_fail(name, "out of memory");
        goto done;
    }
    /* warm-up: fault the weights in */
    if ((status = run_once(name, e, V, 1, 1, P < 32 ? (int)P : 32, 2, 999, &r))) goto done;
    for (int k = 0; k < R; k++) {
        uint64_t seed = 1000 * (uint64_t)(k + 1);
        /* prefill: every prompt computed, one token sampled */
        if ((status = run_once(name, e, V, (int)batch, 1, (int)P, 1, seed + 1, &r))) goto done;
        pre[k] = (double)(batch * P) / r.seconds;
        /* decode: tokens after every sequence has its first one */
        if ((status = run_once(name, e, V, (int)batch, 1, (int)DP, (int)G, seed + 2, &r))) goto done;
        dec[k] = r.decode_tok_s;
        if (!no_shared) {
            if ((status = run_once(name, e, V, 1, 1, (int)P, 1, seed + 3, &r))) goto done;
            t1[k] = r.seconds;
            if ((status = run_once(name, e, V, 1, (uint32_t)samples, (int)P, 1, seed + 4, &r))) goto done;
            tn[k] = r.seconds;
            shared_computed = r.prompt_computed;
        }
    }
    double pre_all[1000], dec_all[1000], t1_all[1000], tn_all[1000], ratio[1000];
    memcpy(pre_all, pre, (size_t)R * sizeof *pre);
    memcpy(dec_all, dec, (size_t)R * sizeof *dec);
    memcpy(t1_all, t1, (size_t)R * sizeof *t1);
    memcpy(tn_all, tn, (size_t)R * sizeof *tn);
    /* the ratio per repetition (one and all samples ran back to back), then
     * its median: steadier than a ratio of medians on a busy machine */
    for (int k = 0; k < R; k++) ratio[k] = t1[k] > 0 ? tn[k] / t1[k] : 0.0;
    double pre_m = median(pre, R), dec_m = median(dec, R);
    double t1_m = no_shared ? 0 : median(t1, R), tn_m = no_shared ? 0 : median(tn, R);
    double ratio_m = no_shared ? 0 : median(ratio, R);
    size_t rss = cel_peak_rss_bytes();
    cel_engine_stats st;
    cel_engine_get_stats(e, &st);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(model));
        json_object_set_new(o, "backend", json_string(backend));
        json_object_set_new(o, "threads", json_integer(threads));
        json_object_set_new(o, "batch", json_integer(batch));
        json_object_set_new(o, "prompt_tokens", json_integer(P));
        json_object_set_new(o, "gen_tokens", json_integer(G));
        json_object_set_new(o, "decode_prompt_tokens", json_integer(DP));
        json_object_set_new(o, "reps", json_integer(R));
        json_object_set_new(o, "prefill_tok_s", json_real(pre_m));
        json_object_set_new(o, "prefill_tok_s_all", json_list(pre_all, R));
        json_object_set_new(o, "decode_tok_s", json_real(dec_m));
        json_object_set_new(o, "decode_tok_s_all", json_list(dec_all, R));
        json_object_set_new(o, "decode_tok_s_per_seq", json_real(dec_m / (double)batch));
        if (!no_shared)
            json_object_set_new(o, "shared_prefix",
                                json_pack("{s:I,s:f,s:f,s:f,s:I,s:o,s:o}", "samples", (json_int_t)samples,
                                          "one_sample_s", t1_m, "all_samples_s", tn_m, "ratio", ratio_m,
                                          "prompt_tokens_computed", (json_int_t)shared_computed, "one_sample_s_all",
                                          json_list(t1_all, R), "all_samples_s_all", json_list(tn_all, R)));
        json_object_set_new(o, "kv_blocks", json_integer(st.kv_blocks_total));
        json_object_set_new(o, "peak_rss_bytes", json_integer((json_int_t)rss));
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (s) puts(s);
        free(s);
    } else {
        printf("model %s, %s backend, %lld threads, %d repetitions (medians)\n", model, backend, (long long)threads, R);
        printf("prefill  %lld x %lld tokens: %.1f tokens/s\n", (long long)batch, (long long)P, pre_m);
        printf("decode   %lld x %lld tokens after %lld prompt tokens: %.2f tokens/s aggregate (%.2f per sequence)\n",
               (long long)batch, (long long)G, (long long)DP, dec_m, dec_m / (double)batch);
        if (!no_shared)
            printf("shared   %lld samples of one %lld-token prompt: %.3f s vs %.3f s for one sample (%.2fx), "
                   "%llu prompt tokens computed\n",
                   (long long)samples, (long long)P, tn_m, t1_m, ratio_m,
                   (unsigned long long)shared_computed);
        printf("peak RSS %.1f MiB\n", (double)rss / 1048576.0);
    }
done:
    free(pre);
    free(dec);
    free(t1);
    free(tn);
    cel_engine_free(e);
    cel_model_free(m);
    return status;
}

const cel_cli_cmd cel_cli_cmd_bench = {
    "bench",
    "measure the engine's prefill and decode speed and the cost of n samples of one prompt",
    "Usage: celine bench --model PATH [--batch B] [--prompt-tokens P] [--gen-tokens G] [options]\n\n"
    "Runs B sequences of P random prompt tokens each, generating one token (prefill\n"
    "speed: B*P / time), then B sequences of --decode-prompt-tokens prompt tokens\n"
    "generating G tokens each (decode speed: tokens generated after every sequence\n"
    "has its first token / that time, summed over the batch). Then the\n"
    "shared-prefix case: --samples samples of one P-token prompt (they share its KV\n"
    "blocks) against one sample of another prompt, back to back; the ratio is their\n"
    "time to the first token of every sample (median of the per-repetition ratios).\n"
    "Prompts are random and distinct, so the prefix\n"
    "cache never helps across runs. Reports medians over --reps and the peak RSS.",
    run,
};

static const cel_cli_cmd *self(void) { return &cel_cli_cmd_bench; }
