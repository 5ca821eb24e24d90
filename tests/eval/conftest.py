"""Fixtures of the evaluation tests: a tiny SentencePiece tokenizer and a tiny model built in the test, saved as our
weights directory. Nothing is downloaded; the functions the tests use are in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

# Before lm-eval / datasets are imported: never reach for the hub, even to check for updates.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import EVAL_GERMAN, EVAL_WORDS, random_model, train_fake_tokenizer  # noqa: E402

from nemotron4 import Nemotron4  # noqa: E402
from nemotron4.tokenizer import Tokenizer  # noqa: E402
from nemotron4.weights import save_weights  # noqa: E402


@pytest.fixture(scope="session")
def sp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_fake_tokenizer(tmp_path_factory.mktemp("sp") / "tokenizer.model", EVAL_WORDS, EVAL_GERMAN,
                                max_words=80)


@pytest.fixture(scope="session")
def sp(sp_path: Path) -> Tokenizer:
    return Tokenizer.load(sp_path)


@pytest.fixture(scope="session")
def tiny_model(sp: Tokenizer) -> Nemotron4:
    return random_model(sp.vocab_size)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model: Nemotron4, sp_path: Path) -> Path:
    """Our weights directory with tokenizer.model beside the weights."""
    path = save_weights(tiny_model, tmp_path_factory.mktemp("weights"))
    (path / "tokenizer.model").write_bytes(sp_path.read_bytes())
    return path


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Tiny models run far faster on one thread (no OpenMP hand-offs), above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
