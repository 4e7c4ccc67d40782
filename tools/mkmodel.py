#!/usr/bin/env python3
"""mkmodel.py - writes deterministic random-weight language models in the real
file layouts celine loads, for tests and benchmarks (python3 + numpy only).

  GGUF  (--format gguf): llama.cpp's layout: tensor names blk.N.attn_q.weight ...,
        q/k rows of llama/mistral permuted the way llama.cpp's converter does
        (so those files use NORM RoPE), 1-D tensors in F32, 2-D tensors in the
        chosen type: F32 F16 BF16 Q8_0 Q4_0 Q5_0 Q5_1 Q4_K Q5_K Q6_K, or the
        Q4_K_M / Q5_K_M mixes (Q4_K / Q5_K, with Q6_K for output and for
        attn_v / ffn_down of some layers); as in llama.cpp, tensors whose rows
        are not whole 256-element super-blocks fall back Q4_K -> Q5_0,
        Q5_K -> Q5_1, Q6_K -> Q8_0 (so a Qwen2.5-0.5B shape, hidden 896,
        carries Q5_0 and Q8_0 tensors in its Q4_K_M file), with the
        tokenizer.ggml.* metadata written from a tokenizer.json, and, for
        llama3 RoPE scaling, the rope_freqs.weight factor tensor.
  HF    (--format hf): a Hugging Face folder: config.json, safetensors (sharded
        with model.safetensors.index.json when --shards > 1), tokenizer.json,
        tokenizer_config.json; F32 / F16 / BF16.

Weights are drawn per tensor from a seed derived from (--seed, Hugging Face
tensor name), so the GGUF and the HF folder made with the same shape and seed
hold the same model: their forward passes agree (up to the storage type).

The tokenizer is either a tiny byte-level BPE (llama3-style for llama, ChatML
specials for qwen2/qwen3) or a tiny SentencePiece-style BPE with byte fallback
(mistral), trained here on a built-in text, or a real tokenizer.json
(--tokenizer) truncated to --vocab. Embedding rows = --vocab; a tokenizer with
fewer tokens is padded in the GGUF token list as llama.cpp does ([PAD<id>]).

The ggml block layouts (little-endian):
  Q8_0: fp16 d, int8 q[32]                        x = d * q
  Q4_0: fp16 d, u8 qs[16] (q[j] low, q[j+16] high) x = d * (q - 8)
  Q5_0: fp16 d, u8 qh[4], u8 qs[16]; q = nibble (as Q4_0) | bit j of the
        32-bit qh << 4                            x = d * (q - 16)
  Q5_1: fp16 d, fp16 m, u8 qh[4], u8 qs[16]       x = d * q + m
  Q4_K: fp16 d, fp16 dmin, u8 scales[12], u8 qs[128]; 8 sub-blocks of 32,
        6-bit scale sc and min m each; x = d*sc*q - dmin*m, q in 0..15
  Q5_K: Q4_K's d, dmin, scales, then u8 qh[32], u8 qs[128] (as Q4_K's); bit j
        of qh[l] is the 5th bit of element l of sub-block j; q in 0..31
  Q6_K: u8 ql[128], u8 qh[64], i8 scales[16], fp16 d; 16 sub-blocks of 16;
        x = d * scale * (q - 32), q in 0..63
"""
import argparse
import hashlib
import json
import os
import re
import struct
import sys

import numpy as np

# ------------------------------------------------------------------ presets

PRESETS = {
    # the benchmark shape: Qwen2.5-0.5B
    "qwen2.5-0.5b": dict(arch="qwen2", hidden=896, layers=24, heads=14, kv_heads=2, ffn=4864, vocab=151936,
                         ctx=32768, theta=1000000.0, eps=1e-6, tied=True),
    "llama3.2-1b": dict(arch="llama", hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=128256,
                        ctx=131072, theta=500000.0, eps=1e-5, tied=True, rope_scaling="llama3"),
    "qwen3-0.6b": dict(arch="qwen3", hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=3072,
                       vocab=151936, ctx=40960, theta=1000000.0, eps=1e-6, tied=True),
}

GGML = dict(F32=0, F16=1, Q4_0=2, Q5_0=6, Q5_1=7, Q8_0=8, Q4_K=12, Q5_K=13, Q6_K=14, BF16=30)
BLOCK = dict(F32=(1, 4), F16=(1, 2), BF16=(1, 2), Q8_0=(32, 34), Q4_0=(32, 18), Q5_0=(32, 22), Q5_1=(32, 24),
             Q4_K=(256, 144), Q5_K=(256, 176), Q6_K=(256, 210))
# llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*)
FILE_TYPE = dict(f32=0, f16=1, q4_0=2, q8_0=7, q5_0=8, q5_1=9, q4_k=15, q4_k_m=15, q5_k=17, q5_k_m=17, q6_k=18,
                 bf16=32)
