"""The corpus manifest: the one list of sources that `tokenizer train`, `prepare` and the blend all read.

`corpus build` writes it; anyone can write one by hand for their own data. JSON, paths relative to the file:

    {"format": "nemotron4-corpus", "version": 1, "text_field": "text",
     "sources": [{"name": "en-man", "category": "english", "language": "en",
                  "train": "train/en-man.jsonl", "heldout": "heldout/en-man.jsonl", "docs": 812, "bytes": 2100000}],
     "translation": [{"pair": "en-de", "path": "translation/en-de.jsonl", "pairs": 500}]}
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nemotron4.errors import UserError

__all__ = ["CATEGORIES", "Manifest", "ManifestSource", "iter_jsonl_texts", "tokenizer_sample"]

CATEGORIES: dict[str, float] = {"english": 0.70, "multilingual": 0.15, "code": 0.15}
"""Default category shares (docs/paper.md section 3)."""

FORMAT = "nemotron4-corpus"


@dataclass
class ManifestSource:
    """One source of text: a train file and an optional held-out file (JSONL, one document per line)."""

    name: str
    category: str
    language: str
    train: str
    heldout: str | None = None
    docs: int = 0
    bytes: int = 0
    heldout_docs: int = 0
    heldout_bytes: int = 0


@dataclass
class Manifest:
    sources: list[ManifestSource]
    translation: list[dict] = field(default_factory=list)
    text_field: str = "text"
    root: Path = Path(".")
    """Folder the relative paths are resolved against (the manifest's folder; not serialised)."""

    def path(self, rel: str) -> Path:
        return self.root / rel

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read corpus manifest {path}: {e}") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(f"{path} is not a nemotron4 corpus manifest (expected \"format\": \"{FORMAT}\")")
        try:
            sources = [ManifestSource(**s) for s in d["sources"]]
        except (KeyError, TypeError) as e:
            raise UserError(f"{path}: malformed source entry ({e})") from e
        return cls(sources, d.get("translation", []), d.get("text_field", "text"), path.parent)

    def save(self, path: str | os.PathLike) -> None:
        d = {
            "format": FORMAT,
            "version": 1,
            "text_field": self.text_field,
            "sources": [asdict(s) for s in self.sources],
            "translation": self.translation,
        }
        Path(path).write_text(json.dumps(d, indent=1, ensure_ascii=False) + "\n")


def iter_jsonl_texts(path: str | os.PathLike, text_field: str = "text") -> Iterator[str]:
    """Texts of a JSONL file, skipping lines that are not valid records (prepare is where those are counted)."""
    with open(path, "rb") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if isinstance(text, str) and text.strip():
                yield text


_OVERSAMPLE = 1.05


def tokenizer_sample(
    manifest: Manifest, sample_bytes: int, non_english_upsample: float = 2.0, seed: int = 0
) -> Iterator[str]:
    """Documents for tokenizer training, about `sample_bytes` in all, drawn from every source's train split.

    Each source's quota is proportional to its size, times `non_english_upsample` for the multilingual category
    (docs/paper.md section 2). A source smaller than its quota is repeated (that is what upsampling means for BPE merge
    counts); a larger one is sampled at random in one streaming pass, keeping each document with probability
    about quota / size, so memory holds the sample, never a whole source. Sources are interleaved so that a
    truncated sample stays mixed.
    """
    rng = random.Random(seed)
    weights = [s.bytes * (non_english_upsample if s.category == "multilingual" else 1.0) for s in manifest.sources]
    total = sum(weights)
    if total <= 0:
        raise UserError("the manifest's sources hold no text; run `nemotron4 corpus build` or check the paths")
    plans = []
    for s, w in zip(manifest.sources, weights, strict=True):
        quota = int(sample_bytes * w / total)
        if quota <= 0 or s.bytes <= 0:
            continue
        keep = min(1.0, _OVERSAMPLE * quota / s.bytes)  # a little over, so the quota is met without repeats
        texts = iter_jsonl_texts(manifest.path(s.train), manifest.text_field)
        if keep >= 1.0:
            docs = list(texts)
        else:
            docs, first = [], None
            for t in texts:
                first = t if first is None else first
                if rng.random() < keep:
                    docs.append(t)
            if not docs and first is not None:  # a quota of a few documents can draw none: never drop a source
                docs = [first]
        rng.shuffle(docs)
        plans.append(_take(docs, quota))
    while plans:  # round-robin over sources
        for it in list(plans):
            doc = next(it, None)
            if doc is None:
                plans.remove(it)
            else:
                yield doc


def _take(docs: list[str], quota: int) -> Iterator[str]:
    """Cycle through `docs` until `quota` UTF-8 bytes were yielded."""
    if not docs:
        return
    taken, i = 0, 0
    while taken < quota:
        doc = docs[i % len(docs)]
        taken += len(doc.encode("utf-8"))
        i += 1
        yield doc
