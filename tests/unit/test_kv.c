/* Paged KV bookkeeping: ref counts, copy-on-write, hash sharing of prefix
 * blocks, LRU eviction, cache drop, all-or-nothing reservation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kv.h"

typedef struct copy_log {
    int n;
    int32_t src[16], dst[16], ntok[16];
} copy_log;

static cel_status log_copy(void *ctx, int32_t src, int32_t dst, int32_t n, cel_error *err)
{
    copy_log *l = ctx;
    if (l->n < 16) {
        l->src[l->n] = src;
        l->dst[l->n] = dst;
        l->ntok[l->n] = n;
    }
    l->n++;
    return CEL_OK;
}

/* Fills toks[0..n) with a deterministic pattern starting at base. */
static void fill(int32_t *toks, int n, int32_t base)
{
    for (int i = 0; i < n; i++) toks[i] = base + i;
}

static void test_alloc_and_refcount(void **state)
{
    (void)state;
    cel_kv kv;
    cel_error err;
    assert_int_equal(cel_kv_init(&kv, 4, 16, NULL, NULL, &err), CEL_OK);
    assert_int_equal(cel_kv_n_available(&kv), 4);
    int32_t b[4];
    for (int i = 0; i < 4; i++) {
        b[i] = cel_kv_alloc(&kv);
        assert_true(b[i] >= 0 && b[i] < 4);
        for (int j = 0; j < i; j++) assert_int_not_equal(b[i], b[j]);
    }
    assert_int_equal(cel_kv_alloc(&kv), -1);
    assert_int_equal(cel_kv_n_used(&kv), 4);
    cel_kv_ref(&kv, b[0]);
    cel_kv_unref(&kv, b[0]);
    assert_int_equal(cel_kv_n_used(&kv), 4); /* one reference left */
    cel_kv_unref(&kv, b[0]);
    assert_int_equal(cel_kv_n_used(&kv), 3);
    assert_int_equal(cel_kv_alloc(&kv), b[0]);
    cel_kv_free(&kv);

    assert_int_equal(cel_kv_init(&kv, 0, 16, NULL, NULL, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "0 blocks"));
}

static void test_hash_sharing(void **state)
{
    (void)state;
    cel_kv kv;
    cel_error err;
    assert_int_equal(cel_kv_init(&kv, 16, 4, NULL, NULL, &err), CEL_OK);
    int32_t toks[14];
    fill(toks, 14, 100);
    cel_kv_seq a, b, c;
    cel_kv_seq_init(&a);
    cel_kv_seq_init(&b);
    cel_kv_seq_init(&c);
    /* a computes 14 tokens: 3 full blocks + 2 tokens */
    assert_int_equal(cel_kv_seq_reserve(&kv, &a, 0, 14, &err), CEL_OK);
    assert_int_equal(a.n_blocks, 4);
    assert_int_equal(cel_kv_seq_publish(&kv, &a, toks, 14, &err), CEL_OK);
    assert_int_equal(a.n_keyed, 3);

    /* b has the same first 9 tokens then differs: shares exactly 2 blocks */
    int32_t tb[14];
    memcpy(tb, toks, sizeof tb);
    tb[9] = 7;
    assert_int_equal(cel_kv_seq_match(&kv, &b, tb, 13, &err), 2);
    assert_int_equal(b.blocks[0], a.blocks[0]);
    assert_int_equal(b.blocks[1], a.blocks[1]);
    assert_int_equal(kv.ref[a.blocks[0]], 2);
    assert_int_equal(kv.ref[a.blocks[2]], 1);

    /* the limit caps matching: only blocks ending at or before it */
    assert_int_equal(cel_kv_seq_match(&kv, &c, toks, 11, &err), 2);
    cel_kv_seq_release(&kv, &c);
    assert_int_equal(cel_kv_seq_match(&kv, &c, toks, 12, &err), 3);

    /* the same tokens after a different prefix are a different block */
    int32_t shifted[8];
    fill(shifted, 8, 104); /* block 1 of toks as a first block */
    cel_kv_seq d;
    cel_kv_seq_init(&d);
    assert_int_equal(cel_kv_seq_match(&kv, &d, shifted, 8, &err), 0);

    /* a lookup with a matching key but other tokens is refused (collision guard) */
    uint64_t k0 = cel_kv_block_key(CEL_KV_ROOT_KEY, toks, 4);
    assert_int_equal(cel_kv_lookup(&kv, k0, CEL_KV_ROOT_KEY, toks), a.blocks[0]);
    assert_int_equal(cel_kv_lookup(&kv, k0, CEL_KV_ROOT_KEY, tb + 8), -1);
    assert_int_equal(cel_kv_lookup(&kv, k0, 12345, toks), -1);

    cel_kv_seq_free(&kv, &a);
    cel_kv_seq_free(&kv, &b);
    cel_kv_seq_free(&kv, &c);
    cel_kv_seq_free(&kv, &d);
    assert_int_equal(cel_kv_n_used(&kv), 0);
    assert_int_equal(cel_kv_n_cached(&kv), 3); /* the published prefix outlives its sequences */
    cel_kv_free(&kv);
}

