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


def _fp8_case(seed: int, n: int = 128, dim: int = 64, vocab: int = 256):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, dim, generator=g)
    w = torch.randn(vocab, dim, generator=g) * 0.1
    t = torch.randint(0, vocab, (n,), generator=g)
    t[::7] = -100
    return h, w, t


def _loss_and_grads(h, w, t, **kw):
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = linear_cross_entropy(hh, ww, t, **kw)
    (loss * 1.7).backward()
    return loss.detach(), hh.grad, ww.grad


def test_fp8_gemms_close_to_fp32_and_not_equal():
    """fp8=True (train.fp8's output projection): e4m3 hidden states and weight, e5m2 logits' gradient, one weight
    GEMM over all tokens in backward. Close to the exact loss and gradients, not equal to them (fp8 ran); ignored
    positions get no gradient; chunking does not change the result (the weight's scale is per call)."""
    h, w, t = _fp8_case(0)
    ref = _loss_and_grads(h, w, t, chunk_size=32)
    got = _loss_and_grads(h, w, t, chunk_size=32, fp8=True)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-2, atol=0)
    assert got[0] != ref[0]
    for a, b in zip(got[1:], ref[1:], strict=True):
        assert a.dtype == torch.float32
        rel = ((a - b).norm() / b.norm()).item()
        assert 1e-4 < rel < 0.08, rel
    assert torch.all(got[1][::7] == 0)
    whole = _loss_and_grads(h, w, t, chunk_size=128, fp8=True)
    torch.testing.assert_close(whole[0], got[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(whole[2], got[2], rtol=1e-5, atol=1e-7)


def test_fp8_falls_back_where_shapes_are_not_multiples_of_16():
    h, w, t = _fp8_case(1, n=120)  # 120 tokens: the weight GEMM's K must be a multiple of 16
    ref = _loss_and_grads(h, w, t, chunk_size=32)
    got = _loss_and_grads(h, w, t, chunk_size=32, fp8=True)
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("gemms", [("logits",), ("dgrad",), ("wgrad",), ("dgrad", "wgrad"), ("logits", "dgrad")])
def test_fp8_gemm_subsets_each_change_only_their_own_result(gemms):
    """fp8 = the names of some GEMMs (bench/train.py's RECIPE:gemms=... variants): those run in fp8, the others in
    bf16. Each result is close to the exact one, and differs from the all-bf16 result where its own GEMM ran in fp8
    (the loss: logits, seen at 5e-4; the hidden states' gradient: dgrad, 3e-2; the weight's: wgrad, 3e-2), and
    not otherwise (at most 1e-5 for the loss; 4e-3 for a gradient whose GEMM is bf16 but whose logits were fp8)."""
    h, w, t = _fp8_case(2)
    ref = _loss_and_grads(h, w, t, chunk_size=32)
    got = _loss_and_grads(h, w, t, chunk_size=32, fp8=gemms)
    bf16 = _loss_and_grads(h.bfloat16().float(), w.bfloat16().float(), t, chunk_size=32)
    for i, (own, threshold) in enumerate((("logits", 1e-4), ("dgrad", 1e-2), ("wgrad", 1e-2))):
        assert ((got[i] - ref[i]).norm() / ref[i].norm()).item() < 0.08, (i, gemms)
        from_bf16 = ((got[i] - bf16[i]).norm() / bf16[i].norm()).item()
        assert (from_bf16 > threshold) == (own in gemms), (own, gemms, from_bf16)


def test_fp8_gemm_names_are_checked():
    h, w, t = _fp8_case(3)
    with pytest.raises(ValueError, match="fp8 GEMMs must be among logits, dgrad, wgrad; got output"):
        linear_cross_entropy(h.requires_grad_(), w, t, fp8=("output",))
    with pytest.raises(ValueError, match="not one string; got 'logits'"):
        linear_cross_entropy(h, w, t, fp8="logits")
    with torch.no_grad(), pytest.raises(ValueError, match="got wgrads"):  # evaluation checks the names too
        linear_cross_entropy(h, w, t, fp8=("wgrads",))


def test_output_weight_cast_to_e4m3_once_inside_the_step_context(monkeypatch):
    """Inside `output_weight_e4m3_once` (the training step's context under "+output") the FP8 path casts the output
    weight once for all of the step's micro-batches, recasts it once the tensor changes (an optimizer update bumps
    its version), and gives the same results as a cast per call; outside, every call casts."""
    from nemotron4.ops import cross_entropy

    casts = []
    original = cross_entropy._to_e4m3

    def counting(x):
        casts.append(x.shape)
        return original(x)

    monkeypatch.setattr(cross_entropy, "_to_e4m3", counting)
    h, w, t = _fp8_case(4)
    w = w.clone().requires_grad_()

    def micro_batches():
        out = []
        for half in (slice(0, 64), slice(64, 128)):
            hh = h[half].clone().requires_grad_()
            loss = linear_cross_entropy(hh, w, t[half], chunk_size=32, fp8=True)
            loss.backward()
            out.append((loss.detach(), hh.grad))
        return out

    per_call = micro_batches()
    assert casts.count(w.shape) == 2
    casts.clear()
    with cross_entropy.output_weight_e4m3_once():
        once = micro_batches()
        assert casts.count(w.shape) == 1
        with torch.no_grad():
            w.mul_(1.5)  # the optimizer's in-place update: a new version
        micro_batches()
        assert casts.count(w.shape) == 2
    for (loss_a, grad_a), (loss_b, grad_b) in zip(per_call, once, strict=True):
        torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
        torch.testing.assert_close(grad_b, grad_a, rtol=0, atol=0)
    assert cross_entropy._weight_casts is None  # dropped on exit
