"""Weight-only int8 quantization (per output channel, symmetric), so the 15B model fits a 24 GB GPU, and the decode
linear that reads those weights at memory bandwidth.

Linear weights become int8 (the nn.Linear layout, out x in) with one scale per output row; activations stay in the
model dtype. One op, `nemotron4::weight_linear(x, weight, scales)`, serves every shape from the one copy of the
weights: on CUDA, up to `TRITON_MAX_ROWS` rows (decode, batched decode) go through the kernels `triton_linear`
chooses (the CUDA GEMV of `cuda_gemv` at batch 1 with int8 weights, Triton otherwise: int8 read in 16-byte vectors,
dequantised in registers, scale in the epilogue); more rows (prefill)
dequantise a slice of output rows at a time and run a GEMM; on CPU it is plain torch. It is a torch custom op, so a
compiled, CUDA-graph-captured decode step calls the kernel as one opaque node. The input embedding stays as it is:
a decode step reads one row of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nemotron4.inference.triton_linear import OUT_ACT_NONE, OUT_ACT_SQUARED_RELU, apply_out_act
from nemotron4.model import Attention, FeedForward, Nemotron4

TRITON_MAX_ROWS = 64
DEQUANT_CHUNK_BYTES = 1 << 28  # prefill: dequantise at most this many bytes of bf16 weight at a time



def torch_weight_linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None,
                        out_act: int = OUT_ACT_NONE) -> torch.Tensor:
    """The reference maths: act((x @ weight.T) * scales), weight int8 or floating, act the identity or (out_act=1)
    the squared ReLU of the model's FeedForward. int8 weights are dequantised in row slices, so a prefill over the
    256k-row output projection never holds a full bf16 copy of it."""
    return apply_out_act(_linear(x, weight, scales), out_act)


def _linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    """(x @ weight.T) * scales in torch, int8 weights dequantised DEQUANT_CHUNK_BYTES of rows at a time."""
    if weight.dtype != torch.int8:
        y = F.linear(x, weight)
        return y if scales is None else y * scales.to(y.dtype)
    N, K = weight.shape
    rows = max(1, DEQUANT_CHUNK_BYTES // (K * x.element_size()))
    if rows >= N:
        return F.linear(x, weight.to(x.dtype)) * scales.to(x.dtype)
    y = x.new_empty(*x.shape[:-1], N)
    for n0 in range(0, N, rows):
        sl = slice(n0, n0 + rows)
        y[..., sl] = F.linear(x, weight[sl].to(x.dtype)) * scales[sl].to(x.dtype)
    return y


def _use_triton(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None) -> bool:
    if not x.is_cuda or x.numel() // x.shape[-1] > TRITON_MAX_ROWS or x.dtype not in (torch.bfloat16, torch.float16):
        return False
    from nemotron4.inference.triton_linear import chosen_config, fits

    return fits(chosen_config(x.reshape(-1, x.shape[-1]), weight, scales), weight.shape[1])


@torch.library.custom_op("nemotron4::weight_linear", mutates_args=())
def weight_linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None,
                  out_act: int = 0) -> torch.Tensor:
    """act((x @ weight.T) * scales) for x (..., in), weight (out, in) int8 or floating, scales (out,) or None;
    out_act: 0 none, 1 squared ReLU (in the kernel's epilogue)."""
    if not _use_triton(x, weight, scales):
        return torch_weight_linear(x, weight, scales, out_act)
    from nemotron4.inference.triton_linear import triton_linear

    y = triton_linear(x.reshape(-1, x.shape[-1]), weight, scales, out_act=out_act)
    return y.view(*x.shape[:-1], weight.shape[0])


@weight_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None, out_act: int = 0) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class Int8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, out_act: int = OUT_ACT_NONE) -> torch.Tensor:
        return weight_linear(x, self.weight, self.scales, out_act)

    def dequantize(self) -> torch.Tensor:
        """The weight this layer computes with, (out, in), in the scales' dtype."""
        return self.weight.to(self.scales.dtype) * self.scales[:, None]

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight.detach()
        q = cls(w.shape[1], w.shape[0], w.dtype, w.device)
        scales = w.float().abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        q.weight.copy_(torch.round(w.float() / scales[:, None]).clamp(-127, 127).to(torch.int8))
        q.scales.copy_(scales.to(w.dtype))
        return q


class GemvLinear(nn.Linear):
    """A bias-free nn.Linear (same parameters, same state dict) whose forward goes through `weight_linear`: the
    Triton GEMV for decode-sized inputs on CUDA, F.linear otherwise. Installed by `use_triton_linears`."""

    def forward(self, x: torch.Tensor, out_act: int = OUT_ACT_NONE) -> torch.Tensor:
        return weight_linear(x, self.weight, None, out_act)


def _replace_linears(model: nn.Module, make) -> None:
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, make(child))


@torch.no_grad()
def quantize_int8(model: Nemotron4) -> Nemotron4:
    """Replace every nn.Linear (blocks and output projection) by Int8Linear, in place."""
    _replace_linears(model, Int8Linear.from_linear)
    return model


