/*
 * cmd_serve.c - `celine serve`: the HTTP server (OpenAI-compatible generation,
 * reward endpoints, tokenization, health, metrics). Parses options into a
 * cel_server_config, prints the bound address on stdout in one parseable
 * line, runs until SIGINT/SIGTERM, exits 0 after a clean shutdown.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include "celine/server.h"
#include "cli.h"

static int check_range(const char *name, int64_t v, int64_t lo, int64_t hi)
{
    if (v < lo || v > hi) {
        cel_cli_fail("serve", "--%s %lld is out of range %lld..%lld", name, (long long)v, (long long)lo,
                     (long long)hi);
        return 1;
    }
    return 0;
}

static int run_serve(int argc, char **argv);

const cel_cli_cmd cel_cli_cmd_serve = {
    .name = "serve",
    .summary = "HTTP server: OpenAI-compatible generation, rewards, tokenization, metrics",
    .usage = "Usage: celine serve [--model PATH] [--port N] [options]\n\n"
             "Serves POST /v1/chat/completions and /v1/completions (streaming with Server-Sent Events),\n"
             "POST /tokenize and /detokenize, GET /v1/models (these need --model), POST /v1/reward (items as\n"
             "in `celine reward`, with advantages), POST /get_reward (OpenRLHF), GET /health and GET /metrics\n"
             "(Prometheus). Binds 127.0.0.1 unless --host says otherwise; prints\n"
             "`celine: listening on http://HOST:PORT` once it accepts connections. SIGINT/SIGTERM stop\n"
             "accepting, let in-flight requests finish (up to --shutdown-grace-ms, then cancel), exit 0.",
    .run = run_serve,
};

static int run_serve(int argc, char **argv)
{
    cel_server_config cfg;
    cel_server_config_default(&cfg);
    const char *host = "127.0.0.1", *api_key = NULL, *data_dir = NULL, *model = NULL, *tokenizer = NULL;
    const char *chat_template = NULL, *model_name = NULL, *backend = "cpu", *format = NULL, *log_level = "info";
    const char *allow_backends = NULL;
    int64_t port = 8080, threads = 0, engine_threads = 0, n_ctx = 0, max_seqs = 0, max_n = cfg.max_n, engine_queue = 0;
    int64_t max_header = (int64_t)cfg.max_header_bytes, max_headers = cfg.max_headers;
    int64_t max_body = (int64_t)cfg.max_body_bytes, header_to = cfg.header_timeout_ms, body_to = cfg.body_timeout_ms;
    int64_t idle_to = cfg.idle_timeout_ms, max_conn = cfg.max_connections, max_pipe = cfg.max_pipeline;
    int64_t max_queue = cfg.max_queue, max_write = (int64_t)cfg.max_write_bytes, grace = cfg.shutdown_grace_ms;
    const cel_cli_opt opts[] = {
        {"host", CEL_OPT_STR, &host, "IP", "address to bind (default 127.0.0.1; 0.0.0.0 exposes the server)"},
        {"port", CEL_OPT_INT, &port, "N", "port (default 8080; 0 picks a free one)"},
        {"api-key", CEL_OPT_STR, &api_key, "KEY",
         "require `Authorization: Bearer KEY` on every route but /health (default: $CELINE_API_KEY)"},
        {"threads", CEL_OPT_INT, &threads, "N", "grading / request-preparation workers (default: CPU count)"},
        {"data-dir", CEL_OPT_STR, &data_dir, "DIR", "folder requests may name files in (e.g. reward 'file')"},
        {"allow-backends", CEL_OPT_STR, &allow_backends, "URL,..",
         "URL prefixes generation requests and jobs may name in \"backend\" (default: none, only the local model)"},
        {"model", CEL_OPT_STR, &model, "PATH", "model to serve: a .gguf file or a Hugging Face folder"},
        {"tokenizer", CEL_OPT_STR, &tokenizer, "PATH", "tokenizer.json overriding the model's"},
        {"chat-template", CEL_OPT_STR, &chat_template, "NAME",
         "chatml | llama3 | llama2 | mistral | raw (default: detected from the model)"},
        {"model-name", CEL_OPT_STR, &model_name, "NAME", "model id shown in /v1/models and answers"},
        {"backend", CEL_OPT_STR, &backend, "cpu|cuda", "engine backend (default cpu)"},
        {"engine-threads", CEL_OPT_INT, &engine_threads, "N", "CPU threads for the engine (default: all cores)"},
        {"ctx", CEL_OPT_INT, &n_ctx, "N", "context length per sequence (default: the model's, at most 8192)"},
        {"max-seqs", CEL_OPT_INT, &max_seqs, "N", "sequences the engine runs at once (default 256)"},
        {"engine-queue", CEL_OPT_INT, &engine_queue, "N",
         "generation requests waiting for the engine; over: 429 (default 4096)"},
        {"max-n", CEL_OPT_INT, &max_n, "N", "largest 'n' a request may ask for (default 64)"},
        {"format", CEL_OPT_STR, &format, "F",
         "required answer format for rewards: none | boxed | answer | think | a comma list (default none)"},
        {"max-header-bytes", CEL_OPT_INT, &max_header, "N", "request line + headers cap; over: 431 (default 16384)"},
        {"max-headers", CEL_OPT_INT, &max_headers, "N", "header lines cap; over: 431 (default 100)"},
        {"max-body-bytes", CEL_OPT_INT, &max_body, "N", "request body cap; over: 413 (default 64 MiB)"},
        {"header-timeout-ms", CEL_OPT_INT, &header_to, "MS", "time to send a request's headers; over: 408 (10000)"},
        {"body-timeout-ms", CEL_OPT_INT, &body_to, "MS", "time to send a request's body; over: 408 (60000)"},
        {"idle-timeout-ms", CEL_OPT_INT, &idle_to, "MS", "idle keep-alive connections close after (30000)"},
        {"max-connections", CEL_OPT_INT, &max_conn, "N", "open connections cap; over: 503 (default 1024)"},
        {"max-pipeline", CEL_OPT_INT, &max_pipe, "N", "requests queued per connection before reading pauses (32)"},
        {"max-queue", CEL_OPT_INT, &max_queue, "N", "worker jobs queued or running; over: 429 (default 1024)"},
        {"max-write-bytes", CEL_OPT_INT, &max_write, "N",
         "unsent bytes per connection; a slower streaming client is dropped (default 8 MiB)"},
        {"shutdown-grace-ms", CEL_OPT_INT, &grace, "MS", "on SIGINT/SIGTERM, time before in-flight work is "
                                                         "cancelled (default 10000)"},
        {"log-level", CEL_OPT_STR, &log_level, "L", "debug | info | warn | error (default info)"},
    };
    int rc = cel_cli_parse(&cel_cli_cmd_serve, argc, argv, opts, sizeof opts / sizeof opts[0], NULL, 0, NULL);
    if (rc) return cel_cli_exit(rc);
    if (check_range("port", port, 0, 65535) || check_range("threads", threads, 0, 256) ||
        check_range("engine-threads", engine_threads, 0, 1024) || check_range("ctx", n_ctx, 0, 1 << 22) ||
        check_range("max-seqs", max_seqs, 0, 1 << 16) || check_range("engine-queue", engine_queue, 0, 1 << 24) || check_range("max-n", max_n, 1, 1024) ||
        check_range("max-header-bytes", max_header, 256, 1 << 24) || check_range("max-headers", max_headers, 1, 10000) ||
        check_range("max-body-bytes", max_body, 1, ((int64_t)1 << 32) - 1) ||
        check_range("header-timeout-ms", header_to, 1, 86400000) ||
        check_range("body-timeout-ms", body_to, 1, 86400000) || check_range("idle-timeout-ms", idle_to, 1, 86400000) ||
        check_range("max-connections", max_conn, 1, 1 << 20) || check_range("max-pipeline", max_pipe, 1, 4096) ||
        check_range("max-queue", max_queue, 1, 1 << 24) || check_range("max-write-bytes", max_write, 1024, (int64_t)1 << 40) ||
        check_range("shutdown-grace-ms", grace, 1, 86400000))
        return 2;
    cel_backend_kind bk;
    if (!cel_cli_backend_kind(backend, &bk))
        return cel_cli_usage("serve", "--backend must be cpu or cuda, not '%s'", backend);
    cfg.backend = (int)bk;
    cel_log_level lvl;
    if (strcmp(log_level, "debug") == 0)
        lvl = CEL_LOG_DEBUG;
    else if (strcmp(log_level, "info") == 0)
        lvl = CEL_LOG_INFO;
    else if (strcmp(log_level, "warn") == 0)
        lvl = CEL_LOG_WARN;
    else if (strcmp(log_level, "error") == 0)
        lvl = CEL_LOG_ERROR;
    else
        return cel_cli_usage("serve", "--log-level must be debug, info, warn or error");
    if (chat_template && strcmp(chat_template, "auto") != 0 &&
        cel_chat_kind_from_name(chat_template) == CEL_CHAT_AUTO)
        return cel_cli_usage("serve", "--chat-template '%s' is unknown (chatml, llama3, llama2, mistral, raw, auto)",
                             chat_template);
    if (chat_template && strcmp(chat_template, "auto") == 0) chat_template = NULL;
    if (!api_key) api_key = getenv("CELINE_API_KEY");

    cfg.host = host;
    cfg.port = (int)port;
    cfg.n_threads = (int)threads;
    cfg.api_key = api_key && *api_key ? api_key : NULL;
    cfg.data_dir = data_dir;
    cfg.allow_backends = allow_backends;
    cfg.model_path = model;
    cfg.tokenizer_path = tokenizer;
    cfg.chat_template = chat_template;
    cfg.model_name = model_name;
    cfg.engine_threads = (int32_t)engine_threads;
    cfg.n_ctx = (int32_t)n_ctx;
    cfg.max_seqs = (int32_t)max_seqs;
    cfg.engine_queue = (int32_t)engine_queue;
    cfg.max_n = (uint32_t)max_n;
    cfg.reward_format = format;
    cfg.max_header_bytes = (size_t)max_header;
    cfg.max_headers = (uint32_t)max_headers;
    cfg.max_body_bytes = (size_t)max_body;
    cfg.header_timeout_ms = (uint32_t)header_to;
    cfg.body_timeout_ms = (uint32_t)body_to;
    cfg.idle_timeout_ms = (uint32_t)idle_to;
    cfg.max_connections = (uint32_t)max_conn;
    cfg.max_pipeline = (uint32_t)max_pipe;
    cfg.max_queue = (uint32_t)max_queue;
    cfg.max_write_bytes = (size_t)max_write;
    cfg.shutdown_grace_ms = (uint32_t)grace;
    cfg.install_signals = true;
    cfg.log.fn = cel_cli_stderr_log;
    cfg.log.min_level = lvl;

    /* a client that vanishes mid-write must cost an error code, not the process */
    signal(SIGPIPE, SIG_IGN);
    /* room for --max-connections sockets plus files and the loop's own fds, so
     * the cap answers 503 before accept() runs out of descriptors */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = (rlim_t)cfg.max_connections + 256;
        if (rl.rlim_cur < want) {
            rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }

    cel_error err;
    cel_error_clear(&err);
    cel_server *s = NULL;
    if (cel_server_create(&cfg, &s, &err) != CEL_OK) return cel_cli_fail("serve", "%s", err.msg);
    const char *tmpl = getenv("CELINE_TEMPLATES");
