/*
 * Unit tests for the server's HTTP layer, driven through virtual connections
 * (no sockets): parsing, pipelining order, chunked bodies, limits, routing,
 * authentication, error shape, the data-folder guard, the worker pool and
 * posting to the loop. End-to-end tests over real sockets are in
 * tests/e2e/server*.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/internal.h"

typedef struct fixture {
    cel_server *s;
    cel_buf out;
    cel__conn *c;
} fixture;

static cel_server *make_server(cel_server_config *cfg)
{
    cel_server_config d;
    if (!cfg) {
        cel_server_config_default(&d);
        cfg = &d;
    }
    cfg->port = 0;
    if (!cfg->n_threads) cfg->n_threads = 2;
    cel_error err;
    cel_server *s = NULL;
    cel_status st = cel_server_create(cfg, &s, &err);
    if (st != CEL_OK) fprintf(stderr, "create: %s\n", err.msg);
    assert_int_equal(st, CEL_OK);
    return s;
}

/* Runs the loop until the worker pool is idle (bounded). */
static void settle(cel_server *s)
{
    for (int i = 0; i < 5000; i++) {
        uv_run(&s->loop, UV_RUN_NOWAIT);
        if (cel__srv_workq_active(&s->wq) == 0) break;
        usleep(1000);
    }
    uv_run(&s->loop, UV_RUN_NOWAIT);
}

static void open_fx(fixture *f, cel_server_config *cfg)
{
    f->s = make_server(cfg);
    cel_buf_init(&f->out);
    f->c = cel__srv_conn_virtual(f->s, &f->out);
    assert_non_null(f->c);
}

static void close_fx(fixture *f)
{
    cel__srv_conn_virtual_free(f->c);
    cel_server_free(f->s);
    cel_buf_free(&f->out);
}

static void feed(fixture *f, const char *s)
{
    cel__srv_conn_feed(f->c, s, strlen(s));
    settle(f->s);
}

/* Counts occurrences of needle in the output. */
static int count(const cel_buf *b, const char *needle)
{
    int n = 0;
    for (const char *p = b->data; p && (p = strstr(p, needle)); p++) n++;
    return n;
}

static const char *after(const cel_buf *b, const char *needle)
{
    const char *p = b->data ? strstr(b->data, needle) : NULL;
    return p ? p : "";
}

