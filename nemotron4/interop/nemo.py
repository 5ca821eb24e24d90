"""Where the weights, config and tokenizer are in NeMo checkpoints.

- NeMo 1 (`.nemo`): a tar holding `model_config.yaml`, `model_weights/` (a Megatron-Core distributed checkpoint whose
  keys start with `model.`) and the tokenizer file that `model_config.yaml`'s `tokenizer.model: nemo:NAME` names. The
  archive is read in place (never extracted); its extracted directory has the same layout.
- NeMo 2: a directory with `weights/` (the distributed checkpoint, keys starting with `module.`) and `context/`
  (`model.yaml`, whose `config:` holds Megatron-Core TransformerConfig keys, and the tokenizer files).
"""

from __future__ import annotations

import tarfile
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


def open_nemo(path: Path):
    from nemotron4.interop.megatron import from_parts, yaml_load

    if path.is_file():
        tar = fmt.open_tar(path)
        root = fmt.TarStorage(tar, str(path))
        if not root.exists(NEMO1_CONFIG):
            raise UserError(f"{path}: no {NEMO1_CONFIG} in the archive; not a NeMo 1 checkpoint")
        config = yaml_load(root, NEMO1_CONFIG)
        ckpt = from_parts(str(path), root.sub(NEMO1_WEIGHTS), config, root.where(NEMO1_CONFIG))
        ckpt.tokenizer = _nemo1_tokenizer(root, config)
        return ckpt
    if (path / NEMO1_CONFIG).is_file():
        root = fmt.DirStorage(path)
        config = yaml_load(root, NEMO1_CONFIG)
        ckpt = from_parts(str(path), fmt.DirStorage(path / NEMO1_WEIGHTS), config, str(path / NEMO1_CONFIG))
        ckpt.tokenizer = _nemo1_tokenizer(root, config)
        return ckpt
    context = fmt.DirStorage(path / NEMO2_CONTEXT)
    if not context.exists("model.yaml"):
        raise UserError(f"{path / NEMO2_CONTEXT}: no model.yaml; not a NeMo 2 checkpoint context")
    config = yaml_load(context, "model.yaml").get("config")
    if not isinstance(config, dict):
        raise UserError(f"{path / NEMO2_CONTEXT / 'model.yaml'}: no `config:` mapping (the model's TransformerConfig)")
    return from_parts(str(path), fmt.DirStorage(path / NEMO2_WEIGHTS), config,
                      str(path / NEMO2_CONTEXT / "model.yaml") + " config", _nemo2_tokenizer(context))
