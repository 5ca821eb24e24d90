"""`nemotron4 eval`: LM-Evaluation-Harness tasks, the paper's suite, HumanEval, MultiPL-E, translation and
perplexity."""

from __future__ import annotations

import argparse

_EPILOG = """\
examples:
  nemotron4 eval --model runs/demo --perplexity runs/demo/config.toml --max-samples 2 --output runs/demo/ppl.json
  nemotron4 eval --model runs/demo/phase_pretrain --translation runs/demo/corpus/translation/en-de.jsonl \\
      --max-pairs 20
  nemotron4 eval --model runs/demo --humaneval --samples 2 --k 1 --limit 2
  nemotron4 eval --model runs/demo --tasks arc_easy,hellaswag --limit 100
  nemotron4 eval --model hf/minitron-4b --suite paper --output results/paper.json
  nemotron4 eval --model hf/minitron-4b --multipl-e data/multipl-e/ --languages cpp,java,lua
  nemotron4 eval --model hf/minitron-4b --translation flores/zh-de.jsonl --src-lang zh --metric spbleu \\
      --flores-spm sacrebleu_tokenizer_spm.model

runs/demo is what `make demo` writes: a training run (its latest checkpoint and tokenizer), phase_pretrain and
phase_continued its exported phases, config.toml its training config (whose blends --perplexity reads).

The harness (pip install 'nemotron4[eval]') reads task data from the Hugging Face hub or its local cache; offline,
tasks whose data is not cached are named and skipped. HumanEval, MultiPL-E (its problem files on disk; `make
toolchains` installs the compilers), translation and perplexity need no download.
lm-eval's own CLI with this model: python -m nemotron4.eval.lm_eval --model nemotron4 --model_args pretrained=DIR
"""


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model: lm-eval tasks, the paper's suite, HumanEval, MultiPL-E, translation, perplexity",
        description="Evaluate a model. Choose one or more of --tasks, --suite, --perplexity, --humaneval, "
        "--multipl-e, --translation; they share one loaded model.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="a nemotron4 weights directory, a Hugging Face nemotron directory, "
                   "a training run / checkpoint, or a flavour name (random weights)")
    g.add_argument("--tokenizer", help="SentencePiece .model file (default: tokenizer.model beside the weights)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default auto: cuda when available)")
    g.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="cast weights (default: as stored)")
    g.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    g.add_argument("--output", help="write all results to this JSON file")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")

    g = p.add_argument_group("LM-Evaluation-Harness")
    g.add_argument("--tasks", type=_names, default=[], help="comma-separated lm-eval tasks or groups")
    g.add_argument("--suite", choices=("paper", "offline"),
                   help="paper: the benchmarks of the Nemotron-4 report (docs/paper.md section 6) with its shot "
                   "counts, beside its numbers (MultiPL-E with --multipl-e, FLORES with --translation "
                   "[--flores-spm]); offline: HumanEval plus --perplexity / --translation / --multipl-e if given")
    g.add_argument("--num-fewshot", type=int, help="shots for --tasks (default: each task's own)")
    g.add_argument("--limit", type=int, help="evaluate only the first N examples of each task (also HumanEval)")
    g.add_argument("--include-path", help="a folder of extra lm-eval task YAML files")
    g.add_argument("--unsafe-code", action="store_true",
                   help="allow lm-eval tasks that execute model-written code in-process (MBPP, lm-eval humaneval)")

    g = p.add_argument_group("perplexity")
    g.add_argument("--perplexity", metavar="CONFIG_OR_MANIFEST",
                   help="held-out perplexity and bits per byte per category and source: a training config (.toml) "
                   "or a token manifest (sources.json); uses each source's valid_path")
    g.add_argument("--phase", help="which phase's blend of a training config (default the first)")
    g.add_argument("--seq-len", type=int, help="window length (default the model's max_seq_len, at most 4096)")
    g.add_argument("--max-samples", type=int, default=64, help="windows per source (default 64)")

    g = p.add_argument_group("code generation (HumanEval, MultiPL-E)")
    g.add_argument("--humaneval", action="store_true", help="HumanEval pass@k, executed in a sandbox")
    g.add_argument("--multipl-e", metavar="PATH", help="MultiPL-E pass@k: its problem files (JSONL, JSONL.gz, JSON "
                   "or parquet with name, language, prompt, tests, stop_tokens), a file or a folder of them; each "
                   "program built and run by its language's toolchain in the sandbox")
    g.add_argument("--languages", type=_names, default=[], help="MultiPL-E languages, comma-separated, of "
                   "js,jl,java,lua,cpp,cs,php,sh,ts,r,scala (default: all in PATH's files)")
    g.add_argument("--samples", type=int, default=1, help="completions per problem (default 1: greedy)")
    g.add_argument("--k", type=_ints, default=[1], help="pass@k values, comma-separated (default 1)")
    g.add_argument("--temperature", type=float, help="sampling temperature when --samples > 1 (default 0.8)")
    g.add_argument("--max-new-tokens", type=int, help="tokens per completion (default 512)")

    g = p.add_argument_group("translation")
    g.add_argument("--translation", metavar="FILE", help="JSONL of {source, target} pairs, e.g. the demo corpus's "
                   "translation/en-de.jsonl; k-shot prompts, greedy until newline, corpus chrF (or spBLEU)")
    g.add_argument("--metric", choices=("chrf", "spbleu"), default="chrf",
                   help="chrf (default; needs nothing) or spbleu, the report's FLORES metric (needs --flores-spm)")
    g.add_argument("--flores-spm", metavar="FILE", help="the FLORES-101 SentencePiece model (sacreBLEU's "
                   "flores101 tokenizer, sacrebleu_tokenizer_spm.model) as a local file; --suite paper then "
                   "scores FLORES with spBLEU")
    g.add_argument("--src-lang", default="en", help="source language code (default en)")
    g.add_argument("--tgt-lang", help="target language code (default: from FILE's name, en-<tgt>.jsonl)")
    g.add_argument("--shots", type=int, default=8, help="examples in each prompt, the first of FILE (default 8)")
    g.add_argument("--max-pairs", type=int, help="score at most this many pairs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nemotron4.eval.runner import EvalOptions
    from nemotron4.eval.runner import run as run_eval

    fields = {k: v for k, v in vars(args).items() if k in EvalOptions.__dataclass_fields__}
    run_eval(EvalOptions(**fields))
    return 0
