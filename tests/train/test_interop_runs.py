"""A training run is a model source like any other: convert it to HF, and start a phase from an HF directory."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from helpers import QUICK as SHORT
from helpers import tiny_job

from nemotron4.checkpoint import load_model_from_checkpoint
from nemotron4.cli import main
from nemotron4.interop.hf import from_hf, to_hf
from nemotron4.train.trainer import Trainer
from nemotron4.weights import describe, load_config


def test_convert_a_training_run_to_hf_and_back(corpus_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer.create(tiny_job(corpus_dir, *SHORT), run).run()
    assert describe(run) == "checkpoint"
    ours = load_model_from_checkpoint(run).eval()
    assert load_config(run) == ours.cfg
    assert main(["convert", str(run), str(tmp_path / "hf"), "--to", "hf"]) == 0
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(0, ours.cfg.vocab_size, (2, 12))
    with torch.no_grad():
        assert (ref(x).logits - ours(x)).abs().max().item() <= 1e-5


def test_phase_starts_from_an_hf_directory(corpus_dir: Path, tmp_path: Path) -> None:
    donor = Trainer.create(tiny_job(corpus_dir, *SHORT), tmp_path / "donor")
    to_hf(donor.model, tmp_path / "hf")  # untrained weights are enough: they differ from the new run's init
    hf_weights = from_hf(tmp_path / "hf")
    job = tiny_job(corpus_dir, *SHORT, "--phases.1.init_from", str(tmp_path / "hf"), "--phases.1.lr", "1e-3",
                   "--train.seed", "123")
    trainer = Trainer.create(job, tmp_path / "run")
    assert not all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), hf_weights.parameters(),
                                                     strict=True))
    trainer.state.phase, trainer.state.last_lr = 1, 1e-4
    trainer._start_phase()
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), hf_weights.parameters(), strict=True))
