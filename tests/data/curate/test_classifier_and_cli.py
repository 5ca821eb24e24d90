"""The fastText quality filter trained from example files, and the `nemotron4 curate` command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import kept, run_curate, write_corpus

from nemotron4.cli import main
from nemotron4.data.curate.config import ClassifierConfig, CurateConfig, NearConfig
from nemotron4.data.curate.filters import FILTERS
from nemotron4.data.curate.synthetic import STOP, random_docs, vocabulary
from nemotron4.errors import ConfigError

NO_FILTERS = {name: {"enabled": False} for name in FILTERS}


def _two_styles(n: int, seed: int) -> tuple[list[str], list[str]]:
    """'good' documents from one half of a vocabulary, 'bad' ones from the other."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng, 600)
    stop = np.array(STOP)
    good = [" ".join(w) for w in random_docs(rng, np.concatenate([vocab[:300], stop]), n, (40, 80))]
    bad = [" ".join(w) for w in random_docs(rng, np.concatenate([vocab[300:600], stop]), n, (40, 80))]
    return good, bad


def test_classifier_removes_documents_like_the_negative_examples(tmp_path: Path) -> None:
    pytest.importorskip("fasttext", reason="the classifier filter needs fastText (the curate extra)")
    good, bad = _two_styles(120, 0)
    pos = tmp_path / "pos.jsonl"
    neg = tmp_path / "neg.txt"
    pos.write_text("".join(json.dumps({"text": t}) + "\n" for t in good[:100]))
    neg.mkdir()
    for i, t in enumerate(bad[:100]):  # a folder of text files, one document each
        (neg / f"{i}.txt").write_text(t)
    test_docs = good[100:] + bad[100:]
    manifest = write_corpus(tmp_path / "in", {"web": test_docs, "code": bad[100:]}, categories={"code": "code"})
    cfg = CurateConfig(filters=NO_FILTERS, exact=False, near=NearConfig(enabled=False),
                       classifier=ClassifierConfig([str(pos)], [str(neg)], threshold=0.5, epoch=20))
    report = run_curate(manifest, tmp_path / "out", cfg)
    out = kept(tmp_path / "out", "web")
    assert out == good[100:]
    assert report.sources[0].removed == {"classifier": {"docs": 20, "bytes": sum(len(t.encode()) for t in bad[100:])}}
    assert kept(tmp_path / "out", "code") == bad[100:]  # categories = ["english"] by default


def test_classifier_config_needs_both_sides() -> None:
    with pytest.raises(ConfigError, match="both positive and negative"):
        ClassifierConfig(positive=["a.jsonl"])


def test_cli_curates_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, _ = _two_styles(10, 1)
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"body": t}) + "\n" for t in good + good[:3]))
    cfg = tmp_path / "c.toml"
    cfg.write_text("[curate.filters.word_count]\nmin_words = 10\n")
    assert main(["curate", str(a), "--output", str(tmp_path / "out"), "--text-field", "body", "--config", str(cfg),
                 "--threshold", "0.9", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "- exact" in printed and "a: 13 -> 10 docs (exact 3)" in printed
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["sources"][0]["docs"] == 10 and manifest["text_field"] == "body"
    report = json.loads((tmp_path / "out/curate_report.json").read_text())
    assert report["config"]["near"]["threshold"] == 0.9
    assert report["examples"]["english"]["exact"][0]["duplicate_of"] == {"source": "a", "doc": 0}


@pytest.mark.parametrize("argv, message", [
    (["--output", "o"], "either --manifest"),
    (["--manifest", "nope.json", "--output", "o"], "cannot read corpus manifest"),
    (["missing.jsonl", "--output", "o"], "does not exist"),
    (["x.jsonl", "--output", "o", "--bands", "50", "--rows", "50"], "bands x rows"),
    (["x.jsonl", "--output", "o", "--bands", "4"], "set both bands and rows"),
    (["x.jsonl", "--output", "o", "--threshold", "1.5"], "threshold must be in"),
    (["x.jsonl", "--output", "o", "--positive", "p.jsonl"], "both positive and negative"),
    (["x.jsonl", "--output", "o", "--scheduler", "tcp://h:1"], "needs the dask engine"),
    (["--manifest", "m.json", "--output", "o", "--category", "code"], "--category goes with INPUT"),
])
def test_cli_errors_are_one_line(argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jsonl").write_text('{"text": "a b c"}\n')
    assert main(["curate", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
