#!/usr/bin/env python3
"""Reference CPU speed of HF transformers' Gemma-2 `generate` (greedy, KV cache), for `gemma_decode`.

Pinned reference stack (the /work/pyref venv):
    torch==2.15.0  transformers==5.24.0  tokenizers==0.23.3  safetensors==0.8.0

A Gemma-2-2b-shaped `Gemma2ForCausalLM` (26 layers, hidden 2304, vocab 256000, tied embedding) with random
N(0, 0.02) weights, eager attention, float32, 2 threads (the same dtype and threads as the Rust bench). For
each batch (default 1 and 8) a 128-token random prompt (first token <bos>) generates exactly 64 new tokens
greedily (`min_new_tokens = max_new_tokens`, no stop). It prints one JSON line per batch with the median over
--runs timed generations after --warmup: the whole generation's seconds, the prefill's seconds (a
`max_new_tokens=1` generation of the same prompt), and the decode throughput
`batch * (new_tokens - 1) / (total - prefill)` in tokens/s, the number the Rust bench reports as
`decode_tokens_per_s`.

    /work/pyref/bin/python benches/reference/hf_gemma_generate.py            # real shapes (~10.5 GB)
    /work/pyref/bin/python benches/reference/hf_gemma_generate.py --small    # tiny smoke test
"""
from __future__ import annotations

PINNED = {"torch": "2.15.0", "transformers": "5.24.0"}

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import transformers
from transformers import Gemma2Config, Gemma2ForCausalLM
from transformers.models.gemma2.modeling_gemma2 import Gemma2RotaryEmbedding

for name, module in [("torch", torch), ("transformers", transformers)]:
    if module.__version__.split("+")[0] != PINNED[name]:
        print(f"WARNING: {name} {module.__version__}, pinned {PINNED[name]}", file=sys.stderr)


def make_config(small: bool) -> Gemma2Config:
    if small:
        dims = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, num_hidden_layers=4)
    else:
        dims = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_attention_heads=8,
                    num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, num_hidden_layers=26)
    cfg = Gemma2Config(sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                       rms_norm_eps=1e-6, max_position_embeddings=8192, tie_word_embeddings=True,
                       pad_token_id=0, bos_token_id=2, eos_token_id=1, **dims)
    cfg._attn_implementation = "eager"
    return cfg


# The dtype of the weights and the compute (--dtype).
DTYPE = torch.float32


def build_model(cfg: Gemma2Config, seed: int) -> Gemma2ForCausalLM:
    """Random weights without HF's slow initialisation (meta device, then in-place normal fills)."""
    with torch.device("meta"):
        model = Gemma2ForCausalLM(cfg).to(DTYPE)
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=g)
        model.model.rotary_emb = Gemma2RotaryEmbedding(cfg)
        model.model.embed_tokens.embed_scale.fill_(cfg.hidden_size ** 0.5)
    model.tie_weights()
    model.config._attn_implementation = "eager"
    return model.eval()


def timed_generate(model, ids, new_tokens: int) -> float:
    t = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    dt = time.perf_counter() - t
    assert out.shape[1] == ids.shape[1] + new_tokens
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="weights and compute (bfloat16: what a CPU user of HF usually loads)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    global DTYPE
    DTYPE = getattr(torch, args.dtype)

    torch.set_num_threads(args.threads)
    cfg = make_config(args.small)
    model = build_model(cfg, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    for batch in (int(b) for b in args.batches.split(",")):
        ids = torch.randint(3, cfg.vocab_size, (batch, args.prompt_len), generator=g)
        ids[:, 0] = 2
        totals, prefills = [], []
        with torch.inference_mode():
            for i in range(args.warmup + args.runs):
                total = timed_generate(model, ids, args.new_tokens)
                prefill = timed_generate(model, ids, 1)
                if i >= args.warmup:
                    totals.append(total)
                    prefills.append(prefill)
        total, prefill = statistics.median(totals), statistics.median(prefills)
        print(json.dumps({
            "impl": "hf_transformers_generate",
            "batch": batch,
            "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "total_s": round(total, 4),
            "prefill_s": round(prefill, 4),
            "decode_tokens_per_s": round(batch * (args.new_tokens - 1) / (total - prefill), 3),
            "threads": args.threads,
            "dtype": args.dtype,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }), flush=True)


if __name__ == "__main__":
    main()