# llama.cpp's types for rows that are not whole 256-element super-blocks
FALLBACK = dict(Q4_K="Q5_0", Q5_K="Q5_1", Q6_K="Q8_0")

# ---------------------------------------------------------- number formats


def to_bf16_bits(x):
    """float32 -> bf16 bit patterns, round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


# --------------------------------------------------------------- quantizers
# Each takes a float32 array whose size is a multiple of the block and returns
# the packed bytes (numpy uint8), vectorised over blocks.


def quant_q8_0(x):
    b = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(b).max(axis=1)
    d = amax / 127.0
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0.0)
    q = np.clip(np.round(b * inv[:, None]), -127, 127).astype(np.int8)
    out = np.empty((b.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = f16(d).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.reshape(-1)


def quant_q4_0(x):
    b = x.reshape(-1, 32).astype(np.float32)
    idx = np.abs(b).argmax(axis=1)
    mx = b[np.arange(b.shape[0]), idx]  # the value of largest magnitude, with its sign
    d = mx / -8.0
    inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0.0)
    q = np.clip(np.floor(b * inv[:, None] + 8.5), 0, 15).astype(np.uint8)
    out = np.empty((b.shape[0], 18), dtype=np.uint8)
    out[:, 0:2] = f16(d).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
    return out.reshape(-1)


def pack_q5(q):
    """[blocks][32] values 0..31 -> (qh [blocks][4], qs [blocks][16])."""
    bits = (q >> 4).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    qh = bits.sum(axis=1, dtype=np.uint32).astype("<u4").view(np.uint8).reshape(-1, 4)
    qs = (q[:, :16] & 15) | ((q[:, 16:] & 15) << 4)
    return qh, qs


def quant_q5_0(x):
    b = x.reshape(-1, 32).astype(np.float32)
    idx = np.abs(b).argmax(axis=1)
    mx = b[np.arange(b.shape[0]), idx]  # the value of largest magnitude maps to -16
    d16 = f16(mx / -16.0)
    dq = d16.astype(np.float32)
    inv = np.where(dq != 0, 1.0 / np.where(dq != 0, dq, 1), 0.0)
    q = np.clip(np.round(b * inv[:, None]) + 16, 0, 31).astype(np.uint8)
    qh, qs = pack_q5(q)
    out = np.empty((b.shape[0], 22), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(-1, 2)
    out[:, 2:6] = qh
    out[:, 6:] = qs
    return out.reshape(-1)


def quant_q5_1(x):
    b = x.reshape(-1, 32).astype(np.float32)
    lo, hi = b.min(axis=1), b.max(axis=1)
    d16, m16 = f16((hi - lo) / 31.0), f16(lo)
    dq, mq = d16.astype(np.float32), m16.astype(np.float32)
    q = np.round((b - mq[:, None]) / np.where(dq > 0, dq, 1)[:, None])
    q = np.clip(np.where(dq[:, None] > 0, q, 0), 0, 31).astype(np.uint8)
    qh, qs = pack_q5(q)
    out = np.empty((b.shape[0], 24), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(-1, 2)
    out[:, 2:4] = m16.view(np.uint8).reshape(-1, 2)
    out[:, 4:8] = qh
    out[:, 8:] = qs
    return out.reshape(-1)


def kquant(b, nmax):
    """K-quant super-blocks [nb][8][32] -> (d16, dmin16, packed scales [nb][12],
    values q [nb][8][32] in 0..nmax), x ~ d*sc*q - dmin*m per sub-block."""
    nb = b.shape[0]
    mn = np.minimum(b.min(axis=2), 0.0)          # sub-block minimum (<= 0)
    mx = b.max(axis=2)
    scale = (mx - mn) / float(nmax)             # sub-block step
    d = scale.max(axis=1) / 63.0
    dmin = (-mn).max(axis=1) / 63.0
    d16, dmin16 = f16(d), f16(dmin)
    dq, dminq = d16.astype(np.float32), dmin16.astype(np.float32)
    sc = np.clip(np.round(scale / np.where(dq > 0, dq, 1)[:, None]), 0, 63).astype(np.uint8)
    sc = np.where(dq[:, None] > 0, sc, 0).astype(np.uint8)
    m = np.clip(np.round(-mn / np.where(dminq > 0, dminq, 1)[:, None]), 0, 63).astype(np.uint8)
    m = np.where(dminq[:, None] > 0, m, 0).astype(np.uint8)
    step = dq[:, None] * sc.astype(np.float32)
    off = dminq[:, None] * m.astype(np.float32)
    q = np.round((b + off[:, :, None]) / np.where(step > 0, step, 1)[:, :, None])
    q = np.where(step[:, :, None] > 0, q, 0)
    q = np.clip(q, 0, nmax).astype(np.uint8)
    # 12 bytes of 6-bit scales and mins
    s = np.zeros((nb, 12), dtype=np.uint8)
    s[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return d16, dmin16, s, q


def quant_q5_k(x):
    b = x.reshape(-1, 8, 32).astype(np.float32)
    nb = b.shape[0]
    d16, dmin16, s, q = kquant(b, 31)
    # qh[l]: bit j = 5th bit of element l of sub-block j
    qh = ((q >> 4).astype(np.uint32) << np.arange(8, dtype=np.uint32)[None, :, None]).sum(axis=1).astype(np.uint8)
    lo = q & 15
    qs = (lo[:, 0::2, :] | (lo[:, 1::2, :] << 4)).reshape(nb, 128)
    out = np.empty((nb, 176), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(-1, 2)
    out[:, 2:4] = dmin16.view(np.uint8).reshape(-1, 2)
    out[:, 4:16] = s
    out[:, 16:48] = qh
    out[:, 48:] = qs
    return out.reshape(-1)


def quant_q4_k(x):
    b = x.reshape(-1, 8, 32).astype(np.float32)  # super-blocks x sub-blocks x values
    nb = b.shape[0]
    d16, dmin16, s, q = kquant(b, 15)
    # 128 bytes: four chunks of 64 values; byte l of chunk c holds value l (low) and 32 + l (high)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(nb, 128)
    out = np.empty((nb, 144), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(-1, 2)
    out[:, 2:4] = dmin16.view(np.uint8).reshape(-1, 2)
    out[:, 4:16] = s
    out[:, 16:] = qs
    return out.reshape(-1)


def quant_q6_k(x):
    b = x.reshape(-1, 16, 16).astype(np.float32)  # super-blocks x 16 sub-blocks x 16
    nb = b.shape[0]
    amax = np.abs(b).max(axis=2)
    scale = amax / 31.0
    d = scale.max(axis=1) / 127.0
    d16 = f16(d)
    dq = d16.astype(np.float32)
    sc = np.clip(np.round(scale / np.where(dq > 0, dq, 1)[:, None]), -128, 127)
    sc = np.where(dq[:, None] > 0, sc, 0).astype(np.int8)
    step = dq[:, None] * sc.astype(np.float32)
    q = np.round(b / np.where(step != 0, step, 1)[:, :, None])
    q = np.where(step[:, :, None] != 0, q, 0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(nb, 2, 4, 32)  # halves x k x l
    ql = np.empty((nb, 2, 64), dtype=np.uint8)
    ql[:, :, 0:32] = (q[:, :, 0] & 15) | ((q[:, :, 2] & 15) << 4)
    ql[:, :, 32:64] = (q[:, :, 1] & 15) | ((q[:, :, 3] & 15) << 4)
    qh = (q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)
    out = np.empty((nb, 210), dtype=np.uint8)
    out[:, 0:128] = ql.reshape(nb, 128)
    out[:, 128:192] = qh.reshape(nb, 64)
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = d16.view(np.uint8).reshape(-1, 2)
    return out.reshape(-1)


def encode(x, t):
    """float32 tensor -> bytes of ggml/safetensors type t."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if t == "F32":
        return x.tobytes()
    if t == "F16":
        return f16(x).tobytes()
    if t == "BF16":
        return to_bf16_bits(x).tobytes()
    fn = dict(Q8_0=quant_q8_0, Q4_0=quant_q4_0, Q5_0=quant_q5_0, Q5_1=quant_q5_1, Q4_K=quant_q4_k,
              Q5_K=quant_q5_k, Q6_K=quant_q6_k)[t]
    flat = x.reshape(-1)
    step = 1 << 20  # a multiple of every block size: bounds the quantizers' temporaries
    return b"".join(fn(flat[i:i + step]).tobytes() for i in range(0, flat.size, step))


