from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import fake_tree

from nemotron4.data.corpus import CorpusConfig, build_corpus
from nemotron4.data.corpus_files import troff_to_text
from nemotron4.data.manifest import Manifest, iter_jsonl_texts
from nemotron4.errors import UserError


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
