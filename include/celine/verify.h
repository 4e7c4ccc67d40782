/*
 * celine/verify.h - graders for RL rewards: math (LaTeX-aware, exact rational
 * / numeric / symbolic equality), multiple choice and short open-ended
 * answers, a required-format check, and group advantages (GRPO, Dr.GRPO, RLOO).
 *
 * Depends on libc and PCRE2 only. A cel_verifier is immutable after creation
 * and may be shared by any number of threads; every call does bounded work
 * (size caps, PCRE2 match/depth limits, recursion limits, a work budget) and
 * fails closed: an item over a bound scores 0 with a reason. No signals, no
 * global state.
 *
 * Threads and lifetimes (the server's workers and Python trainers call this
 * concurrently):
 *  - cel_verifier_create / cel_verifier_free are not concurrent with anything
 *    on the same verifier; in between, cel_verify_grade and cel_verify_batch
 *    may run on any number of threads at once, with no locking.
 *  - Every call keeps its state on the caller's stack (about 17 KiB) plus
 *    memory it frees before returning; memory does not grow with the number
 *    of calls. Nothing is kept between calls.
 *  - Strings in items are borrowed for the duration of the call only.
 */
#ifndef CELINE_VERIFY_H
#define CELINE_VERIFY_H

#include "celine/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cel_task { CEL_TASK_AUTO = 0, CEL_TASK_MATH, CEL_TASK_MCQ, CEL_TASK_OPEN } cel_task;
const char *cel_task_name(cel_task t);
/* "math" | "mcq" | "open" | "auto"; returns false for anything else. */
bool cel_task_parse(const char *s, cel_task *out);

typedef enum cel_adv_mode { CEL_ADV_NONE = 0, CEL_ADV_GRPO, CEL_ADV_DR_GRPO, CEL_ADV_RLOO } cel_adv_mode;
const char *cel_adv_mode_name(cel_adv_mode m);
bool cel_adv_mode_parse(const char *s, cel_adv_mode *out); /* "grpo" | "dr_grpo" | "rloo" | "none" */

/* Required-format flags (combine with |). */
enum {
    CEL_FORMAT_NONE = 0,
    CEL_FORMAT_BOXED = 1 << 0,       /* the final answer is in \boxed{} (after </think> when present) */
    CEL_FORMAT_ANSWER_LINE = 1 << 1, /* an "Answer:" line ("Final answer:", markdown bold allowed) */
    CEL_FORMAT_THINK = 1 << 2,       /* at most one <think>, exactly one </think> after it, text after that */
};
/* Parses "none", "boxed", "answer", "think", or a comma list ("think,boxed"). */
bool cel_format_parse(const char *s, uint32_t *flags);

typedef struct cel_verify_config {
    uint32_t format;              /* CEL_FORMAT_* required; default NONE */
    bool format_either;           /* with BOXED|ANSWER_LINE: either one suffices (default true) */
    double reward_correct;        /* correct and format ok: default 1 */
    double reward_correct_bad_format; /* correct, format not ok: default 0 */
    double reward_wrong;          /* default 0 (also the reward of items over a bound) */
    double reward_wrong_good_format; /* wrong, format ok: default 0 */
    double rel_tol;               /* numeric tolerance, relative: default 1e-6 (two integers always compare exactly) */
    double abs_tol;               /* absolute, for values near 0: default 1e-9 */
    bool last_number_fallback;    /* math/open: take the last number (or last $math$) when nothing else is found (default true) */
    size_t max_response_bytes;    /* longer responses score 0, reason "too_long": default 1 MiB */
    size_t max_answer_bytes;      /* extracted answers (and references) longer than this are not parsed: default 4096 */
    uint32_t max_depth;           /* LaTeX parser recursion: default 64 (1..1000) */
    uint64_t work_budget;         /* abstract work units per item (parser nodes, evaluations, regex steps): default 1e6 */
    uint64_t seed;                /* for symbolic equality's random points (results are deterministic per seed) */
} cel_verify_config;
void cel_verify_config_default(cel_verify_config *c);

typedef struct cel_verify_item {
    const char *id;               /* optional, echoed by front ends */
    cel_task task;
    const char *response;         /* model output (UTF-8) */
    size_t response_len;          /* 0: strlen(response); else the bytes to grade (may hold NULs) */
    const char *reference;        /* gold answer, NUL-terminated; for MCQ: the gold letter (or an option's text);
                                   * for math a worked solution works too (its last \boxed{} is used) */
    const char *const *choices;   /* MCQ option texts, or NULL (then options A-J) */
    size_t n_choices;             /* at most 26 */
    const char *group;            /* group key for advantages, or NULL */
} cel_verify_item;

