"""Autoregressive generation with a static KV cache: `prefill`, `decode_one_token`, `generate_tokens`, `generate`.

Prompts of different lengths are left-padded into one batch; padded cache slots are masked out, so each row
generates what it would alone (RoPE scores depend only on distances, so the shifted positions do not matter).
`compile=True` compiles one Block (shared by all layers) and, on GPU, captures the whole decode step in one CUDA
graph per batch size (`DecodeGraph`), as gpt-fast's reduce-overhead mode does, for a fraction of the compile time.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
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


# Coordinate-descent tuning of the generated kernels (gpt-fast's setting; the norms, RoPE and residual adds of a
# batch-1 decode step are tiny memory-bound kernels), scoped to this compile rather than set globally, so
# `nemotron4 generate` gets what bench/decode.py measures.
DECODE_COMPILE_OPTIONS = {"coordinate_descent_tuning": True}


def _block_forward(layer: torch.nn.Module, *args: torch.Tensor) -> torch.Tensor:
    return layer.forward(*args)


@functools.cache
def compiled_block() -> Callable:
    """A module's forward, compiled once per module type and input shapes and shared by every layer (the module is
    an argument, its parameters graph inputs): compile time is one block's, not the whole model's. Static shapes: a
    new batch size or cache length recompiles, so the recompile limit is raised to hold a few of each (bf16 and
    int8 models, several batch sizes)."""
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
    return torch.compile(_block_forward, fullgraph=True, dynamic=False, options=DECODE_COMPILE_OPTIONS)


@contextlib.contextmanager
def _compiled_layers(model: Nemotron4):
    """Within the block, every layer's call, and the final norm's and output projection's, goes through
    `compiled_block` (nn.Module's own compiled-call slot)."""
    fn = compiled_block()
    modules = [*model.layers, model.norm, model.output]
    for module in modules:
        module._compiled_call_impl = functools.partial(fn, module)
    try:
        yield
    finally:
        for module in modules:
            module._compiled_call_impl = None


class DecodeGraph:
    """`decode_one_token` on static input buffers, its layers compiled, the whole step captured in one CUDA graph:
    a replay launches the step's few hundred kernels with no Python in between. Built after the caches are set up
    and before the prefill (the warm-up steps write slot 0, which the prefill then overwrites)."""

    def __init__(self, model: Nemotron4, batch: int, cache_len: int) -> None:
        device = model.tok_embeddings.weight.device
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.valid = torch.ones(batch, cache_len, dtype=torch.bool, device=device)
        from nemotron4.inference import triton_linear

        with _compiled_layers(model):
            try:
                self._capture(model)
            except RuntimeError:
                if not triton_linear.PDL:
                    raise
                # a driver that cannot capture programmatic launches: capture the plain launches instead
                triton_linear.PDL = False
                self._capture(model)

    def _capture(self, model: Nemotron4) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # compile, then one run outside the graph (lazy inits, autotuners)
                decode_one_token(model, self.token, self.pos, self.valid)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = decode_one_token(model, self.token, self.pos, self.valid)

    def __call__(self, model: Nemotron4, token: torch.Tensor, input_pos: torch.Tensor, valid: torch.Tensor):
        self.token.copy_(token)
        self.pos.copy_(input_pos)
        if valid is not self.valid:
            self.valid.copy_(valid)
        self.graph.replay()
        return self.logits


_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _graph_key(model: Nemotron4, batch: int) -> tuple:
    """What a captured graph depends on: the batch and the addresses of every parameter, buffer and cache."""
    return (batch, *(t.data_ptr() for t in (*model.parameters(), *model.buffers())))


def decode_graph(model: Nemotron4, batch: int) -> DecodeGraph:
    """The model's captured decode step for this batch and its current caches/weights; one kept per model (a new
    batch size, cache or set of weights recaptures and frees the previous graph's memory)."""
    key = _graph_key(model, batch)
    held = _GRAPHS.get(model)
    if held is None or held[0] != key:
        _GRAPHS.pop(model, None)
        _GRAPHS[model] = (key, DecodeGraph(model, batch, cache_len(model)))
    return _GRAPHS[model][1]


def release_decode_graphs(model: Nemotron4) -> None:
    """Drop the model's captured decode step (and the memory its graph holds)."""
    _GRAPHS.pop(model, None)


def compiled_decode_step(model: Nemotron4, batch: int) -> Callable:
    """The fast decode step: on CUDA the captured graph, elsewhere the compiled layers without graphs."""
    if model.tok_embeddings.weight.is_cuda:
        return decode_graph(model, batch)

    def step(model, token, input_pos, valid):
        with _compiled_layers(model):
            return decode_one_token(model, token, input_pos, valid)

    return step


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
    decode_form: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> list[list[int]]:
    """Generate up to `max_new_tokens` after each prompt (token ids). Returns the new tokens of each row, without
    the stop token that ended it. `callback(step, tokens)` sees each step's tokens (B,) as they come.
    decode_form: first put the model in its fast decode form, in place, after the inputs are checked
    (`decode_form.prepare_decode`: Triton linears, fused QKV, fused norms and decode attention; int8 stays int8;
    a no-op when already there). It is for inference only: q/k/v become one frozen `wqkv`, so reload the
    checkpoint to train or export the model. `nemotron4 generate --compile` on a GPU does this."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    check_sampling(temperature, top_k, top_p)
    if decode_form:
        from nemotron4.inference.decode_form import ensure_decode_form

        ensure_decode_form(model)
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
    step = compiled_decode_step(model, B) if compile else decode_one_token

    logits = prefill(model, tokens, valid if bool(pad.any()) else None)
    # Slots of the new tokens, made once: building each step's position from a Python int would be a host-to-device
    # copy that waits for the GPU every step, leaving it idle while Python prepares the next one.
    positions = torch.arange(L, L + max_new_tokens, device=device)
    stop = torch.tensor(list(stop_tokens), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    if isinstance(step, DecodeGraph):
        step.valid.copy_(valid)
        valid = step.valid
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
        logits = step(model, nxt.view(B, 1), positions[i : i + 1], valid)
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
    """Text in, text out. stop_tokens default to the tokenizer's eos. Other keywords: see `generate_tokens`
    (decode_form=True with compile=True on a GPU is the fast path, for one prompt or a batch)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    bos = [tokenizer.bos_id] if add_bos and getattr(tokenizer, "bos_id", -1) >= 0 else []
    ids = [bos + tokenizer.encode(p) for p in prompts]
    if stop_tokens is None:
        eos = getattr(tokenizer, "eos_id", -1)
        stop_tokens = [eos] if eos is not None and eos >= 0 else []
    outs = generate_tokens(model, ids, max_new_tokens, stop_tokens=stop_tokens, **kwargs)
    return [tokenizer.decode(o) for o in outs]
