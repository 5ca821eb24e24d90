from __future__ import annotations

import os

import numpy as np
import pytest

from nemotron4.data.blend import BlendConfig, Source, blending_indices, build_blend
from nemotron4.data.indexed import IndexedDatasetBuilder, IndexedFormatError, TokenRangeError
from nemotron4.errors import ConfigError

SOURCES = {  # name: (category, number of documents); token values encode the source (100 * id + ...)
    "en-a": ("english", 300), "en-b": ("english", 50), "de": ("multilingual", 40), "fr": ("multilingual", 10),
    "py": ("code", 80),
}


def _make_sources(root, vocab: int = 2000) -> list[Source]:
    out = []
    for sid, (name, (cat, n_docs)) in enumerate(SOURCES.items()):
        rng = np.random.default_rng(sid)
        with IndexedDatasetBuilder(root / name, np.uint16) as b:
            for _ in range(n_docs):
                b.add_document(100 * sid + rng.integers(0, 100, rng.integers(1, 60)))
        out.append(Source(name, str(root / name), cat))
    return out


@pytest.fixture
def cfg(tmp_path) -> BlendConfig:
    return BlendConfig({"english": 0.7, "multilingual": 0.15, "code": 0.15}, _make_sources(tmp_path))


def test_category_shares_within_one_point(cfg, tmp_path) -> None:
    ds = build_blend(cfg, seq_len=16, num_samples=10_000, seed=0, cache_dir=tmp_path / "cache")
    cats = np.array([cfg.sources[ds.source_index(i)].category for i in range(len(ds))])
    for cat, share in cfg.categories.items():
        assert abs((cats == cat).mean() - share) < 0.01, cat
    # Tokens come from the source the index says (source id is token // 100).
    for i in range(0, 10_000, 997):
        sample = ds[i]
        assert sample.shape == (17,) and sample.dtype == np.int64
        assert set(sample // 100) == {ds.source_index(i)}


def test_every_prefix_tracks_the_target(cfg) -> None:
    shares = np.array([0.5, 0.3, 0.15, 0.05])
    idx, k = blending_indices(shares, 5000)
    counts = np.cumsum(np.eye(4, dtype=np.int64)[idx], axis=0)
    expected = np.arange(1, 5001)[:, None] * shares
    assert np.abs(counts - expected).max() < 2
    for d in range(4):  # each source's samples are taken in order 0, 1, 2, ...
        np.testing.assert_array_equal(k[idx == d], np.arange((idx == d).sum()))


def test_within_category_size_and_temperature(cfg, tmp_path) -> None:
    ds = build_blend(cfg, 16, 2000, 0)
    sizes = [d.dataset.num_tokens for d in ds.datasets]
    en = sizes[0] / (sizes[0] + sizes[1])
    assert ds.shares[0] == pytest.approx(0.7 * en)
    cfg_t = BlendConfig(cfg.categories, cfg.sources, within_category="temperature", alpha=0.3)
    t = build_blend(cfg_t, 16, 2000, 0)
    en_t = sizes[0] ** 0.3 / (sizes[0] ** 0.3 + sizes[1] ** 0.3)
    assert t.shares[0] == pytest.approx(0.7 * en_t) and en_t < en  # flatter: the small source is upsampled
    assert t.shares.sum() == pytest.approx(1.0)


def test_same_seed_same_order_other_seed_other_order(cfg) -> None:
    a, b, c = (build_blend(cfg, 16, 500, s) for s in (1, 1, 2))
    assert all(np.array_equal(a[i], b[i]) for i in range(500))
    assert not all(np.array_equal(a[i], c[i]) for i in range(500))


def test_samples_cross_document_boundaries_and_cover_the_stream(tmp_path) -> None:
    with IndexedDatasetBuilder(tmp_path / "s", np.uint16) as b:
        for d in range(10):
            b.add_document(np.arange(d * 10, d * 10 + 7))  # 7-token documents
    cfg = BlendConfig({"english": 1.0}, [Source("s", str(tmp_path / "s"), "english")])
    ds = build_blend(cfg, seq_len=5, num_samples=30, seed=0)  # 150 tokens > 70: more than two epochs
    src = ds.datasets[0]
    stream = np.concatenate([np.arange(d * 10, d * 10 + 7) for d in src.doc_order])
    unshuffled = {tuple(ds[i]) for i in range(30)}
    assert unshuffled == {tuple(stream[j * 5 : j * 5 + 6]) for j in range(30)}


def test_cache_is_reused_and_rebuilt_when_an_input_changes(cfg, tmp_path) -> None:
    cache = tmp_path / "cache"
    a = build_blend(cfg, 16, 1000, 0, cache_dir=cache)
    files = sorted(os.listdir(cache))
    b = build_blend(cfg, 16, 1000, 0, cache_dir=cache)
    assert sorted(os.listdir(cache)) == files and a.fingerprint == b.fingerprint
    assert isinstance(b.dataset_index, np.memmap)  # loaded, not rebuilt
    # Rewrite one source with other content: new fingerprint, new index files, new samples.
    with IndexedDatasetBuilder(cfg.sources[4].path, np.uint16) as w:
        for _ in range(20):
            w.add_document(np.full(33, 400))
    c = build_blend(cfg, 16, 1000, 0, cache_dir=cache)
    assert c.fingerprint != a.fingerprint and len(os.listdir(cache)) > len(files)
    i = next(i for i in range(1000) if c.source_index(i) == 4)
    assert set(c[i]) == {400}
    for changed in ({"seq_len": 8}, {"num_samples": 999}, {"seed": 1}):
        args = {"seq_len": 16, "num_samples": 1000, "seed": 0} | changed
        assert build_blend(cfg, **args, cache_dir=cache).fingerprint != c.fingerprint


def test_valid_split_uses_heldout_files(tmp_path) -> None:
    srcs = _make_sources(tmp_path)
    srcs[0].valid_path = srcs[1].path  # any existing token file will do
    cfg = BlendConfig({"english": 0.7, "multilingual": 0.15, "code": 0.15}, srcs)
    v = build_blend(cfg, 8, 100, 0, split="valid")
    assert [s.name for s in v.sources] == ["en-a"] and v.sources[0].path == srcs[1].path


def test_token_out_of_vocab_is_caught_at_build(cfg) -> None:
    with pytest.raises(TokenRangeError, match=r"py\.bin"):
        build_blend(cfg, 16, 100, 0, vocab_size=450)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c, s: BlendConfig({"english": -1.0, "multilingual": 1, "code": 1}, s), "shares must be >= 0"),
        (lambda c, s: BlendConfig({"english": 0.0, "multilingual": 0, "code": 0}, s), "all zero"),
        (lambda c, s: BlendConfig({"english": 1.0}, s), "unknown category 'multilingual'"),
        (lambda c, s: BlendConfig(c, [*s[:4], Source("py", s[4].path, "code", weight=-2.0)]),
         r"weight = -2.0 \(source 'py'\)"),
        (lambda c, s: BlendConfig({**c, "math": 0.1}, s), "math has share 0.1 but no sources"),
        (lambda c, s: BlendConfig(c, [*s, Source(s[0].name, s[0].path, "code")]), "duplicate source names"),
        (lambda c, s: BlendConfig(c, [Source("en-a", s[0].path, "english", weight=1.0), *s[1:]]),
         "category 'english' mixes explicit source weights and size weights"),
        (lambda c, s: BlendConfig(c, s, within_category="uniform"), "within_category"),
    ],
)
def test_config_errors_name_the_problem(cfg, change, match) -> None:
    with pytest.raises(ConfigError, match=match):
        change(cfg.categories, list(cfg.sources))


