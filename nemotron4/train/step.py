"""One optimizer step and the held-out loss: the functions a benchmark times.

`train_step` takes the micro-batches of one global batch, accumulates gradients, clips, and steps unless the loss
or the gradient norm is not finite (then the update is skipped and the gradients are dropped).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nemotron4.train.optim import set_lr

__all__ = ["StepResult", "autocast_context", "cross_entropy_loss", "eval_loss", "train_step"]


def cross_entropy_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a (B, T + 1) batch: inputs batch[:, :-1], targets batch[:, 1:]."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)  # (B, T, vocab), bf16 under autocast
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def autocast_context(device: torch.device, dtype: torch.dtype) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast over fp32 master weights when `dtype` is bf16; a no-op for fp32."""
    if dtype == torch.bfloat16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over the global batch
    grad_norm: float  # before clipping
    skipped: bool  # True when the loss or gradient norm was NaN/Inf and no update was made


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[torch.Tensor],
    lr: float,
    grad_clip: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = cross_entropy_loss,
) -> StepResult:
    """Forward/backward every micro-batch (gradient accumulation), clip, and take one AdamW step at `lr`.

    Every micro-batch has the same number of tokens, so the mean of their losses is the global-batch mean.
    """
    n = len(micro_batches)
    total = torch.zeros((), device=micro_batches[0].device)
    for batch in micro_batches:
        with autocast():
            loss = loss_fn(model, batch)
        (loss / n).backward()
        total += loss.detach()
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    loss_value, norm_value = torch.stack([total / n, norm.to(total.device)]).tolist()  # one host sync
    skipped = not (math.isfinite(loss_value) and math.isfinite(norm_value))
    if not skipped:
        set_lr(optimizer, lr)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_value, norm_value, skipped)


@torch.no_grad()
def eval_loss(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> float:
    """Mean next-token cross-entropy over held-out (B, T + 1) batches."""
    was_training = model.training
    model.eval()
    with autocast():
        losses = [cross_entropy_loss(model, b) for b in batches]
    model.train(was_training)
    return torch.stack(losses).mean().item()
