"""`nemotron4 plot` draws a run's metrics to a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemotron4.cli import main

pytest.importorskip("matplotlib")


def test_plot_writes_png(tmp_path: Path, capsys) -> None:
    records = []
    tokens = 0
    for step in range(1, 31):
        phase = "pretrain" if step <= 20 else "continued"
        batch = 8 if step <= 10 else 16
        tokens += batch * 64
        record = {"step": step, "phase": phase, "loss": 5.0 / step, "lr": 1e-3 / step, "batch_size": batch,
                  "tokens": tokens}
        if step % 10 == 0:
            record["val_loss"] = {"english": 4.0 / step}
        records.append(record)
    records[4]["loss"] = float("nan")  # a skipped step
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 31, "ph')
    assert main(["plot", str(tmp_path)]) == 0
    png = tmp_path / "metrics.png"
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "missing")]) == 2
