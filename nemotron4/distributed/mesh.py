"""The process group and the 2-D device mesh (dp, tp), from torchrun's environment and the `[parallel]` config.

    torchrun --nproc-per-node 8 -m nemotron4.cli train ...   # WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR set
    mesh = setup_mesh(dims, device, backend)                  # dims: nemotron4.distributed.layout.ParallelDims

Ranks are laid out dp-major, tp-minor: the tp ranks of one replica are consecutive, so with tp <= GPUs per node
the tensor-parallel collectives (every layer, latency bound) stay on NVLink and only the data-parallel ones
(once per step, overlapped with backward) cross InfiniBand, as in the paper (docs/paper.md: tp = 8 within a
DGX node). The layout itself and its rules are `nemotron4.distributed.layout`.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from nemotron4.distributed.layout import ParallelDims
from nemotron4.errors import ConfigError

__all__ = ["setup_mesh"]


def setup_mesh(dims: ParallelDims, device: torch.device, backend: str, timeout_s: float = 1800) -> DeviceMesh:
    """Join the process group (once) and build the ("dp", "tp") mesh; also a flattened "dp_tp" dimension so a
    global gradient norm over both is one all-reduce, not two."""
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = datetime.timedelta(seconds=timeout_s)
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, timeout=timeout)  # torchrun's environment
        else:  # one process outside torchrun (parallel.force_mesh): an in-memory store, no port
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    world = dist.get_world_size()
    if world != dims.world_size:
        raise ConfigError(f"mesh dp x tp = {dims.dp} x {dims.tp} != world size {world}")
    mesh = init_device_mesh(device.type, (dims.dp, dims.tp), mesh_dim_names=("dp", "tp"))
    mesh[("dp", "tp")]._flatten("dp_tp")  # private but stable since torch 2.5; DTensor uses it for 2-D reductions
    return mesh