# ---------------------------------------------------------------- tokenizers

CORPUS = """\
The quick brown fox jumps over the lazy dog. A tiny model still needs a tokenizer, and this
one is learned from a few paragraphs of plain text, numbers like 12, 345 and 6789, and a little
mathematics: if x + y = 10 and x - y = 4, then x = 7 and y = 3. The area of a circle is pi r^2.
Students asked the teacher why the sum of the angles of a triangle is 180 degrees; the teacher
drew a line through one corner, parallel to the opposite side, and showed that the three angles
fill a straight line. Then they solved 2x^2 - 8 = 0, which gives x = 2 or x = -2.
def add(a, b):
    return a + b
Question: What is the capital of France? Answer: Paris.
Question: How many legs does a spider have? Answer: 8.
In the morning the market opened at nine; prices rose, fell, and rose again before noon.
Weights are random, so the model will say nothing sensible, but every tensor has its real name,
shape and type, and the files follow the real formats byte for byte.
"""

SPECIALS = {
    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
}

CHAT_TEMPLATES = {
    "chatml": ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
               "{% endif %}"),
    "llama3": ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
               "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    "mistral": ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}"
                "{% endif %}{% endfor %}"),
}

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map, in GPT-2's id order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


def train_bpe(words, n_merges):
    """Greedy BPE over {tuple(symbols): count}; ties broken lexicographically so
    the result is deterministic. Returns the merges in order."""
    words = {tuple(w): c for w, c in words.items()}
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if best[1] < 2:
            break
        a, b = best[0]
        merges.append((a, b))
        nw = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = nw.get(tuple(out), 0) + c
        words = nw
    return merges


