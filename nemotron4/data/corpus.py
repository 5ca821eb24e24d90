"""`corpus build`: the demo corpus, from text already on a Debian machine (no download).

- english: Python's reference topics and stdlib docstrings, /usr/share/doc, English manual pages.
- multilingual: one source per language: translated strings (msgstr) of the gettext catalogs under
  /usr/share/locale, plus translated manual pages /usr/share/man/<lang>/.
- code: the Python standard library, C headers, and scripts/sources of other languages found on the system.

Also keeps aside English -> other-language pairs (msgid -> msgstr) per language for a translation evaluation (their
msgstr is left out of the training text), and a held-out split of every source. Exact duplicates are dropped
(docs/paper.md section 3: deduplication). Bounded: bytes per file, per source and per category.
"""

from __future__ import annotations

import hashlib
import json
import re
import sysconfig
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nemotron4.data.corpus_files import (
    Skips,
    code_language,
    docstrings,
    mo_pairs,
    read_text,
    troff_to_text,
    walk_files,
)
from nemotron4.data.manifest import Manifest, ManifestSource
from nemotron4.errors import UserError

__all__ = ["CorpusConfig", "build_corpus"]

_ENGLISH_LOCALE = re.compile(r"^en(_|@|$)")


@dataclass
class CorpusConfig:
    """Where to look and how much to keep. Roots are parameters so tests can point them at a fake tree."""

    output: Path
    python_stdlib: Path = field(default_factory=lambda: Path(sysconfig.get_paths()["stdlib"]))
    doc_root: Path = Path("/usr/share/doc")
    man_root: Path = Path("/usr/share/man")
    locale_root: Path = Path("/usr/share/locale")
    include_root: Path = Path("/usr/include")
    code_roots: tuple[Path, ...] = (Path("/usr/bin"), Path("/usr/sbin"), Path("/usr/share"), Path("/usr/lib"))
    max_bytes_per_source: int = 2_000_000
    max_bytes_per_category: int = 20_000_000
    max_file_bytes: int = 1_000_000
    max_files_scanned: int = 200_000
    """Files looked at per walk over a big root (bounds the time on a large system)."""
    heldout_every: int = 20
    """Every n-th document of a source goes to its held-out split (at least one when it has two or more)."""
    max_translation_pairs: int = 500
    """Pairs kept aside per language."""


@dataclass
class _Source:
    name: str
    category: str
    language: str
    docs: list[tuple[str, str]] = field(default_factory=list)  # (origin path, text)
    bytes: int = 0


