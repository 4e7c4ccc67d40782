/* Paged KV cache bookkeeping: free stack, LRU of cached prefix blocks, hash
 * table of block keys, per-sequence block tables. See kv.h. */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ hash table */

static uint32_t ht_slot(const cel_kv *kv, uint64_t key) { return (uint32_t)cel_mix64(key) & kv->ht_mask; }

static void ht_insert(cel_kv *kv, int32_t b)
{
    uint32_t i = ht_slot(kv, kv->key[b]);
    while (kv->ht[i] >= 0) i = (i + 1) & kv->ht_mask;
    kv->ht[i] = b;
}

/* Removes block b with backward-shift deletion, so probes never need
 * tombstones and the table never degrades. */
static void ht_remove(cel_kv *kv, int32_t b)
{
    uint32_t i = ht_slot(kv, kv->key[b]);
    while (kv->ht[i] != b) {
        if (kv->ht[i] < 0) return; /* not present: cannot happen for keyed blocks */
        i = (i + 1) & kv->ht_mask;
    }
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & kv->ht_mask; kv->ht[j] >= 0; j = (j + 1) & kv->ht_mask) {
        uint32_t home = ht_slot(kv, kv->key[kv->ht[j]]);
        /* move j into the hole unless its home lies cyclically in (hole, j] */
        bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            kv->ht[hole] = kv->ht[j];
            hole = j;
        }
    }
    kv->ht[hole] = -1;
}

/* ------------------------------------------------------------ LRU list */

static void lru_push_tail(cel_kv *kv, int32_t b)
{
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0) kv->lru_next[kv->lru_tail] = b;
    else kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

static void lru_unlink(cel_kv *kv, int32_t b)
{
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (p >= 0) kv->lru_next[p] = n;
    else kv->lru_head = n;
    if (n >= 0) kv->lru_prev[n] = p;
    else kv->lru_tail = p;
    kv->lru_prev[b] = kv->lru_next[b] = -1;
    kv->n_lru--;
}

/* ------------------------------------------------------------ pool */

cel_status cel_kv_init(cel_kv *kv, int32_t n_blocks, int32_t block_size, cel_kv_copy_fn copy, void *copy_ctx,
                       cel_error *err)
{
    memset(kv, 0, sizeof *kv);
    if (n_blocks <= 0 || block_size <= 0 || block_size > 4096 || n_blocks > (1 << 28))
        return cel_error_set(err, CEL_ERR_INVALID, "kv: bad pool shape (%d blocks of %d tokens)", n_blocks,
                             block_size);
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n_blocks) cap <<= 1;
    size_t nb = (size_t)n_blocks;
    kv->ref = calloc(nb, sizeof *kv->ref);
    kv->keyed = calloc(nb, 1);
    kv->key = calloc(nb, sizeof *kv->key);
    kv->parent = calloc(nb, sizeof *kv->parent);
    kv->toks = calloc(nb * (size_t)block_size, sizeof *kv->toks);
    kv->lru_prev = malloc(nb * sizeof *kv->lru_prev);
    kv->lru_next = malloc(nb * sizeof *kv->lru_next);
    kv->free_stack = malloc(nb * sizeof *kv->free_stack);
    kv->ht = malloc(cap * sizeof *kv->ht);
    if (!kv->ref || !kv->keyed || !kv->key || !kv->parent || !kv->toks || !kv->lru_prev || !kv->lru_next ||
        !kv->free_stack || !kv->ht) {
        cel_kv_free(kv);
        return cel_error_set(err, CEL_ERR_NOMEM, "kv: out of memory for %d blocks", n_blocks);
    }
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->ht_mask = cap - 1;
    for (uint32_t i = 0; i < cap; i++) kv->ht[i] = -1;
    /* stack order: block 0 is handed out first (easier to read in tests) */
    for (int32_t i = 0; i < n_blocks; i++) {
        kv->free_stack[i] = n_blocks - 1 - i;
        kv->lru_prev[i] = kv->lru_next[i] = -1;
    }
    kv->n_free = n_blocks;
    kv->lru_head = kv->lru_tail = -1;
    kv->copy = copy;
    kv->copy_ctx = copy_ctx;
    return CEL_OK;
}

void cel_kv_free(cel_kv *kv)
{
    free(kv->ref);
    free(kv->keyed);
    free(kv->key);
    free(kv->parent);
    free(kv->toks);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv->free_stack);
    free(kv->ht);
    memset(kv, 0, sizeof *kv);
}

static void unkey(cel_kv *kv, int32_t b)
{
    if (!kv->keyed[b]) return;
    ht_remove(kv, b);
    kv->keyed[b] = 0;
}

int32_t cel_kv_alloc(cel_kv *kv)
{
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else if (kv->lru_head >= 0) {
        b = kv->lru_head;
        lru_unlink(kv, b);
        unkey(kv, b);
        kv->n_evicted++;
    } else {
        return -1;
    }
    kv->ref[b] = 1;
    return b;
}

