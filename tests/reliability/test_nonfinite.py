"""NaN losses: a single one is skipped (tests/train/test_checkpoint.py::test_nan_skips_then_stops shows the skip,
the recovery and the stop); here, the stop leaves a run that the same command resumes from its last good
checkpoint once the cause is gone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import SHORT, STEPS, tiny_job

from nemotron4.train.metrics import read_metrics
from nemotron4.train.trainer import NonFiniteLossError, Trainer


def test_nan_stop_then_resume_from_the_last_good_checkpoint(corpus: Path, tmp_path: Path) -> None:
    job = tiny_job(corpus, *SHORT, "--train.max_nonfinite_in_row", "2")
    trainer = Trainer.create(job, tmp_path)
    real_loss = trainer.loss_fn

    def nan_from_step_5(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        loss = real_loss(model, batch)
        return loss * float("nan") if trainer.state.step >= 4 else loss

    trainer.loss_fn = nan_from_step_5
    with pytest.raises(NonFiniteLossError, match=r"2 non-finite .* in a row \(step 6\).*step_00000004"):
        trainer.run()
    assert [r["skipped"] for r in read_metrics(tmp_path)] == [False] * 4 + [True] * 2

    resumed = Trainer.create(tiny_job(corpus, *SHORT, "--train.max_nonfinite_in_row", "2"), tmp_path)  # cause fixed
    assert resumed.state.step == 4
    resumed.run()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1)) and not any(r["skipped"] for r in records)


def test_lowered_lr_after_a_nan_stop_is_accepted_and_recorded(corpus: Path, tmp_path: Path) -> None:
    """The stop message says "Lower the LR ... then re-run": the re-run takes the lower LR from the resumed step on
    and its first record names the change; the steps before are untouched."""
    job = tiny_job(corpus, *SHORT, "--train.max_nonfinite_in_row", "2")
    trainer = Trainer.create(job, tmp_path)
    real_loss = trainer.loss_fn
    trainer.loss_fn = lambda m, b: real_loss(m, b) * (float("nan") if trainer.state.step >= 2 else 1.0)
    with pytest.raises(NonFiniteLossError, match="Lower the LR"):
        trainer.run()
    before = read_metrics(tmp_path)[:2]
    old_lr = job.phases[0].lr
    with pytest.warns(UserWarning, match=rf"resuming with phases.0.lr = {old_lr / 10} \(was {old_lr}\)"):
        resumed = Trainer.create(tiny_job(corpus, *SHORT, "--phases.0.lr", str(old_lr / 10)), tmp_path)
    assert resumed.state.step == 2 and resumed.state.peak_lr == old_lr / 10
    resumed.run()
    records = read_metrics(tmp_path)
    assert records[:2] == before and [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert records[2]["config_changed"] == {"phases.0.lr": [old_lr, old_lr / 10]}
    assert "config_changed" not in records[3]
    assert 0 < records[2]["lr"] <= old_lr / 10  # the schedule at the new peak
