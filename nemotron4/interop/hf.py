"""Hugging Face interop: `model_type: nemotron` directories (Minitron-4B/8B, Nemotron-4 15B/340B conversions).

`from_hf(dir)` reads config.json and one or sharded safetensors files into our `Nemotron4`; `to_hf(model, dir)`
writes a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads. Neither imports transformers:
the formats are plain JSON and safetensors. Loading never unpickles (`*.bin` / `*.pt` files are refused).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from nemotron4.config import ModelConfig
from nemotron4.errors import ConfigError, UserError
from nemotron4.fsio import open_safetensors
from nemotron4.model import Nemotron4

# Our parameter names -> Hugging Face names. "{i}" is the layer index. Data, not code.
KEY_MAP: dict[str, str] = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "layers.{i}.attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.attention_norm.bias": "model.layers.{i}.input_layernorm.bias",
    "layers.{i}.attention.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.attention.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.attention.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.attention.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.ffn_norm.bias": "model.layers.{i}.post_attention_layernorm.bias",
    "layers.{i}.feed_forward.w1.weight": "model.layers.{i}.mlp.up_proj.weight",
    "layers.{i}.feed_forward.w2.weight": "model.layers.{i}.mlp.down_proj.weight",
    "norm.weight": "model.norm.weight",
    "norm.bias": "model.norm.bias",
    "output.weight": "lm_head.weight",
}

# Our ModelConfig field -> HF config.json key (the keys every released config has).
CONFIG_MAP: dict[str, str] = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "ffn_dim": "intermediate_size",
    "vocab_size": "vocab_size",
    "max_seq_len": "max_position_embeddings",
    "norm_eps": "norm_eps",
    "init_std": "initializer_range",
}

# Older or alternative spellings of the rotary fraction, in order of precedence.
_ROTARY_KEYS = ("partial_rotary_factor", "rope_percent", "rope_percentage")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(\d+)") + "$")


_TO_HF = [(_pattern(ours), hf) for ours, hf in KEY_MAP.items()]
_FROM_HF = [(_pattern(hf), ours) for ours, hf in KEY_MAP.items()]


def _rename(name: str, table: list[tuple[re.Pattern[str], str]], direction: str) -> str:
    for pattern, template in table:
        m = pattern.match(name)
        if m:
            return template.format(i=m.group(1)) if m.groups() else template
    raise UserError(f"{direction}: no mapping for parameter {name!r}; known patterns: {', '.join(KEY_MAP)}")


def hf_name(ours: str) -> str:
    """Our parameter name -> the HF name."""
    return _rename(ours, _TO_HF, "to_hf")


def our_name(hf: str) -> str:
    """An HF parameter name -> ours."""
    return _rename(hf, _FROM_HF, "from_hf")


# --- config ---------------------------------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Translate an HF `nemotron` config dict to ours. Unsupported settings are an error naming the field."""

    def bad(field: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {field} = {hf.get(field)!r} is not supported: {why}")

    if hf.get("model_type") != "nemotron":
        raise bad("model_type", "expected 'nemotron' (NemotronForCausalLM: Minitron-4B/8B, Nemotron-4 15B/340B)")
    if hf.get("tie_word_embeddings", False):
        raise bad("tie_word_embeddings", "Nemotron-4 has an output projection untied from the input embedding")
    for field in ("attention_bias", "mlp_bias"):
        if hf.get(field, False):
            raise bad(field, "Nemotron-4 has no biases in its linear layers")
    if hf.get("hidden_act", "relu2") != "relu2":
        raise bad("hidden_act", "Nemotron-4's MLP is squared ReLU ('relu2')")

    rope_params = hf.get("rope_parameters") or {}
    rope_scaling = hf.get("rope_scaling") or {}
    # Each is checked on its own: a default `rope_parameters` beside a yarn `rope_scaling` (transformers 4.x keeps
    # both) must not hide the scaling, which we would then silently ignore.
    for field, rope in (("rope_parameters", rope_params), ("rope_scaling", rope_scaling)):
        if not isinstance(rope, dict):
            raise bad(field, "expected a table such as {\"rope_type\": \"default\"}")
        rope_type = rope.get("rope_type") or rope.get("type") or "default"
        if rope_type != "default":
            raise bad(field, f"rope type {rope_type!r}; only plain RoPE ('default') is implemented: use a checkpoint "
                      "without RoPE scaling, or remove the scaling from config.json if the model was not trained "
                      "with it")
        factor = rope.get("factor")
        if factor not in (None, 1, 1.0):
            raise bad(field, f"a RoPE scaling factor of {factor!r}; only plain RoPE (no scaling) is implemented")

    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "vocab_size") if k not in hf]
    if missing:
        raise ConfigError(f"{source}: missing required keys {missing}")

    rotary = next((hf[k] for k in _ROTARY_KEYS if hf.get(k) is not None), None)
    if rotary is None:
        rotary = rope_params.get("partial_rotary_factor", 0.5)  # HF NemotronConfig's default
    theta = hf.get("rope_theta") or rope_params.get("rope_theta") or 10000.0

    n_heads = hf["num_attention_heads"]
    return ModelConfig(
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or hf.get("kv_channels") or hf["hidden_size"] // n_heads,
        ffn_dim=hf["intermediate_size"],
        vocab_size=hf["vocab_size"],
        max_seq_len=hf.get("max_position_embeddings", 4096),
        rope_theta=float(theta),
        rotary_fraction=float(rotary),
        norm_eps=float(hf.get("norm_eps", hf.get("layer_norm_eps", 1e-5))),
        init_std=float(hf.get("initializer_range", 0.0134)),
    )


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype, bos_token_id: int = 2, eos_token_id: int = 3) -> dict:
    """Our config -> an HF `NemotronConfig` dict (rotary given both as the classic keys and as rope_parameters,
    so that transformers 4.x and 5.x read it the same)."""
    hf: dict[str, Any] = {"architectures": ["NemotronForCausalLM"], "model_type": "nemotron"}
    hf.update({key: getattr(cfg, ours) for ours, key in CONFIG_MAP.items()})
    hf.update(
        hidden_act="relu2",
        partial_rotary_factor=cfg.rotary_fraction,
        rope_theta=cfg.rope_theta,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta,
                         "partial_rotary_factor": cfg.rotary_fraction},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        torch_dtype=str(dtype).removeprefix("torch."),
        dtype=str(dtype).removeprefix("torch."),
        use_cache=True,
    )
    return hf


