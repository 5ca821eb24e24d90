"""What the demo prints and leaves behind: the pretrained-vs-continued table, summary.json and summary.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nemotron4.eval.prompts import language_name

__all__ = ["comparison_rows", "format_table", "write_summary"]


def comparison_rows(evals: dict[str, dict[str, Any]], lang: str) -> list[tuple[str, list[float], str]]:
    """(label, value per checkpoint, better) rows: held-out perplexity per category, of the target language's own
    source, and translation chrF. `better` is "lower" or "higher"."""
    names = list(evals)
    first = evals[names[0]]
    rows: list[tuple[str, list[float], str]] = []
    for cat in first["perplexity"]["by_category"]:
        rows.append((f"perplexity, held-out {cat}",
                     [evals[n]["perplexity"]["by_category"][cat]["perplexity"] for n in names], "lower"))
    source = f"ml-{lang}"
    if source in first["perplexity"].get("by_source", {}):
        rows.append((f"perplexity, held-out {source} ({language_name(lang)})",
                     [evals[n]["perplexity"]["by_source"][source]["perplexity"] for n in names], "lower"))
    t = first["translation"]
    rows.append((f"chrF, en->{lang} ({t['n']} held-out pairs)", [evals[n]["translation"]["chrf"] for n in names],
                 "higher"))
    return rows


def format_table(evals: dict[str, dict[str, Any]], lang: str, markdown: bool = False) -> str:
    """The comparison as aligned text (or a Markdown table), one column per checkpoint plus the change."""
    names = list(evals)
    rows = comparison_rows(evals, lang)
    head = ["", *names, "change"]
    body = [[label, *(f"{v:.2f}" for v in values), _change(values, better)] for label, values, better in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [head, *body])


def _change(values: list[float], better: str) -> str:
    delta = values[-1] - values[0]
    good = delta < 0 if better == "lower" else delta > 0
    return f"{delta:+.2f} {'better' if good else 'worse' if delta else ''}".rstrip()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """summary.json (everything) and summary.md (the table, the phases, examples and samples, the plot)."""
    json_path, md_path = run_dir / "summary.json", run_dir / "summary.md"
    json_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    lang = summary["language"]
    lines = [
        "# nemotron4 demo", "",
        f"Budget `{summary['budget']}`, model {summary['model']['params']:,} parameters "
        f"(dim {summary['model']['dim']}, {summary['model']['n_layers']} layers), vocabulary "
        f"{summary['model']['vocab_size']}, translation target {language_name(lang)} (`{lang}`).", "",
        "## Pretrained vs continued", "", format_table(summary["eval"], lang, markdown=True), "",
        "## Phases", "", "| phase | steps | tokens | batch sizes | first loss | last loss | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in summary["phases"]:
        lines.append(f"| {p['name']} | {p['steps']} | {p['tokens']:,} | {p['batch_sizes']} | {p['first_loss']:.3f} "
                     f"| {p['last_loss']:.3f} | {p['seconds']:.0f} |")
    lines += ["", f"![loss, LR and batch size]({Path(summary['plot']).name})", "",
              "## Translations (held-out)", "", "| source | reference | " + " | ".join(summary["eval"]) + " |",
              "|---|---|" + "---|" * len(summary["eval"])]
    for ex in summary["translation_examples"]:
        cells = [ex["source"], ex["reference"], *(ex[n] for n in summary["eval"])]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "## Samples (final model)", ""]
    for s in summary["samples"]:
        lines += ["```", s["prompt"] + s["completion"], "```", ""]
    lines += ["## Time", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in summary["seconds"].items()]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
