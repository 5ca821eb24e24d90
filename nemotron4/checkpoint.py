"""Checkpoints with torch.distributed.checkpoint (DCP), safe to resume from and safe to load.

Layout of a run directory:

    checkpoints/step_00001000/   DCP shards + .metadata (tensors: model, optimizer, RNG states)
                 step_00001000/state.json   everything else: step, tokens, phase, loader state, RNG scalars,
                                            model config, run config
    checkpoints/latest           name of the newest complete checkpoint

A checkpoint is written to `.tmp-step_...` and renamed when complete; `latest` is replaced atomically (temp file +
os.replace), so a crash at any moment leaves the previous checkpoint usable, and the debris of a save that died is
removed when the run restarts. If `latest` is missing, unreadable or names an incomplete checkpoint, the newest
complete `step_N` is used instead, with a warning saying so. state.json records the size and blake2b digest of
every other file of the checkpoint, and they are verified before its tensors are loaded (a changed, truncated,
replaced or deleted shard is refused, naming the file). A save that fails (e.g. a full disk) removes its temp
directory and raises `CheckpointWriteError`, leaving `latest` on the previous checkpoint. Only tensors go through
DCP, and its .metadata pickle is vetted with an allow-list unpickler first, so loading never runs arbitrary pickled
code.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from nemotron4.config import ModelConfig
from nemotron4.errors import UserError
from nemotron4.fsio import atomic_write_text, os_error

__all__ = [
    "CheckpointManager", "CheckpointWriteError", "find_checkpoint", "get_rng_state", "load_model_from_checkpoint",
    "set_rng_state",
]

FORMAT = "nemotron4-checkpoint/1"
_NAME_RE = re.compile(r"^step_(\d{8,})$")


class CheckpointWriteError(UserError):
    """A checkpoint could not be written; the previous one is intact and `latest` still names it."""


class CheckpointManager:
    """Saves, finds and prunes the checkpoints of one run directory.

    In a multi-process run every rank calls `save` and `load_tensors` (DCP writes / reads each rank's shards of the
    DTensors; a checkpoint holds global shapes, so it loads at any (tp, dp) layout, or in one process); `primary`
    (rank 0) alone writes state.json, renames and moves `latest`, and `barrier` keeps the ranks in step around that.
    """

    def __init__(
        self, run_dir: str | Path, keep_last: int = 3, primary: bool = True, barrier: Callable[[], None] | None = None,
        on_write: Callable[[int, Path], None] | None = None,
    ) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self.primary = primary
        self.barrier = barrier or (lambda: None)
        self.on_write = on_write or (lambda step, partial: None)  # a hook between the tensors and state.json

    def remove_partial(self) -> list[str]:
        """Delete what saves that died left behind (`.tmp-step_*` directories, a `.latest.tmp`); never loaded, but
        they hold disk space. Primary rank only; returns the names removed."""
        if not self.primary or not self.dir.is_dir():
            return []
        debris = [*self.dir.glob(".tmp-step_*"), *self.dir.glob(".latest.tmp")]
        for path in debris:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return sorted(p.name for p in debris)

    def complete(self) -> list[Path]:
        """The complete checkpoints (state.json readable, .metadata present), oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if _NAME_RE.match(p.name) and _is_complete(p))

    def latest(self) -> Path | None:
        """The checkpoint to resume: the one `latest` names, or, when `latest` is missing, unreadable or names an
        incomplete checkpoint, the newest complete one (with a warning); None for a fresh run."""
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"{self.dir} is a file, not the run's checkpoints directory; move it away or use "
                            "another --run-dir")
        pointer, problem = self.dir / "latest", None
        try:
            name = pointer.read_text().strip() if pointer.exists() else None
        except (OSError, UnicodeDecodeError) as e:
            name, problem = None, f"cannot be read ({e})"
        if name is not None:
            if _NAME_RE.match(name) and _is_complete(self.dir / name):
                return self.dir / name
            problem = f"names {name[:40]!r}, which is missing or incomplete"
        done = self.complete()
        if not done:
            if problem is None:
                return None
            raise UserError(f"{pointer} {problem} and {self.dir} holds no complete checkpoint; remove {pointer} to "
                            "start the run afresh")
        warnings.warn(f"{pointer} {problem or 'is missing'}: resuming from the newest complete checkpoint, "
                      f"{done[-1].name}", stacklevel=2)
        return done[-1]

    def save(self, step: int, tensors: dict[str, Any], state: dict[str, Any]) -> Path:
        """Write `tensors` (nested dicts of tensors) with DCP and `state` (JSON-able) as state.json."""
        name = f"step_{step:08d}"
        final, tmp = self.dir / name, self.dir / f".tmp-{name}"
        if self.primary:
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        self.barrier()
        try:
            self._write(step, tmp, tensors, state)
        except (OSError, dcp.CheckpointException) as e:
            if self.primary:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointWriteError(self._write_error(name, e)) from e
        if self.primary:
            if final.exists():  # re-saving the same step after a resume
                shutil.rmtree(final)
            os.rename(tmp, final)
            atomic_write_text(self.dir / "latest", name + "\n")
            self._prune(keep=final)
        self.barrier()  # no rank moves on (e.g. to the next save) before the checkpoint is complete
        return final

    def _write(self, step: int, tmp: Path, tensors: dict[str, Any], state: dict[str, Any]) -> None:
        """DCP shards + .metadata, then (primary) state.json, all into the temp directory."""
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.save(tensors, checkpoint_id=tmp)
        self.on_write(step, tmp)
        if self.primary:  # dcp.save has returned on every rank: all shards are written
            files = {p.name: _digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            atomic_write_text(tmp / "state.json", json.dumps({"format": FORMAT, **state, "files": files}, indent=1,
                                                             default=_json_default))

    def _write_error(self, name: str, error: BaseException) -> str:
        """What failed, where, and what to do; DCP wraps each rank's exception in a CheckpointException."""
        causes = [error]
        if isinstance(error, dcp.CheckpointException):
            causes = [e[0] if isinstance(e, tuple) else e for e in error.failures.values()] or causes
        reason = "; ".join(dict.fromkeys(str(c) for c in causes))
        full = any(isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT) for c in causes)
        latest = self.dir / "latest"
        previous = latest.read_text().strip() if latest.exists() else "(none yet)"
        hint = "free disk space (or lower checkpoint.keep_last)" if full else "fix the cause"
        return (f"cannot write checkpoint {name} in {self.dir}: {reason}. The partial checkpoint was removed; the "
                f"previous one, {previous}, is intact and `latest` still points to it. {hint.capitalize()}, then "
                "re-run the same command to resume from it.")

    def _prune(self, keep: Path) -> None:
        for stale in self.dir.glob(".tmp-step_*"):
            shutil.rmtree(stale, ignore_errors=True)
        if self.keep_last <= 0:
            return
        done = sorted(p for p in self.dir.iterdir() if _NAME_RE.match(p.name) and p != keep)
        for old in done[: max(0, len(done) + 1 - self.keep_last)]:
            shutil.rmtree(old)

    @staticmethod
    def read_state(path: Path) -> dict[str, Any]:
        try:
            state = json.loads((path / "state.json").read_text())
        except FileNotFoundError:
            raise UserError(f"{path} is not a nemotron4 checkpoint (no state.json)") from None
        except OSError as e:
            raise os_error(e, f"cannot read {path / 'state.json'}") from None
        except ValueError as e:  # torn or edited: JSONDecodeError, UnicodeDecodeError
            raise UserError(f"{path / 'state.json'} is not valid JSON ({e}); the checkpoint is damaged: remove "
                            f"{path} to resume from an earlier one") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise UserError(f"{path} is not a {FORMAT} checkpoint (format {got!r})")
        return state

    @staticmethod
    def verify(path: Path) -> None:
        """Check every file state.json lists against its recorded size and digest (checkpoints written before
        digests were recorded are not checked)."""
        files = CheckpointManager.read_state(path).get("files")
        for name, want in (files or {}).items():
            f = path / name
            try:
                got = _digest(f)
            except FileNotFoundError:
                got = None
            except OSError as e:
                raise os_error(e, f"cannot read checkpoint file {f}") from None
            if got != want:
                what = "is missing" if got is None else (
                    f"has {got['size']} bytes, not the {want['size']} written" if got["size"] != want["size"]
                    else "has changed since it was written (blake2b digest differs)")
                raise UserError(f"checkpoint {path} is damaged: {name} {what}; restore it, or remove {path} to resume "
                                "from the previous complete checkpoint")

    @staticmethod
    def load_tensors(path: Path, tensors: dict[str, Any]) -> None:
        """Load in place into `tensors`; entries absent from the checkpoint (e.g. optimizer state of a
        never-stepped parameter) keep their values. Model entries must all be present."""
        CheckpointManager.verify(path)
        meta = _safe_metadata(path)
        pickled = sorted(k for k, v in meta.state_dict_metadata.items() if not isinstance(v, TensorStorageMetadata))
        if pickled:  # DCP would torch.load(weights_only=False) such entries: arbitrary code
            raise UserError(f"refusing to load checkpoint {path}: its .metadata declares non-tensor entries "
                            f"{pickled[:5]}, which would be unpickled; nemotron4 checkpoints hold only tensors")
        model_keys = {k for k in meta.state_dict_metadata if k.startswith("model.")}
        missing = sorted(f"model.{k}" for k in tensors.get("model", {}) if f"model.{k}" not in model_keys)
        if missing:
            raise UserError(f"checkpoint {path} lacks model weights {missing[:5]}{'...' if len(missing) > 5 else ''}")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.load(tensors, checkpoint_id=path, planner=dcp.DefaultLoadPlanner(allow_partial_load=True))


