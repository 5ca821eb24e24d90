"""`nemotron4 demo --budget ci`: the whole pipeline of `make demo` on a tiny budget, on this machine's own text
(corpus caps of a few kB per source, a 768-piece tokenizer, a 0.2M-parameter model, a dozen steps), then a re-run
that skips every finished step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemotron4.cli import main
from nemotron4.data.indexed import dataset_exists
from nemotron4.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("sacrebleu")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--run-dir", str(run), "--config", str(REPO / "configs/demo.toml"), "--budget", "ci"]) == 0
    return run


@pytest.mark.slow
def test_every_artefact_exists(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "corpus/manifest.json").read_text())
    assert {s["category"] for s in manifest["sources"]} == {"english", "multilingual", "code"}
    assert (run_dir / "tokenizer/tokenizer.model").is_file()
    sources = json.loads((run_dir / "tokens/sources.json").read_text())["sources"]
    assert sources and all(dataset_exists(run_dir / "tokens" / s["path"]) for s in sources)
    summary = json.loads((run_dir / "summary.json").read_text())
    lang = summary["language"]
    assert dataset_exists(run_dir / f"tokens/translation-en-{lang}")
    for phase in ("pretrain", "continued"):
        assert (run_dir / f"phase_{phase}/model.safetensors").is_file()
        assert (run_dir / f"phase_{phase}/tokenizer.model").is_file()
    assert (run_dir / "checkpoints/latest").is_file()
    records = read_metrics(run_dir)
    assert [p for p in dict.fromkeys(r["phase"] for r in records)] == ["pretrain", "continued"]
    assert len({r["batch_size"] for r in records if r["phase"] == "pretrain"}) == 2  # the ramp
    assert (run_dir / "metrics.png").stat().st_size > 10_000
    assert (run_dir / "summary.md").read_text().startswith("# nemotron4 demo")


@pytest.mark.slow
def test_summary_holds_the_comparison_and_samples(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["eval"]) == ["pretrain", "continued"]
    for result in summary["eval"].values():
        assert {"english", "multilingual", "code", "benchmark"} <= set(result["perplexity"]["by_category"])
        assert result["translation"]["n"] > 0 and 0.0 <= result["translation"]["chrf"] <= 100.0
    assert [p["name"] for p in summary["phases"]] == ["pretrain", "continued"]
    assert len(summary["samples"]) == 3 and all(isinstance(s["completion"], str) for s in summary["samples"])
    held_out = {json.loads(line)["source"] for line in (run_dir / "translation/heldout.jsonl").read_text().splitlines()}
    trained = (run_dir / "translation/examples.jsonl").read_text()
    assert not any(f"English: {s}\n" in json.loads(line)["text"] for s in held_out for line in trained.splitlines())


@pytest.mark.slow
def test_rerun_skips_finished_steps(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (run_dir / "phase_continued/model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["demo", "--run-dir", str(run_dir), "--config", str(REPO / "configs/demo.toml"), "--budget", "ci"]) == 0
    out = capsys.readouterr().out
    assert out.count("exists:") >= 5  # corpus, tokenizer, both phases, eval
    assert (run_dir / "phase_continued/model.safetensors").stat().st_mtime_ns == before