class _Collector:
    """Adds documents to sources, enforcing the per-source byte cap and exact deduplication."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg
        self.sources: dict[str, _Source] = {}
        self.seen: set[bytes] = set()
        self.skips: Skips = Counter()
        self.pairs: dict[str, list[dict]] = defaultdict(list)

    def source(self, name: str, category: str, language: str) -> _Source:
        if name not in self.sources:
            self.sources[name] = _Source(name, category, language)
        return self.sources[name]

    def full(self, name: str) -> bool:
        s = self.sources.get(name)
        return s is not None and s.bytes >= self.cfg.max_bytes_per_source

    def add(self, src: _Source, origin: str, text: str | None) -> None:
        if not text or not text.strip() or src.bytes >= self.cfg.max_bytes_per_source:
            return
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in self.seen:
            self.skips["duplicate"] += 1
            return
        self.seen.add(digest)
        src.docs.append((origin, text))
        src.bytes += len(text.encode())


def _english(c: _Collector) -> None:
    cfg = c.cfg
    src = c.source("en-pydoc", "english", "en")
    topics = cfg.python_stdlib / "pydoc_data" / "topics.py"
    if topics.is_file():
        import ast

        try:
            tree = ast.parse(topics.read_text())
            value = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign))
            for key, text in ast.literal_eval(value).items():
                c.add(src, f"pydoc:{key}", text)
        except (SyntaxError, ValueError, StopIteration, OSError):
            c.skips["unreadable"] += 1
    for path in _py_files(cfg, c.skips):
        if c.full(src.name):
            break
        c.add(src, str(path), docstrings(read_text(path, cfg.max_file_bytes, c.skips) or ""))

    src = c.source("en-doc", "english", "en")
    for i, path in enumerate(walk_files(cfg.doc_root, c.skips)):
        if c.full(src.name) or i >= cfg.max_files_scanned:
            break
        name = path.name.lower().removesuffix(".gz")
        if name.startswith(("readme", "changelog", "news", "copyright", "changes", "authors", "todo")) or (
            name.endswith((".txt", ".md", ".rst"))
        ):
            c.add(src, str(path), read_text(path, cfg.max_file_bytes, c.skips))

    src = c.source("en-man", "english", "en")
    for section in sorted(cfg.man_root.glob("man[0-9]*")):
        for path in walk_files(section, c.skips):
            if c.full(src.name):
                break
            c.add(src, str(path), troff_to_text(read_text(path, cfg.max_file_bytes, c.skips) or ""))


def _py_files(cfg: CorpusConfig, skips: Skips) -> Iterator[Path]:
    for path in walk_files(cfg.python_stdlib, skips):
        if path.suffix == ".py" and "site-packages" not in path.parts and "dist-packages" not in path.parts:
            yield path


def _language(dirname: str) -> str:
    return dirname.replace("@", "-")


def _multilingual(c: _Collector) -> None:
    cfg = c.cfg
    locales = sorted(p for p in cfg.locale_root.glob("*") if p.is_dir()) if cfg.locale_root.is_dir() else []
    for loc in locales:
        if _ENGLISH_LOCALE.match(loc.name):
            continue
        lang = _language(loc.name)
        src = c.source(f"ml-{lang}", "multilingual", lang)
        pairs = c.pairs[lang]
        for mo in sorted((loc / "LC_MESSAGES").glob("*.mo")):
            if c.full(src.name):
                break
            kept = []
            for msgid, msgstr in mo_pairs(mo, c.skips):
                if not msgstr.strip() or msgstr == msgid:
                    continue
                # A stable ~10% of usable pairs is kept aside for the translation evaluation, not trained on.
                if (len(pairs) < cfg.max_translation_pairs and 12 <= len(msgid) <= 400
                        and zlib.crc32(msgid.encode()) % 10 == 0):
                    pairs.append({"source": msgid, "target": msgstr, "catalog": mo.stem})
                else:
                    kept.append(msgstr)
            c.add(src, str(mo), "\n".join(kept))
    # Translated manual pages: /usr/share/man/<lang>/man*/...
    if cfg.man_root.is_dir():
        for loc in sorted(p for p in cfg.man_root.iterdir() if p.is_dir() and not p.name.startswith("man")):
            if _ENGLISH_LOCALE.match(loc.name):
                continue
            lang = _language(loc.name)
            src = c.source(f"ml-{lang}", "multilingual", lang)
            for path in walk_files(loc, c.skips):
                if c.full(src.name):
                    break
                c.add(src, str(path), troff_to_text(read_text(path, cfg.max_file_bytes, c.skips) or ""))


def _code(c: _Collector) -> None:
    cfg = c.cfg
    for path in _py_files(cfg, c.skips):
        if c.full("code-python"):
            break
        c.add(c.source("code-python", "code", "python"), str(path), read_text(path, cfg.max_file_bytes, c.skips))
    for path in walk_files(cfg.include_root, c.skips) if cfg.include_root.is_dir() else ():
        if c.full("code-c"):
            break
        if path.suffix in (".h", ".hpp", ".hh"):
            lang = "c" if path.suffix == ".h" else "cpp"
            c.add(c.source(f"code-{lang}", "code", lang), str(path), read_text(path, cfg.max_file_bytes, c.skips))
    for root in cfg.code_roots:
        if not root.is_dir():
            continue
        for i, path in enumerate(walk_files(root, c.skips)):
            if i >= cfg.max_files_scanned:
                break
            try:
                with open(path, "rb") as f:
                    head = f.read(128)
            except OSError:
                c.skips["unreadable"] += 1
                continue
            lang = code_language(path, head)
            if lang and lang != "python" and not c.full(f"code-{lang}"):
                c.add(c.source(f"code-{lang}", "code", lang), str(path), read_text(path, cfg.max_file_bytes, c.skips))


def _apply_category_caps(c: _Collector) -> None:
    """Trim sources so each category holds at most `max_bytes_per_category`, fairly (water-filling: small sources
    keep everything, large ones share the rest equally)."""
    by_cat: dict[str, list[_Source]] = defaultdict(list)
    for s in c.sources.values():
        by_cat[s.category].append(s)
    for members in by_cat.values():
        budget = c.cfg.max_bytes_per_category
        members = sorted(members, key=lambda s: s.bytes)
        for i, s in enumerate(members):
            cap = budget // (len(members) - i)
            if s.bytes > cap:
                kept, size = [], 0
                for origin, text in s.docs:
                    n = len(text.encode())
                    if size + n > cap:
                        break
                    kept.append((origin, text))
                    size += n
                s.docs, s.bytes = kept, size
            budget -= s.bytes


def _split(docs: list, every: int) -> tuple[list, list]:
    """(train, held-out): every `every`-th document is held out; at least one when there are two or more."""
    if len(docs) < 2:
        return docs, []
    held = set(range(every - 1, len(docs), every)) or {len(docs) - 1}
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


def _write_jsonl(path: Path, docs: list[tuple[str, str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with open(path, "w", encoding="utf-8") as f:
        for origin, text in docs:
            f.write(json.dumps({"text": text, "origin": origin}, ensure_ascii=False) + "\n")
            size += len(text.encode())
    return size


def build_corpus(cfg: CorpusConfig, log: Callable[[str], None] = print) -> Manifest:
    """Collect, split, write `<output>/{train,heldout,translation}/*.jsonl` and `<output>/manifest.json`."""
    c = _Collector(cfg)
    _english(c)
    _multilingual(c)
    _code(c)
    _apply_category_caps(c)
    for cat, roots in (
        ("english", f"{cfg.python_stdlib}, {cfg.doc_root}, {cfg.man_root}"),
        ("multilingual", f"{cfg.locale_root}, {cfg.man_root}/<lang>"),
        ("code", f"{cfg.python_stdlib}, {cfg.include_root}, {', '.join(map(str, cfg.code_roots))}"),
    ):
        if not any(s.docs for s in c.sources.values() if s.category == cat):
            raise UserError(f"corpus build found no {cat} text under {roots}; point the matching --*-root option "
                            "at a folder that has some")
    out = Path(cfg.output)
    sources = []
    order = ("english", "multilingual", "code")
    for s in sorted(c.sources.values(), key=lambda s: (order.index(s.category), s.name)):
        if not s.docs:
            continue
        train, held = _split(s.docs, cfg.heldout_every)
        ms = ManifestSource(s.name, s.category, s.language, f"train/{s.name}.jsonl",
                            f"heldout/{s.name}.jsonl" if held else None, len(train), 0, len(held), 0)
        ms.bytes = _write_jsonl(out / ms.train, train)
        if held:
            ms.heldout_bytes = _write_jsonl(out / ms.heldout, held)
        sources.append(ms)
    translation = []
    for lang, pairs in sorted(c.pairs.items()):
        if pairs:
            rel = f"translation/en-{lang}.jsonl"
            (out / "translation").mkdir(parents=True, exist_ok=True)
            with open(out / rel, "w", encoding="utf-8") as f:
                for p in pairs:
                    f.write(json.dumps(p, ensure_ascii=False) + "\n")
            translation.append({"pair": f"en-{lang}", "path": rel, "pairs": len(pairs)})
    manifest = Manifest(sources, translation, "text", out)
    manifest.save(out / "manifest.json")
    _report(manifest, c.skips, log)
    return manifest


def _report(m: Manifest, skips: Skips, log: Callable[[str], None]) -> None:
    for cat in ("english", "multilingual", "code"):
        members = [s for s in m.sources if s.category == cat]
        total = sum(s.bytes for s in members)
        log(f"{cat}: {len(members)} sources, {sum(s.docs for s in members)} docs, {total / 1e6:.2f} MB")
        for s in members:
            log(f"  {s.name:<24} {s.language:<10} {s.docs:>6} docs {s.bytes / 1e3:>9.1f} kB"
                f"  (held out: {s.heldout_docs})")
    log(f"translation pairs: {sum(t['pairs'] for t in m.translation)} over {len(m.translation)} language pairs")
    if skips:
        log("skipped files: " + ", ".join(f"{k} {v}" for k, v in sorted(skips.items())))
