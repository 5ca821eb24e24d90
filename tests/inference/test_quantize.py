"""The int8 weight-only module's maths on CPU (the torch path the CUDA kernels must match), and the Triton decode
kernels under Triton's CPU interpreter (fp32/fp16: the interpreter's bf16 tl.dot is wrong, so bf16 is covered by
tests/gpu/test_decode_kernels.py)."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

from nemotron4 import ModelConfig, build_model
from nemotron4.inference import generate_tokens, quantize_int8
from nemotron4.inference import quantize as qmod
from nemotron4.inference.decode_form import prepare_decode
from nemotron4.inference.quantize import (
    FusedQKVAttention,
    GemvLinear,
    Int8Linear,
    fuse_qkv,
    torch_weight_linear,
    use_triton_linears,
    weight_linear,
)


def _int8(N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8, generator=g)
    s = torch.rand(N, generator=g) * 0.01 + 1e-3
    return w, s


def test_int8_linear_is_per_row_scaled_int8_maths():
    lin = nn.Linear(96, 40, bias=False)
    q = Int8Linear.from_linear(lin)
    assert q.weight.dtype == torch.int8 and q.weight.abs().max() <= 127
    # the dequantised weight is within half a quantization step of the original, row by row
    step = lin.weight.abs().amax(1, keepdim=True) / 127
    assert ((q.dequantize() - lin.weight).abs() <= step / 2 + 1e-7).all()
    x = torch.randn(3, 5, 96)
    torch.testing.assert_close(q(x), x @ q.dequantize().T, rtol=1e-5, atol=1e-5)


def test_prefill_dequantises_in_row_slices_with_the_same_result(monkeypatch):
    w, s = _int8(300, 64)
    x = torch.randn(7, 64)
    whole = torch_weight_linear(x, w, s)
    monkeypatch.setattr(qmod, "DEQUANT_CHUNK_BYTES", 64 * 4 * 50)  # 50 rows at a time: 6 slices, the last short
    torch.testing.assert_close(torch_weight_linear(x, w, s), whole)
    torch.testing.assert_close(whole, (x.double() @ w.double().T * s.double()).float(), rtol=1e-5, atol=1e-4)


def test_weight_linear_op_on_cpu_and_its_fake_shape():
    w, s = _int8(24, 32)
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(weight_linear(x, w, s), torch_weight_linear(x, w, s))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        y = weight_linear(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(s))
    assert y.shape == (2, 3, 24)


def test_gemv_linears_keep_parameters_and_outputs():
    model = build_model(ModelConfig.from_name("tiny", vocab_size=97, max_seq_len=64), seed=0).eval()
    ref = copy.deepcopy(model)
    keys = set(model.state_dict())
    use_triton_linears(model)
    assert isinstance(model.layers[0].feed_forward.w1, GemvLinear) and set(model.state_dict()) == keys
    x = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    # and they quantize like plain linears
    q = quantize_int8(model)
    assert isinstance(q.layers[0].feed_forward.w1, Int8Linear)
    assert len(generate_tokens(q, [[3, 4, 5]], 6)[0]) == 6


def test_caches_for_a_linear_without_a_weight_attribute():
    """Other libraries' quantized linears (gemlite's) have no `.weight`: the cache sizes from out_features."""
    from nemotron4.inference.kv_cache import setup_caches

    model = build_model(ModelConfig.from_name("tiny", vocab_size=97, max_seq_len=64), seed=0).eval()
    attn = model.layers[0].attention
    want = attn.wk.weight.shape[0] // attn.head_dim

    class NoWeight(nn.Module):
        out_features = attn.wk.out_features

    attn.wk = NoWeight()
    setup_caches(model, 2, 16)
    assert attn.kv_cache.k.shape == (2, want, 16, attn.head_dim)



@pytest.mark.parametrize("int8", [False, True])
def test_fused_qkv_is_the_parts_maths(int8):
    """One stacked projection (rows of wq, wk, wv; int8 scales stacked with their rows): the same logits and the
    same greedy tokens as the three parts, and the caches still size from the KV heads."""
    cfg = ModelConfig.from_name("tiny", vocab_size=97, max_seq_len=64)
    model = build_model(cfg, seed=0).eval()
    ref = quantize_int8(copy.deepcopy(model)) if int8 else copy.deepcopy(model)
    prepare_decode(model, int8=int8)
    attn = model.layers[0].attention
    assert isinstance(attn, FusedQKVAttention) and not hasattr(attn, "wq")
    assert isinstance(attn.wqkv, Int8Linear if int8 else GemvLinear)
    assert attn.wqkv.weight.shape[0] == cfg.n_heads * cfg.head_dim + 2 * cfg.n_kv_heads * cfg.head_dim
    x = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    prompts = [[3, 4, 5], [9, 1]]
    assert generate_tokens(model, prompts, 8) == generate_tokens(ref, prompts, 8)
    assert attn.kv_cache.k.shape[1] == cfg.n_kv_heads
    assert fuse_qkv(model) is model  # a second call leaves fused layers alone


def test_squared_relu_fused_into_w1_is_the_feed_forward_maths():
    from nemotron4.inference.quantize import FusedActFeedForward

    w, s = _int8(24, 32)
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(weight_linear(x, w, s, 1), torch.relu(torch_weight_linear(x, w, s)).square())
    with pytest.raises(ValueError, match="out_act"):
        torch_weight_linear(x, w, s, 7)
    model = build_model(ModelConfig.from_name("tiny", vocab_size=97, max_seq_len=64), seed=0).eval()
    ff = copy.deepcopy(model.layers[0].feed_forward)
    prepare_decode(model)
    assert isinstance(model.layers[0].feed_forward, FusedActFeedForward)
    h = torch.randn(2, 5, model.cfg.dim)
    with torch.no_grad():
        torch.testing.assert_close(model.layers[0].feed_forward(h), ff(h))


def test_fuse_qkv_refuses_mixed_parts():
    model = build_model(ModelConfig.from_name("tiny", vocab_size=97, max_seq_len=64), seed=0).eval()
    attn = model.layers[0].attention
    attn.wk = Int8Linear.from_linear(attn.wk)
    with pytest.raises(ValueError, match="one kind"):
        fuse_qkv(model)


needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

# Each case: M, N, K, KernelConfig fields. Ragged N (clamped rows) with split-K partials; the plain int-to-float
# conversion; the exponent trick; the tl.dot path with rows masked up to 16 and split-K; a 32-row tile.
INTERPRETER_CASES = [
    (1, 40, 1024, dict(block_n=8, block_k=256, split_k=2)),
    (1, 64, 512, dict(block_n=16, block_k=128, convert=0)),
    (1, 64, 512, dict(block_n=4, block_k=128)),
    (3, 40, 512, dict(block_n=16, block_k=128, split_k=2)),
    (20, 64, 256, dict(block_n=32, block_k=64, block_m=32)),
]

_INTERPRETER_SCRIPT = """
import json, sys, torch
from nemotron4.inference.triton_linear import KernelConfig, triton_linear
out = []
for M, N, K, cfg in json.loads(sys.argv[1]):
    for dtype in (torch.float32, torch.float16):
        g = torch.Generator().manual_seed(M * 1000 + N)
        w = torch.randint(-127, 128, (N, K), dtype=torch.int8, generator=g)
        s = torch.rand(N, generator=g) * 0.01 + 1e-3
        x = torch.randn(M, K, generator=g).to(dtype)
        for weight, scale, ref in ((w, s.to(dtype), x.double() @ w.double().T * s.double()),
                                   (w.to(dtype) * 0.01, None, x.double() @ (w.to(dtype) * 0.01).double().T)):
            y = torch.full((M, N), float("nan"), dtype=dtype)
            y.copy_(triton_linear(x, weight, scale, KernelConfig(**cfg)))
            out.append([M, N, K, str(dtype), scale is not None, ((y.double() - ref).norm() / ref.norm()).item()])
        # the fused squared ReLU of the output (out_act=1): of the output rounded to x's dtype, rounded again
        ref = torch.relu((x.double() @ w.double().T * s.double()).to(dtype)).square().double()
        y = triton_linear(x, w, s.to(dtype), KernelConfig(**cfg), out_act=1)
        out.append([M, N, K, str(dtype), "out_act", ((y.double() - ref).norm() / ref.norm()).item()])
