"""metrics.jsonl (one JSON object per optimizer step), a tqdm bar, and optional TensorBoard.

A record: step, phase, loss, lr, batch_size, tokens (consumed after the step), tokens_per_s, tflops, mfu,
grad_norm, memory_gib, skipped; plus val_loss {category: loss} on steps that ran the held-out evaluation.

The file is append-only while a run trains (one flushed line per step; a kill can at worst tear the last line).
It is never shortened except when a run restarts: records past the checkpoint being resumed (they will be redone),
a torn last line, or, for a run that starts afresh (no checkpoint), every earlier record are moved, not dropped, to
`metrics.jsonl.cut-<UTC time>` beside it; that file is written first, then metrics.jsonl is replaced atomically
(temp + fsync + rename), so a crash at any moment loses no line.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from nemotron4.errors import UserError
from nemotron4.fsio import atomic_write_bytes, os_error
from nemotron4.train.config import MetricsSection

__all__ = ["MetricsLogger", "NullMetrics", "peak_memory_gib", "read_metrics", "trim_history"]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a run directory or the file), skipping a torn last line."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return records


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated accelerator memory, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def trim_history(path: Path, resume_step: int | None) -> Path | None:
    """Make `path` hold only whole records of steps <= `resume_step` (none when None: a fresh start), moving every
    other line to `path`.cut-<UTC time>; returns that file, or None when nothing had to move (the file is then
    left untouched)."""
    if not path.exists():
        return None
    keep, cut = [], []
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            record = None
        whole = isinstance(record, dict) and isinstance(record.get("step"), int)
        (keep if whole and resume_step is not None and record["step"] <= resume_step else cut).append(line)
    if not cut:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.cut-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.cut-{stamp}-{n}")
    atomic_write_bytes(aside, b"".join(cut))  # first the cut lines, safe beside it ...
    atomic_write_bytes(path, b"".join(keep))  # ... then the shortened file replaces the old one at once
    return aside


class MetricsLogger:
    """Appends step records; on a restart, first moves records past the checkpoint's step (they will be redone)
    aside (`trim_history`)."""

    def __init__(
        self, run_dir: Path, cfg: MetricsSection, total_tokens: int, tokens: int, resume_step: int | None
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        try:
            aside = trim_history(self.path, resume_step)
            self.file = self.path.open("a")
        except OSError as e:
            raise os_error(e, f"cannot write {self.path}") from None
        if aside is not None:
            since = f"past step {resume_step} (to be redone)" if resume_step is not None else "of an earlier run"
            warnings.warn(f"{self.path}: moved the records {since} to {aside.name}", stacklevel=2)
        self.bar = None
        if cfg.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_tokens, initial=tokens, unit="tok", unit_scale=True, file=sys.stderr)
        self.tb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise UserError("metrics.tensorboard needs the tensorboard package: pip install tensorboard") from e
            self.tb = SummaryWriter(str(run_dir / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record, allow_nan=True) + "\n")
            self.file.flush()
        except OSError as e:
            raise os_error(e, f"cannot append step {record.get('step')} to {self.path} (the checkpoints are intact; "
                           "re-running resumes from the latest)") from None
        if self.bar is not None:
            self.bar.update(record["tokens"] - self.bar.n)
            self.bar.set_postfix(phase=record["phase"], loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                 bs=record["batch_size"], refresh=False)
        if self.tb is not None:
            for key in ("loss", "lr", "batch_size", "tokens_per_s", "mfu", "grad_norm"):
                value = record[key]
                if isinstance(value, int | float) and math.isfinite(value):
                    self.tb.add_scalar(f"train/{key}", value, record["tokens"])
            for cat, value in record.get("val_loss", {}).items():
                self.tb.add_scalar(f"val/{cat}", value, record["tokens"])

    def write(self, message: str) -> None:
        """A message that does not tear the progress bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # its write error was already raised, by log(), with the path
            self.file.close()
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


class NullMetrics:
    """The logger of ranks other than 0 in a multi-process run: records are written once, by rank 0."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def write(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass
