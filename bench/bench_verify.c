/*
 * bench_verify - grading speed per task type on a generated workload:
 * items/s on one thread, mean/p50/p99/max time per item, peak RSS; then a
 * batch on all threads; then (optional) memory flatness over many items.
 *
 *   bench_verify [--items N] [--flat M] [--threads T] [--resp-bytes B]
 *
 * Responses are generated deterministically (seeded RNG): a few hundred
 * bytes of reasoning followed by the final answer in the forms models use
 * (\boxed{}, "The answer is ...", "**Answer:** ...", hedges, wrong answers).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "celine/verify.h"

#define POOL 2048

typedef struct {
    char *resp;
    const char *ref;
    const char *const *choices;
    size_t n_choices;
    cel_task task;
} witem;

static const char *const filler[] = {
    "Let me think about this step by step. ", "First, we note the given quantities. ",
    "Substituting the values into the equation gives a simpler form. ", "We can check the units as well. ",
    "Option A can be ruled out because it contradicts the premise. ", "Now consider the second case. ",
    "Multiplying both sides by the denominator, ", "so the total is obtained by adding the parts. ",
    "This is consistent with the earlier estimate of 12 and 7. ", "Hence, after simplifying, ",
};

static const char *const math_pairs[][2] = {
    {"\\boxed{\\frac{1}{2}}", "0.5"},         {"\\boxed{27}", "27"},
    {"The answer is $1,000$.", "1000"},        {"\\boxed{2\\sqrt{2}}", "\\sqrt{8}"},
    {"\\boxed{x^2-1}", "(x-1)(x+1)"},          {"\\boxed{(1, 2)}", "(1,2)"},
    {"**Answer:** $\\dfrac{3}{4}$", "0.75"},   {"\\boxed{[3, \\infty)}", "[3,\\infty)"},
    {"\\boxed{1 \\pm \\sqrt{2}}", "1+\\sqrt2, 1-\\sqrt2"}, {"The final answer is $\\boxed{50\\%}$.", "\\frac12"},
    {"\\boxed{26}", "27"},                     {"\\boxed{\\frac{\\pi}{3}}", "60^\\circ"},
    {"\\boxed{x = 3}", "3"},                   {"\\boxed{\\{1,2,3\\}}", "\\{3,2,1\\}"},
    {"\\boxed{12 \\text{ cm}}", "12"},         {"\\boxed{-\\frac{7}{2}}", "-3.5"},
};

static const char *const mcq_tails[][2] = {
    {"The answer is (C).", "C"},     {"**Answer:** B", "B"},      {"\\boxed{D}", "D"},
    {"The answer is A or B.", "A"},  {"Answer: (E)", "C"},        {"I choose C", "C"},
    {"The correct option is (J).", "J"}, {"Final answer: b", "B"}, {"The answer is Paris.", "B"},
};

static const char *const capitals[] = {"Berlin", "Paris", "Madrid", "Rome"};

static const char *const open_pairs[][2] = {
    {"Answer: Paris", "Paris"},             {"The answer is the skin.", "skin"},
    {"Answer: 1,000", "1000"},              {"**Answer:** George Washington", "George Washington"},
    {"Answer: liver", "skin"},              {"The answer is \\boxed{1919}.", "1919"},
    {"Answer: São Paulo", "Sao Paulo"},     {"Answer: twenty-one", "21"},
};

static size_t g_resp_bytes = 300; /* average response length to aim at */

static char *make_response(cel_rng *r, const char *tail, bool think)
{
    char buf[20000];
    size_t k = 0;
    if (think) k += (size_t)snprintf(buf + k, sizeof buf - k, "<think>");
    /* filler sentences average ~45 bytes: aim at g_resp_bytes +- 50% */
    size_t target = g_resp_bytes / 2 + (size_t)(cel_rng_next(r) % (g_resp_bytes + 1));
    while (k + 200 < sizeof buf && k < target)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s", filler[cel_rng_next(r) % 10]);
    if (think) k += (size_t)snprintf(buf + k, sizeof buf - k, "</think>\n");
    snprintf(buf + k, sizeof buf - k, "%s", tail);
    return strdup(buf);
}

static void make_pool(cel_task t, witem *pool, uint64_t seed)
{
    cel_rng r;
    cel_rng_seed(&r, seed);
    for (int i = 0; i < POOL; i++) {
        witem *w = &pool[i];
        memset(w, 0, sizeof *w);
        w->task = t;
        bool think = cel_rng_next(&r) & 1;
        if (t == CEL_TASK_MATH) {
            size_t j = cel_rng_next(&r) % (sizeof math_pairs / sizeof math_pairs[0]);
            w->resp = make_response(&r, math_pairs[j][0], think);
            w->ref = math_pairs[j][1];
        } else if (t == CEL_TASK_MCQ) {
            size_t j = cel_rng_next(&r) % (sizeof mcq_tails / sizeof mcq_tails[0]);
            w->resp = make_response(&r, mcq_tails[j][0], think);
            w->ref = mcq_tails[j][1];
            if (j == 8) w->choices = capitals, w->n_choices = 4;
        } else {
            size_t j = cel_rng_next(&r) % (sizeof open_pairs / sizeof open_pairs[0]);
            w->resp = make_response(&r, open_pairs[j][0], think);
            w->ref = open_pairs[j][1];
        }
    }
}

/* CPU time of the calling thread: throughput that other processes on a
 * shared machine do not distort. */
static double thread_cpu_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void to_item(const witem *w, cel_verify_item *it)
{
    memset(it, 0, sizeof *it);
    it->task = w->task;
    it->response = w->resp;
    it->reference = w->ref;
    it->choices = w->choices;
    it->n_choices = w->n_choices;
}

