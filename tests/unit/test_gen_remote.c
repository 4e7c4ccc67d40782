/* Unit tests for the remote (OpenAI-compatible) backend against the fake
 * server tests/e2e/gen_fake_openai.py started on 127.0.0.1: answers, retries
 * on 429 / 5xx / dropped connections / timeouts with back-off, giving up,
 * non-retryable errors, round-robin over URLs, the concurrency limit, the API
 * key, n > 1 samples with distinct seeds, the response size cap, and
 * cancellation when the backend is freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "celine/generate.h"

typedef struct server {
    pid_t pid;
    int port;
    char url[64];
} server;

/* Servers still running are killed at exit, so a failed assert leaves none behind. */
static pid_t live[16];
static size_t n_live;
static void kill_live(void)
{
    for (size_t i = 0; i < n_live; i++)
        if (live[i] > 0) {
            kill(live[i], SIGTERM);
            waitpid(live[i], NULL, 0);
        }
    n_live = 0;
}

/* Starts the fake server with a fault plan (NULL: none) and waits for its port. */
static server start_server(const char *plan, const char *extra)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        char planarg[512];
        snprintf(planarg, sizeof planarg, "--plan=%s", plan ? plan : "");
        execlp("python3", "python3", CELINE_SOURCE_DIR "/tests/e2e/gen_fake_openai.py", planarg, "--hang-s=2",
               extra ? extra : "--slow-s=0.3", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    if (n_live < 16) live[n_live++] = pid;
    FILE *f = fdopen(fds[0], "r");
    server s = {pid, 0, ""};
    char line[64];
    assert_non_null(fgets(line, sizeof line, f));
    assert_int_equal(sscanf(line, "PORT %d", &s.port), 1);
    fclose(f);
    snprintf(s.url, sizeof s.url, "http://127.0.0.1:%d", s.port);
    return s;
}

static void stop_server(server *s)
{
    kill(s->pid, SIGTERM);
    int st;
    waitpid(s->pid, &st, 0);
    for (size_t i = 0; i < n_live; i++)
        if (live[i] == s->pid) live[i] = 0;
}

/* GET /stats of a server as JSON (curl is not linked here: a raw socket would
 * do, but the python client keeps the test short). */
static json_t *server_stats(const server *s)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('%s/stats').read().decode())\"",
             s->url);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    pclose(p);
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    return j;
}

typedef struct result {
    bool done;
    cel_status status;
    char error[1600];
    uint32_t n;
    char text[4][256];
    cel_finish fin[4];
    int32_t ntok[4];
    int32_t prompt_tokens;
} result;

static void on_done(void *ud, const cel_gen_result *r)
{
    result *x = ud;
    x->done = true;
    x->status = r->status;
    snprintf(x->error, sizeof x->error, "%s", r->error ? r->error : "");
    x->n = r->n;
    x->prompt_tokens = r->n_prompt_tokens;
    for (uint32_t i = 0; i < r->n && i < 4; i++) {
        snprintf(x->text[i], sizeof x->text[i], "%.*s", (int)r->samples[i].len, r->samples[i].text);
        x->fin[i] = r->samples[i].finish;
        x->ntok[i] = r->samples[i].n_tokens;
    }
}

static cel_gen_backend *make(const char *const *urls, size_t n, int retries, int conc, double timeout, const char *key)
{
    cel_remote_config c;
    cel_remote_config_default(&c);
    c.urls = urls;
    c.n_urls = n;
    c.max_retries = retries;
    c.max_concurrency = conc;
    c.backoff_base_s = 0.01;
    c.backoff_max_s = 0.05;
    c.timeout_s = timeout;
    c.api_key = key;
    c.model = "fake-model";
    cel_gen_backend *b;
    cel_error e;
    cel_status st = cel_gen_remote_create(&c, &b, &e);
    if (st) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(st, CEL_OK);
    return b;
}

static void submit(cel_gen_backend *b, const char *user, uint32_t n, uint64_t seed, result *out)
{
    cel_chat_msg msgs[1] = {{"user", user}};
    cel_gen_request r = {.messages = msgs, .n_messages = 1, .n = n, .cb = on_done, .ud = out};
    r.sampling.temperature = 0.7f;
    r.sampling.top_p = 0.9f;
    r.sampling.max_tokens = 64;
    r.sampling.seed = seed;
    cel_error e;
    assert_int_equal(cel_gen_backend_submit(b, &r, &e), CEL_OK);
}

static void wait_all(cel_gen_backend *b)
{
    cel_error e;
    assert_int_equal(cel_gen_backend_wait_all(b, &e), CEL_OK);
}

