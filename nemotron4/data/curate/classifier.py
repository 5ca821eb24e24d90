"""Optional quality classifier (fastText, the `curate` extra): trained on the user's positive and negative example
documents, it scores each document's probability of being "positive"; documents below the threshold are removed.

Training is single-threaded with a fixed seed, so the same examples give the same model and the same decisions.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np

from nemotron4.data.curate.config import ClassifierConfig
from nemotron4.data.curate.text import normalise
from nemotron4.data.readers import expand_inputs
from nemotron4.data.shards import plan_shards, shard_texts
from nemotron4.errors import UserError

__all__ = ["load_classifier", "score", "train_classifier"]

POSITIVE, NEGATIVE = "__label__positive", "__label__negative"


def _fasttext():
    try:
        import fasttext
    except ImportError as e:
        raise UserError("the classifier filter needs fastText: pip install 'nemotron4[curate]'") from e
    return fasttext


def _line(text: str) -> str:
    return " ".join(normalise(text))


def _examples(paths: list[str], text_field: str, limit: int) -> list[str]:
    out = []
    for shard in plan_shards(expand_inputs(paths)):
        for text in shard_texts(shard, text_field):
            line = _line(text)
            if line:
                out.append(line)
            if len(out) >= limit:
                return out
    if not out:
        raise UserError(f"no example documents could be read from {', '.join(paths)}")
    return out


def train_classifier(cfg: ClassifierConfig, output: str | os.PathLike, text_field: str = "text") -> Path:
    """Train on cfg.positive / cfg.negative and save the model to `output`."""
    fasttext = _fasttext()
    pos = _examples(cfg.positive, text_field, cfg.max_examples)
    neg = _examples(cfg.negative, text_field, cfg.max_examples)
    rows = [f"{POSITIVE} {t}" for t in pos] + [f"{NEGATIVE} {t}" for t in neg]
    random.Random(0).shuffle(rows)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=output.parent, delete=False, encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    try:
        model = fasttext.train_supervised(f.name, epoch=cfg.epoch, wordNgrams=cfg.word_ngrams, dim=cfg.dim,
                                          bucket=cfg.bucket, minCount=1, thread=1, seed=0, verbose=0)
    finally:
        os.unlink(f.name)
    model.save_model(str(output))
    return output


def load_classifier(path: str | os.PathLike):
    return _fasttext().load_model(str(path))


def score(model, texts: list[str]) -> np.ndarray:
    """Probability of the positive label per text (float32)."""
    if not texts:
        return np.zeros(0, np.float32)
    labels, probs = model.predict([_line(t) for t in texts], k=2)
    out = np.zeros(len(texts), np.float32)
    for i, (ls, ps) in enumerate(zip(labels, probs, strict=True)):
        out[i] = dict(zip(ls, ps, strict=True)).get(POSITIVE, 0.0)
    return out
