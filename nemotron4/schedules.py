"""Token counts, the batch-size ramp and learning-rate schedules.

Both schedules are functions of the tokens consumed in the current phase, not of the step: with a batch-size ramp
the step count per token changes, and the paper states the ramp in tokens (docs/paper.md, Table 2).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from nemotron4.errors import ConfigError

__all__ = ["BatchRamp", "LRSchedule", "format_tokens", "parse_tokens"]

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_TOKENS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


def parse_tokens(value: Any, where: str = "tokens") -> int:
    """A token count: an int, or a string such as "200B", "7.6T", "1.5M", "4096" (decimal suffixes)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a token count like 200B or 4096, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and (m := _TOKENS_RE.match(value)):
        n = round(float(m.group(1)) * _SUFFIX[m.group(2).upper()])
    else:
        raise ConfigError(f"{where}: expected a token count like 200B, 8T or 4096, got {value!r}")
    if n < 0:
        raise ConfigError(f"{where}: token count must be >= 0, got {value!r}")
    return n


def format_tokens(n: int) -> str:
    """Shortest exact form: 200000000000 -> "200B", 4096 -> "4096"."""
    for suffix in ("T", "B", "M", "K"):
        if n and n % _SUFFIX[suffix] == 0:
            return f"{n // _SUFFIX[suffix]}{suffix}"
    return str(n)


class BatchRamp:
    """Global batch size (sequences) as a step function of tokens consumed: the paper's Table 2 is
    `0:384 200B:768 400B:1152` (docs/paper.md). A step uses the size of the last threshold at or below the tokens
    consumed *before* it, so a step that starts below a threshold still uses the old size.

    A value type, parsed once when the config is read (`PhaseSection.batch_size` holds one); written back as its
    canonical string (`str(ramp)`). Not a dataclass, so that `dataclasses.asdict` of a config keeps it whole."""

    __slots__ = ("stages",)
    stages: tuple[tuple[int, int], ...]  # ((threshold_tokens, batch_size), ...), thresholds increasing, first 0

    def __init__(self, stages: tuple[tuple[int, int], ...]) -> None:
        object.__setattr__(self, "stages", tuple((int(t), int(s)) for t, s in stages))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("BatchRamp is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchRamp) and other.stages == self.stages

    def __hash__(self) -> int:
        return hash(self.stages)

    def __repr__(self) -> str:
        return f"BatchRamp({str(self)!r})"

    def __deepcopy__(self, memo: dict) -> BatchRamp:
        return self

    @classmethod
    def parse(cls, value: Any, where: str = "batch_size") -> BatchRamp:
        """From an int (constant), a string "0:384 200B:768", or a list ["0:384", "200B:768"] / [[0, 384], ...]."""
        if isinstance(value, int) and not isinstance(value, bool):
            items: list[Any] = [[0, value]]
        elif isinstance(value, str):
            items = value.replace(",", " ").split()
        elif isinstance(value, list):
            items = value
        else:
            raise ConfigError(f"{where}: expected a batch size or a ramp like \"0:384 200B:768\", got {value!r}")
        stages = []
        for item in items:
            if isinstance(item, str) and ":" in item:
                tok, size = item.split(":", 1)
            elif isinstance(item, list | tuple) and len(item) == 2:
                tok, size = item
            elif isinstance(item, str) and len(items) == 1:
                tok, size = 0, item
            else:
                raise ConfigError(f"{where}: ramp stage {item!r} is not TOKENS:SIZE (e.g. 200B:768)")
            try:
                size_int = int(size)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: batch size {size!r} in {item!r} is not an integer") from None
            if size_int <= 0:
                raise ConfigError(f"{where}: batch size must be positive, got {size_int} in {item!r}")
            stages.append((parse_tokens(tok, where), size_int))
        if not stages or stages[0][0] != 0:
            raise ConfigError(f"{where}: the ramp must start at 0 tokens (e.g. \"0:384 200B:768\"), got {value!r}")
        if any(b[0] <= a[0] for a, b in zip(stages, stages[1:], strict=False)):
            raise ConfigError(f"{where}: ramp thresholds must increase, got {value!r}")
        return cls(tuple(stages))

    def __str__(self) -> str:
        return " ".join(f"{format_tokens(t)}:{s}" for t, s in self.stages)

    def size_at(self, tokens: int) -> int:
        """Global batch size for a step that starts after `tokens` tokens."""
        size = self.stages[0][1]
        for threshold, s in self.stages:
            if tokens >= threshold:
                size = s
        return size

    @property
    def sizes(self) -> list[int]:
        """Every global batch size the ramp uses (for divisibility checks)."""
        return [s for _, s in self.stages]


DECAY_STYLES = ("cosine", "linear", "wsd", "constant")


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup from 0 to `peak` over `warmup_tokens`, then decay to `min_lr` at `total_tokens`.

    decay: "cosine" (half cosine), "linear", "wsd" (warmup-stable-decay: hold `peak`, then decay linearly over the
    last `decay_fraction` of the post-warmup tokens) or "constant". The LR of a step is the schedule at the tokens
    consumed when the step completes, so the first warmup step is not wasted at LR 0 and the last step uses min_lr.
    """

    peak: float
    min_lr: float
    total_tokens: int
    warmup_tokens: int = 0
    decay: str = "cosine"
    decay_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.decay not in DECAY_STYLES:
            raise ConfigError(f"unknown LR decay {self.decay!r}; choose one of: {', '.join(DECAY_STYLES)}")
        if self.warmup_tokens > self.total_tokens:
            raise ConfigError(f"warmup_tokens ({self.warmup_tokens}) exceed the phase's tokens ({self.total_tokens})")

    def __call__(self, tokens: int) -> float:
        if self.warmup_tokens and tokens < self.warmup_tokens:
            return self.peak * tokens / self.warmup_tokens
        span = self.total_tokens - self.warmup_tokens
        p = min(1.0, (tokens - self.warmup_tokens) / span) if span > 0 else 1.0  # decay progress in [0, 1]
        if self.decay == "constant":
            return self.peak
        if self.decay == "wsd":
            start = 1.0 - self.decay_fraction
            p = 0.0 if p <= start else (p - start) / self.decay_fraction
            return self.peak + (self.min_lr - self.peak) * p
        if self.decay == "linear":
            return self.peak + (self.min_lr - self.peak) * p
        return self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
