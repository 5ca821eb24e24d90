"""MinHash signatures of word shingles (rensa, a Rust MinHash) and their LSH band keys.

A document's shingles are its runs of `shingle` consecutive normalised words (a shorter document is one
shingle); rensa hashes the words, we combine each run's word hashes into one 64-bit shingle hash with numpy, and
rensa's `RMinHash` turns each document's shingle hashes into `num_perm` 32-bit minima. The fraction of equal
positions of two signatures estimates the Jaccard similarity of the two shingle sets.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["band_keys", "estimated_jaccard", "lsh_parameters", "shingle_hashes", "signatures"]

_MUL = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over the output (uint64, wrapping)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shingle_hashes(docs: list[list[str]], shingle: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint64 shingle hashes, row offsets of len(docs) + 1) of word lists (each non-empty)."""
    from rensa import RMinHash

    word_hashes = RMinHash.hash_token_sets(docs)
    lens = np.fromiter(map(len, word_hashes), np.int64, count=len(word_hashes))
    flat = np.fromiter(itertools.chain.from_iterable(word_hashes), np.uint64, count=int(lens.sum()))
    starts = np.zeros(len(lens), np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    n_sh = np.maximum(lens - shingle + 1, 1)
    row_start = np.zeros(len(lens), np.int64)
    np.cumsum(n_sh[:-1], out=row_start[1:])
    first = np.repeat(starts, n_sh) + (np.arange(int(n_sh.sum())) - np.repeat(row_start, n_sh))
    last = np.repeat(starts + lens - 1, n_sh)
    acc = np.zeros(first.size, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(shingle):
            # positions past a short document's end repeat its last word: a document shorter than a shingle
            # is one shingle of all its words
            acc = acc * _MUL + flat[np.minimum(first + j, last)]
    offsets = np.zeros(len(lens) + 1, np.uint64)
    np.cumsum(n_sh, out=offsets[1:])
    return _mix(acc), offsets


def signatures(docs: list[list[str]], shingle: int, num_perm: int, seed: int) -> np.ndarray:
    """(len(docs), num_perm) uint32 MinHash signatures of non-empty word lists."""
    from rensa import RMinHash

    if not docs:
        return np.zeros((0, num_perm), np.uint32)
    flat, offsets = shingle_hashes(docs, shingle)
    matrix = RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, seed)
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(docs), num_perm)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of `rows` signature values; distinct bands never share a key."""
    n = sigs.shape[0]
    if bands * rows > sigs.shape[1]:
        raise ValueError(f"bands x rows = {bands * rows} exceeds the signature length {sigs.shape[1]}")
    x = sigs[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    acc = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64), (n, bands)).copy()
    with np.errstate(over="ignore"):
        for j in range(rows):
            acc = _mix(acc * _MUL + x[:, :, j])
    return acc


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature positions."""
    return (a == b).mean(axis=-1)


def candidate_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray | float:
    """Probability that two documents of this Jaccard similarity share at least one LSH band."""
    return 1.0 - (1.0 - np.asarray(similarity) ** rows) ** bands


def lsh_parameters(threshold: float, num_perm: int, false_positive_weight: float = 0.1) -> tuple[int, int]:
    """(bands, rows), bands x rows <= num_perm, minimising the weighted areas of false positives (similarity below
    the threshold, yet a candidate) and false negatives (above it, never a candidate), as datasketch's MinHashLSH
    chooses them, but weighting misses 9:1 by default: candidates are verified on their signatures afterwards, so
    a false positive costs a comparison and a false negative a duplicate left in."""
    xs = np.linspace(0.0, 1.0, 501)
    below = xs < threshold
    best, best_cost = (1, 1), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = candidate_probability(xs, bands, rows)
            fp = np.trapezoid(np.where(below, p, 0.0), xs)
            fn = np.trapezoid(np.where(below, 0.0, 1.0 - p), xs)
            cost = false_positive_weight * fp + (1 - false_positive_weight) * fn
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best
