"""Input documents for `prepare` and the tokenizer: JSONL (a configurable text field), plain-text files (one
document per file), folders of those, and Parquet (optional `pyarrow`, imported lazily).

Reading is split in two so that the expensive half runs in worker processes: `read_batches` (main process) cuts
files into raw batches (bytes lines, or strings from Parquet); `parse_batch` (worker) decodes them into texts and
counts what was wrong. Nothing here raises on bad input: problems are counted per file.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nemotron4.errors import UserError

__all__ = ["PROBLEMS", "Batch", "FileStats", "expand_inputs", "parse_batch", "read_batches"]

PROBLEMS = ("invalid_utf8", "bad_json", "missing_field", "empty", "unreadable")
"""Kinds of bad input, counted per file."""


@dataclass
class FileStats:
    """What one input file gave: documents kept, bytes read, and counts of each problem in `PROBLEMS`."""

    path: str
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    """Message of the error that stopped reading this file (counted as `unreadable`)."""

    def add(self, kind: str, n: int = 1) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + n

    def count(self, documents: int, tokens: int, nbytes: int, problems: dict[str, int]) -> None:
        """Add what one batch or shard of the file gave."""
        self.documents += documents
        self.tokens += tokens
        self.bytes += nbytes
        for k, v in problems.items():
            self.add(k, v)


@dataclass
class Batch:
    """A unit of work: raw records from one file. `kind` is 'jsonl' (bytes lines), 'text' (one bytes document)
    or 'strings' (already-decoded values from Parquet; None for a missing value)."""

    file_index: int
    kind: str
    records: list
    nbytes: int
    text_field: str = "text"
    problems: dict[str, int] = field(default_factory=dict)
    """Problems found while reading (main process), merged into the file's stats."""


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named directly, and every regular file under named folders (sorted, hidden files skipped)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(
                f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.parts)
            )
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"input {p} does not exist; pass JSONL, text or Parquet files, or folders of them")
    if not files:
        raise UserError(f"no input files found in {', '.join(map(str, inputs))}")
    return files


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def read_batches(
    files: list[Path], text_field: str = "text", batch_bytes: int = 1 << 20, stats: list[FileStats] | None = None
) -> Iterator[Batch]:
    """Cut `files` into batches of about `batch_bytes`. Unreadable files yield one batch that counts the problem."""
    for i, path in enumerate(files):
        try:
            yield from _read_file(i, path, text_field, batch_bytes)
        except (OSError, EOFError, UserError, ValueError) as e:
            yield Batch(i, "text", [], 0, text_field, problems={"unreadable": 1})
            if stats is not None:
                stats[i].error = f"{type(e).__name__}: {e}"


def _read_file(i: int, path: Path, text_field: str, batch_bytes: int) -> Iterator[Batch]:
    kind = _kind(path)
    if kind == "text":
        data = path.read_bytes()
        yield Batch(i, "text", [data], len(data), text_field)
    elif kind == "jsonl":
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            lines: list[bytes] = []
            size = 0
            for line in f:
                lines.append(line)
                size += len(line)
                if size >= batch_bytes:
                    yield Batch(i, "jsonl", lines, size, text_field)
                    lines, size = [], 0
            if lines:
                yield Batch(i, "jsonl", lines, size, text_field)
    else:
        yield from _read_parquet(i, path, text_field, batch_bytes)


def _read_parquet(i: int, path: Path, text_field: str, batch_bytes: int) -> Iterator[Batch]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise UserError("reading Parquet needs pyarrow: pip install 'nemotron4[parquet]'") from e
    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        n = pf.metadata.num_rows
        yield Batch(i, "strings", [], 0, text_field, problems={"missing_field": n})
        return
    for rb in pf.iter_batches(batch_size=4096, columns=[text_field]):
        values = rb.column(0).to_pylist()
        nbytes = rb.nbytes
        yield Batch(i, "strings", [v if isinstance(v, str) else None for v in values], nbytes, text_field)


def parse_batch(batch: Batch) -> tuple[list[str], dict[str, int]]:
    """Decode a batch into non-empty texts; returns (texts, problem counts)."""
    problems = dict(batch.problems)

    def bad(kind: str) -> None:
        problems[kind] = problems.get(kind, 0) + 1

    texts: list[str] = []
    for rec in batch.records:
        if batch.kind == "strings":
            text = rec
            if text is None:
                bad("missing_field")
                continue
        else:
            try:
                raw = rec.decode("utf-8")
            except UnicodeDecodeError:
                bad("invalid_utf8")
                continue
            if batch.kind == "jsonl":
                if not raw.strip():
                    continue  # blank line between records: not a document
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError:
                    bad("bad_json")
                    continue
                text = obj.get(batch.text_field) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    bad("missing_field")
                    continue
            else:
                text = raw
        if not text.strip():
            bad("empty")
            continue
        texts.append(text)
    return texts, problems
