"""Tensor parallelism (DTensor) and data parallelism with sharded optimizer state (FSDP2), applied to a model built
on `meta`, in torchtitan's order (parallelism is applied from outside the model; docs/architecture.md). The order
and the fast paths between the two steps are `nemotron4.train.recipe.build_recipe`:

    with torch.device("meta"):
        model = Nemotron4(cfg)
    apply_tp(model, mesh["tp"])         # tp > 1
    ...                                 # fp8, activation checkpointing, compile
    apply_fsdp(model, mesh["dp"])       # dp > 1
    model.to_empty(device=device)       # each rank allocates only its shards
    init_weights_sharded(model, seed)   # the single-process init, sliced to this rank's shards

Tensor parallelism follows Megatron-LM (Shoeybi et al. 2019) with sequence parallelism (Korthikanti et al. 2022):
column-parallel wq/wk/wv and w1, row-parallel wo and w2, the residual stream and the norms sharded on the sequence
dim between blocks, a vocabulary-parallel embedding and output projection, and a loss computed on vocabulary
shards (`loss_parallel`) so that the (B, T, vocab) logits are never gathered.

Data parallelism is FSDP2 (`fully_shard`) on the dp mesh, i.e. ZeRO-3: parameters, gradients and AdamW state are
sharded over dp (dim 0 of each TP shard). Why not a hand-written ZeRO-1 like Megatron's distributed optimizer?
FSDP2 runs on gloo in torch >= 2.11 (reduce_scatter_tensor is there), it overlaps the per-block reduce-scatter with
backward and prefetches the next block's all-gather, its state is per-parameter DTensors that DCP reshards across
(tp, dp) layouts for free, and it shards strictly more than ZeRO-1 (the paper's layout is the memory plan's, see
nemotron4.distributed.plan). A flat-buffer ZeRO-1 would need its own resharding checkpoint code.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.distributed._functional_collectives import AsyncCollectiveTensor
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from nemotron4.distributed.layout import check_tp
from nemotron4.model import Nemotron4

__all__ = ["BLOCK_PLAN", "ROOT_PLAN", "apply_fsdp", "apply_tp", "copy_full_weights",
           "init_weights_sharded", "mixed_precision"]

# Between blocks the residual stream is a plain (B, T / tp, dim) tensor: this rank's slice of the sequence.
ROOT_PLAN: dict[str, ParallelStyle] = {
    # Vocabulary-parallel embedding: each rank looks up its rows of the table (zeros elsewhere), and the partial
    # sums are reduce-scattered onto the sequence dim.
    "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
    "norm": SequenceParallel(),
    # Logits stay sharded on the vocabulary, (B, T, vocab / tp) per rank, as a DTensor for `loss_parallel`.
    "output": ColwiseParallel(input_layouts=Shard(1), output_layouts=Shard(-1), use_local_output=False),
}

# Keyed by module name inside each Block. Attention and FeedForward take the sequence-sharded input, all-gather it
# (PrepareModuleInput), run column-parallel projections on their heads / ffn columns, and the row-parallel output
# projection reduce-scatters back onto the sequence dim. Attention's other arguments (cos, sin, mask, input_pos)
# are plain tensors (or None) and pass through untouched.
BLOCK_PLAN: dict[str, ParallelStyle] = {
    "attention_norm": SequenceParallel(),
    "attention": PrepareModuleInput(
        input_layouts=(Shard(1), None, None, None, None), desired_input_layouts=(Replicate(), None, None, None, None)
    ),
    "attention.wq": ColwiseParallel(),  # (B, T, n_heads / tp * head_dim): whole heads per rank
    "attention.wk": ColwiseParallel(),  # (B, T, n_kv_heads / tp * head_dim)
    "attention.wv": ColwiseParallel(),
    "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
    "ffn_norm": SequenceParallel(),
    "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
    "feed_forward.w1": ColwiseParallel(),  # (B, T, ffn_dim / tp)
    "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
}


def apply_tp(model: Nemotron4, tp_mesh: DeviceMesh) -> None:
    """Swap the parameters for DTensors sharded over `tp_mesh` per ROOT_PLAN and BLOCK_PLAN (in place)."""
    check_tp(model.cfg, tp_mesh.size())
    parallelize_module(model, tp_mesh, ROOT_PLAN)
    model.tok_embeddings.register_forward_hook(_wait_async_output)
    for block in model.layers:
        parallelize_module(block, tp_mesh, BLOCK_PLAN)


def _wait_async_output(module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
    """The embedding's RowwiseParallel reduce-scatters asynchronously (`async_op=True`) and hands the first block an
    `AsyncCollectiveTensor`. A compiled block takes that wrapper subclass as a graph input, and AOTAutograd returns
    no gradient for it: in backward the embedding's Redistribute then gets a plain tensor (`'Tensor' object has no
    attribute '_local_tensor'`; torch 2.11 and 2.13 alike). Waiting here (a differentiable copy of the
    (B, T / tp, dim) residual, once per forward) gives the blocks a plain tensor, compiled or not."""
    if isinstance(output, AsyncCollectiveTensor):
        return output.clone()
    return output


def mixed_precision(param_dtype: torch.dtype, output_dtype: torch.dtype | None = None) -> MixedPrecisionPolicy:
    """FSDP2's policy for a compute dtype: all-gather and compute with `param_dtype` copies of the fp32 masters,
    reduce-scatter gradients in fp32. Inputs are not cast, so the residual stream stays fp32 as under autocast in
    one process (the matmuls run in bf16 either way); fp32 runs get the default policy (no casts)."""
    if param_dtype == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, output_dtype=output_dtype,
                                cast_forward_inputs=False)


def apply_fsdp(model: Nemotron4, dp_mesh: DeviceMesh, param_dtype: torch.dtype = torch.float32,
               forward_methods: tuple[str, ...] = (), keep_unsharded: bool = False) -> None:
    """FSDP2 over `dp_mesh`: one unit per block (its all-gather / reduce-scatter overlaps the neighbouring block's
    compute), the embedding, and the root (final norm + output projection). Under bf16 the all-gathers carry bf16
    (half the bytes of fp32) and the gradients are reduced in fp32 (`mixed_precision`); the embedding's output is
    cast back to fp32, where the residual stream starts. `forward_methods`: the root's other entry points that
    must run FSDP2's forward hooks like `forward` (the fused loss calls `hidden_states`, then reads the gathered
    output weight). `keep_unsharded` (train.cast_weights_once under FSDP2): every unit keeps its unsharded
    parameters after forward, and the step hooks keep them after every backward but the step's last
    (`ParallelStepHooks`), so each bf16 weight is all-gathered (cast) once per optimizer step instead of twice per
    micro-batch, for the memory of one process's cast-once copies (2 bytes x parameters / tp)."""
    # FSDP2 warns that the embedding returns a view (an in-place op on it would skip its backward hook); the model's
    # residual adds are out-of-place (`h = x + ...`), so the warning is noise on every step.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPEmbedding\) returned a view tensor")
    reshard = not keep_unsharded
    fully_shard(model.tok_embeddings, mesh=dp_mesh, reshard_after_forward=reshard,
                mp_policy=mixed_precision(param_dtype, torch.float32))
    for block in model.layers:
        fully_shard(block, mesh=dp_mesh, reshard_after_forward=reshard, mp_policy=mixed_precision(param_dtype))
    # The root's parameters are the last used in forward and the first in backward: no point freeing them between.
    fully_shard(model, mesh=dp_mesh, reshard_after_forward=False, mp_policy=mixed_precision(param_dtype))
    for name in forward_methods:
        register_fsdp_forward_method(model, name)


@torch.no_grad()
def copy_full_weights(model: nn.Module, full: Callable[[str, torch.Tensor], torch.Tensor | None]) -> None:
    """For each parameter, in order, `full(name, param)` returns the whole (unsharded) tensor, identical on every
    rank (or None to leave the parameter alone); this rank keeps its shard. No communication: every rank computes the
    full tensor and slices it locally (`src_data_rank=None`), one parameter at a time, so the peak extra memory is
    one full parameter (the 15B model's largest, the output projection, is 256000 x 6144)."""
    for name, param in model.named_parameters():
        value = full(name, param)
        if value is None:
            continue
        if isinstance(param, DTensor):
            shard = distribute_tensor(value.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(shard.to_local())
        else:
            param.copy_(value)


def init_weights_sharded(model: Nemotron4, seed: int, device: torch.device) -> None:
    """The same weights as `Nemotron4.init_weights(seed)` in one process, bitwise, on any (tp, dp) layout.

    We draw each full tensor from one generator in the single-process order and keep this rank's slice, rather than
    using DTensor's offset-based RNG: that one gives layout-independent values only for its own order, not the
    single-process `init_weights` values that the TP = 1 vs TP = n parity tests (and resumed runs) compare against.
    """
    generator = torch.Generator(device=device).manual_seed(seed)

    def full(name: str, param: torch.Tensor) -> torch.Tensor:
        std = model.init_std_of(name)
        value = torch.zeros(param.shape, device=device, dtype=torch.float32)
        if std is not None:
            nn.init.normal_(value, mean=0.0, std=std, generator=generator)
        return value

    copy_full_weights(model, full)
    model.init_buffers()
