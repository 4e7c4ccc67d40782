#!/usr/bin/env python3
"""reference_forward.py - an independent forward pass that produces the golden
logits celine's C engine is tested against (dev-time only: python3-numpy +
python3-torch, float64 throughout).

It shares no code with celine or with tools/mkmodel.py: it reads the model
files itself (GGUF header and tensor data, safetensors + config.json),
dequantizes F16 / BF16 / Q8_0 / Q4_0 / Q5_0 / Q5_1 / Q4_K / Q5_K / Q6_K from the
ggml block layouts
with numpy, and runs the Llama-family forward pass: RMSNorm, RoPE (GGUF
llama/mistral files pair adjacent dimensions because llama.cpp's converter
permuted q/k; GGUF qwen2/qwen3 and every HF checkpoint rotate halves), linear
and llama3 RoPE scaling (config.json parameters, or GGUF's rope_freqs.weight
divisors), grouped-query attention, SwiGLU, q/k/v biases (Qwen2), per-head q/k
RMSNorm (Qwen3), tied embeddings. K and V are rounded to float16 as celine's
KV cache stores them (the one storage-precision choice of the engine that the
reference models), so F32 models can be compared at 1e-4 of the logit scale.

  reference_forward.py MODEL --prompt 1,2,3 [--prompt2 4,5] --gen 64 --out DIR/NAME

writes NAME.json (prompts, shapes, greedy continuation, per-step margins,
tolerances) and NAME.logits (little-endian float32: the logits of every
position of prompt + greedy continuation (minus its last token), [T][n_vocab],
then prompt2's when given).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_grad_enabled(False)
DT = torch.float64

# ------------------------------------------------------------------- GGUF


def gguf_read(path):
    buf = open(path, "rb").read()
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(buf):
            raise ValueError(f"{path}: truncated")
        b = buf[pos:pos + n]
        pos += n
        return b

    def u32():
        return struct.unpack("<I", take(4))[0]

    def u64():
        return struct.unpack("<Q", take(8))[0]

    def string():
        return take(u64()).decode("utf-8", "replace")
    scal = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = u32(), u64()
            return [value(et) for _ in range(n)]
        f = scal[t]
        return struct.unpack(f, take(struct.calcsize(f)))[0]
    if take(4) != b"GGUF":
        raise ValueError(f"{path}: not GGUF")
    version = u32()
    if version not in (2, 3):
        raise ValueError(f"{path}: version {version}")
    nt, nkv = u64(), u64()
    kv = {}
    for _ in range(nkv):
        k = string()
        kv[k] = value(u32())
    infos = []
    for _ in range(nt):
        name = string()
        nd = u32()
        ne = [u64() for _ in range(nd)]
        infos.append((name, ne, u32(), u64()))
    align = kv.get("general.alignment", 32)
    data = (pos + align - 1) // align * align
    tensors = {}
    for name, ne, ty, off in infos:
        n = int(np.prod(ne))
        x = dequant(ty, buf, data + off, n)
        tensors[name] = x.reshape(list(reversed(ne)))  # PyTorch order: outermost first
    return kv, tensors


def half(b):
    return np.frombuffer(b, dtype="<f2").astype(np.float64)


def dequant(ty, buf, off, n):
    """ggml type ty, n elements at buf[off:] -> float64 numpy array."""
    if ty == 0:
        return np.frombuffer(buf, dtype="<f4", count=n, offset=off).astype(np.float64)
    if ty == 1:
        return np.frombuffer(buf, dtype="<f2", count=n, offset=off).astype(np.float64)
    if ty == 30:
        u = np.frombuffer(buf, dtype="<u2", count=n, offset=off).astype(np.uint32) << 16
        return u.view(np.float32).astype(np.float64)
    if ty == 8:  # Q8_0
        nb = n // 32
        raw = np.frombuffer(buf, dtype=np.uint8, count=nb * 34, offset=off).reshape(nb, 34)
        d = half(raw[:, :2].tobytes())
        q = raw[:, 2:].view(np.int8).astype(np.float64)
        return (d[:, None] * q).reshape(-1)
    if ty == 2:  # Q4_0
        nb = n // 32
        raw = np.frombuffer(buf, dtype=np.uint8, count=nb * 18, offset=off).reshape(nb, 18)
        d = half(raw[:, :2].tobytes())
        qs = raw[:, 2:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float64) - 8.0
        return (d[:, None] * q).reshape(-1)
    if ty in (6, 7):  # Q5_0: d, qh[4], qs[16]; Q5_1: d, m, qh[4], qs[16]
        bb = 22 if ty == 6 else 24
        nb = n // 32
        raw = np.frombuffer(buf, dtype=np.uint8, count=nb * bb, offset=off).reshape(nb, bb)
        d = half(raw[:, :2].tobytes())
        h0 = bb - 20  # where qh starts
        qh = raw[:, h0:h0 + 4].astype(np.int64)
        high = np.array([(qh[:, e // 8] >> (e % 8)) & 1 for e in range(32)]).T  # [nb][32]: bit e of qh
        qs = raw[:, h0 + 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int64) + 16 * high
        if ty == 6:
            return (d[:, None] * (q - 16)).reshape(-1)
        m = half(raw[:, 2:4].tobytes())
        return (d[:, None] * q + m[:, None]).reshape(-1)
    if ty in (12, 13):  # Q4_K: d, dmin, scales[12], qs[128]; Q5_K: the same with qh[32] before qs
        five = ty == 13
        bb = 176 if five else 144
        nb = n // 256
        raw = np.frombuffer(buf, dtype=np.uint8, count=nb * bb, offset=off).reshape(nb, bb)
        d = half(raw[:, 0:2].tobytes())
        dmin = half(raw[:, 2:4].tobytes())
        sc_raw = raw[:, 4:16].astype(np.int64)
        qh = raw[:, 16:48].astype(np.int64) if five else None
        qs = raw[:, 48:].astype(np.int64) if five else raw[:, 16:].astype(np.int64)
        y = np.empty((nb, 256))
        for j in range(8):  # sub-block j: 32 elements (Q5_K: 5th bit = bit j of qh[l])
            if j < 4:
                sc = sc_raw[:, j] & 63
                m = sc_raw[:, j + 4] & 63
            else:
                sc = (sc_raw[:, j + 4] & 0xF) | ((sc_raw[:, j - 4] >> 6) << 4)
                m = (sc_raw[:, j + 4] >> 4) | ((sc_raw[:, j] >> 6) << 4)
            chunk = qs[:, 32 * (j // 2): 32 * (j // 2) + 32]
            q = (chunk & 0xF) if j % 2 == 0 else (chunk >> 4)
            if five:
                q = q + 16 * ((qh >> j) & 1)
            y[:, 32 * j: 32 * j + 32] = (d * sc)[:, None] * q - (dmin * m)[:, None]
        return y.reshape(-1)
    if ty == 14:  # Q6_K
        nb = n // 256
        raw = np.frombuffer(buf, dtype=np.uint8, count=nb * 210, offset=off).reshape(nb, 210)
        ql, qh = raw[:, 0:128].astype(np.int64), raw[:, 128:192].astype(np.int64)
        sc = raw[:, 192:208].view(np.int8).astype(np.float64)
        d = half(raw[:, 208:210].tobytes())
        y = np.empty((nb, 256))
        for h in range(2):
            L, H = ql[:, 64 * h: 64 * h + 64], qh[:, 32 * h: 32 * h + 32]
            for l in range(32):
                quads = [((L[:, l] & 0xF) | (((H[:, l] >> 0) & 3) << 4)),
                         ((L[:, l + 32] & 0xF) | (((H[:, l] >> 2) & 3) << 4)),
                         ((L[:, l] >> 4) | (((H[:, l] >> 4) & 3) << 4)),
                         ((L[:, l + 32] >> 4) | (((H[:, l] >> 6) & 3) << 4))]
                for k, q in enumerate(quads):
                    e = 128 * h + 32 * k + l
                    y[:, e] = d * sc[:, e // 16] * (q - 32)
        return y.reshape(-1)
    raise ValueError(f"ggml type {ty} not handled")


# ------------------------------------------------------------- safetensors

ST = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (None, 2)}


def st_read(path):
    buf = open(path, "rb").read()
    hl = struct.unpack("<Q", buf[:8])[0]
    hdr = json.loads(buf[8:8 + hl])
    base = 8 + hl
    out = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        n = int(np.prod(e["shape"])) if e["shape"] else 1
        raw = buf[base + b: base + en]
        if e["dtype"] == "BF16":
            x = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            x = np.frombuffer(raw, dtype=ST[e["dtype"]][0], count=n)
        out[name] = x.astype(np.float64).reshape(e["shape"])
    return out


# ------------------------------------------------------------------ models


class Model:
    pass


def load(path):
    m = Model()
    if os.path.isdir(path):
        cfg = json.load(open(os.path.join(path, "config.json")))
        idx = os.path.join(path, "model.safetensors.index.json")
        files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else \
            sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        t = {}
        for f in files:
            t.update(st_read(os.path.join(path, f)))
        m.arch = cfg["model_type"]
        m.E, m.L, m.H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
        m.K = cfg.get("num_key_value_heads") or m.H
        m.hd = cfg.get("head_dim") or m.E // m.H
        m.eps, m.theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
        m.neox = True
        m.inv = 1.0 / (m.theta ** (np.arange(0, m.hd, 2, dtype=np.float64) / m.hd))
        rs = cfg.get("rope_scaling") or {}
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            m.inv = m.inv / rs["factor"]
        elif kind == "llama3":
            f, lo, hi, orig = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], \
                rs["original_max_position_embeddings"]
            out = []
            for x in m.inv:
                wl = 2 * math.pi / x
                if wl < orig / hi:
                    out.append(x)
                elif wl > orig / lo:
                    out.append(x / f)
                else:
                    s = (orig / wl - lo) / (hi - lo)
                    out.append((1 - s) * x / f + s * x)
            m.inv = np.array(out)
        g = lambda n: t.get(n)  # noqa: E731
        m.embed, m.norm = t["model.embed_tokens.weight"], t["model.norm.weight"]
        m.head = m.embed if cfg.get("tie_word_embeddings") or "lm_head.weight" not in t else t["lm_head.weight"]
        m.layers = []
        for i in range(m.L):
            p = f"model.layers.{i}."
            m.layers.append(dict(
                ln1=g(p + "input_layernorm.weight"), ln2=g(p + "post_attention_layernorm.weight"),
                q=g(p + "self_attn.q_proj.weight"), k=g(p + "self_attn.k_proj.weight"),
                v=g(p + "self_attn.v_proj.weight"), o=g(p + "self_attn.o_proj.weight"),
                bq=g(p + "self_attn.q_proj.bias"), bk=g(p + "self_attn.k_proj.bias"),
                bv=g(p + "self_attn.v_proj.bias"), qn=g(p + "self_attn.q_norm.weight"),
                kn=g(p + "self_attn.k_norm.weight"), gate=g(p + "mlp.gate_proj.weight"),
                up=g(p + "mlp.up_proj.weight"), down=g(p + "mlp.down_proj.weight")))
    else:
        kv, t = gguf_read(path)
        a = kv["general.architecture"]
        m.arch = a
        m.E, m.L = kv[f"{a}.embedding_length"], kv[f"{a}.block_count"]
        m.H = kv[f"{a}.attention.head_count"]
        m.K = kv.get(f"{a}.attention.head_count_kv", m.H)
        m.hd = kv.get(f"{a}.attention.key_length", m.E // m.H)
        m.eps = kv[f"{a}.attention.layer_norm_rms_epsilon"]
        m.theta = kv.get(f"{a}.rope.freq_base", 10000.0)
        m.neox = a in ("qwen2", "qwen3")
        m.inv = 1.0 / (m.theta ** (np.arange(0, m.hd, 2, dtype=np.float64) / m.hd))
        if kv.get(f"{a}.rope.scaling.type") == "linear":
            m.inv = m.inv / kv[f"{a}.rope.scaling.factor"]
        if "rope_freqs.weight" in t:
            m.inv = m.inv / t["rope_freqs.weight"]
        g = lambda n: t.get(n)  # noqa: E731
        m.embed, m.norm = t["token_embd.weight"], t["output_norm.weight"]
        m.head = t.get("output.weight", m.embed)
        m.layers = []
        for i in range(m.L):
            p = f"blk.{i}."
            m.layers.append(dict(
                ln1=g(p + "attn_norm.weight"), ln2=g(p + "ffn_norm.weight"), q=g(p + "attn_q.weight"),
                k=g(p + "attn_k.weight"), v=g(p + "attn_v.weight"), o=g(p + "attn_output.weight"),
                bq=g(p + "attn_q.bias"), bk=g(p + "attn_k.bias"), bv=g(p + "attn_v.bias"),
                qn=g(p + "attn_q_norm.weight"), kn=g(p + "attn_k_norm.weight"), gate=g(p + "ffn_gate.weight"),
                up=g(p + "ffn_up.weight"), down=g(p + "ffn_down.weight")))
    T = lambda x: None if x is None else torch.tensor(x, dtype=DT)  # noqa: E731
    m.embed, m.norm, m.head = T(m.embed), T(m.norm), T(m.head)
    m.layers = [{k: T(v) for k, v in L.items()} for L in m.layers]
    m.inv = torch.tensor(np.asarray(m.inv, dtype=np.float64), dtype=DT)
    m.V = m.embed.shape[0]
    return m


def rmsnorm(x, w, eps):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def rope(x, pos, inv, neox):
    """x: [T, heads, hd]; rotates each head by pos[t] * inv."""
    ang = pos[:, None].to(DT) * inv[None, :]  # [T, hd/2]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    if neox:
        h = x.shape[-1] // 2
        a, b = x[..., :h], x[..., h:]
        return torch.cat([a * c - b * s, a * s + b * c], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def forward(m, ids, kv_f16=True):
    """Logits [T, V] of the token ids (positions 0..T-1), float64. kv_f16
    rounds K (after RoPE) and V to float16, as celine's KV cache stores them,
    so that the comparison can be tight."""
    ids = torch.tensor(ids, dtype=torch.long)
    T = len(ids)
    pos = torch.arange(T)
    x = m.embed[ids]
    mask = torch.full((T, T), float("-inf"), dtype=DT).triu(1)
    for L in m.layers:
        h = rmsnorm(x, L["ln1"], m.eps)
        q, k, v = h @ L["q"].T, h @ L["k"].T, h @ L["v"].T
        if L["bq"] is not None:
            q, k, v = q + L["bq"], k + L["bk"], v + L["bv"]
        q, k, v = q.view(T, m.H, m.hd), k.view(T, m.K, m.hd), v.view(T, m.K, m.hd)
        if L["qn"] is not None:
            q, k = rmsnorm(q, L["qn"], m.eps), rmsnorm(k, L["kn"], m.eps)
        q, k = rope(q, pos, m.inv, m.neox), rope(k, pos, m.inv, m.neox)
        if kv_f16:
            k, v = k.to(torch.float16).to(DT), v.to(torch.float16).to(DT)
        rep = m.H // m.K
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(m.hd) + mask
        att = torch.softmax(att, dim=-1)
        o = torch.einsum("hts,shd->thd", att, v).reshape(T, m.H * m.hd)
        x = x + o @ L["o"].T
        h = rmsnorm(x, L["ln2"], m.eps)
        x = x + (torch.nn.functional.silu(h @ L["gate"].T) * (h @ L["up"].T)) @ L["down"].T
    return rmsnorm(x, m.norm, m.eps) @ m.head.T


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--prompt", required=True, help="comma-separated token ids")
    p.add_argument("--prompt2", default="", help="a second prompt (logits only), for batching tests")
    p.add_argument("--gen", type=int, default=64, help="greedy continuation length")
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--rtol", type=float, required=True, help="tolerance for |celine - reference| / max|logit|")
    p.add_argument("--rtol-dequant", type=float, default=0.0,
                   help="quantized models: tolerance when celine runs the weights dequantized to F32")
    p.add_argument("--note", default="")
    a = p.parse_args(argv)
    m = load(a.model)
    prompt = [int(x) for x in a.prompt.split(",")]
    prompt2 = [int(x) for x in a.prompt2.split(",")] if a.prompt2 else []
    logits2 = forward(m, prompt2) if prompt2 else None
    seq, margins = list(prompt), []
    for _ in range(a.gen):
        last = forward(m, seq)[-1]
        top = torch.topk(last, 2)
        margins.append(float(top.values[0] - top.values[1]))
        seq.append(int(top.indices[0]))
    # one pass over prompt + continuation: row i holds the logits after token i,
    # so rows len(prompt)-1 .. end are the greedy steps' distributions
    logits = forward(m, seq[:-1])
    assert [int(i) for i in logits[len(prompt) - 1:].argmax(dim=-1)] == seq[len(prompt):]
    scale = float(logits[:len(prompt)].abs().max())
    base = os.path.basename(a.out)
    with open(a.out + ".logits", "wb") as f:
        f.write(logits.to(torch.float32).numpy().astype("<f4").tobytes())
        if logits2 is not None:
            f.write(logits2.to(torch.float32).numpy().astype("<f4").tobytes())
    model_rel = os.path.relpath(a.model, os.path.join(os.path.dirname(os.path.abspath(a.out)), "..", "models"))
    doc = {
        "model": model_rel, "n_vocab": m.V, "prompt": prompt, "prompt2": prompt2,
        "logits_file": base + ".logits",
        "logits_layout": "float32 LE: [len(prompt) + len(greedy) - 1][n_vocab] for prompt + greedy[:-1], "
                         "then [len(prompt2)][n_vocab]",
        "logit_scale": scale, "rtol": a.rtol, "rtol_dequantized": a.rtol_dequant,
        "tolerance": f"max |celine - reference| <= rtol * logit_scale over every logit",
        "greedy": seq[len(prompt):], "greedy_margins": margins,
        "greedy_rule": "ids must match while the reference's top-1 margin exceeds 4 * rtol * logit_scale; "
                       "after the first step below that margin the runs may diverge",
        "reference": "tools/reference_forward.py (float64 torch, weights dequantized from the file)",
        "kv_cache": "K (after RoPE) and V rounded to float16, as celine stores them",
        "note": a.note,
    }
    json.dump(doc, open(a.out + ".json", "w"), indent=1)
    print(f"{base}: V={m.V} scale={scale:.3f} min margin={min(margins):.4f} greedy[:8]={seq[len(prompt):][:8]}")


if __name__ == "__main__":
    main(sys.argv[1:])
