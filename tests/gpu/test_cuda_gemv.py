"""The CUDA C++ int8 GEMV (nemotron4.inference.cuda_gemv, a KernelConfig(backend="cuda")) on a GPU: equal to x @ (W *
s)^T within bf16 rounding at decode shapes, with the squared ReLU epilogue, and the same when launched with
programmatic dependent launch inside a captured CUDA graph between Triton kernels. Marked `gpu`; its compilation
and the refusals are also checked on CPU (tests/inference/test_cuda_gemv.py)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
    pytest.skip("needs cuda-bindings (pip install 'nemotron4[cuda]')", allow_module_level=True)

from nemotron4.inference.triton_linear import CUDA_CANDIDATES, KernelConfig, config_for, triton_linear  # noqa: E402

SHAPES = [(1024, 6144), (6144, 24576), (8192, 6144), (4096, 4112)]  # the last: a partial vector step


def _case(N, K, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8, generator=g)
    s = (torch.rand(N, device="cuda", generator=g) * 0.02 + 0.001).to(torch.bfloat16)
    x = torch.randn(1, K, device="cuda", generator=g).to(torch.bfloat16)
    ref = (x.float() @ w.float().T) * s.float()
    return x, w, s, ref


@pytest.mark.parametrize("cfg", CUDA_CANDIDATES, ids=lambda c: c.label().replace(" ", "_"))
@pytest.mark.parametrize("N,K", SHAPES)
def test_cuda_gemv_equals_the_reference(cfg, N, K):
    x, w, s, ref = _case(N, K)
    y = triton_linear(x, w, s, cfg)
    assert y.shape == (1, N) and y.dtype == torch.bfloat16
    assert ((y.float() - ref).norm() / ref.norm()).item() < 4e-3  # bf16 output rounding
    act = triton_linear(x, w, s, cfg, out_act=1)
    want = torch.relu(ref.to(torch.bfloat16).float()).square()
    assert ((act.float() - want).norm() / want.norm()).item() < 8e-3


def test_a_nan_in_x_gives_nan_outputs_as_the_triton_kernel_does():
    x, w, s, _ = _case(6144, 6144)
    x[0, 7] = float("nan")
    for cfg in CUDA_CANDIDATES:
        assert torch.isnan(triton_linear(x, w, s, cfg)).all(), cfg
    assert torch.isnan(triton_linear(x, w, s, config_for(1, 6144, 6144, True))).all()


@pytest.mark.parametrize("stages", [1, 2])
def test_cuda_gemv_with_pdl_in_a_graph_between_triton_kernels(stages):
    """Triton GEMV -> CUDA GEMV -> Triton GEMV, each consuming the one before, captured in one graph and replayed:
    the same result as the eager chain of references."""
    N = K = 6144
    x, w1, s1, _ = _case(N, K, 1)
    _, w2, s2, _ = _case(N, K, 2)
    _, w3, s3, _ = _case(N, K, 3)
    cuda_cfg = KernelConfig(2, 1024, num_warps=2, num_stages=stages, backend="cuda")

    triton_cfg = config_for(1, N, K, True)  # the Triton default (the call's own default is the CUDA kernel)
    assert triton_cfg.backend == "triton"

    def chain():
        h = triton_linear(x, w1, s1, triton_cfg)
        h = triton_linear(h, w2, s2, cuda_cfg)
        return triton_linear(h, w3, s3, triton_cfg)

    def ref():
        h = ((x.float() @ w1.float().T) * s1.float()).to(torch.bfloat16)
        h = ((h.float() @ w2.float().T) * s2.float()).to(torch.bfloat16)
        return (h.float() @ w3.float().T) * s3.float()

    eager = chain()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        chain()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    r = ref()
    assert ((eager.float() - r).norm() / r.norm()).item() < 2e-2
    assert torch.equal(out, eager)


def test_the_cuda_gemv_serves_batch_1_int8_by_default_and_not_elsewhere(monkeypatch):
    from nemotron4.inference import triton_linear as tl_

    x, w, s, ref = _case(6144, 6144)
    assert tl_.chosen_config(x, w, s).backend == "cuda"
    assert ((triton_linear(x, w, s).float() - ref).norm() / ref.norm()).item() < 4e-3
    unaligned = torch.empty(1, 6145, device="cuda", dtype=torch.bfloat16)[:, 1:]
    unaligned.copy_(x)
    for args in ((x.half(), w, s), (torch.cat([x, x]), w, s), (x, w, None), (x, w, s.float()), (unaligned, w, s)):
        assert tl_.chosen_config(*args).backend == "triton"  # fp16, batch 2, no scales, fp32 scales, unaligned x
    for args in ((x, w, s.float()), (unaligned, w, s)):  # and the call serves them (Triton) instead of raising
        assert ((triton_linear(*args).float() - ref).norm() / ref.norm()).item() < 4e-3
    monkeypatch.setattr(tl_, "CUDA_GEMV", False)
    assert tl_.chosen_config(x, w, s).backend == "triton"


def test_where_the_cuda_gemv_cannot_run_the_triton_gemv_serves_and_says_why_once(monkeypatch):
    import warnings

    from nemotron4.inference import cuda_gemv
    from nemotron4.inference import triton_linear as tl_

    x, w, s, ref = _case(6144, 6144)
    monkeypatch.setattr(cuda_gemv, "unavailable", lambda device_index: "RuntimeError: no NVRTC here")
    tl_._say_triton_serves.cache_clear()
    with pytest.warns(UserWarning, match=r"no NVRTC here.*nemotron4\[cuda\]"):
        assert tl_.chosen_config(x, w, s).backend == "triton"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call: no second warning
        y = triton_linear(x, w, s)
    assert ((y.float() - ref).norm() / ref.norm()).item() < 4e-3


def test_the_kernel_loads_on_this_gpu():
    from nemotron4.inference import cuda_gemv

    assert cuda_gemv.unavailable(torch.cuda.current_device()) is None
