"""Fast inference: static KV cache, prefill / decode_one_token / generate, sampling, int8 weight-only."""

from nemotron4.inference.generation import decode_one_token, generate, generate_tokens, prefill
from nemotron4.inference.kv_cache import KVCache, remove_caches, setup_caches
from nemotron4.inference.quantize import quantize_int8
from nemotron4.inference.sampling import sample

__all__ = [
    "KVCache", "decode_one_token", "generate", "generate_tokens", "prefill", "quantize_int8", "remove_caches",
    "sample", "setup_caches",
]
