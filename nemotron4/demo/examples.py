"""English -> X translation pairs for the demo: pick the language, split the pairs into a held-out evaluation set and
a training set, and write the training set as benchmark-style documents for continued training (PAPER.md section
5), in the very template the evaluation prompts with (`nemotron4.eval.prompts`)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from nemotron4.data.manifest import Manifest
from nemotron4.errors import UserError
from nemotron4.eval.prompts import translation_example

__all__ = ["examples_documents", "pick_language", "read_pairs", "split_pairs", "write_jsonl"]


def pick_language(manifest: Manifest, candidates: Sequence[str]) -> tuple[str, int]:
    """(language, pairs): the candidate with the most en->X pairs in the corpus; if no candidate has any, the
    best-covered language overall (ties: alphabetical)."""
    counts = {t["pair"].removeprefix("en-"): int(t["pairs"]) for t in manifest.translation if t["pairs"]}
    if not counts:
        raise UserError("the corpus has no English -> X translation pairs (gettext catalogs under the locale root); "
                        "the demo needs some to build its translation task")
    pool = {lang: n for lang, n in counts.items() if lang in candidates} or counts
    lang = min(pool, key=lambda k: (-pool[k], k))
    return lang, pool[lang]


def read_pairs(manifest: Manifest, lang: str) -> list[dict]:
    """The corpus's en-<lang> pairs ({"source", "target", ...}), in file order."""
    entry = next((t for t in manifest.translation if t["pair"] == f"en-{lang}"), None)
    if entry is None:
        raise UserError(f"the corpus has no en-{lang} translation pairs")
    with open(manifest.path(entry["path"]), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split_pairs(pairs: list[dict], heldout: int, max_chars: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(held-out, train): single-line pairs with both sides at most `max_chars`, one per distinct source text,
    shuffled with `seed`; the first `heldout` are held out (at most half of them, so training keeps some)."""
    seen: set[str] = set()
    usable = []
    for p in pairs:
        s, t = p["source"].strip(), p["target"].strip()
        if s and t and s not in seen and "\n" not in s + t and len(s) <= max_chars and len(t) <= max_chars:
            seen.add(s)
            usable.append({"source": s, "target": t})
    random.Random(seed).shuffle(usable)
    n = min(heldout, len(usable) // 2)
    if n == 0:
        raise UserError(f"only {len(usable)} usable translation pairs (<= {max_chars} characters): too few to hold "
                        "some out; raise demo.translation.max_chars or demo.corpus.max_translation_pairs")
    return usable[:n], usable[n:]


def examples_documents(
    pairs: list[dict], src_lang: str, tgt_lang: str, per_document: int, copies: int, seed: int = 0
) -> list[str]:
    """`copies` shuffled groupings of `pairs`, `per_document` examples per document, separated by blank lines as in
    a k-shot prompt: "English: <source>\\nGerman: <target>\\n\\nEnglish: ..." (nemotron4.eval.prompts)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(copies):
        order = list(pairs)
        rng.shuffle(order)
        for i in range(0, len(order), per_document):
            group = order[i : i + per_document]
            docs.append("\n\n".join(translation_example(src_lang, tgt_lang, p["source"], p["target"]) for p in group))
    return docs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
