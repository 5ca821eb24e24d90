"""Translation: k-shot prompts from the shared template, chrF of a model that knows the answers vs one that does
not, shots kept out of scoring."""

from __future__ import annotations

import json

import pytest

import nemotron4.eval.translation as translation
from nemotron4.eval.prompts import translation_prompt
from nemotron4.eval.translation import chrf, evaluate_translation

pytest.importorskip("sacrebleu")

PAIRS = [{"source": f"The file {w} could not be opened", "target": f"Die Datei {w} konnte nicht geöffnet werden"}
         for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda")]


def stub(answer):
    """A generate_until stand-in: answers each prompt with answer(source of the prompt's last example)."""

    def generate_until(model, tokenizer, requests, **kw):
        assert all(r.stop == ("\n",) for r in requests)
        return [answer(r.prompt.rsplit("English: ", 1)[1].split("\nGerman:")[0]) for r in requests]

    return generate_until


def test_knowing_model_scores_100_and_guessing_model_scores_low(monkeypatch, tmp_path):
    lookup = {p["source"]: p["target"] for p in PAIRS}
    path = tmp_path / "en-de.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    monkeypatch.setattr(translation, "generate_until", stub(lambda s: lookup[s]))
    good = evaluate_translation(None, None, path, src_lang="en", tgt_lang="de", shots=3)
    monkeypatch.setattr(translation, "generate_until", stub(lambda s: s))  # copies the English source
    bad = evaluate_translation(None, None, path, src_lang="en", tgt_lang="de", shots=3)
    assert good["chrf"] == pytest.approx(100.0)
    assert bad["chrf"] < 50.0
    assert good["n"] == len(PAIRS) - 3 and good["shots"] == 3
    assert [e["source"] for e in good["examples"]] == [p["source"] for p in PAIRS[3:]]  # shots not scored


def test_prompt_is_the_shared_template_and_shot_pool_is_separate(monkeypatch):
    seen = []

    def record(model, tokenizer, requests, **kw):
        seen.extend(requests)
        return ["x"] * len(requests)

    monkeypatch.setattr(translation, "generate_until", record)
    res = evaluate_translation(None, None, PAIRS[:4], shot_pairs=PAIRS[4:], src_lang="en", tgt_lang="de", shots=2,
                               seed=1)
    assert res["n"] == 4  # every pair scored: the shots came from their own pool
    shots = [p for p in PAIRS[4:] if p["source"] in seen[0].prompt]
    assert len(shots) == 2
    expected = translation_prompt("en", "de", [(s["source"], s["target"]) for s in shots], PAIRS[0]["source"])
    assert sorted(seen[0].prompt.split("\n\n")) == sorted(expected.split("\n\n"))
    assert seen[0].prompt.endswith("German:")


def test_real_tiny_model_end_to_end(tiny_model, sp):
    res = evaluate_translation(tiny_model, sp, PAIRS, src_lang="en", tgt_lang="de", shots=2, max_pairs=3,
                               max_new_tokens=8, batch_size=2)
    assert res["n"] == 3 and 0.0 <= res["chrf"] < 100.0
    assert all("\n" not in e["output"] for e in res["examples"])


def test_chrf_corpus_level():
    assert chrf(["abc def"], ["abc def"]) == pytest.approx(100.0)
    assert chrf(["xyz"], ["abc def"]) < 10


def _tiny_spm(path):
    """A small SentencePiece model trained in the test, standing in for FLORES-101's (same file format)."""
    import sentencepiece

    text = [p["source"] for p in PAIRS] + [p["target"] for p in PAIRS] + ["Die Dateien wurden geöffnet."] * 3
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(text * 4), model_prefix=str(path / "flores"),
                                             vocab_size=40, model_type="unigram", character_coverage=1.0,
                                             num_threads=1, minloglevel=2)
    return path / "flores.model"


def test_spbleu_equals_sacrebleu_s_own_with_the_same_model_file(tmp_path, monkeypatch):
    import sacrebleu
    import sacrebleu.tokenizers.tokenizer_spm as tokenizer_spm

    model = _tiny_spm(tmp_path)
    hyps = ["Die Datei alpha konnte geöffnet werden", "Datei beta nicht", "Die Datei gamma konnte nicht werden"]
    refs = [p["target"] for p in PAIRS[:3]]
    ours = translation.spbleu(hyps, refs, model)
    # sacreBLEU's own spBLEU (tokenize="flores101"), its model file put where it would have downloaded it to.
    (tmp_path / "sacrebleu" / "models").mkdir(parents=True)
    (tmp_path / "sacrebleu" / "models" / "sacrebleu_tokenizer_spm.model").write_bytes(model.read_bytes())
    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tmp_path / "sacrebleu"))
    theirs = sacrebleu.metrics.BLEU(tokenize="flores101").corpus_score(hyps, [refs]).score
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert 0 < ours < 100
    assert ours != pytest.approx(sacrebleu.metrics.BLEU().corpus_score(hyps, [refs]).score)  # not 13a BLEU


def test_spbleu_is_chosen_with_metric_and_needs_the_model_file(monkeypatch, tmp_path):
    from nemotron4.errors import UserError

    lookup = {p["source"]: p["target"] for p in PAIRS}
    path = tmp_path / "zh-de.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    monkeypatch.setattr(translation, "generate_until", stub(lambda s: lookup[s]))
    with pytest.raises(UserError, match="--flores-spm"):
        evaluate_translation(None, None, path, src_lang="en", tgt_lang="de", shots=3, metric="spbleu")
    res = evaluate_translation(None, None, path, src_lang="en", tgt_lang="de", shots=3, metric="spbleu",
                               spm_model=_tiny_spm(tmp_path))
    assert res["metric"] == "spbleu" and res["score"] == res["spbleu"] == pytest.approx(100.0)
    assert res["chrf"] == pytest.approx(100.0)
    default = evaluate_translation(None, None, path, src_lang="en", tgt_lang="de", shots=3)
    assert default["metric"] == "chrf" and "spbleu" not in default
