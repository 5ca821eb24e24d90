"""What a newcomer hit as tracebacks or silent surprises, now one line (what, where, what to do) and a non-zero
exit, or the behaviour a user of torchtitan / HF expects."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, nemotron4_cmd, random_model, run_cli, write_source

from nemotron4.cli import main
from nemotron4.weights import save_weights

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a build without CUDA")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_weights(random_model(512), tmp_path_factory.mktemp("w") / "model")


@no_cuda
@pytest.mark.parametrize("command", ["generate", "eval"])
def test_device_cuda_without_cuda_is_one_line(weights: Path, tmp_path: Path, command: str) -> None:
    extra = ["--prompt", "x", "--tokenizer", "t.model"] if command == "generate" else ["--humaneval"]
    proc = run_cli(tmp_path, command, "--model", str(weights), "--device", "cuda", *extra, check=False)
    assert_clean_error(proc, "--device cuda", "no CUDA", "use cpu")


def test_tokenizer_on_empty_and_binary_input_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/empty.txt").write_text("")
    (tmp_path / "in/blob.bin").write_bytes(np.random.default_rng(0).bytes(4000))
    assert main(["tokenizer", "train", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "t.model"),
                 "--vocab-size", "300"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no text to train on" in err and "empty or not text" in err, err
    assert "INTERNAL" not in err


def test_data_inspect_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    write_source(tmp_path / "tok", np.arange(60_000) % 500, doc_len=60_000)
    proc = subprocess.Popen(nemotron4_cmd("data", "inspect", "tok", "--doc", "0", "--max-ids", "60000", "--json"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)  # `| head -c 10`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_convert_refuses_a_non_empty_destination_unless_forced(weights: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    assert main(["convert", str(weights), str(dest), "--to", "hf"]) == 2
    assert "is not an empty directory" in capsys.readouterr().err and not (dest / "config.json").exists()
    assert main(["convert", str(weights), str(dest), "--to", "hf", "--force"]) == 0
    assert (dest / "config.json").is_file() and (dest / "keep.txt").read_text() == "mine"


def test_weights_are_readable_by_all(weights: Path, tmp_path: Path) -> None:
    assert (weights / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert main(["convert", str(weights), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert (tmp_path / "hf/model.safetensors").stat().st_mode & 0o777 == 0o644


def test_train_threads_flag_is_used_and_said() -> None:
    from nemotron4.errors import UserError
    from nemotron4.train.threads import choose_threads

    with pytest.raises(UserError, match="--threads must be >= 0"):
        choose_threads("cpu", -1)
    before = torch.get_num_threads()
    try:
        assert choose_threads("cpu", 1) == "torch threads: 1 (--threads)" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_demo_config_is_package_data(tmp_path: Path, monkeypatch) -> None:
    """`nemotron4 demo` outside the checkout reads the config installed with the package."""
    import nemotron4
    from nemotron4.demo import load_demo_config

    packaged = Path(nemotron4.__file__).parent / "demo" / "demo.toml"
    assert (Path(__file__).resolve().parents[2] / "configs/demo.toml").resolve() == packaged.resolve()
    monkeypatch.chdir(tmp_path)
    assert load_demo_config(packaged, "ci").job["model"]["flavour"] == "tiny"
    assert main(["demo", "--run-dir", "r", "--budget", "nope"]) == 2  # read the packaged file, refused the budget


def test_info_and_flops_on_a_small_model_dir(weights: Path, capsys) -> None:
    assert main(["info", "--model", str(weights)]) == 0
    assert "0.00 GiB" not in capsys.readouterr().out
    assert main(["flops", "--model", str(weights), "--seq-len", "64", "--batch-size", "8", "--iter-time", "1e-9",
                 "--peak-tflops", "1"]) == 0
    assert "MFU above 100% is impossible" in capsys.readouterr().err
