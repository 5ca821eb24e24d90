"""Fixtures of the data tests: a tokenizer trained on made-up text (once per session, a second or so)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import DATA_GERMAN, DATA_WORDS, train_fake_tokenizer

from nemotron4.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_fake_tokenizer(tmp_path_factory.mktemp("tok") / "tok.model", DATA_WORDS, DATA_GERMAN, max_words=120)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.load(tokenizer_path)
