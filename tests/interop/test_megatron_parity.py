"""Megatron-Core checkpoints saved by megatron-core itself convert to models with megatron-core's logits, and our
`--to megatron` export loads into megatron-core's GPTModel with our logits (fp32, CPU)."""

from __future__ import annotations

import shutil

import pytest
import torch
import transformers
from helpers import MCORE_CFG as CFG
from helpers import mcore, megatron_logits

from nemotron4 import ModelConfig, build_model
from nemotron4.cli import main
from nemotron4.interop.megatron import KEY_MAP, fuse_qkv, split_qkv
from nemotron4.weights import describe, load_config, load_model, save_weights

OUR_CFG = ModelConfig(dim=48, n_layers=3, n_heads=6, n_kv_heads=2, head_dim=20, ffn_dim=96, vocab_size=128,
                      max_seq_len=64, rotary_fraction=0.5, init_std=0.02)

ATOL = 1e-5  # max abs logit difference, fp32


@pytest.mark.parametrize("variant", ["plain", "zarr"])
def test_megatron_checkpoint_to_ours_has_megatrons_logits(mcore_ckpt, tmp_path, variant, capsys):
    assert describe(mcore_ckpt / variant) == "megatron"
    assert main(["convert", str(mcore_ckpt / variant), str(tmp_path / "ours"), "--to", "nemotron4"]) == 0
    assert "megatron" in capsys.readouterr().out
    ours = load_model(tmp_path / "ours").eval()
    assert ours.cfg == OUR_CFG  # read from the Megatron-LM args in common.pt
    x, ref = megatron_logits(mcore_ckpt)
    with torch.no_grad():
        diff = (ours(x) - ref).abs().max().item()
    assert diff <= ATOL, diff


def test_megatron_checkpoint_to_hf_has_megatrons_logits_in_transformers(mcore_ckpt, tmp_path):
    assert main(["convert", str(mcore_ckpt / "plain"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x, ref = megatron_logits(mcore_ckpt)
    with torch.no_grad():
        diff = (hf(x).logits - ref).abs().max().item()
    assert diff <= ATOL, diff


def test_load_model_reads_megatron_checkpoints_directly(mcore_ckpt):
    assert load_config(mcore_ckpt / "plain") == OUR_CFG
    model = load_model(mcore_ckpt / "plain").eval()
    x, ref = megatron_logits(mcore_ckpt)
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() <= ATOL


def test_zarr_bf16_reads_the_same_weights_in_bf16(mcore_ckpt, tmp_path):
    fp32, bf16 = load_model(mcore_ckpt / "zarr"), load_model(mcore_ckpt / "zarr_bf16")
    assert bf16.output.weight.dtype == torch.bfloat16
    for (name, a), (_, b) in zip(fp32.named_parameters(), bf16.named_parameters(), strict=True):
        assert torch.equal(a.to(torch.bfloat16), b), name
    # zarr -> torch_dist, streamed: the same bf16 weights
    assert main(["convert", str(mcore_ckpt / "zarr_bf16"), str(tmp_path / "td"), "--to", "megatron"]) == 0
    again = load_model(tmp_path / "td")
    assert all(torch.equal(a, b) for a, b in zip(bf16.parameters(), again.parameters(), strict=True))


def test_megatron_lm_save_directory_resolves_latest_iteration(mcore_ckpt, tmp_path):
    shutil.copytree(mcore_ckpt / "plain", tmp_path / "save" / "iter_0000020")
    (tmp_path / "save" / "latest_checkpointed_iteration.txt").write_text("20\n")
    a, b = load_model(tmp_path / "save"), load_model(mcore_ckpt / "plain")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_ours_to_megatron_loads_into_megatron_core_with_our_logits(tmp_path, capsys):
    ours = build_model(OUR_CFG, seed=5).eval()
    with torch.no_grad():  # norms included: zero-centred gammas and biases must land in the right place
        for p in ours.parameters():
            p.normal_(0.0, 0.2)
    save_weights(ours, tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "mc"), "--to", "megatron"]) == 0
    written = {p.name for p in (tmp_path / "mc").iterdir()}
    assert {"metadata.json", ".metadata", "common.pt", "model_config.yaml", "__0_0.distcp"} <= written
    mcore("logits", str(tmp_path / "mc"), str(tmp_path / "logits.pt"))
    got = torch.load(tmp_path / "logits.pt")
    with torch.no_grad():
        diff = (ours(got["tokens"]) - got["logits"]).abs().max().item()
    assert diff <= ATOL, diff
    # and back: the model_config.yaml written beside it is read, the weights come back bit for bit
    back = load_model(tmp_path / "mc")
    assert back.cfg == OUR_CFG
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), back.parameters(), strict=True))


def test_fused_qkv_layout_is_per_query_group():
    cfg = OUR_CFG
    per = cfg.n_heads // cfg.n_kv_heads
    rows = torch.arange((cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, dtype=torch.float32)
    w = rows[:, None].expand(-1, 3).clone()
    q, k, v = split_qkv(w, cfg)
    block = (per + 2) * cfg.head_dim  # one query group: its `per` q heads, then k, then v
    assert q[0, 0] == 0 and q[per * cfg.head_dim, 0] == block  # head `per` is group 1's first
    assert k[0, 0] == per * cfg.head_dim and v[0, 0] == (per + 1) * cfg.head_dim
    assert torch.equal(fuse_qkv(q, k, v, cfg), w)
    assert KEY_MAP["decoder.layers.self_attention.linear_qkv.weight"][1] == "layers.{i}.attention.wk.weight"


def test_megatron_config_matches_what_megatron_was_given():
    assert CFG["kv_channels"] * CFG["heads"] != CFG["hidden"]  # the test would not catch a head_dim mix-up else
    assert OUR_CFG.head_dim == CFG["kv_channels"] and OUR_CFG.rotary_fraction == CFG["rotary_percent"]
