import dataclasses

import pytest
import torch

from nemotron4 import ConfigError, ModelConfig, Nemotron4
from nemotron4.config import FLAVOURS
from nemotron4.errors import UserError


def meta_counts(name: str) -> dict[str, int]:
    with torch.device("meta"):
        return Nemotron4(ModelConfig.from_name(name)).param_counts()


def test_15b_parameter_split_matches_the_report():
    # docs/paper.md section 1: 3.2B embedding (2 x 256000 x 6144 = 3.146B) + 12.5B non-embedding (12.48B) = 15.6B.
    c = meta_counts("15b")
    assert c["embedding"] == 2 * 256000 * 6144 == 3_145_728_000
    assert round(c["non_embedding"] / 1e9, 2) == 12.48
    assert round(c["total"] / 1e9, 1) == 15.6


@pytest.mark.parametrize(
    "name,total_b",
    [("minitron-4b", 4.19), ("minitron-8b", 8.27), ("340b", 341.03)],
)
def test_family_parameter_counts(name, total_b):
    assert round(meta_counts(name)["total"] / 1e9, 2) == total_b


def test_flavour_shapes_follow_the_paper():
    f = FLAVOURS["15b"]
    assert (f.dim, f.n_layers, f.n_heads, f.n_kv_heads, f.head_dim, f.ffn_dim) == (6144, 32, 48, 8, 128, 24576)
    assert (f.vocab_size, f.max_seq_len, f.rotary_fraction, f.rope_theta, f.norm_eps, f.init_std) == (
        256000, 4096, 0.5, 10000.0, 1e-5, 0.0134)
    assert FLAVOURS["minitron-8b"].n_heads * FLAVOURS["minitron-8b"].head_dim != FLAVOURS["minitron-8b"].dim
    assert FLAVOURS["340b"].head_dim == 192 and FLAVOURS["340b"].init_std == 0.0063
    tiny = FLAVOURS["tiny"]
    assert tiny.n_heads != tiny.n_kv_heads and tiny.n_heads * tiny.head_dim != tiny.dim and tiny.rotary_fraction < 1


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"n_heads": 6, "n_kv_heads": 4}, "divisible by n_kv_heads"),
        ({"dim": 0}, "ModelConfig.dim"),
        ({"vocab_size": 10.5}, "ModelConfig.vocab_size"),
        ({"rotary_fraction": 0.0}, "rotary_fraction"),
        ({"rotary_fraction": 1.5}, "rotary_fraction"),
        ({"head_dim": 10, "rotary_fraction": 0.3}, "must be even"),
        ({"norm_eps": -1.0}, "norm_eps"),
    ],
)
def test_invalid_configs_name_the_field(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        dataclasses.replace(FLAVOURS["tiny"], **overrides)


def test_config_errors_are_user_errors():
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)


def test_unknown_flavour_lists_choices():
    with pytest.raises(ConfigError, match="15b"):
        ModelConfig.from_name("16b")


def test_from_dict_rejects_unknown_keys_and_round_trips(tmp_path):
    with pytest.raises(ConfigError, match="hidden_size"):
        ModelConfig.from_dict({"hidden_size": 64})
    cfg = ModelConfig.from_name("tiny", vocab_size=1000)
    cfg.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == cfg
