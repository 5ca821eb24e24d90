"""The curation stages, on an `Engine` (this machine's cores, or a Dask cluster):

1. analyse (one task per shard): parse the documents, apply the heuristic filters and the classifier, and for the
   documents that pass, write the exact keys and the LSH band keys into the partitions of the on-disk index and
   the MinHash signatures beside them;
2. exact (one task per category and partition): documents whose normalised text equals an earlier one's;
3. near (one task per category and partition): bucket collisions whose estimated Jaccard similarity reaches the
   threshold; the main process joins them into clusters and keeps each cluster's first document (corpus order);
4. write (one task per shard): the kept documents, JSONL, concatenated per source in shard order.

The output is a corpus folder like `corpus build` writes (train/, heldout/ copied, translation/ copied,
manifest.json) that `prepare --manifest` reads, and curate_report.json. Everything is keyed by shard and
document position, so any number of workers writes the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import tracemalloc
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nemotron4.data.curate.config import CurateConfig, NearConfig
from nemotron4.data.curate.filters import Doc, active_filters, first_failure
from nemotron4.data.curate.lsh import clusters, exact_duplicates, near_edges, pack_ids, write_partitions
from nemotron4.data.curate.minhash import band_keys, signatures
from nemotron4.data.curate.report import CurateReport, SourceReport
from nemotron4.data.curate.text import exact_key
from nemotron4.data.engine import Engine
from nemotron4.data.manifest import Manifest, ManifestSource
from nemotron4.data.readers import expand_inputs, parse_batch
from nemotron4.data.shards import Shard, plan_shards, read_shard
from nemotron4.errors import UserError

__all__ = ["curate", "sources_from_inputs"]

CLASSIFIER = "classifier"
EXACT, NEAR = "exact", "near"
_EXACT_CODE, _NEAR_CODE = 1, 2
_CLASSIFIER_CODE = 255


@dataclass(frozen=True)
class _Task:
    shard_id: int
    shard: Shard
    source: str
    category: str
    language: str
    text_field: str
    folder: str
    partitions: int
    filters: dict
    exact: bool
    near: NearConfig
    classifier: str | None
    classifier_threshold: float
    examples: int


_classifier_cache: dict[str, Any] = {}


def _classifier(path: str):
    from nemotron4.data.curate.classifier import load_classifier

    if path not in _classifier_cache:
        _classifier_cache[path] = load_classifier(path)
    return _classifier_cache[path]


def _analyse(task: _Task) -> dict[str, Any]:
    """Stage 1 on one shard; writes verdict.npy, sig.npy, sig_ids.npy, exact.<p>.npy and band.<p>.npy."""
    from nemotron4.data.curate.classifier import score

    folder = Path(task.folder)
    folder.mkdir(parents=True, exist_ok=True)
    filters = active_filters(task.filters, task.category, task.language)
    codes = {f.name: i + 1 for i, f in enumerate(filters)}
    model = _classifier(task.classifier) if task.classifier else None
    verdicts, sig_parts, sig_ids, keys = [], [], [], []
    problems: dict[str, int] = {}
    removed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    examples: dict[str, list[str]] = defaultdict(list)
    n = nbytes = 0
    for batch in read_shard(task.shard, task.text_field):
        texts, probs = parse_batch(batch)
        for k, v in probs.items():
            problems[k] = problems.get(k, 0) + v
        docs = [Doc(t) for t in texts]
        verdict = np.zeros(len(texts), np.uint8)
        for i, doc in enumerate(docs):
            failed = first_failure(doc, filters)
            if failed:
                verdict[i] = codes[failed]
        if model is not None:
            todo = np.flatnonzero(verdict == 0)
            low = score(model, [texts[i] for i in todo]) < task.classifier_threshold
            verdict[todo[low]] = _CLASSIFIER_CODE
        names = {v: k for k, v in codes.items()} | {_CLASSIFIER_CODE: CLASSIFIER}
        words, local = [], []
        for i, text in enumerate(texts):
            size = len(text.encode("utf-8"))
            nbytes += size
            if verdict[i]:
                stage = names[int(verdict[i])]
                removed[stage][0] += 1
                removed[stage][1] += size
                if len(examples[stage]) < task.examples:
                    examples[stage].append(text)
                continue
            w = docs[i].normalised
            if w:  # a document without words is not deduplicated
                words.append(w)
                local.append(n + i)
        if words and (task.exact or task.near.enabled):
            ids = pack_ids(task.shard_id, np.asarray(local, np.uint64))
            if task.exact:
                keys.append(np.column_stack([np.stack([exact_key(w) for w in words]), ids]))
            if task.near.enabled:
                nc = task.near
                sig_parts.append(signatures(words, nc.shingle, nc.num_perm, nc.seed))
                sig_ids.append(np.asarray(local, np.uint32))
        verdicts.append(verdict)
        n += len(texts)
    np.save(folder / "verdict.npy", np.concatenate(verdicts) if verdicts else np.zeros(0, np.uint8))
    parts = task.partitions
    write_partitions(folder, "exact", np.concatenate(keys) if keys else np.zeros((0, 3), np.uint64), parts)
    sig = np.concatenate(sig_parts) if sig_parts else np.zeros((0, task.near.num_perm), np.uint32)
    sids = np.concatenate(sig_ids) if sig_ids else np.zeros(0, np.uint32)
    np.save(folder / "sig.npy", sig)
    np.save(folder / "sig_ids.npy", sids)
    bands = band_keys(sig, task.near.bands, task.near.rows)  # (m, bands)
    ids = pack_ids(task.shard_id, sids)
    rows = np.column_stack([bands.reshape(-1), np.repeat(ids, task.near.bands)]) if len(sig) else \
        np.zeros((0, 2), np.uint64)
    write_partitions(folder, "band", rows, parts)
    return {"docs": n, "bytes": nbytes, "problems": problems, "removed": dict(removed), "examples": dict(examples)}


def _exact_task(args: tuple[list[str], int]) -> tuple[np.ndarray, np.ndarray]:
    folders, p = args
    return exact_duplicates([Path(f) for f in folders], p)


def _near_task(args: tuple[dict[int, str], int, float]) -> tuple[np.ndarray, int]:
    """(verified pairs, peak bytes the task allocated: the LSH partition, its sort, the signatures compared)."""
    folders, p, threshold = args
    traced = tracemalloc.is_tracing()
    if not traced:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        edges = near_edges({k: Path(v) for k, v in folders.items()}, p, threshold)
        return edges, tracemalloc.get_traced_memory()[1]
    finally:
        if not traced:
            tracemalloc.stop()


def _write(args: tuple[_Task, str]) -> dict[str, Any]:
    """Stage 4 on one shard: kept documents to out.jsonl; docs / bytes / examples of the dedup removals."""
    task, out = args
    folder = Path(task.folder)
    verdict = np.load(folder / "verdict.npy")
    dedup = np.load(folder / "dedup.npy")  # (k, 3): position, code, representative id
    reason = np.zeros(len(verdict), np.uint8)
    reason[dedup[:, 0].astype(np.int64)] = dedup[:, 1]
    rep_of = dict(zip(dedup[:, 0].tolist(), dedup[:, 2].tolist(), strict=True))
    removed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    examples: dict[str, list[dict]] = defaultdict(list)
    pos = kept = kept_bytes = 0
    with open(out, "w", encoding="utf-8") as f:
        for batch in read_shard(task.shard, task.text_field):
            texts, _ = parse_batch(batch)
            for text in texts:
                if verdict[pos] == 0 and reason[pos] == 0:
                    f.write(json.dumps({task.text_field: text}, ensure_ascii=False) + "\n")
                    kept += 1
                    kept_bytes += len(text.encode("utf-8"))
                elif reason[pos]:
                    stage = EXACT if reason[pos] == _EXACT_CODE else NEAR
                    removed[stage][0] += 1
                    removed[stage][1] += len(text.encode("utf-8"))
                    if len(examples[stage]) < task.examples:
                        examples[stage].append({"position": pos, "text": text, "duplicate_of": rep_of[pos]})
                pos += 1
    if pos != len(verdict):
        raise UserError(f"{task.shard.path} changed while it was being curated ({len(verdict)} then {pos} "
                        "documents); run curate again")
    return {"docs": kept, "bytes": kept_bytes, "removed": dict(removed), "examples": dict(examples)}


def sources_from_inputs(inputs: list[str], category: str, language: str) -> list[ManifestSource]:
    """One source per INPUT (a file or folder of JSONL / text / Parquet), named after it."""
    out = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise UserError(f"input {p} does not exist; pass JSONL, text or Parquet files, or folders of them")
        name = p.name.split(".")[0] or p.name
        if any(s.name == name for s in out):
            raise UserError(f"two inputs are both named {name!r}; rename one (sources are named after inputs)")
        out.append(ManifestSource(name, category, language, str(p.resolve())))
    return out


@dataclass
class _Plan:
    tasks: list[_Task] = field(default_factory=list)
    by_source: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    partitions: int = 1
    index: dict[str, int] = field(default_factory=dict)
    """Size of the on-disk LSH index: partitions, bytes, largest partition's bytes (what one near task loads)."""


