"""Megatron-Core / Megatron-LM / NeMo checkpoints <-> our model: the key map and config translation as data, and
conversion that streams one tensor at a time.

Sources (`open_checkpoint`): a Megatron-Core distributed checkpoint directory (`torch_dist` or `zarr`), a Megatron-LM
save directory (`latest_checkpointed_iteration.txt` + `iter_*`), a NeMo 1 `.nemo` archive or its extracted directory,
and a NeMo 2 checkpoint directory (`weights/` + `context/`); see `interop.nemo` for the NeMo layouts. The model
config comes from the checkpoint's own config: `model_config.yaml` (NeMo 1, and what `--to megatron` writes), NeMo 2's
`context/model.yaml`, or the Megatron-LM `args` saved in `common.pt`. Anything Nemotron-4 does not have is an error
naming the key.

Export (`write_megatron`): a `torch_dist` checkpoint with Megatron-Core's key names and stacked per-layer tensors
(one chunk per layer), `common.pt`, `metadata.json` and a NeMo-1-style `model_config.yaml`; megatron-core's
`dist_checkpointing.load` reads it into a `GPTModel` configured as Nemotron-4.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nemotron4.config import ModelConfig
from nemotron4.errors import ConfigError, UserError
from nemotron4.interop import mcore_format as fmt
from nemotron4.interop import nemo

# Megatron-Core key -> our parameter name(s). Keys under `decoder.layers.` hold all layers stacked along a first
# dimension (the layer index, "{i}" in our names). `linear_qkv.weight` is fused: per query group, the group's query
# heads, then its key head, then its value head; it maps to our wq, wk, wv. The input LayerNorm of each sublayer is
# stored with the linear it precedes (Transformer Engine's fused LayerNorm-Linear naming).
KEY_MAP: dict[str, str | tuple[str, ...]] = {
    "embedding.word_embeddings.weight": "tok_embeddings.weight",
    "decoder.layers.self_attention.linear_qkv.layer_norm_weight": "layers.{i}.attention_norm.weight",
    "decoder.layers.self_attention.linear_qkv.layer_norm_bias": "layers.{i}.attention_norm.bias",
    "decoder.layers.self_attention.linear_qkv.weight": (
        "layers.{i}.attention.wq.weight", "layers.{i}.attention.wk.weight", "layers.{i}.attention.wv.weight"),
    "decoder.layers.self_attention.linear_proj.weight": "layers.{i}.attention.wo.weight",
    "decoder.layers.mlp.linear_fc1.layer_norm_weight": "layers.{i}.ffn_norm.weight",
    "decoder.layers.mlp.linear_fc1.layer_norm_bias": "layers.{i}.ffn_norm.bias",
    "decoder.layers.mlp.linear_fc1.weight": "layers.{i}.feed_forward.w1.weight",
    "decoder.layers.mlp.linear_fc2.weight": "layers.{i}.feed_forward.w2.weight",
    "decoder.final_layernorm.weight": "norm.weight",
    "decoder.final_layernorm.bias": "norm.bias",
    "output_layer.weight": "output.weight",
}
STACKED_PREFIX = "decoder.layers."
# Key prefixes a wrapper adds (NeMo 1: `model.`, NeMo 2: `module.`); stripped on reading.
WRAPPER_PREFIXES = ("model.", "module.")
# Entries never read: Transformer Engine / linear `_extra_state` (FP8 metadata), optimizer state, RNG state.
IGNORED = ("_extra_state", "optimizer.", "rng_state")

# Our ModelConfig field -> the config keys that carry it, first present wins: NeMo 1 model_config.yaml, Megatron-Core
# TransformerConfig (NeMo 2), Megatron-LM args.
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "dim": ("hidden_size",),
    "n_layers": ("num_layers",),
    "n_heads": ("num_attention_heads",),
    "n_kv_heads": ("num_query_groups",),
    "head_dim": ("kv_channels",),
    "ffn_dim": ("ffn_hidden_size",),
    "max_seq_len": ("max_position_embeddings", "seq_length", "encoder_seq_length"),
    "rotary_fraction": ("rotary_percentage", "rotary_percent"),
    "rope_theta": ("rotary_base",),
    "norm_eps": ("layernorm_epsilon", "norm_epsilon"),
    "init_std": ("init_method_std",),
}
# Megatron's defaults where a config leaves a key out.
CONFIG_DEFAULTS = {"rotary_fraction": 1.0, "rope_theta": 10000.0, "norm_eps": 1e-5, "init_std": 0.02,
                   "max_seq_len": 4096}
# Config key -> the values Nemotron-4 has (a present key with another value is an error) and what it means.
MUST_BE: dict[str, tuple[tuple[Any, ...], str]] = {
    "activation": (("squared-relu",), "Nemotron-4's MLP is squared ReLU without a gate"),
    "squared_relu": ((True,), "Nemotron-4's MLP is squared ReLU"),
    "swiglu": ((False,), "a gated MLP (SwiGLU); Nemotron-4's MLP has no gate"),
    "gated_linear_unit": ((False,), "a gated MLP; Nemotron-4's MLP has no gate"),
    "bias": ((False,), "biases in the linear layers; Nemotron-4 has none"),
    "add_bias_linear": ((False,), "biases in the linear layers; Nemotron-4 has none"),
    "add_qkv_bias": ((False,), "QKV biases; Nemotron-4 has none"),
    "share_embeddings_and_output_weights": ((False,), "tied embeddings; Nemotron-4's output layer is untied"),
    "untie_embeddings_and_output_weights": ((True,), "tied embeddings; Nemotron-4's output layer is untied"),
    "position_embedding_type": (("rope",), "Nemotron-4 uses rotary position embeddings"),
    "transformer_block_type": (("pre_ln",), "Nemotron-4 is a pre-LayerNorm transformer"),
    "apply_residual_connection_post_layernorm": ((False,), "Nemotron-4 is a pre-LayerNorm transformer"),
    "headscale": ((False,), "head scaling is not part of Nemotron-4"),
    "qk_layernorm": ((False,), "QK LayerNorm is not part of Nemotron-4"),
    "rotary_interleaved": ((False,), "Nemotron-4's RoPE rotates halves, not interleaved pairs"),
    "num_moe_experts": ((None,), "mixture-of-experts; Nemotron-4 is dense"),
    "num_experts": ((None,), "mixture-of-experts; Nemotron-4 is dense"),
    "multi_latent_attention": ((False,), "multi-latent attention; Nemotron-4 has GQA"),
}
_NORM_WHY = "Nemotron-4 uses LayerNorm with a zero-centred gamma and a bias ('layernorm1p')"


def config_from_megatron(c: dict[str, Any], vocab_size: int, source: str) -> ModelConfig:
    """Translate a Megatron / NeMo model config (one flat dict of any of the three dialects) to ours."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {key} = {c.get(key)!r} is not supported: {why}")

    for key, (ok, why) in MUST_BE.items():
        if key in c and c[key] not in ok:
            raise bad(key, why)
    act = c.get("activation_func")
    if isinstance(act, dict) and not str(act.get("_target_", "")).endswith("squared_relu"):
        raise bad("activation_func", "Nemotron-4's MLP is squared ReLU")
    if not any(k in c for k in ("activation", "squared_relu", "activation_func")):
        raise ConfigError(f"{source}: no activation key (activation / activation_func / squared_relu); Megatron's "
                          "default is GeLU, Nemotron-4's MLP is squared ReLU")
    norm = c.get("normalization")
    zero_centred = bool(c.get("layernorm_zero_centered_gamma") or c.get("apply_layernorm_1p"))
    if norm != "layernorm1p" and not (norm in ("LayerNorm", "layernorm") and zero_centred):
        raise bad("normalization", f"{_NORM_WHY}; a plain LayerNorm needs layernorm_zero_centered_gamma: true")

    values: dict[str, Any] = {}
    for field, keys in CONFIG_KEYS.items():
        key = next((k for k in keys if c.get(k) is not None), None)
        if key is not None:
            values[field] = c[key]
    missing = [CONFIG_KEYS[f][0] for f in ("dim", "n_layers", "n_heads", "ffn_dim") if f not in values]
    if missing:
        raise ConfigError(f"{source}: missing required keys {missing}")
    if c.get("group_query_attention") is False:  # Megatron-LM args: num_query_groups is unused then
        values.pop("n_kv_heads", None)
    values.setdefault("n_kv_heads", values["n_heads"])
    values.setdefault("head_dim", values["dim"] // values["n_heads"])
    for field, default in CONFIG_DEFAULTS.items():
        values.setdefault(field, default)
    for field in ("rotary_fraction", "rope_theta", "norm_eps", "init_std"):
        values[field] = float(values[field])
    return ModelConfig(vocab_size=vocab_size, **values)


def config_to_megatron(cfg: ModelConfig, dtype: torch.dtype) -> dict[str, Any]:
    """Our config -> NeMo 1 `model_config.yaml` keys (what NeMo and `config_from_megatron` read)."""
    return {
        "mcore_gpt": True,
        "num_layers": cfg.n_layers, "hidden_size": cfg.dim, "ffn_hidden_size": cfg.ffn_dim,
        "num_attention_heads": cfg.n_heads, "num_query_groups": cfg.n_kv_heads, "kv_channels": cfg.head_dim,
        "encoder_seq_length": cfg.max_seq_len, "max_position_embeddings": cfg.max_seq_len,
        "position_embedding_type": "rope", "rotary_percentage": cfg.rotary_fraction, "rotary_base": cfg.rope_theta,
        "normalization": "layernorm1p", "layernorm_epsilon": cfg.norm_eps, "activation": "squared-relu",
        "bias": False, "share_embeddings_and_output_weights": False, "transformer_block_type": "pre_ln",
        "init_method_std": cfg.init_std, "hidden_dropout": 0.0, "attention_dropout": 0.0, "ffn_dropout": 0.0,
        "make_vocab_size_divisible_by": 1, "padded_vocab_size": cfg.vocab_size,
        "precision": {torch.bfloat16: "bf16", torch.float16: 16}.get(dtype, 32),
    }


# --- sources --------------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """An opened Megatron-family checkpoint: its tensors, our config, and where its tokenizer is."""

    label: str
    reader: fmt.Reader
    key_prefix: str
    cfg: ModelConfig
    tokenizer: tuple[fmt.Storage, str] | None = None

    def key(self, name: str) -> str:
        return self.key_prefix + name

    def tokenizer_bytes(self) -> bytes | None:
        return self.tokenizer[0].read(self.tokenizer[1]) if self.tokenizer else None


def _prefix(reader: fmt.Reader, label: str) -> str:
    for prefix in ("", *WRAPPER_PREFIXES):
        if prefix + "embedding.word_embeddings.weight" in reader.tensors:
            return prefix
    shown = ", ".join(list(reader.tensors)[:5]) or "(none)"
    raise UserError(f"{label}: no embedding.word_embeddings.weight among its tensors ({shown}); not a GPT checkpoint")


def from_parts(label: str, weights: fmt.Storage, config: dict[str, Any] | None, config_label: str,
               tokenizer: tuple[fmt.Storage, str] | None = None) -> Checkpoint:
    """A Checkpoint from a distributed-checkpoint folder and a config dict (None: the args in common.pt)."""
    if not weights.exists(fmt.METADATA_JSON):
        raise UserError(f"{weights.label}: no {fmt.METADATA_JSON}; not a Megatron-Core distributed checkpoint")
    reader = fmt.open_reader(weights)
    if config is None:
        args = fmt.load_common(weights).get("args") if weights.exists(fmt.COMMON) else None
        if args is None:
            raise UserError(f"{label}: no model config: expected model_config.yaml beside the checkpoint, or the "
                            f"Megatron-LM args in {fmt.COMMON}")
        fields = args if isinstance(args, dict) else vars(args)
        config = {k: v for k, v in fields.items() if k not in ("args", "kwargs")}  # not Opaque's own fields
        config_label = weights.where(fmt.COMMON) + " (args)"
    prefix = _prefix(reader, label)
    emb = reader.tensors[prefix + "embedding.word_embeddings.weight"]
    cfg = config_from_megatron(config, vocab_size=emb.shape[0], source=config_label)
    return Checkpoint(label, reader, prefix, cfg, tokenizer)


def _megatron_lm_iteration(path: Path) -> Path:
    tracker = path / "latest_checkpointed_iteration.txt"
    text = tracker.read_text().strip()
    name = "release" if text == "release" else f"iter_{int(text):07d}" if text.isdigit() else None
    if name is None or not (path / name).is_dir():
        raise UserError(f"{tracker}: names {text!r}, but {path / (name or text)} is not a directory")
    return path / name


def detect(path: str | Path) -> str | None:
    """'megatron', 'nemo' or None for a path that is neither."""
    path = Path(path)
    if nemo.detect(path):
        return "nemo"
    markers = (fmt.METADATA_JSON, "latest_checkpointed_iteration.txt")
    if path.is_dir() and any((path / m).is_file() for m in markers):
        return "megatron"
    return None


def open_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if nemo.detect(path):
        parts = nemo.open_nemo(path)
        ckpt = from_parts(str(path), parts.weights, parts.config, parts.config_label)
        ckpt.tokenizer = parts.tokenizer()
        return ckpt
    if (path / "latest_checkpointed_iteration.txt").is_file():
        path = _megatron_lm_iteration(path)
    if not (path / fmt.METADATA_JSON).is_file():
        raise UserError(f"{path}: not a Megatron-Core distributed checkpoint (no {fmt.METADATA_JSON})")
    storage = fmt.DirStorage(path)
    for where in (path, path.parent):
        if (where / "model_config.yaml").is_file():
            cfg_store = fmt.DirStorage(where)
            return from_parts(str(path), storage, nemo.yaml_load(cfg_store, "model_config.yaml"),
                              str(where / "model_config.yaml"), _tokenizer_beside(path))
    return from_parts(str(path), storage, None, "", _tokenizer_beside(path))


def _tokenizer_beside(path: Path) -> tuple[fmt.Storage, str] | None:
    return (fmt.DirStorage(path), "tokenizer.model") if (path / "tokenizer.model").is_file() else None


# --- reading: (our name, tensor), one layer's tensor at a time ------------------------------------------------


def _per_layer(name: str, i: int) -> str:
    return name.format(i=i)


def plan(ckpt: Checkpoint) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(our name, shape, dtype) of every parameter, in the order `iter_tensors` yields them."""
    with torch.device("meta"):
        from nemotron4.model import Nemotron4

        shapes = {n: tuple(p.shape) for n, p in Nemotron4(ckpt.cfg).named_parameters()}
    out = []
    for name in _our_order(ckpt.cfg):
        key = _source_key(name)
        out.append((name, shapes[name], ckpt.reader.tensors[ckpt.key(key)].dtype))
    return out


def _our_order(cfg: ModelConfig) -> list[str]:
    layer = [n for v in KEY_MAP.values() for n in (v if isinstance(v, tuple) else (v,)) if "{i}" in n]
    names = ["tok_embeddings.weight"]
    for i in range(cfg.n_layers):
        names += [_per_layer(n, i) for n in layer]
    return [*names, "norm.weight", "norm.bias", "output.weight"]


_OUR_TO_KEY = {n.replace("{i}", "*"): k for k, v in KEY_MAP.items() for n in (v if isinstance(v, tuple) else (v,))}


def _source_key(ours: str) -> str:
    parts = ours.split(".")
    generic = ".".join("*" if p.isdigit() else p for p in parts)
    return _OUR_TO_KEY[generic]


def _check_keys(ckpt: Checkpoint) -> None:
    known = {ckpt.key(k) for k in KEY_MAP}
    extra = [k for k in ckpt.reader.tensors if k not in known and not any(s in k for s in IGNORED)]
    if extra:
        raise UserError(f"{ckpt.label}: tensor {extra[0]!r} has no Nemotron-4 counterpart (e.g. a bias, a gate or "
                        f"another norm){f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}")
    missing = [k for k in KEY_MAP if ckpt.key(k) not in ckpt.reader.tensors]
    if missing:
        raise UserError(f"{ckpt.label}: tensor {ckpt.key(missing[0])!r} is missing from the checkpoint")
    for k in KEY_MAP:
        shape = ckpt.reader.tensors[ckpt.key(k)].shape
        if k.startswith(STACKED_PREFIX) and shape[0] != ckpt.cfg.n_layers:
            raise UserError(f"{ckpt.label}: {ckpt.key(k)!r} stacks {shape[0]} layers, the config says "
                            f"num_layers = {ckpt.cfg.n_layers}")


def split_qkv(w: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Megatron's fused QKV ([group][q heads of the group, k, v] rows) -> wq, wk, wv."""
    per = cfg.n_heads // cfg.n_kv_heads
    g = w.view(cfg.n_kv_heads, per + 2, cfg.head_dim, w.shape[-1])
    q = g[:, :per].reshape(cfg.n_heads * cfg.head_dim, -1)
    kv_rows = cfg.n_kv_heads * cfg.head_dim
    return q, g[:, per].reshape(kv_rows, -1), g[:, per + 1].reshape(kv_rows, -1)


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    per = cfg.n_heads // cfg.n_kv_heads
    d = q.shape[-1]
    parts = (q.view(cfg.n_kv_heads, per, cfg.head_dim, d), k.view(cfg.n_kv_heads, 1, cfg.head_dim, d),
             v.view(cfg.n_kv_heads, 1, cfg.head_dim, d))
    return torch.cat(parts, dim=1).reshape(-1, d)


def iter_tensors(ckpt: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
    """(our name, tensor) for every parameter, reading one layer's slice of one key at a time."""
    _check_keys(ckpt)
    cfg, reader = ckpt.cfg, ckpt.reader
    expected = {n: s for n, s, _ in plan(ckpt)}

    def read(key: str, layer: int | None = None) -> torch.Tensor:
        info = reader.tensors[ckpt.key(key)]
        region = None if layer is None else ((layer, layer + 1), *((0, n) for n in info.shape[1:]))
        t = reader.read(ckpt.key(key), region)
        return t[0] if layer is not None else t

    def checked(name: str, t: torch.Tensor) -> tuple[str, torch.Tensor]:
        if tuple(t.shape) != expected[name]:
            raise UserError(f"{ckpt.label}: {_source_key(name)!r} gives {name} the shape {tuple(t.shape)}; the "
                            f"config implies {expected[name]}")
        return name, t

    yield checked("tok_embeddings.weight", read("embedding.word_embeddings.weight"))
    for i in range(cfg.n_layers):
        for key, ours in KEY_MAP.items():
            if not key.startswith(STACKED_PREFIX):
                continue
            t = read(key, i)
            if isinstance(ours, tuple):
                rows = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
                if t.shape[0] != rows:
                    raise UserError(f"{ckpt.label}: {ckpt.key(key)!r} has {t.shape[0]} rows per layer; the config "
                                    f"implies ({cfg.n_heads} + 2 x {cfg.n_kv_heads}) x {cfg.head_dim} = {rows}")
                for name, part in zip(ours, split_qkv(t, cfg), strict=True):
                    yield checked(_per_layer(name, i), part.clone())
            else:
                yield checked(_per_layer(ours, i), t)
            del t
    for key in ("decoder.final_layernorm.weight", "decoder.final_layernorm.bias", "output_layer.weight"):
        yield checked(KEY_MAP[key], read(key))


def load(ckpt: Checkpoint, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """Our model from an opened checkpoint (built on meta, each tensor assigned as it is read)."""
    from nemotron4.model import Nemotron4

    with torch.device("meta"):
        model = Nemotron4(ckpt.cfg)
    state = {n: t.to(device=device, dtype=dtype or t.dtype) for n, t in iter_tensors(ckpt)}
    model.load_state_dict(state, strict=False, assign=True)
    model.init_buffers()
    return model


# --- writing --------------------------------------------------------------------------------------------------


def write_megatron(cfg: ModelConfig, tensors: Iterable[tuple[str, torch.Tensor]], path: Path,
                   dtype: torch.dtype | None = None) -> Path:
    """A torch_dist checkpoint + model_config.yaml from (our name, tensor) pairs (any order within a layer)."""
    import yaml

    writer = fmt.TorchDistWriter(path)
    pending: dict[str, torch.Tensor] = {}
    extra = io.BytesIO()
    torch.save([None], extra)  # the `_extra_state` of a non-FP8 linear layer, as megatron-core stores it
    out_dtype = dtype
    for name, t in tensors:
        t = t.detach().to("cpu", dtype or t.dtype)
        out_dtype = t.dtype
        key = _source_key(name)
        layer = int(name.split(".")[1]) if name.startswith("layers.") else None
        if isinstance(KEY_MAP[key], tuple):
            pending[name.split(".")[-2]] = t  # wq / wk / wv
            if len(pending) < 3:
                continue
            t, pending = fuse_qkv(pending["wq"], pending["wk"], pending["wv"], cfg), {}
        if layer is None:
            writer.add_chunk(key, t, (0,) * t.dim(), tuple(t.shape))
        else:
            writer.add_chunk(key, t.unsqueeze(0), (layer,) + (0,) * t.dim(), (cfg.n_layers, *t.shape))
            if key.endswith(".weight") and "layer_norm" not in key:
                writer.add_bytes(f"{key.removesuffix('.weight')}._extra_state/shard_{layer}_{cfg.n_layers}",
                                 extra.getvalue())
    writer.close()
    (path / "model_config.yaml").write_text(yaml.safe_dump(config_to_megatron(cfg, out_dtype or torch.float32),
                                                           sort_keys=False))
    return path


# --- conversion into a fresh directory ------------------------------------------------------------------------


def atomic_output(dest: str | Path):
    """A context manager yielding a temporary sibling of `dest` that is renamed to `dest` on success and removed on
    failure: a failed conversion leaves nothing at `dest`."""
    import contextlib

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest}: exists and is not an empty directory; choose a new output directory")

    @contextlib.contextmanager
    def ctx():
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)

    return ctx()
