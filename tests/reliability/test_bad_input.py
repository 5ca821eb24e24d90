"""Bad input to `nemotron4 train` (through `nemotron4.cli.main`, in process): each is one clear line naming what and
where, exit code 2, no traceback, and no training step taken, including problems that only a later phase would
have met (they used to surface at the phase switch, after hours of training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SHORT, TINY_TOML, no_steps_taken

from nemotron4.cli import main
from nemotron4.config import ModelConfig
from nemotron4.interop.hf import to_hf
from nemotron4.model import build_model


def train_in_process(cwd: Path, run_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                     *overrides: str, config: Path = TINY_TOML) -> str:
    """Run `nemotron4 train` in this process; assert exit code 2, no traceback and no step taken; return stderr."""
    monkeypatch.chdir(cwd)
    code = main(["train", "--config", str(config), "--run-dir", str(run_dir), *SHORT, *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("nemotron4 train: error: ") and err.count("\n") == 1, err
    assert no_steps_taken(run_dir)
    return err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate qa.bin", r"phases.1.blend.sources.3.path (source 'qa'): {d}/qa.bin: "),  # phase 2's source
        ("corrupt web.idx", r"phases.0.blend.sources.0.path (source 'web'): {d}/web.idx: not a Megatron MMIDIDX"),
        ("truncate code_valid.idx", "phases.0.blend.sources.2.valid_path (source 'code'): {d}/code_valid.idx: "),
        ("remove books.bin", "phases.0.blend.sources.1.path (source 'books'): no token files data/tiny/books.bin"),
    ],
)
def test_corrupt_or_truncated_token_files(own_corpus: Path, tmp_path: Path, capsys, monkeypatch, damage: str,
                                          message: str) -> None:
    action, name = damage.split()
    path = own_corpus / "data" / "tiny" / name
    if action == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 7])
    elif action == "corrupt":
        path.write_bytes(b"NOTMMIDX!" + path.read_bytes()[9:])
    else:
        path.unlink()
    err = train_in_process(own_corpus, tmp_path / "run", capsys, monkeypatch)
    assert message.format(d="data/tiny") in err
    assert "rebuild" in err or "fix the path" in err


def test_token_id_beyond_the_vocabulary(corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Token files made with a larger tokenizer than the model's: a sample of every file's ids is checked before
    the model is built."""
    err = train_in_process(corpus, tmp_path / "run", capsys, monkeypatch, "--model.vocab_size", "128")
    assert "phases.0.blend.sources.2.path (source 'code'): data/tiny/code.bin: token id 152" in err
    assert "outside the vocabulary of 128" in err and "nemotron4 prepare" in err and "vocab_size" in err


def test_token_id_beyond_the_vocabulary_past_the_sample(corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Ids past the checked sample (here: no sample at all) are caught batch by batch, before the model sees them."""
    import nemotron4.train.run as run

    monkeypatch.setattr(run, "check_data", lambda plan: None)
    err = train_in_process(corpus, tmp_path / "run", capsys, monkeypatch, "--model.vocab_size", "128")
    assert "phase 'pretrain', step 1: token id" in err and "outside the model's vocabulary [0, 128)" in err
    assert "data/tiny/web" in err and "nemotron4 prepare" in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--phases.1.blend.sources.0.weight", "-1"],
         "phases.1.blend.sources.0.weight = -1.0 (source 'web'): weights must be finite and >= 0"),
        (["--phases.1.blend.sources.2.weight", "nan"], "phases.1.blend.sources.2.weight = nan (source 'code')"),
        (["--phases.1.blend.sources.0.weight", "0", "--phases.1.blend.sources.1.weight", "0"],
         "phases.1.blend: every source weight in category 'english' is zero"),
        (["--phases.0.blend.categories", "{english = 0, code = 0}"], "phases.0.blend.categories are all zero"),
        (["--phases.1.blend.categories.qa", "-15"], "phases.1.blend.categories.qa = -15.0: shares must be"),
    ],
)
def test_bad_blend_weights(corpus: Path, tmp_path: Path, capsys, monkeypatch, overrides: list[str],
                           message: str) -> None:
    assert message in train_in_process(corpus, tmp_path / "run", capsys, monkeypatch, *overrides)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[optim]\n", "[optim]\nwarmup = 10\n"), "unknown key optim.warmup; valid keys in optim: betas"),
        (("seq_len = 64", 'seq_len = "64"'), "train.seq_len: expected int, got str '64'"),
        (("seed = 1234", "seed = 12.5"), "train.seed: expected int, got float 12.5"),
        (("name = \"qa\"", "name = \"qa\"\nsize = 3"), "unknown key phases.1.blend.sources.3.size"),
        (("[model]\n", "[model]\nvocab = 7\n"), "unknown key model.vocab; valid keys in model"),
        (("[checkpoint]", "[checkpoint"), "is not valid TOML"),
    ],
)
def test_config_file_with_unknown_key_or_wrong_type(corpus: Path, tmp_path: Path, capsys, monkeypatch,
                                                    edit: tuple[str, str], message: str) -> None:
    config = tmp_path / "bad.toml"
    text = TINY_TOML.read_text()
    assert edit[0] in text
    config.write_text(text.replace(edit[0], edit[1], 1))
    err = train_in_process(corpus, tmp_path / "run", capsys, monkeypatch, config=config)
    assert message in err


@pytest.fixture(scope="module")
def unsupported_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face directory of the tiny model whose config.json uses a GELU MLP (not Nemotron-4's relu2)."""
    path = to_hf(build_model(ModelConfig.from_name("tiny"), seed=0), tmp_path_factory.mktemp("hf") / "gelu")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    return path


@pytest.mark.parametrize("key", ["model.init_from", "phases.1.init_from"])
def test_hf_directory_with_an_unsupported_config(corpus: Path, tmp_path: Path, capsys, monkeypatch,
                                                 unsupported_hf_dir: Path, key: str) -> None:
    extra = ["--phases.1.lr", "1e-4"] if key.startswith("phases") else []
    err = train_in_process(corpus, tmp_path / "run", capsys, monkeypatch, f"--{key}", str(unsupported_hf_dir), *extra)
    assert f"{unsupported_hf_dir}/config.json: hidden_act = 'gelu' is not supported" in err
    if key.startswith("phases"):
        assert "phases.1.init_from: " in err


def test_init_from_a_missing_path(corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    err = train_in_process(corpus, tmp_path / "run", capsys, monkeypatch, "--phases.1.init_from", "/no/such/model",
                           "--phases.1.lr", "1e-4")
    assert "phases.1.init_from: /no/such/model: neither a model flavour" in err
