"""Cross-entropy through the output projection without materialising the (tokens x vocab) logits.

With a 256k vocabulary, full logits for one 4096-token sequence are 1 B elements (4 GiB in fp32, plus as much for
their gradient). This computes the projection, the loss and both gradients chunk by chunk in the forward pass
(the approach of Liger-Kernel's fused linear cross-entropy): the backward pass only scales the stored gradients.
Extra memory: one chunk of fp32 logits, the gradient of the output weight (fp32, vocab x dim: 6.3 GB at 15B)
and a compute-dtype copy of the weight, held from forward to backward; no logits are recomputed. Without grad
mode (evaluation) only the loss is computed.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


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


_compiled_chunk = None


def _chunk(hc, w, tc, vc, acc):
    """On GPU the chunk's elementwise work (upcast, logsumexp, exp, one-hot, mask, downcast) is fused by
    torch.compile into a few passes over the (chunk x vocab) buffer instead of about ten."""
    global _compiled_chunk
    if not hc.is_cuda:
        return _chunk_eager(hc, w, tc, vc, acc)
    if _compiled_chunk is None:
        _compiled_chunk = torch.compile(_chunk_eager, dynamic=False)
    return _compiled_chunk(hc, w, tc, vc, acc)


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
        ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int, compute_dtype
    ) -> torch.Tensor:
        # h (N, dim) in its dtype, weight (vocab, dim) fp32 master or bf16, targets (N,)
        cdt = compute_dtype or h.dtype
        acc = torch.promote_types(cdt, torch.float32)  # softmax / loss / weight-grad accumulation: >= fp32
        hc_all, w = h.to(cdt), weight.to(cdt)
        valid = targets != IGNORE_INDEX
        n_valid = valid.sum().clamp(min=1)
        safe_targets = targets.masked_fill(~valid, 0)
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
        scale = 1.0 / n_valid.to(acc)
        ctx.save_for_backward(grad_h, grad_w if grad_w is not None else torch.empty(0), scale)
        ctx.has_grad_w = grad_w is not None
        ctx.h_dtype, ctx.w_dtype = h.dtype, weight.dtype
        return loss * scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_h, grad_w, scale = ctx.saved_tensors
        g = grad_out * scale
        dh = (grad_h.to(g.dtype) * g).to(ctx.h_dtype)
        dw = (grad_w * g).to(ctx.w_dtype) if ctx.has_grad_w else None
        return dh, dw, None, None, None


def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight.T` against `targets` (positions equal to -100 ignored).

    h: (..., dim); weight: (vocab, dim); targets: (...). compute_dtype: the matmul dtype (e.g. bf16 over fp32
    master weights; default h's dtype); log-softmax is always fp32.
    """
    if h.is_cuda and torch.is_autocast_enabled("cuda") and compute_dtype is None:
        compute_dtype = torch.get_autocast_dtype("cuda")
    h2, t1 = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    with torch.autocast(h.device.type, enabled=False):
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            return _LinearCrossEntropy.apply(h2, weight, t1, chunk_size, compute_dtype)
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
