"""Files crafted to run code when unpickled are refused on every path that loads weights or checkpoints: DCP
.metadata (an allow-list unpickler), DCP entries that DCP itself would unpickle (refused: ours hold only tensors),
a Hugging Face directory holding only pytorch_model.bin, a `.pt` file given where weights are expected. Each
payload would create a marker file; the tests check it never appears."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import SHORT, TINY_TOML
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

from nemotron4.checkpoint import _safe_metadata
from nemotron4.cli import main
from nemotron4.config import ModelConfig
from nemotron4.interop.hf import to_hf
from nemotron4.model import build_model


class Payload:
    """Unpickling this creates `marker` (standing in for any code an attacker would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def cli(capsys: pytest.CaptureFixture, *args: str) -> str:
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err


@pytest.fixture
def run_copy(reference: Path, tmp_path: Path) -> Path:
    shutil.copytree(reference, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.slow  # run_copy comes from the `reference` training subprocess
def _forget_digests(checkpoint: Path) -> None:
    """A forged state.json without the file digests, as a checkpoint from before they were recorded."""
    state = json.loads((checkpoint / "state.json").read_text())
    del state["files"]
    (checkpoint / "state.json").write_text(json.dumps(state))


@pytest.mark.slow  # run_copy copies the reference run, a training subprocess
def test_dcp_metadata_with_foreign_classes(run_copy: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    checkpoint = run_copy / "checkpoints" / "step_00000008"
    (checkpoint / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    err = cli(capsys, "convert", str(run_copy), str(tmp_path / "out"), "--to", "nemotron4")
    assert "step_00000008 is damaged: .metadata has" in err  # the recorded digests catch it first ...
    _forget_digests(checkpoint)  # ... and without them (a forged state.json) the allow-list unpickler does
    err = cli(capsys, "convert", str(run_copy), str(tmp_path / "out"), "--to", "nemotron4")
    assert "refusing to load checkpoint metadata: it references io.open" in err
    assert not marker.exists()


@pytest.mark.slow
def test_dcp_entry_that_dcp_would_unpickle(run_copy: Path, corpus: Path, tmp_path: Path, capsys,
                                           monkeypatch) -> None:
    """Only allow-listed classes in .metadata, but one tensor re-declared as pickled bytes pointing to a payload:
    DCP would `torch.load(weights_only=False)` it. Resuming (`nemotron4 train` on the run) refuses."""
    marker = tmp_path / "pwned"
    checkpoint = run_copy / "checkpoints" / "step_00000006"  # the end of pretraining: resuming trains phase 2
    (run_copy / "checkpoints" / "latest").write_text(checkpoint.name)
    meta = _safe_metadata(checkpoint)
    torch.save(Payload(marker), checkpoint / "payload.distcp")
    key = "model.norm.weight"
    meta.state_dict_metadata[key] = BytesStorageMetadata()
    meta.storage_data[MetadataIndex(key)] = _StorageInfo("payload.distcp", 0,
                                                          (checkpoint / "payload.distcp").stat().st_size)
    (checkpoint / ".metadata").write_bytes(pickle.dumps(meta))
    _safe_metadata(checkpoint)  # passes the allow-list: the entry type is the problem
    _forget_digests(checkpoint)  # (with them, the changed .metadata is refused first: test_data_loss.py)
    monkeypatch.chdir(corpus)
    err = cli(capsys, "train", "--config", str(TINY_TOML), "--run-dir", str(run_copy), *SHORT)
    assert "its .metadata declares non-tensor entries ['model.norm.weight'], which would be unpickled" in err
    assert not marker.exists()


def test_hf_directory_with_only_pytorch_model_bin(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    hf = to_hf(build_model(ModelConfig.from_name("tiny"), seed=0), tmp_path / "hf")
    (hf / "model.safetensors").unlink()
    torch.save(Payload(marker), hf / "pytorch_model.bin")
    err = cli(capsys, "convert", str(hf), str(tmp_path / "out"), "--to", "nemotron4")
    assert "no *.safetensors weights found. It holds pickle files (pytorch_model.bin), which are never loaded" in err
    assert not marker.exists()


def test_pt_file_where_weights_are_expected(corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save(Payload(marker), evil)
    err = cli(capsys, "convert", str(evil), str(tmp_path / "out"), "--to", "hf")
    assert f"{evil}: not a model directory" in err
    monkeypatch.chdir(corpus)
    err = cli(capsys, "train", "--config", str(TINY_TOML), "--run-dir", str(tmp_path / "run"), *SHORT,
              "--model.init_from", str(evil))
    assert f"{evil}: not a model directory" in err
    assert not marker.exists()
