"""The curation report: documents and bytes in / out per source and category, removed per stage, examples."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CurateReport", "SourceReport", "STAGE_ORDER"]

STAGE_ORDER = ("word_count", "mean_word_length", "symbol_ratio", "bullet_lines", "ellipsis_lines", "alpha_words",
               "repeated_lines", "stop_words", "classifier", "exact", "near")
"""The order documents go through the stages (a document is counted by the first stage that removes it)."""


@dataclass
class SourceReport:
    name: str
    category: str
    docs_in: int = 0
    bytes_in: int = 0
    docs_out: int = 0
    bytes_out: int = 0
    removed: dict[str, dict[str, int]] = field(default_factory=dict)
    """stage -> {"docs": n, "bytes": n}"""
    problems: dict[str, int] = field(default_factory=dict)
    """Unreadable records skipped (as `prepare` skips them)."""


@dataclass
class CurateReport:
    engine: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    sources: list[SourceReport] = field(default_factory=list)
    examples: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    """category -> stage -> removed documents (text cut to 400 characters)"""
    seconds: dict[str, float] = field(default_factory=dict)
    lsh_index: dict[str, int] = field(default_factory=dict)
    """The on-disk LSH index: partitions, bytes, largest_partition_bytes (on disk), peak_task_bytes (the most memory
    one near-dedup task allocated, traced: the partition, its sort, the signatures it compared)."""
    dropped: list[str] = field(default_factory=list)
    """Sources left out of the output manifest: every one of their documents was removed."""

    def add_example(self, category: str, stage: str, example: dict, limit: int) -> None:
        got = self.examples.setdefault(category, {}).setdefault(stage, [])
        if len(got) < limit:
            got.append({**example, "text": example["text"][:400]})

    def stages(self) -> list[str]:
        seen = {k for s in self.sources for k in s.removed}
        return [s for s in STAGE_ORDER if s in seen]

    def categories(self) -> dict[str, SourceReport]:
        out: dict[str, SourceReport] = {}
        for s in self.sources:
            c = out.setdefault(s.category, SourceReport(s.category, s.category))
            c.docs_in += s.docs_in
            c.bytes_in += s.bytes_in
            c.docs_out += s.docs_out
            c.bytes_out += s.bytes_out
            for stage, v in s.removed.items():
                got = c.removed.setdefault(stage, {"docs": 0, "bytes": 0})
                got["docs"] += v["docs"]
                got["bytes"] += v["bytes"]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": "nemotron4-curate-report", "version": 1, "engine": self.engine, "seconds": self.seconds,
                "stages": self.stages(), "categories": {k: asdict(v) for k, v in self.categories().items()},
                "sources": [asdict(s) for s in self.sources], "dropped": self.dropped, "lsh_index": self.lsh_index,
                "examples": self.examples,
                "config": self.config}

    @classmethod
    def load(cls, path: str | os.PathLike) -> CurateReport:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return cls(d["engine"], d["config"], [SourceReport(**s) for s in d["sources"]], d["examples"], d["seconds"],
                   d.get("lsh_index", {}), d.get("dropped", []))

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    def format(self, per_source: bool = True, examples: int = 1) -> str:
        """The report as text: a table of stages x categories, then a line per source and a few examples."""
        cats = self.categories()
        stages = self.stages()
        w = 22

        def cell(docs: int, nbytes: int, sign: str = "") -> str:
            return f"{sign}{docs:,} ({nbytes / 1e6:.2f} MB)".rjust(w)

        lines = ["stage".ljust(18) + "".join(c.rjust(w) for c in cats)]
        lines.append("in".ljust(18) + "".join(cell(c.docs_in, c.bytes_in) for c in cats.values()))
        for stage in stages:
            row = [c.removed.get(stage, {"docs": 0, "bytes": 0}) for c in cats.values()]
            lines.append(f"- {stage}".ljust(18) + "".join(cell(r["docs"], r["bytes"], "-") for r in row))
        lines.append("out".ljust(18) + "".join(cell(c.docs_out, c.bytes_out) for c in cats.values()))
        if per_source:
            for s in self.sources:
                gone = ", ".join(f"{k} {v['docs']}" for k, v in s.removed.items() if v["docs"])
                lines.append(f"  {s.name}: {s.docs_in:,} -> {s.docs_out:,} docs" + (f" ({gone})" if gone else ""))
        for cat, by_stage in self.examples.items():
            for stage in STAGE_ORDER:
                for ex in by_stage.get(stage, [])[:examples]:
                    dup = ex.get("duplicate_of")
                    of = f" (duplicate of {dup['source']} #{dup['doc']})" if dup else ""
                    text = " ".join(ex["text"].split())[:90]
                    lines.append(f"  e.g. {cat} {stage}: {ex['source']}{of}: {text!r}")
        if self.dropped:
            lines.append(f"  left out of the manifest (no document kept): {', '.join(self.dropped)}")
        if self.seconds:
            lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join(lines)
