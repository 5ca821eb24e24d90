"""Input files cut into shards: units of work that workers on any node read on their own.

A plain JSONL file larger than `shard_bytes` is cut into byte ranges; a line belongs to the range holding its first
byte, so the shards of a file hold each of its lines exactly once, in order. Any other file (compressed JSONL,
Parquet, a text document) is one shard. The plan depends only on the files and `shard_bytes`, never on the number
of workers, so results keyed by shard are the same on one core or many nodes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nemotron4.data.readers import Batch, parse_batch, read_batches

__all__ = ["DEFAULT_SHARD_BYTES", "Shard", "plan_shards", "read_shard", "shard_texts"]

DEFAULT_SHARD_BYTES = 32 << 20


@dataclass(frozen=True)
class Shard:
    path: str
    start: int = 0
    end: int | None = None
    """Byte range [start, end) of a plain JSONL file; end None: the whole file."""

    @property
    def size(self) -> int:
        if self.end is not None:
            return self.end - self.start
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0


def _splittable(path: Path) -> bool:
    return path.name.lower().endswith((".jsonl", ".ndjson"))


def plan_shards(files: list[Path], shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Shard]:
    shards = []
    for f in files:
        size = f.stat().st_size if f.is_file() else 0
        if _splittable(f) and size > shard_bytes:
            shards += [Shard(str(f), s, min(s + shard_bytes, size)) for s in range(0, size, shard_bytes)]
        else:
            shards.append(Shard(str(f)))
    return shards


def read_shard(shard: Shard, text_field: str = "text", batch_bytes: int = 1 << 20) -> Iterator[Batch]:
    """Raw batches of one shard (decode them with `readers.parse_batch`)."""
    if shard.end is None:
        yield from read_batches([Path(shard.path)], text_field, batch_bytes)
        return
    with open(shard.path, "rb") as f:
        pos = shard.start
        if pos > 0:  # skip the line that started in the previous shard
            f.seek(pos - 1)
            if f.read(1) != b"\n":
                pos += len(f.readline())
        lines: list[bytes] = []
        size = 0
        while pos < shard.end:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            lines.append(line)
            size += len(line)
            if size >= batch_bytes:
                yield Batch(0, "jsonl", lines, size, text_field)
                lines, size = [], 0
        if lines:
            yield Batch(0, "jsonl", lines, size, text_field)


def shard_texts(shard: Shard, text_field: str = "text") -> Iterator[str]:
    """The documents of one shard, in order (bad records skipped, as `prepare` skips them)."""
    for batch in read_shard(shard, text_field):
        yield from parse_batch(batch)[0]
