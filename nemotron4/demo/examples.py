"""English -> X translation pairs for the demo: pick the language, hold out an evaluation set from the corpus's
translation pairs, gather training pairs, and write them as benchmark-style documents for continued training
(docs/paper.md section 5) in the very template the evaluation prompts with (`nemotron4.eval.prompts`).

The corpus keeps only a sample of each catalog's pairs aside (their translations are left out of the training
text); the held-out set comes from those. Training pairs come from the rest of that sample and from the language's
gettext catalogs themselves, whose translations the multilingual training text already holds: any pair that shares
a side with a held-out pair is dropped, so the evaluation stays unseen. Only plain phrases are used (no format
directives, options or markup), so that chrF measures translation rather than copying of `%s`.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from nemotron4.data.corpus_files import mo_pairs
from nemotron4.data.manifest import Manifest
from nemotron4.errors import UserError
from nemotron4.eval.prompts import translation_example

__all__ = ["catalog_pairs", "examples_documents", "is_plain", "pick_language", "read_pairs", "split_pairs",
           "training_pairs", "write_jsonl"]

_MARKUP = re.compile(r"[%$`{}<>\[\]=_/\\|@#]|--|\.\.\.|^\W")


def is_plain(source: str, target: str, max_chars: int) -> bool:
    """A single-line pair of at most `max_chars` per side whose source is a plain phrase of two or more words:
    letters and spaces (90%+), no format directive, option, path or markup."""
    if not source or not target or len(source) > max_chars or len(target) > max_chars or "\n" in source + target:
        return False
    if _MARKUP.search(source) or len(source.split()) < 2:
        return False
    return sum(c.isalpha() or c == " " for c in source) >= 0.9 * len(source)


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
    """(held-out, rest): the plain pairs (`is_plain`), one per distinct source, shuffled with `seed`; the first
    `heldout` are held out (at most half, so that some remain)."""
    seen: set[str] = set()
    usable = []
    for p in pairs:
        s, t = p["source"].strip(), p["target"].strip()
        if s not in seen and is_plain(s, t, max_chars):
            seen.add(s)
            usable.append({"source": s, "target": t})
    random.Random(seed).shuffle(usable)
    n = min(heldout, len(usable) // 2)
    if n == 0:
        raise UserError(f"only {len(usable)} plain translation pairs of <= {max_chars} characters: too few to hold "
                        "some out; raise demo.translation.max_chars or demo.corpus.max_translation_pairs")
    return usable[:n], usable[n:]


def catalog_pairs(locale_root: Path, lang: str, max_chars: int) -> Iterator[dict]:
    """The plain en-><lang> pairs of the gettext catalogs under `locale_root/<lang>/LC_MESSAGES`, in file order."""
    skips: Counter = Counter()
    for mo in sorted((Path(locale_root) / lang / "LC_MESSAGES").glob("*.mo")):
        for s, t in mo_pairs(mo, skips):
            s, t = s.strip(), t.strip()
            if t != s and is_plain(s, t, max_chars):
                yield {"source": s, "target": t}


def training_pairs(candidates: Iterator[dict], heldout: list[dict]) -> list[dict]:
    """`candidates` without repeats and without any pair that shares a side with a held-out pair."""
    banned = {p["source"] for p in heldout} | {p["target"] for p in heldout}
    seen: set[str] = set()
    out = []
    for p in candidates:
        if p["source"] not in banned and p["target"] not in banned and p["source"] not in seen:
            seen.add(p["source"])
            out.append(p)
    return out


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
