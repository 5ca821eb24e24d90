"""`nemotron4 plan`: the report's three stages (docs/paper.md, Table 2) come out at its iteration times and about
13 days, and the memory components scale as their formulas say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemotron4.cli import main
from nemotron4.config import ModelConfig
from nemotron4.distributed.plan import fused_loss_bytes, memory_per_gpu, params_per_gpu, parse_stages, plan_stages
from nemotron4.errors import ConfigError
from nemotron4.flops import param_counts

pytestmark = pytest.mark.distributed

CFG = ModelConfig.from_name("15b")


def test_paper_stages_take_about_13_days() -> None:
    plans = plan_stages(CFG, parse_stages("paper"), tp=8, seq_len=4096)
    assert [p.dp for p in plans] == [96, 192, 288]  # Table 2's DP sizes
    assert [p.accumulation for p in plans] == [4, 4, 4]
    assert [p.iteration_s for p in plans] == pytest.approx([0.57, 0.58, 0.64], abs=0.01)  # Table 2
    assert [p.days for p in plans] == pytest.approx([0.8, 0.4, 11.9], abs=0.06)
    assert sum(p.days for p in plans) == pytest.approx(13.0, rel=0.1)


def test_memory_components() -> None:
    p = params_per_gpu(CFG, 8)
    norms = (2 * CFG.n_layers + 1) * 2 * CFG.dim
    assert (p - norms) * 8 + norms == param_counts(CFG)["total"]  # every matrix split 8 ways, norms replicated
    m96, m288 = (memory_per_gpu(CFG, tp=8, dp=dp, seq_len=4096) for dp in (96, 288))
    assert m96.weights == m288.weights == 2 * p and m96.gradients == 2 * p  # bf16, sharded over tp only
    assert m96.optimizer == 12 * p / 96 and m288.optimizer == pytest.approx(m96.optimizer / 3)  # fp32 x 3, over dp
    s, h, t = 4096, CFG.dim, 8
    assert m96.activations == CFG.n_layers * 34 * s * h / t  # selective recompute (Korthikanti et al. eq. 3)
    none = memory_per_gpu(CFG, tp=8, dp=96, seq_len=4096, recompute="none")
    full = memory_per_gpu(CFG, tp=8, dp=96, seq_len=4096, recompute="full")
    assert none.activations == m96.activations + CFG.n_layers * 5 * CFG.n_heads * s * s / t
    assert full.activations < m96.activations < none.activations
    assert memory_per_gpu(CFG, tp=8, dp=96, seq_len=4096, micro_batch=2).activations == 2 * m96.activations
    assert 8 * 2**30 < m96.total < 80e9  # fits an 80 GB H100 with room to spare, as trained in the report
    assert memory_per_gpu(CFG, 8, 96, 4096, grad_bytes=4).gradients == 2 * m96.gradients


def test_bad_stages_are_refused() -> None:
    with pytest.raises(ConfigError, match="gpus:batch_size:tokens:mfu"):
        parse_stages("768:384:200B")
    with pytest.raises(ConfigError, match="not a multiple of dp"):
        plan_stages(CFG, parse_stages("768:100:200B:0.3"), tp=8, seq_len=4096)
    with pytest.raises(ConfigError, match="does not divide"):
        plan_stages(CFG, parse_stages("764:384:200B:0.3"), tp=8, seq_len=4096)


def test_plan_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "15b", "--gpus", "2304", "--tp", "8", "--batch-size", "1152", "--seq-len",
                 "4096", "--mfu", "30.5", "--tokens", "7.6T", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_days"] == pytest.approx(11.9, abs=0.05)
    assert out["stages"][0]["dp"] == 288
    assert main(["plan", "--stages", "paper"]) == 0
    assert "13.2 days" in capsys.readouterr().out
    assert main(["plan", "--tp", "3"]) == 2  # 3 does not divide n_kv_heads = 8: a clear error, not a traceback
    assert "n_kv_heads" in capsys.readouterr().err


@pytest.mark.parametrize(("result", "micro_batches", "rel"),
                         [("train_h200.json", {1, 2, 4}, 0.03), ("train_h200_15b_width.json", {1, 2}, 0.05)])
def test_nemotron4_layout_matches_the_h200_measurements(result: str, micro_batches: set[int], rel: float) -> None:
    """The planner's model of our own layout against the peak memory bench/train.py measured on one H200 (seq 4096):
    Minitron-4B at micro-batches 1, 2, 4 within 3%, the 15B width with 6 layers at 1, 2 within 5%."""
    measured = json.loads((Path(__file__).parents[2] / "bench/results" / result).read_text())
    cfg = ModelConfig.from_dict(measured["config"])
    runs = [r for r in measured["runs"] if r["peer"] == "ours" and "peak_mem_gib" in r]
    assert {r["micro_batch"] for r in runs} >= micro_batches
    for r in runs:
        m = memory_per_gpu(cfg, 1, 1, 4096, r["micro_batch"], layout="nemotron4", accumulation=r["accumulation"])
        assert m.total / 2**30 == pytest.approx(r["peak_mem_gib"], rel=rel), r["micro_batch"]


def test_wrapped_one_rank_mesh_matches_the_h200_measurement() -> None:
    """bench/parallel_overhead.py on one H200 (Minitron-4B, seq 4096, 2 x 4): the whole parallel path's peak (FSDP2
    + DTensor TP on a one-rank mesh) within 3% of `memory_per_gpu(..., fsdp=True)` (measured 99.9 against 99.3)."""
    measured = json.loads((Path(__file__).parents[2] / "bench/results/parallel_overhead_h200.json").read_text())
    cfg = ModelConfig.from_name(measured["model"], max_seq_len=4096)
    for r in measured["runs"]["parallel"]:
        assert r["paths"]["fsdp2"] == "fully_shard" and r["paths"]["tensor_parallel"] == "dtensor"
        m = memory_per_gpu(cfg, 1, 1, measured["seq_len"], r["micro_batch"], layout="nemotron4",
                           accumulation=r["accumulation"], fsdp=True)
        assert m.total / 2**30 == pytest.approx(r["peak_mem_gib"], rel=0.03)


def test_wrapped_one_rank_mesh_plan() -> None:
    """FSDP2 on a one-rank mesh with cast-once (parallel.force_wrap, bench/parallel_overhead.py): against one process
    the bf16 copies cover every unit, not only the blocks (+2 bytes x (embedding + output + norms)), and the fused
    loss's bf16 copy of the output weight is FSDP2's (-2 V h): hand-computed on the tiny model."""
    cfg = ModelConfig.from_name("tiny")
    h, V = cfg.dim, cfg.vocab_size
    single = memory_per_gpu(cfg, 1, 1, 64, 2, layout="nemotron4", accumulation=4)
    wrapped = memory_per_gpu(cfg, 1, 1, 64, 2, layout="nemotron4", accumulation=4, fsdp=True)
    p = params_per_gpu(cfg, 1)
    non_block = 2 * V * h + (2 * cfg.n_layers + 1) * 2 * h
    assert p == 168_576 and non_block == 2 * 512 * 64 + 5 * 2 * 64 == 66_176  # embedding + output + 5 norms
    assert wrapped.weights - single.weights == 2 * non_block
    assert single.logits - wrapped.logits == 2 * V * h
    assert (wrapped.gradients, wrapped.optimizer, wrapped.activations) == (
        single.gradients, single.optimizer, single.activations)
    assert wrapped.total - single.total == 2 * non_block - 2 * V * h


def test_fused_loss_term_under_tp() -> None:
    """15B at tp 8, micro-batch 1 x 4096 (one chunk): the vocabulary-parallel fused loss holds this rank's fp32
    output-weight gradient, its bf16 copy of the output weight, one chunk of fp32 logits over V / 8 and their bf16
    gradient, and the hidden states (fp32 local, bf16 gathered, bf16 gradient); never the full logits. FSDP2's
    gathered weight is bf16 already (no copy); without the fused loss the term is the full logits' 6 s b V / t."""
    V, h, s, t = CFG.vocab_size, CFG.dim, 4096, 8
    fused = memory_per_gpu(CFG, t, 1, s, layout="nemotron4", accumulation=8)
    assert fused.logits == 4 * V * h / t + 2 * V * h / t + (4 + 2) * s * V / t + s * h * (4 / t + 2 + 2)
    assert fused.logits / 2**30 == pytest.approx(1.937, abs=1e-3)
    assert fused.total / 2**30 == pytest.approx(39.65, abs=0.01)  # docs/distributed.md
    sharded = memory_per_gpu(CFG, t, 2, s, layout="nemotron4", accumulation=4)
    assert fused.logits - sharded.logits == 2 * V * h / t
    unfused = memory_per_gpu(CFG, t, 1, s, layout="nemotron4", accumulation=8, fused_loss=False)
    assert unfused.logits == 6 * s * V / t
    assert (unfused.weights, unfused.activations) == (fused.weights, fused.activations)
    assert memory_per_gpu(CFG, 4, 2, s, layout="nemotron4", accumulation=4).total / 2**30 == pytest.approx(
        55.09, abs=0.01)  # docs/distributed.md


