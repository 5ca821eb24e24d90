"""A continued-training phase can start from a Megatron-Core checkpoint (what NVIDIA releases through NeMo)."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import QUICK as SHORT
from helpers import tiny_job

from nemotron4.interop.megatron import write_megatron
from nemotron4.train.trainer import Trainer
from nemotron4.weights import describe, load_model


def test_phase_starts_from_a_megatron_checkpoint(corpus_dir: Path, tmp_path: Path) -> None:
    donor = Trainer.create(tiny_job(corpus_dir, *SHORT), tmp_path / "donor")
    write_megatron(donor.model.cfg, donor.model.named_parameters(), tmp_path / "mc")
    assert describe(tmp_path / "mc") == "megatron"
    weights = load_model(tmp_path / "mc")
    job = tiny_job(corpus_dir, *SHORT, "--phases.1.init_from", str(tmp_path / "mc"), "--phases.1.lr", "1e-3",
                   "--train.seed", "123")
    trainer = Trainer.create(job, tmp_path / "run")
    assert not all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), weights.parameters(), strict=True))
    trainer.state.phase, trainer.state.last_lr = 1, 1e-4
    trainer._start_phase()
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), weights.parameters(), strict=True))