void cel_kv_ref(cel_kv *kv, int32_t b)
{
    if (kv->ref[b] == 0) lru_unlink(kv, b); /* only keyed blocks are found with ref 0 */
    kv->ref[b]++;
}

void cel_kv_unref(cel_kv *kv, int32_t b)
{
    if (kv->ref[b] <= 0) return; /* double release: ignore rather than corrupt the lists */
    if (--kv->ref[b] > 0) return;
    if (kv->keyed[b]) lru_push_tail(kv, b);
    else kv->free_stack[kv->n_free++] = b;
}

uint64_t cel_kv_block_key(uint64_t parent, const int32_t *toks, int32_t block_size)
{
    return cel_hash64(toks, (size_t)block_size * sizeof *toks, parent);
}

int32_t cel_kv_lookup(const cel_kv *kv, uint64_t key, uint64_t parent, const int32_t *toks)
{
    size_t bytes = (size_t)kv->block_size * sizeof *toks;
    for (uint32_t i = ht_slot(kv, key); kv->ht[i] >= 0; i = (i + 1) & kv->ht_mask) {
        int32_t b = kv->ht[i];
        if (kv->key[b] == key && kv->parent[b] == parent &&
            memcmp(kv->toks + (size_t)b * (size_t)kv->block_size, toks, bytes) == 0)
            return b;
    }
    return -1;
}

int32_t cel_kv_publish(cel_kv *kv, int32_t b, uint64_t key, uint64_t parent, const int32_t *toks)
{
    int32_t have = cel_kv_lookup(kv, key, parent, toks);
    if (have >= 0) return have;
    if (kv->keyed[b]) unkey(kv, b); /* cannot happen for a fresh full block; keeps the table sane */
    kv->key[b] = key;
    kv->parent[b] = parent;
    memcpy(kv->toks + (size_t)b * (size_t)kv->block_size, toks, (size_t)kv->block_size * sizeof *toks);
    kv->keyed[b] = 1;
    ht_insert(kv, b);
    return b;
}

void cel_kv_drop_cache(cel_kv *kv)
{
    for (int32_t b = 0; b < kv->n_blocks; b++) {
        if (!kv->keyed[b]) continue;
        unkey(kv, b);
        if (kv->ref[b] == 0) {
            lru_unlink(kv, b);
            kv->free_stack[kv->n_free++] = b;
        }
    }
}

/* ------------------------------------------------------------ block tables */

void cel_kv_seq_init(cel_kv_seq *s) { memset(s, 0, sizeof *s); }

void cel_kv_seq_release(cel_kv *kv, cel_kv_seq *s)
{
    for (int32_t i = s->n_blocks - 1; i >= 0; i--) cel_kv_unref(kv, s->blocks[i]);
    s->n_blocks = 0;
    s->n_keyed = 0;
}

void cel_kv_seq_free(cel_kv *kv, cel_kv_seq *s)
{
    cel_kv_seq_release(kv, s);
    free(s->blocks);
    free(s->keys);
    memset(s, 0, sizeof *s);
}

static cel_status seq_grow(cel_kv_seq *s, int32_t need, cel_error *err)
{
    if (need <= s->cap) return CEL_OK;
    int32_t cap = s->cap ? s->cap : 8;
    while (cap < need) cap *= 2;
    int32_t *nb = realloc(s->blocks, (size_t)cap * sizeof *nb);
    if (!nb) return cel_error_set(err, CEL_ERR_NOMEM, "kv: out of memory for a block table of %d", cap);
    s->blocks = nb;
    uint64_t *nk = realloc(s->keys, (size_t)cap * sizeof *nk);
    if (!nk) return cel_error_set(err, CEL_ERR_NOMEM, "kv: out of memory for a block table of %d", cap);
    s->keys = nk;
    s->cap = cap;
    return CEL_OK;
}

int32_t cel_kv_seq_match(cel_kv *kv, cel_kv_seq *s, const int32_t *toks, int32_t limit, cel_error *err)
{
    const int32_t bs = kv->block_size;
    int32_t matched = 0;
    while ((s->n_keyed + 1) * bs <= limit) {
        int32_t i = s->n_keyed;
        const int32_t *bt = toks + (size_t)i * (size_t)bs;
        uint64_t parent = i ? s->keys[i - 1] : CEL_KV_ROOT_KEY;
        uint64_t key = cel_kv_block_key(parent, bt, bs);
        int32_t b = cel_kv_lookup(kv, key, parent, bt);
        if (b < 0) break;
        if (i < s->n_blocks) {
            if (s->blocks[i] != b) { /* swap the private, unwritten block for the cached one */
                cel_kv_ref(kv, b);
                cel_kv_unref(kv, s->blocks[i]);
                s->blocks[i] = b;
            }
        } else {
            if (seq_grow(s, i + 1, err) != CEL_OK) break;
            cel_kv_ref(kv, b);
            s->blocks[s->n_blocks++] = b;
        }
        s->keys[i] = key;
        s->n_keyed++;
        matched++;
    }
    return matched;
}

