from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest

from nemotron4.data.corpus import CorpusConfig, build_corpus
from nemotron4.data.corpus_files import troff_to_text
from nemotron4.data.manifest import Manifest, iter_jsonl_texts
from nemotron4.errors import UserError


def write_mo(path: Path, pairs: dict[str, str]) -> None:
    """A GNU .mo file (little-endian), as msgfmt writes it."""
    pairs = {"": "Content-Type: text/plain; charset=UTF-8\n", **pairs}
    keys = sorted(pairs)
    ids, strs = [k.encode() for k in keys], [pairs[k].encode() for k in keys]
    n = len(keys)
    start = 28 + 16 * n
    blob, otab, ttab = b"", [], []
    for s in ids:
        otab.append((len(s), start + len(blob)))
        blob += s + b"\0"
    for s in strs:
        ttab.append((len(s), start + len(blob)))
        blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + b"".join(struct.pack("<2I", *e) for e in otab + ttab) + blob)


MAN = """.\\" comment
.TH FOO 1
.SH NAME
foo \\- frobnicate the \\fBbar\\fR
.SH DESCRIPTION
.B foo
reads \\fIfiles\\fP and writes them.
"""


def fake_tree(root: Path) -> CorpusConfig:
    (root / "py" / "pydoc_data").mkdir(parents=True)
    (root / "py" / "pydoc_data" / "topics.py").write_text("topics = {'assert': 'The assert statement is ...'}\n")
    for i in range(4):
        doc = f"Module {i} does a useful thing for the reader, well documented."
        (root / "py" / f"mod{i}.py").write_text(f'"""{doc}"""\ndef f{i}(x):\n    return x * {i}\n')
    doc = root / "doc" / "pkg"
    doc.mkdir(parents=True)
    (doc / "README").write_text("This package does things.\n")
    (doc / "copyright").write_text("Copyright 2020 Someone. Licensed under terms.\n")
    (doc / "changelog.gz").write_bytes(gzip.compress(b"pkg (1.0) unstable; urgency=low\n  * First release.\n"))
    (doc / "blob.txt").write_bytes(b"\x00\x01binary")  # skipped: binary
    (doc / "huge.txt").write_text("x" * 5000)  # skipped: over max_file_bytes
    (doc / "secret.txt").symlink_to(doc / "README")  # skipped: symlink
    man = root / "man"
    (man / "man1").mkdir(parents=True)
    with gzip.open(man / "man1" / "foo.1.gz", "wb") as f:
        f.write(MAN.encode())
    (man / "de" / "man1").mkdir(parents=True)
    with gzip.open(man / "de" / "man1" / "foo.1.gz", "wb") as f:
        f.write(b".TH FOO 1\n.SH NAME\nfoo \\- frobniziert den Balken\n")
    for lang, words in {"de": ("Datei", "Fenster"), "fr": ("fichier", "fenêtre"), "en_GB": ("file", "window")}.items():
        pairs = {f"Open the {e} number {k} now": f"{w} {k} öffnen" for k in range(40) for e, w in [("file", words[0])]}
        pairs["Close window"] = words[1]
        write_mo(root / "locale" / lang / "LC_MESSAGES" / "app.mo", pairs)
    (root / "locale" / "xx" / "LC_MESSAGES").mkdir(parents=True)
    (root / "locale" / "xx" / "LC_MESSAGES" / "bad.mo").write_bytes(b"garbage")
    (root / "include").mkdir()
    (root / "include" / "a.h").write_text("#define A 1\nint a(void);\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\necho hello\n")
    (root / "bin" / "run").write_text("#!/usr/bin/env perl\nprint 1;\n")
    return CorpusConfig(
        output=root / "out", python_stdlib=root / "py", doc_root=root / "doc", man_root=man,
        locale_root=root / "locale", include_root=root / "include", code_roots=(root / "bin",),
        max_file_bytes=4000, heldout_every=3, max_translation_pairs=10,
    )


def test_build_on_a_fake_tree(tmp_path) -> None:
    cfg = fake_tree(tmp_path)
    logs: list[str] = []
    m = build_corpus(cfg, log=logs.append)
    by_name = {s.name: s for s in m.sources}
    assert {s.category for s in m.sources} == {"english", "multilingual", "code"}
    assert {"en-pydoc", "en-doc", "en-man", "ml-de", "ml-fr", "code-python", "code-c", "code-shell",
            "code-perl"} <= set(by_name)
    assert "ml-en_GB" not in by_name and "ml-xx" not in by_name  # English locales are not "multilingual"
    assert by_name["ml-de"].language == "de"
    loaded = Manifest.load(cfg.output / "manifest.json")
    assert [s.name for s in loaded.sources] == [s.name for s in m.sources]
    man = list(iter_jsonl_texts(loaded.path(by_name["en-man"].train)))
    assert man and "frobnicate the bar" in man[0] and "\\f" not in man[0]
    de_src = by_name["ml-de"]
    de = "\n".join([*iter_jsonl_texts(loaded.path(de_src.train)), *iter_jsonl_texts(loaded.path(de_src.heldout))])
    assert "öffnen" in de and "frobniziert" in de  # catalog strings and the translated man page
    doc_text = "\n".join(iter_jsonl_texts(loaded.path(by_name["en-doc"].train)))
    assert "binary" not in doc_text and "xxxxx" not in doc_text
    held = sum(s.heldout_docs for s in m.sources)
    assert held > 0 and all((cfg.output / s.heldout).exists() for s in m.sources if s.heldout)
    # Translation pairs: kept aside, and their targets are not in the training text.
    t = {x["pair"]: x for x in m.translation}
    assert set(t) == {"en-de", "en-fr"}
    pairs = [json.loads(line) for line in (cfg.output / t["en-de"]["path"]).read_text().splitlines()]
    assert 0 < len(pairs) <= 10 and all(p["source"].startswith(("Open", "Close")) for p in pairs)
    assert all(p["target"] not in de.split("\n") for p in pairs)
    report = "\n".join(logs)
    assert "multilingual: 2 sources" in report and "binary 1" in report and "too_large 1" in report


def test_byte_caps(tmp_path) -> None:
    cfg = fake_tree(tmp_path)
    cfg.max_bytes_per_source = 60
    m = build_corpus(cfg, log=lambda s: None)
    # A source stops after the document that crosses the cap.
    assert all(s.bytes + s.heldout_bytes < 60 + 4000 for s in m.sources)


def test_empty_category_is_a_clear_error(tmp_path) -> None:
    cfg = fake_tree(tmp_path)
    cfg.locale_root = tmp_path / "nowhere"
    cfg.man_root = tmp_path / "nowhere"
    with pytest.raises(UserError, match="no multilingual text under"):
        build_corpus(cfg, log=lambda s: None)


def test_troff_redirects_are_skipped() -> None:
    assert troff_to_text(".so man1/other.1\n") is None


@pytest.mark.skipif(not Path("/usr/share/locale").is_dir(), reason="not a Debian-like machine")
def test_real_machine_smoke(tmp_path) -> None:
    cfg = CorpusConfig(output=tmp_path / "c", max_bytes_per_source=20_000, max_bytes_per_category=200_000,
                       max_files_scanned=3000)
    m = build_corpus(cfg, log=lambda s: None)
    cats = {s.category for s in m.sources}
    assert cats == {"english", "multilingual", "code"}
    assert len([s for s in m.sources if s.category == "multilingual"]) >= 5
    assert sum(s.bytes for s in m.sources if s.category == "english") <= 200_000
    assert m.translation
