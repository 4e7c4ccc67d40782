/* The option parser shared by every subcommand. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void print_help(const cel_cli_cmd *cmd, const cel_cli_opt *opts, size_t n)
{
    printf("%s\n", cmd->usage);
    if (n) printf("\nOptions:\n");
    for (size_t i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
                 opts[i].metavar ? opts[i].metavar : "");
        printf("  %-28s %s\n", left, opts[i].help);
    }
    printf("  %-28s %s\n", "-h, --help", "show this help");
}

/* The one place that words a subcommand's failure on stderr. */
static void vfail(const char *cmd, const char *fmt, va_list ap)
{
    fprintf(stderr, "celine %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cel_cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(cmd, fmt, ap);
    va_end(ap);
    return 1;
}

int cel_cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(cmd, fmt, ap);
    va_end(ap);
    return 2;
}

int cel_cli_exit(int parse_rc) { return parse_rc == CEL_CLI_HELP ? 0 : 2; }

void cel_cli_stderr_log(void *ud, cel_log_level level, const char *msg)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    (void)ud;
    fprintf(stderr, "[%s] %s\n", names[level], msg);
}

static int set_value(const cel_cli_cmd *cmd, const cel_cli_opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case CEL_OPT_STR: *(const char **)o->dest = v; return 0;
    case CEL_OPT_INT: {
        long long x = strtoll(v, &end, 10);
        if (errno || !*v || *end) return cel_cli_fail(cmd->name, "--%s expects an integer, got '%s'", o->name, v);
        *(int64_t *)o->dest = x;
        return 0;
    }
    case CEL_OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || !*v || *end) return cel_cli_fail(cmd->name, "--%s expects a number, got '%s'", o->name, v);
        *(double *)o->dest = x;
        return 0;
    }
    case CEL_OPT_LIST: {
        cel_cli_list *l = o->dest;
        if (l->n >= sizeof l->items / sizeof l->items[0])
            return cel_cli_fail(cmd->name, "--%s given too many times", o->name);
        l->items[l->n++] = v;
        return 0;
    }
    case CEL_OPT_FLAG: break;
    }
    return cel_cli_fail(cmd->name, "--%s takes no value", o->name);
}

int cel_cli_parse(const cel_cli_cmd *cmd, int argc, char **argv, const cel_cli_opt *opts, size_t n_opts,
                  const char **positional, size_t max_pos, size_t *n_pos)
{
    size_t np = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (np >= max_pos) return cel_cli_fail(cmd->name, "unexpected argument '%s' (see --help)", a);
            positional[np++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_help(cmd, opts, n_opts);
            return CEL_CLI_HELP;
        }
        if (a[1] != '-') return cel_cli_fail(cmd->name, "unknown option '%s' (see --help)", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const cel_cli_opt *o = NULL;
        for (size_t k = 0; k < n_opts; k++)
            if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0) o = &opts[k];
        if (!o) return cel_cli_fail(cmd->name, "unknown option '--%.*s' (see --help)", (int)nlen, name);
        if (o->kind == CEL_OPT_FLAG) {
            if (eq) return cel_cli_fail(cmd->name, "--%s takes no value", o->name);
            *(bool *)o->dest = true;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) return cel_cli_fail(cmd->name, "--%s needs a value", o->name);
            v = argv[++i];
        }
        if (set_value(cmd, o, v)) return CEL_CLI_ERROR;
    }
    if (n_pos) *n_pos = np;
    return CEL_CLI_OK;
}
