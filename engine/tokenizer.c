/*
 * tokenizer.c - the encoder and decoder shared by every tokenizer family (see
 * tok_impl.h for the representation; the loaders are tok_json.c and tok_gguf.c).
 *
 * Encoding pipeline (the order the Hugging Face tokenizers library uses):
 *   1. split added tokens out of the raw text (leftmost-longest; special ones only
 *      with CEL_TOKENIZE_PARSE_SPECIAL, non-special added tokens always);
 *   2. each remaining segment: normalize (NFC; SentencePiece: spaces -> ▁ and the
 *      leading ▁), pre-tokenize (byte-level: the family's regex via PCRE2 with
 *      UTF + UCP; SentencePiece: words starting at ▁ when the vocabulary allows it);
 *   3. BPE each piece: a min-heap of adjacent pairs keyed by (merge rank,
 *      position) and a doubly linked list of symbols, O(n log n) per piece;
 *   4. unknown characters fall back to <0xNN> byte tokens (or <unk>).
 * The tokenizer is immutable after loading, so any number of threads may encode
 * and decode with it at once; every call allocates its own scratch.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

/* ------------------------------------------------------------ building */

cel_status cel__tok_new(cel_tok_kind kind, int32_t n_vocab, cel_tokenizer **out, cel_error *err)
{
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > (1 << 24))
        return cel_error_set(err, CEL_ERR_FORMAT, "vocabulary size %d out of range (1..%d)", (int)n_vocab, 1 << 24);
    cel_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory for the tokenizer");
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->tok_off = calloc((size_t)n_vocab, sizeof *t->tok_off);
    t->tok_len = calloc((size_t)n_vocab, sizeof *t->tok_len);
    t->tok_attr = calloc((size_t)n_vocab, sizeof *t->tok_attr);
    if (!t->tok_off || !t->tok_len || !t->tok_attr) {
        cel_tokenizer_free(t);
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory for %d tokens", (int)n_vocab);
    }
    t->bos = t->eos = t->unk = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    snprintf(t->pre_name, sizeof t->pre_name, "%s", kind == CEL_TOK_SPM_BPE ? "spm" : "default");
    *out = t;
    return CEL_OK;
}

cel_status cel__tok_set(cel_tokenizer *t, int32_t id, const char *s, size_t len, uint16_t attr, cel_error *err)
{
    if (id < 0 || id >= t->n_vocab) return cel_error_set(err, CEL_ERR_FORMAT, "token id %d out of range", (int)id);
    if (len > (1u << 20)) return cel_error_set(err, CEL_ERR_FORMAT, "token %d is %zu bytes long", (int)id, len);
    if (t->arena_len + len + 1 > UINT32_MAX) return cel_error_set(err, CEL_ERR_LIMIT, "token strings exceed 4 GiB");
    if (t->arena_len + len + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap * 2 : 1 << 16;
        while (cap < t->arena_len + len + 1) cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory for token strings");
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, s, len);
    t->arena[t->arena_len + len] = 0;
    t->tok_off[id] = (uint32_t)t->arena_len;
    t->tok_len[id] = (uint32_t)len;
    t->tok_attr[id] = attr;
    t->arena_len += len + 1;
    return CEL_OK;
}

static inline const char *tok_str(const cel_tokenizer *t, int32_t id) { return t->arena + t->tok_off[id]; }

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

int32_t cel__tok_lookup(const cel_tokenizer *t, const char *s, size_t len)
{
    if (!t->vmap) return -1;
    size_t mask = t->vmap_cap - 1;
    for (size_t i = cel_hash64(s, len, 0) & mask;; i = (i + 1) & mask) {
        int32_t id = t->vmap[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == len && memcmp(tok_str(t, id), s, len) == 0) return id;
    }
}

/* Added tokens sort by first byte, then longer first, so the first match found
 * at a position is the longest. */
typedef struct added_key {
    uint32_t first, len;
    int32_t id;
} added_key;

