"""`nemotron4 demo`: the Nemotron-4 recipe end to end on a CPU, one step after another, each calling the library.

    1 corpus      English / multilingual / code text from this machine,         corpus/manifest.json
                  deduplicated and filtered (`nemotron4 curate`)                 curated/manifest.json
    2 tokenizer   SentencePiece BPE, non-English upsampled                       tokenizer/tokenizer.model
    3 prepare     token files per source, translation pairs split, examples      tokens/, translation/
    4 pretrain    70/15/15 blend, batch-size ramp, warmup + cosine               checkpoints/, phase_pretrain/
    5 continued   re-weighted blend + benchmark-style examples, steep LR decay   phase_continued/
    6 evaluate    both checkpoints: held-out perplexity per category, chrF       eval.json
    7 report      samples, loss plot, summary                                    metrics.png, summary.json/.md

A step whose outputs exist is skipped, and training resumes from the run's latest checkpoint, so re-running the
command after an interruption picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nemotron4.config import ModelConfig
from nemotron4.data.indexed import dataset_exists
from nemotron4.data.manifest import Manifest
from nemotron4.demo.config import DemoConfig
from nemotron4.demo.examples import (
    catalog_pairs,
    examples_documents,
    pick_language,
    read_pairs,
    split_pairs,
    training_pairs,
    write_jsonl,
)
from nemotron4.demo.job import build_job, read_token_sources
from nemotron4.demo.report import format_table, write_summary
from nemotron4.eval.prompts import translation_prompt
from nemotron4.model import Nemotron4
from nemotron4.tokenizer import Tokenizer
from nemotron4.train.config import JobConfig
from nemotron4.train.threads import fastest_thread_count

__all__ = ["Demo"]

STEPS = 7


class Demo:
    """One demo run in `run_dir`; `run()` executes the steps and returns the summary."""

    def __init__(self, cfg: DemoConfig, run_dir: str | Path, budget: str = "full") -> None:
        self.cfg, self.run_dir, self.budget = cfg, Path(run_dir), budget
        self.seconds: dict[str, float] = {}
        self.manifest: Manifest | None = None
        self.tokenizer: Tokenizer | None = None
        self.lang = ""
        self.heldout: list[dict] = []  # translation pairs evaluated on
        self.train_pairs: list[dict] = []  # the rest: benchmark-style training examples, and the prompts' shots
        self.job: JobConfig | None = None

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def set_threads(self) -> None:
        """demo.threads, or (0) the thread count that is fastest on this machine right now."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
            return
        rates = fastest_thread_count()
        measured = ", ".join(f"{n}: {r:.0f}" for n, r in rates.items())
        print(f"   torch threads: {torch.get_num_threads()} (GFLOP/s by threads {measured})")

    @contextmanager
    def step(self, i: int, name: str, what: str) -> Iterator[None]:
        print(f"\n== [{i}/{STEPS}] {name}: {what}", flush=True)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0
        print(f"   ({self.seconds[name]:.0f} s)", flush=True)

    def run(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        print(f"nemotron4 demo: run directory {self.run_dir}, budget {self.budget}, {os.cpu_count()} cores")
        t0 = time.perf_counter()
        self.build_corpus()
        self.train_tokenizer()
        self.prepare()
        for i, phase in enumerate(self.job.phases):
            self.train_phase(i, phase.name)
        evals = self.evaluate()
        summary = self.report(evals)
        print(f"\ndone in {time.perf_counter() - t0:.0f} s; see {self.path('summary.md')}")
        return summary

    # ---- 1-3: data ------------------------------------------------------------------------------------------

    def build_corpus(self) -> None:
        from nemotron4.data.corpus import CorpusConfig, build_corpus

        manifest_path = self.path("corpus", "manifest.json")
        with self.step(1, "corpus", "English / multilingual / code text from this machine (nothing downloaded)"):
            if manifest_path.exists():
                print(f"   exists: {manifest_path}")
            else:
                cfg = CorpusConfig(output=self.path("corpus"), **_corpus_fields(self.cfg.corpus))
                build_corpus(cfg, log=lambda _: None)  # describe_corpus below says it shorter
            self.manifest = Manifest.load(manifest_path)
            for line in describe_corpus(self.manifest):
                print("   " + line)
            self.manifest = self.curate(self.manifest)

    def curate(self, manifest: Manifest) -> Manifest:
        """Exact and near deduplication and the quality filters on the corpus; the curated corpus's manifest."""
        from nemotron4.data.curate.config import CurateConfig
        from nemotron4.data.curate.pipeline import curate
        from nemotron4.data.curate.report import CurateReport
        from nemotron4.data.engine import EngineConfig, open_engine

        out = self.path("curated")
        if (out / "manifest.json").exists():
            print(f"   exists: {out / 'manifest.json'}")
            report = CurateReport.load(out / "curate_report.json")
        else:
            with open_engine(EngineConfig()) as engine:
                report = curate(manifest, out, CurateConfig.from_dict(self.cfg.curate), engine, progress=False)
        print(f"   curated ({report.engine}): exact + near (MinHash/LSH) dedup per category, quality filters")
        for line in report.format(per_source=False).splitlines():
            print("   " + line)
        return Manifest.load(out / "manifest.json")

    def train_tokenizer(self) -> None:
        from nemotron4.data.manifest import tokenizer_sample
        from nemotron4.tokenizer import TokenizerConfig, train_tokenizer

        path = self.path("tokenizer", "tokenizer.model")
        tcfg = TokenizerConfig(**self.cfg.tokenizer)
        with self.step(2, "tokenizer", f"SentencePiece BPE, {tcfg.vocab_size} pieces, non-English upsampled "
                       f"x{tcfg.non_english_upsample:g}"):
            if path.exists():
                print(f"   exists: {path}")
            else:
                docs = tokenizer_sample(self.manifest, tcfg.sample_bytes, tcfg.non_english_upsample, tcfg.seed)
                train_tokenizer(docs, path, tcfg)
            self.tokenizer = Tokenizer.load(path)
            example = "Die Datei konnte nicht geöffnet werden: 404"
            pieces = [self.tokenizer.id_to_piece(i) for i in self.tokenizer.encode(example)]
            print(f"   {path}: vocab {self.tokenizer.vocab_size}; {example!r} -> {pieces}")

    def prepare(self) -> None:
        from nemotron4.data.prepare import prepare, prepare_manifest

        tokens = self.path("tokens")
        with self.step(3, "prepare", "token files (Megatron .bin/.idx) and the translation task"):
            if not (tokens / "sources.json").exists():
                prepare_manifest(self.manifest.root / "manifest.json", self.tokenizer.path, tokens, progress=False)
            sources = read_token_sources(tokens / "sources.json")
            for cat in ("english", "multilingual", "code"):
                n = sum(s["tokens"] for s in sources if s["category"] == cat)
                print(f"   {cat:<13} {n:>11,} tokens")
            self.lang, n_pairs = pick_language(self.manifest, self.cfg.languages)
            t = self.cfg.translation
            self.heldout, rest = split_pairs(read_pairs(self.manifest, self.lang), t.heldout_pairs, t.max_chars)
            locale_root = Path(self.cfg.corpus.get("locale_root", "/usr/share/locale"))
            catalogs = catalog_pairs(locale_root, self.lang, t.max_chars) if t.from_catalogs else iter(())
            self.train_pairs = training_pairs(itertools.chain(rest, catalogs), self.heldout)
            train = self.train_pairs
            write_jsonl(self.path("translation", "heldout.jsonl"), self.heldout)
            bench = f"translation-en-{self.lang}"
            for split, pairs, copies in (("", train, t.copies), (".heldout", self.heldout, 1)):
                prefix = tokens / f"{bench}{split}"
                if not dataset_exists(prefix):
                    docs = examples_documents(pairs, "en", self.lang, t.examples_per_document, copies)
                    jsonl = write_jsonl(self.path("translation", f"examples{split}.jsonl"), [{"text": d} for d in docs])
                    prepare([jsonl], self.tokenizer.path, prefix, progress=False)
            sources.append({"name": bench, "category": "benchmark", "path": str(tokens / bench),
                            "valid_path": str(tokens / f"{bench}.heldout"), "tokens": _num_tokens(tokens / bench)})
            print(f"   translation en->{self.lang} (the best covered of {', '.join(self.cfg.languages)}: {n_pairs} "
                  f"pairs kept aside by the corpus): {len(self.heldout)} plain pairs held out for evaluation; "
                  f"{len(train):,} others (from those and the language's catalogs, none sharing a side with a "
                  f"held-out pair) written as benchmark-style examples, {sources[-1]['tokens']:,} tokens")
            self.job = build_job(self.cfg.job, sources, self.cfg.reweight, self.lang, self.tokenizer.vocab_size)

    # ---- 4-5: training --------------------------------------------------------------------------------------

    def train_phase(self, i: int, name: str) -> None:
        """Train phases[: i + 1] (resuming the run) and export the weights as they are at this phase's end."""
        from nemotron4.train.trainer import Trainer
        from nemotron4.weights import save_weights

        phase = self.job.phases[i]
        what = {0: f"the 70/15/15 blend, batch-size ramp {phase.batch_size} sequences",
                1: f"re-weighted blend + benchmark-style examples, LR decaying steeply to {phase.min_lr:g}"}.get(i, "")
        export = self.path(f"phase_{name}")
        with self.step(4 + i, name, what):
            print("   blend: " + ", ".join(f"{c} {w:g}" for c, w in phase.blend.categories.items())
                  + f" ({len(phase.blend.sources)} sources)")
            if i == 0:
                print("   model: " + describe_model(self.job.model.model_config()))
            if (export / "model.safetensors").exists():
                print(f"   exists: {export}")
            else:
                self.set_threads()
                trainer = Trainer.create(dataclasses.replace(self.job, phases=self.job.phases[: i + 1]), self.run_dir)
                trainer.run()
                save_weights(trainer.model, export)
                shutil.copyfile(self.tokenizer.path, export / "tokenizer.model")
            p = phase_stats(self.run_dir, name)
            print(f"   {p['steps']} steps, {p['tokens']:,} tokens, batch {p['batch_sizes']}, "
                  f"loss {p['first_loss']:.2f} -> {p['last_loss']:.2f}, held-out {_fmt(p['val_loss'])} -> {export}")

    # ---- 6-7: evaluation and report -------------------------------------------------------------------------

    def evaluate(self) -> dict[str, dict[str, Any]]:
        from nemotron4.eval.perplexity import evaluate_perplexity
        from nemotron4.eval.translation import evaluate_translation
        from nemotron4.train.data import to_blend_config
        from nemotron4.weights import load_weights

        out_path = self.path("eval.json")
        exports = [self.path(f"phase_{p.name}", "model.safetensors") for p in self.job.phases]
        e = self.cfg.eval
        with self.step(6, "evaluate", f"each phase's checkpoint: held-out perplexity per category, {e.shots}-shot "
                       f"en->{self.lang} chrF on {len(self.heldout)} held-out pairs"):
            if out_path.exists() and all(out_path.stat().st_mtime > p.stat().st_mtime for p in exports):
                evals = json.loads(out_path.read_text())
                print(f"   exists: {out_path}")
            else:
                self.set_threads()
                blend = to_blend_config(self.job.phases[-1].blend)  # holds every category, benchmark included
                evals = {}
                for phase in self.job.phases:
                    model = load_weights(self.path(f"phase_{phase.name}")).eval()
                    ppl = evaluate_perplexity(model, blend, self.job.train.seq_len,
                                              max_samples_per_source=e.max_samples_per_source,
                                              batch_size=e.batch_size, tokenizer=self.tokenizer, device="cpu")
                    tr = evaluate_translation(model, self.tokenizer, self.heldout, src_lang="en", tgt_lang=self.lang,
                                              shots=e.shots, shot_pairs=self.train_pairs,
                                              max_new_tokens=e.max_new_tokens, seed=0, batch_size=e.batch_size)
                    evals[phase.name] = {"perplexity": ppl, "translation": tr}
                out_path.write_text(json.dumps(evals, indent=1, ensure_ascii=False) + "\n")
            print()
            for line in format_table(evals, self.lang).splitlines():
                print("   " + line)
        return evals

    def report(self, evals: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from nemotron4.inference import generate
        from nemotron4.train.plot import plot_run
        from nemotron4.weights import load_weights

        final = self.job.phases[-1].name
        with self.step(7, "report", f"samples from the {final} model, loss plot, summary"):
            model = load_weights(self.path(f"phase_{final}")).eval()
            s = self.cfg.samples
            prompts = [p.replace("{translation}", self._translation_prompt()) for p in s.prompts]
            outs = generate(model, self.tokenizer, prompts, s.max_new_tokens, add_bos=False,
                            temperature=s.temperature, top_k=s.top_k, seed=0)
            samples = [{"prompt": p, "completion": o} for p, o in zip(prompts, outs, strict=True)]
            bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
            for sample in samples:
                text = f"{sample['prompt']}{bold}{sample['completion']}{plain}"
                print("   --- " + text.replace("\n", "\n       "))
            plot = plot_run(self.run_dir)
            print(f"   {plot}")
        names = list(evals)
        examples = [{"source": ex["source"], "reference": ex["target"],
                     **{n: evals[n]["translation"]["examples"][k]["output"] for n in names}}
                    for k, ex in enumerate(evals[names[0]]["translation"]["examples"][:8])]
        summary = {
            "budget": self.budget, "run_dir": str(self.run_dir), "language": self.lang,
            "model": {"params": model.param_counts()["total"], **model.cfg.to_dict()},
            "phases": [phase_stats(self.run_dir, p.name) for p in self.job.phases],
            "eval": evals, "translation_examples": examples, "samples": samples, "plot": str(plot),
            "seconds": self.seconds,
        }
        for path in write_summary(self.run_dir, summary):
            print(f"   {path}")
        return summary

    def _translation_prompt(self) -> str:
        shots = [(p["source"], p["target"]) for p in self.heldout[1:3]]
        return translation_prompt("en", self.lang, shots, self.heldout[0]["source"])


def describe_model(cfg: ModelConfig) -> str:
    """"4,985,344 parameters (2,888,192 non-embedding): dim 256, 4 layers, 4 heads / 2 KV heads, ..." """
    with torch.device("meta"):
        counts = Nemotron4(cfg).param_counts()
    return (f"{counts['total']:,} parameters ({counts['non_embedding']:,} non-embedding): dim {cfg.dim}, "
            f"{cfg.n_layers} layers, {cfg.n_heads} heads / {cfg.n_kv_heads} KV heads of {cfg.head_dim}, "
            f"squared-ReLU MLP {cfg.ffn_dim}, vocabulary {cfg.vocab_size}")


def _corpus_fields(table: dict[str, Any]) -> dict[str, Any]:
    """CorpusConfig keyword arguments from TOML values: folder names become Paths."""
    out = dict(table)
    for key, value in table.items():
        if key == "code_roots":
            out[key] = tuple(Path(v) for v in value)
        elif key.endswith("_root") or key == "python_stdlib":
            out[key] = Path(value)
    return out


def describe_corpus(m: Manifest, top: int = 4) -> list[str]:
    """A few lines on what the corpus holds: per category the sources, documents, size and the largest sources."""
    lines = []
    for cat in ("english", "multilingual", "code"):
        members = sorted((s for s in m.sources if s.category == cat), key=lambda s: -s.bytes)
        size = sum(s.bytes for s in members)
        biggest = ", ".join(f"{s.name} {s.bytes / 1e3:.0f} kB" for s in members[:top])
        more = f", ... {len(members) - top} more" if len(members) > top else ""
        lines.append(f"{cat:<13} {len(members):>3} sources {sum(s.docs for s in members):>6} docs "
                     f"{size / 1e6:6.2f} MB  ({biggest}{more})")
    pairs = sorted(m.translation, key=lambda t: -t["pairs"])
    most = ", ".join(f"{t['pair']} {t['pairs']}" for t in pairs[:top])
    lines.append(f"translation   {len(pairs)} language pairs, {sum(t['pairs'] for t in pairs):,} en->X pairs kept "
                 f"aside (most: {most})")
    return lines


def phase_stats(run_dir: Path, name: str) -> dict[str, Any]:
    """Steps, tokens, batch sizes, first/last loss, last held-out loss and seconds of one phase, from metrics.jsonl."""
    from nemotron4.train.metrics import read_metrics

    recs = [r for r in read_metrics(run_dir) if r["phase"] == name]
    starts = [0] + [r["phase_tokens"] for r in recs[:-1]]
    step_tokens = [r["phase_tokens"] - start for r, start in zip(recs, starts, strict=True)]
    return {
        "name": name, "steps": len(recs), "tokens": recs[-1]["phase_tokens"] if recs else 0,
        "batch_sizes": "->".join(str(b) for b in dict.fromkeys(r["batch_size"] for r in recs)),
        "first_loss": recs[0]["loss"] if recs else float("nan"),
        "last_loss": recs[-1]["loss"] if recs else float("nan"),
        "val_loss": next((r["val_loss"] for r in reversed(recs) if "val_loss" in r), {}),
        "seconds": sum(n / r["tokens_per_s"] for n, r in zip(step_tokens, recs, strict=True)),
    }


def _num_tokens(prefix: Path) -> int:
    from nemotron4.data.indexed import IndexedDataset

    return IndexedDataset(prefix).num_tokens


def _fmt(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in losses.items()) or "-"
