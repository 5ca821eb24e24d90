"""Resume is exact: `nemotron4 train` killed with SIGKILL and re-run gives, step for step, bitwise the losses of an
uninterrupted run, across a batch-size threshold (step 33) and the phase switch (step 65)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import COMPARED, TINY_TOML, nemotron4_cmd, run_cli

from nemotron4.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # launches `nemotron4 train` subprocesses

def train_until_killed(cwd: Path, run_dir: Path, kill_at_step: int, config: Path = TINY_TOML) -> int:
    """Run `nemotron4 train`, which SIGKILLs itself right after step `kill_at_step` (a deterministic crash: no race
    between this process polling and the run); returns the last step in metrics.jsonl."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEMOTRON4_FAULT_SIGKILL_AT_STEP": str(kill_at_step)}
    args = ["train", "--config", str(config), "--run-dir", str(run_dir)]
    proc = subprocess.run(nemotron4_cmd(*args), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"run was not killed ({proc.returncode}): {proc.stderr[-2000:]}"
    return read_metrics(run_dir / "metrics.jsonl")[-1]["step"]


def test_sigkill_and_rerun_matches_uninterrupted_run(corpus_dir: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_cli(corpus_dir, "train", "--config", str(TINY_TOML), "--run-dir", str(reference))

    resumed = tmp_path / "resumed"
    assert train_until_killed(corpus_dir, resumed, kill_at_step=25) == 25  # checkpoints at 10, 20
    assert (resumed / "checkpoints" / "latest").read_text().strip() == "step_00000020"
    assert train_until_killed(corpus_dir, resumed, kill_at_step=72) == 72  # resumed at 20; now in continued training
    assert (resumed / "checkpoints" / "latest").read_text().strip() == "step_00000070"
    run_cli(corpus_dir, "train", "--config", str(TINY_TOML), "--run-dir", str(resumed))

    want, got = read_metrics(reference), read_metrics(resumed)
    assert [r["step"] for r in got] == list(range(1, 81))
    for a, b in zip(want, got, strict=True):
        assert {k: a.get(k) for k in COMPARED} == {k: b.get(k) for k in COMPARED}, f"step {a['step']} differs"
    assert {want[31]["batch_size"], want[32]["batch_size"]} == {8, 16}
    assert (want[63]["phase"], want[64]["phase"]) == ("pretrain", "continued")


def test_rerun_with_incompatible_config_is_refused(corpus_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(corpus_dir, "train", "--config", str(TINY_TOML), "--run-dir", str(run_dir), "--phases.0.tokens", "4096",
            "--phases.0.warmup_tokens", "1024", "--phases.1.tokens", "1024")
    proc = run_cli(corpus_dir, "train", "--config", str(TINY_TOML), "--run-dir", str(run_dir), check=False)
    assert proc.returncode == 2
    assert "different configuration, which cannot be resumed" in proc.stderr
    assert "phases.0.tokens: 4096 -> 49152" in proc.stderr


def test_resume_after_the_data_moved(corpus_dir: Path, tmp_path: Path) -> None:
    """Copying the token files elsewhere (new paths, new mtimes) and pointing the config there still resumes, and
    continues as the uninterrupted run; re-tokenized data (other content) is refused."""
    import shutil

    from helpers import QUICK as SHORT
    from helpers import tiny_job, write_source

    from nemotron4.data.indexed import IndexedDataset
    from nemotron4.errors import UserError
    from nemotron4.train.trainer import Trainer

    reference = tmp_path / "reference"
    Trainer.create(tiny_job(corpus_dir, *SHORT), reference).run()
    run = tmp_path / "run"
    first = Trainer.create(tiny_job(corpus_dir, *SHORT), run)
    first.run(stop=lambda: first.state.step >= 4)
    moved = tmp_path / "moved"
    shutil.copytree(corpus_dir, moved)  # copytree keeps mtimes: touch them like a plain cp would
    for f in moved.rglob("*"):
        if f.is_file():
            os.utime(f)
    Trainer.create(tiny_job(moved, *SHORT), run).run()
    want, got = read_metrics(reference), read_metrics(run)
    assert [r["loss"] for r in got] == [r["loss"] for r in want]

    changed = tmp_path / "changed"
    shutil.copytree(corpus_dir, changed)
    web = next(changed.rglob("web.idx")).with_suffix("")
    tokens = np.concatenate([IndexedDataset(web)[i] for i in range(len(IndexedDataset(web)))])
    write_source(web, tokens, doc_len=299)  # the same tokens cut into other documents: another sample order
    third = tmp_path / "third"
    early = Trainer.create(tiny_job(corpus_dir, *SHORT), third)
    early.run(stop=lambda: early.state.step >= 4)
    with pytest.raises(UserError, match="changed"):
        Trainer.create(tiny_job(changed, *SHORT), third).run()


def test_max_steps_stops_with_a_checkpoint_and_the_rerun_continues(corpus_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ("train", "--config", str(TINY_TOML), "--run-dir", str(run_dir))
    proc = run_cli(corpus_dir, *args, "--max-steps", "7")
    assert "stopped after --max-steps 7 at step 7" in proc.stdout
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000007"
    run_cli(corpus_dir, *args, "--max-steps", "5")
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, 13))
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000012"
    bad = run_cli(corpus_dir, *args, "--max-steps", "-1", check=False)
    assert bad.returncode != 0 and "--max-steps must be >= 0" in bad.stderr


def test_checkpointing_can_be_turned_off(corpus_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "bench"
    proc = run_cli(corpus_dir, "train", "--config", str(TINY_TOML), "--run-dir", str(run_dir), "--max-steps", "3",
                   "--checkpoint.enabled", "false")
    assert "checkpoint (none: checkpoint.enabled = false)" in proc.stdout
    assert "cannot resume" in proc.stderr
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert not list((run_dir / "checkpoints").glob("step_*"))