def curate(manifest: Manifest, output: str | os.PathLike, cfg: CurateConfig, engine: Engine,
           progress: bool = True, work_dir: str | os.PathLike | None = None) -> CurateReport:
    """Curate every source of `manifest` into `output` (a corpus folder with manifest.json); returns the report,
    also written to `output/curate_report.json`."""
    out = Path(output)
    if out.resolve() == manifest.root.resolve():
        raise UserError(f"--output {out} is the input corpus folder; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="curate-", dir=work_dir or out) as tmp:
        work = Path(tmp)
        clf_path = None
        if cfg.classifier.enabled:
            from nemotron4.data.curate.classifier import train_classifier

            clf_path = str(train_classifier(cfg.classifier, work / "classifier.bin", manifest.text_field))
            seconds["classifier_training"] = time.perf_counter() - t0
        plan = _plan(manifest, cfg, work, clf_path)
        sizes = [t.shard.size for t in plan.tasks]

        t = time.perf_counter()
        analysed = engine.map(_analyse, plan.tasks, "analyse", progress, sizes)
        seconds["analyse"] = time.perf_counter() - t
        dedup = _deduplicate(plan, cfg, engine, progress, seconds)
        for i, task in enumerate(plan.tasks):
            np.save(Path(task.folder) / "dedup.npy", dedup.get(i, np.zeros((0, 3), np.uint64)))

        t = time.perf_counter()
        parts = [str(work / f"{i:06d}.out.jsonl") for i in range(len(plan.tasks))]
        written = engine.map(_write, list(zip(plan.tasks, parts, strict=True)), "write", progress, sizes)
        report = _report(manifest, plan, analysed, written, cfg, engine, seconds)
        _assemble(manifest, out, plan, parts, report)
        seconds["write"] = time.perf_counter() - t
    report.seconds = {k: round(v, 3) for k, v in seconds.items()} | {"total": round(time.perf_counter() - t0, 3)}
    report.save(out / "curate_report.json")
    return report


def _plan(manifest: Manifest, cfg: CurateConfig, work: Path, clf_path: str | None) -> _Plan:
    plan = _Plan()
    shards = {s.name: plan_shards(expand_inputs([manifest.path(s.train)]), cfg.shard_bytes) for s in manifest.sources}
    total = sum(sh.size for group in shards.values() for sh in group)
    plan.partitions = cfg.near.partitions or max(1, -(-total // (1 << 30)))
    for s in manifest.sources:
        use_clf = clf_path if s.category in cfg.classifier.categories else None
        for shard in shards[s.name]:
            i = len(plan.tasks)
            plan.by_source[s.name].append(i)
            plan.tasks.append(_Task(i, shard, s.name, s.category, s.language, manifest.text_field,
                                    str(work / f"{i:06d}"), plan.partitions, cfg.filters, cfg.exact, cfg.near,
                                    use_clf, cfg.classifier.threshold, cfg.examples))
    return plan


def _deduplicate(plan: _Plan, cfg: CurateConfig, engine: Engine, progress: bool,
                 seconds: dict[str, float]) -> dict[int, np.ndarray]:
    """Per shard index: (k, 3) uint64 rows (position, code, representative id) of the documents dedup removes."""
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(plan.tasks):
        by_cat[task.category].append(i)
    parts = plan.partitions
    removed: list[np.ndarray] = []  # rows (id, code, representative)
    t = time.perf_counter()
    exact_ids = np.zeros(0, np.uint64)
    if cfg.exact:
        jobs = [([plan.tasks[i].folder for i in members], p) for members in by_cat.values() for p in range(parts)]
        results = engine.map(_exact_task, jobs, "exact dedup", progress)
        dup = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.uint64)
        rep = np.concatenate([r[1] for r in results]) if results else np.zeros(0, np.uint64)
        removed.append(np.column_stack([dup, np.full(len(dup), _EXACT_CODE, np.uint64), rep]))
        exact_ids = np.sort(dup)
    seconds["exact"] = time.perf_counter() - t
    t = time.perf_counter()
    peak = 0
    if cfg.near.enabled:
        for members in by_cat.values():
            folders = {i: plan.tasks[i].folder for i in members}
            jobs = [(folders, p, cfg.near.threshold) for p in range(parts)]
            results = engine.map(_near_task, jobs, "near dedup", progress)
            peak = max([peak] + [r[1] for r in results])
            edges = np.concatenate([r[0] for r in results]) if results else np.zeros((0, 2), np.uint64)
            ids = np.concatenate([pack_ids(i, np.load(Path(folders[i]) / "sig_ids.npy")) for i in members])
            roots = clusters(ids, edges)
            alive = ~np.isin(ids, exact_ids)
            ids, roots = ids[alive], roots[alive]
            order = np.lexsort((ids, roots))
            ids, roots = ids[order], roots[order]
            first = np.ones(len(ids), bool)
            first[1:] = roots[1:] != roots[:-1]
            start = np.maximum.accumulate(np.where(first, np.arange(len(ids)), 0))
            gone = ~first
            removed.append(np.column_stack([ids[gone], np.full(int(gone.sum()), _NEAR_CODE, np.uint64),
                                            ids[start[gone]]]))
    seconds["near"] = time.perf_counter() - t
    sizes = [sum((Path(task.folder) / f"band.{p}.npy").stat().st_size for task in plan.tasks) for p in range(parts)]
    plan.index = {"partitions": parts, "bytes": sum(sizes), "largest_partition_bytes": max(sizes, default=0),
                  "peak_task_bytes": peak}
    rows = np.concatenate(removed) if removed else np.zeros((0, 3), np.uint64)
    shard = (rows[:, 0] >> np.uint64(32)).astype(np.int64)
    local = rows[:, 0] & np.uint64(0xFFFFFFFF)
    return {int(s): np.column_stack([local[shard == s], rows[shard == s, 1], rows[shard == s, 2]])
            for s in np.unique(shard)}


def _report(manifest: Manifest, plan: _Plan, analysed: list[dict], written: list[dict], cfg: CurateConfig,
            engine: Engine, seconds: dict[str, float]) -> CurateReport:
    offsets, total = {}, defaultdict(int)  # shard -> first position of the shard in its source
    for i, task in enumerate(plan.tasks):
        offsets[i] = total[task.source]
        total[task.source] += analysed[i]["docs"]

    def where(doc_id: int) -> dict[str, Any]:
        shard, local = doc_id >> 32, doc_id & 0xFFFFFFFF
        return {"source": plan.tasks[shard].source, "doc": offsets[shard] + local}

    report = CurateReport(engine=engine.description, config=asdict(cfg), lsh_index=dict(plan.index))
    for s in manifest.sources:
        r = SourceReport(s.name, s.category)
        for i in plan.by_source[s.name]:
            a, w = analysed[i], written[i]
            r.docs_in += a["docs"]
            r.bytes_in += a["bytes"]
            r.docs_out += w["docs"]
            r.bytes_out += w["bytes"]
            for k, v in a["problems"].items():
                r.problems[k] = r.problems.get(k, 0) + v
            for stage, (d, b) in list(a["removed"].items()) + list(w["removed"].items()):
                got = r.removed.setdefault(stage, {"docs": 0, "bytes": 0})
                got["docs"] += d
                got["bytes"] += b
            for stage, texts in a["examples"].items():
                for text in texts:
                    report.add_example(s.category, stage, {"source": s.name, "text": text}, cfg.examples)
            for stage, exs in w["examples"].items():
                for ex in exs:
                    report.add_example(s.category, stage, {"source": s.name, "doc": offsets[i] + ex["position"],
                                                           "duplicate_of": where(ex["duplicate_of"]),
                                                           "text": ex["text"]}, cfg.examples)
        report.sources.append(r)
    return report


def _assemble(manifest: Manifest, out: Path, plan: _Plan, parts: list[str], report: CurateReport) -> None:
    """Per source: its shards' kept documents concatenated; held-out and translation files copied; manifest."""
    sources = []
    for s, r in zip(manifest.sources, report.sources, strict=True):
        if r.docs_out == 0:
            report.dropped.append(s.name)  # prepare cannot tokenize an empty source
            continue
        train = out / "train" / f"{s.name}.jsonl"
        train.parent.mkdir(parents=True, exist_ok=True)
        with open(train, "wb") as f:
            for i in plan.by_source[s.name]:
                with open(parts[i], "rb") as part:
                    shutil.copyfileobj(part, f)
        entry = ManifestSource(s.name, s.category, s.language, f"train/{s.name}.jsonl", None, r.docs_out,
                               r.bytes_out)
        if s.heldout:
            entry.heldout = f"heldout/{s.name}.jsonl"
            (out / "heldout").mkdir(exist_ok=True)
            shutil.copyfile(manifest.path(s.heldout), out / entry.heldout)
            entry.heldout_docs, entry.heldout_bytes = s.heldout_docs, s.heldout_bytes
        sources.append(entry)
    translation = []
    for t in manifest.translation:
        dst = out / t["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(manifest.path(t["path"]), dst)
        translation.append(dict(t))
    Manifest(sources, translation, manifest.text_field, out).save(out / "manifest.json")
