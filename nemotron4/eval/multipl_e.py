"""MultiPL-E (Cassano et al. 2023): HumanEval translated to other programming languages, scored by running each
completion against the problem's unit tests; report Table 6 gives Nemotron-4 15B's 0-shot pass@1 in 11 languages.

The protocol is MultiPL-E's own (`multipl_e/completions.py`, `automodel.py`, `evaluation/src/main.py`):

- the model reads the problem's `prompt` with surrounding whitespace stripped and continues it;
- the continuation is cut at the first of the problem's `stop_tokens` (searched in the continuation only);
- the program is `prompt + completion + "\\n" + tests` (the unstripped prompt), built and run by the language's
  toolchain (`nemotron4.eval.languages`), here inside `nemotron4.eval.sandbox`; it passes when every step exits 0
  within the time limit (plus the C# and Scala rules of MultiPL-E's scripts);
- pass@k is the unbiased estimator over the samples of each problem, averaged over problems.

Problems are read from local files, as MultiPL-E publishes them: JSON lines (`humaneval-<lang>-reworded.jsonl`,
optionally gzipped), a JSON list, or a parquet export of the `nuprl/MultiPL-E` dataset, with the fields name,
language, prompt, tests and stop_tokens (doctests and others are kept but not needed). Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nemotron4.errors import UserError
from nemotron4.eval.humaneval import score
from nemotron4.eval.languages import LANGUAGES, PAPER_AVERAGE, Language, missing_toolchains, resolve
from nemotron4.eval.sandbox import ExecResult, Limits, Step, isolation_method, run_many, run_program

__all__ = ["evaluate_multipl_e", "generation_prompt", "load_problems", "program", "run_one", "stop_at_stop_token"]

FIELDS = ("name", "language", "prompt", "tests", "stop_tokens")
DEFAULT_LIMITS = Limits(timeout_s=15.0, cpu_s=15)  # MultiPL-E's scripts allow 5-15 s per run
MAX_NEW_TOKENS = 512  # MultiPL-E's MAX_TOKENS
TOP_P = 0.95  # MultiPL-E's TOP_P


def generation_prompt(problem: dict[str, Any]) -> str:
    """What the model reads: the prompt without its surrounding whitespace."""
    return problem["prompt"].strip()


def stop_at_stop_token(completion: str, stop_tokens: Sequence[str]) -> str:
    """`completion` (the model's continuation, without the prompt) up to its first stop token."""
    cut = len(completion)
    for stop in stop_tokens:
        i = completion.find(stop)
        if i != -1:
            cut = min(cut, i)
    return completion[:cut]


def program(problem: dict[str, Any], completion: str) -> str:
    """The program that checks one completion."""
    return problem["prompt"] + completion + "\n" + problem["tests"]


def load_problems(path: str | os.PathLike, languages: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """language code -> its problems, from a file or a directory of files (.jsonl, .jsonl.gz, .json, .parquet);
    only `languages` if given. Problems are checked for MultiPL-E's fields."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p))
        if not files:
            raise UserError(f"--multipl-e {path}: no .jsonl, .jsonl.gz, .json or .parquet files in it")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"--multipl-e {path}: no such file or directory (MultiPL-E's problem files, e.g. "
                        "humaneval-cpp-reworded.jsonl)")
    by_lang: dict[str, list[dict]] = {}
    for f in files:
        for i, p in enumerate(_read(f)):
            missing = [k for k in FIELDS if k not in p]
            if missing:
                raise UserError(f"{f}: problem {i} lacks {', '.join(missing)} (MultiPL-E problems have "
                                f"{', '.join(FIELDS)})")
            p = {**p, "stop_tokens": list(p["stop_tokens"])}
            by_lang.setdefault(str(p["language"]), []).append(p)
    if languages:
        absent = [lang for lang in languages if lang not in by_lang]
        if absent:
            raise UserError(f"--multipl-e {path}: no problems for {', '.join(absent)} (found "
                            f"{', '.join(sorted(by_lang)) or 'none'})")
        by_lang = {lang: by_lang[lang] for lang in languages}
    for lang, problems in by_lang.items():
        names = [p["name"] for p in problems]
        if len(set(names)) != len(names):
            raise UserError(f"--multipl-e {path}: {lang} has problems with the same name (one file per language)")
    return by_lang


def _kind(p: Path) -> str | None:
    name = p.name.lower()
    for suffix in (".jsonl.gz", ".jsonl", ".json.gz", ".json", ".parquet"):
        if name.endswith(suffix):
            return suffix
    return None


def _read(f: Path) -> list[dict]:
    kind = _kind(f)
    try:
        if kind == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as e:
                raise UserError(f"{f}: reading parquet needs pyarrow: pip install 'nemotron4[parquet]'") from e
            return pq.read_table(f).to_pylist()
        opener = gzip.open if kind and kind.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            text = fh.read()
        if kind in (".json", ".json.gz") and text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read MultiPL-E problems from {f}: {e}") from e


def steps(lang: Language, limits: Limits) -> list[Step]:
    """The sandbox steps of one program: the build (with its own time and memory) and the run."""
    run_limits = replace(limits, memory_bytes=max(limits.memory_bytes, lang.memory_bytes or 0),
                         max_processes=max(limits.max_processes, lang.max_processes or 0))
    out = []
    if lang.build:
        t = max(lang.build_timeout_s, limits.timeout_s)
        out.append(Step(lang.build, "compile", replace(run_limits, timeout_s=t, cpu_s=int(4 * t),
                                                       memory_bytes=max(run_limits.memory_bytes, 8 << 30),
                                                       max_processes=max(run_limits.max_processes, 256))))
    out.append(Step(lang.run, "run", run_limits))
    return out


def run_one(lang: Language, source: str, limits: Limits = DEFAULT_LIMITS) -> ExecResult:
    """Build and run one program of `lang` in the sandbox; apply the language's extra failure rules."""
    res = run_program({lang.source: source}, steps(lang, limits), limits, env=dict(lang.env))
    marked = any(m in res.output or m in res.stderr for m in lang.fail_markers)
    if res.passed and res.stage == "run" and (marked or (lang.stderr_fails and res.stderr.strip())):
        res.status = "failed"
    return res


def evaluate_multipl_e(
    model: Any,
    tokenizer: Any,
    path: str | os.PathLike,
    *,
    languages: Sequence[str] | None = None,
    samples: int = 1,
    k: Sequence[int] = (1,),
    temperature: float | None = None,
    top_p: float = TOP_P,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 8,
    limit: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    generate: Callable[[list[dict], int], list[list[str]]] | None = None,
) -> dict[str, Any]:
    """pass@k per language and averaged, beside the report's Table 6.

    samples 1 decodes greedily (the report's pass@1); more use `temperature` (default 0.8) and top_p 0.95.
    Languages whose toolchain is missing are reported (with the Debian package) before anything runs and skipped.
    `generate(problems, samples) -> completions per problem, already cut at stop tokens` replaces the model.
    """
    if max(k) > samples:
        raise UserError(f"pass@{max(k)} needs --samples >= {max(k)}")
    try:
        wanted = resolve(list(languages) if languages else None)
    except ValueError as e:
        raise UserError(f"--languages: {e}") from None
    problems = load_problems(path, [lang.code for lang in wanted] if languages else None)
    wanted = [LANGUAGES[c] for c in problems if c in LANGUAGES]
    unsupported = sorted(c for c in problems if c not in LANGUAGES)
    if unsupported:
        log(f"MultiPL-E: skipped {', '.join(unsupported)}: not one of the report's languages ({', '.join(LANGUAGES)})")
    missing = missing_toolchains(wanted)
    for line in missing.values():
        log(f"MultiPL-E: skipped {line}")
    runnable = [lang for lang in wanted if lang.code not in missing]
    if not runnable:
        raise UserError("MultiPL-E: no language can run here: " + "; ".join(missing.values()))
    if generate is None:
        from nemotron4.eval.generation import sample_completions

        def generate(probs: list[dict], samples: int) -> list[list[str]]:
            texts = sample_completions(model, tokenizer, [generation_prompt(p) for p in probs],
                                       [tuple(p["stop_tokens"]) for p in probs], samples, temperature=temperature,
                                       top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                                       progress="multipl-e" if progress else False)
            # generate_until already cuts at the first stop string; MultiPL-E's rule, applied as such.
            return [[stop_at_stop_token(t, p["stop_tokens"]) for t in ts] for p, ts in zip(probs, texts, strict=True)]

    out: dict[str, Any] = {"samples": samples, "sandbox": isolation_method(), "languages": {}}
    for lang in wanted:
        if lang.code in missing:
            out["languages"][lang.code] = {"language": lang.name, "paper": lang.paper,
                                           "status": "skipped: " + missing[lang.code]}
            continue
        probs = problems[lang.code][:limit]
        completions = generate(probs, samples)
        programs = [[program(p, c) for c in cs] for p, cs in zip(probs, completions, strict=True)]
        results = run_many(programs, lambda src, lang=lang: run_one(lang, src, limits),
                           workers=workers or max(2, os.cpu_count() or 1), progress=progress,
                           desc=f"execute {lang.code}")
        scores = score(results, k)
        out["languages"][lang.code] = {
            "language": lang.name, "paper": lang.paper, "status": "ok", "n_problems": len(probs), **scores,
            "results": [{"name": p["name"], "passed": sum(x.passed for x in r),
                         "samples": [x.summary(c) for x, c in zip(r, cs, strict=True)]}
                        for p, r, cs in zip(probs, results, completions, strict=True)],
        }
        log(f"MultiPL-E {lang.name}: " + ", ".join(f"{kk} {v:.3f}" for kk, v in scores.items())
            + f" ({len(probs)} problems; report pass@1 {lang.paper})")
    ran = [v for v in out["languages"].values() if v["status"] == "ok"]
    for kk in k:
        out[f"pass@{kk}"] = float(np.mean([v[f"pass@{kk}"] for v in ran]))
    out["complete"] = len(ran) == len(LANGUAGES)
    out["paper_average"] = PAPER_AVERAGE
    return out
