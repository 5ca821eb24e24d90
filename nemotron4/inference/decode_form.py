"""The fast decode form of a model: the transforms of `quantize` (int8 weight-only or the Triton GEMV, fused QKV,
the squared ReLU inside w1's kernel) and of `decode_ops` (fused residual-add + LayerNorm, the decode attention
kernel), composed in one call. `generation.generate(compile=True)` on a GPU and `nemotron4 generate --compile`
put a model in this form; bench/decode.py measures it."""

from __future__ import annotations

from nemotron4.inference.decode_ops import FusedNormNemotron4, fuse_decode_ops
from nemotron4.inference.quantize import fuse_mlp_activation, fuse_qkv, quantize_int8, use_triton_linears
from nemotron4.model import Nemotron4

__all__ = ["ensure_decode_form", "in_decode_form", "prepare_decode"]


def prepare_decode(model: Nemotron4, int8: bool = False, fused_ops: bool = True) -> Nemotron4:
    """The fast decode form of a model, in place: int8 weight-only (if asked) or the floating-point linears through
    the Triton GEMV, fused QKV projections, the MLP's squared ReLU inside w1's kernel, and (fused_ops) the fused
    residual-add + LayerNorm kernels and the decode attention kernel of `decode_ops`."""
    (quantize_int8 if int8 else use_triton_linears)(model)
    model = fuse_mlp_activation(fuse_qkv(model))
    if fused_ops:
        fuse_decode_ops(model)
    return model


def ensure_decode_form(model: Nemotron4) -> Nemotron4:
    """`prepare_decode` unless already applied, in place, keeping each linear's precision: Int8Linear layers stay
    int8 and floating-point ones take the bf16 GEMV (a partly quantized model stays partly quantized)."""
    if in_decode_form(model):
        return model
    return prepare_decode(model, int8=False)


def in_decode_form(model: Nemotron4) -> bool:
    """Whether `prepare_decode` (or `decode_ops.fuse_decode_ops`) has been applied."""
    return isinstance(model, FusedNormNemotron4)