def added_token(i, s, special=True):
    return {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def make_bytelevel_tokenizer(family, n_tokens):
    """A tiny byte-level BPE tokenizer.json (+ tokenizer_config.json) with about
    n_tokens tokens: 256 byte symbols, learned merges, then the specials."""
    specials = SPECIALS["llama3" if family == "llama" else "qwen"]
    b2u = dict(bytes_to_unicode())
    vocab = {}
    for _, ch in bytes_to_unicode():
        vocab[ch] = len(vocab)
    pieces = re.findall(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+|[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""", CORPUS)
    words = {}
    for p in pieces:
        w = tuple(b2u[b] for b in p.encode("utf-8"))
        words[w] = words.get(w, 0) + 1
    merges = train_bpe(words, max(0, n_tokens - 256 - len(specials)))
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    added = [added_token(len(vocab) + i, s) for i, s in enumerate(specials)]
    if family == "llama":
        pre = [{"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]
        bos = "<|begin_of_text|>"
        post = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [added[0]["id"]], "tokens": [bos]}}}]}
        normalizer = None
        cfg = {"bos_token": bos, "eos_token": "<|eot_id|>", "add_bos_token": True, "add_eos_token": False,
               "chat_template": CHAT_TEMPLATES["llama3"], "tokenizer_class": "PreTrainedTokenizerFast"}
    else:
        pre = [{"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]
        post = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
        normalizer = {"type": "NFC"}
        cfg = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
               "add_eos_token": False, "chat_template": CHAT_TEMPLATES["chatml"], "tokenizer_class": "Qwen2Tokenizer"}
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": normalizer,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre}, "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": family == "llama", "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    cfg["added_tokens_decoder"] = {str(t["id"]): {k: t[k] for k in t if k != "id"} for t in added}
    cfg["model_max_length"] = 131072
    return tok, cfg


def make_spm_tokenizer(n_tokens):
    """A tiny SentencePiece-style BPE (Llama 2 / Mistral layout): <unk> <s> </s>,
    256 byte-fallback tokens <0xXX>, single characters, then learned merges."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    text = "\u2581" + CORPUS.replace(" ", "\u2581")
    words = {}
    for line in text.split("\n"):
        for w in re.findall("\u2581?[^\u2581]+|\u2581", line):
            words[tuple(w)] = words.get(tuple(w), 0) + 1
    for ch in sorted({c for w in words for c in w}):
        vocab.setdefault(ch, len(vocab))
    merges = train_bpe(words, max(0, n_tokens - len(vocab)))
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    added = [added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>")]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                          {"type": "Replace", "pattern": {"String": " "},
                                                           "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
           "add_eos_token": False, "chat_template": CHAT_TEMPLATES["mistral"], "tokenizer_class": "LlamaTokenizer",
           "legacy": False, "model_max_length": 32768,
           "added_tokens_decoder": {str(t["id"]): {k: t[k] for k in t if k != "id"} for t in added}}
    return tok, cfg


def truncate_tokenizer(path, n_keep):
    """Loads a real tokenizer.json (and the tokenizer_config.json beside it) and,
    when n_keep is smaller than its base vocabulary, keeps the first n_keep
    base tokens (bytes come first in these vocabularies), the merges among them,
    the added tokens that already sit inside them, and up to 16 added tokens
    from after the base vocabulary, renumbered to follow what was kept."""
    tok = json.load(open(path, encoding="utf-8"))
    cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    cfg = json.load(open(cfg_path, encoding="utf-8")) if os.path.exists(cfg_path) else {}
    vocab = tok["model"]["vocab"]
    added = tok.get("added_tokens", [])
    n_base = len(vocab)
    if n_keep is None or n_keep >= n_base + len(added):
        return tok, cfg
    high = [t for t in added if t["id"] >= n_base][:16]  # specials after the base vocabulary: renumbered
    n_base_keep = max(256, n_keep - len(high))
    low = [t for t in added if t["id"] < min(n_base, n_base_keep)]  # inside it (SentencePiece <unk> <s> </s>)
    vocab = {s: i for s, i in vocab.items() if i < n_base_keep}
    merges = []
    for m in tok["model"].get("merges", []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    remap = {t["id"]: t["id"] for t in low}
    for k, t in enumerate(high):
        remap[t["id"]] = n_base_keep + k
        t["id"] = n_base_keep + k
    keep_added = low + high
    tok["model"]["vocab"] = vocab
    tok["model"]["merges"] = merges
    tok["added_tokens"] = keep_added

    def fix(o):  # post-processor special token ids
        if isinstance(o, dict):
            if "ids" in o and isinstance(o["ids"], list):
                o["ids"] = [remap.get(i, i) for i in o["ids"]]
            for v in o.values():
                fix(v)
        elif isinstance(o, list):
            for v in o:
                fix(v)
    fix(tok.get("post_processor"))
    if "added_tokens_decoder" in cfg:
        cfg["added_tokens_decoder"] = {str(remap[int(k)]): v for k, v in cfg["added_tokens_decoder"].items()
                                       if int(k) in remap}
    return tok, cfg


def token_list(tok):
    """(tokens by id, token types, set of special ids) of a tokenizer.json."""
    id2 = {i: s for s, i in tok["model"]["vocab"].items()}
    types = {}
    for t in tok.get("added_tokens", []):
        id2[t["id"]] = t["content"]
        types[t["id"]] = 3 if t.get("special") else 4
    n = max(id2) + 1
    toks, tt = [], []
    spm = tok["model"].get("byte_fallback", False)
    for i in range(n):
        s = id2.get(i)
        if s is None:
            toks.append(f"[PAD{i}]")
            tt.append(5)
            continue
        toks.append(s)
        if i in types:
            tt.append(2 if spm and s == tok["model"].get("unk_token") else types[i])
        elif spm and re.fullmatch(r"<0x[0-9A-F]{2}>", s):
            tt.append(6)
        else:
            tt.append(1)
    return toks, tt


# -------------------------------------------------------------- the weights


def tensor_seed(seed, name):
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")


def weight(seed, name, shape, kind):
    """Deterministic random weight of a Hugging Face tensor name (PyTorch shape)."""
    rng = np.random.default_rng(tensor_seed(seed, name))
    if kind == "norm":
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "bias":
        return (0.2 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "embed":
        return (0.5 * rng.standard_normal(shape)).astype(np.float32)
    return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)


def hf_tensors(a):
    """[(hf name, shape, kind, gguf name)] of the model, in llama.cpp's order."""
    hd, H, K, E, F, V = a.head_dim, a.heads, a.kv_heads, a.hidden, a.ffn, a.vocab
    out = [("model.embed_tokens.weight", (V, E), "embed", "token_embd.weight")]
    for i in range(a.layers):
        p, g = f"model.layers.{i}.", f"blk.{i}."
        out += [(p + "input_layernorm.weight", (E,), "norm", g + "attn_norm.weight"),
                (p + "self_attn.q_proj.weight", (H * hd, E), "lin", g + "attn_q.weight"),
                (p + "self_attn.k_proj.weight", (K * hd, E), "lin", g + "attn_k.weight"),
                (p + "self_attn.v_proj.weight", (K * hd, E), "lin", g + "attn_v.weight")]
        if a.arch == "qwen2":
            out += [(p + "self_attn.q_proj.bias", (H * hd,), "bias", g + "attn_q.bias"),
                    (p + "self_attn.k_proj.bias", (K * hd,), "bias", g + "attn_k.bias"),
                    (p + "self_attn.v_proj.bias", (K * hd,), "bias", g + "attn_v.bias")]
        if a.arch == "qwen3":
            out += [(p + "self_attn.q_norm.weight", (hd,), "norm", g + "attn_q_norm.weight"),
                    (p + "self_attn.k_norm.weight", (hd,), "norm", g + "attn_k_norm.weight")]
        out += [(p + "self_attn.o_proj.weight", (E, H * hd), "lin", g + "attn_output.weight"),
                (p + "post_attention_layernorm.weight", (E,), "norm", g + "ffn_norm.weight"),
                (p + "mlp.gate_proj.weight", (F, E), "lin", g + "ffn_gate.weight"),
                (p + "mlp.up_proj.weight", (F, E), "lin", g + "ffn_up.weight"),
                (p + "mlp.down_proj.weight", (E, F), "lin", g + "ffn_down.weight")]
    out.append(("model.norm.weight", (E,), "norm", "output_norm.weight"))
    if not a.tied:
        out.append(("lm_head.weight", (V, E), "embed", "output.weight"))
    return out


def permute_qk(w, n_head):
    """llama.cpp's converter reorders each head's rows from (half, pair) to
    (pair, half) so that adjacent-pair (NORM) RoPE equals HF's rotate-half."""
    r = w.shape[0]
    return w.reshape(n_head, 2, r // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_factors(a):
    """Per-frequency divisors of Llama 3.1 RoPE scaling (rope_freqs.weight)."""
    inv = 1.0 / (a.theta ** (np.arange(0, a.head_dim, 2, dtype=np.float64) / a.head_dim))
    lo_w, hi_w = a.rope_orig_ctx / a.rope_low, a.rope_orig_ctx / a.rope_high
    out = []
    for f in inv:
        wl = 2 * np.pi / f
        if wl < hi_w:
            out.append(1.0)
        elif wl > lo_w:
            out.append(a.rope_factor)
        else:
            s = (a.rope_orig_ctx / wl - a.rope_low) / (a.rope_high - a.rope_low)
            out.append(1.0 / ((1 - s) / a.rope_factor + s))
    return np.array(out, dtype=np.float32)


# -------------------------------------------------------------------- GGUF


class GGUFWriter:
    def __init__(self):
        self.kv = []
        self.tensors = []  # (name, ne list, type, nbytes, producer)

    def add(self, key, vtype, value):
        self.kv.append((key, vtype, value))

    @staticmethod
    def _str(s):
        b = s.encode("utf-8") if isinstance(s, str) else s
        return struct.pack("<Q", len(b)) + b

    def _value(self, vtype, v):
        fmt = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
               12: "<d"}
        if vtype == 8:
            return self._str(v)
        if vtype == 9:
            et, items = v
            head = struct.pack("<IQ", et, len(items))
            if et == 8:
                return head + b"".join(self._str(s) for s in items)
            npt = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8",
                   11: "<i8", 12: "<f8"}[et]
            return head + np.asarray(items, dtype=npt).tobytes()
        return struct.pack(fmt[vtype], v)

    def write(self, path, align=32):
        hdr = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv)))
        for k, t, v in self.kv:
            hdr += self._str(k) + struct.pack("<I", t) + self._value(t, v)
        off = 0
        offsets = []
        for name, ne, ty, nbytes, _ in self.tensors:
            offsets.append(off)
            hdr += self._str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
            hdr += struct.pack("<IQ", GGML[ty], off)
            off += (nbytes + align - 1) // align * align
        hdr += b"\0" * ((-len(hdr)) % align)
        with open(path, "wb") as f:
            f.write(hdr)
            for (name, ne, ty, nbytes, produce), o in zip(self.tensors, offsets):
                data = produce()
                assert len(data) == nbytes, (name, len(data), nbytes)
                f.write(data)
                f.write(b"\0" * ((-nbytes) % align))


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def gguf_type(a, gname, shape, layer):
    """The ggml type of a tensor under --dtype (1-D tensors stay F32; rows that
    are not a whole number of blocks fall back as llama.cpp does)."""
    if len(shape) == 1 or gname == "rope_freqs.weight":
        return "F32"
    d = a.dtype.upper()
    if d in ("Q4_K_M", "Q5_K_M"):
        d = d[:4]
        if gname == "output.weight" or (gname.endswith(("attn_v.weight", "ffn_down.weight"))
                                        and use_more_bits(layer, a.layers)):
            d = "Q6_K"
    if shape[-1] % BLOCK[d][0] != 0 and d in FALLBACK:
        d = FALLBACK[d]
    if shape[-1] % BLOCK[d][0] != 0:
        d = "Q8_0" if shape[-1] % 32 == 0 and d not in ("F32", "F16", "BF16") else ("F16" if d != "F32" else d)
    return d


