"""Which configuration changes a resumed run tolerates.

Everything that shapes the trajectory so far (model, optimizer, shapes, seed, the phases already started) must
match the checkpoint; logging, checkpointing, the (tp, dp) layout (checkpoints reshard), and phases not yet started
may change (e.g. append a continued-training phase after pretraining finished).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["resume_conflicts"]

_FREE = ("checkpoint.", "metrics.", "parallel.", "train.compile", "train.max_nonfinite_in_row",
         "train.attention_backend", "train.activation_checkpointing", "train.fused_loss", "train.cast_weights_once",
         "train.fp8")


_MOVABLE = re.compile(r"\.blend\.sources\.\d+\.(path|valid_path)$")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        items = ((str(i), x) for i, x in enumerate(obj))
    else:
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def resume_conflicts(
    saved: dict[str, Any], new: dict[str, Any], phase: int, defaults: dict[str, Any] | None = None
) -> list[str]:
    """Human-readable differences between the saved and the new config that break resuming in `phase`.
    `defaults`: the config of defaults; a key the saved config lacks (a field added by a later version of this
    package) counts as its default, which is what the saved run ran with."""
    flat_defaults = _flatten(defaults) if defaults else {}
    a, b = _flatten(saved), _flatten(new)
    a = {**{k: v for k, v in flat_defaults.items() if k in b and k not in a}, **a}
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") == b.get(key, "<unset>") or key.startswith(_FREE):
            continue
        if _MOVABLE.search(key):  # data moved or restaged: the loader's content fingerprint still guards it
            continue
        m = re.match(r"phases\.(\d+)\.", key)
        if m and int(m.group(1)) > phase:
            continue
        out.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return out
