"""Speed options for training, applied to a built model from outside it (DESIGN.md: fast paths live beside the
model). Each computes the same function as the plain model (tests/unit/test_fast_paths.py checks loss and grads).

- `compile_blocks`: `torch.compile` each transformer block in place (torchtitan's per-block compile: one graph,
  reused by every layer; parameter names unchanged, so checkpoints do not see it).
- `set_attention_backend`: pick the SDPA kernel explicitly (cuDNN is the fastest on H100/H200 at 4k).
- `apply_activation_checkpointing`: recompute each block in backward (memory for speed).
- `fused_cross_entropy_loss`: the loss through the output projection without materialising logits.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint

from nemotron4.errors import ConfigError
from nemotron4.model import Nemotron4
from nemotron4.ops.cross_entropy import linear_cross_entropy

ATTENTION_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")


def compile_blocks(model: Nemotron4, fullgraph: bool = True) -> Nemotron4:
    for block in model.layers:
        block.compile(fullgraph=fullgraph, dynamic=False)  # static shapes: a new micro-batch size recompiles
    return model


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


def fused_cross_entropy_loss(model: Nemotron4, batch: torch.Tensor, chunk_size: int = 2048) -> torch.Tensor:
    """`nemotron4.train.step.cross_entropy_loss` without the (tokens x vocab) logits: same value and gradients."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    h = model.hidden_states(inputs)  # (B, T, dim)
    return linear_cross_entropy(h, model.output.weight, targets, chunk_size=chunk_size)
