"""Speed options for training, applied to a built model from outside it (fast paths live beside the
model). Each computes the same function as the plain model (tests/train/test_fast_paths.py checks loss and grads).

- `compile_blocks`: `torch.compile` each transformer block in place (torchtitan's per-block compile: one graph,
  reused by every layer; parameter names unchanged, so checkpoints do not see it), on every layout: after the TP
  plan (whose hooks on the block's submodules are traced into the graph) and activation checkpointing, before
  FSDP2 (whose hooks on the block run around it), as torchtitan does.
- `set_attention_backend`: pick the SDPA kernel explicitly (cuDNN is the fastest on H100/H200 at 4k).
- `apply_activation_checkpointing`: recompute each block in backward (memory for speed).
- `fused_cross_entropy_loss`: the loss through the output projection without materialising logits.
- `CastWeightsOnce`: bf16 copies of the blocks' matrices made once per optimizer step rather than once per
  micro-batch, their gradients added straight into the fp32 masters' `.grad` (same numbers as autocast).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nemotron4.errors import ConfigError
from nemotron4.model import Nemotron4
from nemotron4.ops.cross_entropy import linear_cross_entropy

ATTENTION_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")


def compile_blocks(model: Nemotron4, fullgraph: bool = True, checkpoint_outside: bool = False) -> Nemotron4:
    """Compile each block (static shapes: a new micro-batch size recompiles). A checkpointed block
    (`apply_activation_checkpointing`) is compiled with its checkpoint inside the graph, unless
    `checkpoint_outside`: then the block's own forward is compiled and the checkpoint recomputes the compiled
    function. The recipe asks for that under DTensor TP, where AOTAutograd cannot trace the checkpoint around
    DTensor code (it saves the DeviceMesh as a tensor: "expected all tensors_saved_with_vc_check to be Tensors",
    torch 2.13)."""
    for block in model.layers:
        checkpointed = vars(block).get("forward")
        if checkpoint_outside and checkpointed is not None:
            inner = torch.compile(checkpointed.__wrapped__, fullgraph=fullgraph, dynamic=False)
            block.forward = _checkpointed(inner)
        else:
            block.compile(fullgraph=fullgraph, dynamic=False)
    return model


def is_compiled(block: nn.Module) -> bool:
    """`compile_blocks` ran on this block (either way)."""
    inner = getattr(vars(block).get("forward"), "__wrapped__", None)
    return getattr(block, "_compiled_call_impl", None) is not None or hasattr(inner, "_torchdynamo_orig_callable")


def set_attention_backend(name: str) -> None:
    """Enable only the named CUDA SDPA backend ("auto": PyTorch's own choice). Global, read when SDPA runs or is
    traced; CPU kernels are not affected."""
    if name not in ATTENTION_BACKENDS:
        raise ConfigError(f"attention backend {name!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
    cuda = torch.backends.cuda
    toggles = {"cudnn": cuda.enable_cudnn_sdp, "flash": cuda.enable_flash_sdp,
               "efficient": cuda.enable_mem_efficient_sdp, "math": cuda.enable_math_sdp}
    for backend, enable in toggles.items():
        enable(name in ("auto", backend))


def apply_activation_checkpointing(model: Nemotron4) -> Nemotron4:
    """Recompute every block's activations in backward (non-reentrant checkpointing)."""
    for block in model.layers:
        block.forward = _checkpointed(block.forward)
    return model


def _checkpointed(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):  # a plain function in our file: torch.compile traces it (a partial it skips)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def fused_cross_entropy_loss(model: Nemotron4, batch: torch.Tensor, chunk_size: int = 4096,
                             fp8: bool | Collection[str] = False, fast_accum: bool = False) -> torch.Tensor:
    """`nemotron4.train.step.cross_entropy_loss` without the (tokens x vocab) logits: same value and gradients
    (fp8: the output projection's GEMMs in FP8, `train.fp8`'s choice, or some of them by name; `fp8_gemms` in
    nemotron4.ops.cross_entropy; fast_accum: its logits GEMM's accumulation, as `linear_cross_entropy`).
    On a size-1 tensor-parallel mesh (parallel.force_wrap) the hidden states and the output weight are DTensors
    whose local tensors are whole: the loss runs on those (`to_local` is differentiable; no collective needed)."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    h = model.hidden_states(inputs)  # (B, T, dim)
    weight = model.output.weight
    if hasattr(h, "to_local"):  # a DTensor: only ever on a one-rank tp mesh here (tp > 1 takes vocab_loss)
        h, weight = h.to_local(), weight.to_local()
    return linear_cross_entropy(h, weight, targets, chunk_size=chunk_size, fp8=fp8, fast_accum=fast_accum)


class CastWeightsOnce:
    """bf16 autocast casts every fp32 weight in every micro-batch's forward and, in backward, upcasts each bf16
    weight gradient before adding it to `.grad`: about 24 bytes of memory traffic per parameter per micro-batch.
    This makes the compute-dtype copies of the blocks' matrices once per optimizer step, swaps them into the
    blocks for the step (as FSDP2 swaps in unsharded parameters), and adds each micro-batch's low-precision
    gradient into the fp32 master's `.grad` as it arrives (Megatron's main_grad): 10 bytes. The forward values and
    the accumulated fp32 gradients are the ones autocast gives (tests/train/test_fast_paths.py).

    Call it around a step's micro-batches (`train_step(..., step_context=CastWeightsOnce(model))`). Norm weights
    stay fp32 (autocast runs LayerNorm in fp32), and so do the embedding and output matrices (the embedding keeps
    the residual stream fp32 as under autocast; the fused loss casts the output weight itself). Works on tensor-
    parallel DTensor parameters too; not under FSDP2, which swaps parameters itself (and keeps its bf16 copies
    once per step instead, `nemotron4.distributed.parallelize.apply_fsdp`).

    `cast` (optional) makes one block's copies from its (module, fp32 master) pairs, in order; the default is
    `master.to(dtype)` each. nemotron4.train.fp8 passes one that gives the blocks' FP8 linears their e4m3 weights
    once per step (`fp8_weight_cast`); the copies' gradients reach the masters the same way.
    """

    def __init__(self, model: Nemotron4, dtype: torch.dtype = torch.bfloat16,
                 cast: Callable[[list[tuple[nn.Module, torch.Tensor]]], list[torch.Tensor]] | None = None) -> None:
        self.dtype = dtype
        self.cast = cast or functools.partial(_to_dtype, dtype=dtype)
        self.blocks = [[(module, name, p) for module in block.modules()
                        for name, p in module.named_parameters(recurse=False) if p.ndim == 2]
                       for block in model.layers]

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        handles = []
        try:
            for entries in self.blocks:
                with torch.no_grad():
                    copies = self.cast([(module, master) for module, _, master in entries])
                for (module, name, master), copy in zip(entries, copies, strict=True):
                    low = nn.Parameter(copy, requires_grad=master.requires_grad)
                    if master.requires_grad:
                        hook = functools.partial(_add_to_master, master)
                        handles.append(low.register_post_accumulate_grad_hook(hook))
                    module._parameters[name] = low
            yield
        finally:
            for entries in self.blocks:
                for module, name, master in entries:
                    module._parameters[name] = master
            for handle in handles:
                handle.remove()


def _to_dtype(pairs: list[tuple[nn.Module, torch.Tensor]], dtype: torch.dtype) -> list[torch.Tensor]:
    return [master.detach().to(dtype) for _, master in pairs]


def cast_weights_context(model: Nemotron4, dtype: torch.dtype, fsdp: bool = False, enabled: bool = True,
                         cast=None) -> Callable[[], contextlib.AbstractContextManager]:
    """The `step_context` a training step runs under: `CastWeightsOnce` for a low-precision compute dtype without
    FSDP2 (one process, or tensor parallelism alone); under FSDP2 (`fsdp`), which owns the parameters, FSDP2 casts
    them in its all-gather, kept once per step (`apply_fsdp(keep_unsharded=True)`): a no-op here. The training
    recipe's choice (nemotron4.train.recipe); `cast` as for CastWeightsOnce."""
    if enabled and not fsdp and dtype != torch.float32:
        return CastWeightsOnce(model, dtype, cast)
    return contextlib.nullcontext


def _add_to_master(master: torch.Tensor, low: torch.Tensor) -> None:
    if master.grad is None:
        master.grad = low.grad.to(master.dtype)
    else:
        master.grad.add_(low.grad)
    low.grad = None