static int cmp_added(const void *a, const void *b)
{
    const added_key *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static cel_status sort_added(cel_tokenizer *t)
{
    added_key *k = malloc((t->n_added ? t->n_added : 1) * sizeof *k);
    if (!k) return CEL_ERR_NOMEM;
    for (size_t i = 0; i < t->n_added; i++)
        k[i] = (added_key){(unsigned char)tok_str(t, t->added[i])[0], t->tok_len[t->added[i]], t->added[i]};
    qsort(k, t->n_added, sizeof *k, cmp_added);
    for (size_t i = 0; i < t->n_added; i++) t->added[i] = k[i].id;
    free(k);
    return CEL_OK;
}

cel_status cel__tok_index(cel_tokenizer *t, cel_error *err)
{
    free(t->vmap);
    t->vmap_cap = pow2_at_least((size_t)t->n_vocab * 2);
    t->vmap = malloc(t->vmap_cap * sizeof *t->vmap);
    if (!t->vmap) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory for the vocabulary map");
    memset(t->vmap, 0xff, t->vmap_cap * sizeof *t->vmap);
    size_t n_added = 0, mask = t->vmap_cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint16_t a = t->tok_attr[id];
        if (a & (CEL__TOK_CONTROL | CEL__TOK_USER | CEL__TOK_UNKNOWN)) {
            if (t->tok_len[id] > 0) n_added++;
            if (a & (CEL__TOK_CONTROL | CEL__TOK_USER)) continue;
        }
        if (a == 0) continue; /* a hole in the id space */
        const char *s = tok_str(t, id);
        size_t len = t->tok_len[id];
        size_t i = cel_hash64(s, len, 0) & mask;
        bool dup = false;
        for (; t->vmap[i] >= 0; i = (i + 1) & mask) {
            int32_t o = t->vmap[i];
            if (t->tok_len[o] == len && memcmp(tok_str(t, o), s, len) == 0) {
                dup = true; /* keep the first id for a repeated string */
                break;
            }
        }
        if (!dup) t->vmap[i] = id;
    }
    free(t->added);
    t->added = malloc((n_added ? n_added : 1) * sizeof *t->added);
    if (!t->added) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory for added tokens");
    t->n_added = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if ((t->tok_attr[id] & (CEL__TOK_CONTROL | CEL__TOK_USER | CEL__TOK_UNKNOWN)) && t->tok_len[id] > 0)
            t->added[t->n_added++] = id;
    if (sort_added(t)) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory for added tokens");
    size_t k = 0;
    for (int b = 0; b < 256; b++) {
        t->added_first[b] = (uint32_t)k;
        while (k < t->n_added && (unsigned char)tok_str(t, t->added[k])[0] == b) k++;
    }
    t->added_first[256] = (uint32_t)k;

    /* byte tokens */
    for (int b = 0; b < 256; b++) {
        if (t->kind == CEL_TOK_BPE_BYTE) {
            char c = (char)b;
            t->byte_id[b] = cel__tok_lookup(t, &c, 1);
        } else {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            int32_t id = cel__tok_lookup(t, name, 6);
            t->byte_id[b] = id;
        }
    }
    return CEL_OK;
}

cel_status cel__tok_merges_reserve(cel_tokenizer *t, size_t n, cel_error *err)
{
    size_t cap = pow2_at_least(n * 2 + 16);
    if (t->mmap && t->mmap_cap >= cap) return CEL_OK;
    cel__merge_slot *old = t->mmap;
    size_t old_cap = t->mmap_cap;
    t->mmap = calloc(cap, sizeof *t->mmap);
    if (!t->mmap) {
        t->mmap = old;
        return cel_error_set(err, CEL_ERR_NOMEM, "out of memory for %zu merges", n);
    }
    t->mmap_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].key) continue;
        size_t j = cel_mix64(old[i].key) & (cap - 1);
        while (t->mmap[j].key) j = (j + 1) & (cap - 1);
        t->mmap[j] = old[i];
    }
    free(old);
    return CEL_OK;
}

