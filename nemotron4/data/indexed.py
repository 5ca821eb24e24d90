"""Token files in Megatron-LM's `.bin`/`.idx` format ("MMIDIDX"), byte for byte.

Layout of the `.idx` file (megatron/core/datasets/indexed_dataset.py, `_IndexWriter`), little-endian:

    magic            9 bytes   b"MMIDIDX\\x00\\x00"
    version          uint64    1
    dtype code       uint8     see `DTYPE_CODES`
    sequence count   uint64    S
    document count   uint64    D + 1 (document_indices has a leading 0)
    sequence lengths int32[S]  tokens per sequence
    sequence ptrs    int64[S]  byte offset of each sequence in the .bin file
    document indices int64[D+1] sequence index where each document starts, then S

The `.bin` file is the concatenated tokens. We write one sequence per document (EOD included), as Megatron's
`preprocess_data.py --append-eod` does without sentence splitting.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np

from nemotron4.errors import UserError

__all__ = [
    "DTYPE_CODES",
    "IndexedDataset",
    "IndexedDatasetBuilder",
    "IndexedFormatError",
    "TokenRangeError",
    "check_token_files",
    "dataset_exists",
    "optimal_dtype",
]

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count: 34 bytes

# Megatron's `DType` enum values.
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
_CODE_OF = {np.dtype(t): c for c, t in DTYPE_CODES.items()}


class IndexedFormatError(UserError):
    """A `.bin`/`.idx` pair is missing, corrupt, truncated or inconsistent."""


class TokenRangeError(UserError):
    """A token file holds ids outside the tokenizer's vocabulary."""


