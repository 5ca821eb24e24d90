import io
import shutil

import pytest

from nemotron4 import ModelConfig, build_model
from nemotron4.cli import main
from nemotron4.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer
from nemotron4.weights import save_weights

TEXT = ["the cat sat on the mat and the dog sat on the log", "def add(a, b):\n    return a + b\n",
        "der Hund und die Katze", "numbers 12345 and 67890"] * 30


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    train_tokenizer(TEXT, root / "tok.model", TokenizerConfig(vocab_size=300, num_threads=1))
    tok = Tokenizer.load(root / "tok.model")
    model = build_model(ModelConfig.from_name("tiny", vocab_size=tok.vocab_size), seed=0)
    save_weights(model, root / "weights")
    shutil.copyfile(root / "tok.model", root / "weights" / "tokenizer.model")
    return root / "weights"


def test_generate_streams_after_the_prompt(model_dir, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt", "the cat", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the cat") and len(out.strip()) > len("the cat")
    # greedy is deterministic
    main(["generate", "--model", str(model_dir), "--prompt", "the cat", "--max-new-tokens", "12"])
    assert capsys.readouterr().out == out


def test_generate_batch_and_sampling(model_dir, capsys):
    args = ["generate", "--model", str(model_dir), "--prompt", "the dog", "--prompt", "def add",
            "--max-new-tokens", "8", "--temperature", "0.8", "--top-k", "20", "--seed", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "--- the dog" in out and "--- def add" in out
    main(args)
    assert capsys.readouterr().out == out


def test_interactive_reads_until_eof(model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("der Hund\n\nthe mat\n"))
    assert main(["generate", "--model", str(model_dir), "--interactive", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert "Ctrl-D" in captured.err and captured.out.count("\n") >= 2


def test_missing_tokenizer_and_mismatch_are_clear(model_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "tokenizer.model").unlink()
    assert main(["generate", "--model", str(bare), "--prompt", "x"]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    big = tmp_path / "big"
    train_tokenizer(TEXT * 3 + [" ".join(f"w{i}" for i in range(400))], big / "tok.model",
                    TokenizerConfig(vocab_size=390, num_threads=1))
    assert main(["generate", "--model", str(model_dir), "--tokenizer", str(big / "tok.model"), "--prompt", "x"]) == 2
    assert "do not belong together" in capsys.readouterr().err


def test_convert_keeps_the_tokenizer(model_dir, tmp_path):
    assert main(["convert", str(model_dir), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert (tmp_path / "hf" / "tokenizer.model").read_bytes() == (model_dir / "tokenizer.model").read_bytes()