static inline uint64_t merge_key(int32_t l, int32_t r) { return (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1; }

static inline const cel__merge_slot *merge_find(const cel_tokenizer *t, int32_t l, int32_t r)
{
    if (!t->mmap_cap) return NULL;
    uint64_t key = merge_key(l, r);
    size_t mask = t->mmap_cap - 1;
    for (size_t i = cel_mix64(key) & mask;; i = (i + 1) & mask) {
        if (t->mmap[i].key == key) return &t->mmap[i];
        if (!t->mmap[i].key) return NULL;
    }
}

/* Inserts a merge; an existing pair keeps its first (better) rank. */
static cel_status merge_put(cel_tokenizer *t, int32_t l, int32_t r, int32_t rank, int32_t result, cel_error *err)
{
    if ((t->n_merges + 1) * 2 > t->mmap_cap) CEL_TRY(cel__tok_merges_reserve(t, t->n_merges + 1, err));
    uint64_t key = merge_key(l, r);
    size_t mask = t->mmap_cap - 1;
    size_t i = cel_mix64(key) & mask;
    for (; t->mmap[i].key; i = (i + 1) & mask)
        if (t->mmap[i].key == key) return CEL_OK; /* first rank wins */
    t->mmap[i].key = key;
    t->mmap[i].rank = rank;
    t->mmap[i].result = result;
    t->n_merges++;
    return CEL_OK;
}

cel_status cel__tok_add_merge(cel_tokenizer *t, int32_t left, int32_t right, int32_t rank, cel_error *err)
{
    size_t ll = t->tok_len[left], rl = t->tok_len[right];
    char stack[256];
    char *cat = ll + rl <= sizeof stack ? stack : malloc(ll + rl);
    if (!cat) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    memcpy(cat, tok_str(t, left), ll);
    memcpy(cat + ll, tok_str(t, right), rl);
    int32_t res = cel__tok_lookup(t, cat, ll + rl);
    if (cat != stack) free(cat);
    if (res < 0) return CEL_ERR_NOT_FOUND;
    return merge_put(t, left, right, rank, res, err);
}

typedef struct score_pair {
    float score;
    int32_t l, r, res;
} score_pair;

static int cmp_score_pair(const void *a, const void *b)
{
    const score_pair *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->res != y->res) return x->res < y->res ? -1 : 1;
    return (x->l > y->l) - (x->l < y->l);
}

cel_status cel__tok_merges_from_scores(cel_tokenizer *t, cel_error *err)
{
    if (!t->scores) return cel_error_set(err, CEL_ERR_FORMAT, "SentencePiece vocabulary without scores");
    size_t n = 0, cap = 1024;
    score_pair *p = malloc(cap * sizeof *p);
    if (!p) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!(t->tok_attr[id] & CEL__TOK_NORMAL)) continue;
        if (cel__tok_lookup(t, tok_str(t, id), t->tok_len[id]) != id) continue; /* a repeated string */
        const unsigned char *s = (const unsigned char *)tok_str(t, id);
        size_t len = t->tok_len[id];
        for (size_t cut = 1; cut < len; cut++) {
            if ((s[cut] & 0xC0) == 0x80) continue; /* split at character boundaries only */
            int32_t l = cel__tok_lookup(t, (const char *)s, cut), r = cel__tok_lookup(t, (const char *)s + cut, len - cut);
            if (l < 0 || r < 0) continue;
            if (n == cap) {
                score_pair *q = realloc(p, cap * 2 * sizeof *p);
                if (!q) {
                    free(p);
                    return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
                }
                p = q;
                cap *= 2;
            }
            p[n++] = (score_pair){t->scores[id], l, r, id};
        }
    }
    qsort(p, n, sizeof *p, cmp_score_pair);
    cel_status s = cel__tok_merges_reserve(t, t->n_merges + n, err);
    int32_t rank = 0;
    for (size_t i = 0; s == CEL_OK && i < n; i++) {
        if (i > 0 && p[i].score != p[i - 1].score) rank++; /* equal scores: equal rank, position decides */
        s = merge_put(t, p[i].l, p[i].r, rank, p[i].res, err);
    }
    free(p);
    return s;
}

