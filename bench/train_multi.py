"""Nemotron-4 15B on several GPUs under torchrun: tokens/s per GPU, MFU (docs/paper.md section 4) and peak memory per
GPU for each (tp, dp) layout, against the paper's 34.3% at tp = 8 and against `nemotron4 plan --layout nemotron4`.

Each run is the trainer's distributed step (`nemotron4.distributed`: DTensor TP with sequence parallelism and a
vocabulary-parallel loss, FSDP2 over dp with sharded AdamW state; `train_step` with `ParallelStepHooks`), bf16
autocast, on random tokens. Layouts and global batches are swept in one launch; rank 0 prints and writes JSON.

    torchrun --nproc-per-node 8 bench/train_multi.py --layouts 8x1,4x2 --global-batch 8,32 \\
        --out bench/results/train_multi_h200x8.json
    torchrun --nproc-per-node 2 bench/train_multi.py --device cpu --model tiny --seq-len 64 --layouts 2x1,1x2 \\
        --global-batch 4 --steps 2 --warmup 1 --out /tmp/multi.json        # smoke test on CPU (gloo)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemotron4 import ModelConfig  # noqa: E402
from nemotron4.distributed.layout import ParallelDims, resolve_backend  # noqa: E402
from nemotron4.distributed.mesh import setup_mesh  # noqa: E402
from nemotron4.distributed.plan import memory_per_gpu  # noqa: E402
from nemotron4.distributed.runtime import Parallel  # noqa: E402
from nemotron4.flops import mfu  # noqa: E402
from nemotron4.train.config import OptimSection, TrainSection  # noqa: E402
from nemotron4.train.optim import build_optimizer  # noqa: E402
from nemotron4.train.recipe import build_recipe  # noqa: E402
from nemotron4.train.step import train_step  # noqa: E402

PAPER_MFU_TP8 = 0.343  # Table 2, 768 GPUs


def log(*a) -> None:
    if dist.get_rank() == 0:
        print(*a, flush=True)


def run_layout(cfg: ModelConfig, tp: int, dp: int, gbs: int, micro: int, args, device: torch.device) -> dict:
    dims = ParallelDims.resolve(int(os.environ["WORLD_SIZE"]), tp, dp)
    mesh = setup_mesh(dims, device, resolve_backend("auto", device))
    parallel = Parallel(mesh, dims, device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    train = TrainSection(seq_len=args.seq_len, micro_batch_size=micro, fused_loss=True,  # tp > 1: vocab-parallel
                         compile=not args.no_compile and device.type == "cuda",
                         attention_backend=args.attention if device.type == "cuda" else "auto")
    recipe = build_recipe(cfg, train, device, dtype, parallel, seed=0)  # what `nemotron4 train` builds
    log(f"tp {tp} x dp {dims.dp}: paths {recipe.paths}")
    model = recipe.step_model.train()
    optimizer = build_optimizer(recipe.model, OptimSection(), device)
    autocast, loss_fn, hooks, step_context = recipe.autocast, recipe.loss_fn, recipe.hooks, recipe.step_context
    per_replica = gbs // dims.dp
    g = torch.Generator().manual_seed(parallel.dp_rank)  # tp ranks of a replica see the same tokens
    batch = torch.randint(0, cfg.vocab_size, (per_replica, args.seq_len + 1), generator=g).to(device)
    micro_batches = list(batch.split(micro))

    def step() -> float:
        return train_step(model, optimizer, micro_batches, 1e-4, 1.0, autocast, loss_fn, hooks, step_context).loss

    losses = [step() for _ in range(args.warmup)]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    dist.barrier()
    t0 = time.perf_counter()
    losses += [step() for _ in range(args.steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    peak = torch.tensor([torch.cuda.max_memory_allocated() if device.type == "cuda" else 0], device=device,
                        dtype=torch.float64)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    tokens_per_gpu = gbs * args.seq_len / dt / dims.world_size
    predicted = memory_per_gpu(cfg, tp, dims.dp, args.seq_len, micro, layout="nemotron4",
                               accumulation=per_replica // micro, fused_loss=train.fused_loss)
    return {"tp": tp, "dp": dims.dp, "paths": recipe.paths, "global_batch": gbs, "micro_batch": micro,
            "accumulation": per_replica // micro,
            "step_s": dt, "tokens_per_s_per_gpu": tokens_per_gpu,
            "mfu": mfu(cfg, args.seq_len, tokens_per_gpu),
            "peak_mem_gib_max_rank": peak.item() / 2**30, "plan_gib": predicted.total / 2**30,
            "plan_breakdown_gib": {k: v / 2**30 for k, v in predicted.as_dict().items()},
            "losses": [round(x, 4) for x in losses]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="15b")
    ap.add_argument("--layers", type=int, default=None, help="override n_layers")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--layouts", default="8x1,4x2", help="tp x dp for each run, comma-separated")
    ap.add_argument("--global-batch", default="8,32", help="global batches (sequences) to time per layout")
    ap.add_argument("--micro", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true", help="eager (default: train.compile's path on GPU)")
    ap.add_argument("--attention", default="cudnn", help="SDPA backend on GPU (the 15B recipe's: cudnn)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="bench/results/train_multi_h200x8.json")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    overrides = {"max_seq_len": max(args.seq_len, 4096)} | ({"n_layers": args.layers} if args.layers else {})
    cfg = ModelConfig.from_name(args.model, **overrides)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    res: dict = {"bench": "train_multi", "command": f"torchrun --nproc-per-node {world} " + " ".join(sys.argv),
                 "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "none (cpu)",
                 "gpus": world, "torch": torch.__version__, "python": platform.python_version(), "model": args.model,
                 "config": cfg.to_dict(), "seq_len": args.seq_len, "paper_mfu_tp8": PAPER_MFU_TP8, "runs": []}
    for layout in args.layouts.split(","):
        tp, dp = (int(x) for x in layout.split("x"))
        for gbs in (int(x) for x in args.global_batch.split(",")):
            if gbs % (dp * args.micro):
                log(f"skip tp {tp} x dp {dp}, batch {gbs}: not a multiple of dp x micro-batch")
                continue
            try:
                r = run_layout(cfg, tp, dp, gbs, args.micro, args, device)
            except torch.OutOfMemoryError as e:
                r = {"tp": tp, "dp": dp, "global_batch": gbs, "error": f"OOM: {str(e)[:100]}"}
            res["runs"].append(r)
            gc.collect()  # the layout's model and optimizer are gone: give their memory back before the next
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if "error" in r:
                log(f"tp {tp} x dp {dp}, batch {gbs}: {r['error']}")
            else:
                log(f"tp {tp} x dp {dp}, batch {gbs} (micro {r['micro_batch']} x {r['accumulation']}): "
                    f"{r['tokens_per_s_per_gpu']:,.0f} tok/s/GPU, MFU {r['mfu']:.1%}, "
                    f"peak {r['peak_mem_gib_max_rank']:.1f} GiB (plan {r['plan_gib']:.1f})")
            if dist.get_rank() == 0:
                out = Path(args.out)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(res, indent=2) + "\n")
    log("\n| tp x dp | batch | tok/s/GPU | MFU (paper tp 8: 34.3%) | peak GiB | plan GiB | peak / plan |")
    log("|---|---|---|---|---|---|---|")
    for r in res["runs"]:
        if "error" not in r:
            ratio = r["peak_mem_gib_max_rank"] / r["plan_gib"] if r["peak_mem_gib_max_rank"] else float("nan")
            log(f"| {r['tp']} x {r['dp']} | {r['global_batch']} | {r['tokens_per_s_per_gpu']:,.0f} | {r['mfu']:.1%} | "
                f"{r['peak_mem_gib_max_rank']:.1f} | {r['plan_gib']:.1f} | {ratio:.2f} |")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
