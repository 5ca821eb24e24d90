"""Bad Megatron / NeMo input: truncated or missing shards, configs with something Nemotron-4 does not have, and pickles
crafted to run code. Each gives one clear line, runs nothing, and leaves nothing at the destination."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from nemotron4.cli import main

from .test_nemo_checkpoints import NEMO1_CONFIG


class Payload:
    """Unpickling this creates `marker` (standing in for any code an attacker would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def convert_fails(capsys, src: Path, dest: Path, to: str = "nemotron4") -> str:
    code = main(["convert", str(src), str(dest), "--to", to])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not dest.exists(), "a failed conversion wrote its destination"
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.tmp")], "temporary dir left"
    return err


@pytest.fixture
def ckpt(mcore_ckpt, tmp_path) -> Path:
    shutil.copytree(mcore_ckpt / "plain", tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_truncated_distcp(ckpt, tmp_path, capsys):
    shard = max(ckpt.glob("*.distcp"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert shard.name in err and "truncated" in err


def test_corrupt_distcp_bytes(ckpt, tmp_path, capsys):
    shard = max(ckpt.glob("*.distcp"), key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # same length, zeroed
    shard.write_bytes(bytes(data))
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert shard.name in err and "corrupt" in err


def test_missing_distcp_shard(ckpt, tmp_path, capsys):
    shard = sorted(ckpt.glob("*.distcp"))[-1]
    shard.unlink()
    err = convert_fails(capsys, ckpt, tmp_path / "out", to="hf")
    assert shard.name in err and "missing" in err


def test_missing_zarr_chunk(mcore_ckpt, tmp_path, capsys):
    shutil.copytree(mcore_ckpt / "zarr", tmp_path / "z")
    (tmp_path / "z" / "decoder.layers.mlp.linear_fc2.weight" / "2.0.0").unlink()
    err = convert_fails(capsys, tmp_path / "z", tmp_path / "out")
    assert "decoder.layers.mlp.linear_fc2.weight" in err and "missing" in err


def test_truncated_zarr_chunk(mcore_ckpt, tmp_path, capsys):
    shutil.copytree(mcore_ckpt / "zarr_bf16", tmp_path / "z")
    chunk = tmp_path / "z" / "output_layer.weight" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    err = convert_fails(capsys, tmp_path / "z", tmp_path / "out")
    assert "output_layer.weight" in err and "truncated" in err


@pytest.mark.parametrize(
    "override,key",
    [
        ({"activation": "swiglu"}, "activation"),  # gated MLP
        ({"activation": "fast-swiglu"}, "activation"),
        ({"share_embeddings_and_output_weights": True}, "share_embeddings_and_output_weights"),
        ({"bias": True}, "bias"),
        ({"normalization": "rmsnorm"}, "normalization"),
        ({"normalization": "layernorm"}, "normalization"),  # a gamma that is not zero-centred
        ({"position_embedding_type": "learned_absolute"}, "position_embedding_type"),
        ({"num_moe_experts": 8}, "num_moe_experts"),
    ],
)
def test_unsupported_nemo_config_names_the_key(mcore_ckpt, tmp_path, capsys, override, key):
    root = tmp_path / "nemo"
    shutil.copytree(mcore_ckpt / "nemo1", root / "model_weights")
    (root / "model_config.yaml").write_text(yaml.safe_dump({**NEMO1_CONFIG, **override}))
    err = convert_fails(capsys, root, tmp_path / "out", to="hf")
    assert f"{key} = " in err and "not supported" in err and "model_config.yaml" in err


@pytest.mark.parametrize(
    "override,key",
    [({"swiglu": True}, "swiglu"), ({"untie_embeddings_and_output_weights": False},
                                   "untie_embeddings_and_output_weights"),
     ({"add_bias_linear": True}, "add_bias_linear"), ({"normalization": "RMSNorm"}, "normalization")],
)
def test_unsupported_megatron_lm_args_name_the_key(ckpt, tmp_path, capsys, override, key):
    common = ckpt / "common.pt"
    obj = torch.load(common, weights_only=False)  # our own file, written by the test's megatron-core run
    for k, v in override.items():
        setattr(obj["args"], k, v)
    torch.save(obj, common)
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert f"{key} = " in err and "common.pt" in err


def test_extra_tensor_is_named(mcore_ckpt, tmp_path, capsys):
    """A bias tensor in the weights (a config that hides it) is an error naming the tensor."""
    from nemotron4.interop.mcore_format import DirStorage, TorchDistWriter, open_reader

    reader = open_reader(DirStorage(mcore_ckpt / "plain"))
    writer = TorchDistWriter(tmp_path / "ckpt")
    for key in reader.tensors:
        t = reader.read(key)
        writer.add_chunk(key, t, (0,) * t.dim(), tuple(t.shape))
    writer.add_chunk("decoder.layers.mlp.linear_fc1.bias", torch.zeros(3, 96), (0, 0), (3, 96))
    writer.close({"args": torch.load(mcore_ckpt / "plain" / "common.pt", weights_only=False)["args"]})
    err = convert_fails(capsys, tmp_path / "ckpt", tmp_path / "out")
    assert "decoder.layers.mlp.linear_fc1.bias" in err


def test_malicious_common_pt_is_refused_and_never_runs(ckpt, tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"args": Payload(marker)}, ckpt / "common.pt")
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert "refusing" in err and "common.pt" in err and "io.open" in err
    assert not marker.exists()


def test_malicious_dcp_metadata_is_refused_and_never_runs(ckpt, tmp_path, capsys):
    marker = tmp_path / "pwned"
    (ckpt / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert "refusing" in err and ".metadata" in err
    assert not marker.exists()


def test_chunk_that_is_a_pickled_object_never_runs(mcore_ckpt, tmp_path, capsys, monkeypatch):
    """A tensor entry of a .distcp that holds a torch.save'd payload instead: chunks are read with weights_only."""
    from nemotron4.interop.mcore_format import DirStorage, TorchDistWriter, open_reader

    marker = tmp_path / "pwned"
    reader = open_reader(DirStorage(mcore_ckpt / "plain"))
    writer = TorchDistWriter(tmp_path / "ckpt")
    real_save = torch.save
    for key in reader.tensors:
        t = reader.read(key)
        with monkeypatch.context() as m:
            if key == "output_layer.weight":
                m.setattr(torch, "save", lambda obj, f: real_save(Payload(marker), f))
            writer.add_chunk(key, t, (0,) * t.dim(), tuple(t.shape))
    writer.close({"args": torch.load(mcore_ckpt / "plain" / "common.pt", weights_only=False)["args"]})
    err = convert_fails(capsys, tmp_path / "ckpt", tmp_path / "out")
    assert "output_layer.weight" in err and "__0_0.distcp" in err
    assert not marker.exists()


def test_destination_that_is_not_empty_is_refused(mcore_ckpt, tmp_path, capsys):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    code = main(["convert", str(mcore_ckpt / "plain"), str(dest), "--to", "nemotron4"])
    assert code == 2 and "not an empty directory" in capsys.readouterr().err
    assert os.listdir(dest) == ["keep.txt"]
