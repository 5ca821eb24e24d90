"""Benchmark: `nemotron4 curate` throughput (MB/s, and per core) and the LSH index's memory against corpus size,
against datatrove's own MinHash deduplication pipeline on the same text in the same run (where it installs).

Text: generated JSONL (nemotron4.data.curate.synthetic: 50,000 made-up words at Zipf frequencies, with English
stop words, 200-1500 words a document) in 8 files, with 10% near copies (Jaccard 0.85-1.0 to their original) and
4% exact copies (case changed). Each engine runs in a fresh subprocess on all cores; peak RSS is that of the
largest process of the run (the main one or a worker).

- ours/full: heuristic filters + exact + near dedup (the default `nemotron4 curate`), writing the curated corpus;
- ours/near: near dedup only (--no-exact --no-filters), the same job as datatrove's;
- datatrove/near: MinhashDedupSignature -> MinhashDedupBuckets -> MinhashDedupCluster -> MinhashDedupFilter +
  JsonlWriter on datatrove's LocalPipelineExecutor, its default MinhashConfig (5-grams, 14 buckets x 8 hashes)
  with as many tasks as files and as many workers as cores (its English word tokenizer needs spaCy; pip install
  datatrove orjson spacy).

    python bench/curate.py [--sizes-mb 100 1000] [--peer-mb 10] [--budget-s 1500]

At each size: ours/full and ours/near on the whole text (at sizes above --first-engine-only-above-mb, ours/full
only). datatrove runs about 30x slower than ours on 2 cores, so the head-to-head runs on a slice of the same text:
the first --peer-mb MB (whole lines from each file), ours/near and datatrove/near both. A run predicted (from the
MB/s measured so far) to overrun --budget-s is skipped and listed as such. LSH memory: the on-disk index and its
largest partition, and the traced peak of the largest near-dedup task (what bounds memory), from our report.
Results go to bench/results/curate-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nemotron4.data.curate.synthetic import near_copy, random_docs, vocabulary  # noqa: E402

FILES = 8


def generate(folder: Path, total_bytes: int, seed: int = 0) -> dict:
    """`total_bytes` of JSONL over FILES files; returns counts of what was planted."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    folder.mkdir(parents=True, exist_ok=True)
    outs = [open(folder / f"part{i:02d}.jsonl", "w") for i in range(FILES)]  # noqa: SIM115
    written = docs = near = exact = 0
    recent: list[list[str]] = []
    try:
        while written < total_bytes:
            batch = random_docs(rng, vocab, 200, (200, 1500), zipf=True)
            for words in batch:
                r = rng.random()
                if recent and r < 0.10:
                    original = recent[int(rng.integers(len(recent)))]
                    words = near_copy(rng, vocab, original, float(rng.uniform(0.85, 1)), 5)
                    near += 1
                elif recent and r < 0.14:
                    words = [w.upper() if rng.random() < 0.2 else w for w in recent[int(rng.integers(len(recent)))]]
                    exact += 1
                else:
                    recent.append(words)
                    recent = recent[-2000:]
                text = "\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12)) + "\n"
                line = json.dumps({"text": text}) + "\n"
                outs[docs % FILES].write(line)
                written += len(line)
                docs += 1
    finally:
        for f in outs:
            f.close()
    return {"bytes": written, "docs": docs, "near_copies": near, "exact_copies": exact}


def take_prefix(src: Path, dst: Path, total_bytes: int) -> int:
    """The first lines of each of src's files, about total_bytes in all, into dst; returns the bytes taken."""
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.jsonl"))
    taken = 0
    for f in files:
        budget = total_bytes // len(files)
        with open(f, "rb") as fin, open(dst / f.name, "wb") as fout:
            for line in fin:
                if budget <= 0:
                    break
                fout.write(line)
                budget -= len(line)
                taken += len(line)
    return taken


def _datatrove(inp: Path, work: Path, cores: int) -> None:
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    _patch_xxhash()
    cfg = MinhashConfig()
    logs = str(work / "logs")
    s1 = LocalPipelineExecutor([JsonlReader(str(inp)), MinhashDedupSignature(str(work / "sigs"), config=cfg)],
                               tasks=FILES, workers=cores, logging_dir=f"{logs}/1", start_method="fork")
    s2 = LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)],
                               tasks=cfg.num_buckets, workers=cores, logging_dir=f"{logs}/2", depends=s1,
                               start_method="fork")
    s3 = LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)],
                               tasks=1, logging_dir=f"{logs}/3", depends=s2, start_method="fork")
    s4 = LocalPipelineExecutor([JsonlReader(str(inp)), MinhashDedupFilter(str(work / "remove")),
                                JsonlWriter(str(work / "out"), compression=None)],
                               tasks=FILES, workers=cores, logging_dir=f"{logs}/4", depends=s3,
                               start_method="fork")
    s4.run()


def _patch_xxhash() -> None:
    """datatrove 0.10 hashes str with xxhash, which xxhash >= 4 refuses: encode to UTF-8 first (what xxhash 3 did
    inside). The executor forks (start_method="fork") so that its workers inherit this."""
    import xxhash
    from datatrove.utils.hashes import xxhash as dx

    def enc(d: str | bytes) -> bytes:
        return d.encode("utf-8") if isinstance(d, str) else d

    dx.xxhash32 = lambda d: xxhash.xxh32_intdigest(enc(d))
    dx.xxhash64 = lambda d: xxhash.xxh64_intdigest(enc(d))


def _count_jsonl(folder: Path) -> int:
    return sum(sum(1 for _ in open(p, "rb")) for p in sorted(folder.rglob("*.jsonl")))


