/*
 * gen_internal.h - what the generators' files share without making it public:
 * UTF-8 helpers, LaTeX span detection, and the pipeline core that MIND,
 * rephrase and CrossThink plug into.
 */
#ifndef CEL_GEN_INTERNAL_H
#define CEL_GEN_INTERNAL_H

#include <jansson.h>

#include "celine/generate.h"

/* ---- text helpers (text.c) ---- */
/* Byte spans [start, end) of LaTeX math in text, sorted and disjoint: $..$,
 * $$..$$, \(..\), \[..\] and math environments (equation, align, ... with
 * their starred forms). Unterminated openers are plain text. *out is
 * malloc'ed (NULL when none). */
typedef struct cel__span {
    size_t start, end;
} cel__span;
cel_status cel__math_spans(const char *text, size_t len, cel__span **out, size_t *n, cel_error *err);
/* Trims ASCII whitespace from both ends of [*s, *s + *len). */
void cel__trim(const char **s, size_t *len);
/* Counts tokens through a counter, or 0 with the error set. */
cel_status cel__count(const cel_gen_counter *c, const char *s, size_t n, size_t *out, cel_error *err);
/* Case-folded hash of a whitespace-normalised string (dedup keys). */
uint64_t cel__norm_hash(const char *s, size_t n);
/* Appends s as a JSON string value into obj[key] (sanitising UTF-8). */
cel_status cel__json_set_str(json_t *obj, const char *key, const char *s, size_t n);

/* ---- documents (docio.c) ---- */
/* One JSON Lines document -> *doc with o's field names (all non-NULL); *cur
 * gets the parsed object doc points into (json_decref it, also on error);
 * idbuf / qbuf hold ids and qualities written from numbers. Errors name
 * where:line. The corpus job reader (job_input.c) shares it. */
cel_status cel__doc_parse_line(const char *s, size_t n, const cel_doc_reader_opts *o, const char *where, uint64_t line,
                               json_t **cur, char idbuf[32], char qbuf[64], cel_gen_doc *doc, cel_error *err);

/* ---- pipeline core (pipeline.c) ---- */
typedef struct cel__doc cel__doc;
typedef struct cel__pipe_ops cel__pipe_ops;

/* Called when a request of a document finishes. The handler may add records
 * and drops to the document and submit further requests for it. */
typedef void (*cel__unit_done)(cel_gen_pipeline *p, cel__doc *d, void *unit, const cel_gen_result *r);

struct cel__pipe_ops {
    const char *name;
    /* Expands a freshly pushed document into requests (cel__submit) and/or
     * records; returning an error stops the pipeline. */
    cel_status (*start)(cel_gen_pipeline *p, cel__doc *d, cel_error *err);
    /* Frees a unit given to cel__submit (after its handler ran, or when the
     * pipeline is freed with the request in flight). */
    void (*free_unit)(void *unit);
    /* Frees kind-specific pipeline state (cfg copies). */
    void (*free)(cel_gen_pipeline *p);
};

struct cel__doc {
    uint64_t seq;      /* push order */
    char *id;
    char *text;
    size_t len;
    char *quality;
    int outstanding;   /* requests in flight */
    bool started;      /* start() returned */
    struct cel__item *items; /* records and drops (sorted by ord at emission) */
    size_t n_items, cap_items;
    cel__doc *next;    /* in-flight list, push order */
    void *kstate;      /* kind-specific per-document state */
    void (*free_kstate)(void *);
};

struct cel_gen_pipeline {
    const cel__pipe_ops *ops;
    cel_gen_backend *be;
    cel_gen_sink sink;
    cel_gen_common c;
    char model_name[128];
    cel_gen_stats stats;
    cel__doc *head, *tail; /* in flight, push order */
    size_t n_inflight;
    uint64_t next_seq;
    cel_status failed;     /* sticky error from a callback */
    cel_error fail_err;
    /* dedup of emitted records (open addressing over 64-bit keys, 0 = empty) */
    uint64_t *seen;
    size_t seen_n, seen_cap;
    struct cel__req *reqs; /* requests in flight (orphaned at free) */
    void *kind;            /* kind-specific config */
};