static void test_copy_on_write(void **state)
{
    (void)state;
    cel_kv kv;
    cel_error err;
    copy_log log = {0};
    assert_int_equal(cel_kv_init(&kv, 8, 4, log_copy, &log, &err), CEL_OK);
    int32_t toks[6];
    fill(toks, 6, 1);
    cel_kv_seq p, c1, c2;
    cel_kv_seq_init(&p);
    cel_kv_seq_init(&c1);
    cel_kv_seq_init(&c2);
    assert_int_equal(cel_kv_seq_reserve(&kv, &p, 0, 6, &err), CEL_OK); /* blocks: full + 2 tokens */
    assert_int_equal(cel_kv_seq_publish(&kv, &p, toks, 6, &err), CEL_OK);
    assert_int_equal(cel_kv_seq_fork(&kv, &c1, &p, &err), CEL_OK);
    assert_int_equal(cel_kv_seq_fork(&kv, &c2, &p, &err), CEL_OK);
    int32_t shared_last = p.blocks[1];
    assert_int_equal(kv.ref[shared_last], 3);
    assert_int_equal(kv.ref[p.blocks[0]], 3);

    /* c1 writes position 6 (inside the shared partial block): private copy of 2 slots */
    assert_int_equal(cel_kv_seq_blocks_needed(&kv, &c1, 6, 7), 1);
    assert_int_equal(cel_kv_seq_reserve(&kv, &c1, 6, 7, &err), CEL_OK);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.src[0], shared_last);
    assert_int_equal(log.dst[0], c1.blocks[1]);
    assert_int_equal(log.ntok[0], 2);
    assert_int_not_equal(c1.blocks[1], shared_last);
    assert_int_equal(c1.blocks[0], p.blocks[0]); /* the full block stays shared */
    assert_int_equal(kv.ref[shared_last], 2);

    /* c2 copies too; then p is the last holder and writes in place */
    assert_int_equal(cel_kv_seq_reserve(&kv, &c2, 6, 7, &err), CEL_OK);
    assert_int_equal(log.n, 2);
    assert_int_equal(kv.ref[shared_last], 1);
    assert_int_equal(cel_kv_seq_reserve(&kv, &p, 6, 7, &err), CEL_OK);
    assert_int_equal(log.n, 2);
    assert_int_equal(p.blocks[1], shared_last);

    /* writing at a block boundary never copies: a fresh block is appended */
    assert_int_equal(cel_kv_seq_reserve(&kv, &p, 8, 9, &err), CEL_OK);
    assert_int_equal(log.n, 2);
    assert_int_equal(p.n_blocks, 3);

    cel_kv_seq_free(&kv, &p);
    cel_kv_seq_free(&kv, &c1);
    cel_kv_seq_free(&kv, &c2);
    assert_int_equal(cel_kv_n_used(&kv), 0);
    assert_int_equal(kv.n_cow, 2);
    cel_kv_free(&kv);
}