#ifdef CELINE_SOURCE_DIR
    if (!tmpl || !*tmpl) tmpl = CELINE_SOURCE_DIR "/templates";
#endif
    cel_gen_routes *gen_routes = NULL;
    if (cel_gen_routes_register(s, tmpl && *tmpl ? tmpl : NULL, &gen_routes, &err) != CEL_OK) {
        cel_server_free(s);
        return cel_cli_fail("serve", "%s", err.msg);
    }
    printf("celine: listening on %s\n", cel_server_url(s));
    fflush(stdout);
    if (!cfg.api_key && strcmp(host, "127.0.0.1") != 0 && strcmp(host, "::1") != 0 && strcmp(host, "localhost") != 0)
        fprintf(stderr, "celine serve [warn] listening on %s without --api-key: anyone who reaches it can use it\n",
                host);
    cel_status st = cel_server_run(s, &err);
    cel_gen_routes_stop(gen_routes); /* jobs stop (keeping what is done) before the engine goes */
    cel_server_free(s);
    cel_gen_routes_free(gen_routes);
    /* closing the server gave SIGINT/SIGTERM back their default action; a
     * repeated signal now (Ctrl-C twice) must not turn a clean stop into a kill */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    if (st != CEL_OK) return cel_cli_fail("serve", "%s", err.msg);
    fprintf(stderr, "celine serve: stopped\n");
    return 0;
}
