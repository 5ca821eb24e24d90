"""Fixtures of the reliability suite (docs/reliability.md): the tiny corpus, a private copy to damage, and an
uninterrupted reference run of helpers.SHORT to compare resumed runs with, bit for bit. The functions the tests use
(train_cli, assert_same_run, ...) are in tests/helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import STEPS, latest, train_cli, write_tiny_corpus


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
    """The uninterrupted run directory of SHORT (a `nemotron4 train` subprocess: tests using it are slow)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = train_cli(corpus, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert latest(run_dir) == f"step_{STEPS:08d}"
    return run_dir
