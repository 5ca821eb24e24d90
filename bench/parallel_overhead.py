"""The parallel code path's overhead on one GPU: the training recipe (`nemotron4.train.recipe.build_recipe`) in one
process against the same recipe on a one-rank mesh (`parallel.force_mesh`: a 1-rank process group, the (dp, tp)
mesh, the parallel step hooks; a size-1 dimension adds no DTensor or FSDP2 wrapping), in one run.

Both: Minitron-4B by default (dim 3072, 32 layers, 24/8 heads, ffn 9216, vocab 256000), seq 4096, global batch 8,
bf16 autocast over fp32 masters, fused AdamW, clip 1.0, `train_step` as `nemotron4 train` runs it, with whatever
fast paths the recipe gives the layout (printed: whole-block compile, fused loss, weights cast once per step).
Checks that both take the same first-step loss from the same weights and data; writes `parallel_over_single`
(the mesh's tokens/s over the single process's), MFU (docs/paper.md convention, 989e12 peak) and each path's peak
memory beside `nemotron4 plan --layout nemotron4`'s prediction for it.

    python bench/parallel_overhead.py --out bench/results/parallel_overhead_h200.json
    python bench/parallel_overhead.py --device cpu --model tiny --seq-len 64 --global-batch 4 --micro 2 \
        --warmup 1 --steps 1 --no-compile --attention auto --out /tmp/po.json       # smoke test (gloo)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train import time_steps  # noqa: E402  (bench/train.py)

from nemotron4 import ModelConfig  # noqa: E402
from nemotron4.distributed.layout import ParallelDims  # noqa: E402
from nemotron4.distributed.plan import memory_per_gpu  # noqa: E402
from nemotron4.distributed.runtime import setup_parallel, shutdown  # noqa: E402
from nemotron4.flops import H100_BF16_PEAK, flops_per_token, mfu  # noqa: E402
from nemotron4.train.config import OptimSection, TrainSection  # noqa: E402
from nemotron4.train.optim import build_optimizer  # noqa: E402
from nemotron4.train.recipe import build_recipe  # noqa: E402


def time_recipe(cfg: ModelConfig, train: TrainSection, device: torch.device, dtype: torch.dtype, parallel,
                batches: torch.Tensor, warmup: int, steps: int) -> dict:
    recipe = build_recipe(cfg, train, device, dtype, parallel, seed=0)
    optimizer = build_optimizer(recipe.model, OptimSection(fused="true" if device.type == "cuda" else "false"),
                                device)
    r = time_steps(recipe.step_model, optimizer, batches, train.micro_batch_size, recipe.loss_fn, device, warmup,
                   steps, recipe.step_context, autocast=recipe.autocast, hooks=recipe.hooks)
    return {"paths": recipe.paths, **r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minitron-4b")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--micro", type=int, default=2, help="micro-batch size (accumulation = global / micro)")
    ap.add_argument("--attention", default="cudnn", help="SDPA backend (train.attention_backend)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2, help="time single, mesh, single, mesh, ... this many times each")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="bench/results/parallel_overhead_h200.json")
    args = ap.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = ModelConfig.from_name(args.model, max_seq_len=max(args.seq_len, 4096))
    train = TrainSection(seq_len=args.seq_len, micro_batch_size=args.micro, compile=not args.no_compile,
                         fused_loss=True, cast_weights_once=True, attention_backend=args.attention)
    batches = torch.randint(0, cfg.vocab_size, (args.global_batch, args.seq_len + 1),
                            generator=torch.Generator().manual_seed(0)).to(device)
    fpt = flops_per_token(cfg, args.seq_len)
    res: dict = {"bench": "parallel_overhead", "command": " ".join(["python"] + sys.argv),
                 "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "none (cpu)",
                 "torch": torch.__version__, "python": platform.python_version(), "model": args.model,
                 "seq_len": args.seq_len, "global_batch": args.global_batch, "micro_batch": args.micro,
                 "flops_per_token": fpt, "mfu_convention": f"6N + 12 L T d per token, {H100_BF16_PEAK:.4g} FLOP/s peak",
                 "runs": {}}
    planned = memory_per_gpu(cfg, 1, 1, args.seq_len, args.micro, layout="nemotron4",
                             accumulation=args.global_batch // args.micro).total / 2**30
    parallel = setup_parallel(ParallelDims(dp=1, tp=1), device, "nccl" if device.type == "cuda" else "gloo")
    try:
        for rep, (name, layout) in [(i, v) for i in range(args.repeat) for v in (("single", None), ("mesh", parallel))]:
            r = time_recipe(cfg, train, device, dtype, layout, batches, args.warmup, args.steps)
            gc.collect()  # the previous model and optimizer go before the next is built
            if device.type == "cuda":
                torch.cuda.empty_cache()
            r.update(mfu=mfu(cfg, args.seq_len, r["tokens_per_s"]), planned_mem_gib=planned,
                     mem_over_planned=r["peak_mem_gib"] / planned)
            res["runs"].setdefault(name, []).append(r)
            print(f"{name:7s} #{rep} {r['tokens_per_s']:9.0f} tok/s  MFU {100 * r['mfu']:5.1f}%  "
                  f"peak {r['peak_mem_gib']:6.1f} GiB (plan {planned:.1f})  paths {r['paths']}", flush=True)
    finally:
        shutdown()
    single, mesh = res["runs"]["single"], res["runs"]["mesh"]
    best = {name: max(r["tokens_per_s"] for r in runs) for name, runs in res["runs"].items()}
    res["tokens_per_s_best"], res["mfu_best"] = best, {k: mfu(cfg, args.seq_len, v) for k, v in best.items()}
    res["first_loss_equal"] = single[0]["losses"][0] == mesh[0]["losses"][0]
    res["first_loss_rel_diff"] = abs(single[0]["losses"][0] - mesh[0]["losses"][0]) / abs(single[0]["losses"][0])
    res["parallel_over_single"] = best["mesh"] / best["single"]  # best of the repeats each
    res["single_spread"] = (max(r["tokens_per_s"] for r in single) - min(r["tokens_per_s"] for r in single)) / best[
        "single"]  # the same version timed again: differences below this are noise
    print(f"parallel_over_single {res['parallel_over_single']:.4f} (best of {args.repeat}; single's own spread "
          f"{100 * res['single_spread']:.1f}%)  first loss single {single[0]['losses'][0]:.6f} "
          f"mesh {mesh[0]['losses'][0]:.6f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
