import math

import pytest
import torch
import torch.nn.functional as F

from nemotron4 import ModelConfig, Nemotron4, build_model
from nemotron4.model import LayerNorm1P, apply_rope


@pytest.fixture
def cfg() -> ModelConfig:
    return ModelConfig.from_name("tiny")


def test_forward_shape_and_dtype(cfg):
    model = build_model(cfg, seed=0)
    tokens = torch.randint(0, cfg.vocab_size, (3, 17))
    logits = model(tokens)
    assert logits.shape == (3, 17, cfg.vocab_size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_causal_future_tokens_do_not_change_the_past(cfg):
    model = build_model(cfg, seed=0)
    a = torch.randint(0, cfg.vocab_size, (1, 20))
    b = a.clone()
    b[0, 12:] = torch.randint(0, cfg.vocab_size, (8,))
    la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :12], lb[:, :12])
    assert not torch.allclose(la[:, 12:], lb[:, 12:])


def test_no_biases_untied_output_and_parameter_names(cfg):
    model = build_model(cfg, seed=0)
    names = dict(model.named_parameters())
    linear_biases = [n for n in names if n.endswith("bias") and "norm" not in n]
    assert linear_biases == []
    assert model.output.weight.data_ptr() != model.tok_embeddings.weight.data_ptr()
    assert {"layers.0.attention.wq.weight", "layers.0.feed_forward.w1.weight", "layers.1.ffn_norm.bias",
            "norm.weight", "output.weight", "tok_embeddings.weight"} <= set(names)
    assert names["layers.0.attention.wk.weight"].shape == (cfg.n_kv_heads * cfg.head_dim, cfg.dim)
    assert names["layers.0.attention.wo.weight"].shape == (cfg.dim, cfg.n_heads * cfg.head_dim)


def test_layernorm1p_is_zero_centred_with_bias():
    ln = LayerNorm1P(8)
    ln.reset_parameters()
    x = torch.randn(4, 8)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (8,)))  # weight 0 -> gain 1
    with torch.no_grad():
        ln.weight.fill_(0.5)
        ln.bias.fill_(0.25)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (8,)) * 1.5 + 0.25)


def test_partial_rope_rotates_only_the_first_fraction(cfg):
    model = build_model(cfg, seed=0)
    rot = cfg.rotary_dim
    x = torch.randn(1, 6, 2, cfg.head_dim)
    y = apply_rope(x, model.rope_cos[:6], model.rope_sin[:6])
    torch.testing.assert_close(y[..., rot:], x[..., rot:])  # pass-through dims
    torch.testing.assert_close(y[:, 0], x[:, 0])  # position 0: identity rotation
    assert not torch.allclose(y[:, 1:, :, :rot], x[:, 1:, :, :rot])
    # a rotation keeps the norm of each (i, i + rot/2) pair
    half = rot // 2
    pair_norm = lambda t: t[..., :half] ** 2 + t[..., half:rot] ** 2  # noqa: E731
    torch.testing.assert_close(pair_norm(y), pair_norm(x))


def test_rope_relative_positions(cfg):
    # q.k after RoPE depends only on the distance between positions.
    model = build_model(cfg, seed=0)
    q, k = torch.randn(cfg.head_dim), torch.randn(cfg.head_dim)

    def score(i: int, j: int) -> torch.Tensor:
        qi = apply_rope(q.view(1, 1, 1, -1), model.rope_cos[i:i + 1], model.rope_sin[i:i + 1])
        kj = apply_rope(k.view(1, 1, 1, -1), model.rope_cos[j:j + 1], model.rope_sin[j:j + 1])
        return (qi * kj).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10))


def test_gqa_equals_repeated_kv_heads(cfg):
    # Grouped-query attention = multi-head attention with each KV head shared by n_heads / n_kv_heads queries.
    model = build_model(cfg, seed=0)
    attn = model.layers[0].attention
    x = torch.randn(2, 9, cfg.dim)
    cos, sin = model.rope_cos[:9], model.rope_sin[:9]
    q = apply_rope(attn.wq(x).view(2, 9, cfg.n_heads, -1), cos, sin).transpose(1, 2)
    k = apply_rope(attn.wk(x).view(2, 9, cfg.n_kv_heads, -1), cos, sin).transpose(1, 2)
    v = attn.wv(x).view(2, 9, cfg.n_kv_heads, -1).transpose(1, 2)
    rep = cfg.n_heads // cfg.n_kv_heads
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.head_dim)
    scores = scores.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, -1)
    torch.testing.assert_close(attn(x, cos, sin), attn.wo(y), rtol=1e-5, atol=1e-5)


def test_squared_relu_mlp(cfg):
    model = build_model(cfg, seed=0)
    ff = model.layers[0].feed_forward
    x = torch.randn(3, cfg.dim)
    torch.testing.assert_close(ff(x), ff.w2(torch.relu(ff.w1(x)) ** 2))


def test_meta_build_then_init_weights(cfg):
    with torch.device("meta"):
        model = Nemotron4(cfg)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    model.init_weights(seed=1)
    std = cfg.init_std
    assert abs(model.tok_embeddings.weight.std().item() - std) < 0.1 * std
    assert abs(model.layers[0].attention.wq.weight.std().item() - std) < 0.1 * std
    out_std = std / math.sqrt(2 * cfg.n_layers)  # Megatron's scaled init for block output projections
    assert abs(model.layers[0].feed_forward.w2.weight.std().item() - out_std) < 0.1 * out_std
    assert torch.count_nonzero(model.norm.weight) == 0 and torch.count_nonzero(model.norm.bias) == 0
    # rotary tables recomputed on the real device
    assert not model.rope_cos.is_meta and torch.equal(model.rope_cos[0], torch.ones(cfg.rotary_dim))
    # same seed, same weights
    other = build_model(cfg, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(), strict=True))


def test_bf16_build_keeps_rope_tables_fp32(cfg):
    model = build_model(cfg, dtype=torch.bfloat16, seed=0)
    assert model.output.weight.dtype == torch.bfloat16 and model.rope_cos.dtype == torch.float32
    assert model(torch.randint(0, cfg.vocab_size, (1, 5))).dtype == torch.bfloat16


def test_explicit_positions_equal_default(cfg):
    model = build_model(cfg, seed=0)
    tokens = torch.randint(0, cfg.vocab_size, (2, 10))
    torch.testing.assert_close(model(tokens), model(tokens, input_pos=torch.arange(10)))


def test_sequence_longer_than_max_seq_len_is_an_error(cfg):
    model = build_model(cfg, seed=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, cfg.max_seq_len + 1, dtype=torch.long))


def test_gradients_reach_every_parameter(cfg):
    model = build_model(cfg, seed=0)
    tokens = torch.randint(0, cfg.vocab_size, (2, 12))
    logits = model(tokens[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