const char *cel__tok_regex_for(const char *pre)
{
    static const char gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    static const char llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    static const char qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    if (!pre) return NULL;
    if (!strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2") || !strcmp(pre, "default")) return gpt2;
    if (!strcmp(pre, "llama3") || !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama-v3") || !strcmp(pre, "smaug-bpe"))
        return llama3;
    if (!strcmp(pre, "qwen2") || !strcmp(pre, "qwen35") || !strcmp(pre, "deepseek-r1-qwen")) return qwen2;
    return NULL;
}

cel_status cel__tok_set_regex(cel_tokenizer *t, const char *pattern, cel_error *err)
{
    int ec = 0;
    PCRE2_SIZE eo = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return cel_error_set(err, CEL_ERR_FORMAT, "pre-tokenizer regex does not compile at offset %zu: %s",
                             (size_t)eo, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter when JIT is unavailable */
    if (t->re) pcre2_code_free(t->re);
    t->re = re;
    return CEL_OK;
}

static const char *const eog_names[] = {"<|eot_id|>", "<|im_end|>", "<|end_of_text|>", "<|endoftext|>", "</s>",
                                        "<|end|>",    "<|eom_id|>", "<end_of_turn>",     "<|return|>"};

cel_status cel__tok_finish(cel_tokenizer *t, cel_error *err)
{
    (void)err;
    /* SentencePiece words: when no token has ▁ after another character, no merge
     * can cross the start of a ▁-run, so text can be split there and each word
     * encoded alone (exactly, and faster). */
    if (t->kind == CEL_TOK_SPM_BPE) {
        bool ok = true;
        for (int32_t id = 0; id < t->n_vocab && ok; id++) {
            if (!(t->tok_attr[id] & CEL__TOK_NORMAL)) continue;
            const char *s = tok_str(t, id);
            size_t len = t->tok_len[id], i = 0;
            while (i + 3 <= len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) i += 3;
            for (; i + 3 <= len; i++)
                if (memcmp(s + i, "\xe2\x96\x81", 3) == 0) ok = false;
        }
        t->spm_split_words = ok;
    }
    for (size_t i = 0; i < sizeof eog_names / sizeof eog_names[0]; i++) {
        int32_t id = cel_tokenizer_find(t, eog_names[i]);
        if (id >= 0 && (t->tok_attr[id] & (CEL__TOK_CONTROL | CEL__TOK_USER))) t->tok_attr[id] |= CEL__TOK_EOG;
    }
    if (t->eos >= 0) t->tok_attr[t->eos] |= CEL__TOK_EOG;
    return CEL_OK;
}

/* ------------------------------------------------------------ accessors */

void cel_tokenizer_free(cel_tokenizer *t)
{
    if (!t) return;
    free(t->arena);
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_attr);
    free(t->scores);
    free(t->vmap);
    free(t->mmap);
    free(t->added);
    if (t->re) pcre2_code_free(t->re);
    free(t->chat_template);
    free(t);
}

cel_tok_kind cel_tokenizer_kind(const cel_tokenizer *t) { return t->kind; }
int32_t cel_tokenizer_n_vocab(const cel_tokenizer *t) { return t->n_vocab; }
int32_t cel_tokenizer_bos(const cel_tokenizer *t) { return t->bos; }
int32_t cel_tokenizer_eos(const cel_tokenizer *t) { return t->eos; }
const char *cel_tokenizer_pre_name(const cel_tokenizer *t) { return t->pre_name; }
const char *cel_tokenizer_chat_template(const cel_tokenizer *t) { return t ? t->chat_template : NULL; }

bool cel_tokenizer_is_eog(const cel_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && (t->tok_attr[id] & CEL__TOK_EOG);
}

int32_t cel_tokenizer_find(const cel_tokenizer *t, const char *piece)
{
    size_t len = strlen(piece);
    if (len && t->added) {
        unsigned char b = (unsigned char)piece[0];
        for (uint32_t k = t->added_first[b]; k < t->added_first[b + 1]; k++) {
            int32_t id = t->added[k];
            if (t->tok_len[id] == len && memcmp(tok_str(t, id), piece, len) == 0) return id;
        }
    }
    return cel__tok_lookup(t, piece, len);
}

/* ------------------------------------------------------------ encoding */

typedef struct sym {
    int32_t id;   /* token, or -(byte length) of a character that is no token */
    int32_t prev; /* -1 at the start */
    int32_t next; /* -1 at the end */
} sym;

typedef struct heap_ent {
    int32_t rank, pos, lid, rid, res;
} heap_ent;

/* Per-call scratch: grows to the longest piece seen (bounded by CEL__TOK_MAX_PIECE). */
typedef struct work {
    const cel_tokenizer *t;
    sym *syms;
    size_t syms_cap;
    heap_ent *heap;
    size_t heap_len, heap_cap;
    cel_buf norm;  /* normalized segment */
    cel_buf norm2; /* SentencePiece text */
    int32_t *out;
    size_t n_out, out_cap;
    pcre2_match_data *md;
    bool last_unk;
} work;

static cel_status out_push(work *w, int32_t id)
{
    if (w->n_out == w->out_cap) {
        size_t cap = w->out_cap ? w->out_cap * 2 : 256;
        int32_t *o = realloc(w->out, cap * sizeof *o);
        if (!o) return CEL_ERR_NOMEM;
        w->out = o;
        w->out_cap = cap;
    }
    w->out[w->n_out++] = id;
    return CEL_OK;
}

static inline bool heap_less(const heap_ent *a, const heap_ent *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static cel_status heap_push(work *w, heap_ent e)
{
    if (w->heap_len == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 256;
        heap_ent *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return CEL_ERR_NOMEM;
        w->heap = h;
        w->heap_cap = cap;
    }
    size_t i = w->heap_len++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = e;
    return CEL_OK;
}

static heap_ent heap_pop(work *w)
{
    heap_ent top = w->heap[0], last = w->heap[--w->heap_len];
    size_t i = 0, n = w->heap_len;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!heap_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static cel_status try_pair(work *w, int32_t pos)
{
    if (pos < 0) return CEL_OK;
    const sym *a = &w->syms[pos];
    if (a->next < 0 || a->id < 0) return CEL_OK;
    const sym *b = &w->syms[a->next];
    if (b->id < 0) return CEL_OK;
    const cel__merge_slot *m = merge_find(w->t, a->id, b->id);
    if (!m) return CEL_OK;
    return heap_push(w, (heap_ent){m->rank, pos, a->id, b->id, m->result});
}

/* Emits the ids of one character that is not a token: its byte tokens when the
 * model falls back to bytes and has all of them, else <unk> (fused when the
 * model fuses consecutive unknowns), else nothing. */
static cel_status emit_unknown(work *w, const unsigned char *s, size_t n)
{
    const cel_tokenizer *t = w->t;
    bool bytes_ok = t->byte_fallback || t->kind == CEL_TOK_BPE_BYTE;
    for (size_t i = 0; bytes_ok && i < n; i++)
        if (t->byte_id[s[i]] < 0) bytes_ok = false;
    if (bytes_ok) {
        for (size_t i = 0; i < n; i++) CEL_TRY(out_push(w, t->byte_id[s[i]]));
        w->last_unk = false;
        return CEL_OK;
    }
    if (t->unk < 0) return CEL_OK;
    if (t->fuse_unk && w->last_unk) return CEL_OK;
    w->last_unk = true;
    return out_push(w, t->unk);
}

/* BPE over one piece (already normalized / pre-tokenized) of at most max bytes. */
static cel_status bpe_piece_max(work *w, const char *p, size_t n, size_t max)
{
    const cel_tokenizer *t = w->t;
    if (n == 0) return CEL_OK;
    while (n > max) {
        /* adversarial length: cut at a character boundary (see CEL__TOK_MAX_PIECE) */
        size_t cut = max;
        while (cut > max - 4 && ((unsigned char)p[cut] & 0xC0) == 0x80) cut--;
        CEL_TRY(bpe_piece_max(w, p, cut, max));
        p += cut;
        n -= cut;
    }
    if (t->ignore_merges) {
        int32_t id = cel__tok_lookup(t, p, n);
        if (id >= 0) {
            w->last_unk = false;
            return out_push(w, id);
        }
    }
    if (w->syms_cap < n) {
        sym *s = realloc(w->syms, n * sizeof *s);
        if (!s) return CEL_ERR_NOMEM;
        w->syms = s;
        w->syms_cap = n;
    }
    /* initial symbols: bytes (byte-level) or characters */
    const unsigned char *u = (const unsigned char *)p;
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = 1;
        int32_t id;
        if (t->kind == CEL_TOK_BPE_BYTE) {
            id = t->byte_id[u[i]];
            if (id < 0) id = -1;
        } else {
            cl = cel_utf8_seq_len(u + i, n - i);
            if (cl == 0) cl = 1;
            id = cel__tok_lookup(t, p + i, cl);
            if (id < 0) id = -(int32_t)cl;
        }
        w->syms[ns] = (sym){id, ns - 1, ns + 1};
        ns++;
        i += cl;
    }
    w->syms[ns - 1].next = -1;
    w->heap_len = 0;
    for (int32_t i = 0; i + 1 < ns; i++) CEL_TRY(try_pair(w, i));
    while (w->heap_len) {
        heap_ent e = heap_pop(w);
        sym *a = &w->syms[e.pos];
        if (a->id != e.lid || a->next < 0) continue; /* stale: a changed since the pair was queued */
        sym *b = &w->syms[a->next];
        if (b->id != e.rid) continue;
        a->id = e.res;
        a->next = b->next;
        if (b->next >= 0) w->syms[b->next].prev = e.pos;
        b->id = INT32_MIN; /* dead */
        CEL_TRY(try_pair(w, a->prev));
        CEL_TRY(try_pair(w, e.pos));
    }
    size_t off = 0;
    for (int32_t i = 0; i >= 0; i = w->syms[i].next) {
        int32_t id = w->syms[i].id;
        if (id >= 0) {
            CEL_TRY(out_push(w, id));
            w->last_unk = false;
            off += t->tok_len[id];
        } else {
            size_t cl = (size_t)(-(int64_t)id);
            CEL_TRY(emit_unknown(w, u + off, cl));
            off += cl;
        }
    }
    return CEL_OK;
}

static cel_status bpe_piece(work *w, const char *p, size_t n) { return bpe_piece_max(w, p, n, CEL__TOK_MAX_PIECE); }

/* Byte-level: the regex splits the segment; gaps between matches (invalid UTF-8)
 * are pieces of their own. */
static cel_status pretokenize_regex(work *w, const char *s, size_t n)
{
    const cel_tokenizer *t = w->t;
    if (!t->re) return bpe_piece(w, s, n);
    if (!w->md) {
        w->md = pcre2_match_data_create_from_pattern(t->re, NULL);
        if (!w->md) return CEL_ERR_NOMEM;
    }
    size_t gap = 0, from = 0;
    while (from < n) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, from, 0, w->md, NULL);
        if (rc < 0) break; /* no further match (PCRE2_ERROR_NOMATCH), or a limit: the rest is one gap */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* an empty match would loop: step over one character */
            size_t cl = cel_utf8_seq_len((const unsigned char *)s + ms, n - ms);
            from = ms + (cl ? cl : 1);
            continue;
        }
        if (ms > gap) CEL_TRY(bpe_piece(w, s + gap, ms - gap));
        CEL_TRY(bpe_piece(w, s + ms, me - ms));
        gap = from = me;
    }
    if (gap < n) CEL_TRY(bpe_piece(w, s + gap, n - gap));
    return CEL_OK;
}

