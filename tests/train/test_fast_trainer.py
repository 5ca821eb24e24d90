"""The fast paths reach `nemotron4 train`: a run with them gives the losses of the plain run."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import QUICK as SHORT
from helpers import tiny_job

from nemotron4.errors import ConfigError
from nemotron4.train.metrics import read_metrics
from nemotron4.train.trainer import Trainer


def test_compiled_fused_checkpointed_run_matches_plain_run(corpus_dir: Path, tmp_path: Path) -> None:
    plain = Trainer.create(tiny_job(corpus_dir, *SHORT, "--train.fused_loss", "false"), tmp_path / "plain")
    plain.run()
    fast = Trainer.create(tiny_job(corpus_dir, *SHORT, "--train.compile", "true", "--train.fused_loss", "true",
                            "--train.activation_checkpointing", "true"), tmp_path / "fast")
    assert fast.loss_fn is not plain.loss_fn
    fast.run()
    a, b = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "fast")
    assert len(a) == len(b) == 10
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4), (x["step"], x["loss"], y["loss"])


def test_attention_backend_is_validated(corpus_dir: Path) -> None:
    with pytest.raises(ConfigError, match="attention_backend"):
        tiny_job(corpus_dir, "--train.attention_backend", "fastest").validate()


def test_token_ids_beyond_the_vocabulary_stop_before_the_step(corpus_dir: Path, tmp_path: Path) -> None:
    """The per-batch guard behind the check stage (which would refuse these files first): built without it."""
    from nemotron4.errors import UserError
    from nemotron4.train.run import plan_run

    trainer = Trainer(plan_run(tiny_job(corpus_dir, *SHORT, "--model.vocab_size", "100"), tmp_path / "run"))
    with pytest.raises(UserError, match=r"outside the model's vocabulary \[0, 100\).*nemotron4 prepare"):
        trainer.run()
    assert trainer.state.step == 0