def use_triton_linears(model: Nemotron4) -> Nemotron4:
    """Route the floating-point linears through the Triton GEMV at decode (in place; parameters untouched)."""
    def swap(linear: nn.Linear) -> nn.Linear:
        if type(linear) is nn.Linear and linear.bias is None:  # not a subclass with its own forward (LoRA, fp8)
            linear.__class__ = GemvLinear
        return linear

    _replace_linears(model, swap)
    return model


class FusedQKVAttention(Attention):
    """Attention whose queries, keys and values come from one projection `wqkv` (the rows of wq, wk and wv stacked):
    one decode GEMV reads the three weights instead of three launches, two of them too small to reach bandwidth.
    Installed by `fuse_qkv`; per-row int8 scales stack with their rows, so the maths is the parts' maths."""

    qkv_sizes: tuple[int, int, int]

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).split(self.qkv_sizes, dim=-1)
        return (q.view(B, T, -1, self.head_dim), k.view(B, T, -1, self.head_dim), v.view(B, T, -1, self.head_dim))


def _stack_linears(parts: list[nn.Module]) -> nn.Module:
    """One module computing the concatenation of the parts' outputs (all Int8Linear, or all bias-free nn.Linear)."""
    first = parts[0]
    if isinstance(first, Int8Linear):
        fused = Int8Linear(first.in_features, sum(p.out_features for p in parts), first.scales.dtype,
                           first.weight.device)
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        fused.scales.copy_(torch.cat([p.scales for p in parts]))
        return fused
    w = torch.cat([p.weight.detach() for p in parts])
    fused = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
    fused.weight = nn.Parameter(w, requires_grad=False)
    fused.__class__ = first.__class__  # GemvLinear stays GemvLinear
    return fused


@torch.no_grad()
def fuse_qkv(model: Nemotron4) -> Nemotron4:
    """Stack every attention's wq, wk and wv into one `wqkv` (in place; the parts are dropped, so the state dict
    changes: for inference only). Apply after `quantize_int8` / `use_triton_linears` or before, either works."""
    for layer in model.layers:
        attn = layer.attention
        if isinstance(attn, FusedQKVAttention):
            continue
        parts = [attn.wq, attn.wk, attn.wv]
        kinds = {type(p) for p in parts}
        if len(kinds) != 1 or kinds.pop() not in (Int8Linear, nn.Linear, GemvLinear) or any(
                getattr(p, "bias", None) is not None for p in parts):
            raise ValueError("fuse_qkv: wq, wk and wv must be bias-free linears of one kind")
        attn.wqkv = _stack_linears(parts)
        attn.qkv_sizes = tuple(p.out_features for p in parts)
        attn.n_local_kv_heads = attn.wk.out_features // attn.head_dim
        del attn.wq, attn.wk, attn.wv
        attn.__class__ = FusedQKVAttention
    return model


class FusedActFeedForward(FeedForward):
    """FeedForward whose squared ReLU runs in w1's kernel, on its output before the store: one kernel fewer per
    layer, at no cost (once per output element; inside w2, as it loads its input, every program would redo it
    over the whole input: 7 us of w2's 41 us on an H200). Installed by `fuse_mlp_activation` where w1 takes
    `out_act` (Int8Linear, GemvLinear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.w1(x, out_act=OUT_ACT_SQUARED_RELU))


def fuse_mlp_activation(model: Nemotron4) -> Nemotron4:
    """Move every FeedForward's squared ReLU into its w1 call (in place; parameters untouched)."""
    for layer in model.layers:
        ff = layer.feed_forward
        if type(ff) is FeedForward and isinstance(ff.w1, (Int8Linear, GemvLinear)):
            ff.__class__ = FusedActFeedForward
    return model


def autotune_model(model: torch.nn.Module, rows: tuple[int, ...] = (1,), only_missing: bool = True) -> dict:
    """`autotune` every (rows, out, in, int8) shape of the model's decode linears (GemvLinear, Int8Linear) that has
    no installed config yet (only_missing). Returns {"M,N,K,int8": {"us", "config", "candidates"}} for the shapes
    tuned (candidates: microseconds per candidate config)."""
    from nemotron4.inference.triton_linear import CONFIGS, autotune

    shapes = {(m.weight.shape[0], m.weight.shape[1], m.weight.dtype == torch.int8, str(m.weight.device))
              for m in model.modules() if isinstance(m, (GemvLinear, Int8Linear))}
    out = {}
    for M in rows:
        for N, K, int8, device in sorted(shapes):
            if only_missing and (M, N, K, int8) in CONFIGS:
                continue
            times = autotune(M, N, K, int8, device=device)
            if times:
                best = CONFIGS[M, N, K, int8]
                out[f"{M},{N},{K},{int8}"] = {"us": min(times.values()) * 1e6, "config": best.__dict__,
                                              "candidates": {c.label(): t * 1e6 for c, t in times.items()}}
    return out