def write_gguf(a, tok, cfg, path):
    arch = "llama" if a.arch == "mistral" else a.arch  # llama.cpp writes Mistral 7B as "llama"
    w = GGUFWriter()
    w.add("general.architecture", 8, arch)
    w.add("general.name", 8, a.name)
    w.add("general.file_type", 4, FILE_TYPE[a.dtype])
    w.add("general.quantization_version", 4, 2)
    w.add(f"{arch}.context_length", 4, a.ctx)
    w.add(f"{arch}.embedding_length", 4, a.hidden)
    w.add(f"{arch}.block_count", 4, a.layers)
    w.add(f"{arch}.feed_forward_length", 4, a.ffn)
    w.add(f"{arch}.attention.head_count", 4, a.heads)
    w.add(f"{arch}.attention.head_count_kv", 4, a.kv_heads)
    w.add(f"{arch}.rope.freq_base", 6, a.theta)
    w.add(f"{arch}.attention.layer_norm_rms_epsilon", 6, a.eps)
    w.add(f"{arch}.rope.dimension_count", 4, a.head_dim)
    if a.head_dim * a.heads != a.hidden or arch == "qwen3":
        w.add(f"{arch}.attention.key_length", 4, a.head_dim)
        w.add(f"{arch}.attention.value_length", 4, a.head_dim)
    if arch == "llama":
        w.add("llama.vocab_size", 4, a.vocab)
    if a.rope_scaling == "linear":
        w.add(f"{arch}.rope.scaling.type", 8, "linear")
        w.add(f"{arch}.rope.scaling.factor", 6, a.rope_factor)
    # tokenizer
    toks, tt = token_list(tok)
    if len(toks) > a.vocab:
        sys.exit(f"mkmodel: the tokenizer has {len(toks)} tokens, more than --vocab {a.vocab}")
    toks += [f"[PAD{i}]" for i in range(len(toks), a.vocab)]
    tt += [5] * (a.vocab - len(tt))
    spm = tok["model"].get("byte_fallback", False)
    w.add("tokenizer.ggml.model", 8, "llama" if spm else "gpt2")
    if not spm:
        w.add("tokenizer.ggml.pre", 8, {"llama": "llama-bpe"}.get(a.arch, "qwen2"))
    w.add("tokenizer.ggml.tokens", 9, (8, toks))
    if spm:
        vocab = tok["model"]["vocab"]
        scores = [0.0 if tt[i] != 1 else -float(vocab.get(s, i)) for i, s in enumerate(toks)]
        w.add("tokenizer.ggml.scores", 9, (6, scores))
    w.add("tokenizer.ggml.token_type", 9, (5, tt))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    if not spm:
        w.add("tokenizer.ggml.merges", 9, (8, merges))
    ids = {s: i for i, s in enumerate(toks)}

    def tok_id(v):
        if isinstance(v, dict):
            v = v.get("content")
        return ids.get(v) if v else None
    bos, eos = tok_id(cfg.get("bos_token")), tok_id(cfg.get("eos_token"))
    if bos is not None:
        w.add("tokenizer.ggml.bos_token_id", 4, bos)
    if eos is not None:
        w.add("tokenizer.ggml.eos_token_id", 4, eos)
    if spm:
        w.add("tokenizer.ggml.unknown_token_id", 4, 0)
    pad = tok_id(cfg.get("pad_token"))
    if pad is not None:
        w.add("tokenizer.ggml.padding_token_id", 4, pad)
    w.add("tokenizer.ggml.add_bos_token", 7, bool(cfg.get("add_bos_token", False)))
    w.add("tokenizer.ggml.add_eos_token", 7, bool(cfg.get("add_eos_token", False)))
    if cfg.get("chat_template"):
        w.add("tokenizer.chat_template", 8, cfg["chat_template"])
    # tensors
    if a.rope_scaling == "llama3":
        fac = llama3_factors(a)
        w.tensors.append(("rope_freqs.weight", [len(fac)], "F32", 4 * len(fac), lambda f=fac: f.tobytes()))
    permute = a.arch in ("llama", "mistral")
    for hname, shape, kind, gname in hf_tensors(a):
        layer = int(gname.split(".")[1]) if gname.startswith("blk.") else 0
        ty = gguf_type(a, gname, shape, layer)
        n = int(np.prod(shape))
        nbytes = n // BLOCK[ty][0] * BLOCK[ty][1]

        def produce(hname=hname, shape=shape, kind=kind, gname=gname, ty=ty):
            x = weight(a.seed, hname, shape, kind)
            if permute and gname.endswith(("attn_q.weight", "attn_q.bias")):
                x = permute_qk(x, a.heads)
            if permute and gname.endswith(("attn_k.weight", "attn_k.bias")):
                x = permute_qk(x, a.kv_heads)
            return encode(x, ty)
        w.tensors.append((gname, list(reversed(shape)), ty, nbytes, produce))
    w.write(path)


