"""Checkpoints megatron-core saves at tensor-parallel size 2 or pipeline-parallel size 2 (gloo, 2 processes:
megatron reshards the TP-1 save itself on load, then each rank saves its part) convert to the TP-1 weights."""

from __future__ import annotations

import pytest
import torch
from helpers import mcore

from nemotron4.interop.mcore_format import DirStorage, open_reader
from nemotron4.weights import load_model


@pytest.mark.slow
@pytest.mark.distributed
def test_tp2_save_converts_to_the_tp1_weights(mcore_ckpt, tmp_path):
    mcore("save", str(tmp_path / "tp2"), "--load", str(mcore_ckpt / "plain"), nproc=2)
    ckpt = tmp_path / "tp2" / "plain"
    reader = open_reader(DirStorage(ckpt))
    qkv = reader._chunks("decoder.layers.self_attention.linear_qkv.weight")
    assert {o[1] for o, _, _ in qkv} == {0, 100}, "not a TP-2 layout: linear_qkv is not split in two per layer"
    assert {o[2] for o, _, _ in reader._chunks("decoder.layers.self_attention.linear_proj.weight")} == {0, 60}
    assert len(list(ckpt.glob("*.distcp"))) >= 2  # both ranks wrote their shards
    tp1, tp2 = load_model(mcore_ckpt / "plain"), load_model(ckpt)
    assert tp1.cfg == tp2.cfg
    for (name, a), (_, b) in zip(tp1.named_parameters(), tp2.named_parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
@pytest.mark.distributed
def test_pp2_save_converts_to_the_tp1_weights(mcore_ckpt, tmp_path, monkeypatch):
    """Pipeline-parallel 2 (2 layers on the first stage, 1 on the second): each stage saves its own layers, at their
    global layer offsets."""
    monkeypatch.setenv("PP", "2")  # read by mcore_model.py
    mcore("save", str(tmp_path / "pp2"), "--load", str(mcore_ckpt / "plain"), nproc=2)
    ckpt = tmp_path / "pp2" / "plain"
    assert len(list(ckpt.glob("__1_*.distcp"))) >= 1  # the second stage wrote its layer
    tp1, pp2 = load_model(mcore_ckpt / "plain"), load_model(ckpt)
    for (name, a), (_, b) in zip(tp1.named_parameters(), pp2.named_parameters(), strict=True):
        assert torch.equal(a, b), name