def test_missing_token_files_are_named_at_build(cfg) -> None:
    blend = BlendConfig(cfg.categories, [*cfg.sources, Source("x", "/nonexistent/x", "code")])
    with pytest.raises(IndexedFormatError, match=r"train source 'x': no token files /nonexistent/x\.bin .*not found"):
        build_blend(blend, 16, 100, 0)


def test_from_dict_resolves_paths(cfg, tmp_path) -> None:
    d = {"categories": cfg.categories, "within_category": "temperature", "alpha": 0.5,
         "sources": [{"name": s.name, "path": os.path.basename(s.path), "category": s.category} for s in cfg.sources]}
    c = BlendConfig.from_dict(d, base_dir=tmp_path)
    assert c.sources[0].path == str(tmp_path / "en-a") and c.alpha == 0.5


def test_windowed_blending_equals_one_global_sort():
    """The windowed builder gives exactly the order of one lexsort over every source's due steps."""
    from nemotron4.data.blend import blending_indices

    rng = np.random.default_rng(0)
    for trial in range(5):
        shares = rng.dirichlet(np.ones(int(rng.integers(2, 7))))
        if trial == 0:
            shares = np.array([0.7, 0.0, 0.15, 0.15])  # a zero share, exact ties
        n = int(rng.integers(500, 5000))
        ids, ks, due = [], [], []
        for d, w in enumerate(shares):
            if w <= 0:
                continue
            k = np.arange(int(np.ceil(w * n)) + len(shares) + 1, dtype=np.int64)
            ids.append(np.full(len(k), d, np.int32))
            ks.append(k)
            due.append((k + 0.5) / w)
        ids_a, ks_a, due_a = np.concatenate(ids), np.concatenate(ks), np.concatenate(due)
        order = np.lexsort((ids_a, due_a))[:n]
        for window in (7, 64, 1 << 24):  # many windows, a few, one
            got_ids, got_ks = blending_indices(shares, n, window=window)
            np.testing.assert_array_equal(got_ids, ids_a[order])
            np.testing.assert_array_equal(got_ks, ks_a[order])


