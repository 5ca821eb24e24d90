"""Where the weights, config and tokenizer are in NeMo checkpoints.

- NeMo 1 (`.nemo`): a tar holding `model_config.yaml`, `model_weights/` (a Megatron-Core distributed checkpoint whose
  keys start with `model.`) and the tokenizer file that `model_config.yaml`'s `tokenizer.model: nemo:NAME` names. The
  archive is read in place (never extracted); its extracted directory has the same layout.
- NeMo 2: a directory with `weights/` (the distributed checkpoint, keys starting with `module.`) and `context/`
  (`model.yaml`, whose `config:` holds Megatron-Core TransformerConfig keys, and the tokenizer files).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemotron4.errors import UserError
from nemotron4.interop import mcore_format as fmt

NEMO1_CONFIG = "model_config.yaml"
NEMO1_WEIGHTS = "model_weights"
NEMO2_WEIGHTS = "weights"
NEMO2_CONTEXT = "context"


def detect(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".nemo" or (path.suffix in (".tar", ".gz") and tarfile.is_tarfile(path))
    return path.is_dir() and (
        ((path / NEMO1_CONFIG).is_file() and (path / NEMO1_WEIGHTS).is_dir())
        or ((path / NEMO2_WEIGHTS).is_dir() and (path / NEMO2_CONTEXT).is_dir())
    )


def _nemo1_tokenizer(root: fmt.Storage, config: dict[str, Any]) -> tuple[fmt.Storage, str] | None:
    tok = config.get("tokenizer") or {}
    name = str(tok.get("model") or "") if isinstance(tok, dict) else ""
    if name.startswith("nemo:"):
        name = name.removeprefix("nemo:")
        if not root.exists(name):
            raise UserError(f"{root.where(name)}: the tokenizer named by {NEMO1_CONFIG} (tokenizer.model) is missing")
        return root, name
    found = [n for n in root.children() if n.endswith(".model")]
    return (root, found[0]) if found else None


def _nemo2_tokenizer(context: fmt.DirStorage) -> tuple[fmt.Storage, str] | None:
    found = sorted(context.root.rglob("*.model"))
    if not found:
        return None
    best = next((p for p in found if p.name == "tokenizer.model"), found[0])
    return context, str(best.relative_to(context.root))


@dataclass
class NemoParts:
    """What a NeMo checkpoint holds, found: the distributed checkpoint, the model config, and (found on demand, after
    the config is checked) the tokenizer."""

    weights: fmt.Storage
    config: dict[str, Any]
    config_label: str
    tokenizer: Callable[[], tuple[fmt.Storage, str] | None]


def yaml_load(storage: fmt.Storage, rel: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(storage.read(rel))
    except yaml.YAMLError as e:
        raise UserError(f"{storage.where(rel)}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{storage.where(rel)}: expected a mapping of config keys")
    return data


def open_nemo(path: Path) -> NemoParts:
    if path.is_file():
        root: fmt.Storage = fmt.TarStorage(fmt.open_tar(path), str(path))
        if not root.exists(NEMO1_CONFIG):
            raise UserError(f"{path}: no {NEMO1_CONFIG} in the archive; not a NeMo 1 checkpoint")
        weights = root.sub(NEMO1_WEIGHTS)
    elif (path / NEMO1_CONFIG).is_file():
        root, weights = fmt.DirStorage(path), fmt.DirStorage(path / NEMO1_WEIGHTS)
    else:
        context = fmt.DirStorage(path / NEMO2_CONTEXT)
        if not context.exists("model.yaml"):
            raise UserError(f"{path / NEMO2_CONTEXT}: no model.yaml; not a NeMo 2 checkpoint context")
        config = yaml_load(context, "model.yaml").get("config")
        if not isinstance(config, dict):
            raise UserError(f"{context.where('model.yaml')}: no `config:` mapping (the model's TransformerConfig)")
        return NemoParts(fmt.DirStorage(path / NEMO2_WEIGHTS), config, context.where("model.yaml") + " config",
                         lambda: _nemo2_tokenizer(context))
    config = yaml_load(root, NEMO1_CONFIG)
    return NemoParts(weights, config, root.where(NEMO1_CONFIG), lambda: _nemo1_tokenizer(root, config))
