/* Opening a model and an engine from the options the model-running
 * subcommands share (--model, --backend, --threads): one place for the
 * backend names, the load options and the engine's starting parameters, so
 * that `bench`, `generate`, `info` and `tokenize` cannot drift apart. */
#include <string.h>

#include "cli.h"

bool cel_cli_backend_kind(const char *name, cel_backend_kind *out)
{
    if (!strcmp(name, "cpu")) *out = CEL_BACKEND_CPU;
    else if (!strcmp(name, "cuda")) *out = CEL_BACKEND_CUDA;
    else return false;
    return true;
}

int cel_cli_backend(const char *cmd, const char *name, cel_backend_kind *out)
{
    return cel_cli_backend_kind(name, out) ? 0 : cel_cli_usage(cmd, "--backend must be cpu or cuda, got '%s'", name);
}

int cel_cli_model_load(const char *cmd, const char *path, const char *tokenizer, bool need_tokenizer, cel_model **out)
{
    cel_error err;
    cel_error_clear(&err);
    cel_model_load_opts mo = {.tokenizer_path = tokenizer, .log = {cel_cli_stderr_log, NULL, CEL_LOG_WARN}};
    *out = NULL;
    if (cel_model_load(path, &mo, out, &err) != CEL_OK) return cel_cli_fail(cmd, "%s", err.msg);
    if (need_tokenizer && !(*out)->tok) {
        cel_model_free(*out);
        *out = NULL;
        return cel_cli_fail(cmd, "%s has no tokenizer", path);
    }
    return 0;
}

void cel_cli_engine_params(cel_engine_params *ep, cel_backend_kind backend, int64_t threads)
{
    memset(ep, 0, sizeof *ep);
    ep->backend = backend;
    ep->n_threads = (int32_t)threads;
    ep->log = (cel_logger){cel_cli_stderr_log, NULL, CEL_LOG_WARN};
}
