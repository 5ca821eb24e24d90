"""Run by tests/distributed/test_vocab_loss.py: the vocabulary-parallel fused loss on a 2-rank gloo group (spawned
here, a file store: no port), on inputs every rank draws from one seed. Each rank saves what it computed (loss,
the local gradients, the largest tensor any op produced) to <out>/rank<r>.pt, rank 0 the full inputs too; the test
compares them with the single-process losses.

    python tests/distributed/vocab_loss_worker.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from nemotron4.distributed.vocab_loss import vocab_parallel_linear_cross_entropy

TP = 2
B, T, DIM, VOCAB = 2, 12, 16, 40  # 24 tokens: chunks of 10, 10 and an uneven 4
CHUNK = 10


class LargestTensor(TorchDispatchMode):
    """Records the shape of the largest tensor any op returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.shape = 0, ()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.shape = t.numel(), tuple(t.shape)
        return out


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    targets = torch.randint(0, VOCAB, (B, T), generator=g)
    targets[0, :3] = -100  # ignored positions, on both ranks' halves of the sequence
    targets[1, -2:] = -100
    return {"h": torch.randn(B, T, DIM, generator=g), "w": torch.randn(VOCAB, DIM, generator=g) * 0.5,
            "targets": targets}


def run(rank: int, out: Path) -> None:
    dist.init_process_group("gloo", store=dist.FileStore(str(out / "store"), TP), rank=rank, world_size=TP)
    mesh = init_device_mesh("cpu", (TP,), mesh_dim_names=("tp",))
    x = inputs()
    result: dict[str, object] = {}
    for name, placement, dtype in (("seq", Shard(1), None), ("replicated", Replicate(), None),
                                   ("plain", None, None), ("seq_bf16", Shard(1), torch.bfloat16)):
        h_full = x["h"].clone()
        h_local = (h_full.chunk(TP, dim=1)[rank] if placement == Shard(1) else h_full).clone().requires_grad_()
        w_local = x["w"].chunk(TP, dim=0)[rank].clone().requires_grad_()
        h = h_local if placement is None else DTensor.from_local(h_local, mesh, [placement])
        weight = DTensor.from_local(w_local, mesh, [Shard(0)])
        spy = LargestTensor()
        with spy:
            loss = vocab_parallel_linear_cross_entropy(h, weight, x["targets"], chunk_size=CHUNK,
                                                       compute_dtype=dtype)
            loss.backward()
        result[name] = {"loss": loss.detach(), "grad_h": h_local.grad, "grad_w": w_local.grad,
                        "largest": spy.shape, "plain_loss": not isinstance(loss, DTensor)}
    with torch.no_grad():  # evaluation: the loss only
        h = DTensor.from_local(x["h"].chunk(TP, dim=1)[rank].clone(), mesh, [Shard(1)])
        weight = DTensor.from_local(x["w"].chunk(TP, dim=0)[rank].clone(), mesh, [Shard(0)])
        result["eval"] = vocab_parallel_linear_cross_entropy(h, weight, x["targets"], chunk_size=CHUNK)
    if rank == 0:
        result["inputs"] = x
    torch.save(result, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mp.spawn(run, args=(Path(sys.argv[1]),), nprocs=TP)