static void test_health_and_keepalive(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    feed(&f, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(f.out.data, "{\"status\":\"ok\",\"model\":false}"));
    assert_null(strstr(f.out.data, "Connection: close"));
    /* the same connection serves a second request */
    feed(&f, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(count(&f.out, "HTTP/1.1 200 OK"), 2);
    assert_false(f.c->closing);
    /* Connection: close is honoured */
    feed(&f, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_int_equal(count(&f.out, "HTTP/1.1 200 OK"), 3);
    assert_non_null(strstr(f.out.data, "Connection: close"));
    close_fx(&f);
}

static void test_pipeline_order(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    /* the reward request is answered on a worker, after the 404 is ready: order must still hold */
    const char *body = "{\"items\":[{\"id\":\"p\",\"task\":\"math\",\"response\":\"\\\\boxed{4}\",\"reference\":\"4\"}]}";
    char req[1024];
    snprintf(req, sizeof req,
             "GET /health HTTP/1.1\r\n\r\n"
             "POST /v1/reward HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s"
             "GET /nope HTTP/1.1\r\n\r\n"
             "GET /health HTTP/1.1\r\n\r\n",
             strlen(body), body);
    feed(&f, req);
    const char *a = strstr(f.out.data, "{\"status\":\"ok\"");
    const char *b = strstr(f.out.data, "\"results\"");
    const char *c = strstr(f.out.data, "HTTP/1.1 404");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(a < b && b < c);
    assert_int_equal(count(&f.out, "HTTP/1.1 200 OK"), 3);
    assert_non_null(strstr(b, "\"reward\":1.0"));
    close_fx(&f);
}

static void test_byte_by_byte(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    const char *body = "[{\"id\":1,\"task\":\"math\",\"response\":\"The answer is 12\",\"reference\":\"12\"}]";
    char req[512];
    snprintf(req, sizeof req,
             "POST /v1/reward HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    for (const char *p = req; *p; p++) cel__srv_conn_feed(f.c, p, 1);
    settle(f.s);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(f.out.data, "\"correct\":true"));
    close_fx(&f);
}

static void test_chunked_body(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    feed(&f, "POST /get_reward HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
             "10\r\n{\"query\":[\"x 7\"]\r\n"
             "f\r\n,\"labels\":[\"7\"]\r\n"
             "1\r\n}\r\n"
             "0\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(f.out.data, "{\"rewards\":[1.0]"));
    close_fx(&f);
}

static void test_header_limit(void **state)
{
    (void)state;
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cfg.max_header_bytes = 512;
    fixture f;
    open_fx(&f, &cfg);
    char big[2048];
    memset(big, 'a', sizeof big);
    big[sizeof big - 1] = 0;
    cel_buf r;
    cel_buf_init(&r);
    cel_buf_printf(&r, "GET /health HTTP/1.1\r\nX-Big: %s\r\n\r\n", big);
    feed(&f, r.data);
    cel_buf_free(&r);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 431 "));
    assert_non_null(strstr(f.out.data, "Connection: close"));
    assert_non_null(strstr(f.out.data, "\"code\":\"header_too_large\""));
    /* nothing after the error is read */
    feed(&f, "GET /health HTTP/1.1\r\n\r\n");
    assert_int_equal(count(&f.out, "HTTP/1.1 "), 1);
    close_fx(&f);
}

static void test_header_count_limit(void **state)
{
    (void)state;
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cfg.max_headers = 3;
    fixture f;
    open_fx(&f, &cfg);
    feed(&f, "GET /health HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 431 "));
    close_fx(&f);
}

static void test_body_limit(void **state)
{
    (void)state;
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cfg.max_body_bytes = 100;
    fixture f;
    open_fx(&f, &cfg);
    feed(&f, "POST /v1/reward HTTP/1.1\r\nContent-Length: 101\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 413 "));
    assert_int_equal(count(&f.out, "HTTP/1.1 "), 1); /* the handler never sees it */
    assert_non_null(strstr(f.out.data, "\"type\":\"invalid_request_error\""));
    close_fx(&f);

    /* chunked: the limit applies to the decoded body as it arrives */
    open_fx(&f, &cfg);
    cel_buf r;
    cel_buf_init(&r);
    cel_buf_puts(&r, "POST /v1/reward HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; i++) cel_buf_puts(&r, "20\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    feed(&f, r.data);
    cel_buf_free(&r);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 413 "));
    close_fx(&f);
}

static void test_malformed(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    feed(&f, "GET /health HTTP/1.1\r\nBad Header\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 400 "));
    assert_non_null(strstr(f.out.data, "{\"error\":{\"message\":\"malformed HTTP request"));
    close_fx(&f);

    open_fx(&f, NULL);
    feed(&f, "\x01\x02garbage\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 400 "));
    close_fx(&f);

    /* invalid JSON bodies get a 400 that says where */
    open_fx(&f, NULL);
    feed(&f, "POST /v1/reward HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"items\":");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 400 "));
    assert_non_null(strstr(f.out.data, "not valid JSON"));
    assert_non_null(strstr(f.out.data, "line 1"));
    close_fx(&f);
}

static void test_routes_404_405(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    feed(&f, "DELETE /health HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 405 "));
    assert_non_null(strstr(f.out.data, "Allow: GET\r\n"));
    feed(&f, "GET /v1/nothing?x=1 HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 404 "));
    assert_non_null(strstr(f.out.data, "no route GET /v1/nothing"));
    /* HEAD: the GET route's head, no body; keep-alive goes on */
    cel_buf_reset(&f.out);
    feed(&f, "HEAD /health HTTP/1.1\r\n\r\nHEAD /v1/reward HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(f.out.data, "Content-Length: 29\r\n"));
    assert_null(strstr(f.out.data, "\"status\""));
    assert_non_null(strstr(f.out.data, "HTTP/1.1 405 ")); /* POST-only path; no body for HEAD */
    assert_null(strstr(f.out.data, "\"error\""));
    cel_buf_reset(&f.out);
    /* absolute-form targets and queries route by path */
    feed(&f, "GET http://localhost:8080/health?verbose=1 HTTP/1.1\r\n\r\n");
    assert_int_equal(count(&f.out, "HTTP/1.1 200 OK"), 1);
    close_fx(&f);
}

