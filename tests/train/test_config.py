"""The run config: TOML + overrides, one validation with errors that name the key, a faithful resolved copy."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
from helpers import TINY_TOML

from nemotron4.cli import main
from nemotron4.errors import ConfigError
from nemotron4.train.config_io import dumps_toml, job_from_dict, job_to_dict, load_job, parse_overrides, save_job
from nemotron4.train.resume import resume_conflicts

PAPER_TOML = TINY_TOML.parent / "nemotron4-15b.toml"


def test_configs_in_repo_load() -> None:
    tiny = load_job(TINY_TOML)
    assert [p.name for p in tiny.phases] == ["pretrain", "continued"]
    big = load_job(PAPER_TOML)
    assert big.model.flavour == "15b" and big.train.seq_len == 4096
    assert str(big.phases[0].batch_size) == "0:384 200B:768 400B:1152"  # Table 2
    assert big.phases[0].blend.categories == {"english": 70.0, "multilingual": 15.0, "code": 15.0}


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    job = load_job(TINY_TOML, ["--optim.eps", "1e-8", "--model.vocab_size", "1024"])
    save_job(job, tmp_path / "config.toml")
    assert load_job(tmp_path / "config.toml") == job
    assert job.model.model_config().vocab_size == 1024


def test_override_parsing() -> None:
    assert parse_overrides(["--optim.lr", "3e-4", "--train.compile=true", "--phases.0.batch_size", "0:8 1K:16",
                            "--optim.betas", "[0.9, 0.99]", "--model.flavour", "15b"]) == [
        ("optim.lr", 3e-4), ("train.compile", True), ("phases.0.batch_size", "0:8 1K:16"),
        ("optim.betas", [0.9, 0.99]), ("model.flavour", "15b"),
    ]
    job = load_job(TINY_TOML, ["--phases.1.lr", "1e-4", "--phases.0.tokens", "32K", "--checkpoint.keep_last=5"])
    assert job.phases[1].lr == 1e-4 and job.phases[0].tokens == 32_000 and job.checkpoint.keep_last == 5
    for bad, msg in [(["optim.lr", "1"], "unexpected argument"), (["--optim.lr"], "needs a value"),
                     (["--phases.7.lr", "1"], "has 2 entries"), (["--phases.lr", "1"], "give a list index")]:
        with pytest.raises(ConfigError, match=msg):
            load_job(TINY_TOML, bad)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--optim.lrr", "1"], r"unknown key optim\.lrr; valid keys in optim: betas, eps, weight_decay"),
        (["--trian.seed", "1"], r"unknown key trian; valid keys: model, train, optim, phases"),
        (["--model.vocab", "7"], r"unknown key model\.vocab; valid keys in model: .*vocab_size"),
        (["--train.seq_len", "'long'"], r"train\.seq_len: expected int, got str 'long'"),
        (["--optim.eps", "true"], r"optim\.eps: expected float, got bool True"),
        (["--model.n_layers", "2.5"], r"model\.n_layers: expected int, got float 2\.5"),
        (["--phases.0.blend.sources.0.weight", "'heavy'"], r"phases\.0\.blend\.sources\.0\.weight: expected float"),
        (["--model.flavour", "huge"], r"unknown model flavour 'huge'; choose one of: tiny"),
        (["--train.dtype", "fp8"], r"train\.dtype must be one of: auto, bf16, fp32"),
        (["--phases.0.decay", "step"], r"decay 'step' is not one of: cosine, linear, wsd, constant"),
        (["--phases.0.lr", "0", "--phases.0.tokens", "100X"], r"phases\.0\.tokens: expected a token count"),
        (["--phases.0.batch_size", "'0:6'"], r"global batch 6 is not divisible by micro_batch_size \(4\)"),
        (["--phases.0.blend.sources.0.category", "'news'"], r"category 'news', not one of the blend's categories"),
    ],
)
def test_validation_names_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_job(TINY_TOML, overrides)


def test_first_phase_needs_lr(tmp_path: Path) -> None:
    raw = tomllib.loads(TINY_TOML.read_text())
    del raw["phases"][0]["lr"]
    with pytest.raises(ConfigError, match=r"phases\.0\.lr is required"):
        job_from_dict(raw).validate()


def test_toml_writer_escapes() -> None:
    table = {"a": {"s": 'quote " and \\ and \n', "x": [1, 2.5, True], "inf": float("inf")}, "b": [{"k": 1}, {"k": 2}]}
    assert tomllib.loads(dumps_toml(table)) == table


def test_resume_conflicts() -> None:
    old = job_to_dict(load_job(TINY_TOML))
    assert resume_conflicts(old, job_to_dict(load_job(TINY_TOML, ["--checkpoint.interval", "3"])), 0) == []
    changed_later = job_to_dict(load_job(TINY_TOML, ["--phases.1.decay_fraction", "0.5"]))
    assert resume_conflicts(old, changed_later, 0) == []  # phase 1 has not started yet
    was = old["phases"][1]["decay_fraction"]
    assert resume_conflicts(old, changed_later, 1) == [f"phases.1.decay_fraction: {was!r} -> 0.5"]
    lowered = job_to_dict(load_job(TINY_TOML, ["--phases.1.lr", "1e-5", "--phases.1.min_lr", "1e-6"]))
    assert resume_conflicts(old, lowered, 1) == []  # the LR may change on resume (after a NaN stop)
    assert resume_conflicts(old, job_to_dict(load_job(TINY_TOML, ["--optim.eps", "1e-8"])), 0) == [
        "optim.eps: 1e-05 -> 1e-08"
    ]


def test_train_dry_run_prints_resolved_config(capsys, tmp_path, monkeypatch) -> None:
    from helpers import write_tiny_corpus

    monkeypatch.chdir(write_tiny_corpus(tmp_path))  # the dry run checks the token files tiny.toml names
    assert main(["train", "--config", str(TINY_TOML), "--run-dir", "unused", "--dry-run", "--optim.eps", "1e-6"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["optim"]["eps"] == 1e-6
    assert not (tmp_path / "unused").exists()


def test_cli_reports_config_errors(capsys) -> None:
    assert main(["train", "--config", str(TINY_TOML), "--run-dir", "x", "--optim.nope", "1"]) == 2
    assert "unknown key optim.nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["flops", "--batch-size", "1", "--iter-time", "1", "--optim.lr", "1"])  # only train takes overrides


def test_resume_tolerates_speed_options_and_fields_added_since_the_checkpoint() -> None:
    """cast_weights_once is a speed option (same numbers); a key an older checkpoint lacks counts as its default."""
    from nemotron4.train.config import JobConfig, PhaseSection

    job = load_job(TINY_TOML)
    old = job_to_dict(job)
    defaults = job_to_dict(JobConfig(phases=[PhaseSection() for _ in job.phases]))
    flipped = job_to_dict(load_job(TINY_TOML, ["--train.cast_weights_once", "false"]))
    assert resume_conflicts(old, flipped, 1, defaults) == []
    older = copy.deepcopy(old)
    del older["train"]["cast_weights_once"], older["train"]["seed"]  # written before these fields existed
    assert resume_conflicts(older, old, 1, defaults) == []  # 1234 is the default seed, and tiny.toml's
    assert resume_conflicts(older, job_to_dict(load_job(TINY_TOML, ["--train.seed", "7"])), 1, defaults) == [
        "train.seed: 1234 -> 7"
    ]
