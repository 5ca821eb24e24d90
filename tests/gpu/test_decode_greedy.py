"""Issue 19, must-show 2: greedy int8 decode on the fast path (`prepare_decode`: fused QKV, the squared ReLU inside
w1's kernel, the Triton int8 kernels with programmatic dependent launch, compiled layers, one CUDA graph per step)
gives the same tokens as a bf16 reference holding the dequantised weights (plain nn.Linear, cuBLAS, eager) for the
first 32 steps, at batch 1 (the GEMV kernel) and batch 2 (the tl.dot kernel), and every step's logits are within
LOGITS_RTOL of the reference's. Marked `gpu`; the module's maths on CPU
is in tests/inference/test_quantize.py.

Random weights, with one change so that every step has a clear winner: the output projection is a random
permutation of the (scaled-up) input embedding's rows, so the logits peak on one token (as a trained model's do)
instead of being 4096 near-Gaussian draws whose top two differ by less than bf16 rounding at some step in 64.
The logits check holds over the whole vocabulary, so the blocks' int8 maths is checked, not only the argmax."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import teacher_forced_logits
from torch import nn

from nemotron4 import ModelConfig, build_model
from nemotron4.inference import generate_tokens, quantize_int8
from nemotron4.inference.decode_form import prepare_decode
from nemotron4.inference.quantize import FusedActFeedForward, FusedQKVAttention, Int8Linear

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

STEPS = 32
LOGITS_RTOL = 2e-2  # relative L2 error of each step's logits, int8 kernels vs cuBLAS on the dequantised weights
PROMPTS = [[5, 17, 33, 2, 99, 1000], [7, 7, 300]]


@torch.no_grad()
def _models():
    cfg = ModelConfig.from_name("tiny", dim=1024, ffn_dim=4096, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=128,
                                vocab_size=4096, max_seq_len=256)
    model = build_model(cfg, device="cuda", dtype=torch.bfloat16, seed=0).eval()
    g = torch.Generator(device="cuda").manual_seed(1)
    model.tok_embeddings.weight.mul_(10.0)
    perm = torch.randperm(cfg.vocab_size, device="cuda", generator=g)
    model.output.weight.copy_(model.tok_embeddings.weight[perm] * 0.5)
    q = quantize_int8(model)
    ref = copy.deepcopy(q)  # the dequantised bf16 reference: three plain projections, cuBLAS
    for module in list(ref.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Int8Linear):
                lin = nn.Linear(child.in_features, child.out_features, bias=False, device="cuda",
                                dtype=torch.bfloat16)
                lin.weight.copy_(child.dequantize())
                setattr(module, name, lin)
    fast = prepare_decode(q, int8=True)  # already int8: fuses QKV and w2's squared ReLU
    assert isinstance(fast.layers[0].attention, FusedQKVAttention)
    assert isinstance(fast.layers[0].feed_forward, FusedActFeedForward)
    return fast, ref


def test_int8_fast_path_greedy_equals_dequantised_bf16_for_32_steps():
    fast, ref = _models()
    want = [generate_tokens(ref, [p], STEPS)[0] for p in PROMPTS]  # eager, batch 1
    for w in want:
        assert len(w) == STEPS and len(set(w)) > STEPS // 2  # not a degenerate repeat
    got_b1 = [generate_tokens(fast, [p], STEPS, compile=True)[0] for p in PROMPTS]
    got_b2 = generate_tokens(fast, PROMPTS, STEPS, compile=True)  # left-padded batch of 2
    assert got_b1 == want
    assert got_b2 == want
    for prompt, w in zip(PROMPTS, want, strict=True):
        lq, lr = teacher_forced_logits(fast, prompt, w), teacher_forced_logits(ref, prompt, w)
        rel = ((lq - lr).norm(dim=-1) / lr.norm(dim=-1)).max().item()
        assert rel < LOGITS_RTOL, rel
        assert (lq.argmax(-1) == lr.argmax(-1)).all()
