"""What a training step needs from the process group (`nemotron4.train.step.StepHooks`): the vocabulary-parallel
loss, FSDP2's gradient sync on the last micro-batch only, a gradient norm over the whole (DTensor) model, and the
loss averaged over data-parallel replicas."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import loss_parallel

__all__ = ["ParallelStepHooks", "local_loss"]


def local_loss(loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> Callable[[nn.Module, torch.Tensor],
                                                                                         torch.Tensor]:
    """Wrap a loss function whose result may be a replicated DTensor (under `loss_parallel`) so that it returns a
    plain scalar tensor; `to_local` is differentiable, so backward still runs through the DTensor graph."""

    def wrapped(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(model, batch)
        return loss.to_local() if isinstance(loss, DTensor) else loss

    return wrapped


class ParallelStepHooks:
    """`StepHooks` for a model parallelized by `nemotron4.distributed.parallelize` over `mesh` ("dp", "tp")."""

    def __init__(self, model: nn.Module, mesh: DeviceMesh, tp_applied: bool | None = None,
                 keep_unsharded: bool = False) -> None:
        """`tp_applied`: the parameters are TP DTensors (default: tp > 1; a one-rank mesh may wrap a size-1 tp
        dimension too). `keep_unsharded`: FSDP2 keeps each unit's unsharded (bf16) parameters from the first
        micro-batch's all-gather to the last one's backward (`apply_fsdp(keep_unsharded=True)`), so the weights
        are cast once per optimizer step, as `CastWeightsOnce` does without FSDP2."""
        self.model, self.mesh = model, mesh
        self.tp, self.dp = mesh["tp"].size(), mesh["dp"].size()
        self.tp_applied = self.tp > 1 if tp_applied is None else tp_applied
        self.keep_unsharded = keep_unsharded

    @contextlib.contextmanager
    def micro_batch(self, last: bool) -> Iterator[None]:
        """Around forward + backward of one micro-batch. FSDP2 reduce-scatters gradients (overlapped with the rest
        of backward, block by block) only after the last micro-batch of the step; earlier ones accumulate locally.
        With TP the cross-entropy runs on vocabulary shards: each rank's max / sum-exp / target logit are combined
        by all-reduces of (B x T) numbers, never the (B, T, vocab) logits."""
        if isinstance(self.model, FSDPModule):
            self.model.set_requires_gradient_sync(last)
            if self.keep_unsharded:
                self.model.set_reshard_after_backward(last)
        with loss_parallel() if self.tp_applied else contextlib.nullcontext():
            yield

    @contextlib.contextmanager
    def eval_context(self) -> Iterator[None]:
        """Around held-out forwards (no backward). Afterwards FSDP2 units that keep their parameters gathered after
        forward (the root, see `apply_fsdp`) are resharded, since no backward will: the optimizer and checkpoints
        must see the sharded parameters."""
        with loss_parallel() if self.tp_applied else contextlib.nullcontext():
            yield
        for module in self.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    def clip_grad_norm(self, params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
        """The L2 norm of all gradients of the full model (before clipping), and clip them to `max_norm` (when > 0).

        Per-parameter norms of DTensor gradients are partial over their sharded mesh dims; `full_tensor` finishes
        the sum with one all-reduce over the flattened (dp, tp) mesh. Replicated shards (norm weights under TP) are
        counted once, as in one process."""
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        if max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
        return norm

    def mean_over_dp(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a per-replica value (the step's loss) over data-parallel replicas; identical on every rank, so
        every rank makes the same skip-the-update decision on a NaN/Inf."""
        if self.dp == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=self.mesh["dp"].get_group())
        return value / self.dp
