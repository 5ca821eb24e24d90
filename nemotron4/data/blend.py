"""Blending sources into one deterministic sample order.

A blend is a value built from config: categories with shares (docs/paper.md section 3: English 70 / multilingual 15 /
code 15), each holding sources weighted by explicit weights, by size (tokens), or by temperature (size**alpha).
Each training phase can build its own. The flat per-source share is `category share x within-category share`.

Sample order follows Megatron-LM's blending rule (`build_blending_indices` in megatron/core/datasets/helpers.cpp):
each step goes to the source furthest behind its target. We measure "behind" in time (the step at which a
source's next sample falls due, `(k + 0.5) / share`) rather than in samples; that turns the greedy loop into a
merge of arithmetic sequences, one numpy sort instead of a C++ helper, with the same guarantee: at every prefix
each source's count is within about one sample of `share x prefix`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nemotron4.data.indexed import IndexedDataset, check_token_files
from nemotron4.data.manifest import CATEGORIES
from nemotron4.data.npcache import load_arrays, save_arrays
from nemotron4.data.samples import SequenceSamples, cache_key, content_fingerprint
from nemotron4.errors import ConfigError, UserError

__all__ = ["BlendConfig", "BlendedDataset", "Source", "blending_indices", "build_blend", "validate_blend"]


@dataclass
class Source:
    """One token file in a blend."""

    name: str
    path: str
    """Token-file prefix (`<path>.bin` / `<path>.idx`)."""
    category: str
    weight: float | None = None
    """Relative weight inside its category; None: by size (or size**alpha). A category uses one kind or the other."""
    valid_path: str | None = None
    """Prefix of the held-out tokens, for validation."""


@dataclass
class BlendConfig:
    """Categories with shares, and the sources in them. Validated on construction."""

    categories: dict[str, float] = field(default_factory=lambda: dict(CATEGORIES))
    sources: list[Source] = field(default_factory=list)
    within_category: str = "size"
    """'size': sources weighted by token count; 'temperature': by token count ** alpha."""
    alpha: float = 1.0
    """Temperature exponent (< 1 flattens: small sources, e.g. low-resource languages, are upsampled)."""

    def __post_init__(self) -> None:
        validate_blend(self.categories, self.sources, self.within_category, self.alpha)

    @classmethod
    def from_dict(cls, d: dict, base_dir: str | os.PathLike | None = None) -> BlendConfig:
        """From plain data (TOML/JSON); relative source paths are resolved against `base_dir`."""
        d = dict(d)
        try:
            sources = [Source(**s) for s in d.pop("sources", [])]
        except TypeError as e:
            raise ConfigError(f"malformed blend source: {e}") from e
        if base_dir is not None:
            for s in sources:
                s.path = str(Path(base_dir) / s.path)
                if s.valid_path is not None:
                    s.valid_path = str(Path(base_dir) / s.valid_path)
        unknown = set(d) - {"categories", "within_category", "alpha"}
        if unknown:
            raise ConfigError(f"unknown blend keys {sorted(unknown)}")
        return cls(sources=sources, **d)

    @classmethod
    def from_token_manifest(
        cls, path: str | os.PathLike, categories: dict[str, float] | None = None, **kw: object
    ) -> BlendConfig:
        """From the `sources.json` that `nemotron4 prepare --manifest` writes, with `categories` shares (default:
        the paper's 70/15/15); a category with a share but no sources is an error."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read token manifest {path}: {e}") from e
        cats = dict(categories or CATEGORIES)
        return cls.from_dict(
            {"categories": cats, "sources": [
                {k: s.get(k) for k in ("name", "path", "category", "weight", "valid_path")} for s in doc["sources"]
            ], **kw},
            base_dir=path.parent,
        )

    def source_shares(self, sizes: list[int]) -> np.ndarray:
        """Flat target share of each source (sums to 1), given each source's size in tokens."""
        total_share = sum(self.categories.values())
        out = np.zeros(len(self.sources))
        for cat, share in self.categories.items():
            idx = [i for i, s in enumerate(self.sources) if s.category == cat]
            if not idx or share == 0:
                continue
            if self.sources[idx[0]].weight is not None:
                w = np.array([self.sources[i].weight for i in idx], float)
            else:
                w = np.array([sizes[i] for i in idx], float)
                if self.within_category == "temperature":
                    w = w**self.alpha
            if w.sum() <= 0:
                raise ConfigError(f"category {cat!r} has share {share} but its sources hold no tokens")
            out[idx] = share / total_share * w / w.sum()
        return out


def validate_blend(categories: dict[str, float], sources: Sequence[Any], within_category: str = "size",
                   alpha: float = 1.0, where: str = "blend") -> None:
    """Every rule a blend must follow, in one place: the data pipeline's `BlendConfig` and the run config
    (`where` = "phases.N.blend", so that messages name the key as an override would) both call it. `sources` are
    anything with name / path / category / weight attributes (`Source`, the config's `SourceSection`)."""
    if within_category not in ("size", "temperature"):
        raise ConfigError(f"{where}.within_category must be size or temperature, got {within_category!r}")
    if not alpha > 0:
        raise ConfigError(f"{where}.alpha must be > 0, got {alpha}")
    for cat, share in categories.items():
        if not 0 <= share < float("inf"):
            raise ConfigError(f"{where}.categories.{cat} = {share}: shares must be >= 0 and finite")
    if sum(categories.values()) <= 0:
        raise ConfigError(f"{where}.categories are all zero; give at least one category a positive share")
    if not sources:
        raise ConfigError(f"{where} has no sources; add some (in a run config: [[phases.blend.sources]] tables)")
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}.sources: duplicate source names {dupes}; give every source its own name")
    for j, s in enumerate(sources):
        if not s.name or not s.path:
            raise ConfigError(f"{where}.sources.{j}: every source needs a name and a path, got {s}")
        if s.category not in categories:
            raise ConfigError(f"{where}.sources.{j} (source {s.name!r}) has unknown category {s.category!r}, not one "
                              f"of the blend's categories: {', '.join(categories) or '(none)'}")
        if s.weight is not None and not 0 <= s.weight < float("inf"):
            raise ConfigError(f"{where}.sources.{j}.weight = {s.weight} (source {s.name!r}): weights must be finite "
                              "and >= 0, or unset (by size)")
    for cat, share in categories.items():
        members = [s for s in sources if s.category == cat]
        if share > 0 and not members:
            raise ConfigError(f"{where}.categories.{cat} has share {share} but no sources; add sources or set it to 0")
        explicit = [s.weight is not None for s in members]
        if any(explicit) and not all(explicit):
            raise ConfigError(f"{where}: category {cat!r} mixes explicit source weights and size weights (unset); "
                              "give every source of the category a weight, or none")
        if share > 0 and members and all(explicit) and sum(s.weight for s in members) <= 0:
            raise ConfigError(f"{where}: every source weight in category {cat!r} is zero, but the category has share "
                              f"{share}; give a source a positive weight or set the share to 0")