static int custom_calls;
static void custom_route(cel_http_req *r, void *ud)
{
    custom_calls++;
    char body[256];
    snprintf(body, sizeof body, "{\"path\":\"%s\",\"query\":\"%s\",\"ud\":\"%s\",\"hdr\":\"%s\"}", cel_http_req_path(r),
             cel_http_req_query(r), (const char *)ud,
             cel_http_req_header(r, "x-test") ? cel_http_req_header(r, "x-test") : "");
    cel_http_respond(r, 201, "application/json", body, strlen(body), "X-Custom: yes\r\n");
}

static void test_custom_routes(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    cel_error err;
    assert_int_equal(cel_server_route(f.s, "GET", "/v1/jobs/", CEL_ROUTE_PREFIX, custom_route, "jobs", &err), CEL_OK);
    assert_int_equal(cel_server_route(f.s, "GET", "bad", 0, custom_route, NULL, &err), CEL_ERR_INVALID);
    feed(&f, "GET /v1/jobs/42?full=1 HTTP/1.1\r\nX-Test: hello\r\n\r\n");
    assert_int_equal(custom_calls, 1);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 201 Created"));
    assert_non_null(strstr(f.out.data, "X-Custom: yes"));
    assert_non_null(strstr(f.out.data, "{\"path\":\"/v1/jobs/42\",\"query\":\"full=1\",\"ud\":\"jobs\",\"hdr\":\"hello\"}"));
    /* overriding a built-in */
    assert_int_equal(cel_server_route(f.s, "GET", "/health", CEL_ROUTE_PUBLIC, custom_route, "mine", &err), CEL_OK);
    feed(&f, "GET /health HTTP/1.1\r\n\r\n");
    assert_int_equal(custom_calls, 2);
    assert_non_null(strstr(f.out.data, "\"ud\":\"mine\""));
    close_fx(&f);
}

