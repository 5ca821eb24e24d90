"""Settings of `nemotron4 curate`, from a TOML file's [curate] table (and command-line flags on top).

    [curate]
    exact = true                      # exact deduplication on normalised text
    shard_mb = 32                     # unit of work: JSONL files are cut into byte ranges of this size

    [curate.near]                     # MinHash + LSH near deduplication across the sources of each category
    enabled = true
    shingle = 5                       # words per shingle
    bands = 0                         # LSH bands x rows <= num_perm; 0 and 0: chosen from the threshold
    rows = 0
    num_perm = 128
    threshold = 0.8                   # candidate pairs are kept as duplicates when their estimated Jaccard >= this
    seed = 1
    partitions = 0                    # parts of the on-disk LSH index, processed one at a time; 0: one per GiB

    [curate.filters.word_count]       # any filter of nemotron4.data.curate.filters.FILTERS, any of its parameters
    min_words = 50
    categories = ["english", "multilingual"]

    [curate.classifier]               # optional fastText quality classifier
    positive = ["good.jsonl"]         # example files (JSONL / text / Parquet, as `prepare` reads)
    negative = ["bad.jsonl"]
    threshold = 0.5                   # documents whose probability of "positive" is below this are removed
    categories = ["english"]
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from nemotron4.data.curate.filters import resolve
from nemotron4.data.shards import DEFAULT_SHARD_BYTES
from nemotron4.errors import ConfigError

__all__ = ["ClassifierConfig", "CurateConfig", "NearConfig"]


@dataclass
class NearConfig:
    enabled: bool = True
    shingle: int = 5
    bands: int = 0
    """LSH bands; 0 (with rows 0): chosen from threshold and num_perm (`minhash.lsh_parameters`)."""
    rows: int = 0
    num_perm: int = 128
    threshold: float = 0.8
    seed: int = 1
    partitions: int = 0
    """Parts of the on-disk LSH index, each loaded alone (about 16 bytes x bands per document); 0: one per GiB of
    input text."""

    def __post_init__(self) -> None:
        if self.partitions < 0:
            raise ConfigError(f"curate.near.partitions must be >= 0 (0: one per GiB of text), got {self.partitions}")
        for name in ("shingle", "num_perm"):
            if getattr(self, name) < 1:
                raise ConfigError(f"curate.near.{name} must be >= 1, got {getattr(self, name)}")
        if self.bands < 0 or self.rows < 0 or (self.bands == 0) != (self.rows == 0):
            raise ConfigError(f"curate.near: set both bands and rows (>= 1), or neither (0: chosen from the "
                              f"threshold); got bands {self.bands}, rows {self.rows}")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"curate.near.threshold must be in (0, 1], got {self.threshold}")
        if self.bands == 0:
            from nemotron4.data.curate.minhash import lsh_parameters

            self.bands, self.rows = lsh_parameters(self.threshold, self.num_perm)
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(f"curate.near: bands x rows ({self.bands} x {self.rows}) must be <= num_perm "
                              f"({self.num_perm})")


@dataclass
class ClassifierConfig:
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    threshold: float = 0.5
    categories: list[str] = field(default_factory=lambda: ["english"])
    epoch: int = 10
    word_ngrams: int = 2
    dim: int = 32
    bucket: int = 200_000
    """fastText hash buckets of word n-grams (its default, 2M, allocates 2M x dim floats)."""
    max_examples: int = 100_000
    """Documents read from each side's files at most."""

    def __post_init__(self) -> None:
        if bool(self.positive) != bool(self.negative):
            raise ConfigError("curate.classifier needs both positive and negative example files")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"curate.classifier.threshold must be in [0, 1], got {self.threshold}")

    @property
    def enabled(self) -> bool:
        return bool(self.positive)


@dataclass
class CurateConfig:
    exact: bool = True
    near: NearConfig = field(default_factory=NearConfig)
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    shard_mb: float = DEFAULT_SHARD_BYTES / (1 << 20)
    examples: int = 3
    """Removed documents shown per stage and category in the report."""

    def __post_init__(self) -> None:
        resolve(self.filters)  # validates names and parameters
        if self.shard_mb <= 0:
            raise ConfigError(f"curate.shard_mb must be > 0, got {self.shard_mb}")

    @property
    def shard_bytes(self) -> int:
        return max(int(self.shard_mb * (1 << 20)), 1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CurateConfig:
        d = dict(d)
        _check_keys("curate", d, cls)
        near = d.pop("near", {})
        clf = d.pop("classifier", {})
        _check_keys("curate.near", near, NearConfig)
        _check_keys("curate.classifier", clf, ClassifierConfig)
        return cls(near=NearConfig(**near), classifier=ClassifierConfig(**clf), **d)


def _check_keys(where: str, d: dict[str, Any], cls: type) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a table")
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
