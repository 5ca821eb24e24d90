"""The one normalisation rule of deduplication, and the exact-duplicate key.

A document's words are its runs of letters and digits, lower-cased: two documents that differ only in case,
punctuation, symbols or spacing have the same words, the same exact key and the same shingles.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

__all__ = ["exact_key", "normalise"]

_WORD = re.compile(r"[^\W_]+")


def normalise(text: str) -> list[str]:
    """The words of `text` after normalisation (lower case, without punctuation, symbols or spacing)."""
    return _WORD.findall(text.lower())


def exact_key(words: list[str]) -> np.ndarray:
    """128-bit key of the normalised text, as two uint64 (BLAKE2b)."""
    digest = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).digest()
    return np.frombuffer(digest, np.uint64)