static void test_api_key(void **state)
{
    (void)state;
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cfg.api_key = "s3cret";
    fixture f;
    open_fx(&f, &cfg);
    feed(&f, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 401 "));
    assert_non_null(strstr(f.out.data, "\"code\":\"invalid_api_key\""));
    cel_buf_reset(&f.out);
    feed(&f, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 401 "));
    cel_buf_reset(&f.out);
    feed(&f, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cre\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 401 "));
    cel_buf_reset(&f.out);
    feed(&f, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(f.out.data, "celine_http_requests_total{route=\"/metrics\",status=\"401\"} 3"));
    cel_buf_reset(&f.out);
    feed(&f, "GET /health HTTP/1.1\r\n\r\n"); /* public */
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK"));
    close_fx(&f);
}

static void test_http10_and_expect(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    feed(&f, "GET /health HTTP/1.0\r\n\r\n");
    assert_non_null(strstr(f.out.data, "Connection: close"));
    close_fx(&f);

    open_fx(&f, NULL);
    const char *body = "{\"query\":[\"5\"],\"labels\":[\"5\"]}";
    char head[200];
    snprintf(head, sizeof head, "POST /get_reward HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %zu\r\n\r\n",
             strlen(body));
    feed(&f, head);
    assert_non_null(strstr(f.out.data, "HTTP/1.1 100 Continue\r\n\r\n"));
    feed(&f, body);
    assert_non_null(strstr(after(&f.out, "100 Continue"), "HTTP/1.1 200 OK"));
    close_fx(&f);
}

static void test_reward_errors(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    const char *bodies[] = {
        "{\"items\":[]}",
        "{\"items\":[{\"response\":\"x\"}]}",
        "{\"items\":[{\"response\":5,\"reference\":\"5\"}]}",
        "{\"items\":[{\"response\":\"5\",\"reference\":\"5\",\"task\":\"poetry\"}]}",
        "{\"items\":[{\"response\":\"5\",\"reference\":\"5\"}],\"advantage\":\"ppo\"}",
        "{\"file\":\"x.jsonl\"}",
        "\"just a string\"",
    };
    const char *expect[] = {"'items' is empty", "items[0]: 'reference' is required", "items[0]: 'response' must be a string",
                            "items[0]: 'task' must be", "'advantage' must be", "no data folder",
                            "must be a JSON object"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        cel_buf_reset(&f.out);
        char req[512];
        snprintf(req, sizeof req, "POST /v1/reward HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", strlen(bodies[i]),
                 bodies[i]);
        feed(&f, req);
        if (!strstr(f.out.data, expect[i])) fprintf(stderr, "case %zu: %s\n", i, f.out.data);
        assert_non_null(strstr(f.out.data, "HTTP/1.1 400 "));
        assert_non_null(strstr(f.out.data, expect[i]));
    }
    close_fx(&f);
}

static void test_reward_single_and_groups(void **state)
{
    (void)state;
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cel_server *s = make_server(&cfg);
    const char *body = "{\"advantage\":\"grpo\",\"items\":["
                       "{\"id\":\"a\",\"task\":\"math\",\"response\":\"\\\\boxed{1/2}\",\"reference\":\"0.5\",\"group\":\"g1\"},"
                       "{\"id\":\"b\",\"task\":\"math\",\"response\":\"\\\\boxed{3}\",\"reference\":\"0.5\",\"group\":\"g1\"},"
                       "{\"id\":\"c\",\"task\":\"math\",\"response\":\"\\\\boxed{7}\",\"reference\":7,\"group\":2}]}";
    cel_buf out;
    cel_buf_init(&out);
    int status = 0;
    size_t n = 0;
    cel_error err;
    assert_int_equal(cel__srv_reward_run(s, body, strlen(body), &out, &status, &n, &err), CEL_OK);
    assert_int_equal(status, 200);
    assert_int_equal(n, 3);
    json_error_t je;
    json_t *o = json_loads(out.data, 0, &je);
    assert_non_null(o);
    json_t *adv = json_object_get(o, "advantages");
    assert_int_equal(json_array_size(adv), 3);
    /* a group of two with rewards 1, 0: GRPO gives +-1/sqrt(2); a group of one gets 0 */
    assert_true(json_real_value(json_array_get(adv, 0)) > 0.7 && json_real_value(json_array_get(adv, 0)) < 0.72);
    assert_true(json_real_value(json_array_get(adv, 1)) < -0.7);
    assert_true(json_real_value(json_array_get(adv, 2)) == 0.0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(o, "results"), 0), "id")),
                        "a");
    json_decref(o);

    /* a single item without the wrapper */
    cel_buf_reset(&out);
    const char *one = "{\"response\":\"Answer: B\",\"reference\":\"B\",\"task\":\"mcq\",\"choices\":[\"1\",\"2\",\"3\"]}";
    assert_int_equal(cel__srv_reward_run(s, one, strlen(one), &out, &status, &n, &err), CEL_OK);
    assert_int_equal(n, 1);
    /* GRPO by default, as `celine reward`: a group of one gets 0 */
    assert_non_null(strstr(out.data, "\"advantages\":[0.0]"));
    assert_non_null(strstr(out.data, "\"advantage_mode\":\"grpo\""));
    cel_buf_reset(&out);
    const char *none = "{\"advantage\":\"none\",\"items\":[{\"response\":\"1\",\"reference\":\"1\"}]}";
    assert_int_equal(cel__srv_reward_run(s, none, strlen(none), &out, &status, &n, &err), CEL_OK);
    assert_non_null(strstr(out.data, "\"advantages\":null"));
    assert_null(strstr(out.data, "\"advantage\":"));

    /* OpenRLHF: the prompt prefix is removed before grading */
    cel_buf_reset(&out);
    const char *orl = "{\"query\":[\"What is 6*7? The answer is 42\",\"What is 6*7? The answer is 41\"],"
                      "\"prompts\":[\"What is 6*7?\",\"What is 6*7?\"],\"labels\":[\"42\",42]}";
    assert_int_equal(cel__srv_get_reward_run(s, orl, strlen(orl), &out, &status, &n, &err), CEL_OK);
    assert_non_null(strstr(out.data, "\"rewards\":[1.0,0.0]"));
    cel_buf_reset(&out);
    const char *bad = "{\"query\":[\"x\"],\"labels\":[]}";
    assert_int_equal(cel__srv_get_reward_run(s, bad, strlen(bad), &out, &status, &n, &err), CEL_ERR_INVALID);
    assert_int_equal(status, 400);
    assert_non_null(strstr(err.msg, "'labels' has 0 entries but 'query' has 1"));
    cel_buf_free(&out);
    cel_server_free(s);
}

