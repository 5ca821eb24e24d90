"""metrics.jsonl (one JSON object per optimizer step), a tqdm bar, and optional TensorBoard.

A record: step, phase, loss, lr, batch_size, tokens (consumed after the step), tokens_per_s, tflops, mfu,
grad_norm, memory_gib, skipped; plus val_loss {category: loss} on steps that ran the held-out evaluation.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from nemotron4.errors import UserError
from nemotron4.train.config import MetricsSection

__all__ = ["MetricsLogger", "NullMetrics", "peak_memory_gib", "read_metrics"]


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


class MetricsLogger:
    """Appends step records; on resume, first drops records past the checkpoint's step (they will be redone)."""

    def __init__(
        self, run_dir: Path, cfg: MetricsSection, total_tokens: int, tokens: int, resume_step: int | None
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.file = self.path.open("a")
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
        self.file.write(json.dumps(record, allow_nan=True) + "\n")
        self.file.flush()
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
