"""`tokenizer_sample`: per-source byte quotas (multilingual upsampled), small sources repeated, large ones sampled
at random across the whole file in one pass, deterministic per seed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from nemotron4.data.manifest import Manifest, ManifestSource, tokenizer_sample


def write_source(root: Path, name: str, n_docs: int, doc_len: int = 100) -> ManifestSource:
    docs = [f"{name}-{i:06d} " + "x" * (doc_len - len(f"{name}-{i:06d} ")) for i in range(n_docs)]
    (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return ManifestSource(name=name, category="english", language="en", train=f"{name}.jsonl", docs=n_docs,
                          bytes=n_docs * doc_len)


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    big = write_source(tmp_path, "big", 20_000)  # 2 MB of English
    multi = write_source(tmp_path, "multi", 10)  # 1 kB of German: upsampled beyond its size
    code = write_source(tmp_path, "code", 2_000)  # 200 kB
    multi.category, multi.language = "multilingual", "de"
    code.category = "code"
    return Manifest([big, multi, code], root=tmp_path)


def per_source_bytes(docs: list[str]) -> Counter:
    out: Counter = Counter()
    for d in docs:
        out[d.split("-")[0]] += len(d.encode())
    return out


def test_quotas_upsampling_and_repeats(manifest: Manifest) -> None:
    sample_bytes = 230_000
    docs = list(tokenizer_sample(manifest, sample_bytes, non_english_upsample=100.0, seed=0))
    got = per_source_bytes(docs)
    weights = {"big": 2_000_000, "multi": 100 * 1_000, "code": 200_000}
    total = sum(weights.values())
    for name, w in weights.items():
        quota = sample_bytes * w / total
        assert quota <= got[name] <= quota + 100, name  # met, overshooting by at most one document
    multi = [d for d in docs if d.startswith("multi")]
    assert len(multi) == 100 and len(set(multi)) == 10  # 10 kB quota from a 1 kB source: each document 10 times


def test_large_source_is_a_random_subset_of_the_whole_file(manifest: Manifest) -> None:
    docs = [d for d in tokenizer_sample(manifest, 230_000, seed=1) if d.startswith("big")]
    ids = sorted(int(d.split("-")[1].split()[0]) for d in docs)
    assert len(ids) == len(set(ids))  # no repeats: the oversampled pass had enough documents
    assert ids[0] < 2_000 and ids[-1] > 18_000  # drawn from across the file, not its beginning
    assert docs != sorted(docs)  # shuffled


def test_deterministic_per_seed(manifest: Manifest) -> None:
    a = list(tokenizer_sample(manifest, 100_000, seed=3))
    assert a == list(tokenizer_sample(manifest, 100_000, seed=3))
    assert a != list(tokenizer_sample(manifest, 100_000, seed=4))


def test_memory_holds_the_sample_not_the_source(manifest: Manifest) -> None:
    import tracemalloc

    tracemalloc.start()
    docs = list(tokenizer_sample(manifest, 20_000, seed=0))  # 1% of the sources' 2.2 MB
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sum(len(d) for d in docs) >= 20_000
    assert peak < 500_000, f"peak {peak} bytes: a whole source was held in memory"


def test_a_source_with_a_tiny_quota_is_never_dropped(tmp_path: Path) -> None:
    """A quota below one document makes the streaming draw keep none most of the time; the source still appears."""
    big = write_source(tmp_path, "big", 20_000)  # 2 MB
    rare = write_source(tmp_path, "rare", 20, doc_len=10_000)  # 200 kB, quota ~1 kB: keep ~0.5% of 20 documents
    rare.category = "code"
    manifest = Manifest([big, rare], root=tmp_path)
    for seed in range(5):
        docs = list(tokenizer_sample(manifest, 11_000, non_english_upsample=1.0, seed=seed))
        assert any(d.startswith("rare") for d in docs), seed
