#!/usr/bin/env python3
"""PyTorch + transformers baseline for bench_gpu: the same Llama-3.2-1B shape
(random weights, BF16, tied embeddings; RoPE scaling left out, as it does not
change the work per token, and its config key moved between transformers
versions) decoding with
`model.generate` on the same GPU, greedy, a fixed number of new tokens
(min_new_tokens = max_new_tokens), batch 64 by default.

Decode throughput is isolated from prefill by timing two generate calls on
the same prompts, one producing 1 token and one producing N, so
decode_tok_s = batch * (N - 1) / (t_N - t_1). End-to-end generate throughput
is reported too. Writes JSON to --out.

Run by tests/gpu/run.sh on the GPU machine (python3 there has torch and
transformers); needs no network and no model files.
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64, help="new tokens per sequence")
    ap.add_argument("--layers", type=int, default=16)
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    if not torch.cuda.is_available():
        print("SKIP: no CUDA device (torch.cuda.is_available() is False)")
        if args.out:
            json.dump({"skipped": "no CUDA device"}, open(args.out, "w"))
        return 0
    dev = torch.device("cuda")
    cfg = LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=args.layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        bos_token_id=128000,
        eos_token_id=128001,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    t0 = time.time()
    torch.set_default_dtype(torch.bfloat16)
    with dev:
        model = LlamaForCausalLM(cfg)
    model = model.to(device=dev, dtype=torch.bfloat16).eval()
    torch.set_default_dtype(torch.float32)
    load_s = time.time() - t0
    n_params = sum(p.numel() for p in model.parameters())

    ids = torch.randint(0, 128000, (args.batch, args.prompt), device=dev)
    mask = torch.ones_like(ids)

    def gen(n):
        torch.cuda.synchronize()
        t = time.time()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
        torch.cuda.synchronize()
        dt = time.time() - t
        assert out.shape == (args.batch, args.prompt + n), out.shape
        return dt

    gen(2)  # warm-up: kernels, allocator, generation config
    t1 = min(gen(1) for _ in range(2))
    tn = gen(args.new)
    decode_tok_s = args.batch * (args.new - 1) / max(tn - t1, 1e-9)
    e2e_tok_s = args.batch * args.new / tn
    res = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "params": n_params,
        "layers": args.layers,
        "batch": args.batch,
        "prompt": args.prompt,
        "new_tokens": args.new,
        "load_s": round(load_s, 2),
        "prefill_plus_1_s": round(t1, 4),
        "generate_s": round(tn, 4),
        "decode_tok_s": round(decode_tok_s, 1),
        "generate_tok_s": round(e2e_tok_s, 1),
        "decode_ms_step": round((tn - t1) / (args.new - 1) * 1e3, 3),
    }
    print(
        f"torch {res['torch']} transformers {res['transformers']} on {res['device']}: "
        f"{n_params / 1e9:.2f} B params, batch {args.batch}: decode {decode_tok_s:.0f} tok/s "
        f"({res['decode_ms_step']:.2f} ms/step), generate end to end {e2e_tok_s:.0f} tok/s"
    )
    if args.out:
        json.dump(res, open(args.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