def optimal_dtype(vocab_size: int) -> type[np.number]:
    """uint16 below 65500 tokens, int32 otherwise (Megatron's `DType.optimal_dtype`)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def idx_path(prefix: str | os.PathLike) -> str:
    return f"{os.fspath(prefix)}.idx"


def bin_path(prefix: str | os.PathLike) -> str:
    return f"{os.fspath(prefix)}.bin"


def dataset_exists(prefix: str | os.PathLike) -> bool:
    return os.path.isfile(idx_path(prefix)) and os.path.isfile(bin_path(prefix))


def check_token_files(files: Iterable[tuple[str, str | os.PathLike]], vocab_size: int | None = None,
                      sample_tokens: int = 1 << 20) -> None:
    """The one check that token files exist and are readable, before anything is built from them: for each
    (where, prefix) the .bin/.idx pair must exist, and its header, sizes and offsets must be sound (the index is read,
    the tokens only memory-mapped). With `vocab_size`, the first `sample_tokens` ids of each file must also be in
    range (scanning trillion-token files whole would take hours; readers check every batch as it is read).
    `where` names the file for the message (a config key, a source name)."""
    checked: set[str] = set()
    for where, prefix in files:
        if not dataset_exists(prefix):
            raise IndexedFormatError(f"{where}: no token files {prefix}.bin / {prefix}.idx (not found); write them "
                                     "with `nemotron4 prepare` or fix the path")
        if os.fspath(prefix) in checked:
            continue
        try:
            ds = IndexedDataset(prefix)
            if vocab_size is not None:
                ds.check_tokens(vocab_size, limit=sample_tokens)
        except UserError as e:
            raise type(e)(f"{where}: {e}") from e
        checked.add(os.fspath(prefix))


class IndexedDataset:
    """Memory-mapped reader. Item `i` is sequence `i` (one per document in files we write) as a numpy array.

    The index is validated on open (magic, version, dtype code, sizes of both files); any mismatch raises
    `IndexedFormatError` naming the file.
    """

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = os.fspath(prefix)
        self.idx_file, self.bin_file = idx_path(prefix), bin_path(prefix)
        for f in (self.idx_file, self.bin_file):
            if not os.path.isfile(f):
                raise IndexedFormatError(
                    f"token file {f} not found; run `nemotron4 prepare` to create {self.prefix}.bin/.idx"
                )
        self._read_index()
        self._map_bin()

    def _read_index(self) -> None:
        f = self.idx_file
        size = os.path.getsize(f)
        with open(f, "rb") as stream:
            head = stream.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise IndexedFormatError(f"{f}: truncated index ({size} bytes, header needs {_HEADER.size}); rebuild it")
        magic, version, code, n_seq, n_doc = _HEADER.unpack(head)
        if magic != MAGIC:
            raise IndexedFormatError(f"{f}: not a Megatron MMIDIDX index (magic {magic!r}); rebuild it")
        if version != VERSION:
            raise IndexedFormatError(f"{f}: unsupported index version {version} (expected {VERSION})")
        if code not in DTYPE_CODES:
            raise IndexedFormatError(f"{f}: unknown dtype code {code} (valid: {sorted(DTYPE_CODES)})")
        expected = _HEADER.size + n_seq * (4 + 8) + n_doc * 8
        # Megatron's multimodal files append one int8 mode per sequence.
        if size not in (expected, expected + n_seq):
            raise IndexedFormatError(
                f"{f}: index is {size} bytes but its header ({n_seq} sequences, {n_doc} document entries) "
                f"needs {expected}; the file is truncated or corrupt, rebuild it"
            )
        self.dtype: type[np.number] = DTYPE_CODES[code]
        self._itemsize = np.dtype(self.dtype).itemsize
        self._idx_mmap = np.memmap(f, mode="r", dtype=np.uint8) if size else None
        buf = self._idx_mmap
        off = _HEADER.size
        self.sequence_lengths: np.ndarray = np.frombuffer(buf, np.int32, n_seq, off)
        off += n_seq * 4
        self.sequence_pointers: np.ndarray = np.frombuffer(buf, np.int64, n_seq, off)
        off += n_seq * 8
        self.document_indices: np.ndarray = np.frombuffer(buf, np.int64, n_doc, off)
        self._validate_index()

    def _validate_index(self) -> None:
        f, lengths, docs = self.idx_file, self.sequence_lengths, self.document_indices
        n_seq = len(lengths)
        if len(docs) == 0 or docs[0] != 0 or docs[-1] != n_seq or np.any(np.diff(docs) < 0):
            raise IndexedFormatError(f"{f}: document indices are not a sorted 0..{n_seq} range; rebuild the index")
        if n_seq and np.any(lengths < 0):
            raise IndexedFormatError(f"{f}: negative sequence length; the index is corrupt, rebuild it")
        starts = np.zeros(n_seq, np.int64)
        np.cumsum(lengths[:-1], dtype=np.int64, out=starts[1:])
        if not np.array_equal(starts * self._itemsize, self.sequence_pointers):
            raise IndexedFormatError(f"{f}: sequence pointers disagree with sequence lengths; rebuild the index")
        self.num_tokens = int(lengths.sum(dtype=np.int64))

    def _map_bin(self) -> None:
        size = os.path.getsize(self.bin_file)
        expected = self.num_tokens * self._itemsize
        if size != expected:
            raise IndexedFormatError(
                f"{self.bin_file}: {size} bytes but {self.idx_file} indexes {self.num_tokens} tokens "
                f"x {self._itemsize} bytes = {expected}; the pair is truncated or mismatched, rebuild it"
            )
        self._bin = np.memmap(self.bin_file, mode="r", dtype=self.dtype) if size else np.empty(0, self.dtype)

    def __len__(self) -> int:
        return len(self.sequence_lengths)

    @property
    def num_documents(self) -> int:
        return len(self.document_indices) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        """Sequence `i`, a read-only view (1-D, `self.dtype`)."""
        start = self.sequence_pointers[i] // self._itemsize
        return self._bin[start : start + self.sequence_lengths[i]]

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """`length` tokens of sequence `i` from `offset` (to its end when `length` is None)."""
        n = int(self.sequence_lengths[i])
        if length is None:
            length = n - offset
        start = self.sequence_pointers[i] // self._itemsize + offset
        return self._bin[start : start + length]

    def check_tokens(self, vocab_size: int, chunk: int = 1 << 26, limit: int | None = None) -> None:
        """Raise `TokenRangeError` naming the file if any token id (of the first `limit`, default all) is negative
        or >= `vocab_size`.

        One vectorised pass over the `.bin` file in `chunk`-token slices (bounded memory); call once at startup.
        """
        data = self._bin if limit is None else self._bin[:limit]
        for lo in range(0, len(data), chunk):
            block = data[lo : lo + chunk]
            bad = (block >= vocab_size) | (block < 0) if np.issubdtype(self.dtype, np.signedinteger) else (
                block >= vocab_size
            )
            if bad.any():
                pos = lo + int(np.argmax(bad))
                seq = int(np.searchsorted(self.sequence_pointers // self._itemsize, pos, side="right")) - 1
                raise TokenRangeError(
                    f"{self.bin_file}: token id {int(data[pos])} at position {pos} (sequence {seq}) is outside the "
                    f"vocabulary of {vocab_size}: the file was made with another tokenizer; re-run `nemotron4 prepare` "
                    "with the model's tokenizer, or set the model's vocab_size to the tokenizer's"
                )


class IndexedDatasetBuilder:
    """Writer. Tokens go to `<prefix>.bin.tmp`, the index to `<prefix>.idx.tmp`; `finalize()` renames both into
    place, so a crash never leaves a half-written pair under the real name. Usable as a context manager (an
    exception inside the block removes the temporary files)."""

    def __init__(self, prefix: str | os.PathLike, dtype: type[np.number] = np.int32) -> None:
        if np.dtype(dtype) not in _CODE_OF:
            raise UserError(f"unsupported token dtype {dtype}; choose one of {sorted(map(str, _CODE_OF))}")
        self.prefix = os.fspath(prefix)
        self.dtype = np.dtype(dtype)
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._bin_tmp, self._idx_tmp = bin_path(prefix) + ".tmp", idx_path(prefix) + ".tmp"
        self._bin = open(self._bin_tmp, "wb")  # noqa: SIM115 - closed in finalize()/abort()
        self._lengths = array("q")
        self.num_tokens = 0

    def add_document(self, tokens: np.ndarray | list[int]) -> None:
        """Append one document as one sequence. Ids must fit the dtype (checked: no silent wrap-around)."""
        arr = np.asarray(tokens)
        if arr.dtype != self.dtype:
            if arr.size and (arr.min() < np.iinfo(self.dtype).min or arr.max() > np.iinfo(self.dtype).max):
                raise UserError(f"{self.prefix}: token id out of range for {self.dtype} (max {arr.max()})")
            arr = arr.astype(self.dtype)
        self._bin.write(arr.tobytes(order="C"))
        self._lengths.append(arr.size)
        self.num_tokens += arr.size

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append many documents at once: `tokens` concatenated (already `self.dtype`), `lengths` per document."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        if int(np.sum(lengths)) != tokens.size:
            raise ValueError(f"lengths sum to {int(np.sum(lengths))} but {tokens.size} tokens were given")
        self._bin.write(tokens.tobytes())
        self._lengths.extend(np.asarray(lengths, np.int64).tolist())
        self.num_tokens += tokens.size

    def finalize(self) -> None:
        """Write the index and move both files to their final names."""
        self._bin.close()
        lengths = np.frombuffer(self._lengths, np.int64) if len(self._lengths) else np.zeros(0, np.int64)
        if lengths.size and lengths.max() > np.iinfo(np.int32).max:
            raise UserError(f"{self.prefix}: a document has more than 2**31 tokens; split it")
        n = len(lengths)
        pointers = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1] * self.dtype.itemsize, out=pointers[1:])
        with open(self._idx_tmp, "wb") as f:
            f.write(_HEADER.pack(MAGIC, VERSION, _CODE_OF[self.dtype], n, n + 1))
            f.write(lengths.astype(np.int32).tobytes())
            f.write(pointers.tobytes())
            f.write(np.arange(n + 1, dtype=np.int64).tobytes())
        os.replace(self._bin_tmp, bin_path(self.prefix))
        os.replace(self._idx_tmp, idx_path(self.prefix))

    def abort(self) -> None:
        """Drop the temporary files."""
        self._bin.close()
        for f in (self._bin_tmp, self._idx_tmp):
            if os.path.exists(f):
                os.remove(f)

    def __enter__(self) -> IndexedDatasetBuilder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if not self._bin.closed:
                self.finalize()
        else:
            self.abort()
