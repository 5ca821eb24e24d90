"""The process group and the 2-D device mesh (dp, tp), from torchrun's environment and the `[parallel]` config.

    torchrun --nproc-per-node 8 -m nemotron4.cli train ...   # WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR set
    parallel = setup_parallel(job.parallel, device)           # None in a plain single process

Ranks are laid out dp-major, tp-minor: the tp ranks of one replica are consecutive, so with tp <= GPUs per node
the tensor-parallel collectives (every layer, latency bound) stay on NVLink and only the data-parallel ones
(once per step, overlapped with backward) cross InfiniBand, as in PAPER.md section 4 (tp = 8 within a DGX node).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from nemotron4.config import ModelConfig
from nemotron4.errors import ConfigError

__all__ = ["ParallelDims", "check_tp", "launched_by_torchrun", "resolve_backend", "setup_mesh"]


@dataclass(frozen=True)
class ParallelDims:
    """How `world_size` processes split into data-parallel replicas of tensor-parallel groups."""

    dp: int
    tp: int

    @classmethod
    def resolve(cls, world_size: int, tp: int, dp: int = 0) -> ParallelDims:
        """Validate `tp` (and `dp`, or derive it when 0) against the world size, with an error that says how."""
        if tp < 1:
            raise ConfigError(f"parallel.tp must be >= 1, got {tp}")
        if dp < 0:
            raise ConfigError(f"parallel.dp must be >= 1, or 0 to derive it from the world size; got {dp}")
        if world_size % tp:
            raise ConfigError(
                f"parallel.tp = {tp} does not divide the world size {world_size} (processes launched by torchrun: "
                "nnodes x nproc-per-node); choose tp among the divisors of the world size, usually the GPUs per node"
            )
        if dp == 0:
            dp = world_size // tp
        if dp * tp != world_size:
            raise ConfigError(
                f"parallel.dp x parallel.tp = {dp} x {tp} = {dp * tp}, but {world_size} processes were launched; "
                f"set parallel.dp = {world_size // tp} (or 0 to derive it), or launch {dp * tp} processes"
            )
        return cls(dp=dp, tp=tp)

    @property
    def world_size(self) -> int:
        return self.dp * self.tp


def launched_by_torchrun() -> bool:
    """True when several processes were launched (torchrun sets WORLD_SIZE); one process trains without a group."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_backend(name: str, device: torch.device) -> str:
    """"auto": nccl for CUDA devices, gloo for CPU."""
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name not in ("nccl", "gloo"):
        raise ConfigError(f"parallel.backend must be auto, nccl or gloo; got {name!r}")
    if name == "nccl" and device.type != "cuda":
        raise ConfigError("parallel.backend = nccl needs CUDA devices; use gloo (or auto) on CPU")
    return name


def setup_mesh(dims: ParallelDims, device: torch.device, backend: str, timeout_s: float = 1800) -> DeviceMesh:
    """Join the process group (once) and build the ("dp", "tp") mesh; also a flattened "dp_tp" dimension so a
    global gradient norm over both is one all-reduce, not two."""
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    world = dist.get_world_size()
    if world != dims.world_size:
        raise ConfigError(f"mesh dp x tp = {dims.dp} x {dims.tp} != world size {world}")
    mesh = init_device_mesh(device.type, (dims.dp, dims.tp), mesh_dim_names=("dp", "tp"))
    mesh[("dp", "tp")]._flatten("dp_tp")  # private but stable since torch 2.5; DTensor uses it for 2-D reductions
    return mesh


def check_tp(cfg: ModelConfig, tp: int, seq_len: int | None = None) -> None:
    """Raise ConfigError unless `tp` splits the model into whole heads, whole KV heads (GQA groups stay on one rank),
    and whole rows/columns of every sharded matrix, and the sequence into equal slices (sequence parallelism)."""
    checks = [("n_heads", cfg.n_heads), ("n_kv_heads", cfg.n_kv_heads), ("ffn_dim", cfg.ffn_dim),
              ("vocab_size", cfg.vocab_size)]
    if seq_len is not None:
        checks.append(("train.seq_len", seq_len))
    for name, value in checks:
        if value % tp:
            raise ConfigError(
                f"parallel.tp = {tp} must divide {name} = {value} (tensor parallelism shards whole heads, KV heads, "
                "MLP columns and vocabulary rows, and sequence parallelism splits the sequence evenly)"
            )
