"""Autoregressive generation with a static KV cache: `prefill`, `decode_one_token`, `generate_tokens`, `generate`.

Prompts of different lengths are left-padded into one batch; padded cache slots are masked out, so each row
generates what it would alone (RoPE scores depend only on distances, so the shifted positions do not matter).
On GPU, `compile=True` compiles the decode step with CUDA graphs (`mode="reduce-overhead"`), as gpt-fast does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from nemotron4.errors import ConfigError
from nemotron4.inference.kv_cache import cache_len, setup_caches
from nemotron4.inference.sampling import check_sampling, sample
from nemotron4.model import Nemotron4


class TextTokenizer(Protocol):
    bos_id: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


def prefill(model: Nemotron4, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Run the prompt (B, L) through the model from position 0, filling the caches; logits (B, vocab) of the
    last position. valid (B, S): cache slots that hold real tokens (None: no padding)."""
    B, L = tokens.shape
    input_pos = torch.arange(L, device=tokens.device)
    mask = None  # plain causal attention over the prompt (fast SDPA kernels)
    if valid is not None:
        S = valid.shape[1]
        slots = torch.arange(S, device=tokens.device)
        causal = slots[None, :] <= input_pos[:, None]  # (L, S)
        mask = causal[None] & valid[:, None, :]  # (B, L, S)
        mask |= (slots[None, :] == input_pos[:, None])[None]  # a pad query sees itself: no all-masked rows
        mask = mask[:, None]  # (B, 1, L, S)
    return model(tokens, input_pos=input_pos, mask=mask)[:, -1]


def decode_one_token(
    model: Nemotron4, token: torch.Tensor, input_pos: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """One step: token (B, 1) at slot input_pos (1,) -> logits (B, vocab). valid (B, S) marks real slots."""
    slots = torch.arange(valid.shape[1], device=token.device)
    mask = (valid & (slots <= input_pos))[:, None, None, :]  # (B, 1, 1, S)
    return model(token, input_pos=input_pos, mask=mask)[:, -1]


# "reduce-overhead" (CUDA graphs) plus coordinate-descent tuning of the generated kernels (gpt-fast's setting; it
# matters for batch-1 decode, where every kernel is a memory-bound GEMV), scoped to this compile rather than set
# globally, so `nemotron4 generate` gets what bench/decode.py measures.
DECODE_COMPILE_OPTIONS = {"triton.cudagraphs": True, "coordinate_descent_tuning": True}


@functools.cache
def compiled_decode() -> Callable:
    """decode_one_token compiled once per process, with CUDA graphs (static shapes, in-place cache updates).
    After changing the model's modules (e.g. quantize_int8): torch._dynamo.reset(); compiled_decode.cache_clear()."""
    return torch.compile(decode_one_token, fullgraph=True, options=DECODE_COMPILE_OPTIONS)


@torch.no_grad()
def generate_tokens(
    model: Nemotron4,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    compile: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> list[list[int]]:
    """Generate up to `max_new_tokens` after each prompt (token ids). Returns the new tokens of each row, without
    the stop token that ended it. `callback(step, tokens)` sees each step's tokens (B,) as they come."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    check_sampling(temperature, top_k, top_p)
    device = model.tok_embeddings.weight.device
    B, L = len(prompts), max(len(p) for p in prompts)
    pad = torch.tensor([L - len(p) for p in prompts], device=device)
    tokens = torch.full((B, L), pad_id, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        tokens[b, L - len(p):] = torch.as_tensor(p, dtype=torch.long, device=device)

    setup_caches(model, B, L + max_new_tokens)
    S = cache_len(model)
    valid = torch.arange(S, device=device)[None, :] >= pad[:, None]  # (B, S)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    step = compiled_decode() if compile else decode_one_token

    logits = prefill(model, tokens, valid if bool(pad.any()) else None)
    # Slots of the new tokens, made once: building each step's position from a Python int would be a host-to-device
    # copy that waits for the GPU every step, leaving it idle while Python prepares the next one.
    positions = torch.arange(L, L + max_new_tokens, device=device)
    stop = torch.tensor(list(stop_tokens), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=device)
    n = max_new_tokens
    for i in range(max_new_tokens):
        nxt = sample(logits, temperature, top_k, top_p, generator)
        out[:, i] = nxt
        if callback is not None:
            callback(i, nxt)
        if len(stop_tokens):
            done |= torch.isin(nxt, stop)
            if bool(done.all()):  # a sync per step, only when stop tokens are asked for
                n = i + 1
                break
        if i + 1 == max_new_tokens:
            break
        logits = step(model, nxt.view(B, 1), positions[i : i + 1], valid).clone()
    rows = out[:, :n].tolist()
    stops = set(stop_tokens)
    result = []
    for row in rows:
        cut = next((j for j, t in enumerate(row) if t in stops), len(row))
        result.append(row[:cut])
    return result


@torch.no_grad()
def generate(
    model: Nemotron4,
    tokenizer: TextTokenizer,
    prompts: str | Sequence[str],
    max_new_tokens: int = 128,
    *,
    add_bos: bool = True,
    stop_tokens: Sequence[int] | None = None,
    **kwargs,
) -> list[str]:
    """Text in, text out. stop_tokens default to the tokenizer's eos. Other keywords: see `generate_tokens`."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    bos = [tokenizer.bos_id] if add_bos and getattr(tokenizer, "bos_id", -1) >= 0 else []
    ids = [bos + tokenizer.encode(p) for p in prompts]
    if stop_tokens is None:
        eos = getattr(tokenizer, "eos_id", -1)
        stop_tokens = [eos] if eos is not None and eos >= 0 else []
    outs = generate_tokens(model, ids, max_new_tokens, stop_tokens=stop_tokens, **kwargs)
    return [tokenizer.decode(o) for o in outs]
