"""Values and blends that used to train silently wrong or fail at the first evaluation, hours in: all refused
before step 1 with one line naming the key (docs/reliability.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import SHORT, TINY_TOML, tiny_job, write_source

from nemotron4.cli import main
from nemotron4.errors import ConfigError, UserError
from nemotron4.train.run import check_run, plan_run


@pytest.mark.parametrize(("override", "message"), [
    (("--phases.0.lr", "-3e-4"), "phases.0.lr must be a positive number, got -0.0003"),
    (("--phases.0.lr", "nan"), "phases.0.lr must be a positive number, got nan"),
    (("--phases.0.min_lr", "1.0"), "phases.0.min_lr must be in [0, lr = "),
    (("--phases.1.min_lr", "-1e-5"), "phases.1.min_lr must be in [0, lr = None], got -1e-05"),
    (("--optim.betas", "[0.9, 1.0]"), "optim.betas must be two numbers in [0, 1), got [0.9, 1.0]"),
    (("--optim.betas", "[-0.1, 0.95]"), "optim.betas must be two numbers in [0, 1)"),
    (("--optim.eps", "-1e-8"), "optim.eps must be a positive number, got -1e-08"),
    (("--optim.weight_decay", "-0.1"), "optim.weight_decay must be a number >= 0"),
    (("--optim.grad_clip", "inf"), "optim.grad_clip must be a number >= 0, got inf"),
    (("--train.device", '"tpu"'), "train.device = tpu: not a device nemotron4 runs on; use cpu, cuda, cuda:N or auto"),
])
def test_bad_values_are_refused_in_one_line(override: tuple[str, str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--config", str(TINY_TOML), "--run-dir", str(tmp_path / "run"), "--dry-run", *override])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("nemotron4 train: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "CUDA", "cuda:", " cpu", "mps", "cuda:0:1", "", "auto "])
def test_train_device_is_refused_by_the_rule_of_generate_and_eval(name: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """train.device's config check and `pick_device` (generate, eval, the trainer's check stage) are one rule: the
    same names refused in the same words, before anything is built."""
    from nemotron4.weights import check_device_name, pick_device

    with pytest.raises(ConfigError) as refused:
        pick_device(name, "train.device =")
    assert "not a device nemotron4 runs on" in str(refused.value)
    with pytest.raises(ConfigError, match="^" + re.escape(str(refused.value)) + "$"):
        check_device_name(name, "train.device =")
    code = main(["train", "--config", str(TINY_TOML), "--run-dir", str(tmp_path / "run"), "--dry-run",
                 "--train.device", json.dumps(name)])
    assert code == 2 and capsys.readouterr().err.strip() == f"nemotron4 train: error: {refused.value}"


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:3"])
def test_train_device_names_the_rule_accepts(name: str) -> None:
    """What the spelling rule accepts, whether or not this machine has the GPU (that is the check stage's)."""
    from nemotron4.weights import check_device_name

    check_device_name(name, "train.device =")
    check_device_name(None)


def test_non_utf8_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(TINY_TOML.read_bytes() + b'\n# caf\xe9\n')
    code = main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "run"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(bad) in err and "UTF-8" in err, err


def _check(corpus: Path, tmp_path: Path, mutate) -> None:
    job = tiny_job(corpus, *SHORT)
    mutate(job)
    check_run(plan_run(job, tmp_path / "run"))


def _weights(job, zero: str) -> None:
    for s in job.phases[0].blend.sources:
        s.weight = 0.0 if s.name == zero else 1.0


def test_zero_weight_on_the_only_held_out_source(corpus: Path, tmp_path: Path) -> None:
    def mutate(job) -> None:
        _weights(job, zero="web")
        job.phases[0].blend.sources[1].valid_path = None  # books: english's held-out files are web's only
    with pytest.raises(ConfigError, match=r"phases\.0\.blend: the held-out evaluation of category 'english' "
                                          r"\(sources with a valid_path: \['web'\]\) would fail: .*every source weight "
                                          r"in category 'english' is zero"):
        _check(corpus, tmp_path, mutate)


def test_zero_share_of_a_category_with_held_out_files(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"phases\.0\.blend: the held-out evaluation of category 'code' .* would "
                                          r"fail: blend\.categories are all zero"):
        _check(corpus, tmp_path, lambda job: job.phases[0].blend.categories.update(code=0.0))


def test_empty_source_with_an_explicit_weight(corpus: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write_source(empty, np.zeros(0, np.int32))

    def mutate(job) -> None:
        _weights(job, zero="none")
        job.phases[0].blend.sources[0].path = str(empty)
    with pytest.raises(ConfigError, match=r"phases\.0\.blend: source 'web' \(.*empty\) has share 0\.35 but holds no "
                                          r"tokens; give it weight 0"):
        _check(corpus, tmp_path, mutate)


def test_out_of_vocabulary_id_in_a_held_out_file(corpus: Path, tmp_path: Path) -> None:
    oov = tmp_path / "oov_valid"
    tokens = np.arange(3000, dtype=np.int32) % 500
    tokens[1234] = 5000
    write_source(oov, tokens)
    with pytest.raises(UserError, match=r"phases\.0\.blend\.sources\.0\.valid_path \(source 'web'\): .*oov_valid\.bin: "
                                        r"token id 5000 at position 1234 .* outside the vocabulary of 512"):
        _check(corpus, tmp_path, lambda job: setattr(job.phases[0].blend.sources[0], "valid_path", str(oov)))


def test_the_tiny_recipe_still_passes(corpus: Path, tmp_path: Path) -> None:
    _check(corpus, tmp_path, lambda job: None)
