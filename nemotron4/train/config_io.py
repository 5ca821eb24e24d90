"""Load a JobConfig from TOML plus `--section.key value` overrides, type-check it once, and write it back.

    job = load_job("configs/tiny.toml", ["--optim.eps", "1e-8", "--phases.1.lr=1e-4"])
    save_job(job, run_dir / "config.toml")   # resolved: what the run actually used

Errors name the offending key as an override would spell it (`phases.1.blend.sources.0.weight`) and, for
unknown keys, the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nemotron4.config import ModelConfig
from nemotron4.errors import ConfigError
from nemotron4.schedules import BatchRamp
from nemotron4.train.config import JobConfig, ModelSection, PhaseSection, batch_field, tokens_field

__all__ = ["apply_overrides", "dumps_toml", "job_from_dict", "job_to_dict", "load_job", "parse_overrides", "save_job"]

# Fields whose TOML form is looser than their type: token counts ("200B") and batch ramps.
_COERCE: dict[tuple[type, str], Callable[[Any, str], Any]] = {
    (PhaseSection, "tokens"): tokens_field,
    (PhaseSection, "warmup_tokens"): tokens_field,
    (PhaseSection, "batch_size"): batch_field,
}
_MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A TOML file as a dict; ConfigError naming the file when it cannot be read or parsed."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); TOML must "
                          "be UTF-8: re-save it as UTF-8") from None


def load_job(path: str | Path | None, overrides: Sequence[str] = ()) -> JobConfig:
    """Read TOML (or start from defaults when path is None), apply overrides, build and validate (the only
    `JobConfig.validate()` of a run)."""
    raw: dict[str, Any] = read_toml(path) if path is not None else {}
    apply_overrides(raw, parse_overrides(overrides))
    job = job_from_dict(raw)
    job.validate()
    return job


def parse_overrides(args: Sequence[str]) -> list[tuple[str, Any]]:
    """["--optim.lr", "3e-4", "--train.compile=true"] -> [("optim.lr", 3e-4), ("train.compile", True)].

    Values are read as TOML literals when they parse (numbers, booleans, lists, quoted strings), else as strings.
    """
    out: list[tuple[str, Any]] = []
    it = iter(args)
    for arg in it:
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --section.key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            value = next(it, None)
            if value is None:
                raise ConfigError(f"override --{key} needs a value")
        out.append((key, _literal(value)))
    return out


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[tuple[str, Any]]) -> None:
    """Set each dotted key in the raw TOML dict; integer parts index lists (`phases.1.lr`)."""
    for key, value in overrides:
        parts = key.split(".")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override --{key}: {'.'.join(parts[:i])} has {len(node)} entries, no {part!r}")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"override --{key}: {'.'.join(parts[: i + 1])} is a value, not a table")
        if isinstance(node, list):
            raise ConfigError(f"override --{key}: give a list index, e.g. --{key}.0.<field>")
        node[parts[-1]] = value


def job_from_dict(raw: dict[str, Any]) -> JobConfig:
    """Build the nested dataclasses, checking every key and type."""
    return _build(JobConfig, raw, "")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {_show(data)}")
    data = dict(data)
    if cls is ModelSection:  # flat [model] table: unknown keys are ModelConfig overrides
        data = _split_model_overrides(data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(_join(where, k) for k in unknown)}; "
            f"valid keys{' in ' + where if where else ''}: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = _join(where, name)
        coerce = _COERCE.get((cls, name))
        kwargs[name] = coerce(value, key) if coerce else _coerce(hints[name], value, key)
    return cls(**kwargs)


def _split_model_overrides(data: dict[str, Any], where: str) -> dict[str, Any]:
    own = {f.name for f in dataclasses.fields(ModelSection)} - {"overrides"}
    overrides = dict(data.pop("overrides", {}))
    for key in [k for k in data if k not in own]:
        overrides[key] = data.pop(key)
    for key, value in overrides.items():
        if key not in _MODEL_FIELDS:
            raise ConfigError(
                f"unknown key {_join(where, key)}; valid keys in {where}: {', '.join(sorted(own))} or a "
                f"ModelConfig field ({', '.join(_MODEL_FIELDS)})"
            )
        overrides[key] = _coerce(_MODEL_FIELDS[key].type, value, _join(where, key))
    data["overrides"] = overrides
    return data


def _coerce(tp: Any, value: Any, where: str) -> Any:
    if isinstance(tp, str):  # ModelConfig annotations are strings (from __future__ import annotations)
        tp = {"int": int, "float": float, "str": str, "bool": bool}[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        return [_coerce(args[0], v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_show(value)}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected {tp.__name__}, got {_show(value)}")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def job_to_dict(job: JobConfig) -> dict[str, Any]:
    """Plain dict with model overrides flattened into [model], unset (None) fields dropped (TOML has no null) and
    typed values in their TOML form (a `BatchRamp` as its string)."""
    d = _plain(dataclasses.asdict(job))
    d["model"].update(d["model"].pop("overrides"))
    return d


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, BatchRamp):
        return str(obj)
    return obj


def save_job(job: JobConfig, path: str | Path) -> None:
    """Write the resolved config; `load_job(path)` gives back an equal JobConfig."""
    header = "# Resolved by nemotron4 train: the exact configuration of this run.\n"
    from nemotron4.fsio import atomic_write_text

    atomic_write_text(path, header + dumps_toml(job_to_dict(job)))  # a kill never leaves a torn config.toml


def dumps_toml(table: dict[str, Any]) -> str:
    """A minimal TOML writer for what configs hold: scalars, lists of scalars, tables, arrays of tables."""
    lines: list[str] = []
    _write_table(table, "", lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _write_table(table: dict[str, Any], prefix: str, lines: list[str]) -> None:
    for k, v in table.items():
        if not isinstance(v, dict) and not _is_table_array(v):
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, dict):
            lines += ["", f"[{name}]"]
            _write_table(v, name, lines)
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{name}]]"]
                _write_table(item, name, lines)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else "nan" if math.isnan(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
