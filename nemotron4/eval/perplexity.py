"""Held-out perplexity and bits per byte, per source and per blend category (docs/paper.md section 3's English /
multilingual / code split), from each source's held-out tokens (`Source.valid_path`).

Each source's held-out file is cut into windows of `seq_len + 1` tokens (the same sampler as training, so windows
cross document boundaries and eos separators are scored like any token); every token after a window's first is
predicted once. Per source: mean negative log-likelihood per token (nats), perplexity = exp of it, and, with a
tokenizer, bits per byte = total NLL / ln 2 / UTF-8 bytes of the scored tokens' text, which compares models with
different tokenizers. A category pools its sources' tokens (not an average of their perplexities).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nemotron4.data.blend import BlendConfig
from nemotron4.data.indexed import IndexedDataset
from nemotron4.data.samples import SequenceSamples
from nemotron4.model import Nemotron4

__all__ = ["evaluate_perplexity"]


def _windows(prefix: str, seq_len: int, max_samples: int, seed: int) -> SequenceSamples | None:
    ds = IndexedDataset(prefix)
    n = min(max_samples, (ds.num_tokens - 1) // seq_len)  # disjoint windows: no token is scored twice
    if n <= 0:
        return None
    return SequenceSamples(ds, seq_len, n, seed)


def _utf8_bytes(tokenizer: Any, rows: Sequence[Sequence[int]]) -> int:
    return sum(len(tokenizer.decode(list(r)).encode("utf-8")) for r in rows)


def _totals(nll: float, tokens: int, nbytes: int | None) -> dict[str, float | int | None]:
    mean = nll / max(tokens, 1)
    return {
        "tokens": tokens,
        "nll": mean,
        "perplexity": math.exp(min(mean, 700.0)),
        "bytes": nbytes,
        "bits_per_byte": nll / math.log(2) / nbytes if nbytes else None,
    }


@torch.no_grad()
def evaluate_perplexity(
    model: Nemotron4,
    blend_cfg: BlendConfig,
    seq_len: int,
    *,
    max_samples_per_source: int = 64,
    batch_size: int = 8,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """{"by_source": {name: stats}, "by_category": {category: stats}, "overall": stats}, where stats holds tokens,
    nll (nats per token), perplexity, bytes and bits_per_byte (None without a tokenizer). Sources without a
    `valid_path` are skipped and listed under "skipped"."""
    if seq_len < 1 or seq_len > model.cfg.max_seq_len:
        raise ValueError(f"seq_len must be in [1, {model.cfg.max_seq_len}], got {seq_len}")
    device = torch.device(device) if device is not None else model.tok_embeddings.weight.device
    was_training = model.training
    model.eval()
    raw: dict[str, tuple[float, int, int | None]] = {}
    skipped = [s.name for s in blend_cfg.sources if not s.valid_path]
    sources = [s for s in blend_cfg.sources if s.valid_path]
    try:
        for s in tqdm(sources, desc="perplexity", disable=not progress):
            windows = _windows(s.valid_path, seq_len, max_samples_per_source, seed)
            if windows is None:
                skipped.append(s.name)
                continue
            nll, count, nbytes = 0.0, 0, 0 if tokenizer is not None else None
            for start in range(0, len(windows), batch_size):
                batch = np.stack([windows[j] for j in range(start, min(start + batch_size, len(windows)))])
                x = torch.as_tensor(batch, dtype=torch.long, device=device)  # (B, seq_len + 1)
                logits = model(x[:, :-1]).float()  # (B, seq_len, vocab)
                loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum")
                nll += loss.item()
                count += x[:, 1:].numel()
                if tokenizer is not None:
                    nbytes += _utf8_bytes(tokenizer, batch[:, 1:].tolist())
            raw[s.name] = (nll, count, nbytes)
    finally:
        model.train(was_training)
    by_source = {name: _totals(*v) for name, v in raw.items()}
    by_category: dict[str, dict] = {}
    for cat in dict.fromkeys(s.category for s in sources):
        members = [raw[s.name] for s in sources if s.category == cat and s.name in raw]
        if members:
            by_category[cat] = _totals(*_pool(members))
    overall = _totals(*_pool(list(raw.values()))) if raw else None
    return {"by_category": by_category, "by_source": by_source, "overall": overall, "seq_len": seq_len,
            "skipped": skipped}


def _pool(parts: list[tuple[float, int, int | None]]) -> tuple[float, int, int | None]:
    nbytes = None if any(b is None for _, _, b in parts) else sum(b for _, _, b in parts)
    return sum(n for n, _, _ in parts), sum(c for _, c, _ in parts), nbytes