static void test_reserve_all_or_nothing(void **state)
{
    (void)state;
    cel_kv kv;
    cel_error err;
    assert_int_equal(cel_kv_init(&kv, 4, 4, NULL, NULL, &err), CEL_OK);
    cel_kv_seq a, b;
    cel_kv_seq_init(&a);
    cel_kv_seq_init(&b);
    assert_int_equal(cel_kv_seq_reserve(&kv, &a, 0, 10, &err), CEL_OK); /* 3 blocks */
    assert_int_equal(cel_kv_seq_reserve(&kv, &b, 0, 8, &err), CEL_ERR_LIMIT);
    assert_int_equal(b.n_blocks, 0);
    assert_int_equal(cel_kv_n_available(&kv), 1);
    assert_int_equal(cel_kv_seq_reserve(&kv, &b, 0, 4, &err), CEL_OK);
    assert_int_equal(cel_kv_n_available(&kv), 0);
    assert_int_equal(cel_kv_seq_reserve(&kv, &a, 10, 12, &err), CEL_OK); /* inside block 2: nothing new */
    assert_int_equal(cel_kv_seq_reserve(&kv, &a, 12, 13, &err), CEL_ERR_LIMIT);
    assert_int_equal(cel_kv_seq_reserve(&kv, &a, 5, 3, &err), CEL_ERR_INTERNAL);
    cel_kv_seq_free(&kv, &a);
    cel_kv_seq_free(&kv, &b);
    cel_kv_free(&kv);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    cel_kv kv;
    cel_error err;
    assert_int_equal(cel_kv_init(&kv, 8, 2, NULL, NULL, &err), CEL_OK);
    int32_t ta[6], tb[6];
    fill(ta, 6, 10);
    fill(tb, 6, 50);
    cel_kv_seq a, b, x;
    cel_kv_seq_init(&a);
    cel_kv_seq_init(&b);
    cel_kv_seq_init(&x);
    assert_int_equal(cel_kv_seq_reserve(&kv, &a, 0, 6, &err), CEL_OK);
    assert_int_equal(cel_kv_seq_publish(&kv, &a, ta, 6, &err), CEL_OK);
    assert_int_equal(cel_kv_seq_reserve(&kv, &b, 0, 6, &err), CEL_OK);
    assert_int_equal(cel_kv_seq_publish(&kv, &b, tb, 6, &err), CEL_OK);
    int32_t a_blocks[3];
    memcpy(a_blocks, a.blocks, sizeof a_blocks);
    cel_kv_seq_release(&kv, &a); /* released first: evicted first, deepest block first */
    cel_kv_seq_release(&kv, &b);
    assert_int_equal(cel_kv_n_cached(&kv), 6);
    assert_int_equal(cel_kv_n_available(&kv), 8);

    /* 2 free blocks, then evictions: a's block 2, then a's block 1 */
    assert_int_equal(cel_kv_seq_reserve(&kv, &x, 0, 6, &err), CEL_OK);
    assert_int_equal(kv.n_evicted, 1);
    assert_int_equal(x.blocks[2], a_blocks[2]);
    assert_int_equal(cel_kv_seq_match(&kv, &a, ta, 6, &err), 2); /* a's prefix: 2 of 3 blocks left */
    assert_int_equal(cel_kv_seq_match(&kv, &b, tb, 6, &err), 3);
    cel_kv_seq_release(&kv, &a);

    /* a matched block is in use, so it cannot be evicted while referenced */
    cel_kv_seq y;
    cel_kv_seq_init(&y);
    assert_int_equal(cel_kv_seq_reserve(&kv, &y, 0, 4, &err), CEL_OK); /* evicts a's two blocks (LRU) */
    assert_int_equal(cel_kv_seq_reserve(&kv, &y, 4, 6, &err), CEL_ERR_LIMIT); /* b's blocks are held */
    assert_int_equal(cel_kv_seq_match(&kv, &a, ta, 6, &err), 0);
    for (int i = 0; i < 3; i++) assert_int_equal(kv.ref[b.blocks[i]], 1);

    cel_kv_seq_free(&kv, &a);
    cel_kv_seq_free(&kv, &b);
    cel_kv_seq_free(&kv, &x);
    cel_kv_seq_free(&kv, &y);
    cel_kv_free(&kv);
}

static void test_publish_dedupes_and_drop_cache(void **state)
{
    (void)state;
    cel_kv kv;
    cel_error err;
    assert_int_equal(cel_kv_init(&kv, 8, 4, NULL, NULL, &err), CEL_OK);
    int32_t t[8];
    fill(t, 8, 3);
    cel_kv_seq a, b;
    cel_kv_seq_init(&a);
    cel_kv_seq_init(&b);
    /* both compute the same 8 tokens independently (same step) */
    assert_int_equal(cel_kv_seq_reserve(&kv, &a, 0, 8, &err), CEL_OK);
    assert_int_equal(cel_kv_seq_reserve(&kv, &b, 0, 8, &err), CEL_OK);
    assert_int_equal(cel_kv_n_used(&kv), 4);
    assert_int_equal(cel_kv_seq_publish(&kv, &a, t, 8, &err), CEL_OK);
    assert_int_equal(cel_kv_seq_publish(&kv, &b, t, 8, &err), CEL_OK);
    assert_int_equal(b.blocks[0], a.blocks[0]);
    assert_int_equal(b.blocks[1], a.blocks[1]);
    assert_int_equal(cel_kv_n_used(&kv), 2); /* the duplicates went back to the pool */

    cel_kv_seq_release(&kv, &b);
    cel_kv_drop_cache(&kv);
    cel_kv_seq c;
    cel_kv_seq_init(&c);
    assert_int_equal(cel_kv_seq_match(&kv, &c, t, 8, &err), 0);
    assert_int_equal(cel_kv_n_used(&kv), 2); /* a still holds its blocks */
    cel_kv_seq_release(&kv, &a);
    assert_int_equal(cel_kv_n_cached(&kv), 0);
    assert_int_equal(kv.n_free, 8);
    cel_kv_seq_free(&kv, &a);
    cel_kv_seq_free(&kv, &b);
    cel_kv_seq_free(&kv, &c);
    cel_kv_free(&kv);
}

