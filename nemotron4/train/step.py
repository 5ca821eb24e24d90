"""One optimizer step and the held-out loss: the functions a benchmark times.

`train_step` takes the micro-batches of one global batch, accumulates gradients, clips, and steps unless the loss
or the gradient norm is not finite (then the update is skipped and the gradients are dropped). Under tensor / data
parallelism the same function runs on every rank with `StepHooks` from `nemotron4.distributed.step`; without hooks
it is the single-process step, unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from nemotron4.train.optim import set_lr

__all__ = ["StepHooks", "StepResult", "autocast_context", "cross_entropy_loss", "eval_loss", "train_step"]


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


class StepHooks(Protocol):
    """What a step needs from parallelism (implemented by `nemotron4.distributed.step.ParallelStepHooks`)."""

    def micro_batch(self, last: bool) -> contextlib.AbstractContextManager:
        """Context around one micro-batch's forward + backward; `last` is the step's final micro-batch."""
        ...

    def eval_context(self) -> contextlib.AbstractContextManager:
        """Context around a held-out forward."""
        ...

    def clip_grad_norm(self, params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Global gradient norm before clipping; clips in place when max_norm > 0."""
        ...

    def mean_over_dp(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a per-replica scalar over data-parallel replicas."""
        ...


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
    hooks: StepHooks | None = None,
    step_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> StepResult:
    """Forward/backward every micro-batch (gradient accumulation), clip, and take one AdamW step at `lr`.

    Every micro-batch has the same number of tokens, so the mean of their losses is the global-batch mean (with
    data parallelism: this replica's micro-batches, then the mean over replicas, which hold equal shares).
    `step_context` is entered around all the micro-batches (e.g. `nemotron4.train.fast.CastWeightsOnce`).
    """
    n = len(micro_batches)
    total = torch.zeros((), device=micro_batches[0].device)
    with step_context():
        for i, batch in enumerate(micro_batches):
            with hooks.micro_batch(last=i == n - 1) if hooks is not None else contextlib.nullcontext():
                with autocast():
                    loss = loss_fn(model, batch)
                (loss / n).backward()
            total += loss.detach()
    params = [p for p in model.parameters() if p.grad is not None]
    if hooks is not None:
        total = hooks.mean_over_dp(total)
        norm = hooks.clip_grad_norm(params, grad_clip)
    elif grad_clip > 0:
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
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = cross_entropy_loss,
    hooks: StepHooks | None = None,
) -> float:
    """Mean next-token cross-entropy over held-out (B, T + 1) batches (every rank evaluates all of them)."""
    was_training = model.training
    model.eval()
    with autocast(), hooks.eval_context() if hooks is not None else contextlib.nullcontext():
        losses = [loss_fn(model, b) for b in batches]
    model.train(was_training)
    return torch.stack(losses).mean().item()
