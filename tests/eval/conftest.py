"""Fixtures for the evaluation tests: a tiny SentencePiece tokenizer and tiny models built in the test, saved as our
weights directory and as an HF directory (with a matching HF tokenizer). Nothing is downloaded."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

# Before lm-eval / datasets are imported: never reach for the hub, even to check for updates.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from fake_text import fake_docs as _fake_docs
from fake_text import train_fake_tokenizer  # noqa: E402

from nemotron4 import ModelConfig, Nemotron4, build_model  # noqa: E402
from nemotron4.tokenizer import Tokenizer  # noqa: E402
from nemotron4.weights import save_weights  # noqa: E402

WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "it",
         "an", "were", "which", "be", "this", "are", "not", "or", "have", "one", "two", "time", "people", "water")
GERMAN = ("der", "die", "und", "in", "den", "von", "zu", "das", "mit", "sich", "auf", "für", "ist", "nicht", "ein")


def fake_docs(n: int, seed: int = 0, words: tuple[str, ...] = WORDS) -> list[str]:
    return _fake_docs(n, words, seed, max_words=80)


@pytest.fixture(scope="session")
def sp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_fake_tokenizer(tmp_path_factory.mktemp("sp") / "tokenizer.model", WORDS, GERMAN, max_words=80)


@pytest.fixture(scope="session")
def sp(sp_path: Path) -> Tokenizer:
    return Tokenizer.load(sp_path)


def random_model(vocab_size: int, seed: int = 0, std: float = 0.3) -> Nemotron4:
    """The tiny flavour with weights larger than its init: sharper, more varied next-token distributions."""
    model = build_model(ModelConfig.from_name("tiny", vocab_size=vocab_size), seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="session")
def tiny_model(sp: Tokenizer) -> Nemotron4:
    return random_model(sp.vocab_size)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model: Nemotron4, sp_path: Path) -> Path:
    """Our weights directory with tokenizer.model beside the weights."""
    path = save_weights(tiny_model, tmp_path_factory.mktemp("weights"))
    (path / "tokenizer.model").write_bytes(sp_path.read_bytes())
    return path


def write_mc_task(root: Path, n: int = 24, seed: int = 0) -> Path:
    """A local multiple-choice lm-eval task (JSONL data + task YAML) under root; returns the include path."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)]
        docs.append({"question": f"Question: {q}\nAnswer:", "choices": choices, "answer": rng.randrange(4)})
    root.mkdir(parents=True, exist_ok=True)
    data = root / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Tiny models run far faster on one thread (no OpenMP hand-offs), above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
