"""The fused linear cross-entropy under tensor parallelism: a vocabulary-parallel loss through the output projection
that never holds the (tokens x vocab) logits, nor even (tokens x vocab / tp) of them (Megatron's vocab-parallel
cross-entropy, fused with the projection and chunked over tokens as `nemotron4.ops.cross_entropy`).

TP rank r holds rows [r V / tp, (r + 1) V / tp) of the output weight W. The final-normed hidden states arrive
sharded on the sequence (sequence parallelism: (B, T / tp, dim) per rank) and are all-gathered once, as the output
projection's ColwiseParallel would; then, per chunk of c tokens:

    z       = h_c @ W_r^T                              (c, V / tp) fp32: the only large buffer, one chunk at a time
    m       = all-reduce MAX of the local row max     (c,)
    s, z_t  = all-reduce SUM of the local sum exp(z - m) and of the target's logit (0 on ranks that do not own the
              target): one all-reduce of (2, c)
    loss   += sum over the valid tokens of m + log s - z_t
    G       = softmax - onehot on this rank's columns (0 at ignored tokens)
    dh     += G @ W_r   (partial: summed over the ranks below)     dW_r += G^T h_c   (complete: every rank sees
                                                                                       every token)

After the last chunk the partial dh is reduce-scattered back onto the sequence (each rank gets its own tokens'
gradient, summed over the vocabulary shards). As in one process, both gradients are made in forward and backward
only scales them by d(loss) / n_valid (the same on every TP rank: the loss is replicated).

Why gather the hidden states rather than compute the loss on each rank's own T / tp tokens: those tokens need every
vocabulary row, i.e. an all-gather of W (V x dim: 3 GB in bf16 at 15B, per micro-batch) instead of h (tokens x dim:
50 MB at seq 4096); with the gather each rank does 1 / tp of the projection's FLOPs over all tokens. The traffic is
that of the unfused path (ColwiseParallel + `loss_parallel`): an all-gather and a reduce-scatter of tokens x dim,
plus 3 x tokens numbers for the softmax statistics. The gathered tokens are kept rank-major ((tp, B, T / tp)
flattened; the targets are permuted to match), so neither collective needs a copy to reorder them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard

from nemotron4.model import Nemotron4
from nemotron4.ops.compiled import on_device
from nemotron4.ops.cross_entropy import IGNORE_INDEX, _add_weight_grad

__all__ = ["vocab_parallel_cross_entropy_loss", "vocab_parallel_linear_cross_entropy"]


def _local_logits(hc: torch.Tensor, w: torch.Tensor, acc: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's (c, V / tp) logits in `acc` and their row max."""
    logits = (hc @ w.T).to(acc)
    return logits, logits.amax(dim=-1)


def _local_sums(logits: torch.Tensor, m: torch.Tensor, local_t: torch.Tensor, owned: torch.Tensor) -> torch.Tensor:
    """(2, c): sum of exp(logits - m) over this rank's columns, and the target's logit where this rank owns it."""
    sum_exp = (logits - m[:, None]).exp().sum(dim=-1)
    z_t = torch.where(owned, logits.gather(1, local_t[:, None]).squeeze(1), 0.0)
    return torch.stack([sum_exp, z_t])


