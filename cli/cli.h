/*
 * cli.h - the contract between celine's main() and its subcommands, plus the
 * option parser they share. Each subcommand lives in cli/cmd_<name>.c and
 * defines `const cel_cli_cmd cel_cli_cmd_<name>`; CMake collects them.
 */
#ifndef CELINE_CLI_H
#define CELINE_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "celine/common.h"
#include "celine/engine.h"

typedef struct cel_cli_cmd {
    const char *name;
    const char *summary;  /* one line for `celine help` */
    const char *usage;    /* full text for `celine <cmd> --help`: usage line + description */
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name; returns the exit status */
} cel_cli_cmd;

typedef enum cel_opt_kind {
    CEL_OPT_FLAG,   /* bool, no argument */
    CEL_OPT_STR,    /* const char * */
    CEL_OPT_INT,    /* int64_t */
    CEL_OPT_DOUBLE, /* double */
    CEL_OPT_LIST,   /* appends to a cel_cli_list (repeatable option) */
} cel_opt_kind;

typedef struct cel_cli_list {
    const char *items[64];
    size_t n;
} cel_cli_list;

typedef struct cel_cli_opt {
    const char *name;    /* long name without dashes, e.g. "max-tokens" */
    cel_opt_kind kind;
    void *dest;          /* bool*, const char**, int64_t*, double*, cel_cli_list* */
    const char *metavar; /* "N", "PATH", ... (NULL for flags) */
    const char *help;
} cel_cli_opt;

/* Parses `--name value`, `--name=value` and flags. Positional arguments are
 * collected into positional[] (up to max_pos). `--help`/`-h` prints the
 * command's usage and the option table to stdout.
 * Returns 0 to go on, 1 after printing an error to stderr (exit 2), or 2 when help
 * was shown (exit 0). */
enum { CEL_CLI_OK = 0, CEL_CLI_ERROR = 1, CEL_CLI_HELP = 2 };
int cel_cli_parse(const cel_cli_cmd *cmd, int argc, char **argv, const cel_cli_opt *opts, size_t n_opts,
                  const char **positional, size_t max_pos, size_t *n_pos);

/* Maps a parse result to an exit status: use as
 * `int rc = cel_cli_parse(...); if (rc) return cel_cli_exit(rc);` */
int cel_cli_exit(int parse_rc);

/* Prints "celine <cmd>: <msg>" to stderr; returns 1 (the exit status for failures). */
int cel_cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The same for a usage error (a missing, conflicting or out-of-range option):
 * returns 2, the exit status the option parser gives such errors. */
int cel_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logger that writes "[level] msg" to stderr (for library log hooks). */
void cel_cli_stderr_log(void *ud, cel_log_level level, const char *msg);

/* --- opening a model and an engine (cli_model.c) --- */

/* "cpu" or "cuda" as the engine's backend kind; false for any other name
 * (the caller words the usage error). */
bool cel_cli_backend_kind(const char *name, cel_backend_kind *out);

/* The same for a --backend option: on an unknown name prints
 * "celine <cmd>: --backend must be cpu or cuda, got '<name>'" and returns 2
 * (the exit status of a usage error); 0 with *out set otherwise. */
int cel_cli_backend(const char *cmd, const char *name, cel_backend_kind *out);

/* Loads the model at path (a .gguf file or a Hugging Face folder) with the
 * loader's warnings on stderr; tokenizer (may be NULL) overrides the model's
 * tokenizer.json. With need_tokenizer a model without a tokenizer is refused.
 * Returns 0 with *out set (free with cel_model_free), or prints
 * "celine <cmd>: <why>" and returns 1 with *out NULL. */
int cel_cli_model_load(const char *cmd, const char *path, const char *tokenizer, bool need_tokenizer, cel_model **out);

/* The engine parameters a subcommand starts from: zeros (the engine's
 * defaults) but for the backend, the CPU threads (0: all cores) and warnings
 * on stderr. */
void cel_cli_engine_params(cel_engine_params *ep, cel_backend_kind backend, int64_t threads);

#endif
