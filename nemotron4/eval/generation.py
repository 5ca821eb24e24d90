"""Batched text generation that stops at strings, for evaluations (translation, HumanEval, lm-eval's
`generate_until`).

Benchmarks end an answer at a string ("\\n", "\\ndef", "Question:"), not at a token: a stop string can be split
across tokens or sit inside one. We generate with the KV-cache `generate_tokens`, watch the decoded text of each
row as tokens arrive (its `callback`), end the batch as soon as every row holds a stop string (or eos), then cut
each text at its first stop string, as lm-eval's HF backend does (`StopSequenceCriteria` + post-hoc split).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from nemotron4.inference.generation import TextTokenizer, generate_tokens
from nemotron4.inference.kv_cache import remove_caches
from nemotron4.model import Nemotron4

__all__ = ["GenerationRequest", "cut_at_stop", "generate_until", "sample_completions"]

# How often (in generated tokens) rows are decoded to look for stop strings: decoding is cheap next to a decode
# step of a real model, but not free for the tiny models of the tests.
_CHECK_EVERY = 4


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt and how to continue it."""

    prompt: str
    stop: tuple[str, ...] = ()
    """Stop strings: the answer ends before the first one."""
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None


class _AllStopped(Exception):
    """Raised from the generation callback once every row of the batch has stopped: ends decoding early."""


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s) if s else -1
        if 0 <= i < cut:
            cut = i
    return text[:cut]


def _encode(tokenizer: TextTokenizer, text: str, add_bos: bool, max_len: int) -> list[int]:
    ids = tokenizer.encode(text)
    if add_bos and getattr(tokenizer, "bos_id", -1) >= 0:
        ids = [tokenizer.bos_id, *ids]
    return ids[-max_len:]  # keep the end of an over-long prompt (left truncation, as lm-eval does)


def _generate_batch(
    model: Nemotron4,
    tokenizer: TextTokenizer,
    prompts: list[list[int]],
    stop: tuple[str, ...],
    max_new_tokens: int,
    temperature: float,
    top_p: float | None,
    seed: int | None,
) -> list[str]:
    """Generate for one batch of prompts sharing stop strings and sampling settings; texts cut at stop."""
    eos = getattr(tokenizer, "eos_id", -1)
    stop_tokens = [eos] if eos is not None and eos >= 0 else []
    rows: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)

    def watch(step: int, tokens: torch.Tensor) -> None:
        for row, t in zip(rows, tokens.tolist(), strict=True):
            row.append(t)
        if not stop or (step + 1) % _CHECK_EVERY:
            return
        for b, row in enumerate(rows):
            if not done[b]:
                done[b] = any(t in stop_tokens for t in row) or any(s in tokenizer.decode(row) for s in stop)
        if all(done):
            raise _AllStopped

    with contextlib.suppress(_AllStopped):
        generate_tokens(model, prompts, max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                        stop_tokens=stop_tokens, callback=watch)
    texts = []
    for row in rows:
        end = next((j for j, t in enumerate(row) if t in stop_tokens), len(row))
        texts.append(cut_at_stop(tokenizer.decode(row[:end]), stop))
    return texts


@torch.no_grad()
def generate_until(
    model: Nemotron4,
    tokenizer: TextTokenizer,
    requests: Sequence[GenerationRequest],
    *,
    batch_size: int = 8,
    add_bos: bool = True,
    progress: bool | str = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Continue every request's prompt until a stop string, eos or `max_new_tokens`; results in request order.

    Requests are grouped by their generation settings, sorted longest prompt first inside a group (similar lengths
    share a batch: less padding; the first batch is the largest, so memory problems show at once) and run
    `batch_size` at a time. Prompts are left-truncated to fit the model's context with the new tokens.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault((r.stop, r.max_new_tokens, r.temperature, r.top_p, r.seed), []).append(i)
    results: list[str | None] = [None] * len(requests)
    bar = tqdm(total=len(requests), desc=progress if isinstance(progress, str) else "generate", disable=not progress)
    try:
        for (stop, max_new, temperature, top_p, seed), idx in groups.items():
            max_new = min(max_new, model.cfg.max_seq_len - 1)
            budget = model.cfg.max_seq_len - max_new
            encoded = {i: _encode(tokenizer, requests[i].prompt, add_bos, budget) for i in idx}
            idx = sorted(idx, key=lambda i: -len(encoded[i]))
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                texts = _generate_batch(model, tokenizer, [encoded[i] for i in chunk], stop, max_new,
                                        temperature, top_p, seed)
                for i, t in zip(chunk, texts, strict=True):
                    results[i] = t
                bar.update(len(chunk))
                if on_batch is not None:
                    on_batch(len(chunk))
    finally:
        bar.close()
        remove_caches(model)  # give the cache memory back; the model is in its training form again
        model.train(was_training)
    return [r if r is not None else "" for r in results]


def sample_completions(
    model: Nemotron4,
    tokenizer: TextTokenizer,
    prompts: Sequence[str],
    stops: Sequence[tuple[str, ...]],
    samples: int,
    *,
    temperature: float | None,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    progress: str | bool = False,
) -> list[list[str]]:
    """`samples` completions of each prompt (cut at its stop strings), as code benchmarks draw them: one sample
    decodes greedily (pass@1); more sample at `temperature` (default 0.8, the Codex paper's) with nucleus `top_p`,
    sample s with seed + s."""
    temp = 0.0 if samples == 1 else (0.8 if temperature is None else temperature)
    per_prompt: list[list[str]] = [[] for _ in prompts]
    for s in range(samples):
        reqs = [GenerationRequest(p, tuple(stop), max_new_tokens, temp, top_p if temp > 0 else None, seed + s)
                for p, stop in zip(prompts, stops, strict=True)]
        desc = f"{progress} sample {s + 1}/{samples}" if progress else False
        for i, text in enumerate(generate_until(model, tokenizer, reqs, batch_size=batch_size, progress=desc)):
            per_prompt[i].append(text)
    return per_prompt
