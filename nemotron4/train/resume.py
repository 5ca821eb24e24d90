"""Which configuration changes a resumed run tolerates.

Everything that shapes the trajectory so far (model, optimizer, shapes, seed, the phases already started) must
match the checkpoint; logging, checkpointing, the (tp, dp) layout (checkpoints reshard), and phases not yet started
may change (e.g. append a continued-training phase after pretraining finished). Which fields are free is marked on
the fields themselves (`metadata=RESUME_FREE` in nemotron4.train.config); a new field is bound unless marked.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from nemotron4.train.config import RESUME_FREE, JobConfig

__all__ = ["free_keys", "resume_conflicts"]


def free_keys(cls: type, prefix: str = "") -> list[str]:
    """Regular expressions of the flattened keys that the fields marked RESUME_FREE cover, in `cls`, its sections
    and its lists of sections (e.g. `checkpoint` and all below it, `phases.N.blend.sources.M.path`)."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        key, tp = prefix + re.escape(f.name), hints[f.name]
        if f.metadata.get("resume") == RESUME_FREE["resume"]:
            out.append(key + r"(\..*)?")
        elif dataclasses.is_dataclass(tp):
            out += free_keys(tp, key + r"\.")
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            out += free_keys(typing.get_args(tp)[0], key + r"\.\d+\.")
    return out


_FREE = re.compile("|".join(free_keys(JobConfig)))


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
        if a.get(key, "<unset>") == b.get(key, "<unset>") or _FREE.fullmatch(key):
            continue
        m = re.match(r"phases\.(\d+)\.", key)
        if m and int(m.group(1)) > phase:
            continue
        out.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return out