static void test_data_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/celine-http-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[200], file[300], link[300], outside[300];
    snprintf(sub, sizeof sub, "%s/data", dir);
    mkdir(sub, 0700);
    snprintf(file, sizeof file, "%s/items.jsonl", sub);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fputs("{\"id\":1,\"task\":\"math\",\"response\":\"\\\\boxed{2}\",\"reference\":\"2\"}\n\n"
          "{\"id\":2,\"task\":\"math\",\"response\":\"\\\\boxed{3}\",\"reference\":\"2\"}\n", fp);
    fclose(fp);
    snprintf(outside, sizeof outside, "%s/secret.jsonl", dir);
    fp = fopen(outside, "w");
    fputs("{}\n", fp);
    fclose(fp);
    snprintf(link, sizeof link, "%s/escape.jsonl", sub);
    assert_int_equal(symlink(outside, link), 0);

    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cfg.data_dir = sub;
    cel_server *s = make_server(&cfg);
    char out[4096];
    cel_error err;
    assert_int_equal(cel_server_data_path(s, "items.jsonl", out, sizeof out, &err), CEL_OK);
    assert_non_null(strstr(out, "/data/items.jsonl"));
    assert_int_equal(cel_server_data_path(s, "../secret.jsonl", out, sizeof out, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "'..'"));
    assert_int_equal(cel_server_data_path(s, outside, out, sizeof out, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "absolute"));
    assert_int_equal(cel_server_data_path(s, "escape.jsonl", out, sizeof out, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "outside the data folder"));
    assert_int_equal(cel_server_data_path(s, "missing.jsonl", out, sizeof out, &err), CEL_ERR_NOT_FOUND);

    cel_buf b;
    cel_buf_init(&b);
    int status;
    size_t n;
    const char *req = "{\"file\":\"items.jsonl\"}";
    assert_int_equal(cel__srv_reward_run(s, req, strlen(req), &b, &status, &n, &err), CEL_OK);
    assert_int_equal(n, 2);
    assert_non_null(strstr(b.data, "\"rewards\":[1.0,0.0]"));
    cel_buf_reset(&b);
    req = "{\"file\":\"../secret.jsonl\"}";
    assert_int_equal(cel__srv_reward_run(s, req, strlen(req), &b, &status, &n, &err), CEL_ERR_INVALID);
    assert_int_equal(status, 400);
    cel_buf_free(&b);
    cel_server_free(s);
    unlink(link);
    unlink(file);
    unlink(outside);
    rmdir(sub);
    rmdir(dir);
}

static void test_error_json(void **state)
{
    (void)state;
    cel_buf b;
    cel_buf_init(&b);
    assert_int_equal(cel__srv_error_json(&b, 429, NULL, "queue_full", "busy \"now\""), CEL_OK);
    assert_string_equal(b.data, "{\"error\":{\"message\":\"busy \\\"now\\\"\",\"type\":\"rate_limit_error\","
                                "\"code\":\"queue_full\"}}");
    cel_buf_reset(&b);
    assert_int_equal(cel__srv_error_json(&b, 500, NULL, NULL, "bad \xff byte"), CEL_OK);
    assert_non_null(strstr(b.data, "\"code\":null"));
    assert_non_null(strstr(b.data, "\"type\":\"server_error\""));
    cel_buf_free(&b);
    /* UTF-8 repair for model output */
    json_t *s = cel__srv_json_str("a\xff\xc3\xa9z", 5);
    assert_string_equal(json_string_value(s), "a\xEF\xBF\xBD\xc3\xa9z");
    json_decref(s);
    assert_true(cel__srv_utf8_valid("\xe2\x82\xac", 3));
    assert_false(cel__srv_utf8_valid("\xed\xa0\x80", 3)); /* a surrogate */
    assert_false(cel__srv_utf8_valid("\xc0\x80", 2));     /* overlong */
}

/* ---- worker pool and posting ---- */

typedef struct block {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    int done;
} block;

