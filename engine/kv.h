/*
 * kv.h - bookkeeping of the paged KV cache: which of the backend's fixed-size
 * blocks are free, which hold a cached prefix, and which sequences use them.
 * The memory behind the blocks belongs to the backend; this module only hands
 * out block indices.
 *
 * Block states:
 *   free    ref == 0, no key             on the free stack
 *   cached  ref == 0, keyed (full block) on the LRU list, reusable by a lookup,
 *                                        evicted (least recently released first)
 *                                        when a free block is needed
 *   used    ref >= 1, keyed or not       in one or more block tables
 *
 * A full block is keyed by hash(parent block's key, the block's tokens), so a
 * key names the whole prefix up to the block's end: two sequences whose first
 * k blocks hold the same tokens find the same k blocks. Lookups also compare
 * the parent key and the tokens, so a 64-bit hash collision can never hand a
 * sequence the wrong KV.
 *
 * Not thread-safe: only the scheduler's stepping thread touches it.
 */
#ifndef CEL_ENGINE_KV_H
#define CEL_ENGINE_KV_H

#include "celine/common.h"

/* Copies the first n_tokens slots of block src to block dst (copy-on-write
 * of a shared, partly filled block); normally the backend's copy_block. */
typedef cel_status (*cel_kv_copy_fn)(void *ctx, int32_t src, int32_t dst, int32_t n_tokens, cel_error *err);

/* Key of the (virtual) parent of a sequence's first block. */
#define CEL_KV_ROOT_KEY 0x63656c696e65ull

typedef struct cel_kv {
    int32_t n_blocks;
    int32_t block_size;
    int32_t *ref;        /* [n_blocks] reference counts */
    uint8_t *keyed;      /* [n_blocks] 1 when the block is in the hash table */
    uint64_t *key;       /* [n_blocks] key of keyed blocks */
    uint64_t *parent;    /* [n_blocks] parent key of keyed blocks */
    int32_t *toks;       /* [n_blocks * block_size] tokens of keyed blocks */
    int32_t *lru_prev;   /* [n_blocks] LRU list of cached blocks; head = evicted first */
    int32_t *lru_next;
    int32_t lru_head, lru_tail, n_lru;
    int32_t *free_stack; /* [n_blocks] */
    int32_t n_free;
    int32_t *ht;         /* open addressing (linear probing), block index or -1 */
    uint32_t ht_mask;
    cel_kv_copy_fn copy;
    void *copy_ctx;
    uint64_t n_evicted;  /* cached blocks reused for new content */
    uint64_t n_cow;      /* copy-on-write copies made */
} cel_kv;

/* A sequence's block table: blocks[i] holds positions [i*bs, (i+1)*bs).
 * keys[i] is the key of full block i for i < n_keyed (the chain that the
 * next block's key continues). */
typedef struct cel_kv_seq {
    int32_t *blocks;
    uint64_t *keys;
    int32_t n_blocks;
    int32_t n_keyed;
    int32_t cap;
} cel_kv_seq;

/* Sets up bookkeeping for n_blocks blocks of block_size tokens, all free.
 * copy is called for copy-on-write (may be NULL only if no block is ever
 * shared while partly filled). */
cel_status cel_kv_init(cel_kv *kv, int32_t n_blocks, int32_t block_size, cel_kv_copy_fn copy, void *copy_ctx,
                       cel_error *err);
void cel_kv_free(cel_kv *kv);

/* Blocks that an allocation can obtain now (free + cached). */
static inline int32_t cel_kv_n_available(const cel_kv *kv) { return kv->n_free + kv->n_lru; }
/* Blocks referenced by at least one sequence. */
static inline int32_t cel_kv_n_used(const cel_kv *kv) { return kv->n_blocks - kv->n_free - kv->n_lru; }
/* Cached (evictable) blocks. */
static inline int32_t cel_kv_n_cached(const cel_kv *kv) { return kv->n_lru; }

/* Takes a block with ref = 1: a free one, else evicts the least recently
 * released cached block. Returns -1 when every block is in use. */
int32_t cel_kv_alloc(cel_kv *kv);
void cel_kv_ref(cel_kv *kv, int32_t b);
/* Drops one reference; at zero a keyed block becomes cached (most recently
 * used end of the LRU list), an unkeyed one free. */
void cel_kv_unref(cel_kv *kv, int32_t b);

/* Key of a full block holding toks[0..block_size) after the prefix `parent`. */
uint64_t cel_kv_block_key(uint64_t parent, const int32_t *toks, int32_t block_size);
/* The keyed block with this key, parent and tokens, or -1. Takes no reference. */
int32_t cel_kv_lookup(const cel_kv *kv, uint64_t key, uint64_t parent, const int32_t *toks);
/* Registers full block b under key. When another block already holds that
 * key (two sequences computed the same prefix), nothing changes and that
 * block is returned; otherwise b. */
int32_t cel_kv_publish(cel_kv *kv, int32_t b, uint64_t key, uint64_t parent, const int32_t *toks);
/* Forgets every key (the weights changed, so cached KV is stale): cached
 * blocks become free, used blocks stay with their sequences but are no
 * longer found by lookups. */
void cel_kv_drop_cache(cel_kv *kv);

/* ---- block tables ---- */
void cel_kv_seq_init(cel_kv_seq *s);
/* Unreferences every block (last block first, so the deepest blocks of a
 * cached prefix are evicted before their parents) and empties the table;
 * keeps the arrays for reuse. */
void cel_kv_seq_release(cel_kv *kv, cel_kv_seq *s);
void cel_kv_seq_free(cel_kv *kv, cel_kv_seq *s); /* release + free arrays */

/* Extends a table whose blocks are all full and keyed (n_blocks == n_keyed)
 * or whose blocks past n_keyed are private and not yet written: for each
 * next full block of toks that ends at or before `limit` tokens and is
 * cached, takes a reference to the cached block (replacing the private one
 * the table held there, if any). Returns the number of blocks matched. */
int32_t cel_kv_seq_match(cel_kv *kv, cel_kv_seq *s, const int32_t *toks, int32_t limit, cel_error *err);

/* Blocks that cel_kv_seq_reserve(kv, s, n_past, n_total) would allocate. */
int32_t cel_kv_seq_blocks_needed(const cel_kv *kv, const cel_kv_seq *s, int32_t n_past, int32_t n_total);
/* Makes the table cover positions [0, n_total) for writing positions
 * [n_past, n_total): allocates missing blocks and copies the block holding
 * position n_past when it is shared and partly filled (copy-on-write).
 * All or nothing: CEL_ERR_LIMIT (no message) when too few blocks are
 * available, and the table is unchanged. */
cel_status cel_kv_seq_reserve(cel_kv *kv, cel_kv_seq *s, int32_t n_past, int32_t n_total, cel_error *err);

/* Keys and publishes the table's full blocks among the first n_computed
 * tokens of toks that are not keyed yet. A block whose content another
 * block already holds is swapped for that block (the duplicate is freed). */
cel_status cel_kv_seq_publish(cel_kv *kv, cel_kv_seq *s, const int32_t *toks, int32_t n_computed, cel_error *err);

/* Makes dst (empty) share all of src's blocks (n > 1 samples of one prompt). */
cel_status cel_kv_seq_fork(cel_kv *kv, cel_kv_seq *dst, const cel_kv_seq *src, cel_error *err);

#endif
