/* tokenizer.h - engine-internal tokenizer entry points (the public API is in celine/engine.h). */
#ifndef CEL_ENGINE_TOKENIZER_H
#define CEL_ENGINE_TOKENIZER_H

#include "celine/engine.h"
#include "gguf.h"

/* Builds the tokenizer from a GGUF file's tokenizer.ggml.* metadata. */
cel_status cel_tokenizer_from_gguf(const cel_gguf *g, cel_tokenizer **out, cel_error *err);
/* The chat template recorded with a tokenizer.json (tokenizer_config.json's
 * chat_template), or NULL. */
const char *cel_tokenizer_chat_template(const cel_tokenizer *t);

#endif
