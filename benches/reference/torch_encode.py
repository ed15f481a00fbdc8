#!/usr/bin/env python3
"""PyTorch reference for `cargo bench --bench encode_throughput`: crosscoder encode at the real shapes, 2 threads.

Measures, for 2 x 2304 activations -> F latents (F = 16,384 at batch 256 / 1,024 / 4,096; F = 73,728 at
batch 1,024), f32:
  - plain:   torch.relu(x.reshape(N, 2*d) @ W + b)
  - dl:      dictionary_learning CrossCoder.encode(x)  (x: [N, 2, d]; einsum + sum + bias + relu)
  - gemm:    torch.matmul of [N, 2*d] @ [2*d, F]        (the machine's GEMM rate through torch)
  - numpy:   numpy.dot of the same shapes               (OpenBLAS from the numpy wheel)

Usage:
    python benches/reference/torch_encode.py /path/to/dictionary_learning-checkout [--quick]
    (or DICTIONARY_LEARNING_PATH=...). Without a checkout, the `dl` rows are skipped.

Prints one JSON line per measurement (median seconds over the repetitions, tokens/s, GFLOP/s, where
GFLOP = 2 * N * 2d * F / 1e9) and a Markdown table at the end.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

D, N_MODELS = 2304, 2
CASES = [(16_384, [256, 1024, 4096]), (73_728, [1024])]


def timeit(fn, min_reps=3, min_seconds=4.0):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 50:
            break
    return statistics.median(times), len(times)


def import_crosscoder(checkout):
    if not checkout:
        return None
    pkg = types.ModuleType("dictionary_learning")
    pkg.__path__ = [str(Path(checkout) / "dictionary_learning")]
    sys.modules["dictionary_learning"] = pkg
    from dictionary_learning.dictionary import CrossCoder

    return CrossCoder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout", nargs="?", default=os.environ.get("DICTIONARY_LEARNING_PATH"))
    ap.add_argument("--quick", action="store_true", help="one repetition each (smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    CrossCoder = import_crosscoder(args.checkout)
    reps = dict(min_reps=1, min_seconds=0.0) if args.quick else {}
    print(json.dumps({"torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads()}))
    rows = []
    gen = torch.Generator().manual_seed(0)
    for f, batches in CASES:
        k = N_MODELS * D
        w = torch.randn(k, f, generator=gen) / k**0.5
        b = torch.randn(f, generator=gen) * 0.05
        w_np = w.numpy()
        cc = None
        if CrossCoder is not None:
            cc = CrossCoder(D, f, N_MODELS)
            cc.eval()
        for n in batches:
            x = torch.randn(n, N_MODELS, D, generator=gen)
            x2 = x.reshape(n, k)
            x_np = x2.numpy()
            flop = 2.0 * n * k * f
            candidates = {
                "plain": lambda: torch.relu(x.reshape(n, k) @ w + b),
                "gemm": lambda: torch.matmul(x2, w),
                "numpy": lambda: np.dot(x_np, w_np),
            }
            if cc is not None:
                candidates["dl"] = lambda: cc.encode(x)
            for name, fn in candidates.items():
                with torch.no_grad():
                    secs, count = timeit(fn, **reps)
                row = {
                    "impl": name,
                    "F": f,
                    "N": n,
                    "seconds": secs,
                    "reps": count,
                    "tokens_per_s": n / secs,
                    "gflop_per_s": flop / secs / 1e9,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        del w, w_np, cc
    print("\n| impl | F | N | tokens/s | GFLOP/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['impl']} | {r['F']} | {r['N']} | {r['tokens_per_s']:.0f} | {r['gflop_per_s']:.1f} |")


if __name__ == "__main__":
    main()
