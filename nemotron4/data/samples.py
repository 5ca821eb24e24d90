"""Fixed-length training samples cut from one token file, GPTDataset-style (Megatron-LM
megatron/core/datasets/gpt_dataset.py): documents are shuffled per epoch and laid end to end; sample `j` is the
`seq_len + 1` tokens starting at token `j * seq_len` of that stream (consecutive samples share one token, the
last target of one is the first input of the next), so samples cross document boundaries; samples are then
shuffled. All three indices are built with numpy in O(documents + samples) and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import numpy as np

from nemotron4.data.indexed import IndexedDataset
from nemotron4.data.npcache import load_arrays, save_arrays

_PARTS = ("doc", "sample", "shuffle")

__all__ = ["SequenceSamples", "build_sample_index", "content_fingerprint", "file_fingerprint"]

_INDEX_VERSION = 2  # bump when the index construction changes, so old caches are not reused


def file_fingerprint(prefix: str | os.PathLike) -> dict:
    """What identifies a token file's content for caching: absolute path, sizes and mtimes of .bin and .idx."""
    out: dict = {"prefix": os.path.abspath(prefix)}
    for ext in (".bin", ".idx"):
        st = os.stat(f"{os.fspath(prefix)}{ext}")
        out[ext] = [st.st_size, st.st_mtime_ns]
    return out


def content_fingerprint(prefix: str | os.PathLike, window: int = 1 << 20) -> dict:
    """What identifies a token file's content wherever it lives: sizes of .bin and .idx, and a hash of the first
    and last MiB of the .idx (document lengths). Unlike `file_fingerprint` it survives a copy or a restage to
    another disk, so a run resumes on moved data; a re-tokenized file changes it."""
    idx = f"{os.fspath(prefix)}.idx"
    size = os.path.getsize(idx)
    digest = hashlib.sha256()
    with open(idx, "rb") as f:
        digest.update(f.read(window))
        if size > window:
            f.seek(max(window, size - window))
            digest.update(f.read())
    return {"bin": os.path.getsize(f"{os.fspath(prefix)}.bin"), "idx": size, "idx_sha256": digest.hexdigest()[:24]}


def content_digest(prefix: str | os.PathLike, chunks: int = 64, chunk: int = 1 << 16) -> dict:
    """What a resumed run checks its token files against: the sizes, and a blake2b of the whole .idx and of
    `chunks` evenly spaced `chunk`-byte windows of the .bin, first and last included (the whole .bin when it is
    no larger than that; 4 MiB by default). So an in-place change of the index, of the size, or of the sampled
    windows is detected; a change of a few bytes elsewhere in a large .bin is not (hashing terabytes at every
    start would take hours)."""
    bin_file, idx_file = f"{os.fspath(prefix)}.bin", f"{os.fspath(prefix)}.idx"
    h = hashlib.blake2b(digest_size=16)
    with open(idx_file, "rb") as f:
        while block := f.read(1 << 23):
            h.update(block)
    size = os.path.getsize(bin_file)
    with open(bin_file, "rb") as f:
        if size <= chunks * chunk:
            h.update(f.read())
        else:
            for i in range(chunks):
                f.seek((size - chunk) * i // (chunks - 1))
                h.update(f.read(chunk))
    return {"bin": size, "idx": os.path.getsize(idx_file), "blake2b": h.hexdigest()}


def cache_key(**inputs: object) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:20]


def build_sample_index(
    doc_lengths: np.ndarray, seq_len: int, num_samples: int, chunk: int = 1 << 22
) -> np.ndarray:
    """(num_samples, 2): for each sample, the position in `doc_lengths` (documents in epoch order) where it
    starts, and the token offset inside that document. int32 (8 bytes a sample, as Megatron's sample_idx) unless
    there are 2**31 documents or more; offsets always fit, since documents are shorter than 2**31 tokens."""
    cum = np.zeros(len(doc_lengths) + 1, np.int64)
    np.cumsum(doc_lengths, out=cum[1:])
    if cum[-1] < num_samples * seq_len + 1:
        raise ValueError(f"{cum[-1]} tokens cannot hold {num_samples} samples of {seq_len} + 1")
    out = np.empty((num_samples, 2), np.int32 if len(doc_lengths) < 2**31 else np.int64)
    for lo in range(0, num_samples, chunk):  # chunks: peak memory is the output plus one chunk, not 3x the output
        starts = np.arange(lo, min(lo + chunk, num_samples), dtype=np.int64) * seq_len
        pos = np.searchsorted(cum, starts, side="right") - 1  # last document starting at or before `start`
        out[lo : lo + len(starts), 0] = pos
        out[lo : lo + len(starts), 1] = starts - cum[pos]
    return out


class SequenceSamples:
    """`num_samples` samples of `seq_len + 1` tokens (int64) from one `IndexedDataset`, in a seeded order."""

    def __init__(
        self,
        dataset: IndexedDataset,
        seq_len: int,
        num_samples: int,
        seed: int,
        cache_dir: str | os.PathLike | None = None,
        name: str = "",
    ) -> None:
        self.dataset, self.seq_len, self.num_samples = dataset, seq_len, num_samples
        self.name = name or Path(dataset.prefix).name
        if dataset.num_tokens == 0 and num_samples:
            raise ValueError(f"{dataset.prefix}: no tokens to sample from")
        key = cache_key(v=_INDEX_VERSION, f=file_fingerprint(dataset.prefix), s=seq_len, n=num_samples, seed=seed,
                        name=self.name)
        arrays = load_arrays(cache_dir, f"{self.name}-{key}", _PARTS) if cache_dir else None
        if arrays is None:
            arrays = self._build(seed)
            if cache_dir:
                save_arrays(cache_dir, f"{self.name}-{key}", _PARTS, arrays)
        self.doc_order, self.sample_index, self.shuffle = arrays
        self.cache_key = key

    def _build(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # The source's name is part of the seed, so adding a source does not reshuffle the others.
        rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])
        lengths = self.dataset.sequence_lengths
        n_docs = len(lengths)
        needed = self.num_samples * self.seq_len + 1
        epochs = max(1, -(-needed // max(self.dataset.num_tokens, 1)))
        idx_dtype = np.int32 if n_docs < 2**31 else np.int64
        doc_order = np.concatenate([rng.permutation(n_docs).astype(idx_dtype) for _ in range(epochs)])
        sample_index = build_sample_index(lengths[doc_order], self.seq_len, self.num_samples)
        # rng.permutation(n) is arange(n) shuffled in place: the same order, built in 4 bytes a sample, not 8 (+ 8)
        shuffle = np.arange(self.num_samples, dtype=np.uint32 if self.num_samples < 2**32 else np.int64)
        rng.shuffle(shuffle)
        return doc_order, sample_index, shuffle

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, j: int) -> np.ndarray:
        pos, offset = (int(x) for x in self.sample_index[self.shuffle[j]])
        out = np.empty(self.seq_len + 1, np.int64)
        filled = 0
        lengths = self.dataset.sequence_lengths
        while filled < len(out):
            doc = self.doc_order[pos]
            take = min(int(lengths[doc]) - offset, len(out) - filled)
            out[filled : filled + take] = self.dataset.get(doc, offset, take)
            filled += take
            pos, offset = pos + 1, 0
        return out