# ---------------------------------------------------------------------- HF


def write_safetensors(path, items):
    """items: [(name, shape, dtype str, bytes producer)] -> one .safetensors file."""
    header, off = {}, 0
    for name, shape, dt, nbytes, _ in items:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)  # keep the byte buffer 8-aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, shape, dt, nbytes, produce in items:
            data = produce()
            assert len(data) == nbytes
            f.write(data)
    return off


def write_hf(a, tok, cfg, folder):
    os.makedirs(folder, exist_ok=True)
    dt = a.dtype.upper()
    if dt not in ("F32", "F16", "BF16"):
        sys.exit("mkmodel: --format hf takes --dtype f32, f16 or bf16")
    torch_dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dt]
    items = []
    for hname, shape, kind, _ in hf_tensors(a):
        n = int(np.prod(shape))
        items.append((hname, shape, dt, n * BLOCK[dt][1],
                      lambda hname=hname, shape=shape, kind=kind: encode(weight(a.seed, hname, shape, kind), dt)))
    shards = max(1, min(a.shards, len(items)))
    if shards == 1:
        total = write_safetensors(os.path.join(folder, "model.safetensors"), items)
    else:
        per = (len(items) + shards - 1) // shards
        weight_map, total = {}, 0
        for s in range(shards):
            part = items[s * per:(s + 1) * per]
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            total += write_safetensors(os.path.join(folder, fname), part)
            weight_map.update({it[0]: fname for it in part})
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
                  open(os.path.join(folder, "model.safetensors.index.json"), "w"), indent=2)
    family = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
              "mistral": "MistralForCausalLM"}[a.arch]
    ids = {s: i for i, s in enumerate(token_list(tok)[0])}
    bos = cfg.get("bos_token")
    eos = cfg.get("eos_token")
    conf = {
        "architectures": [family], "model_type": a.arch, "hidden_size": a.hidden, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "intermediate_size": a.ffn,
        "vocab_size": a.vocab, "max_position_embeddings": a.ctx, "rms_norm_eps": a.eps, "rope_theta": a.theta,
        "hidden_act": "silu", "tie_word_embeddings": a.tied, "torch_dtype": torch_dtype,
        "bos_token_id": ids.get(bos) if bos else None, "eos_token_id": ids.get(eos) if eos else None,
        "initializer_range": 0.02, "use_cache": True, "attention_dropout": 0.0,
    }
    if a.arch in ("llama", "qwen3", "mistral"):
        conf["attention_bias"] = False
    if a.arch in ("llama", "qwen3") or a.head_dim * a.heads != a.hidden:
        conf["head_dim"] = a.head_dim
    if a.arch == "llama":
        conf["mlp_bias"] = False
    if a.arch in ("qwen2", "qwen3"):
        conf.update(use_sliding_window=False, sliding_window=None, max_window_layers=a.layers)
    if a.arch == "mistral":
        conf["sliding_window"] = None
    conf["rope_scaling"] = None
    if a.rope_scaling == "llama3":
        conf["rope_scaling"] = {"rope_type": "llama3", "factor": a.rope_factor, "low_freq_factor": a.rope_low,
                                "high_freq_factor": a.rope_high, "original_max_position_embeddings": a.rope_orig_ctx}
    elif a.rope_scaling == "linear":
        conf["rope_scaling"] = {"type": "linear", "factor": a.rope_factor}
    json.dump(conf, open(os.path.join(folder, "config.json"), "w"), indent=2)
    json.dump(tok, open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False,
              indent=None, separators=(",", ":"))
    json.dump(cfg, open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8"), ensure_ascii=False,
              indent=2)


