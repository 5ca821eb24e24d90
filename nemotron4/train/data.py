"""The trainer's view of the data pipeline (nemotron4.data): one blended, resumable loader per phase, and fixed
held-out batches per category. Imports nemotron4.data lazily so that config checks need no data code."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from nemotron4.train.config import BlendSection, PhaseSection

__all__ = ["build_eval_batches", "build_phase_loader", "to_blend_config"]


def to_blend_config(section: BlendSection, category: str | None = None) -> Any:
    """The data pipeline's BlendConfig, optionally restricted to one category."""
    from nemotron4.data.blend import BlendConfig, Source

    sources = [
        Source(s.name, s.path, s.category, s.weight, s.valid_path)
        for s in section.sources
        if category is None or s.category == category
    ]
    categories = {c: w for c, w in section.categories.items() if any(s.category == c for s in sources)}
    return BlendConfig(categories, sources, within_category=section.within_category, alpha=section.alpha)


def build_phase_loader(
    phase: PhaseSection, seq_len: int, micro_batch_size: int, seed: int, cache_dir: Path | None = None,
    dp_rank: int = 0, dp_size: int = 1,
) -> Any:
    """A `nemotron4.data.loader.DataLoader` over the phase's blend, sized for its token budget (plus one largest
    batch, since the last step may run past the budget)."""
    from nemotron4.data.blend import build_blend
    from nemotron4.data.loader import DataLoader

    num_samples = math.ceil(phase.tokens / seq_len) + max(phase.batch_size.sizes)
    dataset = build_blend(to_blend_config(phase.blend), seq_len, num_samples, seed, cache_dir=cache_dir)
    return DataLoader(dataset, micro_batch_size, dp_rank=dp_rank, dp_size=dp_size)


def build_eval_batches(
    phase: PhaseSection, seq_len: int, micro_batch_size: int, n_batches: int, seed: int, cache_dir: Path | None = None
) -> dict[str, list[torch.Tensor]]:
    """{category: [n_batches x (micro_batch_size, seq_len + 1) LongTensor]} from the sources' valid_path files;
    the same samples every time. Categories without held-out files are left out."""
    from nemotron4.data.blend import build_blend

    out: dict[str, list[torch.Tensor]] = {}
    n = n_batches * micro_batch_size
    for category in phase.blend.categories:
        if not any(s.valid_path and s.category == category for s in phase.blend.sources):
            continue
        cfg = to_blend_config(phase.blend, category=category)
        dataset = build_blend(cfg, seq_len, n, seed, cache_dir=cache_dir, split="valid")
        samples = torch.stack([torch.as_tensor(dataset[i], dtype=torch.long) for i in range(n)])
        out[category] = list(samples.split(micro_batch_size))
    return out
