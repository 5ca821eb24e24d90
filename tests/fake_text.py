"""Made-up documents for tests that train tiny tokenizers: prose in a small vocabulary, a number, a code line."""

from __future__ import annotations

import random

CODE = ["def f(x):\n    return x + 1\n", "for i in range(10):\n\tprint(i)\n", "if (a == b) {\n  x = 42;\n}\n"]


def fake_docs(n: int, words: tuple[str, ...], seed: int = 0, max_words: int = 120) -> list[str]:
    """`n` documents of 5..max_words words drawn from `words`, then "Year NNNN." and one of `CODE`."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, max_words))).capitalize()
            + f". Year {rng.randint(1000, 2999)}.\n" + rng.choice(CODE) for _ in range(n)]


def train_fake_tokenizer(path, words: tuple[str, ...], german: tuple[str, ...], max_words: int):
    """A 400-piece tokenizer trained on English-like and German-like fake documents plus some non-ASCII text."""
    from nemotron4.tokenizer import TokenizerConfig, train_tokenizer

    docs = (fake_docs(400, words, 0, max_words) + fake_docs(100, german, 1, max_words)
            + ["Ünïcödé café naïve — “quotes”"] * 5)
    train_tokenizer(docs, path, TokenizerConfig(vocab_size=400, num_threads=2))
    return path