static void test_retries_then_success(void **state)
{
    (void)state;
    /* the drop comes first: on a fresh connection (curl itself re-sends a request whose
     * reused keep-alive connection died, so a later drop might not reach our retry logic) */
    server s = start_server("drop,429,500,503,429ra", NULL);
    const char *urls[] = {s.url};
    cel_gen_backend *b = make(urls, 1, 5, 4, 5, NULL);
    result r = {0};
    submit(b, "hello there", 1, 1234, &r);
    wait_all(b);
    assert_true(r.done);
    assert_int_equal(r.status, CEL_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.text[0], "ok 234");
    assert_int_equal(r.fin[0], CEL_FINISH_STOP);
    assert_int_equal(r.ntok[0], 2);
    assert_int_equal(r.prompt_tokens, 2);
    cel_remote_stats st;
    cel_gen_remote_stats(b, &st);
    assert_int_equal(st.attempts, 6);
    assert_int_equal(st.retries, 5);
    assert_int_equal(st.http_429, 2);
    assert_int_equal(st.http_5xx, 2);
    assert_int_equal(st.transport_errors, 1);
    assert_int_equal(st.failures, 0);
    assert_int_equal(cel_gen_backend_pending(b), 0);
    cel_gen_backend_free(b);
    stop_server(&s);
}

static void test_give_up_and_non_retryable(void **state)
{
    (void)state;
    server s = start_server("500,500,500,400,badjson,length", NULL);
    const char *urls[] = {s.url};
    cel_gen_backend *b = make(urls, 1, 2, 1, 5, NULL);
    result r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};
    submit(b, "a", 1, 1, &r1); /* 3 x 500: gives up after 3 attempts */
    wait_all(b);
    submit(b, "b", 1, 2, &r2); /* 400: no retry */
    wait_all(b);
    submit(b, "c", 1, 3, &r3); /* 200 with a non-JSON body */
    wait_all(b);
    submit(b, "d", 1, 4, &r4); /* finish_reason length */
    wait_all(b);
    assert_int_equal(r1.status, CEL_ERR_IO);
    assert_non_null(strstr(r1.error, "HTTP 500: server error (injected)"));
    assert_non_null(strstr(r1.error, "gave up after 3 attempts"));
    assert_int_equal(r2.status, CEL_ERR_IO);
    assert_non_null(strstr(r2.error, "HTTP 400: bad request (injected)"));
    assert_null(strstr(r2.error, "gave up"));
    assert_int_equal(r3.status, CEL_ERR_FORMAT);
    assert_non_null(strstr(r3.error, "not JSON"));
    assert_int_equal(r4.status, CEL_OK);
    assert_int_equal(r4.fin[0], CEL_FINISH_LENGTH);
    cel_remote_stats st;
    cel_gen_remote_stats(b, &st);
    assert_int_equal(st.attempts, 6);
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.failures, 3);
    cel_gen_backend_free(b);
    stop_server(&s);
}

static void test_round_robin_concurrency_key_samples(void **state)
{
    (void)state;
    server s1 = start_server("slow", "--slow-s=0.2");
    server s2 = start_server(NULL, "--slow-s=0.2");
    const char *urls[] = {s1.url, s2.url};
    cel_gen_backend *b = make(urls, 2, 0, 2, 5, "sekrit");
    result r[4] = {{0}};
    /* 4 requests: 1 sample, 1 sample, 3 samples, 1 sample = 6 transfers over 2 servers */
    submit(b, "one", 1, 10, &r[0]);
    submit(b, "two", 1, 20, &r[1]);
    submit(b, "three", 3, 30, &r[2]);
    submit(b, "four", 1, 40, &r[3]);
    assert_int_equal(cel_gen_backend_pending(b), 4);
    wait_all(b);
    for (int i = 0; i < 4; i++) assert_int_equal(r[i].status, CEL_OK);
    assert_int_equal(r[2].n, 3);
    /* sample 0 uses the request seed; the others derived seeds (different texts) */
    assert_string_equal(r[2].text[0], "ok 30");
    assert_string_not_equal(r[2].text[1], r[2].text[0]);
    assert_string_not_equal(r[2].text[2], r[2].text[1]);
    json_t *j1 = server_stats(&s1), *j2 = server_stats(&s2);
    assert_int_equal(json_integer_value(json_object_get(j1, "requests")), 3);
    assert_int_equal(json_integer_value(json_object_get(j2, "requests")), 3);
    /* never more than max_concurrency (2) in flight in total, so at most 2 at each server */
    assert_true(json_integer_value(json_object_get(j1, "max_inflight")) <= 2);
    assert_true(json_integer_value(json_object_get(j2, "max_inflight")) <= 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j1, "auth"), 0)), "Bearer sekrit");
    json_decref(j1);
    json_decref(j2);
    cel_gen_backend_free(b);
    stop_server(&s1);
    stop_server(&s2);
}

