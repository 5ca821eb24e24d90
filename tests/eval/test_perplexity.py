"""Held-out perplexity per category and source: a briefly trained model beats a random one everywhere."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nemotron4 import ModelConfig, build_model
from nemotron4.data.blend import BlendConfig
from nemotron4.data.indexed import IndexedDatasetBuilder
from nemotron4.eval.perplexity import evaluate_perplexity

# Two English sources and one code source, each a Markov chain over its own token range (learnable structure).
SOURCES = {"web": ("english", 10), "books": ("english", 80), "code": ("code", 150)}


def chain(n: int, offset: int, seed: int) -> np.ndarray:
    table = np.random.default_rng(offset).integers(0, 60, size=(60, 2))
    rng = np.random.default_rng(seed)
    out, state = np.empty(n, np.int64), 0
    for i, pick in enumerate(rng.random(n) < 0.2):
        state = table[state, int(pick)]
        out[i] = state
    return out + offset


def write(prefix, tokens):
    b = IndexedDatasetBuilder(prefix, dtype=np.uint16)
    for s in range(0, len(tokens), 200):
        b.add_document(tokens[s : s + 200])
    b.finalize()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppl")
    sources = []
    for i, (name, (cat, off)) in enumerate(SOURCES.items()):
        write(root / name, chain(20_000, off, i))
        write(root / f"{name}_valid", chain(3_000, off, 100 + i))
        sources.append({"name": name, "path": name, "category": cat, "valid_path": f"{name}_valid"})
    (root / "sources.json").write_text(json.dumps({"sources": sources}))
    return root


def trained_model(corpus, vocab: int, steps: int = 60):
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_name("tiny", vocab_size=vocab), seed=0)
    data = np.concatenate([np.fromfile(corpus / f"{n}.bin", np.uint16).astype(np.int64) for n in SOURCES])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        starts = rng.integers(0, len(data) - 65, 16)
        x = torch.as_tensor(np.stack([data[s : s + 65] for s in starts]))
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_trained_beats_random_per_category_and_source(corpus, sp):
    blend = BlendConfig.from_token_manifest(corpus / "sources.json", categories={"english": 70, "code": 30})
    random_model = build_model(ModelConfig.from_name("tiny", vocab_size=sp.vocab_size), seed=1).eval()
    kw = dict(max_samples_per_source=8, batch_size=4, tokenizer=sp)
    trained = evaluate_perplexity(trained_model(corpus, sp.vocab_size), blend, 64, **kw)
    rand = evaluate_perplexity(random_model, blend, 64, **kw)
    assert set(trained["by_category"]) == {"english", "code"}
    assert set(trained["by_source"]) == set(SOURCES)
    for level in ("by_category", "by_source"):
        for name, stats in trained[level].items():
            assert stats["perplexity"] < 0.5 * rand[level][name]["perplexity"], (level, name)
            assert stats["bits_per_byte"] > 0 and stats["bytes"] > 0
            assert stats["perplexity"] == pytest.approx(math.exp(stats["nll"]))
    # A random model is close to uniform over the vocabulary.
    assert rand["overall"]["perplexity"] == pytest.approx(sp.vocab_size, rel=0.5)
    eng = trained["by_category"]["english"]
    assert eng["tokens"] == trained["by_source"]["web"]["tokens"] + trained["by_source"]["books"]["tokens"]
    assert eng["tokens"] == 2 * 8 * 64


def test_without_tokenizer_no_bits_per_byte_and_deterministic(corpus):
    blend = BlendConfig.from_token_manifest(corpus / "sources.json", categories={"english": 70, "code": 30})
    model = build_model(ModelConfig.from_name("tiny", vocab_size=400), seed=0).eval()
    a = evaluate_perplexity(model, blend, 32, max_samples_per_source=4, batch_size=3)
    b = evaluate_perplexity(model, blend, 32, max_samples_per_source=4, batch_size=4)
    assert a["by_source"]["code"]["bits_per_byte"] is None
    assert a["by_source"]["code"]["nll"] == pytest.approx(b["by_source"]["code"]["nll"], abs=1e-5)
