/*
 * fuzz_http.c - libFuzzer target for the server's request path: bytes go into
 * a virtual connection (the same parser callbacks, limits, routing, handlers
 * and worker pool as a socket) in fragments whose sizes come from the input,
 * then the loop runs until the workers are idle. Any crash, sanitizer report
 * or leak is a bug. Seeds: fuzz/corpus/http/.
 */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/internal.h"

static cel_server *server(void)
{
    static cel_server *s; /* one server for the whole run: creating threads per input is slow */
    if (s) return s;
    signal(SIGPIPE, SIG_IGN);
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    cfg.port = 0;
    cfg.n_threads = 1;
    cfg.max_header_bytes = 4096;
    cfg.max_headers = 32;
    cfg.max_body_bytes = 1 << 16;
    cfg.max_pipeline = 8;
    cfg.max_queue = 64;
    cfg.max_write_bytes = 1 << 16;
    cel_error err;
    if (cel_server_create(&cfg, &s, &err) != CEL_OK) abort();
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cel_server *s = server();
    cel_buf out;
    cel_buf_init(&out);
    cel__conn *c = cel__srv_conn_virtual(s, &out);
    if (!c) abort();
    /* the first byte picks the fragment size, so requests split anywhere */
    size_t frag = size ? (size_t)(data[0] % 64) + 1 : 1;
    if (size) data++, size--;
    for (size_t off = 0; off < size; off += frag) {
        size_t n = size - off < frag ? size - off : frag;
        cel__srv_conn_feed(c, (const char *)data + off, n);
        uv_run(&s->loop, UV_RUN_NOWAIT);
    }
    for (int i = 0; i < 20000 && cel__srv_workq_active(&s->wq); i++) {
        uv_run(&s->loop, UV_RUN_NOWAIT);
        if (cel__srv_workq_active(&s->wq)) usleep(50);
    }
    uv_run(&s->loop, UV_RUN_NOWAIT);
    /* every answer starts with a status line */
    if (out.len && memcmp(out.data, "HTTP/1.1 ", 9) != 0) abort();
    cel__srv_conn_virtual_free(c);
    cel_buf_free(&out);
    return 0;
}
