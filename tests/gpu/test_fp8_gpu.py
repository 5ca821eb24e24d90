"""One compiled FP8 training step (`train.fp8`, torchao float8) against the same compiled bf16 step on the GPU:
finite loss, bf16-close loss and gradients. Marked `gpu`: skipped without CUDA; needs a GPU of compute capability
8.9 or more and torchao (`pip install 'nemotron4[fp8]'`). The CPU side (module selection, resume, refusals) is in
tests/train/test_fp8.py."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from nemotron4 import ModelConfig, build_model
from nemotron4.train.fast import (
    CastWeightsOnce,
    apply_activation_checkpointing,
    compile_blocks,
    fused_cross_entropy_loss,
    set_attention_backend,
)
from nemotron4.train.fp8 import apply_fp8, fp8_weight_cast, output_fp8

pytestmark = pytest.mark.gpu


def _step(model, micro, fp8=False, cast=None, once=True):
    """Loss and fp32 master gradients of one step's micro-batches, under bf16 autocast and cast-once weights
    (fp8: the fused loss's output-projection GEMMs in FP8, as the recipe runs them under train.fp8; cast: the
    recipe's `fp8_weight_cast`, e4m3 block weights once per step under the tensorwise recipes)."""
    model.zero_grad(set_to_none=True)
    losses = []
    with CastWeightsOnce(model, cast=cast)() if once else contextlib.nullcontext():
        for b in micro:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fused_cross_entropy_loss(model, b, chunk_size=64, fp8=fp8)
            (loss / len(micro)).backward()
            losses.append(loss.detach())
    return torch.stack(losses), {n: p.grad.clone() for n, p in model.named_parameters()}


def _case(seed: int):
    """A small CUDA model (fp8-legal dimensions) and two micro-batches of 2 x 128 tokens, after the fp8 skips."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9 or more")
    pytest.importorskip("torchao", reason="train.fp8 needs torchao: pip install 'nemotron4[fp8]'")
    cfg = ModelConfig.from_name("tiny", dim=256, ffn_dim=1024, n_heads=4, n_kv_heads=2, head_dim=64)
    model = build_model(cfg, device="cuda", seed=seed)
    micro = list(torch.randint(0, cfg.vocab_size, (4, 129), device="cuda",
                               generator=torch.Generator("cuda").manual_seed(seed)).split(2))
    return cfg, model, micro


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise", "tensorwise+output"])
def test_compiled_fp8_step_close_to_bf16(recipe):
    cfg, model, micro = _case(0)
    set_attention_backend("cudnn")
    try:
        bf16 = compile_blocks(copy.deepcopy(model))
        ref_loss, ref_grads = _step(bf16, micro)
        fp8 = compile_blocks(apply_fp8(copy.deepcopy(model), recipe))
        loss, grads = _step(fp8, micro, fp8=output_fp8(recipe), cast=fp8_weight_cast(recipe, torch.bfloat16))
    finally:
        set_attention_backend("auto")
    converted = [n for n, m in fp8.named_modules() if type(m).__name__ == "Float8Linear"]
    assert len(converted) == 6 * cfg.n_layers
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ref_loss, rtol=5e-3, atol=0.0)
    for name, g in ref_grads.items():  # e4m3 keeps 3 mantissa bits: ~10-16% per tensor here at init (CPU check)
        assert torch.isfinite(grads[name]).all(), name
        assert grads[name].dtype == torch.float32, name
        rel = ((grads[name] - g).norm() / g.norm().clamp(min=1e-12)).item()
        assert rel < 0.25, f"{recipe} {name}: relative gradient difference {rel:.3g} from bf16"
    blocks = [n for n in ref_grads if n.startswith("layers.") and n.endswith(".weight") and ref_grads[n].ndim == 2]
    blocks += ["output.weight"] if output_fp8(recipe) else []
    differs = [((grads[n] - ref_grads[n]).norm() / ref_grads[n].norm()).item() for n in blocks]
    assert max(differs) > 1e-4, "the FP8 gradients equal bf16's: the fp8 GEMMs did not run"


def test_e4m3_weights_once_per_step_compiled_and_checkpointed_close_to_torchaos_own_casts():
    """The recipe's tensorwise step (blocks compiled with activation checkpointing inside, their e4m3 weights made
    once per step by `fp8_weight_cast` and used as they are by torchao's matmul, the output's cast once per step)
    against torchao casting the fp32 masters itself in every call, compiled, not checkpointed: the same weight
    scales, so the same losses to 1e-3. The gradients are only close (the CPU test has them bitwise equal in
    eager mode): diagnosed on an H200, torchao's own per-call casts compiled with checkpointing, and ours with or
    without it, all sit at the same 13-15% from the per-call model compiled without (agreeing with each other to
    the fourth digit in the largest differences): that one graph rounds some e4m3 operand differently, and at init
    in this tiny model that moves a gradient by about the fp8 noise itself."""
    from nemotron4.ops.cross_entropy import output_weight_e4m3_once

    _, model, micro = _case(1)
    set_attention_backend("cudnn")
    try:
        per_call = compile_blocks(apply_fp8(copy.deepcopy(model), "tensorwise+output"))
        ref_loss, ref_grads = _step(per_call, micro, fp8=True, once=False)
        once = compile_blocks(apply_activation_checkpointing(apply_fp8(copy.deepcopy(model), "tensorwise+output")))
        with output_weight_e4m3_once():
            loss, grads = _step(once, micro, fp8=True, cast=fp8_weight_cast("tensorwise+output", torch.bfloat16))
    finally:
        set_attention_backend("auto")
    assert "forward" in vars(once.layers[0])  # checkpointed
    torch.testing.assert_close(loss, ref_loss, rtol=1e-3, atol=0.0)
    for name, g in ref_grads.items():
        rel = ((grads[name] - g).norm() / g.norm().clamp(min=1e-12)).item()
        assert torch.isfinite(grads[name]).all() and rel < 0.25, f"{name}: relative gradient difference {rel:.3g}"


@pytest.mark.parametrize("gemms", [True, ("logits",), ("dgrad", "wgrad")])
def test_fused_loss_fp8_gemms_close_to_bf16(gemms):
    """The fused loss alone at a 32k vocabulary (the output projection's path under train.fp8): _scaled_mm with
    e4m3 / e5m2 operands, the compiled chunk, the weight GEMM in backward; loss and both gradients close to bf16's.
    Also with only some of its GEMMs in fp8 (bench/train.py's RECIPE:gemms=... variants)."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9 or more")
    from nemotron4.ops.cross_entropy import linear_cross_entropy

    g = torch.Generator("cuda").manual_seed(0)
    h = torch.randn(2, 1024, 512, device="cuda", generator=g)
    w = torch.randn(32768, 512, device="cuda", generator=g) * 0.02
    t = torch.randint(0, 32768, (2, 1024), device="cuda", generator=g)
    out = {}
    for fp8 in (False, gemms):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = linear_cross_entropy(hh, ww, t, chunk_size=512, fp8=fp8)
        loss.backward()
        out[bool(fp8)] = (loss.detach(), hh.grad, ww.grad)
    assert torch.isfinite(out[True][0])
    torch.testing.assert_close(out[True][0], out[False][0], rtol=5e-3, atol=0.0)
    for a, b in zip(out[True][1:], out[False][1:], strict=True):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        rel = ((a - b).norm() / b.norm()).item()
        assert rel < 0.1, rel
    assert max(((a - b).norm() / b.norm()).item() for a, b in zip(out[True], out[False], strict=True)) > 1e-4
