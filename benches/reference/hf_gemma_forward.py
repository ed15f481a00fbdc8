#!/usr/bin/env python3
"""Reference CPU speed of HF transformers' Gemma-2 forward pass, up to layer 13.

Pinned reference stack (the /work/pyref venv):
    torch==2.15.0  transformers==5.24.0  tokenizers==0.23.3  safetensors==0.8.0

A Gemma-2-2b-shaped model (hidden 2304, intermediate 9216, 8 query / 4 KV heads, head_dim 256,
vocab 256000) with random weights but only 14 decoder layers (layers 0..=13, the ones the seed's
`blocks.13.hook_resid_post` needs), eager attention, float32, 2 threads. Only the base model
(`Gemma2Model`) runs: no lm_head / unembedding matmul. Its final RMSNorm is applied to the output
of layer 13; that is 2304 values per token, negligible.

For each configuration (batch x tokens, default 1x64 and 8x64) it prints one JSON line with the
median over --runs timed runs after --warmup untimed ones: tokens/s, the estimated GFLOP/s, peak RSS
(ru_maxrss of this process so far, so it includes the model) and the bytes of the weights.

    /work/pyref/bin/python benches/reference/hf_gemma_forward.py            # real shapes (~6.7 GB)
    /work/pyref/bin/python benches/reference/hf_gemma_forward.py --small    # tiny smoke test

Run it on a quiet machine, beside the Rust benchmark, in the same sitting.
"""
from __future__ import annotations

PINNED = {"torch": "2.15.0", "transformers": "5.24.0", "tokenizers": "0.23.3", "safetensors": "0.8.0"}

import argparse
import json
import platform
import resource
import statistics
import sys
import time


def check_versions() -> dict:
    import safetensors
    import tokenizers
    import torch
    import transformers

    found = {
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }
    for k, v in found.items():
        if PINNED[k] != v:
            print(f"WARNING: {k} {v} is installed, the reference numbers were pinned to {k}=={PINNED[k]}",
                  file=sys.stderr)
    return found


VERSIONS = check_versions()

import torch
from transformers import Gemma2Config
from transformers.models.gemma2.modeling_gemma2 import Gemma2Model, Gemma2RotaryEmbedding


def make_config(small: bool, layers: int) -> Gemma2Config:
    if small:
        dims = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16)
    else:
        dims = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_attention_heads=8,
                    num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256)
    cfg = Gemma2Config(num_hidden_layers=layers, sliding_window=4096, attn_logit_softcapping=50.0,
                       final_logit_softcapping=30.0, rms_norm_eps=1e-6, max_position_embeddings=8192, **dims)
    cfg._attn_implementation = "eager"  # the only implementation that applies the attention soft-cap
    return cfg


# The dtype of the weights and the compute (--dtype).
DTYPE = torch.float32


def build_model(cfg: Gemma2Config, seed: int) -> Gemma2Model:
    """Random weights without HF's slow initialisation: build on the meta device, allocate, then
    fill every parameter in place with N(0, 0.02) (RMSNorm offsets too)."""
    with torch.device("meta"):
        model = Gemma2Model(cfg).to(DTYPE)
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=g)
        # to_empty leaves the non-persistent buffers uninitialised: recompute them
        model.rotary_emb = Gemma2RotaryEmbedding(cfg)
        model.embed_tokens.embed_scale.fill_(cfg.hidden_size ** 0.5)
    for name, b in model.named_buffers():
        assert torch.isfinite(b).all(), name
    model.config._attn_implementation = "eager"
    return model.eval()


def flops_per_token(cfg: Gemma2Config, seq: int) -> float:
    """Matmul FLOPs per token through all layers (2 * weights), plus eager attention's full T x T
    score and value products (HF computes the whole square and masks it)."""
    d, f, h, kv, hd = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads,
                       cfg.num_key_value_heads, cfg.head_dim)
    per_layer = 2 * (d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f) + 4 * h * hd * seq
    return float(per_layer * cfg.num_hidden_layers)


def peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny dimensions, for a quick smoke test")
    ap.add_argument("--layers", type=int, default=14, help="decoder layers (14 = layers 0..=13)")
    ap.add_argument("--configs", default="1x64,8x64", help="comma-separated BATCHxTOKENS")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per configuration (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="weights and compute (bfloat16: what a CPU user of HF usually loads)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    global DTYPE
    DTYPE = getattr(torch, args.dtype)

    torch.set_num_threads(args.threads)
    cfg = make_config(args.small, args.layers)
    t0 = time.perf_counter()
    model = build_model(cfg, args.seed)
    init_s = time.perf_counter() - t0
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())

    g = torch.Generator().manual_seed(args.seed + 1)
    for spec in args.configs.split(","):
        batch, seq = (int(x) for x in spec.lower().split("x"))
        ids = torch.randint(3, cfg.vocab_size, (batch, seq), generator=g)
        ids[:, 0] = 2  # BOS
        times = []
        with torch.inference_mode():
            for i in range(args.warmup + args.runs):
                t = time.perf_counter()
                out = model(input_ids=ids, use_cache=False)
                dt = time.perf_counter() - t
                if i >= args.warmup:
                    times.append(dt)
        h = out.last_hidden_state
        assert h.shape == (batch, seq, cfg.hidden_size) and torch.isfinite(h).all()
        med = statistics.median(times)
        tok_s = batch * seq / med
        print(json.dumps({
            "bench": "hf_gemma2_forward_to_layer_%d" % (args.layers - 1),
            "config": f"{batch}x{seq}",
            "batch": batch,
            "seq": seq,
            "layers": args.layers,
            "small": args.small,
            "tokens_per_s": round(tok_s, 3),
            "median_s": round(med, 6),
            "runs_s": [round(t, 6) for t in times],
            "gflop_per_token": round(flops_per_token(cfg, seq) / 1e9, 4),
            "gflops_per_s": round(tok_s * flops_per_token(cfg, seq) / 1e9, 2),
            "peak_rss_bytes": peak_rss_bytes(),
            "weight_bytes": weight_bytes,
            "n_params": n_params,
            "init_s": round(init_s, 2),
            "threads": args.threads,
            "attn_implementation": model.config._attn_implementation,
            "dtype": args.dtype,
            "torch": torch.__version__,
            "transformers": VERSIONS["transformers"],
            "machine": platform.machine(),
        }), flush=True)


if __name__ == "__main__":
    main()
