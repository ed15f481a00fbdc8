#!/usr/bin/env python3
"""Reference f32 GEMM speed of PyTorch on the CPU: [4096, 4608] @ [4608, 16384] on 2 threads.

Pinned reference stack (the /work/pyref venv):
    torch==2.15.0  transformers==5.24.0  tokenizers==0.23.3  safetensors==0.8.0

Prints one JSON line: the median GFLOP/s over --runs timed runs after --warmup untimed ones
(FLOPs = 2 * M * K * N). The output buffer is preallocated (torch.matmul(a, b, out=c)).

    /work/pyref/bin/python benches/reference/torch_gemm.py           # 4096x4608 @ 4608x16384
    /work/pyref/bin/python benches/reference/torch_gemm.py --small   # 256x288 @ 288x1024 smoke test
"""
from __future__ import annotations

PINNED = {"torch": "2.15.0"}

import argparse
import json
import platform
import statistics
import sys
import time

import torch

if torch.__version__.split("+")[0] != PINNED["torch"]:
    print(f"WARNING: torch {torch.__version__} is installed, the reference numbers were pinned to "
          f"torch=={PINNED['torch']}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="256x288 @ 288x1024, for a quick smoke test")
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--k", type=int, default=4608)
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = ap.parse_args()
    m, k, n = (256, 288, 1024) if args.small else (args.m, args.k, args.n)

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    a = torch.randn(m, k, generator=g, dtype=torch.float32).to(dtype)
    b = torch.randn(k, n, generator=g, dtype=torch.float32).to(dtype)
    c = torch.empty(m, n, dtype=dtype)
    times = []
    for i in range(args.warmup + args.runs):
        t = time.perf_counter()
        torch.matmul(a, b, out=c)
        dt = time.perf_counter() - t
        if i >= args.warmup:
            times.append(dt)
    # spot check one entry against a float64 dot product
    ref = (a[m // 2].double() @ b[:, n // 3].double()).item()
    # f32: sums rounded to f32; bf16: the product rounded to bf16 (8 significant bits)
    tol = 1e-3 * (1 + abs(ref)) if args.dtype == "float32" else 1e-2 * (abs(ref) + k ** 0.5)
    assert abs(c[m // 2, n // 3].item() - ref) <= tol
    flop = 2.0 * m * k * n
    med = statistics.median(times)
    print(json.dumps({
        "bench": "torch_gemm_" + ("f32" if args.dtype == "float32" else "bf16"),
        "shape": f"{m}x{k} @ {k}x{n}",
        "small": args.small,
        "gflops_per_s": round(flop / med / 1e9, 2),
        "median_s": round(med, 6),
        "runs_s": [round(t, 6) for t in times],
        "gflop": round(flop / 1e9, 3),
        "threads": args.threads,
        "torch": torch.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "machine": platform.machine(),
    }), flush=True)


if __name__ == "__main__":
    main()
