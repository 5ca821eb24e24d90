"""The fused decode ops of nemotron4.inference.decode_ops on CPU: the modules' maths equals the model's (the carried
residual add, the fused norms, the decode attention's torch path), and the Triton kernels under Triton's CPU
interpreter (fp32/fp16) against the torch maths. bf16 on a GPU: tests/gpu/test_decode_kernels.py."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from nemotron4 import ModelConfig, build_model
from nemotron4.inference import generate_tokens
from nemotron4.inference.decode_form import in_decode_form, prepare_decode
from nemotron4.inference.decode_ops import (
    DecodeAttention,
    FusedLayerNorm1P,
    FusedNormBlock,
    FusedNormNemotron4,
    add_layernorm,
    decode_attention,
    layernorm,
    torch_decode_attention,
)
from nemotron4.model import apply_rope


def _model(seed=0):
    cfg = ModelConfig.from_name("tiny", vocab_size=97, max_seq_len=64)
    model = build_model(cfg, seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-zero norm gains and biases, so that their maths is exercised
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.2, generator=g)
    return model


@pytest.mark.parametrize("int8", [False, True])
def test_decode_form_is_the_models_maths(int8):
    """prepare_decode's fused norms (residual add carried into the next norm) and decode attention: the same logits
    over a prompt, the same greedy tokens, batched with padding, eager and compiled (the torch paths on CPU)."""
    model = _model()
    ref = copy.deepcopy(model)
    if int8:
        from nemotron4.inference import quantize_int8

        quantize_int8(ref)
    prepare_decode(model, int8=int8)
    assert type(model) is FusedNormNemotron4 and in_decode_form(model) and not in_decode_form(ref)
    assert type(model.layers[0]) is FusedNormBlock and type(model.norm) is FusedLayerNorm1P
    assert type(model.layers[0].attention) is DecodeAttention
    x = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    prompts = [[3, 4, 5, 6], [9, 1]]
    want = generate_tokens(ref, prompts, 8)
    assert generate_tokens(model, prompts, 8) == want
    assert generate_tokens(model, prompts, 8, compile=True) == want


def test_generate_decode_form_converts_in_place_only_after_the_inputs_are_checked():
    """generate_tokens(decode_form=True): a bad input is refused with the model untouched; otherwise the model is
    put in its decode form in place (q/k/v fused and frozen) and gives the same greedy tokens; a second call is a
    no-op. Without decode_form the caller's model is never converted, compile or not."""
    from nemotron4.errors import ConfigError

    model, prompts = _model(2), [[3, 4, 5, 6], [9, 1]]
    want = generate_tokens(copy.deepcopy(model), prompts, 6)
    generate_tokens(model, prompts, 2, compile=True)
    assert not in_decode_form(model) and "layers.0.attention.wq.weight" in model.state_dict()
    with pytest.raises(ConfigError, match="temperature"):
        generate_tokens(model, prompts, 6, temperature=-1.0, decode_form=True)
    assert not in_decode_form(model)
    assert generate_tokens(model, prompts, 6, decode_form=True) == want
    assert in_decode_form(model) and "layers.0.attention.wq.weight" not in model.state_dict()
    layer0 = model.layers[0]
    assert generate_tokens(model, prompts, 6, decode_form=True) == want and model.layers[0] is layer0


def test_fused_block_carry_equals_block():
    model = _model(1)
    block = copy.deepcopy(model.layers[0])
    fused = copy.deepcopy(block)
    fused.__class__ = FusedNormBlock
    x, d = torch.randn(2, 5, model.cfg.dim), torch.randn(2, 5, model.cfg.dim)
    cos, sin = model.rope_cos[:5], model.rope_sin[:5]
    with torch.no_grad():
        out = block(x + d, cos, sin)
        h, delta = fused(x, cos, sin, None, None, d, True)
        torch.testing.assert_close(h + delta, out)
        torch.testing.assert_close(fused(x, cos, sin), block(x, cos, sin))  # without carry: Block's forward


def test_ops_on_cpu_and_their_fake_shapes():
    x, d = torch.randn(3, 1, 40), torch.randn(3, 1, 40)
    w, b = torch.randn(40) * 0.1, torch.randn(40) * 0.1
    h, y = add_layernorm(x, d, w, b, 1e-5)
    torch.testing.assert_close(h, x + d)
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x + d, (40,), 1 + w, b, 1e-5))
    torch.testing.assert_close(layernorm(x, w, b, 1e-5), torch.nn.functional.layer_norm(x, (40,), 1 + w, b, 1e-5))
    q, k, v = torch.randn(2, 1, 4, 8), torch.randn(2, 2, 10, 8), torch.randn(2, 2, 10, 8)
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., :3] = False
    cos, sin = torch.rand(1, 4), torch.rand(1, 4)
    y = decode_attention(q, k, v, mask, cos, sin, torch.tensor([9]))
    qr = apply_rope(q, cos, sin).transpose(1, 2)  # (2, 4, 1, 8); GQA: 2 query heads per kv head, written out
    scores = qr @ k.repeat_interleave(2, dim=1).transpose(-1, -2) / 8**0.5
    ref = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v.repeat_interleave(2, dim=1)
    torch.testing.assert_close(y, ref.transpose(1, 2).reshape(2, 1, 32))
    torch.testing.assert_close(y, torch_decode_attention(q, k, v, mask, cos, sin))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        f = mode.from_tensor
        assert decode_attention(f(q), f(k), f(v), f(mask), f(cos), f(sin), f(torch.tensor([9]))).shape == (2, 1, 32)
        assert [t.shape for t in add_layernorm(f(x), f(d), f(w), f(b), 1e-5)] == [x.shape, x.shape]


needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

_INTERPRETER_SCRIPT = """
import json, torch
from nemotron4.inference import decode_ops as D
from nemotron4.model import apply_rope
out = []
for dtype in (torch.float32, torch.float16):
    for N, rows, delta in ((64, 1, True), (1000, 3, False), (6144, 2, True)):
        g = torch.Generator().manual_seed(N)
        x, d = torch.randn(rows, 1, N, generator=g).to(dtype), torch.randn(rows, 1, N, generator=g).to(dtype)
        w, b = (torch.randn(N, generator=g) * 0.1).to(dtype), (torch.randn(N, generator=g) * 0.1).to(dtype)
        y = torch.full_like(x, float("nan"))
        h, y0 = D.triton_add_layernorm(x, d if delta else None, w, b, 1e-5)
        y.copy_(y0)
        hr = x + d if delta else x
        yr = D.torch_layernorm(hr.float(), w.float(), b.float(), 1e-5)
        out.append(["ln", str(dtype), (h.float() - hr.float()).abs().max().item(),
                    ((y.float() - yr).norm() / yr.norm()).item()])
    # B, H, KVH, head_dim, rot, S, pos, splits: GQA groups of 4, 6 and 1, head_dim not a power of 2, ragged tiles,
    # one split (direct output) and several (with empty ones), padding slots masked out
    for B, H, KVH, Dh, rot, S, pos, splits in ((1, 8, 2, 24, 12, 40, 30, None), (2, 48, 8, 128, 64, 256, 200, 4),
                                              (3, 4, 4, 32, 32, 100, 99, 1), (1, 6, 2, 64, 32, 300, 5, 3)):
        g = torch.Generator().manual_seed(S)
        qkv = torch.randn(B, 1, H * Dh + 10, generator=g).to(dtype)  # q is a strided slice, as in the model
        q = qkv[..., :H * Dh].view(B, 1, H, Dh)
        k, v = (torch.randn(B, KVH, S, Dh, generator=g).to(dtype) for _ in range(2))
        valid = torch.rand(B, S, generator=g) > 0.2
        valid[:, pos] = True
        mask = (valid & (torch.arange(S) <= pos))[:, None, None, :]
        ang = torch.rand(1, rot // 2, generator=g) * 6
        ang = torch.cat([ang, ang], -1)
        cos, sin, ip = ang.cos(), ang.sin(), torch.tensor([pos])
        y = D.triton_decode_attention(q, k, v, mask, cos, sin, ip, n_splits=splits)
        yr = D.torch_decode_attention(q.float(), k.float(), v.float(), mask, cos, sin)
        out.append(["attn", str(dtype), 0.0, ((y.float() - yr).norm() / yr.norm()).item()])
        # the same launch writing this step's k (RoPE'd) and v at slot pos, and attending them there
        kn, vn = (torch.randn(B, 1, KVH, Dh, generator=g).to(dtype) for _ in range(2))
        kr, vr = k.clone(), v.clone()
        kr.index_copy_(2, ip, apply_rope(kn.float(), cos, sin).transpose(1, 2).to(dtype))
        vr.index_copy_(2, ip, vn.transpose(1, 2))
        y = D.triton_decode_attention(q, k, v, mask, cos, sin, ip, n_splits=splits, k_new=kn, v_new=vn)
        yr = D.torch_decode_attention(q.float(), kr.float(), vr.float(), mask, cos, sin)
        k_err = ((k.float() - kr.float()).norm() / kr.float().norm()).item()  # fp32 RoPE rounded once
        out.append(["attn_write", str(dtype), float(not torch.equal(v, vr)),
                    ((y.float() - yr).norm() / yr.norm()).item()])
        out.append(["k_write", str(dtype), 0.0, k_err])
print(json.dumps(out))
"""


@needs_triton
def test_decode_kernels_in_the_interpreter():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETER_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 6 + 24
    for kind, dtype, add_err, rel in rows:
        assert add_err == 0.0, (kind, dtype)
        assert rel < (1e-6 if dtype == "torch.float32" else 1e-3), (kind, dtype, rel)
    assert {r[0] for r in rows} == {"ln", "attn", "attn_write", "k_write"}


def test_decode_form_keeps_a_partly_quantized_models_precision():
    """ensure_decode_form (generate's decode_form=True) on a model whose blocks are int8 and output projection bf16:
    the blocks stay int8, the output takes the bf16 GEMV, nothing else gets quantized."""
    from nemotron4.inference import quantize_int8
    from nemotron4.inference.decode_form import ensure_decode_form
    from nemotron4.inference.quantize import GemvLinear, Int8Linear

    model = _model(3)
    for layer in model.layers:
        quantize_int8(layer)  # the blocks only
    ensure_decode_form(model)
    assert type(model.output) is GemvLinear
    assert all(isinstance(layer.attention.wqkv, Int8Linear) for layer in model.layers)
    assert all(isinstance(layer.feed_forward.w1, Int8Linear) for layer in model.layers)
