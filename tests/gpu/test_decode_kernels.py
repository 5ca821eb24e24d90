"""The Triton decode linears and the int8 decode path on a GPU: kernels against float64 maths at the 15B model's
shapes, and greedy int8 generation against the same model with the dequantised weights in bf16 (cuBLAS). Marked
`gpu`; tests/inference/test_quantize.py covers the maths on CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nemotron4 import ModelConfig, build_model
from nemotron4.inference import generate_tokens, quantize_int8, remove_caches
from nemotron4.inference.generation import decode_one_token, prefill
from nemotron4.inference.kv_cache import setup_caches
from nemotron4.inference.quantize import Int8Linear, weight_linear
from nemotron4.inference.triton_linear import triton_linear

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)


@pytest.mark.parametrize("M", [1, 5, 64])
@pytest.mark.parametrize("N,K", [(1024, 6144), (6144, 24576), (3000, 2048)])
@pytest.mark.parametrize("int8", [True, False])
def test_triton_linear_matches_float64(M, N, K, int8):
    g = torch.Generator(device="cuda").manual_seed(M * 7 + N)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
    if int8:
        w = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8, generator=g)
        s = (torch.rand(N, device="cuda", generator=g) * 0.01 + 1e-3).to(torch.bfloat16)
        ref = x.double() @ w.double().T * s.double()
    else:
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16, generator=g)
        s = None
        ref = x.double() @ w.double().T
    y = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
    y.copy_(triton_linear(x, w, s))
    assert torch.isfinite(y).all()
    rel = ((y.double() - ref).norm() / ref.norm()).item()
    assert rel < 5e-3, rel  # bf16 output rounding is ~2e-3


def _model():
    cfg = ModelConfig.from_name("tiny", dim=1024, ffn_dim=4096, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=128,
                                vocab_size=4096, max_seq_len=256)
    model = build_model(cfg, device="cuda", dtype=torch.bfloat16, seed=0).eval()
    with torch.no_grad():
        model.output.weight.mul_(20.0)  # peaked next-token distributions: greedy choices are not near-ties
    return model


def _dequantised(q: nn.Module) -> nn.Module:
    """The int8 model with every Int8Linear replaced by a bf16 nn.Linear holding its dequantised weight."""
    ref = copy.deepcopy(q)
    for module in list(ref.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Int8Linear):
                lin = nn.Linear(child.in_features, child.out_features, bias=False, device="cuda",
                                dtype=torch.bfloat16)
                lin.weight.data.copy_(child.dequantize())
                setattr(module, name, lin)
    return ref


def test_int8_greedy_equals_dequantised_bf16_reference():
    """32 greedy steps, compiled + CUDA graph, int8 Triton kernels vs cuBLAS on the dequantised weights: the same
    tokens, and the logits of each step (teacher-forced on those tokens) within 2% relative error (bf16 outputs of
    two different reduction orders, through two blocks)."""
    q = quantize_int8(_model())
    ref = _dequantised(q)
    prompts = [[5, 17, 33, 2, 99, 1000], [7, 7, 300]]
    got = generate_tokens(q, prompts, 32, compile=True)
    want = generate_tokens(ref, prompts, 32, compile=True)
    assert got == want
    assert len(set(got[0])) > 3
    # logits, step by step on the same tokens, eager
    with torch.no_grad():
        for model in (q, ref):
            remove_caches(model)
        prompt = torch.tensor([prompts[0]], device="cuda")
        seq = got[0]
        logits = []
        for model in (q, ref):
            setup_caches(model, 1, 64)
            valid = torch.ones(1, 64, dtype=torch.bool, device="cuda")
            rows = [prefill(model, prompt)]
            for i, tok in enumerate(seq[:31]):
                pos = torch.tensor([len(prompts[0]) + i], device="cuda")
                rows.append(decode_one_token(model, torch.tensor([[tok]], device="cuda"), pos, valid))
            logits.append(torch.cat(rows).float())
        rel = ((logits[0] - logits[1]).norm(dim=-1) / logits[1].norm(dim=-1)).max().item()
        assert rel < 2e-2, rel


def test_int8_compiled_batch_equals_eager():
    q = quantize_int8(_model())
    prompts = [[5, 17, 33, 2], [9, 9, 101], [1, 2, 3, 4, 5, 6, 7]]
    assert generate_tokens(q, prompts, 16, compile=True) == generate_tokens(q, prompts, 16)


def test_weight_linear_under_compile_is_one_opaque_op():
    x = torch.randn(1, 2048, device="cuda", dtype=torch.bfloat16)
    w = torch.randint(-127, 128, (512, 2048), device="cuda", dtype=torch.int8)
    s = torch.rand(512, device="cuda", dtype=torch.bfloat16) * 0.01
    f = torch.compile(lambda x: torch.relu(weight_linear(x, w, s)), fullgraph=True)
    torch.testing.assert_close(f(x), torch.relu(weight_linear(x, w, s)))
