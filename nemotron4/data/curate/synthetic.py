"""Generated text with planted duplicates, for the curation tests and bench/curate.py.

Documents are runs of made-up words (plus common English stop words, so that they pass the heuristic filters),
in lines of about a dozen words. A near copy replaces `m` words spaced at least `shingle` apart with new words:
each replacement changes exactly `shingle` of the N shingles, so the copy's Jaccard similarity to the original
is (N - shingle m) / (N + shingle m), the `m` closest to the target similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["PlantedCorpus", "jaccard", "planted_corpus", "random_docs", "near_copy"]

STOP = ("the", "of", "and", "to", "that", "with", "be", "have")
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def vocabulary(rng: np.random.Generator, n: int = 50_000) -> np.ndarray:
    lengths = rng.integers(3, 10, n)
    letters = _LETTERS[rng.integers(0, 26, int(lengths.sum()))]
    words, pos = [], 0
    for n_chars in lengths.tolist():
        words.append("".join(letters[pos : pos + n_chars]))
        pos += n_chars
    return np.array(words + list(STOP))


def _render(words: list[str], per_line: int = 12) -> str:
    return "\n".join(" ".join(words[i : i + per_line]) for i in range(0, len(words), per_line)) + "\n"


def random_docs(rng: np.random.Generator, vocab: np.ndarray, n: int, words: tuple[int, int],
                zipf: bool = False) -> list[list[str]]:
    """`n` word lists of words[0]..words[1] words; about one word in five is a stop word (`vocab` ends with
    `STOP`, as `vocabulary` makes it). Words are uniform over the vocabulary, or with `zipf` as in real text: the
    k-th most frequent word k times rarer than the first."""
    out = []
    stop = np.flatnonzero(np.isin(vocab, STOP))
    n_words = len(vocab) - len(STOP)
    cdf = np.cumsum(1.0 / np.arange(1, n_words + 1))
    cdf /= cdf[-1]
    for length in rng.integers(words[0], words[1] + 1, n).tolist():
        if zipf:
            idx = np.minimum(np.searchsorted(cdf, rng.random(length)), n_words - 1)
        else:
            idx = rng.integers(0, n_words, length)
        is_stop = rng.random(length) < 0.2
        idx[is_stop] = rng.choice(stop, int(is_stop.sum()))
        out.append(vocab[idx].tolist())
    return out


def near_copy(rng: np.random.Generator, vocab: np.ndarray, words: list[str], target: float,
              shingle: int) -> list[str]:
    """A copy of `words` whose shingle-set Jaccard similarity to them is as close to `target` as possible."""
    n_sh = len(words) - shingle + 1
    m = round(n_sh * (1 - target) / (shingle * (1 + target)))
    slots = np.arange(0, len(words), shingle)
    m = min(m, len(slots))
    out = list(words)
    for pos in rng.choice(slots, m, replace=False).tolist():
        out[pos] = "x" + str(vocab[rng.integers(0, len(vocab))])  # a word no original holds ("x" + word)
    return out


def shingles(words: list[str], shingle: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + shingle]) for i in range(max(len(words) - shingle + 1, 1))}


def jaccard(a: list[str], b: list[str], shingle: int) -> float:
    """Exact Jaccard similarity of two word lists' shingle sets (independent of the MinHash code)."""
    sa, sb = shingles(a, shingle), shingles(b, shingle)
    return len(sa & sb) / len(sa | sb)


@dataclass
class PlantedCorpus:
    docs: dict[str, list[str]] = field(default_factory=dict)
    """source -> documents (text)"""
    pairs: list[tuple[tuple[str, int], tuple[str, int], float]] = field(default_factory=list)
    """(original, copy, exact Jaccard similarity) near-copy pairs, (source, position) each"""
    exact: list[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=list)
    """(original, copy) pairs whose normalised texts are equal (the copy differs in case, spacing, punctuation)"""
    distinct: list[tuple[str, int]] = field(default_factory=list)


def _variant(text: str, rng: np.random.Generator) -> str:
    """The same words in other case, spacing and punctuation."""
    words = text.split()
    for i in rng.choice(len(words), max(len(words) // 5, 1), replace=False).tolist():
        words[i] = words[i].upper() + rng.choice([",", ".", "!", ";", ""])
    return "  ".join(words) + "\n\n"


def planted_corpus(n_distinct: int = 200, n_pairs: int = 300, n_exact: int = 30, words: tuple[int, int] = (150, 400),
                   shingle: int = 5, similarities: tuple[float, float] = (0.3, 1.0), sources: int = 2,
                   seed: int = 0) -> PlantedCorpus:
    """Documents over `sources` sources: distinct ones, near-copy pairs at similarities spread uniformly over
    `similarities`, and exact copies; the copies come after all originals, each in a random source."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    names = [f"src{i}" for i in range(sources)]
    corpus = PlantedCorpus({n: [] for n in names})
    originals = random_docs(rng, vocab, n_distinct + n_pairs + n_exact, words)
    copies = []

    def put(text: str, source: str | None = None) -> tuple[str, int]:
        src = source or names[int(rng.integers(0, sources))]
        corpus.docs[src].append(text)
        return src, len(corpus.docs[src]) - 1

    for i, w in enumerate(originals):
        where = put(_render(w))
        if i < n_distinct:
            corpus.distinct.append(where)
        elif i < n_distinct + n_pairs:
            target = float(rng.uniform(*similarities))
            copy = near_copy(rng, vocab, w, target, shingle)
            copies.append(("near", where, copy, jaccard(w, copy, shingle)))
        else:
            copies.append(("exact", where, _variant(_render(w), rng), 1.0))
    for kind, original, copy, sim in copies:
        if kind == "near":
            corpus.pairs.append((original, put(_render(copy)), sim))
        else:
            corpus.exact.append((original, put(copy)))
    return corpus
