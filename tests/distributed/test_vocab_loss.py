"""The vocabulary-parallel fused loss (nemotron4.distributed.vocab_loss) on tp = 2 (gloo) equals the single-process
losses: its value and the gradients of the hidden states and the output weight equal `linear_cross_entropy`'s and
plain full-logits cross-entropy's, with ignored targets and an uneven last chunk, for sequence-sharded, replicated
and plain hidden states; and no op ever produces the (tokens x vocab) logits, nor a (tokens x vocab / tp) slice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nemotron4.ops.cross_entropy import linear_cross_entropy

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER = Path(__file__).with_name("vocab_loss_worker.py")
TP, CHUNK = 2, 10


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("vocab_loss")
    proc = subprocess.run([sys.executable, str(WORKER), str(out)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(TP)]


def reference(x: dict[str, torch.Tensor], compute_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    h, w = x["h"].clone().requires_grad_(), x["w"].clone().requires_grad_()
    loss = linear_cross_entropy(h, w, x["targets"], chunk_size=CHUNK, compute_dtype=compute_dtype)
    loss.backward()
    return {"loss": loss.detach(), "grad_h": h.grad, "grad_w": w.grad}


def test_full_logits_cross_entropy_is_the_reference(ranks: list[dict[str, Any]]) -> None:
    x = ranks[0]["inputs"]
    assert (x["targets"] == -100).sum() == 5
    h, w = x["h"].clone().requires_grad_(), x["w"].clone().requires_grad_()
    loss = F.cross_entropy((h @ w.T).flatten(0, 1), x["targets"].flatten())
    loss.backward()
    fused = reference(x)
    torch.testing.assert_close(fused["loss"], loss.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(fused["grad_h"], h.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fused["grad_w"], w.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", ["seq", "replicated", "plain"])
def test_loss_and_gradients_equal_one_process(ranks: list[dict[str, Any]], case: str) -> None:
    x = ranks[0]["inputs"]
    want = reference(x)
    for rank, result in enumerate(ranks):
        got = result[case]
        assert got["plain_loss"]
        torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-6, atol=0)
        # each rank holds the gradient of its own rows of the weight, and of its own tokens (sequence-sharded h)
        # or of every token (replicated h)
        torch.testing.assert_close(got["grad_w"], want["grad_w"].chunk(TP, dim=0)[rank], rtol=1e-5, atol=1e-7)
        grad_h = want["grad_h"].chunk(TP, dim=1)[rank] if case == "seq" else want["grad_h"]
        torch.testing.assert_close(got["grad_h"], grad_h, rtol=1e-5, atol=1e-7)
    assert ranks[0][case]["loss"] == ranks[1][case]["loss"]  # bitwise the same on every rank


def test_bf16_compute_follows_one_process_bf16(ranks: list[dict[str, Any]]) -> None:
    """compute_dtype = bf16 (the matmuls; softmax and the weight-gradient accumulation fp32): the single-process
    bf16 fused loss to bf16 precision."""
    x = ranks[0]["inputs"]
    want = reference(x, torch.bfloat16)
    for rank, result in enumerate(ranks):
        got = result["seq_bf16"]
        torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-3, atol=0)
        for key, dim in (("grad_w", 0), ("grad_h", 1)):
            ref = want[key].chunk(TP, dim=dim)[rank]
            assert (got[key] - ref).norm() < 1e-2 * ref.norm(), key  # bf16 rounding of the logits' gradient


def test_evaluation_computes_the_loss_only(ranks: list[dict[str, Any]]) -> None:
    want = reference(ranks[0]["inputs"])["loss"]
    for result in ranks:
        torch.testing.assert_close(result["eval"], want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", ["seq", "replicated", "plain"])
def test_logits_exist_one_chunk_of_one_vocabulary_shard_at_a_time(ranks: list[dict[str, Any]], case: str) -> None:
    """The largest tensor any op returned in forward + backward is one chunk's (CHUNK x vocab / tp) logits, or
    smaller: never (tokens x vocab), nor (tokens x vocab / tp)."""
    x = ranks[0]["inputs"]
    tokens, vocab = x["targets"].numel(), x["w"].shape[0]
    for result in ranks:
        largest = result[case]["largest"]
        numel = torch.Size(largest).numel()
        assert numel <= max(CHUNK * vocab // TP, tokens * x["h"].shape[-1]), largest
        assert numel < tokens * vocab // TP, largest
