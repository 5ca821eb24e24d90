"""The decode step's kernels besides the linears: the residual add and LayerNorm1P in one kernel, and one new token's
attention over the KV cache (flash decoding: split-KV partials, then a combine) with the queries' RoPE fused.

A batch-1 decode step of the 15B model spent ~0.8 ms per token outside the linears (bench/results/decode_h200_s4.json):
Inductor's LayerNorm is a looped single-program reduction (5-7 us for 6144 elements), cuDNN SDPA over a 256-slot
cache ~8 us a layer, plus the mask and RoPE kernels. Here:

- `add_layernorm(x, delta, weight, bias, eps) -> (x + delta, LN1P(x + delta))` and `layernorm(x, ...)`: one program per
  row holds the whole row in registers (one load, two reductions, one store); the norm's gain and bias are loaded
  before the programmatic-dependent-launch wait. `FusedNormBlock` carries each block's last residual add into the
  next block's first norm, so a block is two such kernels and no separate add.
- `decode_attention(q, k_cache, v_cache, mask, cos, sin, input_pos)`: q (B, 1, H, D) before RoPE; each program takes
  one (row, KV head) and a slice of the slots up to input_pos (slots after it are never attended: decode is causal),
  its G = H / KVH query heads as the rows of a tl.dot tile, online softmax; partials are combined by a second kernel
  (one kernel when there is one split). The slot, the mask, the RoPE tables and each program's first tile of cached
  keys and values are loaded before the programmatic-dependent-launch wait (the QKV projection does not write them),
  so their memory latency overlaps the projection's tail.
- Both let the next kernel launch before their own wait (`EARLY_LAUNCH`): the linear after them has its programs
  resident, prefetching weights into L2 (`triton_linear.KernelConfig.l2_prefetch`), while these small,
  latency-bound kernels leave the memory system idle.

Each is a torch custom op (opaque to the compiler, so a compiled, graph-captured step calls the kernel) with the
plain torch maths on CPU, for rows beyond `MAX_ROWS`, and as the reference. `fuse_decode_ops` installs them on a model
(in place; parameters untouched); `decode_form.prepare_decode` calls it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from nemotron4.inference.kv_cache import KVCache
from nemotron4.inference.quantize import TRITON_MAX_ROWS as MAX_ROWS  # more rows (prefill): torch's LayerNorm
from nemotron4.inference.quantize import FusedQKVAttention
from nemotron4.inference.triton_linear import launch  # PDL where it is on (triton is imported lazily there)
from nemotron4.model import Block, LayerNorm1P, Nemotron4, apply_rope, layernorm_1p

ATTN_BLOCK_N = 64  # slots per tl.dot tile
ATTN_TARGET_PROGRAMS = 128  # split the slots until B x KVH x splits reaches about this many programs
LN_MAX_WARPS = 16  # warps of the one-program-per-row norm kernel (fewer for short rows: 512 elements a warp)
# 4 warps: 231.4 tok/s against 8 warps' 225.1 (mean of 3) in the int8 15B decode step on an H200 (session 9
# sweep), although Triton 3.9's sm_90 build of the 4-warp kernel spills 168 bytes (3.6 on the H200: measured fast)
ATTN_WARPS = 4
WRITE_KV = True  # the decode attention kernel also writes the step's k (RoPE'd) and v into the cache
# The norm and attention kernels let the next kernel launch before their own PDL wait (not after it): each is a
# few programs, and the next (a linear, or the attention's combine) then has its programs resident early, ready
# to prefetch weights while they run. Safe because what a kernel loads before its wait is never written by a
# kernel of the same step (weights; cached slots of earlier steps; the step's position, mask and RoPE tables,
# written before the first linear, whose programs launch their successor only after their wait).
EARLY_LAUNCH = True


def _interpret() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# --- the reference maths (also the CPU path) ------------------------------------------------------------------------


torch_layernorm = layernorm_1p  # LayerNorm1P's maths: the reference and the CPU / prefill path


def torch_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, mask: torch.Tensor,
                           cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """nemotron4.model.Attention's decode maths: RoPE on q (B, T, H, D), SDPA over the cache under mask
    (broadcastable to (B, 1, T, S)); returns (B, T, H * D)."""
    B, T = q.shape[:2]
    q = apply_rope(q, cos, sin).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask, enable_gqa=q.shape[1] != k_cache.shape[1])
    return y.transpose(1, 2).reshape(B, T, -1)


# --- Triton kernels --------------------------------------------------------------------------------------------------


@functools.cache
def _kernels():
    from nemotron4.inference import _decode_kernels as k

    return k.add_ln_kernel, k.attn_partial_kernel, k.attn_combine_kernel


def triton_add_layernorm(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                         eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + delta, LN1P(x + delta)) of x (..., N) (delta None: (x, LN1P(x))), one program per row."""
    add_ln_kernel, _, _ = _kernels()
    N = x.shape[-1]
    x2 = x.reshape(-1, N).contiguous()
    d2 = delta.reshape(-1, N).contiguous() if delta is not None else x2
    h = torch.empty_like(x2) if delta is not None else x2
    y = torch.empty_like(x2)
    block = _next_pow2(N)
    launch(add_ln_kernel, (x2.shape[0],), x.device, x2, d2, weight, bias, h, y, N, eps, HAS_DELTA=delta is not None,
            BLOCK=block, EARLY_LAUNCH=EARLY_LAUNCH, num_warps=min(LN_MAX_WARPS, max(1, block // 512)))
    return h.view(x.shape), y.view(x.shape)


def attention_splits(batch: int, kv_heads: int, slots: int, block_n: int = ATTN_BLOCK_N) -> int:
    """How many slices of the slots each (row, KV head) is split into."""
    want = -(-ATTN_TARGET_PROGRAMS // (batch * kv_heads))
    return max(1, min(want, -(-slots // block_n), 64))


def triton_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, mask: torch.Tensor,
                            cos: torch.Tensor, sin: torch.Tensor, input_pos: torch.Tensor,
                            n_splits: int | None = None, block_n: int = ATTN_BLOCK_N,
                            k_new: torch.Tensor | None = None, v_new: torch.Tensor | None = None) -> torch.Tensor:
    """q (B, 1, H, D) before RoPE (any strides, last dim contiguous), caches (B, KVH, S, D), mask broadcastable to
    (B, 1, 1, S) (True = attend), cos/sin (1, rot), input_pos (1,): the new token's slot. Returns (B, 1, H * D).
    With k_new (before RoPE) and v_new, (B, 1, KVH, D): they are written to the caches at input_pos (k RoPE'd) in
    the same launch, and attended there."""
    _, partial_kernel, combine_kernel = _kernels()
    B, T, H, D = q.shape
    KVH, S = k_cache.shape[1], k_cache.shape[2]
    if T != 1 or H % KVH or q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError(f"triton_decode_attention needs one token, KV heads dividing the heads and rows of D "
                         f"contiguous; got q {tuple(q.shape)} (last stride {q.stride(-1)}), caches "
                         f"{tuple(k_cache.shape)} (last strides {k_cache.stride(-1)}, {v_cache.stride(-1)})")
    write = k_new is not None
    if write and (k_new.stride(-1) != 1 or v_new.stride(-1) != 1):
        raise ValueError("triton_decode_attention: k_new / v_new rows must be contiguous")
    G = H // KVH
    m2 = mask.expand(B, 1, 1, S)[:, 0, 0, :]
    if m2.dtype == torch.bool:
        m2 = m2.view(torch.uint8)
    rot = cos.shape[-1]
    cos, sin = cos.reshape(-1)[:rot].contiguous(), sin.reshape(-1)[:rot].contiguous()
    n_splits = n_splits or attention_splits(B, KVH, S, block_n)
    y = q.new_empty(B, 1, H * D)
    if n_splits > 1:
        ws = torch.empty(B * H * n_splits, D, device=q.device, dtype=torch.float32)
        ml = torch.empty(B * H * n_splits, 2, device=q.device, dtype=torch.float32)
    else:
        ws, ml = y, y
    kn, vn = (k_new, v_new) if write else (q, q)
    qk_scale = D ** -0.5 * 1.4426950408889634  # softmax in base 2
    d_pad = _next_pow2(D)
    launch(partial_kernel, (B * KVH, n_splits), q.device, q, k_cache, v_cache, kn, vn, m2, cos, sin, input_pos, ws,
            ml, S, qk_scale, q.stride(0), q.stride(2), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), kn.stride(0), kn.stride(2), vn.stride(0),
            vn.stride(2), m2.stride(0), m2.stride(1),
            KVH=KVH, G=G, G_PAD=max(16, _next_pow2(G)), D=D, D_PAD=d_pad, ROT=rot, BLOCK_N=block_n,
            N_SPLITS=n_splits, WRITE_KV=write, EARLY_LAUNCH=EARLY_LAUNCH, num_warps=ATTN_WARPS, num_stages=2)
    if n_splits > 1:
        launch(combine_kernel, (B * H,), q.device, ws, ml, y, D=D, D_PAD=d_pad, N_SPLITS=n_splits,
                SPLITS_PAD=max(2, _next_pow2(n_splits)), EARLY_LAUNCH=EARLY_LAUNCH, num_warps=4)
    return y


# --- the ops ---------------------------------------------------------------------------------------------------------


def _triton_ok(x: torch.Tensor, rows: int) -> bool:
    return (x.is_cuda or _interpret()) and rows <= MAX_ROWS and x.dtype in (torch.bfloat16, torch.float16)


@torch.library.custom_op("nemotron4::add_layernorm", mutates_args=())
def add_layernorm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + delta and LayerNorm1P(h) with the norm's weight and bias, one kernel for decode-sized inputs."""
    if not _triton_ok(x, x.numel() // x.shape[-1]):
        h = x + delta
        return h, torch_layernorm(h, weight, bias, eps)
    return triton_add_layernorm(x, delta, weight, bias, eps)


@add_layernorm.register_fake
def _(x, delta, weight, bias, eps):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("nemotron4::layernorm", mutates_args=())
def layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm1P(x), one kernel for decode-sized inputs."""
    if not _triton_ok(x, x.numel() // x.shape[-1]):
        return torch_layernorm(x, weight, bias, eps)
    return triton_add_layernorm(x, None, weight, bias, eps)[1]


@layernorm.register_fake
def _(x, weight, bias, eps):
    return torch.empty_like(x)


def _attention_triton_ok(q, k_cache, mask, cos, input_pos) -> bool:
    return ((q.is_cuda or _interpret()) and q.dtype in (torch.bfloat16, torch.float16) and q.shape[1] == 1
            and mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[1] == mask.shape[2] == 1
            and input_pos.numel() == 1 and cos.dim() == 2 and cos.shape[0] == 1 and q.shape[2] % k_cache.shape[1] == 0
            and q.stride(-1) == 1 and k_cache.dtype == q.dtype)


@torch.library.custom_op("nemotron4::decode_attention", mutates_args=())
def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, mask: torch.Tensor,
                     cos: torch.Tensor, sin: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """One new token's attention (q (B, 1, H, D) before RoPE) over the caches (B, KVH, S, D) under mask, slots up to
    input_pos; (B, 1, H * D)."""
    if not _attention_triton_ok(q, k_cache, mask, cos, input_pos):
        return torch_decode_attention(q, k_cache, v_cache, mask, cos, sin)
    return triton_decode_attention(q, k_cache, v_cache, mask, cos, sin, input_pos)


@decode_attention.register_fake
def _(q, k_cache, v_cache, mask, cos, sin, input_pos):
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2] * q.shape[3])


@torch.library.custom_op("nemotron4::decode_attention_write_kv", mutates_args=("k_cache", "v_cache"))
def decode_attention_write_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                              v_cache: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                              input_pos: torch.Tensor) -> torch.Tensor:
    """`decode_attention` that also stores this step's k (B, 1, KVH, D; RoPE'd here) and v at slot input_pos of the
    caches, in the same kernel (the RoPE of k and the two cache writes are otherwise two more kernels a layer)."""
    if not _attention_triton_ok(q, k_cache, mask, cos, input_pos) or k.stride(-1) != 1 or v.stride(-1) != 1:
        k_cache.index_copy_(2, input_pos, apply_rope(k, cos, sin).transpose(1, 2).to(k_cache.dtype))
        v_cache.index_copy_(2, input_pos, v.transpose(1, 2).to(v_cache.dtype))
        return torch_decode_attention(q, k_cache, v_cache, mask, cos, sin)
    return triton_decode_attention(q, k_cache, v_cache, mask, cos, sin, input_pos, k_new=k, v_new=v)


@decode_attention_write_kv.register_fake
def _(q, k, v, k_cache, v_cache, mask, cos, sin, input_pos):
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2] * q.shape[3])


# --- the modules -----------------------------------------------------------------------------------------------------


class FusedLayerNorm1P(LayerNorm1P):
    """LayerNorm1P through the fused kernel; `forward(x, delta)` normalises x + delta (the pending residual add)."""

    def forward(self, x: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
        if delta is None:
            return layernorm(x, self.weight, self.bias, self.eps)
        return add_layernorm(x, delta, self.weight, self.bias, self.eps)[1]


class FusedNormBlock(Block):
    """A Block whose residual adds run inside the norms' kernels. `forward(..., delta, carry=True)` takes the
    previous block's un-added feed-forward output `delta` and returns (h, this block's feed-forward output): the
    add is done by the next block's first norm (or the final norm). Without carry it is Block's forward."""

    def forward(self, x, cos, sin, mask=None, input_pos=None, delta=None, carry: bool = False):
        if not carry:
            return super().forward(x, cos, sin, mask, input_pos)
        an, fn = self.attention_norm, self.ffn_norm
        if delta is None:
            h, xn = x, layernorm(x, an.weight, an.bias, an.eps)
        else:
            h, xn = add_layernorm(x, delta, an.weight, an.bias, an.eps)
        h, xn = add_layernorm(h, self.attention(xn, cos, sin, mask, input_pos), fn.weight, fn.bias, fn.eps)
        return h, self.feed_forward(xn)


class FusedNormNemotron4(Nemotron4):
    """Nemotron4 over FusedNormBlocks, each block's last residual add carried into the next block's first norm."""

    def hidden_states(self, tokens, input_pos=None, mask=None):
        cos, sin = self.rope_at(tokens.shape[1], input_pos)
        h, delta = self.tok_embeddings(tokens), None
        for layer in self.layers:
            h, delta = layer(h, cos, sin, mask, input_pos, delta, True)
        return self.norm(h, delta)


def decode_attention_forward(attn, x, cos, sin, mask=None, input_pos=None):
    """`Attention.forward` of a decode step (one token, a cache, a mask) through `decode_attention`; None when the
    call is not one (the caller then takes its usual path)."""
    if attn.kv_cache is None or mask is None or input_pos is None or x.shape[1] != 1 or input_pos.numel() != 1:
        return None
    B = x.shape[0]
    q, k, v = attn.project_qkv(x)
    cache = attn.kv_cache
    if WRITE_KV and type(cache) is KVCache:
        y = decode_attention_write_kv(q, k, v, cache.k, cache.v, mask, cos, sin, input_pos)
    else:
        k_all, v_all = cache.update(input_pos, apply_rope(k, cos, sin).transpose(1, 2), v.transpose(1, 2))
        y = decode_attention(q, k_all, v_all, mask, cos, sin, input_pos)
    return attn.wo(y.view(B, 1, -1))


class DecodeAttention(FusedQKVAttention):
    """A fused-QKV attention whose decode steps go through `decode_attention` (prefill: the usual path)."""

    def forward(self, x, cos, sin, mask=None, input_pos=None):
        y = decode_attention_forward(self, x, cos, sin, mask, input_pos)
        return super().forward(x, cos, sin, mask, input_pos) if y is None else y


def fuse_decode_ops(model: Nemotron4) -> Nemotron4:
    """Install the fused norms (and the carried residual) and, on fused-QKV attentions (`quantize.fuse_qkv`), the
    decode attention; in place, parameters untouched."""
    for layer in model.layers:
        if type(layer) is Block:
            layer.__class__ = FusedNormBlock
        for norm in (layer.attention_norm, layer.ffn_norm):
            if type(norm) is LayerNorm1P:
                norm.__class__ = FusedLayerNorm1P
        if type(layer.attention) is FusedQKVAttention:
            layer.attention.__class__ = DecodeAttention
    if type(model.norm) is LayerNorm1P:
        model.norm.__class__ = FusedLayerNorm1P
    if type(model) is Nemotron4 and all(type(layer) is FusedNormBlock for layer in model.layers):
        model.__class__ = FusedNormNemotron4
    return model