static const char META[] = "\xe2\x96\x81"; /* ▁ U+2581 */

/* SentencePiece: spaces -> ▁ (plus the leading ▁), then BPE per word. */
static cel_status encode_spm(work *w, const char *s, size_t n, bool prefix)
{
    const cel_tokenizer *t = w->t;
    cel_buf *b = &w->norm2;
    cel_buf_reset(b);
    if (prefix && cel_buf_append(b, META, 3)) return CEL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        cel_status st = s[i] == ' ' ? cel_buf_append(b, META, 3) : cel_buf_putc(b, s[i]);
        if (st) return CEL_ERR_NOMEM;
    }
    const char *p = b->data ? b->data : "";
    size_t len = b->len;
    if (!t->spm_split_words && !t->spm_split_all) return bpe_piece_max(w, p, len, CEL__TOK_MAX_SEGMENT);
    size_t start = 0;
    for (size_t i = 1; i + 3 <= len; i++) {
        if (memcmp(p + i, META, 3) != 0) continue;
        /* a ▁ that follows a character other than ▁ starts a word */
        if (!t->spm_split_all && i >= 3 && memcmp(p + i - 3, META, 3) == 0) {
            i += 2;
            continue;
        }
        CEL_TRY(bpe_piece(w, p + start, i - start));
        start = i;
        i += 2;
    }
    return bpe_piece(w, p + start, len - start);
}

