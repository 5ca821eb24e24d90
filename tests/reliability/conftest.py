"""Shared pieces of the reliability suite (docs/reliability.md): a short two-phase run of configs/tiny.toml, run
as a user would (`nemotron4 train` in a subprocess, with a NEMOTRON4_FAULT_* hook when a test injects a fault),
and an uninterrupted reference of it to compare resumed runs with, bit for bit."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from train.conftest import TINY_TOML, nemotron4_cmd, write_tiny_corpus

from nemotron4.checkpoint import load_model_from_checkpoint
from nemotron4.train.metrics import read_metrics

# 8 steps: 4 of 8 x 64 tokens, the ramp's switch to 16 at 2048 tokens, 2 of 16 (pretrain ends: checkpoint at 6),
# then 2 of 16 in the continued phase. Checkpoints every 2 steps and at each phase end; held-out loss at phase ends.
SHORT = ("--phases.0.tokens", "4096", "--phases.0.batch_size", '"0:8 2048:16"', "--phases.0.warmup_tokens", "1024",
         "--phases.1.tokens", "2048", "--checkpoint.interval", "2", "--checkpoint.keep_last", "0",
         "--metrics.eval_interval", "0", "--metrics.eval_batches", "1")
STEPS = 8
COMPARED = ("step", "phase", "loss", "lr", "batch_size", "tokens", "grad_norm", "val_loss", "skipped")


def train(cwd: Path, run_dir: Path, *overrides: str, faults: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess:
    """`nemotron4 train` on the tiny recipe + SHORT + overrides, with NEMOTRON4_FAULT_<k>=<v> for each fault."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update({f"NEMOTRON4_FAULT_{k}": v for k, v in (faults or {}).items()})
    args = ["train", "--config", str(TINY_TOML), "--run-dir", str(run_dir), *SHORT, *overrides]
    return subprocess.run(nemotron4_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def latest(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "latest").read_text().strip()


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one `nemotron4 <cmd>: error: ...` line naming each fragment, no traceback."""
    assert proc.returncode == 2, f"exit code {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in proc.stderr, f"{fragment!r} not in:\n{proc.stderr[-3000:]}"


def assert_same_run(reference: Path, resumed: Path) -> None:
    """Every step's record and the final weights are bitwise those of the reference run."""
    want, got = read_metrics(reference), read_metrics(resumed)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for a, b in zip(want, got, strict=True):
        assert {k: a.get(k) for k in COMPARED} == {k: b.get(k) for k in COMPARED}, f"step {a['step']} differs"
    ref_model, res_model = load_model_from_checkpoint(reference), load_model_from_checkpoint(resumed)
    for (name, p), q in zip(ref_model.state_dict().items(), res_model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory holding data/tiny (the token files configs/tiny.toml names); tests must not modify it."""
    return write_tiny_corpus(tmp_path_factory.mktemp("rel_corpus"), train_tokens=12_000, valid_tokens=2_000)


@pytest.fixture
def own_corpus(corpus: Path, tmp_path: Path) -> Path:
    """A private copy of the corpus, for tests that corrupt token files."""
    shutil.copytree(corpus / "data", tmp_path / "work" / "data")
    return tmp_path / "work"


@pytest.fixture(scope="session")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run directory of SHORT."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = train(corpus, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert latest(run_dir) == f"step_{STEPS:08d}"
    return run_dir


def no_steps_taken(run_dir: Path) -> bool:
    """Nothing was trained: no metrics record and no checkpoint."""
    metrics = run_dir / "metrics.jsonl"
    return (not metrics.exists() or not read_metrics(metrics)) and not (run_dir / "checkpoints").exists()


def records(run_dir: Path) -> list[dict[str, Any]]:
    return read_metrics(run_dir)
