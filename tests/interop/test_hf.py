"""Parity with Hugging Face `NemotronForCausalLM` on random tiny configs, both directions (fp32, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

from nemotron4 import ModelConfig, build_model
from nemotron4.errors import ConfigError, UserError
from nemotron4.interop.hf import KEY_MAP, config_from_hf, from_hf, hf_name, our_name, to_hf

ATOL = 1e-5

# GQA (6 query heads over 2 KV heads), head_dim (20) != hidden / heads (48 / 6 = 8), partial rotary.
CASES = {
    "gqa-partial": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
                        num_key_value_heads=2, head_dim=20, partial_rotary_factor=0.5),
    "quarter-rotary": dict(hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=1, head_dim=16, partial_rotary_factor=0.25, rope_theta=500.0),
}


def hf_model(**kw) -> transformers.NemotronForCausalLM:
    cfg = transformers.NemotronConfig(vocab_size=101, max_position_embeddings=64, norm_eps=1e-5,
                                      tie_word_embeddings=False, **kw)
    torch.manual_seed(0)
    model = transformers.NemotronForCausalLM(cfg).eval()
    with torch.no_grad():  # randomise everything, norms included, so that a swapped tensor cannot hide
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def tokens(vocab: int = 101, shape=(2, 23)) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", CASES)
def test_hf_to_ours_logits_equal(case, tmp_path):
    ref = hf_model(**CASES[case])
    ref.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path).eval()
    assert ours.cfg.head_dim == CASES[case]["head_dim"]
    assert ours.cfg.rotary_fraction == CASES[case]["partial_rotary_factor"]
    x = tokens()
    with torch.no_grad():
        diff = (ours(x) - ref(x).logits).abs().max().item()
    assert diff <= ATOL, diff


@pytest.mark.parametrize("case", CASES)
def test_ours_to_hf_logits_equal(case, tmp_path):
    kw = CASES[case]
    cfg = ModelConfig(dim=kw["hidden_size"], n_layers=kw["num_hidden_layers"], n_heads=kw["num_attention_heads"],
                      n_kv_heads=kw["num_key_value_heads"], head_dim=kw["head_dim"], ffn_dim=kw["intermediate_size"],
                      vocab_size=101, max_seq_len=64, rotary_fraction=kw["partial_rotary_factor"],
                      rope_theta=kw.get("rope_theta", 10000.0))
    ours = build_model(cfg, seed=3).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 0.2)
    to_hf(ours, tmp_path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(ref).__name__ == "NemotronForCausalLM"
    x = tokens()
    with torch.no_grad():
        diff = (ours(x) - ref(x).logits).abs().max().item()
    assert diff <= ATOL, diff


def test_sharded_round_trip_through_transformers(tmp_path):
    ours = build_model(ModelConfig.from_name("tiny"), seed=0).eval()
    to_hf(ours, tmp_path / "hf", max_shard_bytes=200_000)
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ref.save_pretrained(tmp_path / "hf2", max_shard_size="150KB")  # sharded by transformers itself
    assert (tmp_path / "hf2" / "model.safetensors.index.json").exists()
    back = from_hf(tmp_path / "hf2")
    for (n, a), (_, b) in zip(ours.named_parameters(), back.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    x = tokens(512)
    with torch.no_grad():
        assert (ours(x) - ref(x).logits).abs().max().item() <= ATOL


def test_bf16_export_and_dtype_on_load(tmp_path):
    ours = build_model(ModelConfig.from_name("tiny"), seed=0)
    to_hf(ours, tmp_path, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    loaded = from_hf(tmp_path)
    assert loaded.output.weight.dtype == torch.bfloat16 and loaded.rope_cos.dtype == torch.float32
    assert from_hf(tmp_path, dtype=torch.float32).output.weight.dtype == torch.float32


def test_key_map_is_a_bijection():
    assert len(set(KEY_MAP.values())) == len(KEY_MAP)
    for name in ("layers.7.attention.wq.weight", "layers.12.ffn_norm.bias", "output.weight"):
        assert our_name(hf_name(name)) == name
    assert hf_name("layers.3.feed_forward.w2.weight") == "model.layers.3.mlp.down_proj.weight"
    with pytest.raises(UserError, match="no mapping"):
        our_name("model.layers.0.mlp.gate_proj.weight")


# --- config keys of the released checkpoints ------------------------------------------------------------------

BASE = {"model_type": "nemotron", "hidden_size": 3072, "num_hidden_layers": 32, "num_attention_heads": 24,
        "num_key_value_heads": 8, "intermediate_size": 9216, "vocab_size": 256000, "max_position_embeddings": 4096,
        "norm_eps": 1e-5, "initializer_range": 0.0134, "hidden_act": "relu2", "tie_word_embeddings": False}


@pytest.mark.parametrize(
    "extra,rotary,theta,head_dim",
    [
        ({"partial_rotary_factor": 0.5, "rope_theta": 10000, "head_dim": 128}, 0.5, 10000.0, 128),
        ({"rope_percent": 0.5}, 0.5, 10000.0, 128),  # older Minitron exports
        ({"rope_percentage": 0.25, "rope_theta": 20000}, 0.25, 20000.0, 128),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 5e5, "partial_rotary_factor": 0.5}},
         0.5, 5e5, 128),
        ({"kv_channels": 96}, 0.5, 10000.0, 96),
        ({}, 0.5, 10000.0, 128),  # HF's defaults
    ],
)
def test_config_key_variants(extra, rotary, theta, head_dim):
    cfg = config_from_hf({**BASE, **extra})
    assert (cfg.rotary_fraction, cfg.rope_theta, cfg.head_dim) == (rotary, theta, head_dim)
    assert cfg == ModelConfig.from_name("minitron-4b", rotary_fraction=rotary, rope_theta=theta, head_dim=head_dim)


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"model_type": "llama"}, "model_type"),
        ({"tie_word_embeddings": True}, "tie_word_embeddings"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "silu"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_parameters"),
        # a default rope_parameters beside a yarn rope_scaling (transformers 4.x writes both): not hidden by it
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4},
          "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}},
         "rope_scaling = .*yarn"),
        ({"rope_parameters": {"rope_type": "default"}, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
         "rope_scaling"),
        ({"rope_scaling": {"factor": 8.0}}, "scaling factor of 8.0"),
        ({"num_attention_heads": 24, "num_key_value_heads": 7}, "n_kv_heads"),
    ],
)
def test_unsupported_configs_name_the_field(bad, field, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**BASE, **bad}))
    with pytest.raises(ConfigError, match=field):
        from_hf(tmp_path)


def test_pickle_weights_are_refused(tmp_path):
    ref = hf_model(**CASES["gqa-partial"])
    ref.config.save_pretrained(tmp_path)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match="pickle"):
        from_hf(tmp_path)


def test_missing_and_misshapen_tensors_are_clear_errors(tmp_path: Path):
    ours = build_model(ModelConfig.from_name("tiny"), seed=0)
    to_hf(ours, tmp_path)
    from safetensors.torch import load_file

    state = load_file(tmp_path / "model.safetensors")
    del state["lm_head.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="missing"):
        from_hf(tmp_path)
    state["lm_head.weight"] = torch.zeros(3, 3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="shape"):
        from_hf(tmp_path)