/* One segment of text between added tokens. first: it starts the text. */
static cel_status encode_segment(work *w, const char *s, size_t n, bool first)
{
    const cel_tokenizer *t = w->t;
    if (n == 0) return CEL_OK;
    if (t->nfc && !cel__nfc_quick(s, n)) {
        cel_buf_reset(&w->norm);
        if (cel__nfc_append(s, n, &w->norm)) return CEL_ERR_NOMEM;
        s = w->norm.data;
        n = w->norm.len;
    }
    if (t->kind == CEL_TOK_SPM_BPE) {
        bool prefix = t->spm_prefix == CEL__SPM_PREFIX_SEGMENT || (t->spm_prefix == CEL__SPM_PREFIX_FIRST && first);
        return encode_spm(w, s, n, prefix);
    }
    if (t->byte_level_prefix && s[0] != ' ') {
        cel_buf tmp;
        cel_buf_init(&tmp);
        cel_status st = cel_buf_putc(&tmp, ' ');
        if (!st) st = cel_buf_append(&tmp, s, n);
        if (!st) st = pretokenize_regex(w, tmp.data, tmp.len);
        cel_buf_free(&tmp);
        return st;
    }
    return pretokenize_regex(w, s, n);
}

static inline bool is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Word characters for single_word added tokens: ASCII letters, digits, '_'
 * and (approximating Unicode letters) every non-ASCII byte. */
