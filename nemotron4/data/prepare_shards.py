"""`prepare` over shards on an `Engine` (many nodes through Dask, or this machine's cores): each task tokenizes one
shard of the input files into a part `.bin`/`.idx`, and the parts are concatenated in shard order into one
dataset per output prefix. Shards cut files only at line starts and the documents keep their order, so the result
is byte-identical to `prepare` on one machine.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import numpy as np

from nemotron4.data.engine import Engine
from nemotron4.data.indexed import IndexedDataset, IndexedDatasetBuilder, bin_path, optimal_dtype
from nemotron4.data.prepare import PrepareReport, _encode, _init_worker, no_documents_error, prepare_manifest
from nemotron4.data.readers import FileStats, expand_inputs
from nemotron4.data.shards import DEFAULT_SHARD_BYTES, Shard, plan_shards, read_shard

__all__ = ["prepare_manifest_on_engine", "prepare_on_engine"]

_loaded: tuple[str, bool] | None = None  # (tokenizer path, add_bos) this worker process was set up with


def _encode_shard(args: tuple[Shard, int, str, str, bool, str]) -> dict:
    """Worker: tokenize one shard into `part_prefix`; returns the shard's FileStats fields."""
    global _loaded
    shard, file_index, tok_path, part_prefix, add_bos, text_field = args
    if _loaded != (tok_path, add_bos):
        _init_worker(tok_path, add_bos)
        _loaded = (tok_path, add_bos)
    from nemotron4.data import prepare as prep

    stats = FileStats(shard.path)
    with IndexedDatasetBuilder(part_prefix, prep._worker_dtype) as builder:
        for batch in read_shard(shard, text_field):
            _, nbytes, flat, lengths, problems = _encode(batch)
            builder.add_documents(flat, lengths)
            stats.count(len(lengths), flat.size, nbytes, problems)
    return {"file_index": file_index, "documents": stats.documents, "tokens": stats.tokens, "bytes": stats.bytes,
            "problems": stats.problems}


def prepare_on_engine(
    inputs: Iterable[str | os.PathLike],
    tokenizer_path: str | os.PathLike,
    output_prefix: str | os.PathLike,
    text_field: str = "text",
    engine: Engine | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
    add_bos: bool = True,
    work_dir: str | os.PathLike | None = None,
) -> PrepareReport:
    """`prepare(inputs, tokenizer_path, output_prefix, ...)` with the encoding spread over `engine`'s workers.
    Parts go to a temporary folder beside the output (or in `work_dir`: it must be seen by every worker)."""
    from nemotron4.tokenizer import Tokenizer

    if engine is None:
        raise ValueError("prepare_on_engine needs an engine")
    files = expand_inputs(inputs)
    tok_path = os.fspath(tokenizer_path)
    dtype = optimal_dtype(Tokenizer.load(tok_path).vocab_size)
    report = PrepareReport(os.fspath(output_prefix), np.dtype(dtype).name, [FileStats(str(f)) for f in files])
    Path(output_prefix).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".prepare-", dir=work_dir or Path(output_prefix).parent) as tmp:
        jobs = []
        for i, f in enumerate(files):
            for k, shard in enumerate(plan_shards([f], shard_bytes)):
                jobs.append((shard, i, tok_path, os.path.join(tmp, f"{i:06d}.{k:06d}"), add_bos, text_field))
        results = engine.map(_encode_shard, jobs, Path(output_prefix).name, progress, [j[0].size for j in jobs])
        with IndexedDatasetBuilder(output_prefix, dtype) as builder:
            for job, r in zip(jobs, results, strict=True):
                part = IndexedDataset(job[3])
                builder.add_documents(np.fromfile(bin_path(job[3]), dtype=part.dtype), part.sequence_lengths)
                report.files[r["file_index"]].count(r["documents"], r["tokens"], r["bytes"], r["problems"])
            if report.documents == 0:
                raise no_documents_error(report, text_field)
    report.seconds = time.perf_counter() - t0
    return report


def prepare_manifest_on_engine(manifest_path: str | os.PathLike, tokenizer_path: str | os.PathLike,
                               output_dir: str | os.PathLike, engine: Engine, progress: bool = True,
                               add_bos: bool = True) -> list[PrepareReport]:
    """`prepare_manifest` with every source tokenized over `engine`'s workers (same files, same bytes)."""
    return prepare_manifest(manifest_path, tokenizer_path, output_dir, progress=progress, add_bos=add_bos,
                            encoder=partial(prepare_on_engine, engine=engine))
