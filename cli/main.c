/* celine's entry point: dispatches to the subcommands CMake found in cli/cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_commands.h"

static void usage(FILE *f)
{
    fprintf(f,
            "celine %s - synthetic pretraining data and verifiable RL rewards\n\n"
            "Usage: celine <command> [options]\n\nCommands:\n",
            CEL_VERSION_STRING);
    for (size_t i = 0; cel_cli_commands[i]; i++)
        fprintf(f, "  %-12s %s\n", cel_cli_commands[i]->name, cel_cli_commands[i]->summary);
    fprintf(f, "  %-12s %s\n", "help", "show this list, or `celine help <command>`");
    fprintf(f, "\nRun `celine <command> --help` for a command's options. `celine --version` prints the version.\n");
}

static const cel_cli_cmd *find(const char *name)
{
    for (size_t i = 0; cel_cli_commands[i]; i++)
        if (strcmp(cel_cli_commands[i]->name, name) == 0) return cel_cli_commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (strcmp(c, "--version") == 0 || strcmp(c, "-V") == 0 || strcmp(c, "version") == 0) {
        printf("celine %s\n", CEL_VERSION_STRING);
        return 0;
    }
    if (strcmp(c, "--help") == 0 || strcmp(c, "-h") == 0 || strcmp(c, "help") == 0) {
        if (strcmp(c, "help") == 0 && argc > 2) {
            const cel_cli_cmd *cmd = find(argv[2]);
            if (!cmd) {
                fprintf(stderr, "celine: unknown command '%s'\n", argv[2]);
                return 2;
            }
            char *hargv[] = {argv[2], "--help", NULL};
            return cmd->run(2, hargv);
        }
        usage(stdout);
        return 0;
    }
    const cel_cli_cmd *cmd = find(c);
    if (!cmd) {
        fprintf(stderr, "celine: unknown command '%s'\n\n", c);
        usage(stderr);
        return 2;
    }
    return cmd->run(argc - 1, argv + 1);
}
