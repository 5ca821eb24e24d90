"""Shared fixtures: a tiny text corpus and a tokenizer trained on it (once per session, a second or so)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_text import fake_docs as _fake_docs
from fake_text import train_fake_tokenizer

from nemotron4.tokenizer import Tokenizer

WORDS = (
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his",
    "her", "it", "an", "were", "which", "be", "this", "are", "not", "or", "have", "had", "one", "their", "has",
    "but", "all", "new", "first", "also", "can", "after", "more", "other", "two", "time", "into", "some", "about",
    "when", "people"
)
GERMAN = (
    "der", "die", "und", "in", "den", "von", "zu", "das", "mit", "sich", "des", "auf", "für", "ist", "im", "dem",
    "nicht", "ein", "eine", "als", "auch", "es", "an"
)
def fake_docs(n: int, seed: int = 0, words: tuple[str, ...] = WORDS) -> list[str]:
    return _fake_docs(n, words, seed, max_words=120)


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({field: d}) + "\n")
    return path


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_fake_tokenizer(tmp_path_factory.mktemp("tok") / "tok.model", WORDS, GERMAN, max_words=120)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.load(tokenizer_path)
