"""Bad input to `nemotron4 generate` / `eval` and to the HF reader (issue 21's last rows): one line naming the flag
or field and what to do, exit 2, before any weights are read; a tokenizer that cannot belong to the model warns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import nemotron4_cmd

from nemotron4 import ModelConfig, build_model
from nemotron4.cli import main
from nemotron4.interop.hf import to_hf
from nemotron4.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer
from nemotron4.weights import check_tokenizer, save_weights

TEXT = ["the cat sat on the mat and the dog sat on the log", "numbers 12345 and 67890", "der Hund"] * 30


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny weights with their own 300-piece tokenizer beside them."""
    root = tmp_path_factory.mktemp("gen_inputs")
    train_tokenizer(TEXT, root / "tok.model", TokenizerConfig(vocab_size=300, num_threads=1))
    save_weights(build_model(ModelConfig.from_name("tiny", vocab_size=300), seed=0), root / "weights")
    shutil.copyfile(root / "tok.model", root / "weights" / "tokenizer.model")
    return root / "weights"


def env(locale: str) -> dict[str, str]:
    """This environment (PYTHONPATH: the code under test) in `locale`, Python's UTF-8 mode off."""
    drop = ("LANG", "LANGUAGE", "PYTHONIOENCODING", "PYTHONUTF8")
    return {**{k: v for k, v in os.environ.items() if k not in drop and not k.startswith("LC_")},
            "LC_ALL": locale, "PYTHONUTF8": "0", "OMP_NUM_THREADS": "1"}


def one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nemotron4 generate: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--temperature", "nan"], ["--temperature nan", "not a finite number", "pass 0 for greedy"]),
    (["--temperature", "inf"], ["--temperature inf", "not a finite number"]),
    (["--temperature", "-1"], ["--temperature", "temperature must be >= 0", "got -1.0"]),
    (["--temperature", "0.8", "--top-p", "0"], ["--top-p", "top_p must be in (0, 1], got 0.0"]),
    (["--temperature", "0.8", "--top-p", "1.5"], ["--top-p", "top_p must be in (0, 1], got 1.5"]),
    (["--temperature", "0.8", "--top-p", "nan"], ["--top-p", "top_p must be in (0, 1], got nan"]),
    (["--temperature", "0.8", "--top-k", "0"], ["--top-k", "top_k must be >= 1, got 0"]),
    (["--max-new-tokens", "-3"], ["--max-new-tokens -3", "must be >= 0"]),
    (["--device", "tpu"], ["--device tpu", "not a device nemotron4 runs on", "use cpu, cuda, cuda:N or auto"]),
    (["--device", "cuda:x"], ["--device cuda:x", "use cpu, cuda, cuda:N or auto"]),
])
def test_bad_sampling_values_and_device_are_one_line(model_dir: Path, capsys, flags: list[str],
                                                     fragments: list[str]) -> None:
    assert main(["generate", "--model", str(model_dir), "--prompt", "the cat", *flags]) == 2
    one_line_error(capsys, *fragments)


def test_non_utf8_prompt_in_argv_is_one_line(model_dir: Path, tmp_path: Path) -> None:
    """Bytes that are not UTF-8 on the command line (a Latin-1 shell): Python hands them over as surrogates."""
    cmd = [a.encode() for a in nemotron4_cmd("generate", "--model", str(model_dir), "--prompt")] + [b"caf\xe9"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=300, env=env("C.UTF-8"))
    err = proc.stderr.decode("utf-8", "replace").strip()
    assert proc.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "--prompt: the prompt is not UTF-8 text (byte e9 at character 3)" in err and "iconv" in err, err


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_non_utf8_prompt_on_stdin_is_one_line(model_dir: Path, tmp_path: Path, locale: str) -> None:
    """`--interactive` fed a Latin-1 file (`< prompts.txt`): strict UTF-8 decoding, or surrogates in the C locale."""
    (tmp_path / "prompts.txt").write_bytes(b"caf\xe9 au lait\n")
    with open(tmp_path / "prompts.txt", "rb") as stdin:
        proc = subprocess.run(nemotron4_cmd("generate", "--model", str(model_dir), "--interactive",
                                            "--max-new-tokens", "2"), cwd=tmp_path, stdin=stdin,
                              capture_output=True, timeout=300, env=env(locale))
    err = proc.stderr.decode("utf-8", "replace").strip()
    assert proc.returncode == 2 and "Traceback" not in err, err
    last = err.splitlines()[-1]  # after the interactive banner
    assert last.startswith("nemotron4 generate: error: standard input: the prompt is not UTF-8 text"), err


def test_hf_rope_scaling_beside_default_rope_parameters_is_refused(tmp_path: Path, capsys) -> None:
    """transformers 4.x writes both keys; a yarn `rope_scaling` must not be hidden by a default `rope_parameters`."""
    hf = to_hf(build_model(ModelConfig.from_name("tiny"), seed=0), tmp_path / "hf")
    cfg = json.loads((hf / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
    (hf / "config.json").write_text(json.dumps(cfg))
    for argv in (["info", "--model", str(hf)],
                 ["generate", "--model", str(hf), "--prompt", "x", "--tokenizer", "t.model"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "config.json: rope_scaling = " in err and "rope type 'yarn'" in err, err
        assert "only plain RoPE ('default') is implemented" in err, err


def test_tokenizer_smaller_than_the_vocabulary_is_refused_by_generate(model_dir: Path, tmp_path: Path,
                                                                     capsys) -> None:
    """A 300-piece tokenizer on a 2048-row model (more than any padding): the model would sample ids it cannot
    decode (before: garbage, then sentencepiece's IndexError), so generate refuses before reading the weights."""
    big = tmp_path / "big"
    save_weights(build_model(ModelConfig.from_name("tiny", vocab_size=2048), seed=0), big)
    tok = model_dir / "tokenizer.model"
    assert main(["generate", "--model", str(big), "--tokenizer", str(tok), "--prompt", "the"]) == 2
    one_line_error(capsys, "has 300 pieces but the model's vocabulary is 2048 (more than padding)",
                   "cannot decode", "pass the model's own tokenizer (--tokenizer)")


def test_padding_is_not_a_mismatch_and_a_smaller_tokenizer_warns(model_dir: Path) -> None:
    """Megatron pads the vocabulary to a multiple of 128 x tp: up to the next multiple of 1024 is silent."""
    import warnings

    tok = Tokenizer.load(model_dir / "tokenizer.model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for vocab in (300, 384, 1024):
            check_tokenizer(tok, vocab)
            check_tokenizer(tok, vocab, refuse_smaller=True)
    with pytest.warns(UserWarning, match="has 300 pieces but the model's vocabulary is 1025 .more than padding"):
        check_tokenizer(tok, 1025)


def test_tokenizer_smaller_than_the_vocabulary_warns_in_eval(tmp_path: Path, model_dir: Path) -> None:
    big = tmp_path / "big"
    save_weights(build_model(ModelConfig.from_name("tiny", vocab_size=2048), seed=0), big)
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT))
    proc = subprocess.run(nemotron4_cmd("eval", "--model", str(big), "--tokenizer", str(model_dir / "tokenizer.model"),
                                        "--perplexity", str(text)), cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert "has 300 pieces but the model's vocabulary is 2048 (more than padding)" in proc.stderr, proc.stderr[-2000:]
