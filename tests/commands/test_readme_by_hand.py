"""Must show 5: the README's "Try it by hand" block (corpus -> tokenizer -> prepare -> config init -> train ->
generate) runs as written, in a fresh directory, with no file edited by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from commands.readme import argv, block
from nemotron4.train.config_io import load_job

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "import sys; from nemotron4.cli import main; sys.exit(main())"]
ENV_SETUP = "make install && source .venv/bin/activate"  # the checkout's venv: this interpreter already is one


def test_try_it_by_hand_runs_as_written(tmp_path: Path) -> None:
    cmds = block("Try it by hand (CPU, about a minute)")
    assert cmds[0] == ENV_SETUP
    steps = [argv(c) for c in cmds[1:]]
    names = [s[1] for s in steps]
    assert [n for n in names if n != "curate"] == ["corpus", "tokenizer", "prepare", "data", "config", "train",
                                                    "generate"], names
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for step in steps:
        assert step[0] == "nemotron4"
        proc = subprocess.run([*CLI, *step[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(step)}:\n{proc.stderr[-2000:]}"
        if step[1] == "config":
            job = load_job(tmp_path / "runs/mine.toml")
            assert [p.name for p in job.phases] == ["pretrain", "continued"]
            assert set(job.phases[0].blend.categories) <= {"english", "multilingual", "code"}
            assert job.phases[0].blend.categories.get("english") == pytest.approx(70)
        if step[1] == "generate":
            assert proc.stdout.startswith("The file") and len(proc.stdout) > len("The file\n")
    run = tmp_path / "runs/mine"
    assert (run / "tokenizer.model").read_bytes() == (tmp_path / "runs/tok/tokenizer.model").read_bytes()
    assert (run / "checkpoints").is_dir()
