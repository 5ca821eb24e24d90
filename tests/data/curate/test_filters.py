"""Each heuristic filter on hand-written documents: one it must keep, one it must remove; and through curate, the
per-source documents / bytes each filter removed."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import kept, run_curate, write_corpus

from nemotron4.data.curate.config import CurateConfig, NearConfig
from nemotron4.data.curate.filters import FILTERS, active_filters, first_failure
from nemotron4.errors import ConfigError

PROSE = ("The committee met on Tuesday to review the budget and the plans that the staff prepared with care. "
         "Members of the public asked questions about the new library, and the chair said that the work would "
         "begin in spring with the support of the council. The report will be published next month, together "
         "with the minutes of the meeting and a summary of the comments received from residents of the town.")
LINES = "\n".join(PROSE.split(". "))

CASES = {  # filter -> (a document it keeps, a document it removes)
    "word_count": (PROSE, "The cat sat on the mat with the hat."),
    "mean_word_length": (PROSE, " ".join(["a of to be it"] * 20) + " the and with that have"),
    "symbol_ratio": (PROSE, PROSE + " " + "#tag " * 40),
    "bullet_lines": ("\n".join(f"- {s}" for s in PROSE.split(". ")[:3]) + "\n" + LINES,
                     "\n".join(f"• {s}" for s in PROSE.split(". "))),
    "ellipsis_lines": (LINES + "\nand then...", "\n".join(s + "..." for s in PROSE.split(". "))),
    "alpha_words": (PROSE + " 1 2 3 4 5", PROSE + " " + " ".join(str(i) for i in range(60))),
    "repeated_lines": (LINES, LINES + ("\n" + PROSE.split(". ")[0]) * 6),
    "stop_words": (PROSE, " ".join(w for w in PROSE.split()
                                   if w.lower() not in FILTERS["stop_words"].defaults["words"])),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_filter_keeps_and_removes(name: str) -> None:
    keep, remove = CASES[name]
    only = {other: {"enabled": other == name} for other in FILTERS}
    filters = active_filters(only, "english", "en")
    assert [f.name for f in filters] == [name]
    assert first_failure(keep, filters) is None, f"{name} removed a document it should keep"
    assert first_failure(remove, filters) == name, f"{name} kept a document it should remove"
    assert first_failure(keep, active_filters({}, "english", "en")) is None  # the kept text passes every rule


def test_every_filter_has_a_case() -> None:
    assert set(CASES) == set(FILTERS)


def test_scope_and_settings() -> None:
    assert active_filters({}, "code", "") == []  # prose rules never touch code by default
    assert "stop_words" not in [f.name for f in active_filters({}, "multilingual", "de")]
    assert "stop_words" in [f.name for f in active_filters({}, "english", "en")]
    short = "The cat sat on the mat with the hat and the dog."
    assert first_failure(short, active_filters({"word_count": {"min_words": 5}}, "english", "en")) is None
    with pytest.raises(ConfigError, match="unknown filter"):
        CurateConfig(filters={"no_such_rule": {}})
    with pytest.raises(ConfigError, match="min_wrds"):
        CurateConfig(filters={"word_count": {"min_wrds": 3}})


def test_report_counts_docs_and_bytes_per_filter_and_source(tmp_path: Path) -> None:
    docs = {"a": [PROSE, CASES["word_count"][1], CASES["symbol_ratio"][1]],
            "b": [CASES["repeated_lines"][1], PROSE + " Yes."]}
    manifest = write_corpus(tmp_path / "in", docs)
    report = run_curate(manifest, tmp_path / "out", CurateConfig(near=NearConfig(enabled=False), exact=False))
    by = {s.name: s for s in report.sources}
    size = lambda t: len(t.encode())  # noqa: E731
    assert by["a"].removed == {"word_count": {"docs": 1, "bytes": size(docs["a"][1])},
                               "symbol_ratio": {"docs": 1, "bytes": size(docs["a"][2])}}
    assert by["b"].removed == {"repeated_lines": {"docs": 1, "bytes": size(docs["b"][0])}}
    assert (by["a"].docs_in, by["a"].docs_out, by["b"].docs_out) == (3, 1, 1)
    assert by["a"].bytes_out == size(PROSE)
    assert kept(tmp_path / "out", "a") == [PROSE] and kept(tmp_path / "out", "b") == [PROSE + " Yes."]
    text = report.format()
    assert "- word_count" in text and "- repeated_lines" in text
