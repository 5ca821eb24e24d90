"""Cross-entropy through the output projection without materialising the (tokens x vocab) logits.

With a 256k vocabulary, full logits for one 4096-token sequence are 1 B elements (4 GiB in fp32, plus as much for
their gradient). This computes the projection, the loss and both gradients chunk by chunk in the forward pass
(the approach of Liger-Kernel's fused linear cross-entropy): the backward pass only scales the stored gradients.
Extra memory: one chunk of fp32 logits, the gradient of the output weight (fp32, vocab x dim: 6.3 GB at 15B)
and a compute-dtype copy of the weight, held from forward to backward; no logits are recomputed. Without grad
mode (evaluation) only the loss is computed.

`fp8=True` (`train.fp8` on, nemotron4.train.fp8) runs the three GEMMs of each chunk in FP8 on tensor cores
(`torch._scaled_mm`, fp32 accumulation): the hidden states and the output weight in e4m3 with one scale per tensor
from its absolute maximum (torchao's tensorwise recipe; the weight is cast once per call, or once per training
step inside `output_weight_e4m3_once`), the logits' gradient softmax - onehot in e5m2 with a fixed scale (its
magnitude is at most 1, so no amax pass: the scaled cast fuses into the softmax kernel). The logits GEMM
accumulates precisely by default (`fast_accum=False`): Hopper's fast accumulation there moved a 100-step loss
curve 0.93-1.29% above bf16's, precise accumulation 0.30% (bench/results/train_fp8_h200_s7a.json). The weight
gradient is one GEMM per call over all its tokens (K = tokens, not a chunk), run in backward with the loss scale
folded into its scale and written once in fp32, instead of an fp32 accumulator read and written per chunk. It
needs the dimension, vocabulary and token count divisible by 16 (otherwise the bf16 path runs); evaluation stays
in the compute dtype. `fp8` may instead name some of the three GEMMs (`FP8_GEMMS`: logits, dgrad, wgrad; the
others then run in bf16, the weight's gradient accumulated in fp32 per chunk as without fp8): bench/train.py's
`tensorwise+output:gemms=...` variants, which tell which GEMM moves the loss curve (with fast accumulation in the
logits GEMM, session 6: all three in FP8 end 0.93-1.05% above bf16 after 100 steps; the logits GEMM alone 1.58%,
dgrad alone 0.48%, wgrad alone 0.33%, bench/results/train_fp8_gemms_h200_s6.json; the blocks alone 0.07%).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator

import torch

from nemotron4.ops.compiled import on_device

IGNORE_INDEX = -100
E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
GRAD_SCALE = 2.0**15  # |softmax - onehot| <= 1: e5m2 (max 57344) keeps it, and p ~ 1/vocab stays a normal number


def _chunk_eager(
    hc: torch.Tensor, w: torch.Tensor, tc: torch.Tensor, vc: torch.Tensor, acc: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss of one chunk, and d(summed loss)/d(logits) = softmax - onehot (zero where ignored)."""
    logits = (hc @ w.T).to(acc)  # (c, vocab): the only large buffer, one chunk at a time
    lse = torch.logsumexp(logits, dim=-1)
    loss = ((lse - logits.gather(1, tc[:, None]).squeeze(1)) * vc).sum()
    grad = (logits - lse[:, None]).exp()
    grad = grad - torch.nn.functional.one_hot(tc, logits.shape[-1]).to(acc)
    return loss, (grad * vc[:, None]).to(hc.dtype)


def _chunk(hc, w, tc, vc, acc):
    """On GPU the chunk's elementwise work (upcast, logsumexp, exp, one-hot, mask, downcast) is fused by
    torch.compile into a few passes over the (chunk x vocab) buffer instead of about ten."""
    return on_device(_chunk_eager, hc, w, tc, vc, acc)


