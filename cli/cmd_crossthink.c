/* cmd_crossthink.c - `celine crossthink`: NEMOTRON-CROSSTHINK QA synthesis
 * for RL. The driver is shared with `celine mind` (cel__gen_cli_run in
 * cmd_mind.c). */
#include "cli.h"

int cel__gen_cli_run(int kind, const cel_cli_cmd *cmd, int argc, char **argv);

static int run_crossthink(int argc, char **argv);

const cel_cli_cmd cel_cli_cmd_crossthink = {
    "crossthink",
    "CROSSTHINK: synthesize verifiable MCQ / open QA items for RL from documents",
    "Usage: celine crossthink (--model PATH | --remote URL...) [--text TEXT | --input PATH] [options]\n\n"
    "Chunks each document and asks the generator for multiple-choice (options + gold letter) and\n"
    "open-ended (short answer) questions (templates/crossthink/qa_*.tmpl). Keeps an MCQ item only\n"
    "when its gold letter is among its options, an open item only when its answer has at most\n"
    "--max-words words; drops repeated questions; optionally turns MCQ items into open ones\n"
    "(--mcq-to-open) and drops items the model already solves --difficulty-k out of k times\n"
    "(answers graded by celine's verifiers). Records (JSON Lines) are ready for `celine reward`\n"
    "and RL trainers: id, source_id, chunk_index, task, prompt (templates/rl/*.tmpl), question,\n"
    "reference, choices (MCQ), model, template, rl_template, sampling, seed[, solve_rate].\n"
    "Exit status as for `celine mind`.",
    run_crossthink,
};

static int run_crossthink(int argc, char **argv) { return cel__gen_cli_run(2, &cel_cli_cmd_crossthink, argc, argv); }
