"""Shared fixtures: a tiny text corpus and a tokenizer trained on it (once per session, a second or so)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from nemotron4.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer

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
CODE = ["def f(x):\n    return x + 1\n", "for i in range(10):\n\tprint(i)\n", "if (a == b) {\n  x = 42;\n}\n"]


def fake_docs(n: int, seed: int = 0, words: tuple[str, ...] = WORDS) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        k = rng.randint(5, 120)
        text = " ".join(rng.choice(words) for _ in range(k))
        docs.append(text.capitalize() + f". Year {rng.randint(1000, 2999)}.\n" + rng.choice(CODE))
    return docs


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({field: d}) + "\n")
    return path


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = fake_docs(400) + fake_docs(100, seed=1, words=GERMAN) + ["Ünïcödé café naïve — “quotes”"] * 5
    path = tmp_path_factory.mktemp("tok") / "tok.model"
    train_tokenizer(docs, path, TokenizerConfig(vocab_size=400, num_threads=2))
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.load(tokenizer_path)
