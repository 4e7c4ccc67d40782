/* cmd_rephrase.c - `celine rephrase`: Nemotron-CC synthetic rephrasing. The
 * driver is shared with `celine mind` (cel__gen_cli_run in cmd_mind.c). */
#include "cli.h"

int cel__gen_cli_run(int kind, const cel_cli_cmd *cmd, int argc, char **argv);

static int run_rephrase(int argc, char **argv);

const cel_cli_cmd cel_cli_cmd_rephrase = {
    "rephrase",
    "Nemotron-CC: rephrase web documents with the five prompts (quality-routed)",
    "Usage: celine rephrase (--model PATH | --remote URL...) [--text TEXT | --input PATH] [options]\n\n"
    "Runs the Nemotron-CC prompts (templates/rephrase/*.tmpl: wikipedia for low-quality documents;\n"
    "diverse_qa, distill, extract_knowledge, knowledge_list for high-quality ones) over each\n"
    "document. A document with a quality field (bucket 0-19, or low/medium/high) gets only the\n"
    "prompts of its bucket; others get every prompt in --prompts. Documents under 30 tokens are\n"
    "dropped; each prompt splits its input on newlines and re-joins lines up to its own input\n"
    "budget; outputs are kept within each prompt's token bounds and with its lead-in. Diverse-QA\n"
    "pairs are shuffled and about one per 150 source tokens is appended to the source; knowledge\n"
    "lists lose their bullets. Sampling defaults: temperature 0.5, top_p 0.9.\n"
    "Records (JSON Lines): id, source_id, chunk_index, prompt, quality, text, tokens, model,\n"
    "template, sampling, seed. Exit status as for `celine mind`.",
    run_rephrase,
};

static int run_rephrase(int argc, char **argv) { return cel__gen_cli_run(1, &cel_cli_cmd_rephrase, argc, argv); }
