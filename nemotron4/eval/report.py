"""Plain-text tables of evaluation results, for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nemotron4.eval.suites import COMMONSENSE_PAPER_AVERAGE, commonsense_average

__all__ = ["paper_table", "perplexity_table", "table"]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(headers))]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric, strict=True)
                         ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]).rstrip()


def paper_table(rows: Sequence[dict[str, Any]]) -> str:
    """The paper suite beside Nemotron-4 15B's published numbers (docs/paper.md section 6)."""
    body = [[r["benchmark"], r["ours"], r["paper"], r["status"]] for r in rows]
    avg = commonsense_average({r["benchmark"]: r["ours"] for r in rows})
    body.append(["commonsense avg (0)", avg, COMMONSENSE_PAPER_AVERAGE, "ok" if avg is not None else "-"])
    return table(["benchmark (shots)", "ours", "Nemotron-4 15B", "status"], body)


def perplexity_table(result: dict[str, Any]) -> str:
    rows = []
    for kind in ("by_category", "by_source"):
        for name, s in result[kind].items():
            rows.append([kind.removeprefix("by_"), name, s["tokens"], s["nll"], s["perplexity"], s["bits_per_byte"]])
    if result.get("overall"):
        s = result["overall"]
        rows.append(["all", "-", s["tokens"], s["nll"], s["perplexity"], s["bits_per_byte"]])
    return table(["level", "name", "tokens", "nll", "perplexity", "bits/byte"], rows)
