"""The LSH index on disk, split into partitions, and the duplicate clusters it yields.

Each shard's worker writes, per partition, the rows whose key falls in it: `(band key, doc id)` for near
deduplication, `(key hi, key lo, doc id)` for exact deduplication. A reduce task then loads one partition of one
category from every shard, sorts it and finds the runs of equal keys, so memory holds 1/partitions of the index at
a time (16 bytes per band per document), and partitions run in parallel on any engine. Doc ids are
`shard << 32 | position in shard`: their order is the corpus order, so "the smallest id" is the same
representative on one core or many nodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nemotron4.data.curate.minhash import estimated_jaccard

__all__ = ["clusters", "exact_duplicates", "near_edges", "pack_ids", "write_partitions"]


def pack_ids(shard: int, local: np.ndarray) -> np.ndarray:
    return (np.uint64(shard) << np.uint64(32)) | local.astype(np.uint64)


def write_partitions(folder: Path, name: str, rows: np.ndarray, partitions: int) -> None:
    """Split `rows` (n, k) uint64, column 0 a hash, by column 0 modulo `partitions` into `name.<p>.npy`."""
    part = rows[:, 0] % np.uint64(partitions) if len(rows) else np.zeros(0, np.uint64)
    for p in range(partitions):
        np.save(folder / f"{name}.{p}.npy", rows[part == p])


def _load(folders: list[Path], name: str, p: int, width: int) -> np.ndarray:
    parts = [np.load(f / f"{name}.{p}.npy") for f in folders]
    return np.concatenate(parts) if parts else np.zeros((0, width), np.uint64)


def _runs(keys: np.ndarray) -> np.ndarray:
    """Mask of rows (sorted by key) whose key equals the previous row's."""
    same = np.zeros(len(keys), bool)
    if len(keys) > 1:
        same[1:] = np.all(keys[1:] == keys[:-1], axis=1)
    return same


def exact_duplicates(folders: list[Path], p: int) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate ids, the id of the first document with the same key, for each) in partition `p`."""
    rows = _load(folders, "exact", p, 3)
    if not len(rows):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    dup = _runs(rows[:, :2])
    first = np.maximum.accumulate(np.where(~dup, np.arange(len(rows)), 0))
    return rows[dup, 2], rows[first[dup], 2]


def near_edges(folders: dict[int, Path], p: int, threshold: float) -> np.ndarray:
    """(E, 2) uint64 pairs (first id of a bucket, other member) in partition `p` whose signatures agree on at
    least `threshold` of their positions (the estimated Jaccard similarity)."""
    rows = _load(list(folders.values()), "band", p, 2)
    if not len(rows):
        return np.zeros((0, 2), np.uint64)
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    same = _runs(rows[:, :1])
    first = np.maximum.accumulate(np.where(~same, np.arange(len(rows)), 0))
    edges = np.stack([rows[first[same], 1], rows[same, 1]], axis=1)
    if not len(edges):
        return edges
    edges = np.unique(edges, axis=0)
    keep = estimated_jaccard(_signatures(folders, edges[:, 0]), _signatures(folders, edges[:, 1])) >= threshold
    return edges[keep]


def _signatures(folders: dict[int, Path], ids: np.ndarray) -> np.ndarray:
    shard = (ids >> np.uint64(32)).astype(np.int64)
    local = (ids & np.uint64(0xFFFFFFFF)).astype(np.int64)
    out = None
    for s in np.unique(shard):
        sel = shard == s
        sig = np.load(folders[int(s)] / "sig.npy", mmap_mode="r")
        pos = np.load(folders[int(s)] / "sig_ids.npy")
        rows = np.asarray(sig[np.searchsorted(pos, local[sel])])
        if out is None:
            out = np.zeros((len(ids), sig.shape[1]), np.uint32)
        out[sel] = rows
    return out


def clusters(ids: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Root (smallest member id) of each id's cluster under the union of `edges`; `ids` sorted."""
    parent = np.arange(len(ids))
    if len(edges):
        a = np.searchsorted(ids, edges[:, 0])
        b = np.searchsorted(ids, edges[:, 1])

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = find(x), find(y)
            if rx != ry:
                parent[max(rx, ry)] = min(rx, ry)  # the smaller index (= smaller id) stays the root
        while True:  # pointer jumping until every id points at its root
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    return ids[parent]