/* Random publish/release/alloc traffic against a shadow model: every block
 * counted exactly once, every cached key still found, and the hash table
 * (backward-shift deletion) never loses an entry. */
static void test_random_traffic(void **state)
{
    (void)state;
    enum { NB = 64, BS = 2, NSEQ = 12 };
    cel_kv kv;
    cel_error err;
    copy_log log = {0};
    assert_int_equal(cel_kv_init(&kv, NB, BS, log_copy, &log, &err), CEL_OK);
    cel_kv_seq seqs[NSEQ];
    int32_t toks[NSEQ][40];
    int32_t len[NSEQ];
    cel_rng rng;
    cel_rng_seed(&rng, 42);
    for (int i = 0; i < NSEQ; i++) {
        cel_kv_seq_init(&seqs[i]);
        len[i] = 0;
    }
    for (int it = 0; it < 20000; it++) {
        int i = (int)(cel_rng_next(&rng) % NSEQ);
        int op = (int)(cel_rng_next(&rng) % 10);
        if (op == 0) {
            cel_kv_seq_release(&kv, &seqs[i]);
            len[i] = 0;
        } else if (op == 1 && len[i] == 0) {
            /* new sequence over a small alphabet so prefixes repeat */
            for (int k = 0; k < 40; k++) toks[i][k] = (int32_t)(cel_rng_next(&rng) % 2);
            len[i] = BS * cel_kv_seq_match(&kv, &seqs[i], toks[i], 39, &err);
        } else if (op == 2 && len[i] == 0) {
            int j = (int)(cel_rng_next(&rng) % NSEQ);
            if (j != i && len[j] > 0) {
                assert_int_equal(cel_kv_seq_fork(&kv, &seqs[i], &seqs[j], &err), CEL_OK);
                memcpy(toks[i], toks[j], sizeof toks[i]);
                len[i] = len[j];
            }
        } else if (len[i] > 0 || op == 3) {
            if (len[i] == 0)
                for (int k = 0; k < 40; k++) toks[i][k] = (int32_t)(cel_rng_next(&rng) % 2);
            int add = 1 + (int)(cel_rng_next(&rng) % 3);
            if (len[i] + add > 40) continue;
            cel_status st = cel_kv_seq_reserve(&kv, &seqs[i], len[i], len[i] + add, &err);
            if (st == CEL_ERR_LIMIT) continue;
            assert_int_equal(st, CEL_OK);
            len[i] += add;
            assert_int_equal(cel_kv_seq_publish(&kv, &seqs[i], toks[i], len[i], &err), CEL_OK);
        }
        /* invariants */
        int32_t refs[NB] = {0};
        for (int s = 0; s < NSEQ; s++)
            for (int k = 0; k < seqs[s].n_blocks; k++) refs[seqs[s].blocks[k]]++;
        int used = 0, cached = 0;
        for (int b = 0; b < NB; b++) {
            assert_int_equal(refs[b], kv.ref[b]);
            if (kv.ref[b]) used++;
            else if (kv.keyed[b]) cached++;
            if (kv.keyed[b])
                assert_int_equal(cel_kv_lookup(&kv, kv.key[b], kv.parent[b], kv.toks + b * BS), b);
        }
        assert_int_equal(used, cel_kv_n_used(&kv));
        assert_int_equal(cached, cel_kv_n_cached(&kv));
        assert_int_equal(used + cached + kv.n_free, NB);
    }
    assert_true(kv.n_evicted > 0);
    assert_true(kv.n_cow > 0);
    for (int i = 0; i < NSEQ; i++) cel_kv_seq_free(&kv, &seqs[i]);
    assert_int_equal(cel_kv_n_used(&kv), 0);
    cel_kv_free(&kv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_and_refcount),
        cmocka_unit_test(test_hash_sharing),
        cmocka_unit_test(test_copy_on_write),
        cmocka_unit_test(test_reserve_all_or_nothing),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_publish_dedupes_and_drop_cache),
        cmocka_unit_test(test_random_traffic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
