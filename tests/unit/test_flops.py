"""`nemotron4 flops` reproduces the MFU column of the report's Table 2 (docs/paper.md section 4)."""

from __future__ import annotations

import json

import pytest
import torch

from nemotron4 import ModelConfig, Nemotron4
from nemotron4.cli import main
from nemotron4.config import FLAVOURS
from nemotron4.flops import flops_per_token, param_counts

# (GPUs, iteration time s, batch size in 4096-token sequences, MFU %) from Table 2.
TABLE_2 = [(768, 0.57, 384, 34.3), (1536, 0.58, 768, 33.3), (2304, 0.64, 1152, 30.5)]


@pytest.mark.parametrize(("gpus", "iter_time", "batch", "mfu"), TABLE_2)
def test_flops_command_reproduces_table_2(capsys, gpus: int, iter_time: float, batch: int, mfu: float) -> None:
    args = ["flops", "--model", "15b", "--seq-len", "4096", "--batch-size", str(batch), "--gpus", str(gpus),
            "--iter-time", str(iter_time), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(100 * out["mfu"] - mfu) < 0.5
    assert out["tokens_per_s"] == pytest.approx(batch * 4096 / iter_time)


def test_flops_text_output_states_convention(capsys) -> None:
    assert main(["flops", "--batch-size", "384", "--gpus", "768", "--iter-time", "0.57"]) == 0
    text = capsys.readouterr().out
    assert "MFU 34.1%" in text and "989" in text and "12.483B non-embedding" in text


@pytest.mark.parametrize("name", list(FLAVOURS))
def test_param_counts_match_the_model(name: str) -> None:
    cfg = ModelConfig.from_name(name)
    with torch.device("meta"):
        model = Nemotron4(cfg)
    counts = param_counts(cfg)
    assert model.param_counts() == counts
    total = sum(p.numel() for p in model.parameters())  # the formula against the tensors the model really holds
    embedding = model.tok_embeddings.weight.numel() + model.output.weight.numel()
    assert (counts["total"], counts["embedding"], counts["output"]) == (total, embedding, model.output.weight.numel())
    assert counts["non_embedding"] == total - embedding


def test_15b_numbers_match_paper() -> None:
    counts = param_counts(ModelConfig.from_name("15b"))
    assert counts["non_embedding"] == pytest.approx(12.48e9, rel=1e-3)  # docs/paper.md section 1
    assert counts["embedding"] == 2 * 256000 * 6144
    # 6 x (12.48B + 1.57B) + 12 x 32 x 4096 x 6144
    assert flops_per_token(ModelConfig.from_name("15b"), 4096) == pytest.approx(94.0e9, rel=1e-3)