static void bench_task(const cel_verifier *v, const char *name, const witem *pool, size_t n)
{
    uint64_t *lat = malloc(n * sizeof *lat);
    if (!lat) return;
    size_t correct = 0, bytes = 0;
    cel_verify_item it;
    cel_verify_result res;
    /* warm-up */
    for (size_t i = 0; i < POOL; i++) {
        to_item(&pool[i], &it);
        cel_verify_grade(v, &it, &res, NULL);
    }
    uint64_t t0 = cel_now_ns();
    double c0 = thread_cpu_sec();
    for (size_t i = 0; i < n; i++) {
        to_item(&pool[i % POOL], &it);
        uint64_t a = cel_now_ns();
        cel_verify_grade(v, &it, &res, NULL);
        lat[i] = cel_now_ns() - a;
        correct += res.correct;
        bytes += strlen(pool[i % POOL].resp);
    }
    double cpu = thread_cpu_sec() - c0;
    double dt = (double)(cel_now_ns() - t0) * 1e-9;
    qsort(lat, n, sizeof *lat, cmp_u64);
    printf("%-5s %8zu items  %9.0f items/s wall  %9.0f items/s CPU  p50 %5.2f us  p99 %6.2f us  p99.9 %7.2f us  "
           "max %8.2f us  %3zu B/resp  correct %4.1f%%\n",
           name, n, (double)n / dt, cpu > 0 ? (double)n / cpu : 0.0, (double)lat[n / 2] / 1e3,
           (double)lat[n * 99 / 100] / 1e3, (double)lat[n * 999 / 1000] / 1e3, (double)lat[n - 1] / 1e3, bytes / n,
           100.0 * (double)correct / (double)n);
    free(lat);
}

static void bench_batch(const cel_verifier *v, witem *pools[3], size_t n, int threads)
{
    cel_verify_item *items = malloc(n * sizeof *items);
    cel_verify_result *res = malloc(n * sizeof *res);
    char (*groups)[24] = malloc(n * 24);
    if (!items || !res || !groups) return;
    for (size_t i = 0; i < n; i++) {
        to_item(&pools[i % 3][(i / 3) % POOL], &items[i]);
        snprintf(groups[i], 24, "g%zu", i / 8);
        items[i].group = groups[i];
    }
    uint64_t t0 = cel_now_ns();
    size_t nerr = 0;
    cel_verify_batch(v, items, n, CEL_ADV_GRPO, false, threads, res, &nerr, NULL);
    double dt = (double)(cel_now_ns() - t0) * 1e-9;
    printf("batch %9zu mixed items on %d threads with GRPO advantages: %.0f items/s (%.0f per thread), %zu errors\n",
           n, threads, (double)n / dt, (double)n / dt / threads, nerr);
    free(items), free(res), free(groups);
}

static void bench_flat(const cel_verifier *v, witem *pools[3], size_t m)
{
    size_t step = m / 10 ? m / 10 : 1;
    size_t rss0 = cel_current_rss_bytes();
    printf("memory over %zu mixed items (RSS every %zu):", m, step);
    cel_verify_item it;
    cel_verify_result res;
    uint64_t t0 = cel_now_ns();
    for (size_t i = 0; i < m; i++) {
        to_item(&pools[i % 3][(i / 3) % POOL], &it);
        cel_verify_grade(v, &it, &res, NULL);
        if ((i + 1) % step == 0) printf(" %.1f", (double)cel_current_rss_bytes() / 1048576.0);
    }
    double dt = (double)(cel_now_ns() - t0) * 1e-9;
    printf(" MiB\nstart RSS %.1f MiB, end RSS %.1f MiB, %.0f items/s\n", (double)rss0 / 1048576.0,
           (double)cel_current_rss_bytes() / 1048576.0, (double)m / dt);
}

int main(int argc, char **argv)
{
    size_t n = 200000, flat = 0;
    int threads = cel_cpu_count();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--items") == 0 && i + 1 < argc) n = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--flat") == 0 && i + 1 < argc) flat = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--resp-bytes") == 0 && i + 1 < argc) g_resp_bytes = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_verify [--items N] [--flat M] [--threads T] [--resp-bytes B]\n");
            return 2;
        }
    }
    if (n == 0) n = 1;
    cel_verifier *v = NULL;
    cel_error e;
    if (cel_verifier_create(NULL, &v, &e) != CEL_OK) {
        fprintf(stderr, "bench_verify: %s\n", e.msg);
        return 1;
    }
    static witem math[POOL], mcq[POOL], open[POOL];
    make_pool(CEL_TASK_MATH, math, 1);
    make_pool(CEL_TASK_MCQ, mcq, 2);
    make_pool(CEL_TASK_OPEN, open, 3);
    witem *pools[3] = {math, mcq, open};
    printf("bench_verify: %zu items per task, one thread (celine %s); per-item times are wall clock,\n"
           "\"items/s CPU\" counts this thread's CPU time only (other processes do not distort it)\n",
           n, CEL_VERSION_STRING);
    bench_task(v, "mcq", mcq, n);
    bench_task(v, "math", math, n);
    bench_task(v, "open", open, n);
    bench_batch(v, pools, n, threads);
    if (flat) bench_flat(v, pools, flat);
    printf("peak RSS %.1f MiB\n", (double)cel_peak_rss_bytes() / 1048576.0);
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < POOL; i++) free(pools[p][i].resp);
    cel_verifier_free(v);
    return 0;
}
