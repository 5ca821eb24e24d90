"""Tensor x data parallel training on CPU (gloo) equals one process: per-step losses, gradient norms and held-out
losses over 5 steps with a batch-size change and a phase switch; a tp=2 x dp=2 checkpoint resumes at tp=1 x dp=1 and
tp=1 x dp=4 with the same next-step losses; AdamW state per rank falls as 1/dp."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import launch_workers as launch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

BF16_RTOL = 5e-4  # one bf16 process against FSDP2 bf16: the same casts, other reduction orders (seen: 4e-5)
RTOL = 1e-5  # fp32, different reduction orders (sharded matmuls, all-reduces, reduce-scatters)
NO_FUSED = ("--train.fused_loss", "false")  # tp > 1: `loss_parallel` on the logits' vocabulary shards
LAYOUTS = {"tp2": (2, "--parallel.tp", "2", *NO_FUSED), "dp2": (2, "--parallel.dp", "2"),
           "tp2_dp2": (4, "--parallel.tp", "2", *NO_FUSED)}


@pytest.fixture(scope="module")
def runs(dist_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("dist_runs")
    out = {"single": launch(dist_corpus, root / "single", 1)}
    for name, (nproc, *overrides) in LAYOUTS.items():
        out[name] = launch(dist_corpus, root / name, nproc, *overrides)
    for name, (nproc, *overrides) in {"resumed_tp1_dp1": (1,), "resumed_tp1_dp4": (4, "--parallel.tp", "1")}.items():
        run_dir = root / name
        shutil.copytree(out["tp2_dp2"]["run_dir"], run_dir, ignore=shutil.ignore_patterns("optim"))
        for later in ("step_00000004", "step_00000005"):  # resume from the step-3 checkpoint
            shutil.rmtree(run_dir / "checkpoints" / later)
        (run_dir / "checkpoints" / "latest").write_text("step_00000003\n")
        out[name] = launch(dist_corpus, run_dir, nproc, *overrides)
    init_from = {"init_from_single": (1,), "init_from_tp2_dp2": (4, "--parallel.tp", "2", *NO_FUSED)}
    for name, (nproc, *overrides) in init_from.items():
        # full weights of a finished run, loaded at start (model.init_from) and again at the phase switch
        source = str(out["single"]["run_dir"])
        out[name] = launch(dist_corpus, root / name, nproc, *overrides, "--model.init_from", source,
                           "--phases.1.init_from", source)
    return out


def assert_same_steps(want: list[dict[str, Any]], got: list[dict[str, Any]]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(want, got, strict=True):
        same = ("batch_size", "phase", "tokens", "lr")
        assert [a[k] for k in same] == [b[k] for k in same], f"step {a['step']}"
        assert b["loss"] == pytest.approx(a["loss"], rel=RTOL), f"step {a['step']}"
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), f"step {a['step']}"
        if "val_loss" in a:
            assert b["val_loss"] == pytest.approx(a["val_loss"], rel=RTOL), f"step {a['step']}"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_losses_equal_one_process(runs: dict[str, dict[str, Any]], layout: str) -> None:
    want = runs["single"]["records"]
    assert [r["batch_size"] for r in want] == [8, 8, 16, 16, 16]
    assert [r["phase"] for r in want] == ["pretrain"] * 4 + ["continued"]
    assert_same_steps(want, runs[layout]["records"])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_fast_path_follows_one_process(runs: dict[str, dict[str, Any]], layout: str, dist_corpus: Path,
                                             tmp_path: Path) -> None:
    """compile (whole blocks, under DTensor TP and FSDP2 too), activation checkpointing and the fused loss (under
    tp > 1 the vocabulary-parallel one, tp x dp included), all on together: the recipe reports those paths on every
    rank, and the losses follow one process step for step."""
    nproc, *overrides = LAYOUTS[layout]
    fast = launch(dist_corpus, tmp_path / layout, nproc, *overrides, "--train.compile", "true",
                  "--train.activation_checkpointing", "true", "--train.fused_loss", "true")
    tp, dp = (2 if "tp2" in layout else 1), (1 if layout == "tp2" else 2)
    for rank in fast["ranks"]:
        paths = rank["paths"]
        assert paths["layout"] == f"tp{tp} x dp{dp} mesh"
        assert (paths["compile"], paths["activation_checkpointing"]) == ("blocks", "blocks")
        assert rank["compiled_blocks"] and rank["checkpointed"]
        assert paths["loss"] == ("vocab-parallel fused" if tp > 1 else "fused")
        assert paths["tensor_parallel"] == ("dtensor" if tp > 1 else "none")
        assert paths["fsdp2"] == ("fully_shard" if dp > 1 else "none")
    assert_same_steps(runs["single"]["records"], fast["records"])


def test_one_rank_mesh_equals_one_process(runs: dict[str, dict[str, Any]], dist_corpus: Path, tmp_path: Path) -> None:
    """parallel.force_mesh: the parallel code path (process group, mesh, step hooks) in one process, same steps."""
    meshed = launch(dist_corpus, tmp_path / "mesh", 1, "--parallel.force_mesh", "true")
    assert meshed["ranks"][0]["paths"]["layout"] == "tp1 x dp1 mesh"
    assert runs["single"]["ranks"][0]["paths"]["layout"] == "tp1 x dp1 single process"
    assert_same_steps(runs["single"]["records"], meshed["records"])


def test_wrapped_one_rank_mesh_equals_one_process(runs: dict[str, dict[str, Any]], dist_corpus: Path,
                                                  tmp_path: Path) -> None:
    """parallel.force_wrap: the whole parallel code path on one rank (DTensor TP plan on the size-1 tp dimension,
    FSDP2 on the size-1 dp one) with whole-block compile and the fused loss follows one process."""
    wrapped = launch(dist_corpus, tmp_path / "wrapped", 1, "--parallel.force_mesh", "true", "--parallel.force_wrap",
                     "true", "--train.compile", "true")
    paths = wrapped["ranks"][0]["paths"]
    assert (paths["layout"], paths["tensor_parallel"], paths["fsdp2"], paths["compile"], paths["loss"]) == (
        "tp1 x dp1 mesh wrapped", "dtensor", "fully_shard", "blocks", "fused (local shard)")
    assert wrapped["ranks"][0]["compiled_blocks"]
    assert_same_steps(runs["single"]["records"], wrapped["records"])


@pytest.mark.parametrize("layout", ["resumed_tp1_dp1", "resumed_tp1_dp4"])
def test_tp2_dp2_checkpoint_resumes_at_another_layout(runs: dict[str, dict[str, Any]], layout: str) -> None:
    got = runs[layout]["records"]
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5]  # steps 1-3 kept from before the checkpoint
    assert_same_steps(runs["tp2_dp2"]["records"][3:], got[3:])  # the same run, continued at another layout
    assert_same_steps(runs["single"]["records"][3:], got[3:])


def test_init_from_full_weights(runs: dict[str, dict[str, Any]]) -> None:
    assert_same_steps(runs["init_from_single"]["records"], runs["init_from_tp2_dp2"]["records"])
    assert runs["init_from_single"]["records"][0]["loss"] < runs["single"]["records"][0]["loss"] - 0.3  # trained


def test_optimizer_state_per_rank_falls_as_one_over_dp(runs: dict[str, dict[str, Any]]) -> None:
    def moments(name: str) -> list[int]:
        return [r["moment_bytes"] for r in runs[name]["ranks"]]

    (single,) = moments("single")
    assert single == 2 * 4 * 168_576  # exp_avg + exp_avg_sq in fp32 for the tiny model's 168,576 parameters
    assert moments("dp2") == [single // 2] * 2
    assert moments("resumed_tp1_dp4") == [single // 4] * 4
    tp2, tp2_dp2 = moments("tp2"), moments("tp2_dp2")
    assert tp2_dp2 == [tp2[0] // 2] * 4  # dp halves what tp left on each rank
    assert tp2 == [tp2[0]] * 2 and tp2[0] < single  # tp shards all but the (replicated) norm weights
    for name in ("dp2", "tp2_dp2", "resumed_tp1_dp4"):
        ranks = runs[name]["ranks"]
        assert [r["world"] for r in ranks] == [len(ranks)] * len(ranks)


def test_tp2_bf16_cast_weights_once_equals_autocast(dist_corpus: Path, tmp_path: Path) -> None:
    """Under tensor parallelism (DTensor parameters, dp = 1) bf16 copies made once per step give plain autocast's
    losses and gradient norms."""
    plain = launch(dist_corpus, tmp_path / "autocast", 2, "--parallel.tp", "2", "--train.dtype", "bf16",
                   "--train.cast_weights_once", "false", *NO_FUSED)
    once = launch(dist_corpus, tmp_path / "once", 2, "--parallel.tp", "2", "--train.dtype", "bf16", *NO_FUSED)
    assert {r["step_context"] for r in once["ranks"]} == {"CastWeightsOnce"}
    assert {r["step_context"] for r in plain["ranks"]} == {"nullcontext"}
    for a, b in zip(plain["records"], once["records"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6), f"step {a['step']}"
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), f"step {a['step']}"


def test_dp2_bf16_all_gathers_bf16_and_tracks_one_process(dist_corpus: Path, tmp_path: Path) -> None:
    """Under bf16, FSDP2 all-gathers bf16 copies of the fp32 masters (reducing gradients in fp32) and keeps the
    residual stream fp32: the losses follow one bf16 process to bf16 precision."""
    single = launch(dist_corpus, tmp_path / "single", 1, "--train.dtype", "bf16")
    dp2 = launch(dist_corpus, tmp_path / "dp2", 2, "--parallel.dp", "2", "--train.dtype", "bf16")
    assert {r["fsdp_param_dtype"] for r in dp2["ranks"]} == {"torch.bfloat16"}
    for a, b in zip(single["records"], dp2["records"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=BF16_RTOL), f"step {a['step']}"


@pytest.mark.parametrize("layout", ["tp2", "dp2"])
def test_compile_under_parallelism_equals_eager(runs: dict[str, dict[str, Any]], layout: str, dist_corpus: Path,
                                                tmp_path: Path) -> None:
    """train.compile under tp/dp compiles each whole block (the TP plan's hooks on its submodules inside the graph,
    FSDP2's around it): same losses as eager."""
    nproc, *overrides = LAYOUTS[layout]
    compiled = launch(dist_corpus, tmp_path / layout, nproc, *overrides, "--train.compile", "true")
    assert {r["compiled_blocks"] for r in compiled["ranks"]} == {True}
    assert {r["paths"]["compile"] for r in compiled["ranks"]} == {"blocks"}
    assert {r["compiled_blocks"] for r in runs[layout]["ranks"]} == {False}
    assert_same_steps(runs[layout]["records"], compiled["records"])


@pytest.mark.parametrize("layout", ["tp2", "dp2"])
def test_activation_checkpointing_under_parallelism_equals_eager(runs: dict[str, dict[str, Any]], layout: str,
                                                                 dist_corpus: Path, tmp_path: Path) -> None:
    """train.activation_checkpointing under tp/dp recomputes each block inside the TP / FSDP2 hooks: same losses."""
    nproc, *overrides = LAYOUTS[layout]
    ckpt = launch(dist_corpus, tmp_path / layout, nproc, *overrides, "--train.activation_checkpointing", "true")
    assert {r["checkpointed"] for r in ckpt["ranks"]} == {True}
    assert {r["checkpointed"] for r in runs[layout]["ranks"]} == {False}
    assert_same_steps(runs[layout]["records"], ckpt["records"])