def run_one(engine: str, inp: Path, work: Path, cores: int) -> dict:
    """Child process: one engine on `inp`; prints one JSON line."""
    t0 = time.perf_counter()
    out: dict = {}
    if engine.startswith("ours"):
        import nemotron4.data.curate.pipeline  # noqa: F401 - imported before the baseline is taken
    else:
        import datatrove.pipeline.dedup  # noqa: F401
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if engine.startswith("ours"):
        from nemotron4.cli import main

        args = ["curate", str(inp), "--output", str(work / "out"), "--workers", str(cores), "--quiet"]
        if engine == "ours/near":
            args += ["--no-exact", "--no-filters"]
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            assert main(args) == 0
        report = json.loads((work / "out/curate_report.json").read_text())
        out["seconds_by_stage"] = report["seconds"]
        out["lsh_index"] = report["lsh_index"]
        out["removed"] = {k: v["docs"] for k, v in report["categories"]["english"]["removed"].items()}
        out["docs_out"] = report["categories"]["english"]["docs_out"]
    else:
        _datatrove(inp, work, cores)
        out["docs_out"] = _count_jsonl(work / "out")
        out["lsh_index"] = {"bytes": sum(p.stat().st_size for p in (work / "sigs").rglob("*") if p.is_file())}
    out["seconds"] = time.perf_counter() - t0
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # this process, or its largest worker
    out["peak_rss_mb"] = round(peak_kb / 1024, 1)
    out["rss_growth_mb"] = round((peak_kb - base_kb) / 1024, 1)  # over the process after its imports
    return out


def measure(engine: str, inp: Path, cores: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-curate-", dir=inp.parent) as tmp:
        p = subprocess.run([sys.executable, __file__, "--child", engine, str(inp), tmp, str(cores)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if p.returncode != 0:
            return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
        return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mb", type=float, nargs="+", default=[100, 1000])
    ap.add_argument("--engines", nargs="+", default=["ours/full", "ours/near"])
    ap.add_argument("--peers", nargs="+", default=["ours/near", "datatrove/near"],
                    help="engines compared on the --peer-mb slice of the first size's text")
    ap.add_argument("--peer-mb", type=float, default=10)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--budget-s", type=float, default=1500, help="skip runs predicted to end past this")
    ap.add_argument("--first-engine-only-above-mb", type=float, default=500,
                    help="at larger sizes run only the first engine (on 2 cores datatrove takes ~10x longer)")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        engine, inp, work, cores = args.child
        print(json.dumps(run_one(engine, Path(inp), Path(work), int(cores))))
        return
    t_start = time.perf_counter()
    rates: dict[str, float] = {}  # engine -> MB/s measured at the last size
    runs, skipped = [], []

    def run_engines(engines: list[str], inp: Path, mb: float, planted: dict, label: str) -> None:
        for engine in engines:
            left = args.budget_s - (time.perf_counter() - t_start)
            predicted = mb / rates[engine] if engine in rates else 0
            if predicted > left:
                skipped.append({"engine": engine, "text": label, "mb": mb, "predicted_s": round(predicted),
                                "left_s": round(left)})
                print(f"  {engine}: skipped (predicted {predicted:.0f} s, {left:.0f} s of budget left)")
                continue
            res = measure(engine, inp, args.cores)
            if "error" in res:
                print(f"  {engine}: failed: {res['error']}")
                runs.append({"engine": engine, "text": label, "mb": mb, **res})
                continue
            rate = planted["bytes"] / 1e6 / res["seconds"]
            rates[engine] = rate
            runs.append({"engine": engine, "text": label, "mb": mb, "input_bytes": planted["bytes"],
                         "mb_per_s": round(rate, 2), "mb_per_s_per_core": round(rate / args.cores, 2), **res,
                         "planted": planted})
            print(f"  {engine}: {res['seconds']:.1f} s, {rate:.2f} MB/s ({rate / args.cores:.2f} per core), "
                  f"peak RSS {res['peak_rss_mb']} MB (+{res['rss_growth_mb']}), docs out {res['docs_out']}, "
                  f"index {res['lsh_index']}", flush=True)

    for k, mb in enumerate(args.sizes_mb):
        folder = Path(tempfile.mkdtemp(prefix=f"curate-text-{mb:g}MB-", dir=args.tmp))
        try:
            t = time.perf_counter()
            planted = generate(folder / "in", int(mb * 1e6))
            print(f"{mb:g} MB: generated {planted} in {time.perf_counter() - t:.0f} s", flush=True)
            engines = args.engines[:1] if mb > args.first_engine_only_above_mb else args.engines
            run_engines(engines, folder / "in", mb, planted, f"{mb:g} MB")
            if k == 0 and args.peers:
                n = take_prefix(folder / "in", folder / "slice", int(args.peer_mb * 1e6))
                print(f"{mb:g} MB text, first {n / 1e6:.1f} MB: ours vs datatrove", flush=True)
                run_engines(args.peers, folder / "slice", n / 1e6, {"bytes": n}, f"first {n / 1e6:.1f} MB of {mb:g} MB")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    try:
        import datatrove

        dt_version = getattr(datatrove, "__version__", None) or _dist_version("datatrove")
    except ImportError:
        dt_version = None
    result = {
        "bench": "curate", "host": socket.gethostname(), "cores": args.cores, "cpu": platform.processor(),
        "loadavg_at_end": os.getloadavg(), "python": platform.python_version(), "datatrove": dt_version,
        "rensa": _dist_version("rensa"),
        "command": "python bench/curate.py " + " ".join(sys.argv[1:]), "runs": runs, "skipped": skipped,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "note": "shared machine: other jobs ran on the same cores (see loadavg); per-core = MB/s / cores",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"curate-{socket.gethostname()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
