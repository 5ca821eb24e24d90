"""Every training fast path computes the same loss and gradients as the plain model (fp32, CPU)."""

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
from nemotron4.train.step import cross_entropy_loss


def loss_and_grads(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def setup():
    model = build_model(ModelConfig.from_name("tiny"), seed=0)
    batch = torch.randint(0, 512, (3, 33), generator=torch.Generator().manual_seed(0))
    return model, batch, loss_and_grads(model, cross_entropy_loss, batch)


def check(result, ref, tol=1e-5):
    loss, grads = result
    torch.testing.assert_close(loss, ref[0], rtol=tol, atol=tol)
    for name, g in ref[1].items():
        torch.testing.assert_close(grads[name], g, rtol=tol, atol=tol, msg=name)


def test_fused_cross_entropy(setup):
    model, batch, ref = setup
    check(loss_and_grads(model, lambda m, b: fused_cross_entropy_loss(m, b, chunk_size=17), batch), ref)


def test_activation_checkpointing(setup):
    model, batch, ref = setup
    ckpt = apply_activation_checkpointing(copy.deepcopy(model))
    check(loss_and_grads(ckpt, cross_entropy_loss, batch), ref)


def test_compiled_blocks_with_fused_loss_and_checkpointing(setup):
    model, batch, ref = setup
    fast = compile_blocks(apply_activation_checkpointing(copy.deepcopy(model)))
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in model.named_parameters()]
    check(loss_and_grads(fast, fused_cross_entropy_loss, batch), ref, tol=1e-4)


def test_attention_backend_names():
    set_attention_backend("auto")
    with pytest.raises(ValueError, match="cudnn"):
        set_attention_backend("fastest")


def test_cast_weights_once_equals_autocast():
    """bf16 copies made once per step give autocast's losses and fp32-accumulated gradients, over micro-batches."""
    model = build_model(ModelConfig.from_name("tiny"), seed=0)
    micro = list(torch.randint(0, 512, (4, 33), generator=torch.Generator().manual_seed(1)).split(2))

    def run(step_context):
        model.zero_grad(set_to_none=True)
        losses = []
        with step_context():
            for b in micro:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = cross_entropy_loss(model, b)
                (loss / len(micro)).backward()
                losses.append(loss.detach())
        return torch.stack(losses), {n: p.grad.clone() for n, p in model.named_parameters()}

    ref_losses, ref_grads = run(contextlib.nullcontext)
    cast = CastWeightsOnce(model)
    entries = [e for block in cast.blocks for e in block]
    assert len(entries) == sum(isinstance(m, torch.nn.Linear) for m in model.layers.modules())
    losses, grads = run(cast)
    torch.testing.assert_close(losses, ref_losses, rtol=0, atol=0)
    for name, g in ref_grads.items():
        assert g.dtype == torch.float32
        torch.testing.assert_close(grads[name], g, rtol=1e-6, atol=1e-7, msg=name)
    # the masters are back in the blocks, and no bf16 copy or hook outlives the step
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert {id(p) for p in model.parameters()} == {id(master) for *_, master in entries} | {
        id(p) for n, p in model.named_parameters() if not n.startswith("layers.") or p.ndim != 2}