static inline bool is_word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c >= 0x80;
}

/* Is there an added token at s[i]? Returns its id (longest that applies) or -1. */
static int32_t match_added(const cel_tokenizer *t, const char *s, size_t n, size_t i, bool parse_special)
{
    unsigned char b = (unsigned char)s[i];
    for (uint32_t k = t->added_first[b]; k < t->added_first[b + 1]; k++) {
        int32_t id = t->added[k];
        size_t len = t->tok_len[id];
        uint16_t a = t->tok_attr[id];
        if (len > n - i || memcmp(s + i, tok_str(t, id), len) != 0) continue;
        if (!(a & CEL__TOK_USER) && !parse_special) continue;
        if (a & CEL__TOK_SINGLE_WORD) {
            /* a whole word only: not glued to word characters on either side */
            if ((i > 0 && is_word_byte((unsigned char)s[i - 1])) || (i + len < n && is_word_byte((unsigned char)s[i + len])))
                continue;
        }
        return id;
    }
    return -1;
}

cel_status cel_tokenize(const cel_tokenizer *t, const char *text, size_t len, int flags, int32_t **ids,
                        size_t *n_ids, cel_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (!t) return cel_error_set(err, CEL_ERR_INVALID, "cel_tokenize: no tokenizer");
    if (!text && len) return cel_error_set(err, CEL_ERR_INVALID, "cel_tokenize: NULL text");
    work w = {.t = t};
    cel_buf_init(&w.norm);
    cel_buf_init(&w.norm2);
    cel_status st = CEL_OK;
    bool parse_special = flags & CEL_TOKENIZE_PARSE_SPECIAL;
    if (flags & CEL_TOKENIZE_ADD_SPECIAL)
        for (int i = 0; i < t->n_prefix && !st; i++) st = out_push(&w, t->prefix_ids[i]);
    size_t seg = 0, i = 0;
    while (!st && i < len) {
        int32_t id = t->n_added ? match_added(t, text, len, i, parse_special) : -1;
        if (id < 0) {
            i++;
            continue;
        }
        size_t seg_end = i;
        if (t->tok_attr[id] & CEL__TOK_LSTRIP)
            while (seg_end > seg && is_ws((unsigned char)text[seg_end - 1])) seg_end--;
        st = encode_segment(&w, text + seg, seg_end - seg, seg == 0);
        if (!st) st = out_push(&w, id);
        w.last_unk = false;
        i += t->tok_len[id];
        if (t->tok_attr[id] & CEL__TOK_RSTRIP)
            while (i < len && is_ws((unsigned char)text[i])) i++;
        seg = i;
    }
    if (!st && seg < len) st = encode_segment(&w, text + seg, len - seg, seg == 0);
    if (flags & CEL_TOKENIZE_ADD_SPECIAL)
        for (int k = 0; k < t->n_suffix && !st; k++) st = out_push(&w, t->suffix_ids[k]);
    free(w.syms);
    free(w.heap);
    cel_buf_free(&w.norm);
    cel_buf_free(&w.norm2);
    if (w.md) pcre2_match_data_free(w.md);
    if (st) {
        free(w.out);
        if (st == CEL_ERR_NOMEM) return cel_error_set(err, st, "out of memory while tokenizing %zu bytes", len);
        return cel_error_set(err, st, "tokenizing failed (%s)", cel_status_name(st));
    }
    if (!w.out) w.out = malloc(sizeof *w.out); /* a valid pointer even for no ids */
    if (!w.out) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory");
    *ids = w.out;
    *n_ids = w.n_out;
    return CEL_OK;
}

/* ------------------------------------------------------------ decoding */

/* Appends the bytes token id stands for (▁ -> space and <0xNN> -> byte for
 * SentencePiece). Returns false for an id out of range. */
static cel_status piece_bytes(const cel_tokenizer *t, int32_t id, cel_buf *out)
{
    const char *s = tok_str(t, id);
    size_t len = t->tok_len[id];
    uint16_t a = t->tok_attr[id];
    if (t->kind == CEL_TOK_BPE_BYTE || (a & (CEL__TOK_CONTROL | CEL__TOK_USER | CEL__TOK_UNKNOWN)))
        return cel_buf_append(out, s, len);
    if (a & CEL__TOK_BYTE) {
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] == id) return cel_buf_putc(out, (char)b);
        return cel_buf_append(out, s, len);
    }
    size_t i = 0;
    while (i < len) {
        if (i + 3 <= len && memcmp(s + i, META, 3) == 0) {
            CEL_TRY(cel_buf_putc(out, ' '));
            i += 3;
        } else {
            CEL_TRY(cel_buf_putc(out, s[i]));
            i++;
        }
    }
    return CEL_OK;
}

