"""megatron-core's own IndexedDataset reads our files, and we read files its builder writes.

megatron-core (the `test` extra) installs and imports on a CPU-only machine; importing its `datasets` package
runs `megatron.core.__init__`, which warns that Transformer Engine / Apex are missing. Those warnings are
silenced here; nothing else is needed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from nemotron4.data.indexed import IndexedDataset, IndexedDatasetBuilder

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from megatron.core.datasets import indexed_dataset as mcore


def _docs(vocab: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, vocab, rng.integers(1, 300)) for _ in range(200)]


@pytest.mark.parametrize("vocab", [32000, 256000])
def test_megatron_reads_ours(tmp_path, vocab: int) -> None:
    docs = _docs(vocab)
    dtype = mcore.DType.optimal_dtype(vocab)
    with IndexedDatasetBuilder(tmp_path / "ours", dtype) as b:
        for d in docs:
            b.add_document(d)
    theirs = mcore.IndexedDataset(str(tmp_path / "ours"), mmap=True)
    assert len(theirs) == len(docs)
    np.testing.assert_array_equal(theirs.document_indices, np.arange(len(docs) + 1))
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(theirs[i], d)
        assert theirs[i].dtype == dtype
    np.testing.assert_array_equal(theirs.get(5, offset=1, length=3), docs[5][1:4])


@pytest.mark.parametrize("vocab", [32000, 256000])
def test_we_read_megatrons_and_files_are_identical(tmp_path, vocab: int) -> None:
    docs = _docs(vocab)
    dtype = mcore.DType.optimal_dtype(vocab)
    builder = mcore.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
    for d in docs:
        builder.add_item(torch.from_numpy(d))
        builder.end_document()
    builder.finalize(str(tmp_path / "theirs.idx"))
    ours = IndexedDataset(tmp_path / "theirs")
    assert len(ours) == len(docs) and ours.dtype == dtype
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(ours[i], d)
    np.testing.assert_array_equal(ours.sequence_lengths, [len(d) for d in docs])
    # Byte for byte: our writer produces exactly Megatron's files.
    with IndexedDatasetBuilder(tmp_path / "ours", dtype) as b:
        for d in docs:
            b.add_document(d)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (tmp_path / f"theirs{ext}").read_bytes()
