/* `celine info MODEL`: what a model file or folder holds (architecture,
 * parameters, dtypes, context, tokenizer, chat template), optionally as JSON
 * or with the full tensor list. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "celine/engine.h"
#include "cli.h"

static const char *const USAGE =
    "Usage: celine info MODEL [options]\n\n"
    "Loads MODEL (a .gguf file or a Hugging Face folder with config.json, *.safetensors\n"
    "and tokenizer.json) and prints its architecture, parameter count, tensor dtypes,\n"
    "context length, tokenizer (kind, vocabulary, pre-tokenizer, BOS/EOS) and chat\n"
    "template. Weights are memory-mapped, not read, so this is quick on large files.\n"
    "Exit status 1 with a message naming the file and key or tensor when the model\n"
    "cannot be loaded.";

static int run(int argc, char **argv);
const cel_cli_cmd cel_cli_cmd_info = {"info", "show a model's architecture, size, dtypes and tokenizer", USAGE, run};

static json_t *to_json(const cel_model *m)
{
    const cel_hparams *hp = &m->hp;
    json_t *o = json_object(), *dt = json_object(), *tl = json_array();
    json_object_set_new(o, "path", json_string(m->path));
    json_object_set_new(o, "name", json_string(m->name ? m->name : ""));
    json_object_set_new(o, "format", json_string(m->format));
    json_object_set_new(o, "architecture", json_string(cel_arch_name(hp->arch)));
    json_object_set_new(o, "parameters", json_integer(cel_model_n_params(m)));
    for (size_t i = 0; i < m->n_tensors; i++) {
        const cel_tensor *t = &m->tensors[i];
        const char *n = cel_dtype_name(t->dtype);
        json_t *c = json_object_get(dt, n);
        json_object_set_new(dt, n, json_integer(c ? json_integer_value(c) + 1 : 1));
        json_t *sh = json_array();
        for (int d = 0; d < t->n_dims; d++) json_array_append_new(sh, json_integer(t->ne[d]));
        json_array_append_new(tl, json_pack("{s:s,s:s,s:o,s:I}", "name", t->name, "dtype", n, "ne", sh, "bytes",
                                            (json_int_t)t->nbytes));
    }
    json_object_set_new(o, "dtypes", dt);
    json_object_set_new(o, "context_length", json_integer(hp->n_ctx_train));
    json_object_set_new(o, "n_vocab", json_integer(hp->n_vocab));
    json_object_set_new(o, "n_embd", json_integer(hp->n_embd));
    json_object_set_new(o, "n_layer", json_integer(hp->n_layer));
    json_object_set_new(o, "n_head", json_integer(hp->n_head));
    json_object_set_new(o, "n_head_kv", json_integer(hp->n_head_kv));
    json_object_set_new(o, "head_dim", json_integer(hp->head_dim));
    json_object_set_new(o, "n_ff", json_integer(hp->n_ff));
    json_object_set_new(o, "rope_style", json_string(hp->rope_style == CEL_ROPE_NEOX ? "neox" : "norm"));
    json_object_set_new(o, "rope_theta", json_real(hp->rope_theta));
    static const char *const scal[] = {"none", "linear", "llama3"};
    json_object_set_new(o, "rope_scaling", json_string(scal[hp->rope_scaling]));
    json_object_set_new(o, "tied_embeddings", json_boolean(hp->tied_embeddings));
    if (m->tok) {
        const cel_tokenizer *t = m->tok;
        json_object_set_new(
            o, "tokenizer",
            json_pack("{s:s,s:i,s:s,s:i,s:i}", "kind", cel_tokenizer_kind(t) == CEL_TOK_SPM_BPE ? "spm-bpe" : "bpe-byte",
                      "vocab", cel_tokenizer_n_vocab(t), "pre",
                      cel_tokenizer_pre_name(t) ? cel_tokenizer_pre_name(t) : "default", "bos",
                      cel_tokenizer_bos(t), "eos", cel_tokenizer_eos(t)));
    } else {
        json_object_set_new(o, "tokenizer", json_null());
    }
    json_object_set_new(o, "chat_template_family",
                        m->chat_template ? json_string(cel_chat_kind_name(cel_chat_detect(m->chat_template, m->tok)))
                                         : json_null());
    json_object_set_new(o, "tensors", tl);
    return o;
}

static int run(int argc, char **argv)
{
    bool as_json = false, tensors = false;
    const char *tok = NULL;
    cel_cli_opt opts[] = {
        {"json", CEL_OPT_FLAG, &as_json, NULL, "print one JSON object (with every tensor) instead of text"},
        {"tensors", CEL_OPT_FLAG, &tensors, NULL, "also list every tensor: name, dtype, shape"},
        {"tokenizer", CEL_OPT_STR, &tok, "PATH", "use this tokenizer.json instead of the model's"},
    };
    const char *pos[2];
    size_t n_pos = 0;
    int rc = cel_cli_parse(&cel_cli_cmd_info, argc, argv, opts, sizeof opts / sizeof opts[0], pos, 2, &n_pos);
    if (rc) return cel_cli_exit(rc);
    if (n_pos != 1) return cel_cli_fail("info", "expected one MODEL argument (see --help)");

    cel_model *m = NULL;
    if ((rc = cel_cli_model_load("info", pos[0], tok, false, &m))) return rc;

    int status = 0;
    if (as_json) {
        json_t *o = to_json(m);
        char *s = o ? json_dumps(o, JSON_INDENT(1)) : NULL;
        if (s) printf("%s\n", s);
        else status = cel_cli_fail("info", "out of memory");
        free(s);
        json_decref(o);
    } else {
        cel_buf b;
        cel_buf_init(&b);
        if (cel_model_describe(m, &b) != CEL_OK) {
            status = cel_cli_fail("info", "out of memory");
        } else {
            fputs(b.data, stdout);
            if (tensors)
                for (size_t i = 0; i < m->n_tensors; i++) {
                    const cel_tensor *t = &m->tensors[i];
                    printf("  %-48s %-5s [", t->name, cel_dtype_name(t->dtype));
                    for (int d = 0; d < t->n_dims; d++) printf(d ? ", %lld" : "%lld", (long long)t->ne[d]);
                    printf("]\n");
                }
        }
        cel_buf_free(&b);
    }
    cel_model_free(m);
    return status;
}
