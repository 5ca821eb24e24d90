"""The training recipe: the one place that turns (model config, train section, parallel layout, device) into what
a training step runs. The trainer and every script in bench/ call `build_recipe`; nothing else builds a model for
training, picks its loss, or its cast context. One process is the same recipe on the trivial layout
(`parallel=None`); `parallel.force_mesh` runs the parallel path (process group, mesh, step hooks) on one rank, and
`parallel.force_wrap` adds DTensor TP and FSDP2 on its size-1 dimensions.

    recipe = build_recipe(cfg, job.train, device, dtype, parallel, seed=1234)
    train_step(recipe.step_model, optimizer, micro, lr, clip, recipe.autocast, recipe.loss_fn, recipe.hooks,
               recipe.step_context)
    print(recipe.paths)     # which fast paths ran, e.g. {"compile": "blocks", "loss": "fused", ...}

Order (torchtitan's): build on meta -> tensor parallel -> fp8 (not under TP yet) -> activation checkpointing ->
compile -> FSDP2 -> materialise + init (or load full weights). TP applies where tp > 1 and FSDP2 where dp > 1; a
mesh dimension of size 1 applies nothing (plain parameters, only the hooks' overhead) unless `parallel.force_wrap`
(`Parallel.wrap_size_one`) wraps it anyway: then a one-rank mesh runs the whole parallel code path (DTensor
parameters, FSDP2 all-gathers and reduce-scatters, every hook). Fast paths per layout (`check_run` refuses what is
not in this table, one line naming the key):

    compile      each whole block, on every layout (after TP + activation checkpointing, before FSDP2; under
                 DTensor TP a checkpointed block's checkpoint runs around the compiled block, not inside it)
    fused_loss   tp = 1: fused (FSDP2 too: `hidden_states` runs through FSDP2's forward hooks; a wrapped size-1 tp
                 mesh runs it on the whole local tensors); tp > 1 (x dp): vocab-parallel fused
                 (nemotron4.distributed.vocab_loss: each rank its vocabulary shard, chunked)
    cast_weights without FSDP2: bf16 copies once per step (CastWeightsOnce; DTensor parameters too; under a
                 tensorwise train.fp8 the FP8 linears' copies are e4m3); under FSDP2: its bf16 all-gather, kept
                 from the step's first forward to its last backward (once per step)
    fp8          tp = 1 (one process, or FSDP2: e4m3 all-gathers under tensorwise); the blocks' linears
                 (torchao); "+output" modes: the fused loss's GEMMs too
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from nemotron4.config import ModelConfig
from nemotron4.distributed.parallelize import apply_fsdp, apply_tp, init_weights_sharded
from nemotron4.distributed.runtime import load_full_weights
from nemotron4.distributed.vocab_loss import vocab_parallel_cross_entropy_loss
from nemotron4.model import Nemotron4
from nemotron4.ops.cross_entropy import output_weight_e4m3_once
from nemotron4.train.config import TrainSection
from nemotron4.train.fast import (
    apply_activation_checkpointing,
    cast_weights_context,
    compile_blocks,
    fused_cross_entropy_loss,
    set_attention_backend,
)
from nemotron4.train.fp8 import apply_fp8, fp8_paths, fp8_weight_cast, fp8_weights_once, output_fp8
from nemotron4.train.step import autocast_context, cross_entropy_loss

if TYPE_CHECKING:
    from nemotron4.distributed.runtime import Parallel

__all__ = ["Recipe", "build_recipe", "recipe_paths", "stacked"]


def stacked(*contexts: Callable[[], Any]) -> Callable[[], contextlib.AbstractContextManager]:
    """One step context entering each of `contexts` (factories of context managers) in order."""
    @contextlib.contextmanager
    def run():
        with contextlib.ExitStack() as stack:
            for context in contexts:
                stack.enter_context(context())
            yield

    return run


@dataclass
class Recipe:
    """What a training step runs, for one layout."""

    model: Nemotron4  # the parameters: optimised, checkpointed, evaluated
    step_model: Nemotron4  # what forward / backward call (the same module, with the fast paths applied)
    loss_fn: Callable[..., torch.Tensor]  # (model, batch) -> mean loss
    autocast: Callable[[], Any]  # the compute-dtype context of forward / backward
    step_context: Callable[[], Any]  # wraps each optimizer step (bf16 weights cast once per step)
    hooks: Any = None  # nemotron4.distributed.step.ParallelStepHooks on a mesh, else None
    paths: dict[str, str] = field(default_factory=dict)  # which fast path ran, by train.* field (recipe_paths)


def recipe_paths(train: TrainSection, dtype: torch.dtype, tp: int = 1, dp: int = 1,
                 meshed: bool = False, wrapped: bool = False) -> dict[str, str]:
    """Which implementation each train.* fast path gets on a (tp, dp) layout ("off" where the field is off); the
    one table `build_recipe` follows and `check_run` refuses against. `wrapped`: size-1 dimensions get DTensor TP
    and FSDP2 too (parallel.force_wrap)."""
    low = dtype != torch.float32
    tp_on, dp_on = tp > 1 or wrapped, dp > 1 or wrapped
    return {
        "layout": f"tp{tp} x dp{dp}" + (" mesh" if meshed else " single process") + (" wrapped" if wrapped else ""),
        "compile": "blocks" if train.compile else "off",
        "loss": ("vocab-parallel fused" if tp > 1 else "fused (local shard)" if tp_on else "fused")
                if train.fused_loss else
                ("vocab-parallel (loss_parallel)" if tp_on else "full logits"),
        "cast_weights": cast_path(train, low, dp_on),
        "activation_checkpointing": "blocks" if train.activation_checkpointing else "off",
        "fp8": fp8_paths(train.fp8),
        "tensor_parallel": "dtensor" if tp_on else "none",
        "fsdp2": "fully_shard" if dp_on else "none",
    }


def cast_path(train: TrainSection, low: bool, fsdp: bool) -> str:
    """recipe_paths' "cast_weights": bf16 copies once per step (CastWeightsOnce, or FSDP2's all-gather kept for the
    step) or autocast's per use; the FP8 linears' weights in e4m3 instead under tensorwise (CastWeightsOnce's cast,
    FSDP2's float8 all-gather)."""
    once = train.cast_weights_once and low
    path = ("fsdp2 bf16 all-gather once per step" if fsdp else "once per step") if once else "autocast"
    if fp8_weights_once(train.fp8) and (once or fsdp):
        path += " (e4m3 for the FP8 linears)" if once else " (fsdp2 e4m3 all-gathers for the FP8 linears)"
    return path


def build_recipe(cfg: ModelConfig, train: TrainSection, device: torch.device, dtype: torch.dtype,
                 parallel: Parallel | None = None, seed: int | None = None,
                 weights: Mapping[str, torch.Tensor] | None = None) -> Recipe:
    """Build the model of `cfg` on `parallel`'s mesh (None: one process) with train's fast paths in the order of
    the module docstring, its weights the single-process init of `seed` (any layout gives the same values) or the
    full `weights` (e.g. init_from), and choose the loss and the step contexts."""
    tp, dp = (parallel.dims.tp, parallel.dims.dp) if parallel is not None else (1, 1)
    wrapped = parallel is not None and parallel.wrap_size_one
    paths = recipe_paths(train, dtype, tp, dp, meshed=parallel is not None, wrapped=wrapped)
    keep_unsharded = paths["fsdp2"] == "fully_shard" and train.cast_weights_once and dtype != torch.float32
    with torch.device("meta"):
        model = Nemotron4(cfg)
    if paths["tensor_parallel"] == "dtensor":
        apply_tp(model, parallel.mesh["tp"])
    set_attention_backend(train.attention_backend)
    apply_fp8(model, train.fp8, tensor_parallel=paths["tensor_parallel"] == "dtensor", device=device,
              fused_loss=train.fused_loss, fsdp=paths["fsdp2"] == "fully_shard")
    if train.activation_checkpointing:
        apply_activation_checkpointing(model)  # inside the TP / FSDP2 hooks of a parallel model
    if train.compile:
        compile_blocks(model, checkpoint_outside=paths["tensor_parallel"] == "dtensor")
    if paths["fsdp2"] == "fully_shard":
        apply_fsdp(model, parallel.mesh["dp"], dtype, forward_methods=("hidden_states",) if train.fused_loss else (),
                   keep_unsharded=keep_unsharded)
    model.to_empty(device=device)
    if weights is None:
        init_weights_sharded(model, seed if seed is not None else 0, device)
    else:
        load_full_weights(model, weights, device)
    loss_fn = {"fused": fused_cross_entropy_loss, "fused (local shard)": fused_cross_entropy_loss,
               "vocab-parallel fused": vocab_parallel_cross_entropy_loss}.get(paths["loss"], cross_entropy_loss)
    if loss_fn is fused_cross_entropy_loss and output_fp8(train.fp8):
        loss_fn = functools.partial(fused_cross_entropy_loss, fp8=True)  # the output projection in FP8 too
    hooks = None
    if parallel is not None:
        from nemotron4.distributed.step import local_loss

        loss_fn, hooks = local_loss(loss_fn), parallel.step_hooks(model, keep_unsharded)
    step_context = cast_weights_context(model, dtype, paths["fsdp2"] == "fully_shard", train.cast_weights_once,
                                        fp8_weight_cast(train.fp8, dtype))
    if output_fp8(train.fp8):  # the output weight's e4m3 cast once per step too
        step_context = stacked(step_context, output_weight_e4m3_once)
    return Recipe(model=model, step_model=model, loss_fn=loss_fn, step_context=step_context, hooks=hooks,
                  autocast=autocast_context(device, dtype), paths=paths)