static bool skip_piece(const cel_tokenizer *t, int32_t id, bool skip_special)
{
    return skip_special && (t->tok_attr[id] & (CEL__TOK_CONTROL | CEL__TOK_UNKNOWN));
}

/* Appends [s, s+n) to out with each invalid UTF-8 sequence replaced by U+FFFD
 * (one per maximal invalid subpart, like Rust's from_utf8_lossy). */
static cel_status append_lossy(const char *s, size_t n, cel_buf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0, i = 0;
    while (i < n) {
        size_t cl = cel_utf8_seq_len(u + i, n - i);
        if (cl) {
            i += cl;
            continue;
        }
        CEL_TRY(cel_buf_append(out, s + run, i - run));
        CEL_TRY(cel_buf_append(out, "\xef\xbf\xbd", 3));
        i += cel_utf8_prefix_len(u + i, n - i); /* the maximal invalid subpart (>= 1 byte) */
        run = i;
    }
    return cel_buf_append(out, s + run, n - run);
}

cel_status cel_detokenize(const cel_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, cel_buf *out,
                          cel_error *err)
{
    cel_buf raw;
    cel_buf_init(&raw);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            cel_buf_free(&raw);
            return cel_error_set(err, CEL_ERR_INVALID, "token id %d at position %zu is outside the vocabulary (0..%d)",
                                 (int)ids[i], i, (int)t->n_vocab - 1);
        }
        if (skip_piece(t, ids[i], skip_special)) continue;
        if (piece_bytes(t, ids[i], &raw)) {
            cel_buf_free(&raw);
            return cel_error_set(err, CEL_ERR_NOMEM, "out of memory while detokenizing");
        }
    }
    const char *s = raw.data ? raw.data : "";
    size_t len = raw.len;
    if (t->decode_strip_space && len && s[0] == ' ') s++, len--;
    cel_status st = append_lossy(s, len, out);
    cel_buf_free(&raw);
    if (st) return cel_error_set(err, CEL_ERR_NOMEM, "out of memory while detokenizing");
    return CEL_OK;
}

void cel_detok_stream_init(cel_detok_stream *s, const cel_tokenizer *t, bool skip_special)
{
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->skip_special = skip_special;
    s->at_start = true;
}

/* Length of the incomplete-but-possibly-valid character at the end of [u, u+n),
 * 0 when the buffer ends on a boundary. */
static size_t incomplete_tail(const unsigned char *u, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = u[n - back];
        if ((c & 0xC0) == 0x80) continue;
        if (cel_utf8_lead_len(c) <= back) return 0;
        /* the bytes present must be a valid prefix */
        return cel_utf8_prefix_len(u + n - back, back) == back ? back : 0;
    }
    return 0;
}

cel_status cel_detok_stream_push(cel_detok_stream *s, int32_t id, cel_buf *out)
{
    const cel_tokenizer *t = s->tok;
    if (id < 0 || id >= t->n_vocab) return CEL_ERR_INVALID;
    if (skip_piece(t, id, s->skip_special)) return CEL_OK;
    cel_buf b;
    cel_buf_init(&b);
    cel_status st = cel_buf_append(&b, s->pending, s->n_pending);
    if (!st) st = piece_bytes(t, id, &b);
    if (st) {
        cel_buf_free(&b);
        return CEL_ERR_NOMEM;
    }
    const char *p = b.data ? b.data : "";
    size_t len = b.len;
    if (s->at_start && len) {
        if (t->decode_strip_space && p[0] == ' ') p++, len--;
        s->at_start = false;
    }
    size_t hold = incomplete_tail((const unsigned char *)p, len);
    st = append_lossy(p, len - hold, out);
    memcpy(s->pending, p + len - hold, hold);
    s->n_pending = hold;
    cel_buf_free(&b);
    return st;
}

cel_status cel_detok_stream_flush(cel_detok_stream *s, cel_buf *out)
{
    cel_status st = append_lossy((const char *)s->pending, s->n_pending, out);
    s->n_pending = 0;
    return st;
}
