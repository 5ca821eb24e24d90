"""What `nemotron4 eval` runs: loads the model and tokenizer once, runs the asked-for evaluations, prints a table
for each and returns one JSON-able dict. The command module only maps flags to `EvalOptions`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nemotron4.errors import UserError
from nemotron4.eval import report

__all__ = ["EvalOptions", "blend_from", "run"]


@dataclass
class EvalOptions:
    """Everything `nemotron4 eval` can be asked for (see its --help)."""

    model: str
    tokenizer: str | None = None
    device: str = "auto"  # cuda when available
    dtype: str | None = None
    batch_size: int = 8
    output: str | None = None
    tasks: list[str] = field(default_factory=list)
    num_fewshot: int | None = None
    limit: int | None = None
    include_path: str | None = None
    unsafe_code: bool = False
    suite: str | None = None
    perplexity: str | None = None
    phase: str | None = None
    seq_len: int | None = None
    max_samples: int = 64
    humaneval: bool = False
    multipl_e: str | None = None
    languages: list[str] = field(default_factory=list)
    samples: int = 1
    k: list[int] = field(default_factory=lambda: [1])
    temperature: float | None = None
    max_new_tokens: int | None = None
    translation: str | None = None
    metric: str = "chrf"
    flores_spm: str | None = None
    src_lang: str = "en"
    tgt_lang: str | None = None
    shots: int = 8
    max_pairs: int | None = None
    progress: bool = True


def blend_from(spec: str, phase: str | None = None) -> Any:
    """A BlendConfig from a training config (TOML; `phase` by name, default the first) or from the token manifest
    (`sources.json`) that `nemotron4 prepare --manifest` writes."""
    from nemotron4.data.blend import BlendConfig

    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--perplexity {spec}: no such file (a training config .toml or a token manifest .json)")
    if path.suffix == ".json":
        # Shares do not matter for held-out scores: give every category the manifest has one, and no others.
        try:
            present = [s["category"] for s in json.loads(path.read_text())["sources"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"--perplexity {spec}: not a token manifest with sources ({e})") from e
        return BlendConfig.from_token_manifest(path, categories=dict.fromkeys(present, 1.0))
    from nemotron4.train.config_io import load_job
    from nemotron4.train.data import to_blend_config

    job = load_job(path)
    phases = {p.name: p for p in job.phases}
    if phase is not None and phase not in phases:
        raise UserError(f"--phase {phase}: {path} has phases {', '.join(phases)}")
    return to_blend_config(phases[phase].blend if phase else job.phases[0].blend)


def _tgt_lang(opts: EvalOptions) -> str:
    if opts.tgt_lang:
        return opts.tgt_lang
    stem = Path(opts.translation or "").stem  # translation/en-de.jsonl -> de
    src, sep, tgt = stem.partition("-")
    if sep and tgt:
        return tgt
    raise UserError(f"--translation {opts.translation}: pass --tgt-lang (the file name is not <src>-<tgt>.jsonl)")


def run(opts: EvalOptions, log: Any = print) -> dict[str, Any]:
    """Run what `opts` asks for; print tables; write opts.output (JSON) if set. Returns the results."""
    modes = [opts.tasks, opts.suite, opts.perplexity, opts.humaneval, opts.translation, opts.multipl_e]
    if not any(modes):
        raise UserError("nothing to evaluate: give --tasks, --suite, --perplexity, --humaneval, --multipl-e or "
                        "--translation")
    if opts.suite not in (None, "paper", "offline"):
        raise UserError(f"--suite {opts.suite}: choose paper or offline")
    _check_inputs(opts)  # bad files and flags fail before the model loads
    if opts.tasks or opts.suite == "paper":
        from nemotron4.eval.offline import check_tasks, go_offline_if_unreachable

        # Offline: the switches set before lm-eval / datasets are imported, the tasks without data named and left out.
        go_offline_if_unreachable()
        if opts.tasks:
            opts = replace(opts, tasks=check_tasks(opts.tasks, opts.include_path, log))
            if not opts.tasks and not any(modes[1:]):
                raise UserError("none of the --tasks can run here: their data is not available offline (see above)")
    import torch

    from nemotron4.weights import load_config, load_model, load_tokenizer, pick_device

    if not opts.progress:  # lm-eval and datasets draw their own tqdm bars: --no-progress silences those too
        import os

        os.environ["TQDM_DISABLE"] = "1"
    opts.device = str(pick_device(opts.device))
    dtype = getattr(torch, opts.dtype) if opts.dtype else None
    tokenizer = load_tokenizer(opts.model, load_config(opts.model).vocab_size, opts.tokenizer)  # before the weights
    model = load_model(opts.model, device=opts.device, dtype=dtype).eval()
    out: dict[str, Any] = {"model": opts.model}

    if opts.perplexity:
        from nemotron4.eval.perplexity import evaluate_perplexity

        seq_len = opts.seq_len or min(model.cfg.max_seq_len, 4096)
        res = evaluate_perplexity(model, blend_from(opts.perplexity, opts.phase), seq_len,
                                  max_samples_per_source=opts.max_samples, batch_size=opts.batch_size,
                                  tokenizer=tokenizer, device=opts.device, progress=opts.progress)
        log(f"\nheld-out perplexity (seq_len {seq_len})\n" + report.perplexity_table(res))
        out["perplexity"] = res
    if opts.translation:
        from nemotron4.eval.translation import evaluate_translation

        tgt = _tgt_lang(opts)
        metric = "spbleu" if opts.suite == "paper" and opts.flores_spm else opts.metric
        res = evaluate_translation(model, tokenizer, opts.translation, src_lang=opts.src_lang, tgt_lang=tgt,
                                   shots=opts.shots, max_pairs=opts.max_pairs, batch_size=opts.batch_size,
                                   progress=opts.progress, metric=metric, spm_model=opts.flores_spm)
        scores = f"chrF {res['chrf']:.2f}" + (f", spBLEU {res['spbleu']:.2f}" if "spbleu" in res else "")
        log(f"\ntranslation {opts.src_lang}->{tgt} ({res['shots']}-shot, {res['n']} pairs): {scores}")
        out["translation"] = res
    if opts.humaneval or opts.suite == "offline":
        out["humaneval"] = _humaneval(model, tokenizer, opts, log)
    if opts.multipl_e:
        out["multipl_e"] = _multipl_e(model, tokenizer, opts, log)
    if opts.tasks or opts.suite == "paper":
        out.update(_harness(model, tokenizer, opts, out, log))
    if opts.output:
        Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.output).write_text(json.dumps(out, indent=2, default=str) + "\n")
        log(f"\nwrote {opts.output}")
    return out


def _check_inputs(opts: EvalOptions) -> None:
    if opts.metric == "spbleu" and not opts.flores_spm:
        raise UserError("--metric spbleu needs --flores-spm FILE: the FLORES-101 SentencePiece model "
                        "(sacrebleu_tokenizer_spm.model, from dl.fbaipublicfiles.com/fairseq/models/flores/)")
    if opts.flores_spm and not Path(opts.flores_spm).is_file():
        raise UserError(f"--flores-spm {opts.flores_spm}: no such file (the FLORES-101 SentencePiece model)")
    if opts.languages and not opts.multipl_e:
        raise UserError("--languages selects MultiPL-E languages: give --multipl-e PATH too")
    if opts.multipl_e:
        from nemotron4.eval.languages import resolve
        from nemotron4.eval.multipl_e import load_problems

        try:
            resolve(opts.languages)
        except ValueError as e:
            raise UserError(f"--languages: {e}") from None
        load_problems(opts.multipl_e, opts.languages or None)


def _humaneval(model: Any, tokenizer: Any, opts: EvalOptions, log: Any) -> dict[str, Any]:
    from nemotron4.eval.humaneval import evaluate_humaneval

    extra = {"max_new_tokens": opts.max_new_tokens} if opts.max_new_tokens else {}
    res = evaluate_humaneval(model, tokenizer, samples=opts.samples, k=opts.k, temperature=opts.temperature,
                             batch_size=opts.batch_size, limit=opts.limit, progress=opts.progress, **extra)
    scores = ", ".join(f"{k} {v:.3f}" for k, v in res.items() if k.startswith("pass@"))
    log(f"\nHumanEval ({res['n_problems']} problems, {res['samples']} samples each, sandbox: {res['sandbox']}): "
        f"{scores}")
    return res


def _multipl_e(model: Any, tokenizer: Any, opts: EvalOptions, log: Any) -> dict[str, Any]:
    from nemotron4.eval.multipl_e import evaluate_multipl_e

    extra = {"max_new_tokens": opts.max_new_tokens} if opts.max_new_tokens else {}
    res = evaluate_multipl_e(model, tokenizer, opts.multipl_e, languages=opts.languages or None,
                             samples=opts.samples, k=opts.k, temperature=opts.temperature,
                             batch_size=opts.batch_size, limit=opts.limit, progress=opts.progress, log=log, **extra)
    ks = [f"pass@{k}" for k in opts.k]
    rows = [[code, r["language"], *(r.get(k) for k in ks), r["paper"], r["status"]]
            for code, r in res["languages"].items()]
    rows.append(["avg", "-", *(res[k] for k in ks), res["paper_average"],
                 "all 11 languages" if res["complete"] else "over the languages that ran"])
    log(f"\nMultiPL-E ({res['samples']} samples each, sandbox: {res['sandbox']}); report: Nemotron-4 15B pass@1 "
        "(its Table 6 numbers average 24.9)\n" + report.table(["lang", "language", *ks, "report", "status"], rows))
    return res


def _harness(model: Any, tokenizer: Any, opts: EvalOptions, out_so_far: dict, log: Any) -> dict[str, Any]:
    try:
        from nemotron4.eval.lm_eval import Nemotron4LM
        from nemotron4.eval.lm_eval_run import run_paper_suite, run_tasks, task_manager
    except ImportError as e:
        raise UserError(f"LM-Evaluation-Harness is not installed ({e}): pip install 'nemotron4[eval]'") from e
    lm = Nemotron4LM(model, tokenizer=tokenizer, batch_size=opts.batch_size, device=opts.device)
    tm = task_manager(opts.include_path)
    out: dict[str, Any] = {}
    if opts.tasks:
        unknown = [t for t in opts.tasks if t not in tm.all_tasks]
        if unknown:
            raise UserError(f"unknown lm-eval tasks {unknown} (list them with `lm-eval ls tasks`)")
        res = run_tasks(lm, opts.tasks, num_fewshot=opts.num_fewshot, limit=opts.limit, tm=tm,
                        unsafe_code=opts.unsafe_code)
        rows = [[t, k, v] for t, m in res["results"].items() for k, v in m.items()
                if isinstance(v, int | float) and "stderr" not in k]
        log("\n" + report.table(["task", "metric", "value"], rows))
        out["lm_eval"] = res["results"]
    if opts.suite == "paper":
        def humaneval() -> tuple[float, str]:
            res = out_so_far.get("humaneval") or _humaneval(model, tokenizer, opts, log)
            out_so_far["humaneval"] = res  # its samples go into the output too
            return 100.0 * res["pass@1"], "ok (nemotron4 sandboxed runner)"

        runners = {"humaneval": humaneval}
        if "multipl_e" in out_so_far:
            m = out_so_far["multipl_e"]
            ran = [c for c, r in m["languages"].items() if r["status"] == "ok"]
            runners["multipl-e"] = lambda: (100.0 * m["pass@1"], f"ok ({len(ran)} of 11 languages: {','.join(ran)})")
        if "translation" in out_so_far:
            t = out_so_far["translation"]
            runners["translation"] = lambda: (t["score"], "ok (spBLEU)" if t["metric"] == "spbleu"
                                              else "ok (chrF, not the report's spBLEU: give --flores-spm)")
        rows = run_paper_suite(lm, limit=opts.limit, tm=tm, unsafe_code=opts.unsafe_code, runners=runners,
                               log=log)
        log("\nNemotron-4 15B evaluation suite (docs/paper.md section 6), scores in percent\n"
            + report.paper_table(rows))
        out["paper_suite"] = rows
    return out