cel_status cel__pipeline_init(cel_gen_pipeline *p, const cel__pipe_ops *ops, const cel_gen_common *c,
                              cel_gen_backend *be, const cel_gen_sink *sink, cel_error *err);
/* Allocates a pipeline with a zeroed kind struct of kind_size bytes
 * (p->kind) and runs cel__pipeline_init: the first half of every
 * cel_<kind>_create. On failure nothing is left allocated and *out is NULL,
 * so ops->free must accept a zeroed kind struct. */
cel_status cel__pipeline_new(size_t kind_size, const cel__pipe_ops *ops, const cel_gen_common *c, cel_gen_backend *be,
                             const cel_gen_sink *sink, cel_gen_pipeline **out, cel_error *err);
/* Submits a request for document d; unit is handed to done() (then freed
 * with ops->free_unit). On failure the unit is freed too. */
cel_status cel__submit(cel_gen_pipeline *p, cel__doc *d, const cel_gen_request *req, cel__unit_done done, void *unit,
                       cel_error *err);
/* Chunks document d (cel_gen_chunk, chunk_tokens per chunk) for the
 * chunk-based kinds. A blank document gets a DOC_EMPTY drop instead and
 * *chunks = NULL: the caller returns the status then. Errors name the document. */
cel_status cel__chunk_doc(cel_gen_pipeline *p, cel__doc *d, int chunk_tokens, cel_chunk **chunks, size_t *n_chunks,
                          cel_error *err);
/* Submits the one-sample chat request of a rendered generation template
 * (counted in stats.units): a system message when t has system parts and
 * they rendered to a buffer, then the user message; the pipeline's sampling
 * with the given seed and t's @output_tokens as max_tokens when it is set
 * (> 0). Unit ownership as cel__submit. */
cel_status cel__submit_rendered(cel_gen_pipeline *p, cel__doc *d, const cel_template *t, const cel_buf *sys,
                                const cel_buf *usr, uint64_t seed, cel__unit_done done, void *unit, cel_error *err);
/* Items of a document are emitted sorted by `ord` (ties: in the order they
 * were added), so handlers running in completion order still give records in
 * unit order. Kinds build ord from the unit index and a sub-index. */
#define CEL__ORD(unit, sub) (((uint64_t)(unit) << 20) | (uint64_t)(sub))
/* Queues a record (steals the JSON object's reference). dedup_key != 0 drops
 * it at emission as DUPLICATE when an earlier record had the same key.
 * tokens: the record text's token count (stats). */
cel_status cel__add_record(cel_gen_pipeline *p, cel__doc *d, uint64_t ord, json_t *rec, size_t tokens,
                           uint64_t dedup_key, const char *unit_id);
/* Marks a dedup key as already emitted (0 is ignored): a resumed corpus job
 * re-seeds the set from the records it wrote before (job.c). */
cel_status cel__pipeline_seen_add(cel_gen_pipeline *p, uint64_t key);
/* Queues a drop notice (counted at emission, in order). detail may be NULL. */
cel_status cel__add_drop(cel_gen_pipeline *p, cel__doc *d, uint64_t ord, cel_gen_drop reason, const char *unit_id,
                         const char *detail);
/* "name#hash8" of a template: identifies the exact prompt text in records. */
void cel__template_tag(const cel_template *t, char *out, size_t cap);
/* Records a failure from inside a callback; poll returns it. */
void cel__fail(cel_gen_pipeline *p, const cel_error *e);
/* Resolves template names of one kind (every template of that kind when n
 * is 0) into a malloc'ed array; errors name the missing or mistyped one. */
cel_status cel__resolve_templates(const cel_template_set *set, cel_tmpl_kind kind, const char *const *names, size_t n,
                                  const cel_template ***out, size_t *n_out, cel_error *err);
/* cel__resolve_templates plus the cel__template_tag of each template in a
 * parallel malloc'ed array (*tags, *n_out entries). On failure the caller
 * still frees whatever *out and *tags hold (its kind free does). */
cel_status cel__resolve_tagged(const cel_template_set *set, cel_tmpl_kind kind, const char *const *names, size_t n,
                               const cel_template ***out, size_t *n_out, char (**tags)[96], cel_error *err);
/* The "sampling" object of records. */
json_t *cel__sampling_json(const cel_sampling *s);

#endif