static void block_work(void *ud)
{
    block *b = ud;
    pthread_mutex_lock(&b->mu);
    while (!b->open) pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

static void block_done(cel__job *job)
{
    block *b = job->ud;
    b->done++;
    free(job);
}

static void test_workq_bound(void **state)
{
    (void)state;
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cfg.n_threads = 1;
    cfg.max_queue = 2;
    cel_server *s = make_server(&cfg);
    block b = {.open = false};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    for (int i = 0; i < 2; i++) {
        cel__job *j = calloc(1, sizeof *j);
        j->work = block_work, j->done = block_done, j->ud = &b;
        assert_int_equal(cel__srv_workq_push(&s->wq, j), CEL_OK);
    }
    cel__job *j = calloc(1, sizeof *j);
    j->work = block_work, j->done = block_done, j->ud = &b;
    assert_int_equal(cel__srv_workq_push(&s->wq, j), CEL_ERR_BUSY);
    free(j);

    /* a request arriving now is answered 429 with Retry-After */
    cel_buf out;
    cel_buf_init(&out);
    cel__conn *c = cel__srv_conn_virtual(s, &out);
    const char *req = "POST /get_reward HTTP/1.1\r\nContent-Length: 30\r\n\r\n{\"query\":[\"5\"],\"labels\":[\"5\"]}";
    cel__srv_conn_feed(c, req, strlen(req));
    assert_non_null(strstr(out.data, "HTTP/1.1 429 "));
    assert_non_null(strstr(out.data, "Retry-After: 1\r\n"));
    assert_non_null(strstr(out.data, "\"type\":\"rate_limit_error\""));

    pthread_mutex_lock(&b.mu);
    b.open = true;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);
    settle(s);
    assert_int_equal(b.done, 2);
    assert_int_equal(cel__srv_workq_active(&s->wq), 0);
    /* capacity is back */
    cel_buf_reset(&out);
    cel__srv_conn_feed(c, req, strlen(req));
    settle(s);
    if (!strstr(out.data, "HTTP/1.1 200 OK")) fprintf(stderr, "got: %s\n", out.data);
    assert_non_null(strstr(out.data, "HTTP/1.1 200 OK"));
    cel__srv_conn_virtual_free(c);
    cel_buf_free(&out);
    cel_server_free(s);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
}

static void posted(void *ud) { (*(int *)ud)++; }

typedef struct post_arg {
    cel_server *s;
    int *counter;
} post_arg;

static void *post_thread(void *arg)
{
    post_arg *a = arg;
    return (void *)(intptr_t)cel_server_post(a->s, posted, a->counter);
}