def blending_indices(
    shares: np.ndarray, num_samples: int, window: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray]:
    """(dataset_index int32, dataset_sample_index int64) of length `num_samples`: which source each sample comes
    from and the how-many-th sample of that source it is. Deterministic; no seed needed.

    Source d's k-th sample falls due at step (k + 0.5) / share_d; the order is by due step, ties to the lower
    source index. Built `window` due steps at a time (the due steps of the first n samples are about 0..n), so
    peak memory is the output (12 bytes a sample) plus one window (about 17 bytes a sample in all at 60M samples),
    also for the 2 billion samples of 8T tokens."""
    live = [(d, float(w)) for d, w in enumerate(shares) if w > 0]
    ids_out = np.empty(num_samples, np.int32)
    ks_out = np.empty(num_samples, np.int64)
    filled, t0 = 0, 0.0
    while filled < num_samples:
        t1 = t0 + window
        ids, ks, due = [], [], []
        for d, w in live:
            # candidates around [t0, t1), then the exact test on the same float expression as everywhere
            k = np.arange(max(0, int(np.floor(t0 * w - 0.5)) - 1), int(np.ceil(t1 * w - 0.5)) + 2, dtype=np.int64)
            dd = (k + 0.5) / w
            keep = (dd >= t0) & (dd < t1)
            ids.append(np.full(int(keep.sum()), d, np.int32))
            ks.append(k[keep])
            due.append(dd[keep])
        ids_a, ks_a, due_a = np.concatenate(ids), np.concatenate(ks), np.concatenate(due)
        order = np.lexsort((ids_a, due_a))[: num_samples - filled]
        ids_out[filled : filled + len(order)] = ids_a[order]
        ks_out[filled : filled + len(order)] = ks_a[order]
        filled += len(order)
        t0 = t1
    return ids_out, ks_out


