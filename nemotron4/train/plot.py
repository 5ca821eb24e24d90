"""Loss, LR and batch size against tokens, with phase switches (solid) and batch-ramp steps (dotted) marked."""

from __future__ import annotations

import math
from pathlib import Path

from nemotron4.errors import UserError
from nemotron4.train.metrics import read_metrics

__all__ = ["plot_run"]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw <run_dir>/metrics.jsonl to a PNG (default <run_dir>/metrics.png); returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UserError("nemotron4 plot needs matplotlib: pip install 'nemotron4[plot]'") from e
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").exists():
        raise UserError(f"no metrics.jsonl in {run_dir}")
    records = read_metrics(run_dir)
    if not records:
        raise UserError(f"{run_dir}/metrics.jsonl has no records yet")
    tokens = [r["tokens"] for r in records]
    fig, (ax_loss, ax_lr, ax_bs) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax_loss.plot(tokens, [r["loss"] if math.isfinite(r["loss"]) else float("nan") for r in records],
                 lw=1, label="train")
    for cat in sorted({c for r in records for c in r.get("val_loss", {})}):
        pts = [(r["tokens"], r["val_loss"][cat]) for r in records if cat in r.get("val_loss", {})]
        ax_loss.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1, label=f"held-out {cat}")
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(tokens, [r["lr"] for r in records], lw=1)
    ax_lr.set_ylabel("learning rate")
    starts = [0] + tokens[:-1]  # a step's batch size applies from the tokens consumed before it
    ax_bs.step(starts, [r["batch_size"] for r in records], where="post", lw=1)
    ax_bs.set_ylabel("global batch (sequences)")
    ax_bs.set_xlabel("tokens")
    for prev, cur in zip(records, records[1:], strict=False):
        start = prev["tokens"]  # where `cur` began
        if cur["phase"] != prev["phase"]:
            for ax in (ax_loss, ax_lr, ax_bs):
                ax.axvline(start, color="k", lw=1)
            ax_loss.annotate(cur["phase"], (start, 1), xycoords=("data", "axes fraction"), fontsize=8, va="top")
        elif cur["batch_size"] != prev["batch_size"]:
            for ax in (ax_loss, ax_lr, ax_bs):
                ax.axvline(start, color="grey", ls=":", lw=1)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "metrics.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
