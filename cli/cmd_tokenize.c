/* `celine tokenize`: text -> token ids (and back) with a model's tokenizer. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "celine/engine.h"
#include "cli.h"
/* engine-internal: the tokenizer straight from a .gguf without loading its weights */
#include "../engine/tokenizer.h"

static const cel_cli_cmd *self(void);

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Loads the tokenizer alone: a tokenizer.json / encoder.json, or a .gguf's
 * metadata (without mapping the model's weights). */
static cel_status load_tokenizer(const char *path, cel_tokenizer **out, cel_error *err)
{
    if (!ends_with(path, ".gguf")) return cel_tokenizer_load_json(path, out, err);
    cel_gguf *g = NULL;
    CEL_TRY(cel_gguf_open(path, &g, err));
    cel_status st = cel_tokenizer_from_gguf(g, out, err);
    if (st) cel_error_prefix(err, "%s", path);
    cel_gguf_close(g);
    return st;
}

/* Parses "1,2,3", "1 2 3" or "[1, 2, 3]". */
static int parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 16;
    *n = 0;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids) return -1;
    while (*s) {
        if (strchr(" ,[]\t\n", *s)) {
            s++;
            continue;
        }
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX) return -1;
        if (*n == cap) {
            int32_t *p = realloc(*ids, cap * 2 * sizeof *p);
            if (!p) return -1;
            *ids = p;
            cap *= 2;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    return 0;
}

static int run(int argc, char **argv)
{
    const char *model = NULL, *tokenizer = NULL, *text = NULL, *file = NULL, *decode = NULL;
    bool special = false, no_add = false, pieces = false;
    const cel_cli_opt opts[] = {
        {"model", CEL_OPT_STR, &model, "PATH", "model (.gguf or Hugging Face folder) whose tokenizer to use"},
        {"tokenizer", CEL_OPT_STR, &tokenizer, "PATH", "tokenizer.json, GPT-2 encoder.json (vocab.bpe beside), or a .gguf"},
        {"text", CEL_OPT_STR, &text, "STR", "text to tokenize"},
        {"file", CEL_OPT_STR, &file, "PATH", "read the text from a file ('-' = stdin)"},
        {"special", CEL_OPT_FLAG, &special, NULL, "turn special-token text like <|im_start|> into its token"},
        {"no-add-special", CEL_OPT_FLAG, &no_add, NULL, "do not add BOS/EOS as the tokenizer's post-processor would"},
        {"pieces", CEL_OPT_FLAG, &pieces, NULL, "also print each token's text"},
        {"decode", CEL_OPT_STR, &decode, "IDS", "decode ids (\"1,2,3\" or a JSON array) instead of encoding"},
    };
    int rc = cel_cli_parse(self(), argc, argv, opts, sizeof opts / sizeof opts[0], NULL, 0, NULL);
    if (rc) return cel_cli_exit(rc);
    const char *name = self()->name;
    if (!model == !tokenizer) /* usage errors exit 2, like the option parser's */
        return cel_cli_usage(name, "give exactly one of --model or --tokenizer (see --help)");
    if (!decode && !text == !file) {
        return cel_cli_usage(name, "give exactly one of --text, --file or --decode (see --help)");
    }

    cel_error err;
    cel_model *m = NULL;
    cel_tokenizer *own = NULL;
    const cel_tokenizer *t;
    if (model) {
        if ((rc = cel_cli_model_load(name, model, NULL, true, &m))) return rc;
        t = m->tok;
    } else {
        if (load_tokenizer(tokenizer, &own, &err)) return cel_cli_fail(name, "%s", err.msg);
        t = own;
    }

    int status = 0;
    char *data = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    json_t *outj = json_object();
    if (decode) {
        if (parse_ids(decode, &ids, &n)) {
            status = cel_cli_fail(name, "--decode expects token ids like \"1,2,3\", got '%s'", decode);
            goto done;
        }
        cel_buf b;
        cel_buf_init(&b);
        if (cel_detokenize(t, ids, n, !special, &b, &err)) {
            cel_buf_free(&b);
            status = cel_cli_fail(name, "%s", err.msg);
            goto done;
        }
        json_object_set_new(outj, "text", json_stringn(b.data ? b.data : "", b.len));
        cel_buf_free(&b);
    } else {
        if (file) {
            if (!strcmp(file, "-")) {
                cel_buf b;
                cel_buf_init(&b);
                char chunk[65536];
                size_t r;
                while ((r = fread(chunk, 1, sizeof chunk, stdin)) > 0) cel_buf_append(&b, chunk, r);
                len = b.len;
                data = b.data ? cel_buf_steal(&b) : strdup("");
            } else if (cel_read_file(file, 0, &data, &len, &err)) {
                status = cel_cli_fail(name, "%s", err.msg);
                goto done;
            }
        } else {
            data = strdup(text);
            len = strlen(text);
        }
        int flags = (special ? CEL_TOKENIZE_PARSE_SPECIAL : 0) | (no_add ? 0 : CEL_TOKENIZE_ADD_SPECIAL);
        if (cel_tokenize(t, data, len, flags, &ids, &n, &err)) {
            status = cel_cli_fail(name, "%s", err.msg);
            goto done;
        }
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
        json_object_set_new(outj, "ids", arr);
        json_object_set_new(outj, "count", json_integer((json_int_t)n));
    }
    if (pieces) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            cel_buf b;
            cel_buf_init(&b);
            cel_detokenize(t, &ids[i], 1, false, &b, &err);
            json_array_append_new(arr, json_stringn(b.data ? b.data : "", b.len));
            cel_buf_free(&b);
        }
        json_object_set_new(outj, "pieces", arr);
    }
    char *s = json_dumps(outj, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s) {
        puts(s);
        free(s);
    }
done:
    json_decref(outj);
    free(ids);
    free(data);
    cel_tokenizer_free(own);
    cel_model_free(m);
    return status;
}

const cel_cli_cmd cel_cli_cmd_tokenize = {
    "tokenize",
    "text -> token ids (and back) with a model's tokenizer, as JSON",
    "Usage: celine tokenize (--model PATH | --tokenizer PATH) (--text STR | --file PATH | --decode IDS) [options]\n\n"
    "Prints {\"ids\": [...], \"count\": N} (or {\"text\": ...} with --decode). Token ids equal the Hugging Face\n"
    "tokenizers library's for byte-level BPE (GPT-2, Llama 3, Qwen2/3) and SentencePiece-style BPE (Llama 2,\n"
    "Mistral). Special-token text is only turned into special tokens with --special; BOS/EOS are added as\n"
    "the tokenizer's post-processor (or GGUF add_bos_token) says unless --no-add-special.",
    run,
};

static const cel_cli_cmd *self(void) { return &cel_cli_cmd_tokenize; }
