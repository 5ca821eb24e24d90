"""Where one training step of ours spends its GPU time: kernels grouped by kind, and GPU idle time.

Times the step bench/train.py times (trainer's `train_step`, compiled blocks, fused loss), then profiles one step
and prints the GPU time of each kernel group (GEMM, attention, compiled elementwise, casts/copies, optimizer,
embedding, other), their share of the step, the top kernels, and the step's wall time.

    python bench/profile_train.py [--micro 2] [--model minitron-4b]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemotron4 import ModelConfig  # noqa: E402
from nemotron4.flops import mfu as flops_mfu  # noqa: E402
from nemotron4.train.config import OptimSection, TrainSection  # noqa: E402
from nemotron4.train.optim import build_optimizer  # noqa: E402
from nemotron4.train.recipe import build_recipe  # noqa: E402
from nemotron4.train.step import train_step  # noqa: E402

GROUPS = [  # first match wins
    ("attention", ("fmha", "flash", "cudnn", "attn", "sdpa")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "sm90", "wgmma", "splitk")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "norm_kernel", "lpnorm")),
    ("embedding", ("embedding", "indexing_backward", "index_put", "sort", "radix", "segment")),
    ("compiled (triton)", ("triton",)),
    ("cast/copy", ("copy", "convert", "cast")),
    ("eager elementwise", ("elementwise", "vectorized", "reduce", "fill")),
]


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minitron-4b")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--micro", type=int, default=2)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--chunk", type=int, default=4096, help="fused loss chunk (tokens)")
    args = ap.parse_args()

    device = torch.device("cuda")
    cfg = ModelConfig.from_name(args.model, max_seq_len=max(args.seq_len, 4096))
    torch.manual_seed(0)
    train = TrainSection(seq_len=args.seq_len, micro_batch_size=args.micro, compile=True, fused_loss=True,
                         cast_weights_once=True, attention_backend="cudnn")
    recipe = build_recipe(cfg, train, device, torch.bfloat16, seed=0)  # what `nemotron4 train` builds
    print(f"paths {recipe.paths}", flush=True)
    model = recipe.step_model.train()
    optimizer = build_optimizer(recipe.model, OptimSection(fused="true"), device)
    autocast, cast = recipe.autocast, recipe.step_context
    batches = torch.randint(0, cfg.vocab_size, (args.global_batch, args.seq_len + 1), device=device)
    micro = list(batches.split(args.micro))

    loss_fn = functools.partial(recipe.loss_fn, chunk_size=args.chunk)  # the recipe's fused loss, its chunk set

    def step():
        return train_step(model, optimizer, micro, 1e-4, 1.0, autocast, loss_fn, step_context=cast)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 3
    tokens = args.global_batch * args.seq_len
    mfu = flops_mfu(cfg, args.seq_len, tokens / wall)
    print(f"step {wall * 1e3:.1f} ms, {tokens / wall:,.0f} tok/s, MFU {mfu:.1%}", flush=True)

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_group: dict[str, float] = defaultdict(float)
    by_name: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for e in kernels:
        us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        by_group[group_of(e.name)] += us
        by_name[e.name][0] += us
        by_name[e.name][1] += 1
    busy = sum(by_group.values())
    print(f"\nGPU busy {busy / 1e3:.1f} ms of a {wall * 1e3:.1f} ms step ({busy / 1e3 / (wall * 1e3):.1%})")
    print("\n| group | ms | share of step |\n|---|---|---|")
    for g, us in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"| {g} | {us / 1e3:.1f} | {us / 1e3 / (wall * 1e3):.1%} |")
    print("\n| top kernels | calls | ms | group |\n|---|---|---|---|")
    for name, (us, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"| {name[:90]} | {n} | {us / 1e3:.1f} | {group_of(name)} |")


if __name__ == "__main__":
    main()
