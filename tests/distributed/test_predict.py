"""`nemotron4 plan --predict`: the step-time model's arithmetic on a hand-computed case, and the command's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemotron4.config import ModelConfig
from nemotron4.distributed.plan import params_per_gpu
from nemotron4.distributed.predict import Links, measured_mfu, predict_step
from nemotron4.errors import UserError
from nemotron4.flops import flops_per_token


def test_hand_computed_case() -> None:
    """tiny at tp 2 x dp 2 on nodes of 2 GPUs (dp crosses InfiniBand), seq 8, global batch 8, micro-batch 2:
    accumulation 8 / (2 x 2) = 2."""
    cfg = ModelConfig.from_name("tiny")
    links = Links(nvlink=1e9, ib=1e8, gpus_per_node=2)
    got = predict_step(cfg, tp=2, dp=2, seq_len=8, global_batch=8, micro_batch=2, single_gpu_mfu=0.5, links=links,
                       peak_flops=1e12)
    compute = flops_per_token(cfg, 8) * 64 / (4 * 1e12 * 0.5)  # 64 tokens over 4 GPUs at half of 1 TFLOP/s
    # TP: 8 ring collectives per layer per micro-batch of an (8 x 2 x dim) bf16 tensor, half of it through each
    # GPU's NVLink (tp = 2), two micro-batches
    tp_comm = cfg.n_layers * 8 * (8 * 2 * cfg.dim * 2 / 2) / 1e9 * 2
    # FSDP2 over InfiniBand: 2 bf16 all-gathers per micro-batch (2 x 2 x 2p / 2) + one fp32 reduce-scatter (4p / 2)
    p = params_per_gpu(cfg, 2)
    fsdp = (2 * 2 * p + 2 * p) / 1e8
    assert got.accumulation == 2
    assert got.compute_s == pytest.approx(compute) and got.tp_comm_s == pytest.approx(tp_comm)
    assert got.fsdp_comm_s == pytest.approx(fsdp)
    assert got.exposed_fsdp_s == pytest.approx(max(0.0, fsdp - compute))
    assert got.step_s == pytest.approx(compute + tp_comm + max(0.0, fsdp - compute))
    assert got.tokens_per_s_per_gpu == pytest.approx(64 / got.step_s / 4)
    one = predict_step(cfg, 1, 1, 8, 8, 2, 0.5, links, 1e12)  # one GPU: no communication, the measured MFU
    assert (one.tp_comm_s, one.fsdp_comm_s) == (0.0, 0.0) and one.mfu == pytest.approx(0.5)


def test_bad_batch_and_bench_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not divisible"):
        predict_step(ModelConfig.from_name("tiny"), 1, 3, 8, 8, 1, 0.5)
    with pytest.raises(UserError, match="cannot read a bench result"):
        measured_mfu(tmp_path / "missing.json")
    (tmp_path / "b.json").write_text(json.dumps({"runs": [{"peer": "ours", "fp8": "off", "mfu": 0.61},
                                                          {"peer": "hf", "mfu": 0.9}]}))
    assert measured_mfu(tmp_path / "b.json") == 0.61


def test_command_prints_the_layouts_as_a_prediction() -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "nemotron4.cli", "plan", "--predict", "--json"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    res = json.loads(out)
    assert res["prediction"] is True
    layouts = [(r["tp"], r["dp"]) for r in res["rows"]]
    assert layouts == [(8, 1), (4, 2), (2, 4), (1, 8), (8, 96), (8, 192), (8, 288)]
    assert all(0 < r["mfu"] <= res["single_gpu_mfu"] + 1e-9 for r in res["rows"])
    text = subprocess.run([sys.executable, "-m", "nemotron4.cli", "plan", "--predict"], cwd=root,
                          capture_output=True, text=True, check=True).stdout
    assert text.startswith("PREDICTION") and "Table 2, 2304 GPUs" in text
