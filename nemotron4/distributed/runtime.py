"""One object the trainer holds for a multi-process run: the mesh, this rank's place in it, and the parallel
versions of the few things that differ from one process (loading full weights, step hooks, rank-0-only writes);
the model is built on its mesh by `nemotron4.train.recipe.build_recipe`.

    with process_group():
        parallel = setup_parallel(dims, device, backend)   # under torchrun, or one rank (parallel.force_mesh)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from nemotron4.distributed.layout import ParallelDims, resolve_backend
from nemotron4.distributed.mesh import setup_mesh
from nemotron4.distributed.parallelize import copy_full_weights
from nemotron4.distributed.step import ParallelStepHooks
from nemotron4.errors import UserError
from nemotron4.model import Nemotron4

__all__ = ["Parallel", "load_full_weights", "process_group", "setup_parallel", "shutdown"]


@dataclass
class Parallel:
    """This process's place in a (dp, tp) run."""

    mesh: DeviceMesh
    dims: ParallelDims
    device: torch.device
    wrap_size_one: bool = False  # parallel.force_wrap: DTensor TP and FSDP2 on size-1 dimensions too

    @property
    def tp_applied(self) -> bool:
        """The model's parameters are DTensors of the TP plan (tp > 1, or a size-1 tp dimension wrapped anyway)."""
        return self.dims.tp > 1 or self.wrap_size_one

    @property
    def fsdp_applied(self) -> bool:
        """The model is wrapped by FSDP2 over the dp dimension (dp > 1, or a size-1 dp dimension wrapped anyway)."""
        return self.dims.dp > 1 or self.wrap_size_one

    @property
    def rank(self) -> int:
        return dist.get_rank()

    @property
    def primary(self) -> bool:
        """Rank 0 writes metrics, config.toml and the checkpoint pointer; every rank writes its DCP shards."""
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        return self.mesh["dp"].get_local_rank()

    def barrier(self) -> None:
        dist.barrier()

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is True on any (e.g. a SIGTERM that reached some ranks first)."""
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def step_hooks(self, model: Nemotron4, keep_unsharded: bool = False) -> ParallelStepHooks:
        return ParallelStepHooks(model, self.mesh, self.tp_applied, keep_unsharded)


def load_full_weights(model: Nemotron4, weights: Mapping[str, torch.Tensor], device: torch.device) -> None:
    """Load full (unsharded) tensors, the same on every rank, into a parallelized model; each rank keeps its shard.
    UserError names missing, unexpected or mis-shaped keys (like `load_state_dict`'s strict mode)."""
    names = dict(model.named_parameters())
    missing, unexpected = sorted(set(names) - set(weights)), sorted(set(weights) - set(names))
    shapes = [f"{n}: {tuple(weights[n].shape)} vs {tuple(p.shape)}" for n, p in names.items()
              if n in weights and weights[n].shape != p.shape]
    if missing or unexpected or shapes:
        raise UserError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                        f"shape mismatches {shapes[:5]}")
    copy_full_weights(model, lambda name, _: weights[name].to(device))
    model.init_buffers()


def setup_parallel(dims: ParallelDims, device: torch.device, backend: str = "auto",
                   wrap_size_one: bool = False) -> Parallel:
    """Join the process group (torchrun's environment) and build the (dp, tp) mesh; `device` is this process's
    (on CUDA, the GPU of its LOCAL_RANK). `wrap_size_one` (parallel.force_wrap): the recipe applies DTensor TP and
    FSDP2 on size-1 dimensions too. Leave the group with `shutdown`, or run inside `process_group()`."""
    return Parallel(setup_mesh(dims, device, resolve_backend(backend, device)), dims, device, wrap_size_one)


@contextmanager
def process_group() -> Iterator[None]:
    """Leave the process group on the way out of the block, however it ends (done, error, signal), if this process
    joined one inside it."""
    try:
        yield
    finally:
        shutdown()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