typedef enum cel_extract_source {
    CEL_EXTRACT_NONE = 0,
    CEL_EXTRACT_BOXED,
    CEL_EXTRACT_ANSWER_PHRASE, /* "Answer:", "The answer is", "final answer is" */
    CEL_EXTRACT_MCQ_LETTER,    /* a committed option letter ("option C is correct", a last line "(C)") */
    CEL_EXTRACT_MCQ_TEXT,      /* the option's text */
    CEL_EXTRACT_LAST_NUMBER,
    CEL_EXTRACT_WHOLE,         /* the whole (short) response */
    CEL_EXTRACT_LAST_MATH,     /* the last $...$ / \(...\) / \[...\] segment (fallback, like LAST_NUMBER) */
} cel_extract_source;
const char *cel_extract_source_name(cel_extract_source s);

#define CEL_VERIFY_EXTRACT_MAX 512
typedef struct cel_verify_result {
    double reward;
    bool correct;
    bool format_ok;
    cel_task task;                /* the task actually graded (auto resolved) */
    bool has_extracted;
    char extracted[CEL_VERIFY_EXTRACT_MAX]; /* what was taken (truncated to fit, at a UTF-8 boundary);
                                             * for MCQ the committed letter */
    cel_extract_source source;
    size_t extracted_offset;      /* byte offset in the response */
    /* "correct", "wrong_answer", "no_answer", "bad_format" (correct but the
     * format is missing), "hedged", "multiple_answers", "invalid_option",
     * "unparsable_answer", "unparsable_reference", "answer_too_long",
     * "too_long", "too_deep", "work_budget", "regex_limit", "out_of_memory",
     * or, from cel_verify_batch only, "error: <message>" */
    char reason[96];
    double f1;                    /* open-ended: token F1 against the reference */
    bool has_advantage;
    double advantage;
} cel_verify_result;

typedef struct cel_verifier cel_verifier;
/* Compiles the patterns once. cfg is copied (NULL: defaults). Fails with
 * CEL_ERR_INVALID on a bad config (negative tolerance, max_depth outside
 * 1..1000, unknown format flags). */
cel_status cel_verifier_create(const cel_verify_config *cfg /* NULL: defaults */, cel_verifier **out, cel_error *err);
void cel_verifier_free(cel_verifier *v); /* NULL is fine */

/* Grades one item. Returns CEL_OK whenever a result was produced (a wrong or
 * over-budget answer is a result, not an error); errors are for invalid items
 * (NULL response, MCQ reference not a letter of the options, ...). *res is
 * always written: on an error it holds reward 0 and reason "error". */
cel_status cel_verify_grade(const cel_verifier *v, const cel_verify_item *item, cel_verify_result *res,
                            cel_error *err);

/* Grades n items on n_threads threads (<= 1: caller's thread) and fills
 * advantages per group (items without a group form groups of one). whiten:
 * normalise the advantages over the whole batch afterwards. Per-item errors
 * leave that result with reward 0 and reason "error: ..." (it still counts in
 * its group with reward 0); err_count (may be NULL) receives how many.
 * Results do not depend on n_threads. */
cel_status cel_verify_batch(const cel_verifier *v, const cel_verify_item *items, size_t n, cel_adv_mode mode,
                            bool whiten, int n_threads, cel_verify_result *res, size_t *err_count, cel_error *err);

/* Advantages of rewards r[0..n) grouped by group_ids (equal ids = one group).
 * GRPO: (r - mean) / (std_unbiased + 1e-6), a group of one gets 0; DR_GRPO:
 * r - mean; RLOO: r - mean of the others (0 for a group of one). NONE copies
 * the rewards. whiten: then (a - mean) / (std + 1e-6) over all n. Rewards
 * must be finite. */
cel_status cel_advantages(const double *r, const uint64_t *group_ids, size_t n, cel_adv_mode mode, bool whiten,
                          double *adv_out, cel_error *err);

/* sizeof of the public structs, so bindings that mirror them (Python ctypes)
 * can check their layout at load time: which = 0 config, 1 item, 2 result;
 * 0 for anything else. */
size_t cel_verify_struct_size(int which);

#ifdef __cplusplus
}
#endif
#endif
