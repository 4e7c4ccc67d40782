/*
 * tok_impl.h - the tokenizer's internal representation, shared by the loaders
 * (tok_json.c: tokenizer.json and encoder.json + vocab.bpe; tok_gguf.c: GGUF
 * metadata) and the encoder/decoder (tokenizer.c). Not a public header.
 *
 * One representation serves both families:
 * - byte-level BPE (GPT-2, Llama 3, Qwen2): token strings are stored as the raw
 *   bytes they stand for (the GPT-2 byte-to-character mapping is undone at load),
 *   so BPE runs over bytes and decoding is concatenation;
 * - SentencePiece-style BPE (Llama 2, Mistral): token strings are stored as
 *   written ("▁the"); the text is normalized the same way (spaces become ▁) and
 *   BPE starts from UTF-8 characters, falling back to <0xNN> byte tokens.
 * Merges from either source (ranked merge lists, or SentencePiece scores) become
 * one table: pair (left id, right id) -> (rank, result id), lower rank first.
 */
#ifndef CEL_ENGINE_TOK_IMPL_H
#define CEL_ENGINE_TOK_IMPL_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>
#include <stdio.h>

#include "tokenizer.h"

/* Token attributes (a bit set; GGUF token_type values map onto them). */
enum {
    CEL__TOK_NORMAL = 1 << 0,
    CEL__TOK_CONTROL = 1 << 1, /* special: <s>, <|im_start|>; split only with PARSE_SPECIAL */
    CEL__TOK_USER = 1 << 2,    /* added, not special: always split out of the text */
    CEL__TOK_BYTE = 1 << 3,    /* <0xNN> */
    CEL__TOK_UNKNOWN = 1 << 4, /* <unk> */
    CEL__TOK_UNUSED = 1 << 5,
    CEL__TOK_LSTRIP = 1 << 6,  /* added token swallows whitespace on its left */
    CEL__TOK_RSTRIP = 1 << 7,  /* ... and on its right */
    CEL__TOK_SINGLE_WORD = 1 << 8,
    CEL__TOK_EOG = 1 << 9,     /* ends generation */
};

/* Longest piece run through BPE in one go. Longer pre-tokens (a 10 MB run of
 * one letter) are cut at character boundaries into pieces of this size, which
 * bounds memory and time; real text never has a pre-token this long, so ids
 * only differ from the reference on such adversarial input. */
#define CEL__TOK_MAX_PIECE (64 * 1024)
/* The same bound for a SentencePiece segment that cannot be cut into words
 * (a vocabulary with ▁ inside tokens): larger, since ordinary documents are
 * one segment there. */
#define CEL__TOK_MAX_SEGMENT (1024 * 1024)

/* How an SPM tokenizer adds the leading ▁. */
typedef enum cel__spm_prefix {
    CEL__SPM_PREFIX_NONE = 0,
    CEL__SPM_PREFIX_SEGMENT, /* every text segment between added tokens (HF Prepend normalizer, llama.cpp) */
    CEL__SPM_PREFIX_FIRST,   /* only the segment at the start of the text (HF Metaspace prepend_scheme=first) */
} cel__spm_prefix;

typedef struct cel__merge_slot {
    uint64_t key;   /* (left << 32) | right, + 1 so that 0 marks an empty slot */
    int32_t rank;
    int32_t result;
} cel__merge_slot;

struct cel_tokenizer {
    cel_tok_kind kind;
    int32_t n_vocab;
    /* token strings: id -> [off, off + len) in arena */
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *tok_off;
    uint32_t *tok_len;
    uint16_t *tok_attr;
    float *scores; /* NULL unless loaded from SentencePiece scores */

    /* model vocabulary (what BPE may produce): bytes -> id, open addressing */
    int32_t *vmap;
    size_t vmap_cap; /* power of two */
    /* merges: pair -> (rank, result) */
    cel__merge_slot *mmap;
    size_t mmap_cap, n_merges;
    int32_t byte_id[256]; /* token of each raw byte (byte-level: the byte itself; SPM: <0xNN>), -1 if none */

    /* added tokens, split out of the text before anything else; sorted by
     * first byte then descending length for leftmost-longest matching */
    int32_t *added;
    size_t n_added;
    uint32_t added_first[257]; /* added[added_first[b] .. added_first[b+1]) start with byte b */

