"""Run by tests/distributed/test_fp8_fsdp.py: `train.fp8` under FSDP2 (dp 2, tp 1) on a 2-rank gloo group
(spawned here, a file store: no port). Each rank trains the training recipe's model a few steps on its half of
every global batch (the same batches on every rank, from one seed) and rank 0 saves the per-step losses and what
the recipe built to <out>/result.pt; the test compares them with one process taking both halves as two
micro-batches. torchao's FP8 matmuls run on CPU too; the CUDA check is lifted for the run.

    python tests/distributed/fp8_fsdp_worker.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh

from nemotron4 import ModelConfig
from nemotron4.distributed.layout import ParallelDims
from nemotron4.distributed.runtime import Parallel
from nemotron4.train import fp8
from nemotron4.train.config import TrainSection
from nemotron4.train.recipe import build_recipe
from nemotron4.train.step import train_step

DP, STEPS, SEED = 2, 3, 3
MODES = ("off", "tensorwise", "tensorwise+output")
CFG = ModelConfig.from_name("tiny")


def batches() -> torch.Tensor:
    """(steps, global batch 4, seq + 1) token ids, the same in every process."""
    return torch.randint(0, CFG.vocab_size, (STEPS, 4, 33), generator=torch.Generator().manual_seed(SEED))


def train(mode: str, parallel: Parallel | None, rank: int = 0) -> tuple[list[float], dict[str, str]]:
    """Per-step losses of the recipe under `mode`: with `parallel`, this rank's half of each batch (FSDP2 averages
    the gradients); without, both halves as two micro-batches."""
    recipe = build_recipe(CFG, TrainSection(fp8=mode, fused_loss=True), torch.device("cpu"), torch.float32,
                          parallel, seed=SEED)
    optimizer = torch.optim.AdamW(recipe.model.parameters(), lr=3e-3)
    losses = []
    for batch in batches():
        halves = list(batch.split(2))
        micro = [halves[rank]] if parallel is not None else halves
        losses.append(train_step(recipe.step_model, optimizer, micro, 3e-3, 1.0, recipe.autocast, recipe.loss_fn,
                                 recipe.hooks, recipe.step_context).loss)
    wq = recipe.model.layers[0].attention.wq
    local = wq.weight.to_local() if hasattr(wq.weight, "to_local") else wq.weight
    built = {"module": type(wq).__name__, "weight": type(local).__name__, **recipe.paths}
    return losses, built


def run(rank: int, out: Path) -> None:
    dist.init_process_group("gloo", store=dist.FileStore(str(out / "store"), DP), rank=rank, world_size=DP)
    fp8.check_fp8 = lambda mode, device: None  # torchao's fp8 runs on CPU too
    mesh = init_device_mesh("cpu", (DP, 1), mesh_dim_names=("dp", "tp"))
    parallel = Parallel(mesh, ParallelDims(dp=DP, tp=1), torch.device("cpu"))
    result = {mode: train(mode, parallel, rank) for mode in MODES}
    if rank == 0:
        torch.save(result, out / "result.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    target = Path(sys.argv[1])
    mp.spawn(run, args=(target,), nprocs=DP, join=True)