static void test_post_from_thread(void **state)
{
    (void)state;
    cel_server *s = make_server(NULL);
    int n = 0, *counter = &n; /* only the loop thread (this one) increments it */
    post_arg a = {s, counter};
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, post_thread, &a);
    for (int i = 0; i < 4; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        assert_int_equal((intptr_t)rv, CEL_OK);
    }
    for (int i = 0; i < 100 && *counter < 4; i++) {
        uv_run(&s->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(*counter, 4);
    cel_server_free(s);
}

static void *stop_later(void *arg)
{
    usleep(50 * 1000);
    cel_server_stop(arg);
    return NULL;
}

static void test_run_and_stop(void **state)
{
    (void)state;
    cel_server *s = make_server(NULL);
    assert_true(cel_server_port(s) > 0);
    char want[64];
    snprintf(want, sizeof want, "http://127.0.0.1:%d", cel_server_port(s));
    assert_string_equal(cel_server_url(s), want);
    int n = 0;
    assert_int_equal(cel_server_post(s, posted, &n), CEL_OK); /* runs inside cel_server_run */
    pthread_t t;
    pthread_create(&t, NULL, stop_later, s);
    cel_error err;
    uint64_t t0 = cel_now_ns();
    assert_int_equal(cel_server_run(s, &err), CEL_OK);
    pthread_join(t, NULL);
    assert_true(cel_now_ns() - t0 < 5000000000ull);
    assert_int_equal(n, 1);
    assert_int_equal(cel_server_post(s, posted, &n), CEL_ERR_CANCELLED); /* stopped: refused, never run */
    cel_server_stop(s);                                                  /* idempotent, harmless */
    assert_int_equal(cel_server_run(s, &err), CEL_ERR_INVALID);
    cel_server_free(s);
    assert_int_equal(n, 1);
}

static void test_metrics_render(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    feed(&f, "GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\nGET /zzz HTTP/1.1\r\n\r\n");
    cel_buf_reset(&f.out);
    feed(&f, "GET /metrics HTTP/1.1\r\n\r\n");
    const char *m = f.out.data;
    assert_non_null(strstr(m, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(m, "celine_http_requests_total{route=\"/health\",status=\"200\"} 2\n"));
    assert_non_null(strstr(m, "celine_http_requests_total{route=\"other\",status=\"404\"} 1\n"));
    assert_non_null(strstr(m, "# TYPE celine_time_to_first_token_seconds histogram"));
    assert_non_null(strstr(m, "celine_time_per_output_token_seconds_bucket{le=\"+Inf\"} 0\n"));
    assert_non_null(strstr(m, "celine_kv_blocks_used 0\n"));
    assert_non_null(strstr(m, "celine_prefix_cache_hits_total 0\n"));
    assert_non_null(strstr(m, "celine_queue_depth{queue=\"workers\"} 0\n"));
    assert_non_null(strstr(m, "celine_model_ready 0\n"));
    close_fx(&f);

    cel__hist h;
    const double bounds[] = {1, 2};
    cel__srv_hist_init(&h, bounds, 2);
    cel__srv_hist_observe(&h, 0.5);
    cel__srv_hist_observe(&h, 2);
    cel__srv_hist_observe(&h, 3);
    assert_int_equal(h.counts[0], 1);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[2], 1);
    assert_true(h.sum == 5.5);
}

static void test_no_model_generation(void **state)
{
    (void)state;
    fixture f;
    open_fx(&f, NULL);
    feed(&f, "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 503 "));
    assert_non_null(strstr(f.out.data, "--model PATH"));
    assert_null(strstr(f.out.data, "Retry-After"));
    cel_buf_reset(&f.out);
    feed(&f, "POST /tokenize HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    assert_non_null(strstr(f.out.data, "\"code\":\"model_not_loaded\""));
    cel_buf_reset(&f.out);
    feed(&f, "GET /v1/models HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(f.out.data, "{\"object\":\"list\",\"data\":[]}"));
    assert_null(cel_server_engine(f.s));
    assert_null(cel_server_model(f.s));
    /* while a model loads: /health is 503 with Retry-After, generation says to wait */
    f.s->model_state = CEL__MODEL_LOADING;
    cel_buf_reset(&f.out);
    feed(&f, "GET /health HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 503 "));
    assert_non_null(strstr(f.out.data, "Retry-After: 1"));
    assert_non_null(strstr(f.out.data, "\"status\":\"loading\""));
    cel_buf_reset(&f.out);
    feed(&f, "POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    assert_non_null(strstr(f.out.data, "\"code\":\"model_loading\""));
    f.s->model_state = CEL__MODEL_NONE;
    close_fx(&f);
}

/* ---- streaming: framing, order behind a pending request, the write cap ---- */

static cel_http_req *held;   /* a request /hold leaves open */
static cel_http_req *streamr;
static int aborts;
static void on_abort_count(void *ud) { (*(int *)ud)++; }

static void hold_route(cel_http_req *r, void *ud)
{
    (void)ud;
    held = r;
    cel_http_req_on_abort(r, on_abort_count, &aborts);
}

static void stream_route(cel_http_req *r, void *ud)
{
    (void)ud;
    streamr = r;
    cel_http_req_on_abort(r, on_abort_count, &aborts);
    cel_http_stream_begin(r, 200, "text/event-stream", "Cache-Control: no-cache\r\n");
    assert_int_equal(cel_http_stream_write(r, "data: 1\n\n", 9), CEL_OK);
}

