"""The tiny two-phase recipe end to end, in process: it learns, the batch follows the ramp, the phase switch
changes the blend and the LR as configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import CHAIN_ENTROPY, markov_tokens, tiny_job, unigram_entropy

from nemotron4.train.data import build_phase_loader
from nemotron4.train.metrics import read_metrics
from nemotron4.train.trainer import Trainer


@pytest.fixture(scope="module")
def tiny_run(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    loaders: list[Any] = []

    def capture(*args: Any, **kwargs: Any) -> Any:
        loaders.append(build_phase_loader(*args, **kwargs))
        return loaders[-1]

    run_dir = tmp_path_factory.mktemp("tiny_run")
    job = tiny_job(corpus_dir)
    state = Trainer.create(job, run_dir, build_loader=capture).run()
    return {"job": job, "run_dir": run_dir, "state": state, "records": read_metrics(run_dir), "loaders": loaders}


def test_tiny_model_learns(tiny_run: dict[str, Any]) -> None:
    entropy = unigram_entropy(markov_tokens(30_000, 0, seed=100))  # ~3.9 nats
    final = tiny_run["records"][-1]["val_loss"]
    first = tiny_run["records"][0]["loss"]
    assert first > entropy  # starts at ~ln(vocab)
    for category in ("english", "code"):
        assert final[category] < 0.5 * entropy, final  # well below the unigram entropy
        assert final[category] > CHAIN_ENTROPY - 0.05  # and not below the data's floor (held-out, not memorised)


def test_metrics_schema_and_steps(tiny_run: dict[str, Any]) -> None:
    records = tiny_run["records"]
    assert [r["step"] for r in records] == list(range(1, 81))
    keys = {"step", "phase", "loss", "lr", "batch_size", "tokens", "tokens_per_s", "tflops", "mfu", "grad_norm",
            "memory_gib", "skipped"}
    assert all(keys <= set(r) for r in records)
    assert tiny_run["state"].tokens == records[-1]["tokens"] == 49152 + 16384
    assert (tiny_run["run_dir"] / "config.toml").exists()


def test_batch_size_changes_exactly_at_thresholds(tiny_run: dict[str, Any]) -> None:
    job, records = tiny_run["job"], tiny_run["records"]
    ramp = job.phases[0].batch_size  # 0:8 16384:16, seq_len 64
    pretrain = [r for r in records if r["phase"] == "pretrain"]
    for r in pretrain:
        start = r["phase_tokens"] - r["batch_size"] * 64
        assert r["batch_size"] == ramp.size_at(start)
    sizes = [r["batch_size"] for r in pretrain]
    assert sizes == [8] * 32 + [16] * 32  # 32 x 8 x 64 = 16384 tokens, then the new size
    assert pretrain[31]["tokens"] == 16384


def test_phase_switch_changes_lr_as_configured(tiny_run: dict[str, Any]) -> None:
    job, records = tiny_run["job"], tiny_run["records"]
    pre, cont = job.phases
    pretrain = [r for r in records if r["phase"] == "pretrain"]
    continued = [r for r in records if r["phase"] == "continued"]
    assert len(continued) == 16 and all(r["batch_size"] == 16 for r in continued)
    assert pretrain[3]["lr"] == pytest.approx(pre.lr * 2048 / 4096)  # warmup, LR at the end of the step
    assert max(r["lr"] for r in pretrain) == pytest.approx(pre.lr, rel=1e-3)
    assert pretrain[-1]["lr"] == pytest.approx(pre.min_lr)  # cosine down to min_lr
    # continued: lr unset, so it starts from where pretraining ended and decays linearly to 0 over 16384 tokens
    assert [r["lr"] for r in continued] == pytest.approx([pre.min_lr * (1 - (i + 1) / 16) for i in range(16)])
    assert cont.lr is None and continued[-1]["lr"] == 0.0


def test_phase_switch_changes_the_blend(tiny_run: dict[str, Any]) -> None:
    pre_loader, cont_loader = tiny_run["loaders"]
    shares = []
    for loader in (pre_loader, cont_loader):
        ds = loader.dataset
        names = [s.name for s in ds.sources]
        counts = np.bincount([ds.source_index(i) for i in range(loader.consumed_samples)], minlength=len(names))
        shares.append(dict(zip(names, counts / counts.sum(), strict=True)))
    pre, cont = shares
    assert pre["code"] == pytest.approx(0.30, abs=0.03) and "qa" not in pre
    assert pre["books"] == pytest.approx(0.35, abs=0.03)  # english 70% split by size (equal sizes)
    assert cont["qa"] == pytest.approx(0.15, abs=0.03)  # the new benchmark-style source
    assert cont["books"] == pytest.approx(0.45, abs=0.03) and cont["web"] == pytest.approx(0.15, abs=0.03)
    val = [r for r in tiny_run["records"] if "val_loss" in r]
    assert set(val[0]["val_loss"]) == {"english", "code"} and set(val[-1]["val_loss"]) == {"english", "code", "qa"}


@pytest.mark.parametrize(("local_rank", "order"), [("0", ["build", "barrier"]), ("3", ["barrier", "build"])])
def test_sample_indices_are_built_by_each_nodes_local_rank_0_first(
    monkeypatch: pytest.MonkeyPatch, local_rank: str, order: list[str]
) -> None:
    """Under torchrun, local rank 0 builds (and caches) the indices while the node's other ranks wait at a barrier,
    then they load the cache: one build per node."""
    from types import SimpleNamespace

    events: list[str] = []
    fake = SimpleNamespace(parallel=SimpleNamespace(barrier=lambda: events.append("barrier")))
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert Trainer._node_leader_first(fake, lambda: events.append("build") or "loader") == "loader"
    assert events == order
    events.clear()
    assert Trainer._node_leader_first(SimpleNamespace(parallel=None), lambda: events.append("build") or 1) == 1
    assert events == ["build"]
