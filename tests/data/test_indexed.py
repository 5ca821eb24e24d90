from __future__ import annotations

import struct

import numpy as np
import pytest

from nemotron4.data.indexed import (
    IndexedDataset,
    IndexedDatasetBuilder,
    IndexedFormatError,
    TokenRangeError,
    optimal_dtype,
)


def _docs(n: int = 50, vocab: int = 1000, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, rng.integers(1, 40)) for _ in range(n)]


def _write(prefix, docs, dtype=np.uint16) -> None:
    with IndexedDatasetBuilder(prefix, dtype) as b:
        for d in docs:
            b.add_document(d)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_round_trip(tmp_path, dtype) -> None:
    docs = _docs()
    _write(tmp_path / "x", docs, dtype)
    ds = IndexedDataset(tmp_path / "x")
    assert len(ds) == len(docs) and ds.num_documents == len(docs) and ds.dtype == dtype
    assert ds.num_tokens == sum(map(len, docs))
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(ds[i], d)
    np.testing.assert_array_equal(ds.get(3, 1, 2), docs[3][1:3])
    np.testing.assert_array_equal(ds.document_indices, np.arange(len(docs) + 1))


def test_bulk_add_equals_one_by_one(tmp_path) -> None:
    docs = _docs()
    _write(tmp_path / "a", docs)
    with IndexedDatasetBuilder(tmp_path / "b", np.uint16) as b:
        b.add_documents(np.concatenate(docs), np.array([len(d) for d in docs]))
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"a{ext}").read_bytes() == (tmp_path / f"b{ext}").read_bytes()


def test_optimal_dtype_matches_megatron() -> None:
    assert optimal_dtype(65499) == np.uint16 and optimal_dtype(65500) == np.int32 and optimal_dtype(256000) == np.int32


def test_failed_build_leaves_no_files(tmp_path) -> None:
    with pytest.raises(RuntimeError), IndexedDatasetBuilder(tmp_path / "x", np.uint16) as b:
        b.add_document([1, 2, 3])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda idx, bin_: idx.write_bytes(b"NOTMAGIC!" + idx.read_bytes()[9:]), "magic"),
        (lambda idx, bin_: idx.write_bytes(idx.read_bytes()[:20]), "truncated"),
        (lambda idx, bin_: idx.write_bytes(idx.read_bytes()[:-8]), "truncated"),
        (lambda idx, bin_: idx.write_bytes(idx.read_bytes()[:9] + struct.pack("<Q", 2) + idx.read_bytes()[17:]),
         "version"),
        (lambda idx, bin_: idx.write_bytes(idx.read_bytes()[:17] + b"\x63" + idx.read_bytes()[18:]), "dtype code"),
        (lambda idx, bin_: bin_.write_bytes(bin_.read_bytes()[:-2]), "truncated or mismatched"),
        (lambda idx, bin_: bin_.write_bytes(bin_.read_bytes() + b"\0\0"), "truncated or mismatched"),
        (lambda idx, bin_: bin_.unlink(), "not found"),
    ],
)
def test_corrupt_files_name_the_file(tmp_path, damage, match) -> None:
    _write(tmp_path / "x", _docs())
    idx, bin_ = tmp_path / "x.idx", tmp_path / "x.bin"
    damage(idx, bin_)
    with pytest.raises(IndexedFormatError, match=match) as e:
        IndexedDataset(tmp_path / "x")
    assert str(tmp_path / "x") in str(e.value)


def test_token_out_of_vocab_names_the_file(tmp_path) -> None:
    docs = _docs(vocab=500)
    docs[7] = np.array([1, 2, 999, 3])
    _write(tmp_path / "x", docs)
    ds = IndexedDataset(tmp_path / "x")
    ds.check_tokens(1000)
    with pytest.raises(TokenRangeError, match=r"x\.bin.*999.*sequence 7.*vocabulary of 500"):
        ds.check_tokens(500, chunk=16)