class BlendedDataset:
    """Samples of `seq_len + 1` int64 tokens from several sources in the blend's order."""

    def __init__(
        self,
        sources: list[Source],
        datasets: list[SequenceSamples | None],
        shares: np.ndarray,
        dataset_index: np.ndarray,
        dataset_sample_index: np.ndarray,
        fingerprint: str,
    ) -> None:
        self.sources, self.datasets, self.shares = sources, datasets, shares
        self.dataset_index, self.dataset_sample_index = dataset_index, dataset_sample_index
        self.fingerprint = fingerprint
        """Hash of everything the order depends on (stored in loader state)."""

    def __len__(self) -> int:
        return len(self.dataset_index)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.datasets[self.dataset_index[i]][self.dataset_sample_index[i]]

    def source_index(self, i: int) -> int:
        """Index into `.sources` of the source sample `i` comes from."""
        return int(self.dataset_index[i])

    def check_tokens(self, vocab_size: int) -> None:
        """Raise `TokenRangeError` naming the file if any source holds an id >= vocab_size."""
        for ds in self.datasets:
            if ds is not None:
                ds.dataset.check_tokens(vocab_size)


def build_blend(
    cfg: BlendConfig,
    seq_len: int,
    num_samples: int,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    split: str = "train",
    vocab_size: int | None = None,
) -> BlendedDataset:
    """Build (or load from `cache_dir`) the blended sample order. `split='valid'` uses the sources' `valid_path`
    (sources without one are left out). With `vocab_size`, every token file is checked once for ids out of range."""
    if seq_len <= 0 or num_samples <= 0:
        raise ConfigError(f"seq_len and num_samples must be positive, got {seq_len}, {num_samples}")
    if split not in ("train", "valid"):
        raise ConfigError(f"split must be 'train' or 'valid', got {split!r}")
    sources = cfg.sources
    if split == "valid":
        sources = [Source(s.name, s.valid_path, s.category, s.weight) for s in sources if s.valid_path]
        cats = {c: v for c, v in cfg.categories.items() if any(s.category == c for s in sources)}
        if not sources:
            raise ConfigError("no source in the blend has a valid_path; cannot build a validation split")
        cfg = BlendConfig(cats, sources, cfg.within_category, cfg.alpha)
    check_token_files((f"{split} source {s.name!r}", s.path) for s in sources)
    indexed = [IndexedDataset(s.path) for s in sources]
    if vocab_size is not None:
        for ds in indexed:
            ds.check_tokens(vocab_size)
    shares = cfg.source_shares([ds.num_tokens for ds in indexed])
    fingerprint = cache_key(
        shares=shares.round(12).tolist(), n=num_samples, seq_len=seq_len, seed=seed,
        files=[content_fingerprint(s.path) for s in sources], names=[s.name for s in sources],
    )
    dataset_index, dataset_sample_index = _cached_blend(shares, num_samples, cache_dir, fingerprint)
    counts = np.bincount(dataset_index, minlength=len(sources))
    datasets = [
        SequenceSamples(ds, seq_len, int(c), seed, cache_dir, name=s.name) if c else None
        for s, ds, c in zip(sources, indexed, counts, strict=True)
    ]
    return BlendedDataset(sources, datasets, shares, dataset_index, dataset_sample_index, fingerprint)


def _cached_blend(
    shares: np.ndarray, num_samples: int, cache_dir: str | os.PathLike | None, key: str
) -> tuple[np.ndarray, np.ndarray]:
    parts = ("dataset", "sample")
    if cache_dir is not None:
        cached = load_arrays(cache_dir, f"blend-{key}", parts)
        if cached is not None:
            return cached  # type: ignore[return-value]
    arrays = blending_indices(shares, num_samples)
    if cache_dir is not None:
        save_arrays(cache_dir, f"blend-{key}", parts, arrays)
    return arrays