static void test_streaming(void **state)
{
    (void)state;
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cfg.max_write_bytes = 2048;
    fixture f;
    open_fx(&f, &cfg);
    cel_error err;
    assert_int_equal(cel_server_route(f.s, "GET", "/hold", 0, hold_route, NULL, &err), CEL_OK);
    assert_int_equal(cel_server_route(f.s, "GET", "/stream", 0, stream_route, NULL, &err), CEL_OK);

    /* a stream alone: chunked framing, then the terminating chunk */
    feed(&f, "GET /stream HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(f.out.data, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(f.out.data, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(f.out.data, "\r\n\r\n9\r\ndata: 1\n\n\r\n"));
    assert_int_equal(cel_http_stream_write(streamr, "data: 2\n\n", 9), CEL_OK);
    cel_http_stream_end(streamr);
    assert_non_null(strstr(f.out.data, "9\r\ndata: 2\n\n\r\n0\r\n\r\n"));

    /* a stream behind a pending request waits for it, in order */
    cel_buf_reset(&f.out);
    feed(&f, "GET /hold HTTP/1.1\r\n\r\nGET /stream HTTP/1.1\r\n\r\n");
    assert_non_null(held);
    assert_non_null(streamr);
    assert_true(f.out.len == 0);
    cel_http_respond(held, 200, "text/plain", "held", 4, NULL);
    held = NULL;
    const char *a = strstr(f.out.data, "held");
    const char *b = strstr(f.out.data, "data: 1");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b);
    cel_http_stream_end(streamr);
    streamr = NULL;

    /* over the write cap while queued behind /hold: the client is dropped */
    cel_buf_reset(&f.out);
    aborts = 0;
    feed(&f, "GET /hold HTTP/1.1\r\n\r\nGET /stream HTTP/1.1\r\n\r\n");
    char big[3000];
    memset(big, 'x', sizeof big);
    assert_int_equal(cel_http_stream_write(streamr, big, sizeof big), CEL_ERR_LIMIT);
    assert_true(f.c->closing);
    assert_int_equal(aborts, 2); /* both requests learn their client is gone */
    assert_true(cel_http_req_aborted(held));
    assert_int_equal(cel_http_stream_write(streamr, "x", 1), CEL_ERR_CANCELLED);
    cel_http_stream_end(streamr); /* completing aborted requests frees them */
    cel_http_respond(held, 200, NULL, NULL, 0, NULL);
    held = streamr = NULL;
    cel__srv_conn_virtual_free(f.c);
    cel_buf_free(&f.out);

    /* HTTP/1.0: no chunked coding; the body ends with the connection */
    cel_buf_init(&f.out);
    f.c = cel__srv_conn_virtual(f.s, &f.out);
    feed(&f, "GET /stream HTTP/1.0\r\n\r\n");
    assert_null(strstr(f.out.data, "chunked"));
    assert_non_null(strstr(f.out.data, "Connection: close\r\n"));
    assert_non_null(strstr(f.out.data, "\r\n\r\ndata: 1\n\n"));
    cel_http_stream_end(streamr);
    streamr = NULL;
    assert_true(f.c->closing);
    close_fx(&f);
}

static void test_config_errors(void **state)
{
    (void)state;
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cel_error err;
    cel_server *s = NULL;
    cfg.host = "not-an-ip";
    assert_int_equal(cel_server_create(&cfg, &s, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "not an IP address"));
    cel_server_config_default(&cfg);
    cfg.data_dir = "/nonexistent/celine";
    assert_int_equal(cel_server_create(&cfg, &s, &err), CEL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "--data-dir"));
    cel_server_config_default(&cfg);
    cfg.reward_format = "fancy";
    assert_int_equal(cel_server_create(&cfg, &s, &err), CEL_ERR_INVALID);
    cel_server_config_default(&cfg);
    cfg.model_path = "/nonexistent/model.gguf";
    assert_int_equal(cel_server_create(&cfg, &s, &err), CEL_ERR_NOT_FOUND);
    assert_null(s);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_and_keepalive),
        cmocka_unit_test(test_pipeline_order),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_chunked_body),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_routes_404_405),
        cmocka_unit_test(test_custom_routes),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_http10_and_expect),
        cmocka_unit_test(test_reward_errors),
        cmocka_unit_test(test_reward_single_and_groups),
        cmocka_unit_test(test_data_dir),
        cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_workq_bound),
        cmocka_unit_test(test_post_from_thread),
        cmocka_unit_test(test_run_and_stop),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_no_model_generation),
        cmocka_unit_test(test_streaming),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
