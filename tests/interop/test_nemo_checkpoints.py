"""NeMo checkpoints built from megatron-core's own save: a NeMo 1 `.nemo` archive (read in place), its extracted
directory, and a NeMo 2 directory convert to HF directories that transformers runs with megatron-core's logits."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from helpers import MCORE_CFG as CFG
from helpers import megatron_logits

from nemotron4.cli import main
from nemotron4.weights import describe, load_model

TOKENIZER = b"\x0a\x0bsentencepiece model bytes, kept as they are\x00\xff"

# A NeMo 1 model_config.yaml as NeMo's megatron_gpt writes it: model keys plus training settings we ignore.
NEMO1_CONFIG = {
    "mcore_gpt": True, "micro_batch_size": 1, "global_batch_size": 8, "tensor_model_parallel_size": 1,
    "pipeline_model_parallel_size": 1, "encoder_seq_length": CFG["seq"], "max_position_embeddings": CFG["seq"],
    "num_layers": CFG["layers"], "hidden_size": CFG["hidden"], "ffn_hidden_size": CFG["ffn"],
    "num_attention_heads": CFG["heads"], "num_query_groups": CFG["groups"], "kv_channels": CFG["kv_channels"],
    "init_method_std": 0.02, "hidden_dropout": 0.0, "attention_dropout": 0.0, "apply_query_key_layer_scaling": True,
    "normalization": "layernorm1p", "layernorm_epsilon": 1.0e-5, "make_vocab_size_divisible_by": 128,
    "persist_layer_norm": True, "bias": False, "activation": "squared-relu", "headscale": False,
    "transformer_block_type": "pre_ln", "position_embedding_type": "rope", "rotary_percentage": CFG["rotary_percent"],
    "share_embeddings_and_output_weights": False, "precision": "bf16",
    "tokenizer": {"library": "sentencepiece", "type": None, "model": "nemo:2b7fd0_tokenizer.model",
                  "sentencepiece_legacy": False},
    "optim": {"name": "distributed_fused_adam", "lr": 3.0e-4}, "data": {"data_prefix": ["1.0", "/data/x"]},
}
NEMO2_MODEL_YAML = {
    "_target_": "nemo.collections.llm.gpt.model.nemotron.NemotronModel",
    "config": {
        "_target_": "nemo.collections.llm.gpt.model.nemotron.Nemotron4Config15B",
        "num_layers": CFG["layers"], "hidden_size": CFG["hidden"], "ffn_hidden_size": CFG["ffn"],
        "num_attention_heads": CFG["heads"], "num_query_groups": CFG["groups"], "kv_channels": CFG["kv_channels"],
        "seq_length": CFG["seq"], "rotary_percent": CFG["rotary_percent"], "rotary_base": 10000,
        "normalization": "LayerNorm", "layernorm_zero_centered_gamma": True, "layernorm_epsilon": 1.0e-5,
        "activation_func": {"_call_": False, "_target_": "nemo.collections.llm.fn.activation.squared_relu"},
        "gated_linear_unit": False, "add_bias_linear": False, "add_qkv_bias": False,
        "share_embeddings_and_output_weights": False, "position_embedding_type": "rope", "init_method_std": 0.02,
        "init_method": {"_target_": "torch.nn.init.normal_", "_call_": False},
    },
    "tokenizer": {"_target_": "nemo.collections.common.tokenizers.sentencepiece_tokenizer.SentencePieceTokenizer",
                  "model_path": "nemo_tokenizer/tokenizer.model"},
}

ATOL = 1e-5  # max abs logit difference, fp32


def nemo1_dir(mcore_ckpt: Path, root: Path) -> Path:
    shutil.copytree(mcore_ckpt / "nemo1", root / "model_weights")
    (root / "model_config.yaml").write_text(yaml.safe_dump(NEMO1_CONFIG))
    (root / "2b7fd0_tokenizer.model").write_bytes(TOKENIZER)
    return root


@pytest.fixture
def nemo_archive(mcore_ckpt, tmp_path) -> Path:
    folder = nemo1_dir(mcore_ckpt, tmp_path / "extracted")
    archive = tmp_path / "model.nemo"
    with tarfile.open(archive, "w:") as tar:  # NeMo writes an uncompressed tar with ./ names
        tar.add(folder, arcname=".")
    return archive


@pytest.fixture
def nemo2_dir(mcore_ckpt, tmp_path) -> Path:
    root = tmp_path / "nemo2"
    shutil.copytree(mcore_ckpt / "nemo2", root / "weights")
    (root / "context" / "nemo_tokenizer").mkdir(parents=True)
    (root / "context" / "model.yaml").write_text(yaml.safe_dump(NEMO2_MODEL_YAML))
    (root / "context" / "io.json").write_text("{}")
    (root / "context" / "nemo_tokenizer" / "tokenizer.model").write_bytes(TOKENIZER)
    return root


def assert_hf_logits(mcore_ckpt: Path, hf_dir: Path) -> None:
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    x, ref = megatron_logits(mcore_ckpt)
    with torch.no_grad():
        diff = (hf(x).logits - ref).abs().max().item()
    assert diff <= ATOL, diff
    assert (hf_dir / "tokenizer.model").read_bytes() == TOKENIZER


def test_nemo_archive_to_hf(mcore_ckpt, nemo_archive, tmp_path):
    assert describe(nemo_archive) == "nemo"
    assert main(["convert", str(nemo_archive), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert_hf_logits(mcore_ckpt, tmp_path / "hf")
    assert {p.name for p in tmp_path.iterdir()} == {"extracted", "model.nemo", "hf"}  # read in place: no extraction


def test_extracted_nemo_directory_to_hf(mcore_ckpt, nemo_archive, tmp_path):
    folder = tmp_path / "extracted"
    assert describe(folder) == "nemo"
    assert main(["convert", str(folder), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert_hf_logits(mcore_ckpt, tmp_path / "hf")


def test_nemo2_directory_to_hf(mcore_ckpt, nemo2_dir, tmp_path):
    assert describe(nemo2_dir) == "nemo"
    assert main(["convert", str(nemo2_dir), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert_hf_logits(mcore_ckpt, tmp_path / "hf")


def test_load_model_reads_nemo_sources_alike(nemo_archive, nemo2_dir):
    a, b = load_model(nemo_archive), load_model(nemo2_dir)
    assert a.cfg == b.cfg
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
