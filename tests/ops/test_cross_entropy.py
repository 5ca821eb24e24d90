import pytest
import torch
import torch.nn.functional as F

from nemotron4.ops.cross_entropy import linear_cross_entropy


def reference(h, w, t):
    return F.cross_entropy((h @ w.T).flatten(0, -2), t.flatten())


def test_linear_cross_entropy_equals_plain_loss_and_grads():
    torch.manual_seed(0)
    h = torch.randn(3, 37, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(101, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 101, (3, 37))
    ref = reference(h, w, t)
    gh, gw = torch.autograd.grad(ref * 2.5, (h, w))
    for chunk in (1, 7, 64, 1000):  # chunks that split rows unevenly, and one chunk holding everything
        hh, ww = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        loss = linear_cross_entropy(hh, ww, t, chunk_size=chunk)
        (loss * 2.5).backward()
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hh.grad, gh, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ww.grad, gw, rtol=1e-10, atol=1e-12)


def test_ignore_index_and_frozen_weight():
    torch.manual_seed(1)
    h = torch.randn(20, 8, requires_grad=True)
    w = torch.randn(30, 8)
    t = torch.randint(0, 30, (20,))
    t[::3] = -100
    loss = linear_cross_entropy(h, w, t, chunk_size=6)
    ref = F.cross_entropy(h @ w.T, t, ignore_index=-100)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    (gh,) = torch.autograd.grad(F.cross_entropy(h @ w.T, t), h)
    torch.testing.assert_close(h.grad, gh, rtol=1e-5, atol=1e-6)


def test_no_grad_evaluation_computes_only_the_loss():
    torch.manual_seed(2)
    h, w = torch.randn(2, 9, 8, requires_grad=True), torch.randn(40, 8, requires_grad=True)
    t = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        loss = linear_cross_entropy(h, w, t, chunk_size=4)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, reference(h, w, t).detach())


def _weight_grad_case(device):
    g = torch.Generator().manual_seed(3)
    grad = torch.randn(256, 96, generator=g).to(device, torch.bfloat16)
    hc = torch.randn(256, 40, generator=g).to(device, torch.bfloat16)
    acc = torch.randn(96, 40, generator=g).to(device)
    return acc, grad, hc, acc + grad.float().T @ hc.float()


def test_weight_grad_accumulates_in_fp32():
    """The chunked weight gradient lands in the fp32 accumulator (CPU: bf16 product, upcast, add)."""
    from nemotron4.ops.cross_entropy import _add_weight_grad

    acc, grad, hc, ref = _weight_grad_case("cpu")
    out = _add_weight_grad(acc, grad, hc)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-1)  # the product was rounded to bf16 once


@pytest.mark.gpu
def test_weight_grad_fp32_output_gemm_on_cuda():
    """On CUDA one GEMM reads the fp32 accumulator and writes the sum: closer to fp32 than the bf16 product."""
    from nemotron4.ops.cross_entropy import _add_weight_grad

    acc, grad, hc, ref = _weight_grad_case("cuda")
    out = _add_weight_grad(acc.clone(), grad, hc)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-3)