static void test_timeout_retry_and_size_cap(void **state)
{
    (void)state;
    server s = start_server("hang,ok,big", NULL);
    const char *urls[] = {s.url};
    cel_gen_backend *b = make(urls, 1, 1, 1, 0.5, NULL);
    result r1 = {0}, r2 = {0};
    submit(b, "x", 1, 5, &r1); /* hangs 2 s > 0.5 s timeout, then the retry succeeds */
    wait_all(b);
    assert_int_equal(r1.status, CEL_OK);
    cel_remote_stats st;
    cel_gen_remote_stats(b, &st);
    assert_int_equal(st.transport_errors, 1);
    assert_int_equal(st.retries, 1);
    submit(b, "y", 1, 6, &r2); /* a 21 MiB body over the 16 MiB cap: fails, not retried */
    wait_all(b);
    assert_int_equal(r2.status, CEL_ERR_IO);
    assert_non_null(strstr(r2.error, "larger than"));
    cel_gen_backend_free(b);
    stop_server(&s);
}

static void test_cancel_on_free_and_bad_config(void **state)
{
    (void)state;
    server s = start_server("slow,slow,slow", "--slow-s=1");
    const char *urls[] = {s.url};
    cel_gen_backend *b = make(urls, 1, 0, 1, 5, NULL);
    result r[3] = {{0}};
    for (int i = 0; i < 3; i++) submit(b, "z", 1, (uint64_t)i, &r[i]);
    cel_error e;
    assert_int_equal(cel_gen_backend_poll(b, 50, &e), CEL_OK); /* one transfer starts */
    cel_gen_backend_free(b);
    for (int i = 0; i < 3; i++) {
        assert_true(r[i].done);
        assert_int_equal(r[i].status, CEL_ERR_CANCELLED);
    }
    stop_server(&s);
    /* cancel by callback data: running and waiting transfers end at once */
    s = start_server("slow,slow,slow,slow", "--slow-s=3");
    urls[0] = s.url;
    b = make(urls, 1, 0, 1, 10, NULL);
    result q[2];
    memset(q, 0, sizeof q);
    submit(b, "p", 2, 1, &q[0]); /* two transfers, one running, one waiting */
    submit(b, "q", 1, 2, &q[1]);
    assert_int_equal(cel_gen_backend_poll(b, 100, &e), CEL_OK);
    double t0 = cel_now_sec();
    b->v->cancel(b, &q[0]);
    b->v->cancel(b, &q[1]);
    assert_int_equal(cel_gen_backend_wait_all(b, &e), CEL_OK);
    assert_true(cel_now_sec() - t0 < 2.0); /* not the server's 3 s */
    assert_int_equal(q[0].status, CEL_ERR_CANCELLED);
    assert_int_equal(q[1].status, CEL_ERR_CANCELLED);
    cel_gen_backend_free(b);
    stop_server(&s);
    /* a refused connection (nothing listening) counts as a transport error and is retried, then fails */
    const char *dead[] = {"http://127.0.0.1:1"};
    b = make(dead, 1, 1, 1, 2, NULL);
    result d = {0};
    submit(b, "q", 1, 1, &d);
    wait_all(b);
    assert_int_equal(d.status, CEL_ERR_IO);
    cel_remote_stats st;
    cel_gen_remote_stats(b, &st);
    assert_int_equal(st.transport_errors, 2);
    cel_gen_backend_free(b);
    /* configuration errors */
    cel_remote_config c;
    cel_remote_config_default(&c);
    cel_gen_backend *x;
    assert_int_equal(cel_gen_remote_create(&c, &x, &e), CEL_ERR_INVALID);
    const char *bad[] = {"ftp://host"};
    c.urls = bad;
    c.n_urls = 1;
    assert_int_equal(cel_gen_remote_create(&c, &x, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "ftp://host"));
    /* back-off: full jitter under an exponential cap */
    assert_true(cel_gen_backoff_delay(0, 0.5, 30, 0.5) == 0.25);
    assert_true(cel_gen_backoff_delay(3, 0.5, 30, 0.5) == 2.0);
    assert_true(cel_gen_backoff_delay(10, 0.5, 30, 0.5) == 15.0);
    assert_true(cel_gen_backoff_delay(100, 0.5, 30, 0.999) < 30.0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_live);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retries_then_success),
        cmocka_unit_test(test_give_up_and_non_retryable),
        cmocka_unit_test(test_round_robin_concurrency_key_samples),
        cmocka_unit_test(test_timeout_retry_and_size_cap),
        cmocka_unit_test(test_cancel_on_free_and_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
