/*
 * workq.c - the bounded worker pool that grades rewards and prepares
 * generation requests off the loop thread.
 *
 * The loop pushes jobs (never blocking: a full pool answers CEL_ERR_BUSY so
 * the caller can send 429); workers run job->work and append the job to a
 * done list, then wake the loop with uv_async_send. uv_async_send coalesces
 * wake-ups, so the loop drains the whole done list each time.
 */
#include <stdlib.h>

#include "internal.h"

static void *worker_main(void *arg)
{
    cel__workq *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
        cel__job *job = q->head;
        if (!job) { /* stop requested and nothing left */
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        q->head = job->next;
        if (!q->head) q->tail = NULL;
        q->n_waiting--;
        pthread_mutex_unlock(&q->mu);

        job->next = NULL;
        if (job->work) job->work(job->ud);

        pthread_mutex_lock(&q->done_mu);
        if (q->done_tail)
            q->done_tail->next = job;
        else
            q->done_head = job;
        q->done_tail = job;
        pthread_mutex_unlock(&q->done_mu);
        uv_async_send(&q->async);
    }
}

/* Loop thread: delivers every finished job (done callbacks free them). */
static void on_done(uv_async_t *a)
{
    cel__workq *q = a->data;
    pthread_mutex_lock(&q->done_mu);
    cel__job *job = q->done_head;
    q->done_head = q->done_tail = NULL;
    pthread_mutex_unlock(&q->done_mu);
    while (job) {
        cel__job *next = job->next;
        atomic_fetch_sub(&q->n_active, 1);
        job->done(job);
        job = next;
    }
}

cel_status cel__srv_workq_init(cel__workq *q, uv_loop_t *loop, int n_threads, uint32_t max, cel_error *err)
{
    if (n_threads <= 0) n_threads = cel_cpu_count();
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    q->head = q->tail = q->done_head = q->done_tail = NULL;
    q->n_waiting = 0;
    atomic_init(&q->n_active, 0);
    q->max = max ? max : 1;
    q->stop = false;
    q->started = false;
    q->threads = calloc((size_t)n_threads, sizeof *q->threads);
    if (!q->threads) return cel_error_set(err, CEL_ERR_NOMEM, "server: out of memory for %d workers", n_threads);
    pthread_mutex_init(&q->mu, NULL);
    pthread_mutex_init(&q->done_mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    int rc = uv_async_init(loop, &q->async, on_done);
    if (rc != 0) {
        free(q->threads);
        q->threads = NULL;
        return cel_error_set(err, CEL_ERR_INTERNAL, "server: uv_async_init: %s", uv_strerror(rc));
    }
    q->async.data = q;
    q->n_threads = 0;
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&q->threads[i], NULL, worker_main, q) != 0) {
            cel__srv_workq_stop(q);
            return cel_error_set(err, CEL_ERR_INTERNAL, "server: cannot start worker thread %d", i);
        }
        q->n_threads++;
    }
    q->started = true;
    return CEL_OK;
}

cel_status cel__srv_workq_push(cel__workq *q, cel__job *job)
{
    if (atomic_load(&q->n_active) >= q->max) return CEL_ERR_BUSY;
    atomic_fetch_add(&q->n_active, 1);
    job->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    q->n_waiting++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return CEL_OK;
}

uint32_t cel__srv_workq_active(cel__workq *q) { return atomic_load(&q->n_active); }

void cel__srv_workq_stop(cel__workq *q)
{
    if (!q->threads) return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->n_threads; i++) pthread_join(q->threads[i], NULL);
    free(q->threads);
    q->threads = NULL;
    q->n_threads = 0;
    /* deliver what finished so the owners free their jobs */
    on_done(&q->async);
    uv_close((uv_handle_t *)&q->async, NULL);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    pthread_mutex_destroy(&q->done_mu);
}
