"""Parallel layout validation: clear errors before any process group exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_TOML

from nemotron4.config import ModelConfig
from nemotron4.distributed.layout import ParallelDims, check_tp, resolve_backend
from nemotron4.errors import ConfigError
from nemotron4.train.config_io import load_job
from nemotron4.train.trainer import Trainer

pytestmark = pytest.mark.distributed


def test_dims_resolve() -> None:
    assert ParallelDims.resolve(8, tp=2) == ParallelDims(dp=4, tp=2)
    assert ParallelDims.resolve(2304, tp=8, dp=288) == ParallelDims(dp=288, tp=8)
    with pytest.raises(ConfigError, match="does not divide the world size 6"):
        ParallelDims.resolve(6, tp=4)
    with pytest.raises(ConfigError, match=r"2 x 2 = 4, but 8 processes"):
        ParallelDims.resolve(8, tp=2, dp=2)
    with pytest.raises(ConfigError, match="parallel.tp must be >= 1"):
        ParallelDims.resolve(4, tp=0)


def test_tp_must_split_heads_and_kv_heads() -> None:
    tiny = ModelConfig.from_name("tiny")  # 4 heads, 2 KV heads
    check_tp(tiny, 2, seq_len=64)
    with pytest.raises(ConfigError, match="n_kv_heads = 2"):
        check_tp(tiny, 4)  # divides n_heads, not the KV heads: a GQA group would straddle ranks
    with pytest.raises(ConfigError, match="n_heads = 4"):
        check_tp(tiny, 3)
    with pytest.raises(ConfigError, match="train.seq_len = 63"):
        check_tp(tiny, 2, seq_len=63)  # sequence parallelism splits the sequence evenly
    check_tp(ModelConfig.from_name("15b"), 8, seq_len=4096)


def test_backend() -> None:
    import torch

    assert resolve_backend("auto", torch.device("cpu")) == "gloo"
    assert resolve_backend("auto", torch.device("cuda")) == "nccl"
    with pytest.raises(ConfigError, match="needs CUDA"):
        resolve_backend("nccl", torch.device("cpu"))
    with pytest.raises(ConfigError, match="parallel.backend"):
        load_job(TINY_TOML, ["--parallel.backend", "mpi"])


def test_force_wrap_needs_the_one_rank_mesh() -> None:
    """parallel.force_wrap wraps the size-1 dimensions of force_mesh's mesh: refused at config time without it."""
    with pytest.raises(ConfigError, match="parallel.force_wrap = true needs parallel.force_mesh = true"):
        load_job(TINY_TOML, ["--parallel.force_wrap", "true"])
    job = load_job(TINY_TOML, ["--parallel.force_mesh", "true", "--parallel.force_wrap", "true"])
    assert job.parallel.force_wrap and job.parallel.force_mesh


def test_trainer_refuses_a_layout_that_does_not_fit_the_launch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")  # as torchrun --nproc-per-node 4 would; fails before joining a group
    job = load_job(TINY_TOML, ["--parallel.tp", "3"])
    with pytest.raises(ConfigError, match="parallel.tp = 3 does not divide the world size 4"):
        Trainer.create(job, tmp_path / "run")
    job = load_job(TINY_TOML, ["--parallel.tp", "2", "--parallel.dp", "4"])
    with pytest.raises(ConfigError, match="set parallel.dp = 2"):
        Trainer.create(job, tmp_path / "run")
