"""The Nemotron-4 decoder (docs/paper.md section 1), as plain nn.Modules that import only torch.

    tokens -> tok_embeddings -> n_layers x Block -> norm -> output -> logits
    Block:  h = x + attention(attention_norm(x));  out = h + feed_forward(ffn_norm(h))

Pre-norm blocks with LayerNorm1P (zero-centred gamma, with bias), grouped-query attention with partial RoPE on the
first `rotary_fraction` of each head's dims (rotate-half / NeoX style), a squared-ReLU MLP without a gate, no linear
biases, untied input embedding and output projection, no dropout.

Build on `meta`, then materialise and initialise:

    with torch.device("meta"):
        model = Nemotron4(cfg)
    model.to_empty(device="cuda")
    model.init_weights()
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nemotron4.config import ModelConfig
from nemotron4.flops import param_counts


def layernorm_1p(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LN(x) * (1 + weight) + bias. 1 + weight in fp32 (weight is near 0: in bf16 the gain would move in steps of
    1/128), then x's dtype, so that bf16 copies of the weights (FSDP2's mixed precision) normalise an fp32
    residual stream."""
    gain, b = (weight.float() + 1.0).to(x.dtype), bias.to(x.dtype)
    return F.layer_norm(x, (x.shape[-1],), gain, b, eps)


class LayerNorm1P(nn.Module):
    """LayerNorm with a zero-centred gain: LN(x) * (1 + weight) + bias (Megatron `--apply-layernorm-1p`)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layernorm_1p(x, self.weight, self.bias, self.eps)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def rope_cache(cfg: ModelConfig, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_seq_len, rotary_dim), fp32; frequencies repeated for rotate-half."""
    rot = cfg.rotary_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, rot, 2, device=device, dtype=torch.float32) / rot))
    pos = torch.arange(cfg.max_seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq)  # (max_seq_len, rot / 2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (max_seq_len, rot)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of each head; pass the rest through.

    x: (B, T, H, head_dim); cos, sin: (T, rot) or (B, T, rot).
    """
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    cos, sin = cos.unsqueeze(-2).to(x.dtype), sin.unsqueeze(-2).to(x.dtype)  # broadcast over heads
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
    rotated = torch.cat((-x2, x1), dim=-1)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


class Attention(nn.Module):
    """Grouped-query causal self-attention through `scaled_dot_product_attention`.

    `kv_cache` is None for training; inference attaches a cache module (nemotron4.inference.kv_cache) whose
    `update(input_pos, k, v)` stores this step's keys/values and returns the whole cache.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.kv_cache: nn.Module | None = None

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, T, n_heads, head_dim), keys and values (B, T, n_kv_heads, head_dim). Inference overrides
        this with one fused projection (nemotron4.inference.quantize.fuse_qkv)."""
        B, T, _ = x.shape
        # -1 instead of n_heads: under tensor parallelism each rank holds a slice of the heads.
        q = self.wq(x).view(B, T, -1, self.head_dim)
        k = self.wk(x).view(B, T, -1, self.head_dim)
        v = self.wv(x).view(B, T, -1, self.head_dim)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project_qkv(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, head_dim)
        gqa = q.shape[1] != k.shape[1]
        if self.kv_cache is not None:
            if input_pos is None:
                raise ValueError("a KV cache is attached: pass input_pos (the cache slots), or remove the caches")
            k_all, v_all = self.kv_cache.update(input_pos, k, v)  # (B, n_kv_heads, max_len, head_dim)
            if mask is not None:  # decode, or a padded prefill: attend over the cache under `mask`
                k, v = k_all, v_all
            # mask None: a prefill from position 0 attends only to its own tokens, causally (below)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """Squared-ReLU MLP without a gate: w2(relu(w1(x)) ** 2)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.relu(self.w1(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = LayerNorm1P(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = LayerNorm1P(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, input_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class Nemotron4(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = LayerNorm1P(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)  # untied from tok_embeddings
        cos, sin = rope_cache(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, rotary_dim)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(
        self, tokens: torch.Tensor, input_pos: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab_size).

        input_pos: positions of the tokens, (T,); default 0..T-1. With KV caches attached (inference) they are
        also the cache slots written. mask: boolean, broadcastable to (B, 1, T, S), True = attend; default
        causal over the tokens given.
        """
        return self.output(self.hidden_states(tokens, input_pos, mask))

    def rope_at(self, T: int, input_pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary tables (cos, sin) for T tokens at positions 0..T-1, or at `input_pos` (decode)."""
        if input_pos is not None:
            return self.rope_cos[input_pos], self.rope_sin[input_pos]
        if self.cfg.max_seq_len < T:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}")
        return self.rope_cos[:T], self.rope_sin[:T]

    def hidden_states(
        self, tokens: torch.Tensor, input_pos: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final-normed hidden states (B, T, dim), before the output projection."""
        cos, sin = self.rope_at(tokens.shape[1], input_pos)
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, mask, input_pos)
        return self.norm(h)

    @torch.no_grad()
    def init_buffers(self) -> None:
        """(Re)compute the rotary tables on the model's device, e.g. after `to_empty`."""
        cos, sin = rope_cache(self.cfg, device=self.output.weight.device)
        self.rope_cos, self.rope_sin = cos, sin

    def init_std_of(self, name: str) -> float | None:
        """Normal std of parameter `name` at init, or None for zeros. Embeddings and projections: init_std; block
        output projections (attention.wo, feed_forward.w2): init_std / sqrt(2 * n_layers), as Megatron's
        `scaled_init_method_normal`; LayerNorm1P gains and biases: zero (gain 1 after the +1)."""
        module = self.get_submodule(name.rpartition(".")[0])
        if isinstance(module, LayerNorm1P):
            return None
        if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
            return self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers)
        return self.cfg.init_std

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Initialise every parameter per `init_std_of`, in `named_parameters` order from one generator (seeded
        when `seed` is given, else the global RNG). nemotron4.distributed reproduces this order on sharded
        parameters, so keep the two in step."""
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.output.weight.device).manual_seed(seed)
        for name, param in self.named_parameters():
            std = self.init_std_of(name)
            if std is None:
                nn.init.zeros_(param)
            else:
                nn.init.normal_(param, mean=0.0, std=std, generator=generator)
        self.init_buffers()

    def param_counts(self) -> dict[str, int]:
        """Parameters split as in the report: embedding (input embedding + output projection), output, and the rest
        (`nemotron4.flops.param_counts`, the one count; tests check it against this module's tensors)."""
        return param_counts(self.cfg)


def build_model(
    cfg: ModelConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int | None = None
) -> Nemotron4:
    """Build on `meta`, materialise on `device` in `dtype`, initialise (rotary tables stay fp32)."""
    with torch.device("meta"):
        model = Nemotron4(cfg)
    model.to_empty(device=device)
    model.init_weights(seed=seed)
    if dtype != torch.float32:
        model.to(dtype)
        model.init_buffers()  # keep the rotary tables in fp32
    return model
