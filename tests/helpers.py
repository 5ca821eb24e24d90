"""What tests share, in one module (import it: `from helpers import ...`; tests/ is on sys.path). The conftest.py
files hold fixtures only and import from here.

- made-up text and tiny tokenizers: fake_docs, train_fake_tokenizer, DATA_WORDS / EVAL_WORDS (+ GERMAN), write_jsonl
- tiny token files with learnable structure and the tiny recipe: write_tiny_corpus, markov_tokens, tiny_job, TINY_TOML
- running commands: nemotron4_cmd, run_cli (a subprocess), run_data_command (argparse, in process),
  train_cli (the reliability suite's short run), launch_workers (torchrun of tests/distributed/worker.py)
- checks: assert_clean_error, assert_same_run, no_steps_taken
- eval: random_model, write_mc_task
- curation: write_corpus (a corpus folder + manifest), run_curate, kept, removed_positions
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import math
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

CODE = ["def f(x):\n    return x + 1\n", "for i in range(10):\n\tprint(i)\n", "if (a == b) {\n  x = 42;\n}\n"]


def fake_docs(n: int, words: tuple[str, ...], seed: int = 0, max_words: int = 120) -> list[str]:
    """`n` documents of 5..max_words words drawn from `words`, then "Year NNNN." and one of `CODE`."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, max_words))).capitalize()
            + f". Year {rng.randint(1000, 2999)}.\n" + rng.choice(CODE) for _ in range(n)]


def train_fake_tokenizer(path, words: tuple[str, ...], german: tuple[str, ...], max_words: int):
    """A 400-piece tokenizer trained on English-like and German-like fake documents plus some non-ASCII text."""
    from nemotron4.tokenizer import TokenizerConfig, train_tokenizer

    docs = (fake_docs(400, words, 0, max_words) + fake_docs(100, german, 1, max_words)
            + ["Ünïcödé café naïve — “quotes”"] * 5)
    train_tokenizer(docs, path, TokenizerConfig(vocab_size=400, num_threads=2))
    return path


# ---- words and documents --------------------------------------------------------------------------------------------

DATA_WORDS = (
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his",
    "her", "it", "an", "were", "which", "be", "this", "are", "not", "or", "have", "had", "one", "their", "has",
    "but", "all", "new", "first", "also", "can", "after", "more", "other", "two", "time", "into", "some", "about",
    "when", "people"
)
DATA_GERMAN = (
    "der", "die", "und", "in", "den", "von", "zu", "das", "mit", "sich", "des", "auf", "für", "ist", "im", "dem",
    "nicht", "ein", "eine", "als", "auch", "es", "an"
)
EVAL_WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "it",
              "an", "were", "which", "be", "this", "are", "not", "or", "have", "one", "two", "time", "people", "water")
EVAL_GERMAN = ("der", "die", "und", "in", "den", "von", "zu", "das", "mit", "sich", "auf", "für", "ist", "nicht", "ein")


def data_docs(n: int, seed: int = 0, words: tuple[str, ...] = DATA_WORDS) -> list[str]:
    return fake_docs(n, words, seed, max_words=120)


def eval_docs(n: int, seed: int = 0, words: tuple[str, ...] = EVAL_WORDS) -> list[str]:
    return fake_docs(n, words, seed, max_words=80)


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({field: d}) + "\n")
    return path


# ---- tiny token files and the tiny recipe ---------------------------------------------------------------------------
# Each source is a Markov chain over its own 64-token range in which a token is followed by one of two successors
# (p = 0.8 / 0.2). Unigram entropy is about ln 64 = 4.16 nats; the chain's conditional entropy is H(0.8, 0.2) =
# 0.50 nats, the floor a model can reach.

REPO = Path(__file__).resolve().parents[1]
TINY_TOML = REPO / "configs" / "tiny.toml"
STATES = 64
CHAIN_ENTROPY = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
SOURCES = {"web": 0, "books": 64, "code": 128, "qa": 192}  # token offset of each source's chain


def markov_tokens(n: int, offset: int, seed: int) -> np.ndarray:
    """n tokens of the chain (transition table fixed by `offset`, sampling by `seed`)."""
    table = np.random.default_rng(offset).permutation(STATES * 2).reshape(STATES, 2) % STATES
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.int64)
    state = 0
    for i, pick in enumerate(rng.random(n) < 0.2):
        state = table[state, int(pick)]
        out[i] = state
    return out + offset


