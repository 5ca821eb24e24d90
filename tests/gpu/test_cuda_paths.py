"""The GPU-only code paths (compiled loss chunk, fp32-output GEMM, CUDA graphs in decode, cuDNN attention) against
the plain model on the same GPU. Marked `gpu`: skipped without CUDA; their CPU counterparts are in tests/unit and
tests/inference."""

from __future__ import annotations

import copy

import pytest
import torch

from nemotron4 import ModelConfig, build_model
from nemotron4.inference import generate_tokens
from nemotron4.train.fast import CastWeightsOnce, compile_blocks, fused_cross_entropy_loss, set_attention_backend
from nemotron4.train.step import cross_entropy_loss

pytestmark = pytest.mark.gpu


def _setup(dtype=torch.float32):
    model = build_model(ModelConfig.from_name("tiny"), device="cuda", seed=0)
    micro = list(torch.randint(0, 512, (4, 65), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
                 .split(2))
    return model, micro


def _loss_and_grads(model, micro, loss_fn, autocast=False, step_context=None):
    model.zero_grad(set_to_none=True)
    losses = []
    with step_context() if step_context else torch.autocast("cuda", enabled=False):
        for b in micro:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model, b)
            (loss / len(micro)).backward()
            losses.append(loss.detach())
    return torch.stack(losses), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_compiled_fast_step_fp32_equals_plain():
    model, micro = _setup()
    ref = _loss_and_grads(model, micro, cross_entropy_loss)
    set_attention_backend("auto")
    fast = compile_blocks(copy.deepcopy(model))
    got = _loss_and_grads(fast, micro, lambda m, b: fused_cross_entropy_loss(m, b, chunk_size=48))
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    for name, g in ref[1].items():
        torch.testing.assert_close(got[1][name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_fast_step_close_to_autocast():
    """cuDNN attention, compiled blocks, cast-once weights and the fused loss (compiled chunk, fp32-output GEMM)
    under bf16 against plain autocast with full logits: bf16-close losses and gradients."""
    model, micro = _setup()
    ref = _loss_and_grads(model, micro, cross_entropy_loss, autocast=True)
    set_attention_backend("cudnn")
    try:
        fast = compile_blocks(copy.deepcopy(model))
        got = _loss_and_grads(fast, micro, lambda m, b: fused_cross_entropy_loss(m, b, chunk_size=48), autocast=True,
                              step_context=CastWeightsOnce(fast))
    finally:
        set_attention_backend("auto")
    torch.testing.assert_close(got[0], ref[0], rtol=1e-2, atol=1e-2)
    for name, g in ref[1].items():
        assert got[1][name].dtype == torch.float32
        rel = (got[1][name] - g).norm() / g.norm().clamp(min=1e-12)
        assert rel < 0.05, f"{name}: relative gradient difference {rel:.3g}"


def test_compiled_decode_equals_eager_greedy():
    model, _ = _setup()
    model.eval()
    prompts = [[5, 17, 33, 2], [9, 9, 101]]
    eager = generate_tokens(model, prompts, 24)
    compiled = generate_tokens(model, prompts, 24, compile=True)
    assert compiled == eager
