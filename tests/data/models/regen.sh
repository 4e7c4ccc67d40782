#!/usr/bin/env bash
# Regenerates the committed tiny test models (tests/data/models) and their
# golden outputs (tests/data/golden). Dev-time only: needs Debian's
# python3-numpy and python3-torch (apt-get install -y python3-numpy python3-torch).
# Deterministic: running it twice gives byte-identical files.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY="${PYTHON:-/usr/bin/python3}"
M=tests/data/models
G=tests/data/golden
mk() { "$PY" tools/mkmodel.py "$@"; }
rm -rf "$M"/*.gguf "$M"/*-hf "$G"/*

# llama: same seed in every dtype and as a sharded HF folder (same weights)
for d in f32 f16 bf16 q8_0 q4_0; do mk --arch llama --dtype $d --seed 1 --out $M/llama-$d.gguf; done
mk --arch llama --format hf --dtype f32 --seed 1 --shards 2 --out $M/llama-hf
# llama 3.1-style RoPE scaling (rope_freqs.weight in GGUF, rope_scaling in config.json), tied, head_dim 32
L31="--arch llama --hidden 64 --heads 2 --kv-heads 1 --ffn 128 --tied 1 --theta 100 --rope-scaling llama3 --rope-factor 8 --rope-orig-ctx 256 --seed 3"
mk $L31 --dtype f32 --out $M/llama31-f32.gguf
mk $L31 --format hf --dtype f32 --out $M/llama31-hf
# qwen2: q/k/v biases, tied embeddings; K-quants need rows of 256
mk --arch qwen2 --dtype q8_0 --seed 2 --out $M/qwen2-q8_0.gguf
mk --arch qwen2 --format hf --dtype bf16 --seed 2 --out $M/qwen2-hf
mk --arch qwen2 --hidden 256 --heads 4 --kv-heads 2 --ffn 512 --layers 4 --dtype q4_k_m --seed 4 --out $M/qwen2-q4_k_m.gguf
mk --arch qwen2 --hidden 256 --heads 4 --kv-heads 2 --ffn 512 --layers 2 --dtype q6_k --seed 5 --out $M/qwen2-q6_k.gguf
# llama.cpp's fallbacks for rows that are not whole super-blocks (as Qwen2.5-0.5B's 896):
# Q4_K_M at hidden 128 carries Q5_0 (for Q4_K) and Q8_0 (for Q6_K) beside Q4_K / Q6_K ffn_down;
# Q5_K_M with ffn 288 carries Q5_1 (for Q5_K) and Q8_0 (for Q6_K) ffn_down beside Q5_K / Q6_K
mk --arch qwen2 --hidden 128 --heads 4 --kv-heads 2 --ffn 256 --layers 4 --dtype q4_k_m --seed 8 --out $M/qwen2-h128-q4_k_m.gguf
mk --arch qwen2 --hidden 256 --heads 4 --kv-heads 2 --ffn 288 --layers 3 --dtype q5_k_m --seed 9 --out $M/qwen2-q5_k_m.gguf
# qwen3: q/k norm, head_dim 32 != 64/4
mk --arch qwen3 --head-dim 32 --dtype f16 --seed 6 --out $M/qwen3-f16.gguf
mk --arch qwen3 --head-dim 32 --format hf --dtype f16 --seed 6 --out $M/qwen3-hf
# mistral: SentencePiece-style tokenizer; GGUF says "llama" as llama.cpp writes it
mk --arch mistral --dtype q8_0 --seed 7 --out $M/mistral-q8_0.gguf
mk --arch mistral --format hf --dtype bf16 --seed 7 --out $M/mistral-hf

# goldens: logits of every prompt position, 64 greedy tokens
P1=1,17,42,99,3,250,7,128,64,200,5,31
P2=300,2,2,77,150,9,260
ref() { name=$1; shift; "$PY" tools/reference_forward.py "$M/$name" --prompt $P1 --prompt2 $P2 --gen 64 --out "$G/${name%.gguf}" "$@"; }
for f in llama-f32.gguf llama-hf llama31-f32.gguf llama31-hf qwen3-hf; do ref $f --rtol 2e-4; done
for f in llama-f16.gguf llama-bf16.gguf qwen2-hf qwen3-f16.gguf mistral-hf; do ref $f --rtol 2e-4 --note "16-bit weights, F32 activations"; done
for f in llama-q8_0.gguf llama-q4_0.gguf qwen2-q8_0.gguf qwen2-q4_k_m.gguf qwen2-q6_k.gguf qwen2-h128-q4_k_m.gguf \
         qwen2-q5_k_m.gguf mistral-q8_0.gguf; do
  ref $f --rtol 4e-2 --rtol-dequant 2e-4 --note "quantized weights: the reference uses the dequantized weights; celine quantizes activations to int8 for these dot products (rtol), or runs F32 after cel_model_make_writable (rtol_dequantized)"
done
du -sh $M $G
