"""Heuristic quality filters: the Gopher rules (Rae et al. 2021, "Scaling Language Models", appendix A) that C4,
RefinedWeb, FineWeb and datatrove's `GopherQualityFilter` / `GopherRepetitionFilter` also use, each on its own
so that each can be switched, tuned and reported.

A filter keeps a document when its rule holds. Words are whitespace-separated tokens, lines the non-blank lines.
Stop words are counted among the normalised words (`text.normalise`: lower case, punctuation dropped). Each
filter applies to the categories in its `categories` setting (and, when set, only to sources whose language
is in `languages`); the prose rules are meaningless for code, so by default code is only deduplicated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import filterfalse
from typing import Any

from nemotron4.data.curate.text import normalise
from nemotron4.errors import ConfigError

__all__ = ["FILTERS", "ActiveFilter", "Doc", "Filter", "active_filters", "first_failure"]

PROSE = ("english", "multilingual")
BULLETS = ("•", "●", "○", "◦", "▪", "‣", "-", "*", "·", "–", "—")
ELLIPSES = ("...", "…")
_LETTER = re.compile(r"[^\W\d_]")


class Doc:
    """What the rules look at, each computed once per document when first needed."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def lines(self) -> list[str]:
        return [line for line in map(str.strip, self.text.splitlines()) if line]

    @cached_property
    def normalised(self) -> list[str]:
        """The words deduplication compares (`text.normalise`)."""
        return normalise(self.text)


@dataclass(frozen=True)
class Filter:
    name: str
    rule: Callable[[Doc, dict[str, Any]], bool]
    defaults: dict[str, Any]
    help: str


def _word_count(d: Doc, p: dict[str, Any]) -> bool:
    return p["min_words"] <= len(d.words) <= p["max_words"]


def _mean_word_length(d: Doc, p: dict[str, Any]) -> bool:
    if not d.words:
        return False
    mean = sum(map(len, d.words)) / len(d.words)
    return p["min"] <= mean <= p["max"]


def _symbol_ratio(d: Doc, p: dict[str, Any]) -> bool:
    n = max(len(d.words), 1)
    hashes = d.text.count("#")
    ellipses = sum(d.text.count(e) for e in ELLIPSES)
    return max(hashes, ellipses) / n <= p["max_ratio"]


def _line_fraction(d: Doc, test: Callable[[str], bool]) -> float:
    return sum(map(test, d.lines)) / len(d.lines) if d.lines else 0.0


def _bullet_lines(d: Doc, p: dict[str, Any]) -> bool:
    return _line_fraction(d, lambda line: line.startswith(BULLETS)) <= p["max_fraction"]


def _ellipsis_lines(d: Doc, p: dict[str, Any]) -> bool:
    return _line_fraction(d, lambda line: line.endswith(ELLIPSES)) <= p["max_fraction"]


def _alpha_words(d: Doc, p: dict[str, Any]) -> bool:
    if not d.words:
        return False
    alpha = sum(map(str.isalpha, d.words))  # all letters: most words; then the mixed ones
    alpha += sum(1 for w in filterfalse(str.isalpha, d.words) if _LETTER.search(w))
    return alpha / len(d.words) >= p["min_fraction"]


def _repeated_lines(d: Doc, p: dict[str, Any]) -> bool:
    if not d.lines:
        return True
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in d.lines:
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        else:
            seen.add(line)
    total_chars = sum(map(len, d.lines))
    return dup_lines / len(d.lines) <= p["max_fraction"] and dup_chars / max(total_chars, 1) <= p["max_char_fraction"]


def _stop_words(d: Doc, p: dict[str, Any]) -> bool:
    stop = frozenset(p["words"])
    return sum(map(stop.__contains__, d.normalised)) >= p["min_count"]


FILTERS: dict[str, Filter] = {f.name: f for f in (
    Filter("word_count", _word_count, {"min_words": 50, "max_words": 100_000},
           "between min_words and max_words words"),
    Filter("mean_word_length", _mean_word_length, {"min": 3.0, "max": 10.0},
           "mean word length between min and max characters"),
    Filter("symbol_ratio", _symbol_ratio, {"max_ratio": 0.1},
           "at most max_ratio '#' per word and at most max_ratio ellipses per word"),
    Filter("bullet_lines", _bullet_lines, {"max_fraction": 0.9},
           "at most max_fraction of the lines start with a bullet"),
    Filter("ellipsis_lines", _ellipsis_lines, {"max_fraction": 0.3},
           "at most max_fraction of the lines end with an ellipsis"),
    Filter("alpha_words", _alpha_words, {"min_fraction": 0.8},
           "at least min_fraction of the words hold a letter"),
    Filter("repeated_lines", _repeated_lines, {"max_fraction": 0.3, "max_char_fraction": 0.2},
           "at most max_fraction of the lines (max_char_fraction of their characters) repeat an earlier line"),
    Filter("stop_words", _stop_words,
           {"min_count": 2, "words": ["the", "be", "to", "of", "and", "that", "have", "with"],
            "languages": ["en"]},
           "at least min_count occurrences of the stop words (English by default: `languages`)"),
)}

_SCOPE = ("enabled", "categories", "languages")


@dataclass(frozen=True)
class ActiveFilter:
    name: str
    rule: Callable[[Doc, dict[str, Any]], bool]
    params: dict[str, Any]


def resolve(settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each filter's full settings: its defaults, scope (enabled, categories, languages) and the user's values.
    Unknown filter names or parameters raise ConfigError."""
    for name, table in settings.items():
        if name not in FILTERS:
            raise ConfigError(f"curate.filters: unknown filter {name!r}; known: {', '.join(FILTERS)}")
        unknown = set(table) - set(FILTERS[name].defaults) - set(_SCOPE)
        if unknown:
            raise ConfigError(f"curate.filters.{name}: unknown setting(s) {', '.join(sorted(unknown))}; known: "
                              f"{', '.join(list(FILTERS[name].defaults) + list(_SCOPE))}")
    out = {}
    for name, f in FILTERS.items():
        full = {"enabled": True, "categories": list(PROSE), "languages": None, **f.defaults,
                **settings.get(name, {})}
        out[name] = full
    return out


def active_filters(settings: dict[str, dict[str, Any]], category: str, language: str) -> list[ActiveFilter]:
    """The filters that apply to a source of `category` and `language`, in `FILTERS` order."""
    out = []
    for name, s in resolve(settings).items():
        if not s["enabled"] or category not in s["categories"]:
            continue
        if s["languages"] is not None and language not in s["languages"]:
            continue
        params = {k: v for k, v in s.items() if k not in _SCOPE}
        out.append(ActiveFilter(name, FILTERS[name].rule, params))
    return out


def first_failure(doc: Doc | str, filters: list[ActiveFilter]) -> str | None:
    """Name of the first filter that removes the document, or None when it passes them all."""
    doc = Doc(doc) if isinstance(doc, str) else doc
    for f in filters:
        if not f.rule(doc, f.params):
            return f.name
    return None
