"""Complete the demo's training config: fill every phase's blend with the prepared token files.

The TOML names only categories (english / multilingual / code / benchmark) because which sources exist depends on
the machine. Each phase gets every token file of its categories; in a phase with a `[demo.reweight.<phase>]` table
each source's weight is its size in tokens times its factor (default 1), otherwise sources share their category by
size, as in pretraining.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from nemotron4.errors import ConfigError
from nemotron4.train.config import JobConfig
from nemotron4.train.config_io import job_from_dict

__all__ = ["build_job", "read_token_sources"]


def read_token_sources(sources_json: Path) -> list[dict[str, Any]]:
    """The entries of a `sources.json` (from `prepare_manifest`), with absolute paths."""
    root = sources_json.parent
    out = []
    for s in json.loads(sources_json.read_text())["sources"]:
        entry = {"name": s["name"], "category": s["category"], "path": str(root / s["path"]), "tokens": s["tokens"]}
        if s.get("valid_path"):
            entry["valid_path"] = str(root / s["valid_path"])
        out.append(entry)
    return out


def build_job(
    raw: dict[str, Any], sources: list[dict[str, Any]], reweight: dict[str, dict[str, float]], lang: str,
    vocab_size: int,
) -> JobConfig:
    """A validated JobConfig: `raw` (the TOML's training tables) with the model's vocabulary set to the tokenizer's
    and each phase's blend sources filled from `sources` (entries of `read_token_sources`, plus the benchmark
    examples)."""
    raw = copy.deepcopy(raw)
    raw.setdefault("model", {})["vocab_size"] = vocab_size
    phase_names = [p.get("name") for p in raw.get("phases", [])]
    unknown = sorted(set(reweight) - set(phase_names))
    if unknown:
        raise ConfigError(f"demo.reweight names phases {unknown}; the phases are {phase_names}")
    for phase in raw.get("phases", []):
        blend = phase.setdefault("blend", {})
        if blend.get("sources"):
            raise ConfigError(f"phase {phase.get('name')!r}: the demo fills in the blend's sources; remove them")
        factors = {k.replace("{lang}", lang): float(v) for k, v in reweight.get(phase.get("name"), {}).items()}
        members = [s for s in sources if s["category"] in blend.get("categories", {})]
        missing = sorted(set(factors) - {s["name"] for s in members})
        if missing:
            raise ConfigError(f"demo.reweight.{phase.get('name')}: no source named {missing} in this phase's blend")
        blend["sources"] = [_source(s, factors) for s in members]
    job = job_from_dict(raw)
    job.validate()
    return job


def _source(s: dict[str, Any], factors: dict[str, float] | None) -> dict[str, Any]:
    out = {k: s[k] for k in ("name", "path", "category", "valid_path") if k in s}
    if factors:  # explicit weights for every source of the phase: a category mixes none with size weights
        out["weight"] = float(s["tokens"]) * factors.get(s["name"], 1.0)
    return out
