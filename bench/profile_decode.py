"""Where a compiled batch-1 decode step spends its time: tokens/s and the top GPU kernels of a few steps.

    python bench/profile_decode.py [--model 15b] [--int8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemotron4 import ModelConfig, build_model  # noqa: E402
from nemotron4.inference import generate_tokens, quantize_int8, remove_caches  # noqa: E402
from nemotron4.inference.generation import compiled_decode  # noqa: E402


def tokens_per_s(model, prompt, new) -> float:
    def run(n):
        return generate_tokens(model, [prompt], n, compile=True)

    run(new)
    run(new)
    times = {}
    for n in (1, new):
        ts = []
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(n)
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        times[n] = sorted(ts)[1]
    return (new - 1) / (times[new] - times[1])


def profile(model, prompt, steps: int = 8) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        generate_tokens(model, [prompt], steps, compile=True)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="15b")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--variants", default="bf16,int8")
    args = ap.parse_args()
    import torch._inductor.config as inductor

    inductor.coordinate_descent_tuning = True
    inductor.triton.unique_kernel_names = True
    inductor.fx_graph_cache = True
    cfg = ModelConfig.from_name(args.model)
    model = build_model(cfg, device="cuda", dtype=torch.bfloat16, seed=0).eval()
    prompt = list(range(100, 228))
    rows = []
    for variant in args.variants.split(","):
        if variant == "int8":
            remove_caches(model)
            quantize_int8(model)
            torch._dynamo.reset()
            compiled_decode.cache_clear()
        t0 = time.perf_counter()
        tps = tokens_per_s(model, prompt, args.new_tokens)
        rows.append((variant, tps, time.perf_counter() - t0))
        print(f"{variant}: {tps:.1f} tok/s", flush=True)
        profile(model, prompt)
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} tok/s | {r[2]:.0f} s incl. compile |")


if __name__ == "__main__":
    main()