def test_sample_index_is_the_same_in_chunks():
    from nemotron4.data.samples import build_sample_index

    doc_lengths = np.random.default_rng(0).integers(1, 500, 20_000)
    whole = build_sample_index(doc_lengths, 64, 30_000, chunk=1 << 22)
    np.testing.assert_array_equal(build_sample_index(doc_lengths, 64, 30_000, chunk=777), whole)
    cum = np.concatenate([[0], np.cumsum(doc_lengths)])
    np.testing.assert_array_equal(cum[whole[:, 0]] + whole[:, 1], np.arange(30_000) * 64)  # starts where it says


def test_sample_indices_are_compact_and_keep_the_order(tmp_path):
    """int32 sample index and uint32 shuffle (12 bytes a sample instead of 24), the shuffle being exactly
    `rng.permutation(n)`: the order of runs made with the int64 index is unchanged."""
    import zlib

    from nemotron4.data.indexed import IndexedDataset
    from nemotron4.data.samples import SequenceSamples

    prefix = tmp_path / "src"
    rng = np.random.default_rng(0)
    with IndexedDatasetBuilder(prefix, dtype=np.uint16) as b:
        for n in rng.integers(1, 50, size=400):
            b.add_document(rng.integers(0, 1000, size=n))
        b.finalize()
    s = SequenceSamples(IndexedDataset(prefix), seq_len=16, num_samples=300, seed=7, name="src")
    assert s.sample_index.dtype == np.int32 and s.shuffle.dtype == np.uint32
    ref = np.random.default_rng([7, zlib.crc32(b"src")])
    ref.permutation(400)  # _build draws one epoch's document order first (300 x 16 tokens fit in one epoch)
    np.testing.assert_array_equal(s.shuffle, ref.permutation(300))
    assert s[0].dtype == np.int64 and len(s[0]) == 17
