"""The trainer's plan -> check -> build: every error that needs no allocation is raised before the model is built
(the build function is replaced by a spy that fails the test if it is reached), as one line that names the key and
says what to do. One test per class of error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import tiny_job

import nemotron4.train.trainer as trainer_module
from nemotron4.errors import UserError
from nemotron4.train.run import check_run, plan_run
from nemotron4.train.trainer import Trainer


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the build stage's model build with a spy: reaching it means a check came too late."""
    calls: list = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model was built before the error was found")

    monkeypatch.setattr(trainer_module, "build_recipe", spy)
    return calls


def refused(job, run_dir: Path, calls: list) -> str:
    with pytest.raises(UserError) as info:
        Trainer.create(job, run_dir)
    message = str(info.value)
    assert not calls and "\n" not in message, message
    return message


def test_plan_resolves_without_building(corpus_dir: Path, tmp_path: Path, no_build: list) -> None:
    plan = check_run(plan_run(tiny_job(corpus_dir), tmp_path / "run"))
    assert plan.model_config.vocab_size == 512 and plan.first_phase == 0 and plan.latest is None
    assert (plan.world_size, plan.dims.dp, plan.dims.tp) == (1, 1, 1)
    web = str(corpus_dir / "data/tiny/web")
    assert set(plan.data[web]) == {"bin", "idx", "blake2b"}  # the data content digest (samples.content_digest)
    assert not no_build and not (tmp_path / "run").exists()  # nothing written either


def test_seq_len_beyond_the_model(corpus_dir: Path, tmp_path: Path, no_build: list) -> None:
    message = refused(tiny_job(corpus_dir, "--train.seq_len", "512"), tmp_path / "run", no_build)
    assert message.startswith("train.seq_len = 512 exceeds the model's max_seq_len 256 (model.flavour 'tiny')")
    assert "lower train.seq_len or set model.max_seq_len" in message


def test_token_ids_beyond_the_vocabulary(corpus_dir: Path, tmp_path: Path, no_build: list) -> None:
    message = refused(tiny_job(corpus_dir, "--model.vocab_size", "128"), tmp_path / "run", no_build)
    assert message.startswith("phases.0.blend.sources.2.path (source 'code'): ") and "token id 152" in message
    assert "outside the vocabulary of 128" in message and "nemotron4 prepare" in message


def test_tokenizer_larger_than_the_vocabulary(corpus_dir: Path, tmp_path: Path, no_build: list) -> None:
    """The tokenizer `prepare` recorded beside the token files has more pieces than the model's embedding."""
    from helpers import DATA_GERMAN as GERMAN
    from helpers import DATA_WORDS as WORDS
    from helpers import train_fake_tokenizer

    tokens = tmp_path / "data" / "tiny"
    shutil.copytree(corpus_dir / "data" / "tiny", tokens)
    tok = train_fake_tokenizer(tmp_path / "tok.model", WORDS, GERMAN, max_words=120)
    sources = [{"name": n, "path": n, "valid_path": f"{n}_valid"} for n in ("web", "books", "code", "qa")]
    (tokens / "sources.json").write_text(json.dumps({"format": "nemotron4-tokens", "version": 1,
                                                     "tokenizer": str(tok), "sources": sources}))
    message = refused(tiny_job(tmp_path, "--model.vocab_size", "300"), tmp_path / "run", no_build)
    assert message.startswith("phases.0.blend.sources.0.path (source 'web'): the token files were made with "
                              f"tokenizer {tok} (400 pieces), more than the model's vocab_size 300")
    assert "set model.vocab_size >= 400" in message


def test_missing_token_files(corpus_dir: Path, tmp_path: Path, no_build: list) -> None:
    job = tiny_job(corpus_dir, "--phases.1.blend.sources.3.path", "'data/tiny/nowhere'")
    message = refused(job, tmp_path / "run", no_build)
    assert message.startswith("phases.1.blend.sources.3.path (source 'qa'): no token files ")
    assert "nowhere.bin" in message and "fix the path" in message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--parallel.tp", "3"], "parallel.tp = 3 does not divide the world size 4"),
        (["--parallel.tp", "2", "--parallel.dp", "4"], "set parallel.dp = 2"),
        (["--parallel.tp", "4"], "parallel.tp = 4 must divide n_kv_heads = 2"),
        (["--parallel.tp", "1"],
         "phases.0.batch_size: global batch 8 is not divisible by micro_batch_size (4) x data-parallel size (4)"),
    ],
)
def test_bad_layout(corpus_dir: Path, tmp_path: Path, no_build: list, monkeypatch: pytest.MonkeyPatch,
                    overrides: list[str], message: str) -> None:
    """Against the launch (4 processes, as torchrun would set) and the model, before any process group."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert message in refused(tiny_job(corpus_dir, *overrides), tmp_path / "run", no_build)
