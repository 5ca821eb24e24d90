"""`prepare`: documents -> Megatron `.bin`/`.idx` token files, on all cores.

The main process cuts input files into ~1 MB raw batches; a pool of worker processes decodes, parses and encodes
them (each holding its own SentencePiece model) and returns flat token arrays; the main process writes them in
input order, so the output does not depend on the number of workers. Every document starts with the tokenizer's
bos (unless `add_bos=False`) and ends with its eos (EOD): evaluation prompts start with bos, as lm-eval feeds the
released models, so a model trained here sees at evaluation the document start it saw in training. Bad input is
counted per file (see `readers.PROBLEMS`), never fatal; the output appears under its
real name only when complete.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nemotron4.data.indexed import IndexedDatasetBuilder, optimal_dtype
from nemotron4.data.manifest import Manifest
from nemotron4.data.readers import Batch, FileStats, expand_inputs, parse_batch, read_batches
from nemotron4.errors import UserError

__all__ = ["PrepareReport", "prepare", "prepare_manifest", "recorded_tokenizer_size"]

_worker_tok = None  # the worker process's Tokenizer (set by _init_worker)
_worker_dtype: np.dtype | None = None
_worker_bos: list[int] = []  # [bos] when documents start with it


@dataclass
class PrepareReport:
    output: str
    dtype: str
    files: list[FileStats] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def documents(self) -> int:
        return sum(f.documents for f in self.files)

    @property
    def tokens(self) -> int:
        return sum(f.tokens for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def problems(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            for k, v in f.problems.items():
                out[k] = out.get(k, 0) + v
        return out

    def to_dict(self) -> dict:
        return {
            "output": self.output, "dtype": self.dtype, "documents": self.documents, "tokens": self.tokens,
            "bytes": self.bytes, "seconds": round(self.seconds, 3), "problems": self.problems,
            "files": [asdict(f) for f in self.files],
        }


def _init_worker(tokenizer_path: str, add_bos: bool = True) -> None:
    global _worker_tok, _worker_dtype, _worker_bos
    from nemotron4.tokenizer import Tokenizer

    _worker_tok = Tokenizer.load(tokenizer_path)
    _worker_dtype = np.dtype(optimal_dtype(_worker_tok.vocab_size))
    _worker_bos = [_worker_tok.bos_id] if add_bos and _worker_tok.bos_id >= 0 else []


def _encode(batch: Batch) -> tuple[int, int, np.ndarray, np.ndarray, dict[str, int]]:
    """Worker: (file index, raw bytes, flat tokens of [bos] + document + [eos] each, lengths, problems)."""
    texts, problems = parse_batch(batch)
    eos = [_worker_tok.eos_id]
    ids = [_worker_bos + doc + eos for doc in _worker_tok.encode_batch(texts)] if texts else []
    lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), _worker_dtype, count=int(lengths.sum()))
    return batch.file_index, batch.nbytes, flat, lengths, problems


def prepare(
    inputs: Iterable[str | os.PathLike],
    tokenizer_path: str | os.PathLike,
    output_prefix: str | os.PathLike,
    text_field: str = "text",
    workers: int | None = None,
    batch_bytes: int = 1 << 20,
    progress: bool = True,
    add_bos: bool = True,
) -> PrepareReport:
    """Tokenize `inputs` (files or folders) into `<output_prefix>.bin/.idx`. `workers`: processes (default: all
    cores; 1 runs in this process). `add_bos`: start each document with bos (it always ends with eos). Raises
    `UserError` only if no document at all could be read."""
    from tqdm import tqdm

    from nemotron4.tokenizer import Tokenizer

    files = expand_inputs(inputs)
    tok_path = os.fspath(tokenizer_path)
    vocab = Tokenizer.load(tok_path).vocab_size
    dtype = optimal_dtype(vocab)
    report = PrepareReport(os.fspath(output_prefix), np.dtype(dtype).name, [FileStats(str(f)) for f in files])
    total_bytes = sum(_size(f) for f in files)
    workers = workers or os.cpu_count() or 1
    batches = read_batches(files, text_field, batch_bytes, stats=report.files)
    t0 = time.perf_counter()
    pool = mp.Pool(workers, _init_worker, (tok_path, add_bos)) if workers > 1 else None
    if pool is None:
        _init_worker(tok_path, add_bos)
    results = pool.imap(_encode, batches) if pool else map(_encode, batches)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=Path(output_prefix).name, disable=not progress)
    try:
        with IndexedDatasetBuilder(output_prefix, dtype) as builder:
            for file_index, nbytes, flat, lengths, problems in results:
                builder.add_documents(flat, lengths)
                stats = report.files[file_index]
                stats.documents += len(lengths)
                stats.tokens += flat.size
                stats.bytes += nbytes
                for k, v in problems.items():
                    stats.add(k, v)
                bar.update(nbytes)
                bar.set_postfix(tok_s=f"{builder.num_tokens / max(time.perf_counter() - t0, 1e-9):.3g}")
            if report.documents == 0:
                raise no_documents_error(report, text_field)
    finally:
        bar.close()
        if pool:
            pool.terminate()
    report.seconds = time.perf_counter() - t0
    return report


def no_documents_error(report: PrepareReport, text_field: str) -> UserError:
    return UserError(f"no documents could be read from {len(report.files)} input file(s) ({report.problems}); "
                     f"check the paths and --text-field ({text_field!r})")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def prepare_manifest(
    manifest_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    workers: int | None = None,
    progress: bool = True,
    add_bos: bool = True,
    encoder: Callable[..., PrepareReport] | None = None,
) -> list[PrepareReport]:
    """Tokenize every source of a corpus manifest: `<output_dir>/<name>.bin/.idx` (train) and
    `<name>.heldout.bin/.idx`, plus `<output_dir>/sources.json`, the token manifest that
    `BlendConfig.from_token_manifest` reads. `encoder(inputs, tokenizer_path, prefix, text_field, progress=,
    add_bos=)` tokenizes one source (default: `prepare` on this machine's pool; `prepare_shards` passes one that
    runs on an engine's workers)."""
    manifest = Manifest.load(manifest_path)

    def encode(inputs: list[Path], prefix: Path) -> PrepareReport:
        if encoder is None:
            return prepare(inputs, tokenizer_path, prefix, manifest.text_field, workers, progress=progress,
                           add_bos=add_bos)
        return encoder(inputs, tokenizer_path, prefix, manifest.text_field, progress=progress, add_bos=add_bos)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports, entries = [], []
    for s in manifest.sources:
        r = encode([manifest.path(s.train)], out / s.name)
        reports.append(r)
        entry = {"name": s.name, "category": s.category, "language": s.language, "path": s.name,
                 "documents": r.documents, "tokens": r.tokens, "valid_path": None}
        if s.heldout and s.heldout_docs:
            rv = encode([manifest.path(s.heldout)], out / f"{s.name}.heldout")
            reports.append(rv)
            entry["valid_path"] = f"{s.name}.heldout"
        entries.append(entry)
    doc = {"format": "nemotron4-tokens", "version": 1, "tokenizer": os.path.abspath(tokenizer_path),
           "sources": entries}
    (out / "sources.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return reports


def recorded_tokenizer_size(prefix: str | os.PathLike) -> tuple[str, int] | None:
    """(tokenizer path, its vocabulary size) that `prepare_manifest` recorded in the `sources.json` beside the token
    files `prefix`, when there is one naming this file and the tokenizer is still there; else None."""
    manifest = Path(prefix).parent / "sources.json"
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != "nemotron4-tokens" or not isinstance(doc.get("sources"), list):
        return None
    name = Path(prefix).name
    if not any(isinstance(s, dict) and name in (s.get("path"), s.get("valid_path")) for s in doc["sources"]):
        return None
    tokenizer = doc.get("tokenizer")
    if not isinstance(tokenizer, str) or not os.path.isfile(tokenizer):
        return None
    from nemotron4.tokenizer import Tokenizer

    return tokenizer, Tokenizer.load(tokenizer).vocab_size
