"""A tiny megatron-core GPTModel configured as Nemotron-4, saved by megatron-core itself (see mcore_model.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HELPER = Path(__file__).with_name("mcore_model.py")

# GQA (6 query heads over 2 groups), kv_channels 20 != hidden / heads = 8, half the head dims rotary.
CFG = {"layers": 3, "hidden": 48, "heads": 6, "groups": 2, "kv_channels": 20, "ffn": 96, "vocab": 128, "seq": 64,
       "rotary_percent": 0.5}
ATOL = 1e-5


def mcore(*args: str, nproc: int = 1, cfg: dict | None = None, timeout: int = 300) -> None:
    """Run mcore_model.py (under torchrun with gloo when nproc > 1)."""
    cmd, rest = [sys.executable, str(HELPER)], [*args[:2], json.dumps(cfg or CFG), *args[2:]]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(HELPER)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, *rest], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"mcore_model.py {args[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def mcore_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """megatron-core's checkpoints of one random model: plain/ (torch_dist, Megatron-LM args in common.pt),
    nemo1/ and nemo2/ (keys prefixed model. / module.), zarr/ and zarr_bf16/; logits.pt (tokens, its logits)."""
    root = tmp_path_factory.mktemp("mcore")
    mcore("save", str(root))
    return root


def megatron_logits(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.load(root / "logits.pt")
    return d["tokens"], d["logits"]