def _digest(path: Path) -> dict[str, Any]:
    """Size and blake2b of a file (about 1 GB/s a core)."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return {"size": path.stat().st_size, "blake2b": h.hexdigest()}


def _is_complete(path: Path) -> bool:
    """Written to the end by `save`: state.json (written last) readable and .metadata present. Whether its files
    are intact is `verify`'s question: a damaged checkpoint is refused, not silently skipped."""
    try:
        CheckpointManager.read_state(path)
        return (path / ".metadata").is_file()
    except (UserError, OSError):
        return False


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.floating | np.bool_):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in state.json")


class _MetadataUnpickler(pickle.Unpickler):
    """Allows only the classes DCP's .metadata holds (checked on torch 2.11-2.13)."""

    def find_class(self, module: str, name: str) -> Any:
        ok = (
            module.startswith("torch.distributed.checkpoint.")
            or (module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)))
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "pathlib" and name in ("Path", "PosixPath", "WindowsPath", "PurePosixPath"))
            or (module == "collections" and name == "OrderedDict")
        )
        if not ok:
            raise UserError(f"refusing to load checkpoint metadata: it references {module}.{name}")
        return super().find_class(module, name)


def _safe_metadata(path: Path) -> Any:
    try:
        return _MetadataUnpickler(io.BytesIO((path / ".metadata").read_bytes())).load()
    except FileNotFoundError:
        raise UserError(f"{path} is not a DCP checkpoint (no .metadata)") from None


