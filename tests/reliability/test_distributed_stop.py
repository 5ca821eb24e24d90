"""Under torchrun, a SIGTERM that reaches one rank stops every rank after the same step, with one consistent
checkpoint of that step (the ranks all-reduce the stop flag after each step)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SHORT, TINY_TOML, latest

from nemotron4.checkpoint import CheckpointManager
from nemotron4.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # launches `nemotron4 train` subprocesses


@pytest.mark.distributed
def test_sigterm_on_one_rank_stops_all_ranks_at_the_same_step(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEMOTRON4_FAULT_SIGNAL_AT_STEP": "3:TERM",
           "NEMOTRON4_FAULT_RANK": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "nemotron4.cli",
           "train", "--config", str(TINY_TOML), "--run-dir", str(run), *SHORT, "--parallel.dp", "2"]
    proc = subprocess.run(cmd, cwd=corpus, env=env, capture_output=True, text=True, timeout=240)
    # The workers exit 143 (rank 0 too, which never got the signal); torchrun reports that as a failure (with its
    # own traceback), so a scheduler may requeue the job. No traceback comes from our code.
    assert proc.returncode != 0 and "exitcode  : 143" in proc.stderr, proc.stderr[-3000:]
    assert "nemotron4/train" not in proc.stderr and "stopped by SIGTERM after step 3" in proc.stderr
    assert read_metrics(run)[-1]["step"] == 3 and latest(run) == "step_00000003", proc.stderr[-3000:]
    assert CheckpointManager.read_state(run / "checkpoints" / "step_00000003")["trainer"]["step"] == 3