def _to_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x in e4m3 scaled by max / amax (one scale for the tensor), row-major and transposed (fp8 GEMMs on Hopper
    read both operands K-major), and the inverse scale that `_scaled_mm` multiplies back."""
    fmax = torch.finfo(E4M3).max
    scale = fmax / x.abs().amax().float().clamp(min=1e-12)
    x8 = (x.float() * scale).clamp(-fmax, fmax).to(E4M3)
    return x8, x8.t().contiguous(), scale.reciprocal()


_weight_casts: dict | None = None  # inside `output_weight_e4m3_once`: (id, version) -> the weight's e4m3 cast


@contextlib.contextmanager
def output_weight_e4m3_once() -> Iterator[None]:
    """Inside, the FP8 path casts an output weight to e4m3 once (reused while the tensor and its version are the
    same), not in every call: a training step's micro-batches share one cast, as the blocks' FP8 weights are
    cast once per step (nemotron4.train.fp8). The cast is dropped on exit."""
    global _weight_casts
    outer, _weight_casts = _weight_casts, {}
    try:
        yield
    finally:
        _weight_casts = outer


def _weight_e4m3(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if _weight_casts is None:
        return on_device(_to_e4m3, weight)
    key = (id(weight), weight._version)
    if key not in _weight_casts:
        _weight_casts.clear()  # one weight at a time: a changed version replaces the stale cast
        _weight_casts[key] = on_device(_to_e4m3, weight)
    return _weight_casts[key]


FP8_GEMMS = ("logits", "dgrad", "wgrad")  # h @ W.T, grad @ W (the hidden states' gradient), grad.T @ h (W's)


def _chunk_fp8(logits: torch.Tensor, tc: torch.Tensor, vc: torch.Tensor, e5m2: bool, bf16: bool):
    """Summed loss of one chunk from its logits, and d(summed loss)/d(logits) = softmax - onehot (zero where
    ignored): where `e5m2`, times GRAD_SCALE in e5m2, row-major and transposed; where `bf16`, in bf16."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    loss = ((lse - x.gather(1, tc[:, None]).squeeze(1)) * vc).sum()
    grad = ((x - lse[:, None]).exp() - torch.nn.functional.one_hot(tc, x.shape[-1]).float()) * vc[:, None]
    g8 = (grad * GRAD_SCALE).to(E5M2) if e5m2 else None
    return loss, g8, g8.t().contiguous() if e5m2 else None, grad.to(torch.bfloat16) if bf16 else None


