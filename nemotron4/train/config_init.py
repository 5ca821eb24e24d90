"""A two-phase training config from prepared token files: what `nemotron4 config init` writes.

The blend's sources are every entry of the token manifest `nemotron4 prepare --manifest` wrote (`sources.json`),
grouped by their category; the categories share each batch by `shares` (by default the paper's English 70 /
multilingual 15 / code 15, restricted to the categories present and renormalised). Phase 1 pretrains on 90% of the
tokens with warmup and cosine decay; phase 2 continues on the rest with the higher-quality blend the paper uses
(here: the same categories, the held-out-scored sources unchanged) and the LR decaying linearly to 0 from where
pretraining ended. The model's vocabulary is the tokenizer's (recorded in `sources.json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nemotron4.config import ModelConfig
from nemotron4.data.manifest import CATEGORIES
from nemotron4.errors import UserError
from nemotron4.train.config_io import job_from_dict

__all__ = ["init_config", "parse_shares"]


def parse_shares(text: str) -> dict[str, float]:
    """"english=70,code=30" -> {"english": 70.0, "code": 30.0}; a UserError naming the bad item."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--shares: {item!r} is not CATEGORY=SHARE (e.g. english=70,code=30)") from None
        if not name.strip() or out[name.strip()] <= 0:
            raise UserError(f"--shares: {item!r} needs a category name and a share > 0")
    return out


def _read_tokens_manifest(path: Path) -> tuple[Path, dict[str, Any]]:
    path = path / "sources.json" if path.is_dir() else path
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read token manifest {path}: {e}; give the sources.json that "
                        "`nemotron4 prepare --manifest ... --output-dir DIR` wrote (DIR/sources.json)") from None
    if not isinstance(doc, dict) or doc.get("format") != "nemotron4-tokens" or not doc.get("sources"):
        raise UserError(f"{path} is not a token manifest written by `nemotron4 prepare --manifest` "
                        "(format nemotron4-tokens with sources)")
    return path, doc


def init_config(
    manifest: Path, flavour: str, shares: dict[str, float] | None = None, tokens: int = 0, seq_len: int = 0,
    batch_size: int = 8, lr: float = 3e-4,
) -> dict[str, Any]:
    """The config (a dict `dumps_toml` writes) for training `flavour` on the token files of `manifest`.
    tokens: in all (0: every prepared training token once); seq_len: 0: min(1024, the model's max_seq_len)."""
    path, doc = _read_tokens_manifest(Path(manifest))
    root = path.parent.resolve()
    model = ModelConfig.from_name(flavour)
    sources = []
    for s in doc["sources"]:
        src = {"name": s["name"], "path": str(root / s["path"]), "category": s["category"]}
        if s.get("valid_path"):
            src["valid_path"] = str(root / s["valid_path"])
        sources.append(src)
    present = sorted({s["category"] for s in sources})
    wanted = shares or CATEGORIES
    missing = [c for c in present if c not in wanted]
    if missing:
        raise UserError(f"{path}: categories {missing} have no share; pass --shares with every category of "
                        f"{present} (e.g. {','.join(f'{c}=1' for c in present)})")
    categories = {c: round(100 * wanted[c] / sum(wanted[c] for c in present), 4) for c in present}
    total = sum(int(s.get("tokens", 0)) for s in doc["sources"])
    tokens = tokens or total
    seq_len = seq_len or min(1024, model.max_seq_len)
    per_step = batch_size * seq_len
    pretrain = max(per_step, tokens * 9 // 10 // per_step * per_step)
    continued = max(per_step, (tokens - pretrain) // per_step * per_step)
    blend = {"categories": categories, "sources": sources}
    raw: dict[str, Any] = {
        "model": {"flavour": flavour},
        "train": {"seq_len": seq_len, "micro_batch_size": batch_size},
        "phases": [
            {"name": "pretrain", "tokens": pretrain, "batch_size": batch_size, "lr": lr, "min_lr": lr / 10,
             "warmup_tokens": max(per_step, pretrain // 100 // per_step * per_step), "decay": "cosine",
             "blend": blend},
            {"name": "continued", "tokens": continued, "batch_size": batch_size, "min_lr": 0.0, "decay": "linear",
             "blend": blend},
        ],
    }
    tokenizer = doc.get("tokenizer")
    if isinstance(tokenizer, str) and Path(tokenizer).is_file():
        from nemotron4.tokenizer import Tokenizer

        raw["model"]["vocab_size"] = Tokenizer.load(tokenizer).vocab_size
    job_from_dict(raw).validate()  # what train will accept, checked before anything is written
    return raw