/* Whether writing position n_past needs a private copy of its block. */
static bool needs_cow(const cel_kv *kv, const cel_kv_seq *s, int32_t n_past)
{
    int32_t i = n_past / kv->block_size;
    return n_past % kv->block_size != 0 && i < s->n_blocks && kv->ref[s->blocks[i]] > 1;
}

int32_t cel_kv_seq_blocks_needed(const cel_kv *kv, const cel_kv_seq *s, int32_t n_past, int32_t n_total)
{
    int32_t want = (n_total + kv->block_size - 1) / kv->block_size;
    int32_t need = want > s->n_blocks ? want - s->n_blocks : 0;
    if (n_total > n_past && needs_cow(kv, s, n_past)) need++;
    return need;
}

cel_status cel_kv_seq_reserve(cel_kv *kv, cel_kv_seq *s, int32_t n_past, int32_t n_total, cel_error *err)
{
    if (n_past < 0 || n_total < n_past)
        return cel_error_set(err, CEL_ERR_INTERNAL, "kv: bad reserve range [%d, %d)", n_past, n_total);
    int32_t need = cel_kv_seq_blocks_needed(kv, s, n_past, n_total);
    if (need > cel_kv_n_available(kv)) return CEL_ERR_LIMIT;
    int32_t want = (n_total + kv->block_size - 1) / kv->block_size;
    CEL_TRY(seq_grow(s, want, err));
    if (n_total > n_past && needs_cow(kv, s, n_past)) {
        int32_t i = n_past / kv->block_size;
        int32_t src = s->blocks[i];
        int32_t dst = cel_kv_alloc(kv);
        if (dst < 0) return cel_error_set(err, CEL_ERR_INTERNAL, "kv: pool count out of step");
        if (!kv->copy) {
            cel_kv_unref(kv, dst);
            return cel_error_set(err, CEL_ERR_INTERNAL, "kv: copy-on-write needed but no copy function");
        }
        cel_status st = kv->copy(kv->copy_ctx, src, dst, n_past % kv->block_size, err);
        if (st != CEL_OK) {
            cel_kv_unref(kv, dst);
            return st;
        }
        cel_kv_unref(kv, src);
        s->blocks[i] = dst;
        kv->n_cow++;
    }
    while (s->n_blocks < want) {
        int32_t b = cel_kv_alloc(kv);
        if (b < 0) return cel_error_set(err, CEL_ERR_INTERNAL, "kv: pool count out of step");
        s->blocks[s->n_blocks++] = b;
    }
    return CEL_OK;
}

cel_status cel_kv_seq_publish(cel_kv *kv, cel_kv_seq *s, const int32_t *toks, int32_t n_computed, cel_error *err)
{
    const int32_t bs = kv->block_size;
    int32_t full = n_computed / bs;
    if (full > s->n_blocks)
        return cel_error_set(err, CEL_ERR_INTERNAL, "kv: %d computed tokens but only %d blocks", n_computed,
                             s->n_blocks);
    for (int32_t i = s->n_keyed; i < full; i++) {
        const int32_t *bt = toks + (size_t)i * (size_t)bs;
        uint64_t parent = i ? s->keys[i - 1] : CEL_KV_ROOT_KEY;
        uint64_t key = cel_kv_block_key(parent, bt, bs);
        int32_t b = s->blocks[i];
        int32_t canon = cel_kv_publish(kv, b, key, parent, bt);
        if (canon != b) { /* same prefix computed twice: keep one copy */
            cel_kv_ref(kv, canon);
            cel_kv_unref(kv, b);
            s->blocks[i] = canon;
        }
        s->keys[i] = key;
        s->n_keyed = i + 1;
    }
    return CEL_OK;
}

cel_status cel_kv_seq_fork(cel_kv *kv, cel_kv_seq *dst, const cel_kv_seq *src, cel_error *err)
{
    if (dst->n_blocks) return cel_error_set(err, CEL_ERR_INTERNAL, "kv: fork into a non-empty block table");
    CEL_TRY(seq_grow(dst, src->n_blocks, err));
    for (int32_t i = 0; i < src->n_blocks; i++) {
        cel_kv_ref(kv, src->blocks[i]);
        dst->blocks[i] = src->blocks[i];
    }
    if (src->n_keyed) memcpy(dst->keys, src->keys, (size_t)src->n_keyed * sizeof *dst->keys);
    dst->n_blocks = src->n_blocks;
    dst->n_keyed = src->n_keyed;
    return CEL_OK;
}
