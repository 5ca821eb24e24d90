"""Tiny token files with learnable structure, written in the test: each source is a Markov chain over its own
64-token range in which a token is followed by one of two successors (p = 0.8 / 0.2). Unigram entropy is about
ln 64 = 4.16 nats; the chain's conditional entropy is H(0.8, 0.2) = 0.50 nats, the floor a model can reach."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nemotron4.data.indexed import IndexedDatasetBuilder
from nemotron4.train.config import JobConfig

REPO = Path(__file__).resolve().parents[2]
TINY_TOML = REPO / "configs" / "tiny.toml"
STATES = 64
CHAIN_ENTROPY = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
SOURCES = {"web": 0, "books": 64, "code": 128, "qa": 192}  # token offset of each source's chain


def markov_tokens(n: int, offset: int, seed: int) -> np.ndarray:
    """n tokens of the chain (transition table fixed by `offset`, sampling by `seed`)."""
    table = np.random.default_rng(offset).permutation(STATES * 2).reshape(STATES, 2) % STATES
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.int64)
    state = 0
    for i, pick in enumerate(rng.random(n) < 0.2):
        state = table[state, int(pick)]
        out[i] = state
    return out + offset


def unigram_entropy(tokens: np.ndarray) -> float:
    p = np.bincount(tokens) / tokens.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def write_source(prefix: Path, tokens: np.ndarray, doc_len: int = 300) -> None:
    builder = IndexedDatasetBuilder(prefix, dtype=np.uint16)
    for start in range(0, tokens.size, doc_len):
        builder.add_document(tokens[start : start + doc_len])
    builder.finalize()


def write_tiny_corpus(root: Path, train_tokens: int = 30_000, valid_tokens: int = 3_000) -> Path:
    """The token files configs/tiny.toml names, under root/data/tiny."""
    for i, (name, offset) in enumerate(SOURCES.items()):
        write_source(root / "data/tiny" / name, markov_tokens(train_tokens, offset, seed=i))
        write_source(root / "data/tiny" / f"{name}_valid", markov_tokens(valid_tokens, offset, seed=100 + i))
    return root


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def nemotron4_cmd(*args: str) -> list[str]:
    """`nemotron4 ...` as a subprocess command line (the console script's entry point, this interpreter)."""
    return [sys.executable, "-c", "import sys; from nemotron4.cli import main; sys.exit(main())", *args]


def run_cli(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(nemotron4_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"nemotron4 {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def tiny_job(corpus: Path, *overrides: str) -> JobConfig:
    """configs/tiny.toml with its token-file paths made absolute under `corpus`, plus overrides."""
    from nemotron4.train.config_io import load_job

    job = load_job(TINY_TOML, overrides)
    for phase in job.phases:
        for s in phase.blend.sources:
            s.path = str(corpus / s.path)
            s.valid_path = str(corpus / s.valid_path) if s.valid_path else None
    return job
