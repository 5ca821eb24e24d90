"""Checkpoints: keep-last-N, an atomic `latest`, no arbitrary unpickling, weights for other commands, NaN stop."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from helpers import tiny_job

from nemotron4.checkpoint import CheckpointManager, find_checkpoint, load_model_from_checkpoint
from nemotron4.errors import UserError
from nemotron4.train import step as step_module
from nemotron4.train.metrics import read_metrics
from nemotron4.train.trainer import NonFiniteLossError, Trainer

SHORT = ("--phases.0.tokens", "4096", "--phases.0.warmup_tokens", "1024", "--phases.1.tokens", "2048",
         "--metrics.eval_interval", "0")  # 8 + 2 steps of 8 x 64 and 16 x 64 tokens


def test_keep_last_and_atomic_latest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        manager.save(step, {"model": {"w": torch.full((2,), float(step))}}, {"step": step})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_00000002", "step_00000003"]
    assert manager.latest() == tmp_path / "checkpoints" / "step_00000003"
    # A save killed before its rename leaves only a .tmp directory: latest still names the last complete one,
    # and the next save sweeps the debris.
    (tmp_path / "checkpoints" / ".tmp-step_00000004").mkdir()
    assert manager.latest().name == "step_00000003"
    manager.save(5, {"model": {"w": torch.zeros(2)}}, {"step": 5})
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert not list((tmp_path / "checkpoints").glob(".latest.tmp"))
    loaded = {"model": {"w": torch.empty(2)}}
    CheckpointManager.load_tensors(manager.latest(), loaded)
    assert loaded["model"]["w"].tolist() == [0.0, 0.0]


def test_metadata_with_foreign_classes_is_refused(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    path = manager.save(1, {"model": {"w": torch.ones(2)}}, {})

    class Evil:
        def __reduce__(self):  # would run os.system on unpickling
            import os

            return (os.system, ("echo pwned",))

    (path / ".metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match=r"is damaged: \.metadata has 48 bytes"):  # the digests catch it first ...
        CheckpointManager.load_tensors(path, {"model": {"w": torch.empty(2)}})
    state = json.loads((path / "state.json").read_text())
    del state["files"]  # ... and without them (an older checkpoint, a forged state.json) the allow-list does
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(UserError, match="refusing to load checkpoint metadata: it references posix.system"):
        CheckpointManager.load_tensors(path, {"model": {"w": torch.empty(2)}})


def test_load_model_from_checkpoint_and_phase_init_from(corpus_dir: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    trainer = Trainer.create(tiny_job(corpus_dir, *SHORT), first)
    trainer.run()
    model = load_model_from_checkpoint(first)
    assert find_checkpoint(first).name == "step_00000010"
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    tokens = torch.randint(0, 512, (1, 16))
    assert torch.equal(model(tokens), trainer.model(tokens))
    with pytest.raises(UserError, match="no nemotron4 checkpoint"):
        load_model_from_checkpoint(tmp_path)

    # A new run whose continued-training phase starts from the first run's weights only (fresh optimizer).
    second = Trainer.create(tiny_job(corpus_dir, *SHORT, "--phases.1.init_from", str(first), "--phases.1.lr", "1e-3"),
                     tmp_path / "second")
    second.state.phase, second.state.last_lr = 1, 1e-4  # skip pretraining
    second._start_phase()
    assert all(torch.equal(p, q) for p, q in zip(second.model.parameters(), model.parameters(), strict=True))
    assert not second.optimizer.state  # fresh AdamW


def test_nan_skips_then_stops(corpus_dir: Path, tmp_path: Path) -> None:
    calls = {"n": 0}
    real_loss = step_module.cross_entropy_loss
    nan_micro_batches = {5} | set(range(10, 100))  # step 3 (micro-batches 4, 5), then every step from step 6

    def flaky_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real_loss(model, batch)
        return loss * float("nan") if calls["n"] - 1 in nan_micro_batches else loss

    job = tiny_job(corpus_dir, *SHORT, "--train.max_nonfinite_in_row", "3", "--checkpoint.interval", "4")
    trainer = Trainer.create(job, tmp_path)
    trainer.loss_fn = flaky_loss
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite .* in a row \(step 8\).*step_00000004"):
        trainer.run()
    records = read_metrics(tmp_path)
    assert [r["skipped"] for r in records] == [False, False, True, False, False, True, True, True]
    assert records[-1]["tokens"] == 8 * 512  # skipped steps still consume their data
    assert trainer.loader.consumed_samples == 8 * 8
    # the last good checkpoint (step 4) is usable
    assert find_checkpoint(tmp_path).name == "step_00000004"
    load_model_from_checkpoint(tmp_path)
