"""Faults in real `nemotron4 train` processes: SIGKILL after a step and in the middle of a checkpoint write, SIGTERM
and SIGINT (graceful stop, then at once), a full disk. Each time the run directory keeps a usable checkpoint, and
re-running the same command continues bitwise as the uninterrupted reference run did."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import SHORT, TINY_TOML, assert_clean_error, assert_same_run, latest, nemotron4_cmd
from helpers import train_cli as train

from nemotron4.checkpoint import find_checkpoint
from nemotron4.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # launches `nemotron4 train` subprocesses


def test_sigkill_full_disk_and_sigint_then_resume_bitwise(corpus: Path, reference: Path, tmp_path: Path) -> None:
    """One run directory through a sequence of faults; the final run still matches the reference bit for bit."""
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"

    proc = train(corpus, run, faults={"ENOSPC_IN_CHECKPOINT": "4"})  # the disk fills up while saving step 4
    assert_clean_error(proc, "cannot write checkpoint step_00000004", "No space left on device",
                       "step_00000002, is intact and `latest` still points to it", "Free disk space")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000002"]  # temp dir removed

    proc = train(corpus, run, faults={"SIGKILL_AT_STEP": "5"})  # space freed: resumes at 2; killed past the ramp
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert read_metrics(run)[-1]["step"] == 5 and latest(run) == "step_00000004"

    proc = train(corpus, run, faults={"SIGNAL_AT_STEP": "6:INT"})  # Ctrl-C on the last step of pretraining
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert latest(run) == "step_00000006"

    proc = train(corpus, run, faults={"SIGKILL_AT_STEP": "7"})  # killed in the continued-training phase
    assert proc.returncode == -signal.SIGKILL and latest(run) == "step_00000006"

    assert train(corpus, run).returncode == 0
    assert_same_run(reference, run)


def test_sigkill_during_checkpoint_write_then_sigterm(corpus: Path, reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = train(corpus, run, faults={"SIGKILL_IN_CHECKPOINT": "4"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    partial = run / "checkpoints" / ".tmp-step_00000004"
    assert (partial / ".metadata").exists() and list(partial.glob("*.distcp"))  # shards written ...
    assert not (partial / "state.json").exists() and not (run / "checkpoints" / "step_00000004").exists()
    assert latest(run) == "step_00000002" and find_checkpoint(run).name == "step_00000002"  # ... never loaded

    # The re-run removes the debris first and resumes from step 2; SIGTERM after step 3 (not an interval step):
    # it finishes the step, checkpoints it, and exits 143.
    proc = train(corpus, run, faults={"SIGNAL_AT_STEP": "3:TERM"})
    assert proc.returncode == 143 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "stopping after this step" in proc.stderr and "Re-run the same command to resume" in proc.stderr
    assert not partial.exists()
    assert read_metrics(run)[-1]["step"] == 3 and latest(run) == "step_00000003"

    assert train(corpus, run).returncode == 0
    assert_same_run(reference, run)


def test_second_signal_exits_at_once(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = train(corpus, run, faults={"SIGNAL_AT_STEP": "3:INT:2"})
    assert proc.returncode == -signal.SIGINT, proc.stderr[-2000:]
    assert read_metrics(run)[-1]["step"] == 3
    assert latest(run) == "step_00000002"  # no checkpoint for step 3: it stopped at once


def test_sigterm_from_outside_stops_cleanly(corpus: Path, tmp_path: Path) -> None:
    """As torchrun or SLURM would: a SIGTERM at an arbitrary moment (polling metrics.jsonl to know it started)."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", "--config", str(TINY_TOML), "--run-dir", str(run), *SHORT, "--phases.0.tokens", "1M"]
    proc = subprocess.Popen(nemotron4_cmd(*args), cwd=corpus, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ((run / "metrics.jsonl").exists() and read_metrics(run)) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert latest(run) == f"step_{read_metrics(run)[-1]['step']:08d}"


def test_full_disk_inside_the_dcp_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC raised by DCP's own file writes (DCP wraps it in a CheckpointException): same guarantees."""
    import torch
    from torch.distributed.checkpoint.filesystem import FileSystem

    from nemotron4.checkpoint import CheckpointManager, CheckpointWriteError

    manager = CheckpointManager(tmp_path)
    manager.save(1, {"model": {"w": torch.ones(4)}}, {"step": 1})
    real = FileSystem.create_stream

    def full_disk(self, path, mode):  # the first shard file gets created, then the disk is full
        if "w" in mode and str(path).endswith(".distcp"):
            raise OSError(28, "No space left on device", str(path))
        return real(self, path, mode)

    monkeypatch.setattr(FileSystem, "create_stream", full_disk)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device.*step_00000001, is intact"):
        manager.save(2, {"model": {"w": torch.zeros(4)}}, {"step": 2})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_00000001"]
    loaded = {"model": {"w": torch.empty(4)}}
    CheckpointManager.load_tensors(manager.latest(), loaded)
    assert loaded["model"]["w"].tolist() == [1.0] * 4


def test_signal_handlers_main_thread_only_and_restored() -> None:
    import threading

    from nemotron4.train.signals import GracefulShutdown

    before = signal.getsignal(signal.SIGTERM)
    with GracefulShutdown() as stop:
        assert signal.getsignal(signal.SIGTERM) != before
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested() and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    seen = []
    thread = threading.Thread(target=lambda: seen.append(GracefulShutdown().__enter__()._previous))
    thread.start()
    thread.join()
    assert seen == [{}]  # no handlers outside the main thread (Python would refuse them)
