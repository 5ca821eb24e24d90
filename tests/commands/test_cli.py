import json
import subprocess
import sys

import pytest
import torch

from nemotron4 import ModelConfig, build_model
from nemotron4.cli import COMMANDS, build_parser, main
from nemotron4.interop.hf import from_hf, to_hf
from nemotron4.weights import load_model, load_weights, save_weights


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_command_has_help(capsys):
    assert len(subcommands()) >= len(COMMANDS)
    for name in subcommands():
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: nemotron4 " + name in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "nemotron4.cli", "--help"], capture_output=True, text=True, check=True)
    assert "info" in out.stdout and "convert" in out.stdout


def test_info_15b_json(capsys):
    assert main(["info", "--model", "15b", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["embedding"] == 3_145_728_000
    assert round(info["params"]["non_embedding"] / 1e9, 2) == 12.48
    assert round(info["decode_bytes_per_token_bf16"] / 1e9, 1) == 28.1  # docs/paper.md section 7
    assert info["weights_bytes"]["bf16"] == 2 * info["params"]["total"]


def test_info_reads_an_hf_directory_without_weights(tmp_path, capsys):
    cfg = ModelConfig.from_name("tiny")
    to_hf(build_model(cfg, seed=0), tmp_path)
    (tmp_path / "model.safetensors").unlink()  # info needs config.json only
    assert main(["info", "--model", str(tmp_path)]) == 0
    assert "non-embedding" in capsys.readouterr().out


def test_bad_model_is_one_clear_line(tmp_path, capsys):
    assert main(["info", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "flavour" in err and "Traceback" not in err


def test_convert_hf_to_ours_and_back_keeps_logits(tmp_path, capsys):
    model = build_model(ModelConfig.from_name("tiny"), seed=0).eval()
    to_hf(model, tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "ours"), "--to", "nemotron4"]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf2"), "--to", "hf", "--dtype", "bfloat16"]) == 0
    assert "converted" in capsys.readouterr().out
    x = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(load_weights(tmp_path / "ours")(x), model(x), rtol=0, atol=0)
        back = from_hf(tmp_path / "hf2", dtype=torch.float32)
        torch.testing.assert_close(back(x), model(x), rtol=0.05, atol=0.05)  # went through bf16
    assert back.output.weight.dtype == torch.float32


def test_load_model_dispatch(tmp_path):
    model = build_model(ModelConfig.from_name("tiny"), seed=0)
    save_weights(model, tmp_path / "w")
    to_hf(model, tmp_path / "h")
    for spec in (tmp_path / "w", tmp_path / "h"):
        loaded = load_model(spec)
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters(), strict=True))
    assert load_model("tiny", seed=0).cfg == model.cfg
    assert load_model("15b", device="meta").param_counts()["total"] > 15e9


def test_train_dry_run_refuses_missing_token_files(tmp_path, capsys):
    """The 15B config as shipped names /path/to/... token files: the dry run checks them as a run would before
    step 1 (before, it printed the config and exited 0), in one line naming the key, the path and what to do."""
    from helpers import TINY_TOML

    paper = TINY_TOML.parent / "nemotron4-15b.toml"
    assert main(["train", "--config", str(paper), "--run-dir", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nemotron4 train: error: phases.0.blend.sources.0.path (source 'english_web'): "), err
    assert "/path/to/tokens/english_web.bin" in err and "nemotron4 prepare" in err and "fix the path" in err, err
    assert not (tmp_path / "run").exists()
