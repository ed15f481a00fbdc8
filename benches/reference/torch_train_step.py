#!/usr/bin/env python3
"""PyTorch reference for `cargo bench --bench train_step`: one crosscoder training step at the real shape,
2 x 2304 activations -> 16,384 latents, batch 1,024, f32, 2 threads.

  - batch_topk_k100: dictionary_learning's own `BatchTopKCrossCoderTrainer.update(step, x)` (k = 100;
    forward, batch top-k, AuxK bookkeeping, backward, grad clip 1.0, Adam, LR scheduler);
  - l1: the ckkissane recipe in plain PyTorch (squared-sum reconstruction + lambda * sum of per-model
    decoder norms weighted L1, backward, grad clip 1.0, Adam), the same step as our `TrainConfig::ckkissane`.

Usage:
    python benches/reference/torch_train_step.py /path/to/dictionary_learning-checkout [--reps 5]
The checkout is the science-of-finetuning fork at the commit pinned in
fixtures/crosscoder/training/generate_training_fixtures.py (imported, never copied). Versions used for the
recorded numbers: torch 2.15.0 (CPU wheel), Python 3.11.

Prints one JSON line per case: median seconds per step over the repetitions (after one warm-up step), and
steps/s.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

D, F, BATCH = 2304, 16_384, 1024
ROOT = Path(__file__).resolve().parents[2]


def reference_modules(checkout: Path):
    path = ROOT / "fixtures/crosscoder/training/generate_training_fixtures.py"
    spec = importlib.util.spec_from_file_location("training_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dictionary, cc_mod, _ = mod.import_reference(mod.load_sibling_script(), checkout)
    return dictionary, cc_mod


def timed(step, reps):
    step(0)  # warm-up (and BatchTopK's step-0 geometric median)
    times = []
    for i in range(reps):
        t = time.perf_counter()
        step(i + 1)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.rand(BATCH, 2, D) * 2 - 1
    dictionary, cc_mod = reference_modules(Path(args.checkout))

    trainer = cc_mod.BatchTopKCrossCoderTrainer(
        steps=1_000_000, activation_dim=D, dict_size=F, k=100, layer=13, lm_name="bench",
        lr=1e-4, warmup_steps=0, device="cpu",
    )
    s = timed(lambda step: trainer.update(step, x.clone()), args.reps)
    print(json.dumps({"case": "batch_topk_k100", "torch": torch.__version__, "s_per_step": s, "steps_per_s": 1 / s}))

    w_dec = torch.randn(F, 2, D)
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * 0.08
    params = {
        "W_enc": torch.nn.Parameter(w_dec.permute(1, 2, 0).contiguous()),
        "W_dec": torch.nn.Parameter(w_dec.clone()),
        "b_enc": torch.nn.Parameter(torch.zeros(F)),
        "b_dec": torch.nn.Parameter(torch.zeros(2, D)),
    }
    opt = torch.optim.Adam(params.values(), lr=5e-5, betas=(0.9, 0.999))

    def l1_step(_step):
        acts = torch.relu(torch.einsum("bnd,ndh->bh", x, params["W_enc"]) + params["b_enc"])
        x_hat = torch.einsum("bh,hnd->bnd", acts, params["W_dec"]) + params["b_dec"]
        l2 = (x_hat - x).pow(2).sum(dim=(1, 2)).mean()
        l1 = (acts * params["W_dec"].norm(dim=-1).sum(dim=1)[None, :]).sum(-1).mean()
        loss = l2 + 2.0 * l1
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        opt.zero_grad()

    s = timed(l1_step, args.reps)
    print(json.dumps({"case": "l1", "torch": torch.__version__, "s_per_step": s, "steps_per_s": 1 / s}))


if __name__ == "__main__":
    main()