def unigram_entropy(tokens: np.ndarray) -> float:
    p = np.bincount(tokens) / tokens.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def write_source(prefix: Path, tokens: np.ndarray, doc_len: int = 300) -> None:
    from nemotron4.data.indexed import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(prefix, dtype=np.uint16)
    for start in range(0, tokens.size, doc_len):
        builder.add_document(tokens[start : start + doc_len])
    builder.finalize()


def write_tiny_corpus(root: Path, train_tokens: int = 30_000, valid_tokens: int = 3_000) -> Path:
    """The token files configs/tiny.toml names, under root/data/tiny."""
    for i, (name, offset) in enumerate(SOURCES.items()):
        write_source(root / "data/tiny" / name, markov_tokens(train_tokens, offset, seed=i))
        write_source(root / "data/tiny" / f"{name}_valid", markov_tokens(valid_tokens, offset, seed=100 + i))
    return root


def tiny_job(corpus: Path, *overrides: str) -> Any:
    """configs/tiny.toml with its token-file paths made absolute under `corpus`, plus overrides."""
    from nemotron4.train.config_io import load_job

    job = load_job(TINY_TOML, overrides)
    for phase in job.phases:
        for s in phase.blend.sources:
            s.path = str(corpus / s.path)
            s.valid_path = str(corpus / s.valid_path) if s.valid_path else None
    return job


# The tiny recipe cut short, for in-process trainer tests: 8 + 2 steps of 8 x 64 and 16 x 64 tokens.
QUICK = ("--phases.0.tokens", "4096", "--phases.0.warmup_tokens", "1024", "--phases.1.tokens", "2048",
         "--metrics.eval_interval", "0")

# The reliability suite's run (docs/reliability.md), 8 steps: 4 of 8 x 64 tokens, the ramp's switch to 16 at 2048
# tokens, 2 of 16 (pretrain ends: checkpoint at 6), then 2 of 16 in the continued phase. Checkpoints every 2 steps
# and at each phase end; held-out loss at phase ends.
SHORT = ("--phases.0.tokens", "4096", "--phases.0.batch_size", '"0:8 2048:16"', "--phases.0.warmup_tokens", "1024",
         "--phases.1.tokens", "2048", "--checkpoint.interval", "2", "--checkpoint.keep_last", "0",
         "--metrics.eval_interval", "0", "--metrics.eval_batches", "1")
STEPS = 8
COMPARED = ("step", "phase", "loss", "lr", "batch_size", "tokens", "grad_norm", "val_loss", "skipped")

# ---- running commands -----------------------------------------------------------------------------------------------


def nemotron4_cmd(*args: str) -> list[str]:
    """`nemotron4 ...` as a subprocess command line (the console script's entry point, this interpreter)."""
    return [sys.executable, "-c", "import sys; from nemotron4.cli import main; sys.exit(main())", *args]