def read_hf_config(path: str | Path) -> ModelConfig:
    """ModelConfig of an HF directory (reads only config.json)."""
    path = Path(path)
    file = path / "config.json"
    try:
        hf = json.loads(file.read_text())
    except FileNotFoundError as e:
        raise UserError(f"{path}: no config.json; expected a Hugging Face model directory") from e
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{file}: cannot read: {e}") from e
    return config_from_hf(hf, source=str(file))


# --- weights --------------------------------------------------------------------------------------------------


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise UserError(f"{index}: not a valid safetensors index ({e})") from e
        files = [path / f for f in dict.fromkeys(weight_map.values())]
    elif (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        pickled = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = (f" It holds pickle files ({', '.join(pickled)}), which are never loaded because unpickling can run "
                "code: convert them to safetensors first.") if pickled else ""
        raise UserError(f"{path}: no *.safetensors weights found.{hint}")
    for f in files:
        if not f.exists():
            raise UserError(f"{f}: listed in the safetensors index but missing")
    return files


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' `save_file`, then the mode any new file gets under the umask (safetensors writes 0600)."""
    import os

    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def iter_hf_tensors(path: str | Path, device: str | torch.device = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) for every tensor of an HF directory, one file open at a time."""
    for file in _weight_files(Path(path)):
        with open_safetensors(file, device) as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield name, f.get_tensor(name)


def from_hf(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Nemotron4:
    """Load an HF `nemotron` directory into our model (built on `meta`, weights assigned as they are read).

    dtype: cast to this dtype; default keeps the checkpoint's. Rotary tables are rebuilt in fp32.
    """
    path = Path(path)
    cfg = read_hf_config(path)
    with torch.device("meta"):
        model = Nemotron4(cfg)
    expected = dict(model.named_parameters())
    state: dict[str, torch.Tensor] = {}
    for name, tensor in iter_hf_tensors(path, device):
        if name.endswith("rotary_emb.inv_freq"):  # a buffer some old exports saved; recomputed by us
            continue
        ours = our_name(name)
        if ours not in expected:
            raise UserError(f"{path}: tensor {name!r} maps to {ours!r}, which a {cfg.n_layers}-layer model lacks")
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise UserError(f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                            f"config.json implies {tuple(expected[ours].shape)}")
        state[ours] = tensor.to(dtype) if dtype is not None else tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(hf_name(m) for m in missing[:5])
        raise UserError(f"{path}: {len(missing)} tensors missing from the safetensors files, e.g. {shown}")
    model.load_state_dict(state, strict=False, assign=True)  # strict=False: rope buffers are not in `state`
    model.init_buffers()
    return model


def to_hf(
    model: Nemotron4,
    path: str | Path,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 5 * 2**30,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    tokenizer: str | Path | None = None,
) -> Path:
    """Write `model` as an HF directory: config.json, generation_config.json and safetensors (sharded with an
    index above `max_shard_bytes`). dtype: cast on the way out (default: the model's).

    tokenizer: our SentencePiece model; written beside the weights as `tokenizer.model` + `tokenizer.json` +
    `tokenizer_config.json`, so that `AutoTokenizer` encodes as ours does (bos in front). bos/eos ids default to the
    tokenizer's, else to the released family's 2 / 3."""
    path = Path(path)
    bos_token_id, eos_token_id = write_hf_tokenizer(tokenizer, path, bos_token_id, eos_token_id)
    plan = [(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()]
    return write_hf(model.cfg, plan, model.named_parameters(), path, dtype or model.output.weight.dtype,
                    max_shard_bytes, bos_token_id, eos_token_id)


def write_hf_tokenizer(tokenizer: str | Path | None, path: str | Path, bos_token_id: int | None = None,
                       eos_token_id: int | None = None) -> tuple[int, int]:
    """Our SentencePiece model `tokenizer` (None: none) into the HF directory `path` as `tokenizer.model` +
    `tokenizer.json` + `tokenizer_config.json` (AutoTokenizer then adds bos as ours does). Returns the bos / eos ids
    for config.json: the given ones, else the tokenizer's, else the released family's 2 / 3. The one rule of
    `to_hf` and the streaming `convert --to hf`."""
    if tokenizer is not None:
        from nemotron4.interop.hf_tokenizer import save_hf_tokenizer
        from nemotron4.tokenizer import Tokenizer

        sp = Tokenizer.load(tokenizer)
        bos_token_id = sp.bos_id if bos_token_id is None else bos_token_id
        eos_token_id = sp.eos_id if eos_token_id is None else eos_token_id
        save_hf_tokenizer(tokenizer, path)
    return 2 if bos_token_id is None else bos_token_id, 3 if eos_token_id is None else eos_token_id


def write_hf(
    cfg: ModelConfig,
    plan: list[tuple[str, tuple[int, ...], torch.dtype]],
    tensors: Iterable[tuple[str, torch.Tensor]],
    path: str | Path,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 5 * 2**30,
    bos_token_id: int = 2,
    eos_token_id: int = 3,
) -> Path:
    """An HF directory from (our name, tensor) pairs arriving in `plan` order, written one tensor at a time: the
    shards are planned from the sizes, so peak host memory is one tensor, not the model (31 GB for 15B in bf16)."""
    from nemotron4.interop.stream_write import SafetensorsWriter, nbytes

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plan = [(hf_name(n), s, dtype or d) for n, s, d in plan]
    shards: list[list] = [[]]
    size = total = 0
    for entry in plan:
        n = nbytes(entry[1], entry[2])
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += n
        total += n
    for stale in [*path.glob("model*.safetensors"), path / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)
    stream = iter(tensors)
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        writer = SafetensorsWriter(path / fname, shard, {"format": "pt"})
        for _, (name, t) in zip(shard, stream, strict=False):
            writer.write(hf_name(name), t.to(dtype) if dtype is not None else t)
        writer.close()
        weight_map.update({n: fname for n, _, _ in shard})
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    hf_cfg = config_to_hf(cfg, plan[-1][2], bos_token_id, eos_token_id)
    (path / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    gen = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return path