def fp8_applies(h: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the FP8 path's GEMM shapes are legal: dim, vocabulary and tokens divisible by 16."""
    return h.shape[-1] % 16 == 0 and weight.shape[0] % 16 == 0 and h.reshape(-1, h.shape[-1]).shape[0] % 16 == 0


def _forward_fp8(ctx, h, weight, targets, valid, chunk_size, gemms: frozenset[str], fast_accum: bool):
    """The chunk loop of `_LinearCrossEntropy.forward` with the GEMMs named in `gemms` in fp8 (the others in bf16);
    returns the summed loss and the hidden states' gradient, saves what backward needs for the weight's."""
    h8, h8t, sh = on_device(_to_e4m3, h) if gemms & {"logits", "wgrad"} else (None, None, None)
    w8, w8t, sw = _weight_e4m3(weight) if gemms & {"logits", "dgrad"} else (None, None, None)
    wgrad = ctx.needs_input_grad[1]
    bf16_wgrad = wgrad and "wgrad" not in gemms
    hb = h.to(torch.bfloat16) if "logits" not in gemms or bf16_wgrad else None
    wb = weight.to(torch.bfloat16) if not gemms >= {"logits", "dgrad"} else None
    e5m2, bf16 = bool(gemms & {"dgrad", "wgrad"}), "dgrad" not in gemms or bf16_wgrad
    inv_g = torch.tensor(1.0 / GRAD_SCALE, device=h.device)
    n = h.shape[0]
    loss = torch.zeros((), dtype=torch.float32, device=h.device)
    grad_h = torch.empty(h.shape, dtype=torch.bfloat16, device=h.device)
    gt = torch.empty((weight.shape[0], n), dtype=E5M2, device=h.device) if wgrad and "wgrad" in gemms else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if wgrad and gt is None else None
    for start in range(0, n, chunk_size):
        sl = slice(start, start + chunk_size)
        if "logits" in gemms:
            logits = torch._scaled_mm(h8[sl], w8.t(), sh, sw, out_dtype=torch.bfloat16, use_fast_accum=fast_accum)
        else:
            logits = hb[sl] @ wb.T
        loss_sum, g8, g8t, gb = on_device(_chunk_fp8, logits, targets[sl], valid[sl], e5m2, bf16)
        del logits
        loss += loss_sum
        if "dgrad" in gemms:
            grad_h[sl] = torch._scaled_mm(g8, w8t.t(), inv_g, sw, out_dtype=torch.bfloat16)
        else:
            grad_h[sl] = gb @ wb
        if gt is not None:
            gt[:, sl] = g8t
        elif grad_w is not None:
            grad_w = _add_weight_grad(grad_w, gb, hb[sl])
        del g8, g8t, gb
    ctx.fp8_saved = (gt, h8t if gt is not None else None, sh, grad_w)
    return loss, grad_h


def _add_weight_grad(grad_w: torch.Tensor, grad: torch.Tensor, hc: torch.Tensor) -> torch.Tensor:
    """grad_w + grad.T @ hc, accumulated in grad_w's dtype. On CUDA with bf16/fp16 inputs and an fp32 accumulator,
    one GEMM reads the accumulator and writes the sum in fp32 (cuBLAS's epilogue) instead of a half-precision
    (vocab x dim) product, its upcast and an add: three passes over 1.6-6 GB per chunk saved."""
    if grad.is_cuda and grad_w.dtype == torch.float32 and grad.dtype in (torch.bfloat16, torch.float16):
        return torch.addmm(grad_w, grad.T, hc, out_dtype=torch.float32)
    return grad_w.add_((grad.T @ hc).to(grad_w.dtype))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int, compute_dtype,
        fp8: frozenset[str] = frozenset(), fast_accum: bool = False,
    ) -> torch.Tensor:
        # h (N, dim) in its dtype, weight (vocab, dim) fp32 master or bf16, targets (N,)
        cdt = compute_dtype or h.dtype
        acc = torch.promote_types(cdt, torch.float32)  # softmax / loss / weight-grad accumulation: >= fp32
        valid = targets != IGNORE_INDEX
        n_valid = valid.sum().clamp(min=1)
        safe_targets = targets.masked_fill(~valid, 0)
        ctx.h_dtype, ctx.w_dtype, ctx.fp8 = h.dtype, weight.dtype, bool(fp8)
        if fp8:
            loss, grad_h = _forward_fp8(ctx, h, weight, safe_targets, valid, chunk_size, fp8, fast_accum)
            scale = 1.0 / n_valid.to(torch.float32)
            ctx.save_for_backward(grad_h, scale)
            ctx.has_grad_w = ctx.needs_input_grad[1]
            return loss * scale
        hc_all, w = h.to(cdt), weight.to(cdt)
        loss = torch.zeros((), dtype=acc, device=h.device)
        grad_h = torch.empty_like(hc_all)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if ctx.needs_input_grad[1] else None
        for start in range(0, h.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            hc, tc, vc = hc_all[sl], safe_targets[sl], valid[sl]
            loss_sum, grad = _chunk(hc, w, tc, vc, acc)
            loss += loss_sum
            grad_h[sl] = grad @ w
            if grad_w is not None:
                grad_w = _add_weight_grad(grad_w, grad, hc)
            del grad  # not alive while the next chunk is computed (one chunk's bf16 gradient: 2 GB at 4096 x 256k)
        scale = 1.0 / n_valid.to(acc)
        ctx.save_for_backward(grad_h, grad_w if grad_w is not None else torch.empty(0), scale)
        ctx.has_grad_w = grad_w is not None
        return loss * scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        if ctx.fp8:
            grad_h, scale = ctx.saved_tensors
            gt, h8t, sh, grad_w = ctx.fp8_saved
            ctx.fp8_saved = None
            g = grad_out.float() * scale
            dh = (grad_h.float() * g).to(ctx.h_dtype)
            dw = None
            if ctx.has_grad_w and gt is not None:  # all tokens at once: (vocab, tokens) x (tokens, dim), scaled
                dw = torch._scaled_mm(gt, h8t.t(), (g / GRAD_SCALE).reshape(()), sh, out_dtype=torch.float32)
                dw = dw.to(ctx.w_dtype)
            elif ctx.has_grad_w:  # the weight's GEMM in bf16: accumulated over the chunks in fp32
                dw = (grad_w * g).to(ctx.w_dtype)
            return dh, dw, None, None, None, None, None
        grad_h, grad_w, scale = ctx.saved_tensors
        g = grad_out * scale
        dh = (grad_h.to(g.dtype) * g).to(ctx.h_dtype)
        dw = (grad_w * g).to(ctx.w_dtype) if ctx.has_grad_w else None
        return dh, dw, None, None, None, None, None


def fp8_gemms(fp8: bool | Collection[str]) -> frozenset[str]:
    """Which of FP8_GEMMS run in FP8: all three for True (train.fp8's "+output"), none for False, or those named
    (bench/train.py's RECIPE:gemms=... variants, which separate each GEMM's effect on the loss curve)."""
    if fp8 is True or fp8 is False:
        return frozenset(FP8_GEMMS if fp8 else ())
    if isinstance(fp8, str):
        raise ValueError(f"fp8 GEMMs are given as a collection of names, not one string; got {fp8!r}")
    unknown = set(fp8) - set(FP8_GEMMS)
    if unknown:
        raise ValueError(f"fp8 GEMMs must be among {', '.join(FP8_GEMMS)}; got {', '.join(sorted(unknown))}")
    return frozenset(fp8)


def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    compute_dtype: torch.dtype | None = None,
    fp8: bool | Collection[str] = False,
    fast_accum: bool = False,
) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight.T` against `targets` (positions equal to -100 ignored).

    h: (..., dim); weight: (vocab, dim); targets: (...). compute_dtype: the matmul dtype (e.g. bf16 over fp32
    master weights; default h's dtype); log-softmax is always fp32. fp8: the training GEMMs in FP8 (module
    docstring; where `fp8_applies`), True for all three or the names of some (`fp8_gemms`); evaluation (no grad)
    is unaffected. fast_accum: the FP8 logits GEMM with Hopper's fast accumulation (torchao's choice for a
    forward GEMM; faster, but it moves the loss curve: module docstring); default False, cuBLAS's precise
    accumulation. The gradient GEMMs never use it.
    """
    if h.is_cuda and torch.is_autocast_enabled("cuda") and compute_dtype is None:
        compute_dtype = torch.get_autocast_dtype("cuda")
    h2, t1 = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    gemms = fp8_gemms(fp8)  # names checked on every call, evaluation too
    with torch.autocast(h.device.type, enabled=False):
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            fp8 = gemms if fp8_applies(h2, weight) else frozenset()
            return _LinearCrossEntropy.apply(h2, weight, t1, chunk_size, compute_dtype, fp8, fast_accum)
        return _loss_only(h2, weight, t1, chunk_size, compute_dtype)  # evaluation: no gradient buffers


def _loss_only(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int, compute_dtype
) -> torch.Tensor:
    cdt = compute_dtype or h.dtype
    acc = torch.promote_types(cdt, torch.float32)
    hc_all, w = h.to(cdt), weight.to(cdt)
    valid = targets != IGNORE_INDEX
    safe = targets.masked_fill(~valid, 0)
    total = torch.zeros((), dtype=acc, device=h.device)
    for start in range(0, h.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        logits = (hc_all[sl] @ w.T).to(acc)
        nll = torch.logsumexp(logits, dim=-1) - logits.gather(1, safe[sl][:, None]).squeeze(1)
        total += (nll * valid[sl]).sum()
    return total / valid.sum().clamp(min=1).to(acc)