    /* pipeline */
    pcre2_code *re;           /* pre-tokenizer split regex (byte-level), or NULL: whole segment */
    char pre_name[32];
    bool nfc;                 /* NFC-normalize segments */
    bool byte_level_prefix;   /* ByteLevel add_prefix_space: prepend ' ' when the text does not start with one */
    bool ignore_merges;       /* a pre-token that is a whole vocab token is emitted as is (Llama 3) */
    bool byte_fallback;       /* unknown characters become <0xNN> tokens */
    bool fuse_unk;
    cel__spm_prefix spm_prefix;
    bool spm_split_words;     /* no token has ▁ after a non-▁ char: words can be BPE'd apart */
    bool spm_split_all;       /* Metaspace split=true: every ▁ starts a piece */
    bool decode_strip_space;  /* SPM: decoding drops one leading space */
    int32_t unk;

    /* post-processing with ADD_SPECIAL */
    int32_t prefix_ids[4], suffix_ids[4];
    int n_prefix, n_suffix;
    int32_t bos, eos;
    char *chat_template;
};

/* ---- loading from memory (tok_json.c): a tokenizer.json text, no
 * tokenizer_config.json; label names the source in errors (fuzzing, tests) ---- */
cel_status cel__tok_load_json_mem(const char *data, size_t len, const char *label, cel_tokenizer **out, cel_error *err);

/* ---- building (tokenizer.c) ---- */
cel_status cel__tok_new(cel_tok_kind kind, int32_t n_vocab, cel_tokenizer **out, cel_error *err);
/* Sets token id's bytes and attributes; must be called once per id, ids < n_vocab. */
cel_status cel__tok_set(cel_tokenizer *t, int32_t id, const char *s, size_t len, uint16_t attr, cel_error *err);
/* After every token is set: builds the vocabulary map (normal + byte tokens),
 * the added-token index and the byte table. */
cel_status cel__tok_index(cel_tokenizer *t, cel_error *err);
/* Looks up bytes in the model vocabulary (-1 when absent). */
int32_t cel__tok_lookup(const cel_tokenizer *t, const char *s, size_t len);
/* Adds merge (left, right) with rank; result = the vocab token of their concatenation.
 * Returns CEL_ERR_NOT_FOUND when the concatenation is not a token. Duplicates keep the first rank. */
cel_status cel__tok_add_merge(cel_tokenizer *t, int32_t left, int32_t right, int32_t rank, cel_error *err);
cel_status cel__tok_merges_reserve(cel_tokenizer *t, size_t n, cel_error *err);
/* SentencePiece scores: derives the merge table from every token splittable
 * into two tokens, ranked by the merged token's score (higher first). */
cel_status cel__tok_merges_from_scores(cel_tokenizer *t, cel_error *err);
/* Compiles the pre-tokenizer regex (UTF + UCP, JIT when available). */
cel_status cel__tok_set_regex(cel_tokenizer *t, const char *pattern, cel_error *err);
/* Pre-tokenizer regexes by name ("gpt2", "llama3", "qwen2"), NULL if unknown. */
const char *cel__tok_regex_for(const char *pre_name);
/* Finishes: decides SPM word splitting, EOG flags. */
cel_status cel__tok_finish(cel_tokenizer *t, cel_error *err);

/* GPT-2 byte <-> character mapping used by byte-level vocabularies. Decodes a
 * byte-level token string into raw bytes (out must hold len bytes); returns the
 * byte count, or -1 when a character is outside the mapping. */
int cel__bytelevel_decode(const char *s, size_t len, char *out);

/* ---- unicode (tok_unicode.c) ---- */
/* UTF-8 itself: cel_utf8_seq_len / cel_utf8_decode / cel_utf8_encode (common.h);
 * where a byte starts no valid character, callers treat that one byte as the unit. */
/* NFC-normalizes [s, s+len) into out (appending). Invalid bytes pass through. */
cel_status cel__nfc_append(const char *s, size_t len, cel_buf *out);
/* True when the text is certainly already NFC (fast check; false = maybe not). */
bool cel__nfc_quick(const char *s, size_t len);

#endif