# -------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["llama", "qwen2", "qwen3", "mistral"])
    p.add_argument("--preset", choices=sorted(PRESETS), help="a real model's shape (overrides the shape options)")
    p.add_argument("--format", choices=["gguf", "hf"], default="gguf")
    p.add_argument("--dtype", default="f32", choices=sorted(FILE_TYPE))
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=0, help="0: hidden / heads")
    p.add_argument("--ffn", type=int, default=128)
    p.add_argument("--vocab", type=int, default=0, help="embedding rows (0: the tokenizer's size)")
    p.add_argument("--ctx", type=int, default=4096, help="training context length recorded in the file")
    p.add_argument("--theta", type=float, default=10000.0)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--tied", type=int, choices=[0, 1], default=None, help="tie output to the embedding")
    p.add_argument("--rope-scaling", choices=["none", "linear", "llama3"], default="none")
    p.add_argument("--rope-factor", type=float, default=8.0)
    p.add_argument("--rope-low", type=float, default=1.0, help="llama3 low_freq_factor")
    p.add_argument("--rope-high", type=float, default=4.0, help="llama3 high_freq_factor")
    p.add_argument("--rope-orig-ctx", type=int, default=8192, help="llama3 original_max_position_embeddings")
    p.add_argument("--shards", type=int, default=1, help="HF: number of safetensors shards")
    p.add_argument("--tokenizer", help="a real tokenizer.json to use (truncated to --vocab when smaller)")
    p.add_argument("--tok-size", type=int, default=320, help="size of the built-in tiny tokenizer")
    p.add_argument("--name", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="output .gguf file or HF folder")
    a = p.parse_args(argv)
    if a.preset:
        for k, v in PRESETS[a.preset].items():
            setattr(a, k, v)
        a.rope_scaling = PRESETS[a.preset].get("rope_scaling", "none")
        a.head_dim = PRESETS[a.preset].get("head_dim", 0)
        a.rope_factor, a.rope_low, a.rope_high, a.rope_orig_ctx = 32.0, 1.0, 4.0, 8192
    if not a.arch:
        p.error("--arch or --preset is required")
    if a.head_dim == 0:
        a.head_dim = a.hidden // a.heads
    if a.tied is None:
        a.tied = a.arch in ("qwen2", "qwen3")
    a.tied = bool(a.tied)
    if a.heads % a.kv_heads or a.head_dim % 2:
        p.error("heads must be a multiple of kv-heads and head-dim even")
    a.name = a.name or os.path.basename(a.out.rstrip("/")).replace(".gguf", "")
    return a


def main(argv):
    a = parse_args(argv)
    if a.tokenizer:
        tok, cfg = truncate_tokenizer(a.tokenizer, a.vocab or None)
    elif a.arch == "mistral":
        tok, cfg = make_spm_tokenizer(a.tok_size)
    else:
        tok, cfg = make_bytelevel_tokenizer(a.arch, a.tok_size)
    n_tok = len(token_list(tok)[0])
    if a.vocab == 0:
        a.vocab = n_tok
    if a.vocab < n_tok:
        sys.exit(f"mkmodel: --vocab {a.vocab} is smaller than the tokenizer ({n_tok} tokens)")
    if a.format == "gguf":
        write_gguf(a, tok, cfg, a.out)
    else:
        write_hf(a, tok, cfg, a.out)


if __name__ == "__main__":
    main(sys.argv[1:])
