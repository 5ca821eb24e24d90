"""A static key/value cache holding only the KV heads (grouped-query attention: 8 for the 15B model, not 48)."""

from __future__ import annotations

import torch
from torch import nn

from nemotron4.errors import ConfigError
from nemotron4.model import Nemotron4


class KVCache(nn.Module):
    """Keys and values of one attention layer, (B, n_kv_heads, max_len, head_dim), written in place at slots
    `input_pos`. Static shapes, so a compiled decode step can be captured in a CUDA graph."""

    def __init__(
        self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (B, n_kv_heads, T, head_dim) for slots input_pos (T,); returns the whole cache."""
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v


def setup_caches(model: Nemotron4, batch: int, max_len: int, dtype: torch.dtype | None = None) -> None:
    """Attach a fresh cache to every attention layer (reusing the existing ones if they already fit)."""
    if max_len > model.cfg.max_seq_len:
        raise ConfigError(f"prompt + new tokens = {max_len} exceeds the model's max_seq_len {model.cfg.max_seq_len}")
    weight = model.tok_embeddings.weight  # stays floating point under weight-only quantization
    dtype = dtype or weight.dtype
    for layer in model.layers:
        attn = layer.attention
        cache = attn.kv_cache
        if cache is not None and cache.k.shape[0] == batch and cache.k.shape[2] >= max_len and cache.k.dtype == dtype:
            continue
        # local heads, also under tensor parallelism (the weight's rows); a module with no `weight` (another
        # library's quantized linear) gives its out_features; a fused QKV projection keeps the count
        n_kv_heads = getattr(attn, "n_local_kv_heads", None)
        if n_kv_heads is None:
            wk = getattr(attn.wk, "weight", None)
            n_kv_heads = (wk.shape[0] if wk is not None else attn.wk.out_features) // attn.head_dim
        attn.kv_cache = KVCache(batch, n_kv_heads, max_len, attn.head_dim, dtype, weight.device)


def remove_caches(model: Nemotron4) -> None:
    """Detach the caches: the model is back to the form it had before `setup_caches` (the decode form, if
    `decode_form.prepare_decode` put it there, stays)."""
    for layer in model.layers:
        layer.attention.kv_cache = None


def cache_len(model: Nemotron4) -> int:
    return model.layers[0].attention.kv_cache.k.shape[2]