def test_fused_loss_is_one_rule_at_every_tp() -> None:
    """One process (tp = 1) and the vocabulary-parallel loss are the same rule: per chunk element 2 + 2 bytes in one
    process (bf16 logits read by one compiled kernel, bf16 gradient), 4 + 2 under TP (fp32 logits held across the
    all-reduces); a second chunk's tokens add only hidden-state bytes (one chunk is live at a time)."""
    V, h = CFG.vocab_size, CFG.dim
    for tp in (1, 2, 8):
        for micro in (1, 2):
            m = memory_per_gpu(CFG, tp, 1, 4096, micro, layout="nemotron4", accumulation=8 // micro)
            assert m.logits == fused_loss_bytes(V, h, tp, 4096 * micro), (tp, micro)
    one = fused_loss_bytes(V, h, 1, 4096)
    assert one == 6 * V * h + 4 * 4096 * V + 8 * 4096 * h
    assert fused_loss_bytes(V, h, 1, 8192) - one == 8 * 4096 * h  # the chunk does not grow with the tokens
    assert fused_loss_bytes(V, h, 1, 1000) == 6 * V * h + 4 * 1000 * V + 8 * 1000 * h  # a short micro-batch
    assert fused_loss_bytes(V, h, 2, 4096, weight_copy=False) == 2 * V * h + 3 * 4096 * V + 4096 * h * (2 + 4)
    for cast_once in (True, False):  # FSDP2 gathers the output weight in bf16 with or without cast-once: no copy
        m = memory_per_gpu(CFG, 2, 4, 4096, layout="nemotron4", accumulation=2, cast_once=cast_once)
        assert m.logits == fused_loss_bytes(V, h, 2, 4096, weight_copy=False)


def test_plan_command_fused_loss_flag(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "--layout", "nemotron4", "--gpus", "8", "--tp", "8", "--batch-size", "8", "--json"]
    assert main(args) == 0
    fused = json.loads(capsys.readouterr().out)
    assert main([*args, "--no-fused-loss"]) == 0
    unfused = json.loads(capsys.readouterr().out)
    assert (fused["fused_loss"], unfused["fused_loss"]) == (True, False)
    assert unfused["stages"][0]["memory_bytes"]["logits"] == 6 * 4096 * CFG.vocab_size / 8
    assert fused["stages"][0]["memory_bytes"]["logits"] == fused_loss_bytes(CFG.vocab_size, CFG.dim, 8, 4096)


def test_nemotron4_layout_shards() -> None:
    p = params_per_gpu(CFG, 8)
    one, two = (memory_per_gpu(CFG, 8, dp, 4096, layout="nemotron4", accumulation=4) for dp in (1, 2))
    assert one.optimizer == 8 * p and two.optimizer == 4 * p  # Adam m + v, sharded over dp by FSDP2
    # FSDP2 accumulates unsharded fp32 gradients; the sharded ones appear only in the last backward's reduce-scatter
    assert one.gradients == 4 * p and two.gradients == 4 * p
    assert memory_per_gpu(CFG, 8, 2, 4096, layout="nemotron4", accumulation=1).gradients == 2 * p
    old = memory_per_gpu(CFG, 8, 2, 4096, layout="nemotron4", accumulation=4, cast_once=False)
    assert old.gradients == 4 * p / 2 + 4 * p  # without cast-once: the first plan's terms, kept
    with pytest.raises(ConfigError, match="layout"):
        memory_per_gpu(CFG, 8, 1, 4096, layout="zero1")
