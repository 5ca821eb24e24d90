"""A multi-worker run (2 local processes; a Dask LocalCluster of 2) writes the same output manifest and corpus as
a single-process run, and `prepare` over shards on those engines writes byte-identical .bin/.idx files.

The Dask runs go through the CLI in a subprocess: inside pytest the test folder tests/distributed shadows the
`distributed` package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_curate, train_fake_tokenizer, write_corpus

from nemotron4.data.curate.config import CurateConfig
from nemotron4.data.curate.synthetic import planted_corpus
from nemotron4.data.engine import EngineConfig, open_engine
from nemotron4.data.prepare import prepare, prepare_manifest
from nemotron4.data.prepare_shards import prepare_manifest_on_engine, prepare_on_engine

ENGINES = [EngineConfig("local", 2)]
WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    planted = planted_corpus(n_distinct=150, n_pairs=150, n_exact=20, words=(100, 200), seed=5)
    root = tmp_path_factory.mktemp("engines")
    docs = dict(planted.docs)
    docs["short"] = ["too short to pass"] * 3 + planted.docs["src0"][:5]  # filters and cross-source duplicates
    manifest = write_corpus(root / "in", docs)
    (root / "curate.toml").write_text("[curate]\nshard_mb = 0.05\n")
    cfg = CurateConfig(shard_mb=0.05)  # ~10 shards per source: byte ranges of the JSONL files
    single = run_curate(manifest, root / "single", cfg, EngineConfig("local", 1))
    tok = train_fake_tokenizer(root / "tok.model", WORDS, WORDS, 40)
    return manifest, root, cfg, single, tok


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "curate_report.json"}


@pytest.mark.parametrize("engine", ENGINES)
def test_curate_output_does_not_depend_on_workers(corpus, engine: EngineConfig, tmp_path: Path) -> None:
    manifest, root, cfg, single, _ = corpus
    report = run_curate(manifest, tmp_path / "multi", cfg, engine)
    assert _files(tmp_path / "multi") == _files(root / "single")
    assert json.loads((tmp_path / "multi/manifest.json").read_text())["sources"]
    a, b = report.to_dict(), single.to_dict()
    for d in (a, b):
        d.pop("seconds"), d.pop("engine"), d["lsh_index"].pop("peak_task_bytes")  # measurements
    assert a == b
    removed = {k for s in report.sources for k in s.removed}
    assert {"exact", "near", "word_count"} <= removed  # the run did remove documents at every kind of stage


@pytest.mark.parametrize("engine", ENGINES)
def test_prepare_over_shards_is_byte_identical(corpus, engine: EngineConfig, tmp_path: Path) -> None:
    _, root, _, _, tok = corpus
    curated = root / "single" / "manifest.json"
    prepare_manifest(curated, tok, tmp_path / "one", workers=1, progress=False)
    with open_engine(engine) as e:
        prepare_manifest_on_engine(curated, tok, tmp_path / "many", e, progress=False)
        big = root / "single/train/src0.jsonl"
        r = prepare_on_engine([big], tok, tmp_path / "direct", engine=e, shard_bytes=20_000, progress=False)
    ref = prepare([big], tok, tmp_path / "ref", workers=1, progress=False)
    one, many = _files(tmp_path / "one"), _files(tmp_path / "many")
    assert one.keys() == many.keys() and any(k.endswith(".bin") for k in one)
    assert {k: v for k, v in one.items() if k != "sources.json"} == {k: v for k, v in many.items()
                                                                    if k != "sources.json"}
    assert json.loads(one["sources.json"]) == json.loads(many["sources.json"])
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"direct{ext}").read_bytes() == (tmp_path / f"ref{ext}").read_bytes()
    assert big.stat().st_size > 3 * 20_000  # several shards
    assert (r.documents, r.tokens, r.bytes) == (ref.documents, ref.tokens, ref.bytes)


def _cli(*args: str) -> str:
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    p = subprocess.run([sys.executable, "-m", "nemotron4.cli", *args], capture_output=True, text=True, env=env,
                       cwd=repo, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


@pytest.mark.slow
def test_dask_engine_gives_the_same_bytes(corpus, tmp_path: Path) -> None:
    pytest.importorskip("dask", reason="the dask engine needs dask.distributed (the curate extra)")
    manifest, root, _, _, tok = corpus
    out = _cli("curate", "--manifest", str(manifest), "--output", str(tmp_path / "dask"), "--config",
               str(root / "curate.toml"), "--engine", "dask", "--workers", "2", "--quiet")
    assert "Dask LocalCluster of 2 processes" in json.loads((tmp_path / "dask/curate_report.json").read_text())[
        "engine"] and "- near" in out
    assert _files(tmp_path / "dask") == _files(root / "single")
    curated = root / "single" / "manifest.json"
    prepare_manifest(curated, tok, tmp_path / "one", workers=1, progress=False)
    _cli("prepare", "--manifest", str(curated), "--tokenizer", str(tok), "--output-dir", str(tmp_path / "many"),
         "--engine", "dask", "--workers", "2", "--quiet")
    one, many = _files(tmp_path / "one"), _files(tmp_path / "many")
    assert {k: v for k, v in one.items() if k != "sources.json"} == {k: v for k, v in many.items()
                                                                    if k != "sources.json"}
