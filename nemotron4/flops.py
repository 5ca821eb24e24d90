"""Parameter counts, model FLOPs and MFU: the one implementation of each, for the trainer's metrics,
`nemotron4 flops`, `nemotron4 plan` and the benchmarks. The FLOPs convention is the one that reproduces the
report's Table 2 (docs/paper.md, "Training"):

    flops/token = 6 x (non-embedding params + output-projection params) + 12 x n_layers x seq_len x dim

The 12 L T d term is attention's QK^T and AV matmuls (forward + backward), *not* halved for the causal mask;
the input embedding is a lookup and costs nothing. MFU = flops/token x tokens/s / (devices x peak).
"""

from __future__ import annotations

from dataclasses import dataclass

from nemotron4.config import ModelConfig

__all__ = ["H100_BF16_PEAK", "Throughput", "flops_per_token", "mfu", "param_counts", "throughput"]

H100_BF16_PEAK = 989e12
"""Dense bf16 FLOP/s of one H100/H200 SXM (docs/paper.md): the one copy of this number."""


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts from the shape alone (no model built); same split as `Nemotron4.param_counts`."""
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    attention = cfg.dim * q + 2 * cfg.dim * kv + q * cfg.dim  # wq, wk, wv, wo (no biases)
    mlp = 2 * cfg.dim * cfg.ffn_dim  # w1, w2 (no gate)
    norms = 2 * 2 * cfg.dim  # two LayerNorm1P per block, weight + bias
    non_embedding = cfg.n_layers * (attention + mlp + norms) + 2 * cfg.dim  # + final norm
    output = cfg.vocab_size * cfg.dim
    total = non_embedding + 2 * output
    return {"embedding": 2 * output, "output": output, "non_embedding": non_embedding, "total": total}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training (forward + backward) model FLOPs per token."""
    p = param_counts(cfg)
    return 6.0 * (p["non_embedding"] + p["output"]) + 12.0 * cfg.n_layers * seq_len * cfg.dim


def mfu(cfg: ModelConfig, seq_len: int, tokens_per_s_per_device: float, peak_flops: float = H100_BF16_PEAK) -> float:
    """Model FLOPs utilisation, 0..1: the model FLOP/s one device achieves over its peak."""
    return flops_per_token(cfg, seq_len) * tokens_per_s_per_device / peak_flops


@dataclass(frozen=True)
class Throughput:
    """What one iteration time means for a given model and batch."""

    flops_per_token: float
    tokens_per_s: float
    tokens_per_s_per_device: float
    tflops_per_device: float
    mfu: float  # fraction of peak, 0..1
    peak_flops: float

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def throughput(
    cfg: ModelConfig, seq_len: int, batch_size: int, iter_time: float, devices: int = 1,
    peak_flops: float = H100_BF16_PEAK,
) -> Throughput:
    """Throughput and MFU of `batch_size` sequences of `seq_len` tokens per `iter_time` seconds on `devices`."""
    fpt = flops_per_token(cfg, seq_len)
    tps = batch_size * seq_len / iter_time
    per_device = tps / devices
    return Throughput(fpt, tps, per_device, fpt * per_device / 1e12, mfu(cfg, seq_len, per_device, peak_flops),
                      peak_flops)