def get_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """RNG states split into tensors (for DCP) and JSON-able scalars."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors = {"torch_cpu": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()  # current device
    scalars = {"python": random.getstate(), "numpy": [kind, int(pos), int(has_gauss), float(gauss)]}
    return tensors, scalars


def set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    kind, pos, has_gauss, gauss = scalars["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = scalars["python"]
    random.setstate((version, tuple(internal), gauss_next))


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run directory (its latest), a checkpoints/ directory, or a checkpoint."""
    path = Path(path)
    if (path / "state.json").is_file() and (path / ".metadata").is_file():
        return path
    run_dir = path if (path / "checkpoints").is_dir() else path.parent if path.name == "checkpoints" else None
    latest = CheckpointManager(run_dir).latest() if run_dir is not None else None
    if latest is not None:
        return latest
    raise UserError(f"no nemotron4 checkpoint at {path} (expected a run directory with checkpoints/latest)")


def load_model_from_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """The model of a run directory's latest checkpoint (or of a given checkpoint directory), for generate, eval
    and convert. Built on `meta`, materialised on `device`, weights loaded through DCP; fp32 unless `dtype`."""
    from nemotron4.model import Nemotron4

    ckpt = find_checkpoint(path)
    cfg = ModelConfig.from_dict(CheckpointManager.read_state(ckpt)["model_config"])
    with torch.device("meta"):
        model = Nemotron4(cfg)
    model.to_empty(device=device)
    model.init_buffers()
    CheckpointManager.load_tensors(ckpt, {"model": model.state_dict()})
    if dtype is not None and dtype != torch.float32:
        model.to(dtype)
        model.init_buffers()
    return model


def is_our_checkpoint(path: str | Path) -> bool:
    try:
        find_checkpoint(path)
        return True
    except UserError:
        return False

