"""Launching `tests/distributed/worker.py` under torchrun (gloo on CPU) on the tiny corpus of tests/train."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from train.conftest import TINY_TOML, write_tiny_corpus

from nemotron4.train.metrics import read_metrics

WORKER = Path(__file__).with_name("worker.py")

# 5 steps of the tiny recipe in two phases: 2 x 8 sequences, 2 x 16 (the ramp's batch change at 1024 tokens), then
# 1 x 16 in the continued phase. micro-batch 2, so dp = 4 still accumulates 2 micro-batches at 16. Checkpoints at
# step 3 and at each phase end; held-out loss at each phase end.
SHORT_RUN = (
    "--train.micro_batch_size", "2", "--phases.0.tokens", "3072", "--phases.0.batch_size", '"0:8 1024:16"',
    "--phases.0.warmup_tokens", "1024", "--phases.1.tokens", "1024", "--checkpoint.interval", "3",
    "--checkpoint.keep_last", "0", "--metrics.progress_bar", "false",
)


@pytest.fixture(scope="session")
def dist_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("dist_corpus"), train_tokens=12_000, valid_tokens=2_000)


def launch(cwd: Path, run_dir: Path, nproc: int, *overrides: str) -> dict[str, Any]:
    """Train SHORT_RUN + overrides with `nproc` processes (torchrun when > 1); return metrics and per-rank bytes."""
    args = ["--config", str(TINY_TOML), "--run-dir", str(run_dir), *SHORT_RUN, *overrides]
    cmd = [sys.executable, str(WORKER), *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(WORKER), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[-len(args) - 1:])} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    ranks = [json.loads(p.read_text()) for p in sorted((run_dir / "optim").glob("rank*.json"))]
    return {"records": read_metrics(run_dir), "ranks": ranks, "run_dir": run_dir}
