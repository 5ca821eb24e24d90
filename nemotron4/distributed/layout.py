"""The parallel layout: the `[parallel]` config section and every rule about it, as plain values (no process group,
no torch.distributed), so that a layout can be checked before anything is launched or allocated.

    section = ParallelSection(tp=8)                       # what the user asked for
    dims = section.resolve(world_size)                    # dp derived; errors say how to fix the launch
    check_tp(model_config, dims.tp, seq_len)              # tp splits heads, KV heads, MLP, vocabulary, sequence

Ranks are laid out dp-major, tp-minor (nemotron4.distributed.mesh): with tp <= GPUs per node the tensor-parallel
collectives stay inside a node (docs/paper.md, "Training": tp 8 within a DGX node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nemotron4.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from nemotron4.config import ModelConfig

__all__ = ["BACKENDS", "ParallelDims", "ParallelSection", "check_backend", "check_sizes", "check_tp",
           "resolve_backend"]

BACKENDS = ("auto", "nccl", "gloo")


@dataclass
class ParallelSection:
    """Tensor x data parallelism under torchrun (nemotron4.distributed); ignored in a single process. The layout may
    change when resuming: checkpoints reshard on load."""

    tp: int = 1
    """Tensor-parallel size (8 in the paper: one DGX node); must divide n_heads, n_kv_heads, ffn_dim, vocab_size
    and train.seq_len, and the world size."""
    dp: int = 0
    """Data-parallel size; 0 derives it as world size / tp. Parameters, gradients and AdamW state shard over dp."""
    backend: str = "auto"
    """Process-group backend: "auto" (nccl on CUDA, gloo on CPU), "nccl" or "gloo"."""
    force_mesh: bool = False
    """In a single process, run the parallel code path anyway on a one-rank mesh (process group, mesh, parallel
    step hooks; a size-1 dimension adds no DTensor or FSDP2 wrapping unless `force_wrap`): measures that path's
    overhead on one GPU."""
    force_wrap: bool = False
    """With `force_mesh`: apply the DTensor TP plan and FSDP2 on size-1 mesh dimensions too, so that the whole
    parallel code path (DTensor parameters, FSDP2 all-gathers / reduce-scatters, every hook) runs on one rank."""

    def validate(self) -> None:
        """What can be checked without knowing the world size."""
        check_sizes(self.tp, self.dp)
        check_backend(self.backend)
        if self.force_wrap and not self.force_mesh:
            raise ConfigError("parallel.force_wrap = true needs parallel.force_mesh = true (it wraps the size-1 "
                              "dimensions of the mesh that force_mesh builds)")

    def resolve(self, world_size: int) -> ParallelDims:
        return ParallelDims.resolve(world_size, self.tp, self.dp)


def check_sizes(tp: int, dp: int) -> None:
    if tp < 1:
        raise ConfigError(f"parallel.tp must be >= 1, got {tp}")
    if dp < 0:
        raise ConfigError(f"parallel.dp must be >= 1, or 0 to derive it from the world size; got {dp}")


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise ConfigError(f"parallel.backend must be one of: {', '.join(BACKENDS)}; got {name!r}")


@dataclass(frozen=True)
class ParallelDims:
    """How `world_size` processes split into data-parallel replicas of tensor-parallel groups."""

    dp: int
    tp: int

    @classmethod
    def resolve(cls, world_size: int, tp: int, dp: int = 0) -> ParallelDims:
        """Validate `tp` (and `dp`, or derive it when 0) against the world size, with an error that says how."""
        check_sizes(tp, dp)
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


def resolve_backend(name: str, device: torch.device) -> str:
    """"auto": nccl for CUDA devices, gloo for CPU."""
    check_backend(name)
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name == "nccl" and device.type != "cuda":
        raise ConfigError("parallel.backend = nccl needs CUDA devices; use gloo (or auto) on CPU")
    return name


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