try:
    triton_linear(torch.randn(1, 96), w[:8, :96].contiguous(), s[:8], KernelConfig(block_n=8, block_k=64))
except ValueError as e:
    out.append(str(e))
print(json.dumps(out))
"""


@needs_triton
def test_triton_kernels_in_the_interpreter():
    """The kernels under TRITON_INTERPRET=1, in a subprocess: the flag must be set before triton is imported."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETER_SCRIPT, json.dumps(INTERPRETER_CASES)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *rows, error = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 6 * len(INTERPRETER_CASES)
    for M, N, K, dtype, int8, rel in rows:
        bound = 1e-6 if dtype == "torch.float32" else 1e-3
        if int8 == "out_act":  # squaring doubles the relative error of the output it squares
            bound *= 2
        assert rel < bound, (M, N, K, dtype, int8, rel)
    assert "multiple of block_k" in error


def test_kernel_configs_check_the_l2_prefetch_and_defaults_fit_the_15b_shapes():
    """KernelConfig refuses an L2 prefetch that is not 128 bytes times a power of 2 up to 2 KB or a multiple of 2 KB
    (one prefetch per 128-byte line, in power-of-2 ranges of lines); fits() refuses one longer than a program's K
    range; the default configs fit every 15B decode shape and prefetch only what a program reads."""
    from nemotron4.inference.triton_linear import KernelConfig, default_config, fits

    for bad in (-128, 100, 384, 3072, 6272):
        with pytest.raises(ValueError, match="l2_prefetch"):
            KernelConfig(8, 512, l2_prefetch=bad)
    for good in (128, 1024, 2048, 6144, 8192):
        assert KernelConfig(8, 512, l2_prefetch=good).l2_prefetch == good
    assert fits(KernelConfig(4, 1024, l2_prefetch=2048), 6144)
    assert not fits(KernelConfig(4, 1024, split_k=4, l2_prefetch=2048), 6144)  # 1536 bytes per program
    for N, K in ((8192, 6144), (6144, 6144), (24576, 6144), (6144, 24576), (256000, 6144), (1024, 6144)):
        for int8 in (True, False):
            cfg = default_config(1, N, K, int8)
            assert fits(cfg, K) and cfg.l2_prefetch <= K // cfg.split_k, (N, K, int8, cfg)
            assert int8 or cfg.l2_prefetch == 0  # measured for the int8 kernel only
