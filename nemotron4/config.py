"""Model configuration: the knobs Nemotron-4 needs, and the named flavours of the family.

Values come from docs/paper.md section 1 (report Table 1 and the released Hugging Face configs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemotron4.errors import ConfigError

__all__ = ["FLAVOURS", "ConfigError", "ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Nemotron-4 decoder. All sizes are counts, not bytes."""

    dim: int = 6144
    """Hidden size of the residual stream."""
    n_layers: int = 32
    """Number of transformer blocks."""
    n_heads: int = 48
    """Query heads per attention layer."""
    n_kv_heads: int = 8
    """Key/value heads (grouped-query attention); must divide n_heads."""
    head_dim: int = 128
    """Dimension of one head. Its own field: Minitron-8B has n_heads * head_dim != dim."""
    ffn_dim: int = 24576
    """Inner size of the squared-ReLU MLP (4 x dim for the 15B model)."""
    vocab_size: int = 256000
    """Tokens in the vocabulary (input embedding rows and output projection rows)."""
    max_seq_len: int = 4096
    """Longest sequence the rotary cache is built for."""
    rope_theta: float = 10000.0
    """RoPE base."""
    rotary_fraction: float = 0.5
    """Fraction of each head's dims that RoPE rotates (the first ones); the rest pass through."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    init_std: float = 0.0134
    """Standard deviation of the normal initialisation."""

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive number, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"ModelConfig.n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads}) "
                "for grouped-query attention"
            )
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ConfigError(f"ModelConfig.rotary_fraction must be in (0, 1], got {self.rotary_fraction!r}")
        if self.rotary_dim % 2:
            raise ConfigError(
                f"ModelConfig: head_dim ({self.head_dim}) x rotary_fraction ({self.rotary_fraction}) = "
                f"{self.rotary_dim} rotary dims, which must be even (RoPE rotates pairs)"
            )

    @property
    def rotary_dim(self) -> int:
        """Dims of each head that RoPE rotates (HF: int(head_dim * partial_rotary_factor))."""
        return int(self.head_dim * self.rotary_fraction)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named flavour (see `FLAVOURS`), with optional field overrides."""
        if name not in FLAVOURS:
            raise ConfigError(f"unknown model flavour {name!r}; choose one of: {', '.join(FLAVOURS)}")
        return dataclasses.replace(FLAVOURS[name], **overrides) if overrides else FLAVOURS[name]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (e.g. JSON); unknown keys are an error that names them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"unknown ModelConfig keys {unknown}; valid keys: {', '.join(sorted(fields))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read model config {path}: {e}") from e


# Named flavours. docs/paper.md section 1: Table 1 for 15B; the released family's configs for the others.
FLAVOURS: dict[str, ModelConfig] = {
    # A few-hundred-thousand-parameter model for CPU tests; GQA, partial rotary, head_dim != dim / n_heads.
    "tiny": ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=24, ffn_dim=256, vocab_size=512, max_seq_len=256,
        init_std=0.02,
    ),
    "minitron-4b": ModelConfig(dim=3072, n_layers=32, n_heads=24, n_kv_heads=8, head_dim=128, ffn_dim=9216),
    "minitron-8b": ModelConfig(dim=4096, n_layers=32, n_heads=48, n_kv_heads=8, head_dim=128, ffn_dim=16384),
    "15b": ModelConfig(dim=6144, n_layers=32, n_heads=48, n_kv_heads=8, head_dim=128, ffn_dim=24576),
    "340b": ModelConfig(
        dim=18432, n_layers=96, n_heads=96, n_kv_heads=8, head_dim=192, ffn_dim=73728, init_std=0.0063
    ),
}
