"""Log-likelihood of token continuations, batched by length: the scoring core of multiple-choice evaluation.

Each request is (context tokens, continuation tokens). The model reads `(context + continuation)[:-1]` (cut from
the left to the context window) and the log-probabilities of the continuation tokens are summed. Requests are
sorted longest first, batched with right padding (a causal model's outputs at real positions do not depend on pads
after them) and the results put back in request order: the same scheme as lm-eval's HF backend, so the two agree
to floating-point noise on the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nemotron4.model import Nemotron4

__all__ = ["continuation_logprobs", "rolling_windows"]


@torch.no_grad()
def continuation_logprobs(
    model: Nemotron4,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 8,
    max_len: int | None = None,
    pad_id: int = 0,
    progress: bool | str = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[tuple[float, bool]]:
    """For each (context, continuation): (sum of log p(continuation | context), whether greedy decoding would
    produce the continuation). Contexts must hold at least one token (callers prepend bos for empty ones)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_len = max_len or model.cfg.max_seq_len
    device = model.tok_embeddings.weight.device
    prepared = []
    for ctx, cont in requests:
        if not cont:
            raise ValueError("empty continuation: nothing to score")
        if not ctx:
            raise ValueError("empty context: prepend bos (or another prefix token) before scoring")
        inp = [*ctx, *cont][-(max_len + 1):][:-1]  # left-truncated to the context window
        n = min(len(cont), len(inp))  # a continuation longer than the window is scored on its last tokens
        prepared.append((inp, list(cont)[len(cont) - n:]))
    order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i][0]))
    results: list[tuple[float, bool] | None] = [None] * len(prepared)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(order), desc=progress if isinstance(progress, str) else "loglikelihood", disable=not progress)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            T = len(prepared[chunk[0]][0])  # longest first: the first row sets the padded width
            inputs = torch.full((len(chunk), T), pad_id, dtype=torch.long)
            for b, i in enumerate(chunk):
                inp = prepared[i][0]
                inputs[b, : len(inp)] = torch.as_tensor(inp)
            logits = model(inputs.to(device))  # (B, T, vocab)
            for b, i in enumerate(chunk):
                inp, cont = prepared[i]
                n = len(cont)
                # The continuation's tokens are predicted at the last n input positions.
                logp = F.log_softmax(logits[b, len(inp) - n : len(inp)].float(), dim=-1)  # (n, vocab)
                target = torch.as_tensor(cont, device=logp.device)
                total = logp.gather(-1, target[:, None]).sum().item()
                greedy = bool((logp.argmax(-1) == target).all())
                results[i] = (total, greedy)
            bar.update(len(chunk))
            if on_batch is not None:
                on_batch(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return [r for r in results if r is not None]


def rolling_windows(tokens: Sequence[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """Split a document into (context, continuation) windows that score every token exactly once, each with as
    much context as fits (lm-eval's `get_rolling_token_windows` + `make_disjoint_window`, context_len 1).

    The first window predicts tokens[0:max_len] from `prefix` (bos); each later one predicts the next `max_len`
    tokens, its context being the tokens just before them, so the model input is always <= max_len tokens.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    tokens = list(tokens)
    if not tokens:
        return []
    windows = [([prefix], tokens[:max_len])]
    done = len(windows[0][1])
    while done < len(tokens):
        n = min(max_len, len(tokens) - done)
        end = done + n
        # The model reads the max_len tokens ending just before the last predicted one.
        start = max(0, end - 1 - max_len)
        windows.append((tokens[start:done], tokens[done:end]))
        done = end
    return windows
