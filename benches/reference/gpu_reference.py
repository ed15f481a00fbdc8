#!/usr/bin/env python3
"""PyTorch on the GPU, beside `gpu_check --bench` on the same card in the same run (`scripts/gpu-check run`).

The same workloads, named as `stereo::gpu_check` names them, each at three matmul precisions:
  - f32:  float32 tensors, torch.set_float32_matmul_precision("highest")  (TF32 off: true f32 products)
  - tf32: float32 tensors, torch.set_float32_matmul_precision("high")     (TF32 tensor cores: what burn-cuda
          0.21 does for every f32 matmul, so this is the like-for-like comparison)
  - bf16: bfloat16 tensors

Workloads:
  - encode/F{F}/N{N}: relu(x @ W_enc + b_enc), x [N, 2 * 2304] and W_enc [2 * 2304, F] on the card
    (F = 16,384 and 73,728; N = 4,096 and 16,384); gemm/F{F}/N{N}: the product alone.
  - forward/32x128: HF transformers Gemma2Model in the shapes of google/gemma-2-2b with 14 decoder layers
    (layers 0..=13, what blocks.13.hook_resid_post needs), random weights, eager attention, 32 x 128 tokens.
  - ceiling: the card's plain bf16 GEMM rate, 8192 x 8192 x 8192.

Each is timed with torch.cuda.synchronize() around every repetition, after one warm-up; the median is kept.
Versions are whatever the node has (recorded in the output; the check was written against torch 2.11 and
transformers 5.17, the versions of our GPU nodes).

    python3 benches/reference/gpu_reference.py --out torch_reference.json [--repeats 5] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

D, N_MODELS = 2304, 2
DICT_SIZES = [16_384, 73_728]
ROWS = [4096, 16_384]
FORWARD = (32, 128)
PRECISIONS = ["f32", "tf32", "bf16"]


def set_precision(precision: str) -> torch.dtype:
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def timed(fn, repeats: int) -> list[float]:
    fn()
    torch.cuda.synchronize()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def record(out: list, name: str, precision: str, rows: int, seconds: list[float], flop: float | None):
    median = statistics.median(seconds)
    entry = {
        "name": name,
        "precision": precision,
        "tokens_per_second": rows / median,
        "gflops": None if flop is None else flop / median / 1e9,
        "seconds": seconds,
    }
    out.append(entry)
    rate = "" if flop is None else f", {flop / median / 1e12:.1f} TFLOP/s"
    print(f"{name} [{precision}]: {rows / median:.0f} tokens/s{rate}", file=sys.stderr, flush=True)


def encode(out: list, repeats: int, dict_sizes, rows_list):
    gen = torch.Generator(device="cuda").manual_seed(0)
    inner = N_MODELS * D
    for f in dict_sizes:
        for precision in PRECISIONS:
            dtype = set_precision(precision)
            scale = inner ** -0.5
            w = ((torch.rand(inner, f, device="cuda", generator=gen) * 2 - 1) * scale).to(dtype)
            b = ((torch.rand(f, device="cuda", generator=gen) * 2 - 1) * 0.05).to(dtype)
            for n in rows_list:
                x = (torch.rand(n, inner, device="cuda", generator=gen) * 2 - 1).to(dtype)
                flop = 2.0 * n * inner * f
                with torch.inference_mode():
                    record(out, f"encode/F{f}/N{n}", precision, n,
                           timed(lambda: torch.relu(x @ w + b), repeats), flop)
                    record(out, f"gemm/F{f}/N{n}", precision, n, timed(lambda: x @ w, repeats), flop)
                del x
            del w, b
            torch.cuda.empty_cache()


def forward(out: list, repeats: int, batch: int, seq_len: int, layers: int):
    from transformers import Gemma2Config
    from transformers.models.gemma2.modeling_gemma2 import Gemma2Model

    config = Gemma2Config(
        vocab_size=256_000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=layers,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=8192,
        sliding_window=4096, query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh",
    )
    config._attn_implementation = "eager"
    ids = torch.tensor([[2] + [(b * 7919 + t * 104_729) % 256_000 for t in range(1, seq_len)]
                        for b in range(batch)], device="cuda")
    mask = torch.ones_like(ids)
    for precision in PRECISIONS:
        dtype = set_precision(precision)
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = Gemma2Model(config).to(dtype).eval()
        with torch.inference_mode():
            seconds = timed(lambda: model(input_ids=ids, attention_mask=mask), repeats)
        record(out, f"forward/{batch}x{seq_len}", precision, batch * seq_len, seconds, None)
        del model
        torch.cuda.empty_cache()


def ceiling(out: list, repeats: int, size: int):
    set_precision("bf16")
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        record(out, f"gemm_bf16/{size}", "bf16", size, timed(lambda: a @ b, repeats), 2.0 * size ** 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test of this script)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_reference.py: no CUDA device visible to PyTorch")
    import transformers

    report = {
        "format": "stereo-gpu-reference/1",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "precisions": {
            "f32": 'float32, set_float32_matmul_precision("highest") (TF32 off)',
            "tf32": 'float32, set_float32_matmul_precision("high") (TF32 tensor cores)',
            "bf16": "bfloat16 tensors",
        },
        "measurements": [],
    }
    out = report["measurements"]
    started = time.time()
    if args.quick:
        encode(out, args.repeats, [1024], [256])
        forward(out, args.repeats, 2, 16, 2)
        ceiling(out, args.repeats, 1024)
    else:
        encode(out, args.repeats, DICT_SIZES, ROWS)
        forward(out, args.repeats, *FORWARD, 14)
        ceiling(out, args.repeats, 8192)
    report["seconds"] = time.time() - started
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
