/*
 * Fork-join thread pool for data-parallel loops. The engine dispatches hundreds
 * of short loops per token, so workers spin briefly on an atomic generation
 * counter before sleeping on a condition variable: a wake-up through the
 * condvar alone costs tens of microseconds per dispatch.
 */
#include "celine/common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#define CEL_POOL_SPIN 20000

struct cel_pool {
    int n;                    /* threads including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint_fast64_t gen; /* bumped once per job */
    atomic_int pending;       /* workers still busy with the current job */
    atomic_int stop;
    /* current job */
    cel_pool_fn fn;
    void *ctx;
    int64_t n_items;
    int64_t chunk;
    atomic_int_fast64_t next; /* next chunk start */
};

typedef struct {
    cel_pool *p;
    int index;
} worker_arg;

static void run_chunks(cel_pool *p, int tid)
{
    for (;;) {
        int64_t b = atomic_fetch_add(&p->next, p->chunk);
        if (b >= p->n_items) break;
        int64_t e = b + p->chunk < p->n_items ? b + p->chunk : p->n_items;
        p->fn(p->ctx, b, e, tid);
    }
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    cel_pool *p = wa->p;
    int tid = wa->index;
    free(wa);
    uint64_t seen = 0;
    for (;;) {
        uint64_t g;
        int spins = 0;
        while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop)) {
            /* yield now and then: on an oversubscribed machine a descheduled peer
             * would otherwise leave this thread burning its whole time slice */
            if ((spins & 127) == 127) sched_yield();
            if (++spins > CEL_POOL_SPIN) {
                pthread_mutex_lock(&p->mu);
                while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                    pthread_cond_wait(&p->cv, &p->mu);
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_chunks(p, tid);
        atomic_fetch_sub(&p->pending, 1);
    }
}

int cel_pool_size(const cel_pool *p) { return p ? p->n : 1; }

cel_status cel_pool_create(int n_threads, cel_pool **out, cel_error *err)
{
    *out = NULL;
    if (n_threads <= 0) n_threads = cel_cpu_count();
    cel_pool *p = calloc(1, sizeof *p);
    if (!p) return cel_error_set(err, CEL_ERR_NOMEM, "thread pool: out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->next, 0);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) {
            free(p);
            return cel_error_set(err, CEL_ERR_NOMEM, "thread pool: out of memory");
        }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = malloc(sizeof *wa);
            if (!wa || pthread_create(&p->threads[i - 1], NULL, worker_main, wa ? (wa->p = p, wa->index = i, wa) : NULL) != 0) {
                free(wa);
                p->n = i; /* join what started */
                cel_pool_free(p);
                return cel_error_set(err, CEL_ERR_INTERNAL, "thread pool: cannot start thread %d", i);
            }
        }
    }
    *out = p;
    return CEL_OK;
}

void cel_pool_free(cel_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

void cel_pool_run(cel_pool *p, int64_t n, int64_t grain, cel_pool_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int nt = p ? p->n : 1;
    if (nt == 1 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    /* about 4 chunks per thread balances load without much contention */
    int64_t chunk = (n + nt * 4 - 1) / (nt * 4);
    if (chunk < grain) chunk = grain;
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n;
    p->chunk = chunk;
    atomic_store(&p->next, 0);
    atomic_store(&p->pending, nt - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    for (unsigned spins = 1; atomic_load(&p->pending) > 0; spins++)
        if ((spins & 127) == 0) sched_yield();
}
