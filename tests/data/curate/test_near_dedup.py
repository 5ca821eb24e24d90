"""Near deduplication on a corpus with planted duplicates at known (exactly computed) Jaccard similarities:
recall of the pairs above threshold + 0.1, no removal below threshold - 0.1, exact copies, distinct documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import kept, removed_positions, run_curate, write_corpus

from nemotron4.data.curate.config import CurateConfig, NearConfig
from nemotron4.data.curate.filters import FILTERS
from nemotron4.data.curate.synthetic import planted_corpus

NO_FILTERS = {name: {"enabled": False} for name in FILTERS}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    corpus = planted_corpus(n_distinct=200, n_pairs=400, n_exact=40, seed=3)
    root = tmp_path_factory.mktemp("planted")
    manifest = write_corpus(root / "in", corpus.docs)
    return corpus, manifest, root


@pytest.mark.parametrize("threshold", [0.7, 0.8])
def test_precision_and_recall_at_the_threshold(planted, threshold: float, tmp_path: Path) -> None:
    corpus, manifest, _ = planted
    report = run_curate(manifest, tmp_path, CurateConfig(filters=NO_FILTERS, near=NearConfig(threshold=threshold)))
    gone = removed_positions(corpus.docs, tmp_path)
    removed = gone.__contains__

    above = [(a, b) for a, b, sim in corpus.pairs if sim >= threshold + 0.1]
    below = [(a, b) for a, b, sim in corpus.pairs if sim <= threshold - 0.1]
    assert len(above) > 50 and len(below) > 100
    recall = sum(removed(a) or removed(b) for a, b in above) / len(above)
    assert recall >= 0.95, f"recall {recall:.3f} of {len(above)} pairs with Jaccard >= {threshold + 0.1}"
    wrong = [(a, b) for a, b in below if removed(a) or removed(b)]
    assert not wrong, f"{len(wrong)} pairs with Jaccard <= {threshold - 0.1} lost a document"
    assert not [d for d in corpus.distinct if removed(d)]
    # precision: every removed document has a planted partner
    partners = {d for a, b, _ in corpus.pairs for d in (a, b)} | {d for a, b in corpus.exact for d in (a, b)}
    lost = gone
    assert lost and lost <= partners
    # never both members of a pair: one representative is kept
    assert not [p for p in corpus.pairs + corpus.exact if removed(p[0]) and removed(p[1])]
    near = sum(s.removed.get("near", {}).get("docs", 0) for s in report.sources)
    exact = sum(s.removed.get("exact", {}).get("docs", 0) for s in report.sources)
    assert exact >= len(corpus.exact) and near > 0 and near + exact == len(lost)


def test_exact_copies_differing_in_case_and_punctuation_are_removed(planted, tmp_path: Path) -> None:
    corpus, manifest, _ = planted
    cfg = CurateConfig(filters=NO_FILTERS, near=NearConfig(enabled=False))
    report = run_curate(manifest, tmp_path, cfg)
    gone = removed_positions(corpus.docs, tmp_path)
    for original, copy in corpus.exact:
        assert corpus.docs[original[0]][original[1]] != corpus.docs[copy[0]][copy[1]]  # not byte-equal
        first, second = sorted([original, copy])  # corpus order: source name, then position
        assert first not in gone and second in gone
    assert sum(s.removed.get("exact", {}).get("docs", 0) for s in report.sources) >= len(corpus.exact)
    assert "near" not in report.stages()


def test_dedup_stays_within_a_category(tmp_path: Path) -> None:
    doc = "one two three four five six seven eight nine ten eleven twelve\n" * 3
    other = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu\n" * 3
    manifest = write_corpus(tmp_path / "in", {"a": [doc, other], "b": [doc], "c": [doc.upper()]},
                            categories={"c": "code"})
    run_curate(manifest, tmp_path / "out", CurateConfig(filters=NO_FILTERS))
    assert kept(tmp_path / "out", "a") == [doc, other]
    assert kept(tmp_path / "out", "b") == []  # the same text in a later source of the category
    assert kept(tmp_path / "out", "c") == [doc.upper()]  # another category: kept
