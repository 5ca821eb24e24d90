"""Helpers for the curation tests: corpora written as manifests, curation runs, what they kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemotron4.data.curate.config import CurateConfig
from nemotron4.data.curate.pipeline import curate
from nemotron4.data.curate.report import CurateReport
from nemotron4.data.engine import EngineConfig, open_engine
from nemotron4.data.manifest import Manifest, ManifestSource

pytest.importorskip("rensa", reason="curation needs rensa (pip install 'nemotron4[curate]')")


def write_corpus(root: Path, docs: dict[str, list[str]], category: str = "english", language: str = "en",
                 categories: dict[str, str] | None = None) -> Path:
    """A corpus folder (train/<source>.jsonl, manifest.json) holding `docs`; returns the manifest path."""
    sources = []
    for name, texts in docs.items():
        path = root / "train" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        cat = (categories or {}).get(name, category)
        sources.append(ManifestSource(name, cat, language, f"train/{name}.jsonl", docs=len(texts)))
    Manifest(sources, root=root).save(root / "manifest.json")
    return root / "manifest.json"


def run_curate(manifest: Path, out: Path, cfg: CurateConfig | None = None,
               engine: EngineConfig | None = None) -> CurateReport:
    with open_engine(engine or EngineConfig(workers=1)) as e:
        return curate(Manifest.load(manifest), out, cfg or CurateConfig(), e, progress=False)


def kept(out: Path, source: str) -> list[str]:
    path = out / "train" / f"{source}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def removed_positions(docs: dict[str, list[str]], out: Path) -> set[tuple[str, int]]:
    """(source, position) of the input documents missing from the output (which keeps the input order)."""
    gone = set()
    for source, texts in docs.items():
        rest = iter(kept(out, source))
        nxt = next(rest, None)
        for i, t in enumerate(texts):
            if t == nxt:
                nxt = next(rest, None)
            else:
                gone.add((source, i))
        assert nxt is None, f"{source}: the output holds a document that is not in the input, or out of order"
    return gone
