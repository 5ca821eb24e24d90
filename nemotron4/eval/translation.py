"""k-shot translation over held-out parallel pairs, scored with corpus-level chrF or spBLEU (sacrebleu).

docs/paper.md section 6 evaluates FLORES-101 Chinese -> X with 8 shots (spBLEU); the demo corpus keeps English -> X
pairs aside (translation/en-<lang>.jsonl, `nemotron4.data.corpus`), never trained on. Prompts are
`nemotron4.eval.prompts.translation_prompt`, the template continued training also writes, and the answer is the
greedy continuation up to the first newline. chrF (character n-gram F-score) needs no tokenizer or download, so it
works offline for any script; FLORES files in the same JSONL form ({"source", "target"}) go through the same path.
spBLEU is the report's metric: BLEU over the pieces of the FLORES-101 SentencePiece model (sacreBLEU's `flores101`
tokenizer), here read from a local copy of that model file instead of sacreBLEU's download.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemotron4.errors import UserError
from nemotron4.eval.generation import GenerationRequest, generate_until
from nemotron4.eval.prompts import translation_prompt

__all__ = ["METRICS", "chrf", "evaluate_translation", "load_pairs", "spbleu"]

METRICS = ("chrf", "spbleu")

Pairs = str | os.PathLike | Sequence[dict[str, str]]


def load_pairs(pairs: Pairs) -> list[dict[str, str]]:
    """Pairs from a JSONL file of {"source", "target"} records, or a list of such dicts (checked)."""
    if isinstance(pairs, str | os.PathLike):
        path = Path(pairs)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise UserError(f"cannot read translation pairs {path}: {e}") from e
        try:
            pairs = [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not JSONL ({e})") from e
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, dict) or not isinstance(p.get("source"), str) or not isinstance(p.get("target"), str):
            raise UserError(f"translation pair {i} needs string fields 'source' and 'target', got {p!r:.80}")
        out.append({"source": p["source"], "target": p["target"]})
    return out


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus-level chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def spbleu(hypotheses: Sequence[str], references: Sequence[str], spm_model: str | os.PathLike) -> float:
    """Corpus BLEU over SentencePiece pieces, 0-100: what sacreBLEU's `--tokenize flores101` computes, with the
    FLORES-101 model (sacrebleu_tokenizer_spm.model) read from `spm_model` instead of downloaded."""
    import sentencepiece
    from sacrebleu.metrics import BLEU

    path = Path(spm_model)
    if not path.is_file():
        raise UserError(f"--flores-spm {path}: no such file (the FLORES-101 SentencePiece model, "
                        "sacrebleu_tokenizer_spm.model)")
    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise UserError(f"--flores-spm {path}: not a SentencePiece model ({e})") from e

    def pieces(line: str) -> str:  # sacreBLEU's TokenizerSPM.__call__
        return " ".join(sp.EncodeAsPieces(line))

    return float(BLEU(tokenize="none").corpus_score([pieces(h) for h in hypotheses],
                                                     [[pieces(r) for r in references]]).score)


def evaluate_translation(
    model: Any,
    tokenizer: Any,
    pairs: Pairs,
    *,
    src_lang: str,
    tgt_lang: str,
    shots: int = 8,
    shot_pairs: Pairs | None = None,
    max_pairs: int | None = None,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = False,
    metric: str = "chrf",
    spm_model: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Translate each pair's source with a `shots`-shot prompt and score the outputs against the targets.

    Shots come from `shot_pairs` when given (drawn with `seed` if it holds more than `shots`), else they are the
    first `shots` pairs of `pairs`, which are then not scored. The same shots serve every prompt, as in the paper's
    fixed k-shot setting. `metric` "spbleu" needs `spm_model` (the FLORES-101 SentencePiece model file); chrF is
    reported either way. Returns {"metric", "score", "chrf", ["spbleu"], "n", "shots", "examples": [{"source",
    "target", "output"}]}.
    """
    if metric not in METRICS:
        raise UserError(f"--metric {metric}: choose {' or '.join(METRICS)}")
    if metric == "spbleu" and spm_model is None:
        raise UserError("--metric spbleu needs --flores-spm FILE: the FLORES-101 SentencePiece model "
                        "(sacrebleu_tokenizer_spm.model, from dl.fbaipublicfiles.com/fairseq/models/flores/)")
    if shots < 0:
        raise UserError(f"shots must be >= 0, got {shots}")
    items = load_pairs(pairs)
    if shot_pairs is None:
        pool, items = items[:shots], items[shots:]
    else:
        pool = load_pairs(shot_pairs)
        if len(pool) > shots:
            pool = random.Random(seed).sample(pool, shots)
    if len(pool) < shots:
        raise UserError(f"{shots} shots asked for, only {len(pool)} pairs to draw them from")
    items = items[:max_pairs] if max_pairs is not None else items
    if not items:
        raise UserError("no translation pairs left to score (the first `shots` pairs are the shots)")
    examples = [(p["source"], p["target"]) for p in pool]
    requests = [GenerationRequest(translation_prompt(src_lang, tgt_lang, examples, p["source"]), ("\n",),
                                  max_new_tokens) for p in items]
    outputs = [o.strip() for o in generate_until(model, tokenizer, requests, batch_size=batch_size,
                                                 progress="translation" if progress else False)]
    refs = [p["target"] for p in items]
    scores = {"chrf": chrf(outputs, refs)}
    if spm_model is not None:
        scores["spbleu"] = spbleu(outputs, refs, spm_model)
    return {
        "metric": metric,
        "score": scores[metric],
        **scores,
        "n": len(items),
        "shots": len(pool),
        "examples": [{"source": p["source"], "target": p["target"], "output": o} for p, o in zip(items, outputs,
                                                                                             strict=True)],
    }