def _local_grad(logits: torch.Tensor, lse: torch.Tensor, local_t: torch.Tensor, owned: torch.Tensor,
                vc: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """d(summed loss)/d(local logits) = softmax - onehot on this rank's columns, zero at ignored tokens."""
    grad = (logits - lse[:, None]).exp()
    grad = grad.scatter_add(1, local_t[:, None], -owned[:, None].to(grad.dtype))
    return (grad * vc[:, None]).to(dtype)


def _loss_and_grads(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_start: int, group,
                    seq_sharded: bool, chunk_size: int, compute_dtype, grads: tuple[bool, bool]):
    """The summed loss over valid tokens, their count, and (where `grads` asks, for h and weight) d(summed loss)/dh,
    this rank's tokens summed over the TP group, and d(summed loss)/d(weight) for this rank's rows (fp32).

    h: (B, T / tp, dim), this rank's tokens (seq_sharded), or (B, T, dim), every token; weight: (V / tp, dim), this
    rank's vocabulary rows from `vocab_start`; targets: (B, T), the same on every rank."""
    cdt = compute_dtype or h.dtype
    acc = torch.promote_types(cdt, torch.float32)  # softmax / loss / weight-grad accumulation: >= fp32
    w = weight.to(cdt)
    hc_all, t_all = _tokens(h.to(cdt), targets, group, seq_sharded)
    valid = t_all != IGNORE_INDEX
    local_t_all = t_all - vocab_start
    owned_all = valid & (local_t_all >= 0) & (local_t_all < w.shape[0])
    local_t_all = local_t_all.masked_fill(~owned_all, 0)
    loss = torch.zeros((), dtype=acc, device=h.device)
    grad_h = torch.empty_like(hc_all) if grads[0] else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if grads[1] else None
    for start in range(0, hc_all.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        hc, local_t, owned, vc = hc_all[sl], local_t_all[sl], owned_all[sl], valid[sl]
        logits, m = on_device(_local_logits, hc, w, acc)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        sums = on_device(_local_sums, logits, m, local_t, owned)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        lse = m + sums[0].log()
        loss += ((lse - sums[1]) * vc).sum()
        if grads[0] or grads[1]:
            grad = on_device(_local_grad, logits, lse, local_t, owned, vc, cdt)
            if grad_h is not None:
                grad_h[sl] = grad @ w
            if grad_w is not None:
                grad_w = _add_weight_grad(grad_w, grad, hc)
    if grad_h is not None:
        grad_h = _token_grads(grad_h, h.shape, group, seq_sharded)
    return loss, valid.sum().clamp(min=1).to(acc), grad_h, grad_w


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, h, weight, targets, vocab_start, group, seq_sharded, chunk_size, compute_dtype
    ) -> torch.Tensor:
        loss, n_valid, grad_h, grad_w = _loss_and_grads(h, weight, targets, vocab_start, group, seq_sharded,
                                                        chunk_size, compute_dtype, tuple(ctx.needs_input_grad[:2]))
        scale = 1.0 / n_valid
        empty = torch.empty(0)
        ctx.save_for_backward(grad_h if grad_h is not None else empty, grad_w if grad_w is not None else empty, scale)
        ctx.has_grads = grad_h is not None, grad_w is not None
        ctx.h_dtype, ctx.w_dtype = h.dtype, weight.dtype
        return loss * scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_h, grad_w, scale = ctx.saved_tensors
        g = grad_out * scale
        dh = (grad_h.to(g.dtype) * g).to(ctx.h_dtype) if ctx.has_grads[0] else None
        dw = (grad_w * g).to(ctx.w_dtype) if ctx.has_grads[1] else None
        return dh, dw, None, None, None, None, None, None


def _tokens(h: torch.Tensor, targets: torch.Tensor, group, seq_sharded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token's hidden state (N, dim) and target (N,), in the same order. Sequence-sharded h is all-gathered
    rank-major: token (r, b, t) is rank r's local token (b, t); the targets are permuted to that order."""
    dim = h.shape[-1]
    if not seq_sharded:
        return h.reshape(-1, dim), targets.reshape(-1)
    tp = dist.get_world_size(group)
    B, T_local = h.shape[0], h.shape[1]
    gathered = h.new_empty((tp * B * T_local, dim))
    dist.all_gather_into_tensor(gathered, h.reshape(-1, dim).contiguous(), group=group)
    return gathered, targets.reshape(B, tp, T_local).transpose(0, 1).reshape(-1)


def _token_grads(grad_h: torch.Tensor, shape: torch.Size, group, seq_sharded: bool) -> torch.Tensor:
    """This rank's share of the partial (N, dim) hidden-state gradient, summed over the TP group: its own tokens
    (reduce-scatter of the rank-major rows) or, for replicated h, all of them (all-reduce)."""
    if not seq_sharded:
        dist.all_reduce(grad_h, op=dist.ReduceOp.SUM, group=group)
        return grad_h.view(shape)
    out = grad_h.new_empty((grad_h.shape[0] // dist.get_world_size(group), grad_h.shape[1]))
    dist.reduce_scatter_tensor(out, grad_h, op=dist.ReduceOp.SUM, group=group)
    return out.view(shape)


def vocab_parallel_linear_cross_entropy(
    h: torch.Tensor, weight: DTensor, targets: torch.Tensor, chunk_size: int = 4096,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight.T` against `targets` (-100 ignored), `weight` sharded on the vocabulary
    over a 1-D TP mesh (a `Shard(0)` DTensor, e.g. the ColwiseParallel output projection; under FSDP2 the
    all-gathered one). h: (B, T, dim), a DTensor on the same mesh, `Shard(1)` (sequence parallel) or `Replicate()`,
    or a plain tensor holding every token (the same on every rank); targets: (B, T), the same on every rank.
    Returns the loss as a plain scalar, the same on every rank; its gradients reach h and weight as DTensors of
    their placements. Same value and gradients as `nemotron4.ops.cross_entropy.linear_cross_entropy` on the full
    tensors; compute_dtype as there (default: the autocast dtype on CUDA, else h's)."""
    mesh = weight.device_mesh
    if mesh.ndim != 1 or tuple(weight.placements) != (Shard(0),):
        raise ValueError(f"the output weight must be Shard(0) on a 1-D mesh, got {weight.placements} on {mesh}")
    if isinstance(h, DTensor):
        if h.device_mesh != mesh or tuple(h.placements) not in ((Shard(1),), (Replicate(),)):
            raise ValueError(f"hidden states must be Shard(1) or Replicate() on the weight's mesh, got {h.placements}")
        seq_sharded, h_local = h.placements[0] == Shard(1), h.to_local()
    else:
        seq_sharded, h_local = False, h
    group, rank = mesh.get_group(), mesh.get_local_rank()
    w_local = weight.to_local()
    vocab_start = rank * -(-weight.shape[0] // mesh.size())  # Shard(0) splits as torch.chunk: ceil(V / tp) rows
    if h_local.is_cuda and torch.is_autocast_enabled("cuda") and compute_dtype is None:
        compute_dtype = torch.get_autocast_dtype("cuda")
    args = (targets, vocab_start, group, seq_sharded, chunk_size, compute_dtype)
    with torch.autocast(h_local.device.type, enabled=False):
        if torch.is_grad_enabled() and (h_local.requires_grad or w_local.requires_grad):
            return _VocabParallelLinearCrossEntropy.apply(h_local, w_local, *args)
        loss, n_valid, _, _ = _loss_and_grads(h_local, w_local, *args, grads=(False, False))  # evaluation
        return loss / n_valid


def vocab_parallel_cross_entropy_loss(model: Nemotron4, batch: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """`nemotron4.train.fast.fused_cross_entropy_loss` for a tensor-parallel model (`apply_tp`): same value and
    gradients as the single-process loss, the logits (chunk x vocab / tp) per rank one chunk at a time."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    h = model.hidden_states(inputs)  # (B, T, dim) DTensor, Shard(1): the final norm is sequence parallel
    return vocab_parallel_linear_cross_entropy(h, model.output.weight, targets, chunk_size=chunk_size)
