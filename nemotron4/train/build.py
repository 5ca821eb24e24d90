"""The build stage's one call for the model: turn the plan (model config, train section, parallel layout, device)
into everything a training step runs. The trainer calls `build_model_parts` once and nothing else about the model,
so a training recipe that picks its own fast paths per layout replaces this one function.

    parts = build_model_parts(plan, parallel)     # parallel: nemotron4.distributed.runtime.Parallel, or None
    train_step(parts.step_model, optimizer, micro, lr, clip, parts.autocast, parts.loss_fn, parts.hooks,
               parts.step_context)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nemotron4.model import Nemotron4, build_model
from nemotron4.train.fast import (
    apply_activation_checkpointing,
    cast_weights_context,
    compile_block_parts,
    compile_blocks,
    fused_cross_entropy_loss,
    set_attention_backend,
)
from nemotron4.train.fp8 import apply_fp8
from nemotron4.train.step import autocast_context, cross_entropy_loss
from nemotron4.weights import load_model

if TYPE_CHECKING:
    from nemotron4.distributed.runtime import Parallel
    from nemotron4.train.run import RunPlan

__all__ = ["ModelParts", "build_model_parts"]


@dataclass
class ModelParts:
    """What a training step runs, for one layout."""

    model: Nemotron4  # the parameters: optimised, checkpointed, evaluated
    step_model: Nemotron4  # what forward / backward call (the same module, with the fast paths applied)
    loss_fn: Callable[..., torch.Tensor]  # (model, batch) -> mean loss
    autocast: Callable[[], Any]  # the compute-dtype context of forward / backward
    step_context: Callable[[], Any]  # wraps each optimizer step (bf16 weights cast once per step)
    hooks: Any = None  # nemotron4.distributed.step.ParallelStepHooks under tp / dp, else None


def build_model_parts(plan: RunPlan, parallel: Parallel | None) -> ModelParts:
    """Build the model (from the checkpoint's shape on resume, else init_from weights, else a fresh init of the
    flavour; sharded under tp / dp), then apply the speed options of nemotron4.train.fast in torchtitan's order
    (fp8 conversion, activation checkpointing, then compile), choose the loss and the step contexts."""
    train = plan.job.train
    model = _build_model(plan, parallel)
    set_attention_backend(train.attention_backend)
    apply_fp8(model, train.fp8, parallel=parallel is not None)  # before checkpointing and compile
    if train.activation_checkpointing:
        apply_activation_checkpointing(model)  # under tp / dp: inside the TP / FSDP2 hooks of the parallel model
    if train.compile:
        (compile_block_parts if parallel is not None else compile_blocks)(model)
    step_context = cast_weights_context(model, plan.dtype, plan.dims.dp, train.cast_weights_once)
    if parallel is not None:
        from nemotron4.distributed.step import local_loss

        # Under tp / dp the loss goes through loss_parallel (the fused loss reads the full output weight).
        loss_fn, hooks = local_loss(cross_entropy_loss), parallel.step_hooks(model)
    else:
        loss_fn, hooks = (fused_cross_entropy_loss if train.fused_loss else cross_entropy_loss), None
    return ModelParts(model=model, step_model=model, loss_fn=loss_fn, step_context=step_context, hooks=hooks,
                      autocast=autocast_context(plan.device, plan.dtype))


def _build_model(plan: RunPlan, parallel: Parallel | None) -> Nemotron4:
    job, seq_len, seed = plan.job, plan.job.train.seq_len, plan.job.train.seed
    if plan.saved is None and job.model.init_from:
        if parallel is None:
            return load_model(job.model.init_from, device=plan.device).float()
        model = load_model(job.model.init_from, device="cpu").float()  # full, then each rank's shards
        return parallel.build_model(model.cfg, seq_len, weights=model.state_dict(), compute_dtype=plan.dtype)
    if parallel is not None:
        return parallel.build_model(plan.model_config, seq_len, seed=seed, compute_dtype=plan.dtype)
    return build_model(plan.model_config, device=plan.device, seed=seed)