def run_cli(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(nemotron4_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"nemotron4 {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


DATA_COMMANDS = ("corpus", "tokenizer", "prepare", "data")


def run_data_command(argv: list[str]) -> int:
    """Run a data subcommand through argparse, as `nemotron4 <cmd>` would (only the data command modules)."""
    parser = argparse.ArgumentParser(prog="nemotron4")
    sub = parser.add_subparsers(dest="command", required=True)
    for m in DATA_COMMANDS:
        importlib.import_module(f"nemotron4.commands.{m}").add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def train_cli(cwd: Path, run_dir: Path, *overrides: str, faults: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """`nemotron4 train` in a subprocess on the tiny recipe + SHORT + overrides, as a user would run it, with
    NEMOTRON4_FAULT_<k>=<v> for each fault a reliability test injects."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update({f"NEMOTRON4_FAULT_{k}": v for k, v in (faults or {}).items()})
    args = ["train", "--config", str(TINY_TOML), "--run-dir", str(run_dir), *SHORT, *overrides]
    return subprocess.run(nemotron4_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


WORKER = REPO / "tests" / "distributed" / "worker.py"

# 5 steps of the tiny recipe in two phases: 2 x 8 sequences, 2 x 16 (the ramp's batch change at 1024 tokens), then
# 1 x 16 in the continued phase. micro-batch 2, so dp = 4 still accumulates 2 micro-batches at 16. Checkpoints at
# step 3 and at each phase end; held-out loss at each phase end.
DIST_SHORT = (
    "--train.micro_batch_size", "2", "--phases.0.tokens", "3072", "--phases.0.batch_size", '"0:8 1024:16"',
    "--phases.0.warmup_tokens", "1024", "--phases.1.tokens", "1024", "--checkpoint.interval", "3",
    "--checkpoint.keep_last", "0", "--metrics.progress_bar", "false",
)


def launch_workers(cwd: Path, run_dir: Path, nproc: int, *overrides: str) -> dict[str, Any]:
    """Train DIST_SHORT + overrides with `nproc` processes of tests/distributed/worker.py (torchrun when > 1);
    return the metrics and each rank's record."""
    from nemotron4.train.metrics import read_metrics

    args = ["--config", str(TINY_TOML), "--run-dir", str(run_dir), *DIST_SHORT, *overrides]
    cmd = [sys.executable, str(WORKER), *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(WORKER), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[-len(args) - 1:])} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    ranks = [json.loads(p.read_text()) for p in sorted((run_dir / "optim").glob("rank*.json"))]
    return {"records": read_metrics(run_dir), "ranks": ranks, "run_dir": run_dir}


def launches_training(args: Any) -> bool:
    """Whether a subprocess command line trains a model (the `nemotron4 train` / `demo` command, a torchrun job or
    the distributed worker): such tests must be marked `slow` (tests/conftest.py holds them to it)."""
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
    return any(a in ("train", "demo", "torch.distributed.run") or a.endswith("worker.py") for a in argv)


# ---- checks ---------------------------------------------------------------------------------------------------------


def latest(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "latest").read_text().strip()


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one `nemotron4 <cmd>: error: ...` line naming each fragment, no traceback."""
    assert proc.returncode == 2, f"exit code {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in proc.stderr, f"{fragment!r} not in:\n{proc.stderr[-3000:]}"


def assert_same_run(reference: Path, resumed: Path) -> None:
    """Every step's record and the final weights are bitwise those of the reference run."""
    import torch

    from nemotron4.checkpoint import load_model_from_checkpoint
    from nemotron4.train.metrics import read_metrics

    want, got = read_metrics(reference), read_metrics(resumed)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for a, b in zip(want, got, strict=True):
        assert {k: a.get(k) for k in COMPARED} == {k: b.get(k) for k in COMPARED}, f"step {a['step']} differs"
    ref_model, res_model = load_model_from_checkpoint(reference), load_model_from_checkpoint(resumed)
    for (name, p), q in zip(ref_model.state_dict().items(), res_model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def no_steps_taken(run_dir: Path) -> bool:
    """Nothing was trained: no metrics record and no checkpoint."""
    from nemotron4.train.metrics import read_metrics

    metrics = run_dir / "metrics.jsonl"
    return (not metrics.exists() or not read_metrics(metrics)) and not (run_dir / "checkpoints").exists()


# ---- evaluation -----------------------------------------------------------------------------------------------------


def small_hf_config(vocab_size: int, max_position_embeddings: int) -> Any:
    """A two-layer `transformers.NemotronConfig` with GQA (6 heads, 2 KV heads, head_dim 20 != hidden / heads)
    and partial RoPE: the shape the parity tests compare against."""
    import transformers

    return transformers.NemotronConfig(vocab_size=vocab_size, hidden_size=48, intermediate_size=96,
                                       num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, head_dim=20,
                                       partial_rotary_factor=0.5, max_position_embeddings=max_position_embeddings,
                                       tie_word_embeddings=False)


def random_model(vocab_size: int, seed: int = 0, std: float = 0.3) -> Any:
    """The tiny flavour with weights larger than its init: sharper, more varied next-token distributions."""
    import torch

    from nemotron4 import ModelConfig, build_model

    model = build_model(ModelConfig.from_name("tiny", vocab_size=vocab_size), seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def write_mc_task(root: Path, n: int = 24, seed: int = 0) -> Path:
    """A local multiple-choice lm-eval task (JSONL data + task YAML) under root; returns the include path."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        q = " ".join(rng.choice(EVAL_WORDS) for _ in range(rng.randint(3, 12)))
        choices = [" ".join(rng.choice(EVAL_WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)]
        docs.append({"question": f"Question: {q}\nAnswer:", "choices": choices, "answer": rng.randrange(4)})
    root.mkdir(parents=True, exist_ok=True)
    data = root / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root


# ---- a fake machine for the corpus builder --------------------------------------------------------------------------


def write_mo(path: Path, pairs: dict[str, str]) -> None:
    """A GNU .mo file (little-endian), as msgfmt writes it."""
    pairs = {"": "Content-Type: text/plain; charset=UTF-8\n", **pairs}
    keys = sorted(pairs)
    ids, strs = [k.encode() for k in keys], [pairs[k].encode() for k in keys]
    n = len(keys)
    start = 28 + 16 * n
    blob, otab, ttab = b"", [], []
    for s in ids:
        otab.append((len(s), start + len(blob)))
        blob += s + b"\0"
    for s in strs:
        ttab.append((len(s), start + len(blob)))
        blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + b"".join(struct.pack("<2I", *e) for e in otab + ttab) + blob)


MAN = """.\\" comment
.TH FOO 1
.SH NAME
foo \\- frobnicate the \\fBbar\\fR
.SH DESCRIPTION
.B foo
reads \\fIfiles\\fP and writes them.
"""


def fake_tree(root: Path) -> Any:
    """A tree shaped like a machine's docs, man pages, catalogs and code; its nemotron4.data.corpus.CorpusConfig."""
    from nemotron4.data.corpus import CorpusConfig

    (root / "py" / "pydoc_data").mkdir(parents=True)
    (root / "py" / "pydoc_data" / "topics.py").write_text("topics = {'assert': 'The assert statement is ...'}\n")
    for i in range(4):
        doc = f"Module {i} does a useful thing for the reader, well documented."
        (root / "py" / f"mod{i}.py").write_text(f'"""{doc}"""\ndef f{i}(x):\n    return x * {i}\n')
    doc = root / "doc" / "pkg"
    doc.mkdir(parents=True)
    (doc / "README").write_text("This package does things.\n")
    (doc / "copyright").write_text("Copyright 2020 Someone. Licensed under terms.\n")
    (doc / "changelog.gz").write_bytes(gzip.compress(b"pkg (1.0) unstable; urgency=low\n  * First release.\n"))
    (doc / "blob.txt").write_bytes(b"\x00\x01binary")  # skipped: binary
    (doc / "huge.txt").write_text("x" * 5000)  # skipped: over max_file_bytes
    (doc / "secret.txt").symlink_to(doc / "README")  # skipped: symlink
    man = root / "man"
    (man / "man1").mkdir(parents=True)
    with gzip.open(man / "man1" / "foo.1.gz", "wb") as f:
        f.write(MAN.encode())
    (man / "de" / "man1").mkdir(parents=True)
    with gzip.open(man / "de" / "man1" / "foo.1.gz", "wb") as f:
        f.write(b".TH FOO 1\n.SH NAME\nfoo \\- frobniziert den Balken\n")
    for lang, words in {"de": ("Datei", "Fenster"), "fr": ("fichier", "fenêtre"), "en_GB": ("file", "window")}.items():
        pairs = {f"Open the {e} number {k} now": f"{w} {k} öffnen" for k in range(40) for e, w in [("file", words[0])]}
        pairs["Close window"] = words[1]
        write_mo(root / "locale" / lang / "LC_MESSAGES" / "app.mo", pairs)
    (root / "locale" / "xx" / "LC_MESSAGES").mkdir(parents=True)
    (root / "locale" / "xx" / "LC_MESSAGES" / "bad.mo").write_bytes(b"garbage")
    (root / "include").mkdir()
    (root / "include" / "a.h").write_text("#define A 1\nint a(void);\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\necho hello\n")
    (root / "bin" / "run").write_text("#!/usr/bin/env perl\nprint 1;\n")
    return CorpusConfig(
        output=root / "out", python_stdlib=root / "py", doc_root=root / "doc", man_root=man,
        locale_root=root / "locale", include_root=root / "include", code_roots=(root / "bin",),
        max_file_bytes=4000, heldout_every=3, max_translation_pairs=10,
    )


# ---- megatron-core (tests/interop/mcore_model.py) -------------------------------------------------------------------

MCORE_HELPER = Path(__file__).parent / "interop" / "mcore_model.py"
# GQA (6 query heads over 2 groups), kv_channels 20 != hidden / heads = 8, half the head dims rotary.
MCORE_CFG = {"layers": 3, "hidden": 48, "heads": 6, "groups": 2, "kv_channels": 20, "ffn": 96, "vocab": 128,
             "seq": 64, "rotary_percent": 0.5}


def mcore(*args: str, nproc: int = 1, cfg: dict | None = None, timeout: int = 300) -> None:
    """Run tests/interop/mcore_model.py (megatron-core's GPTModel as Nemotron-4 on CPU; under torchrun with gloo when
    nproc > 1: mark such tests slow)."""
    cmd, rest = [sys.executable, str(MCORE_HELPER)], [*args[:2], json.dumps(cfg or MCORE_CFG), *args[2:]]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(MCORE_HELPER)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, *rest], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"mcore_model.py {args[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def megatron_logits(root: Path) -> tuple[Any, Any]:
    """(tokens, megatron-core's logits) that `mcore("save", root)` stored."""
    import torch

    d = torch.load(root / "logits.pt")
    return d["tokens"], d["logits"]


# ---- curation ------------------------------------------------------------------------------------------------------


def write_corpus(root: Path, docs: dict[str, list[str]], category: str = "english", language: str = "en",
                 categories: dict[str, str] | None = None) -> Path:
    """A corpus folder (train/<source>.jsonl, manifest.json) holding `docs`; returns the manifest path."""
    from nemotron4.data.manifest import Manifest, ManifestSource

    sources = []
    for name, texts in docs.items():
        path = root / "train" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        cat = (categories or {}).get(name, category)
        sources.append(ManifestSource(name, cat, language, f"train/{name}.jsonl", docs=len(texts)))
    Manifest(sources, root=root).save(root / "manifest.json")
    return root / "manifest.json"


def run_curate(manifest: Path, out: Path, cfg=None, engine=None):
    """Curate `manifest` into `out` (one process unless `engine`); the CurateReport."""
    from nemotron4.data.curate.config import CurateConfig
    from nemotron4.data.curate.pipeline import curate
    from nemotron4.data.engine import EngineConfig, open_engine
    from nemotron4.data.manifest import Manifest

    with open_engine(engine or EngineConfig(workers=1)) as e:
        return curate(Manifest.load(manifest), out, cfg or CurateConfig(), e, progress=False)


def kept(out: Path, source: str) -> list[str]:
    """The documents curate kept of `source`, in order."""
    path = out / "train" / f"{source}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def removed_positions(docs: dict[str, list[str]], out: Path) -> set[tuple[str, int]]:
    """(source, position) of the input documents missing from the output (which keeps the input order)."""
    gone = set()
    for source, texts in docs.items():
        rest = iter(kept(out, source))
        nxt = next(rest, None)
        for i, t in enumerate(texts):
            if t == nxt:
                nxt = next(rest, None)
            else:
                gone.add((source, i))
        assert nxt is None, f"{source}: the output holds a document that is not in the input, or out of order"
    return gone


def teacher_forced_logits(model: Any, prompt: list[int], tokens: list[int]) -> Any:
    """Decode logits (len(tokens), vocab) on CUDA predicting each of `tokens` after the prompt and the tokens before
    it, one decode step at a time through the KV cache (eager unless the model's steps are compiled)."""
    import torch

    from nemotron4.inference import remove_caches
    from nemotron4.inference.generation import decode_one_token, prefill
    from nemotron4.inference.kv_cache import setup_caches

    with torch.no_grad():
        remove_caches(model)
        S = len(prompt) + len(tokens)
        setup_caches(model, 1, S)
        valid = torch.ones(1, S, dtype=torch.bool, device="cuda")
        rows = [prefill(model, torch.tensor([prompt], device="cuda"))]
        for i, tok in enumerate(tokens[:-1]):
            pos = torch.tensor([len(prompt) + i], device="cuda")
            rows.append(decode_one_token(model, torch.tensor([[tok]], device="cuda"), pos, valid))
        remove_caches(model)
        return torch.cat(rows).float()
