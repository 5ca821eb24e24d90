"""The parallel code path's overhead on one GPU: the training recipe (`nemotron4.train.recipe.build_recipe`) in one
process against the same recipe on a one-rank mesh, in one run. "parallel" is the whole parallel code path
(`parallel.force_mesh` + `parallel.force_wrap`: a 1-rank process group, the (dp, tp) mesh, the DTensor TP plan on
the size-1 tp dimension, FSDP2 on the size-1 dp dimension, every step hook); "mesh" (optional) is the mesh and hooks
alone (size-1 dimensions unwrapped).

Both: Minitron-4B by default (dim 3072, 32 layers, 24/8 heads, ffn 9216, vocab 256000), seq 4096, global batch 8,
bf16 autocast over fp32 masters, fused AdamW, clip 1.0, `train_step` as `nemotron4 train` runs it, with whatever
fast paths the recipe gives the layout (printed: whole-block compile, fused loss, weights cast once per step:
CastWeightsOnce in one process, FSDP2's bf16 all-gather kept for the step under FSDP2). Records both first-step
losses (FSDP2's bf16 embedding rounds differently from autocast's fp32 one: close, not bitwise); writes
`parallel_over_single` (the parallel path's tokens/s over the single process's, best of the repeats each), MFU
(docs/paper.md convention, 989e12 peak) and each path's peak memory beside `nemotron4 plan --layout nemotron4`'s
prediction for it (`memory_per_gpu(..., fsdp=True)` for the wrapped path).

    python bench/parallel_overhead.py --out bench/results/parallel_overhead_h200.json
    python bench/parallel_overhead.py --device cpu --model tiny --seq-len 64 --global-batch 4 --micro 2 \
        --warmup 1 --steps 1 --no-compile --attention auto --dtype bf16 --out /tmp/po.json   # smoke test (gloo)
"""

from __future__ import annotations

import argparse
import dataclasses
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
from nemotron4.distributed.runtime import Parallel, setup_parallel, shutdown  # noqa: E402
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
    after = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"paths": recipe.paths, **r, "allocated_between_steps_gib": after}


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
    ap.add_argument("--repeat", type=int, default=2, help="time the --paths in turn, this many times each")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto", help="compute dtype: bf16, fp32, auto (bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--paths", default="single,parallel", help="which of single, parallel, mesh to time")
    ap.add_argument("--out", default="bench/results/parallel_overhead_h200.json")
    args = ap.parse_args()

    device = torch.device(args.device)
    auto = "bf16" if device.type == "cuda" else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[auto if args.dtype == "auto" else args.dtype]
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
    accumulation = args.global_batch // args.micro
    parallel = setup_parallel(ParallelDims(dp=1, tp=1), device, "nccl" if device.type == "cuda" else "gloo",
                              wrap_size_one=True)
    layouts: dict[str, Parallel | None] = {"single": None, "parallel": parallel,
                                           "mesh": dataclasses.replace(parallel, wrap_size_one=False)}
    names = args.paths.split(",")
    try:
        for rep, name in [(i, n) for i in range(args.repeat) for n in names]:
            layout = layouts[name]
            planned = memory_per_gpu(cfg, 1, 1, args.seq_len, args.micro, layout="nemotron4", accumulation=accumulation,
                                     fsdp=layout is not None and layout.fsdp_applied).total / 2**30
            r = time_recipe(cfg, train, device, dtype, layout, batches, args.warmup, args.steps)
            gc.collect()  # the previous model and optimizer go before the next is built
            if device.type == "cuda":
                torch.cuda.empty_cache()
            r.update(mfu=mfu(cfg, args.seq_len, r["tokens_per_s"]), planned_mem_gib=planned,
                     mem_over_planned=r["peak_mem_gib"] / planned)
            res["runs"].setdefault(name, []).append(r)
            print(f"{name:8s} #{rep} {r['tokens_per_s']:9.0f} tok/s  MFU {100 * r['mfu']:5.1f}%  "
                  f"peak {r['peak_mem_gib']:6.1f} GiB (plan {planned:.1f}, between steps "
                  f"{r['allocated_between_steps_gib']:.1f})  paths {r['paths']}", flush=True)
    finally:
        shutdown()
    single, par = res["runs"]["single"], res["runs"]["parallel"]
    best = {name: max(r["tokens_per_s"] for r in runs) for name, runs in res["runs"].items()}
    res["tokens_per_s_best"], res["mfu_best"] = best, {k: mfu(cfg, args.seq_len, v) for k, v in best.items()}
    res["first_loss_rel_diff"] = abs(single[0]["losses"][0] - par[0]["losses"][0]) / abs(single[0]["losses"][0])
    res["parallel_over_single"] = best["parallel"] / best["single"]  # best of the repeats each
    if "mesh" in best:
        res["mesh_over_single"] = best["mesh"] / best["single"]
    res["parallel_peak_gib"] = max(r["peak_mem_gib"] for r in par)
    res["parallel_planned_gib"] = par[0]["planned_mem_gib"]
    res["parallel_peak_over_planned"] = res["parallel_peak_gib"] / res["parallel_planned_gib"]
    res["single_spread"] = (max(r["tokens_per_s"] for r in single) - min(r["tokens_per_s"] for r in single)) / best[
        "single"]  # the same version timed again: differences below this are noise
    print(f"parallel_over_single {res['parallel_over_single']:.4f} (best of {args.repeat}; single's own spread "
          f"{100 * res['single_spread']:.1f}%)  parallel peak {res['parallel_peak_gib']:.1f} GiB / plan "
          f"{res['parallel_planned_gib']:.1f} = {res['parallel_peak_over_planned']:.3f}  first loss single "
          f"{single[0]['losses'][0]:.6f} parallel {par[0]['losses'][0]:.6f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
