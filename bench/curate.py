"""Benchmark: `nemotron4 curate` throughput (MB/s, and per core) and the LSH index's memory against corpus size,
against datatrove's own MinHash deduplication pipeline on the same text in the same run (where it installs).

Text: generated JSONL (nemotron4.data.curate.synthetic: 50,000 made-up words at Zipf frequencies, with English
stop words, 200-1500 words a document) in 8 files, with 10% near copies (Jaccard 0.85-1.0 to their original) and
4% exact copies (case changed). Each engine runs in a fresh subprocess with the same number of worker processes
(--cores); a sampler thread in that subprocess records the peak RSS of its process tree (the sum over the main
process and its workers, shared pages counted in each) and of its largest process.

- ours/full: heuristic filters + exact + near dedup (`nemotron4 curate`), writing the curated corpus;
- ours/near: near dedup only (--no-exact --no-filters), the same job as datatrove's;
- datatrove/near: MinhashDedupSignature -> MinhashDedupBuckets -> MinhashDedupCluster -> MinhashDedupFilter +
  JsonlWriter on datatrove's LocalPipelineExecutor, as its examples/minhash_deduplication.py: as many signature
  and filter tasks as files, one bucket task per bucket, one cluster task, --cores workers. Its word tokenizer
  is a plain split on spaces (a datatrove WordTokenizer), applied, as always in datatrove, after its
  simplify_text (lower case, punctuation and number normalisation, spaces collapsed): on that text a split is
  what spaCy's tokenizer returns, and it is our own tokenisation (runs of letters and digits, lower-cased);
- datatrove/near-spacy: the same with datatrove's default English word tokenizer (a blank spaCy "en" pipeline,
  run per document inside a spaCy memory zone, so every document builds its lexemes anew): about 40x slower,
  run on a --slice-mb slice of the first size's text only.

Both tools use the same shingles (--shingle words), bands (--bands) and rows (--rows): ours with num_perm =
bands x rows; datatrove with MinhashConfig(n_grams, num_buckets, hashes_per_bucket), 64-bit xxhash. One
difference stays: we keep a candidate pair only when its estimated Jaccard is >= the threshold (0.8), datatrove
removes every candidate (any band equal).

    python bench/curate.py [--sizes-mb 100 1000] [--slice-mb 10] [--cores 2]

Duplicates: each engine's removed documents are the input's texts (their hashes, as a multiset) less those it
wrote; the agreement of ours/near with datatrove/near is |both| / |either| of those multisets (a cluster's kept
representative may differ between the tools, which counts as disagreement twice). LSH memory (ours): the on-disk
index and its largest partition, and the traced peak of the largest near-dedup task (what bounds its memory),
from our report. Results go to bench/results/curate-<host>.json (--out-name to rename).
"""


from __future__ import annotations

import argparse
import json
import os
import platform
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


def _datatrove(inp: Path, work: Path, cores: int, near: dict, tokenizer: str) -> None:
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
    from datatrove.utils.typeshelper import Languages
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        """Words of text that datatrove's simplify_text has already lower-cased, stripped of punctuation and
        collapsed to single spaces."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    _patch_xxhash()
    cfg = MinhashConfig(n_grams=near["shingle"], num_buckets=near["bands"], hashes_per_bucket=near["rows"])
    language = SplitTokenizer() if tokenizer == "split" else Languages.english
    logs = str(work / "logs")
    files = len(list(inp.glob("*.jsonl")))
    s1 = LocalPipelineExecutor([JsonlReader(str(inp)),
                                MinhashDedupSignature(str(work / "sigs"), config=cfg, language=language)],
                               tasks=files, workers=cores, logging_dir=f"{logs}/1", start_method="fork")
    s2 = LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)],
                               tasks=cfg.num_buckets, workers=cores, logging_dir=f"{logs}/2", depends=s1,
                               start_method="fork")
    s3 = LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)],
                               tasks=1, logging_dir=f"{logs}/3", depends=s2, start_method="fork")
    s4 = LocalPipelineExecutor([JsonlReader(str(inp)), MinhashDedupFilter(str(work / "remove")),
                                JsonlWriter(str(work / "out"), compression=None)],
                               tasks=files, workers=cores, logging_dir=f"{logs}/4", depends=s3,
                               start_method="fork")
    s4.run()


def _patch_xxhash() -> None:
    """datatrove 0.10 hashes str with xxhash and pins xxhash < 4 (its `processing` extra), which encoded str to
    UTF-8 inside; xxhash >= 4 refuses str: encode first. The executor forks (start_method="fork") so that its
    workers inherit this."""
    import xxhash
    from datatrove.utils.hashes import xxhash as dx

    h32, h64 = xxhash.xxh32_intdigest, xxhash.xxh64_intdigest
    dx.xxhash32 = lambda d: h32(d.encode("utf-8") if isinstance(d, str) else d)
    dx.xxhash64 = lambda d: h64(d.encode("utf-8") if isinstance(d, str) else d)


def text_hashes(folder: Path) -> np.ndarray:
    """Sorted 64-bit hashes of the "text" field of every JSONL line under `folder` (a multiset of documents)."""
    import hashlib

    out = []
    for p in sorted(folder.rglob("*.jsonl")):
        with open(p, "rb") as f:
            for line in f:
                if line.strip():
                    text = json.loads(line)["text"].encode("utf-8")
                    out.append(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little"))
    return np.sort(np.array(out, dtype=np.uint64))


def multiset_minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted a less b, both sorted, counting repeats."""
    if len(b) == 0:
        return a
    va, ca = np.unique(a, return_counts=True)
    vb, cb = np.unique(b, return_counts=True)
    idx = np.minimum(np.searchsorted(vb, va), len(vb) - 1)
    left = ca - np.where(vb[idx] == va, cb[idx], 0)
    return np.repeat(va, np.maximum(left, 0))


class TreeRss:
    """Samples the RSS of this process and its descendants every `every` s: peak of the sum and of the largest."""

    def __init__(self, every: float = 0.1):
        import threading

        import psutil

        self.proc, self.every = psutil.Process(), every
        self.peak_sum = self.peak_one = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self.stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.peak_one = max(self.peak_one, rss)
            self.peak_sum = max(self.peak_sum, total)
            self.stop.wait(self.every)

    def __enter__(self) -> TreeRss:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_one(engine: str, inp: Path, work: Path, cores: int, near: dict) -> dict:
    """Child process: one engine on `inp`; prints one JSON line."""
    if engine.startswith("ours"):
        import nemotron4.data.curate.pipeline  # noqa: F401 - imports are not timed
    else:
        import datatrove.pipeline.dedup  # noqa: F401
    out: dict = {}
    t0 = time.perf_counter()
    try:
        rss = TreeRss()
    except ImportError:  # psutil (the bench extra) absent: no RSS
        print("psutil is not installed: peak RSS is not measured", file=sys.stderr)
        rss = None
    import contextlib

    with rss or contextlib.nullcontext():
        if engine.startswith("ours"):
            from nemotron4.cli import main

            args = ["curate", str(inp), "--output", str(work / "out"), "--workers", str(cores), "--quiet",
                    "--shingle", str(near["shingle"]), "--bands", str(near["bands"]), "--rows", str(near["rows"]),
                    "--num-perm", str(near["bands"] * near["rows"])]
            if engine == "ours/near":
                args += ["--no-exact", "--no-filters"]
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                assert main(args) == 0
        else:
            _datatrove(inp, work, cores, near, "spacy" if engine == "datatrove/near-spacy" else "split")
    out["seconds"] = time.perf_counter() - t0
    if engine.startswith("ours"):
        report = json.loads((work / "out/curate_report.json").read_text())
        out["seconds_by_stage"] = report["seconds"]
        out["lsh_index"] = report["lsh_index"]
        out["removed"] = {k: v["docs"] for k, v in report["categories"]["english"]["removed"].items()}
    else:
        sig = [p.stat().st_size for p in (work / "sigs").rglob("*") if p.is_file()]
        out["lsh_index"] = {"signature_bytes": sum(sig)}
    kept = text_hashes(work / "out")
    out["docs_out"] = len(kept)
    np.save(work / "kept.npy", kept)
    out["peak_rss_tree_mb"] = round(rss.peak_sum / 2**20, 1) if rss else None
    out["peak_rss_largest_process_mb"] = round(rss.peak_one / 2**20, 1) if rss else None
    return out


def measure(engine: str, inp: Path, cores: int, near: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-curate-", dir=inp.parent) as tmp:
        p = subprocess.run([sys.executable, __file__, "--child", engine, str(inp), tmp, str(cores), json.dumps(near)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if p.returncode != 0:
            return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
        res = json.loads(p.stdout.strip().splitlines()[-1])
        res["_kept"] = np.load(Path(tmp) / "kept.npy")
        return res


def agreement(inputs: np.ndarray, kept_a: np.ndarray, kept_b: np.ndarray) -> dict:
    ra, rb = multiset_minus(inputs, kept_a), multiset_minus(inputs, kept_b)
    both = len(ra) - len(multiset_minus(ra, rb))
    either = len(ra) + len(rb) - both
    return {"removed_a": len(ra), "removed_b": len(rb), "removed_by_both": both,
            "only_a": len(ra) - both, "only_b": len(rb) - both, "jaccard": round(both / either, 4) if either else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mb", type=float, nargs="+", default=[100, 1000])
    ap.add_argument("--engines", nargs="+", default=["ours/full", "ours/near", "datatrove/near"])
    ap.add_argument("--slice-engines", nargs="+", default=["ours/near", "datatrove/near-spacy"],
                    help="engines run on the --slice-mb slice of the first size's text")
    ap.add_argument("--slice-mb", type=float, default=10)
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="worker processes of every engine")
    ap.add_argument("--shingle", type=int, default=5)
    ap.add_argument("--bands", type=int, default=14, help="LSH bands (datatrove: num_buckets)")
    ap.add_argument("--rows", type=int, default=8, help="LSH rows per band (datatrove: hashes_per_bucket)")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--out-name", help="result file name (default curate-<host>.json)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        engine, inp, work, cores, near = args.child
        print(json.dumps(run_one(engine, Path(inp), Path(work), int(cores), json.loads(near))))
        return
    near = {"shingle": args.shingle, "bands": args.bands, "rows": args.rows}
    have_dt = _dist_version("datatrove") is not None
    if not have_dt:
        print("datatrove is not installed (pip install datatrove spacy orjson): its engines are skipped")
    t_start = time.perf_counter()
    runs, skipped, sizes = [], [], []

    def run_engines(engines: list[str], inp: Path, label: str) -> dict[str, dict]:
        inputs = text_hashes(inp)
        n_bytes = sum(p.stat().st_size for p in inp.glob("*.jsonl"))
        done = {}
        for engine in engines:
            if engine.startswith("datatrove") and not have_dt:
                skipped.append({"engine": engine, "text": label, "why": "datatrove not installed"})
                continue
            res = measure(engine, inp, args.cores, near)
            if "error" in res:
                print(f"  {engine}: failed: {res['error']}", flush=True)
                runs.append({"engine": engine, "text": label, **res})
                continue
            kept = res.pop("_kept")
            rate = n_bytes / 1e6 / res["seconds"]
            row = {"engine": engine, "text": label, "input_bytes": n_bytes, "docs_in": len(inputs),
                   "workers": args.cores, "mb_per_s": round(rate, 3), "mb_per_s_per_core": round(rate / args.cores, 3),
                   "duplicates_removed": len(inputs) - res["docs_out"], **res}
            runs.append(row)
            done[engine] = {"row": row, "kept": kept}
            print(f"  {engine}: {res['seconds']:.1f} s, {rate:.2f} MB/s ({rate / args.cores:.2f} per core), "
                  f"peak RSS tree {res['peak_rss_tree_mb']} MB (largest process "
                  f"{res['peak_rss_largest_process_mb']}), removed {row['duplicates_removed']}, "
                  f"index {res['lsh_index']}", flush=True)
        summary: dict = {"text": label, "input_bytes": n_bytes, "docs_in": len(inputs)}
        for engine, d in done.items():
            summary[engine] = {"mb_per_s_per_core": d["row"]["mb_per_s_per_core"],
                               "duplicates_removed": d["row"]["duplicates_removed"],
                               "peak_rss_tree_mb": d["row"]["peak_rss_tree_mb"]}
            if engine.startswith("ours"):
                summary[engine]["lsh_index_peak_task_mb"] = round(d["row"]["lsh_index"]["peak_task_bytes"] / 2**20, 1)
                summary[engine]["lsh_index_disk_mb"] = round(d["row"]["lsh_index"]["bytes"] / 2**20, 1)
        for peer in ("datatrove/near", "datatrove/near-spacy"):
            if "ours/near" in done and peer in done:
                summary[f"ours/near over {peer}"] = round(done["ours/near"]["row"]["mb_per_s"]
                                                         / done[peer]["row"]["mb_per_s"], 2)
                summary[f"agreement ours/near (a) vs {peer} (b)"] = agreement(inputs, done["ours/near"]["kept"],
                                                                            done[peer]["kept"])
        if "ours/full" in done and "datatrove/near" in done:
            summary["ours/full over datatrove/near"] = round(done["ours/full"]["row"]["mb_per_s"]
                                                             / done["datatrove/near"]["row"]["mb_per_s"], 2)
        sizes.append(summary)
        return done

    for k, mb in enumerate(args.sizes_mb):
        folder = Path(tempfile.mkdtemp(prefix=f"curate-text-{mb:g}MB-", dir=args.tmp))
        try:
            t = time.perf_counter()
            planted = generate(folder / "in", int(mb * 1e6))
            print(f"{mb:g} MB: generated {planted} in {time.perf_counter() - t:.0f} s", flush=True)
            run_engines(args.engines, folder / "in", f"{mb:g} MB")
            sizes[-1]["planted"] = planted
            if k == 0 and args.slice_engines and args.slice_mb > 0:
                n = take_prefix(folder / "in", folder / "slice", int(args.slice_mb * 1e6))
                print(f"{mb:g} MB text, first {n / 1e6:.1f} MB:", flush=True)
                run_engines(args.slice_engines, folder / "slice", f"first {n / 1e6:.1f} MB of {mb:g} MB")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    result = {
        "bench": "curate", "host": socket.gethostname(), "cores": os.cpu_count(), "workers": args.cores,
        "cpu": _cpu_model(), "loadavg_at_end": os.getloadavg(), "python": platform.python_version(),
        "versions": {n: _dist_version(n) for n in ("datatrove", "spacy", "xxhash", "rensa", "numpy")},
        "near": {**near, "num_perm_ours": args.bands * args.rows, "threshold_ours": 0.8},
        "command": "python bench/curate.py " + " ".join(sys.argv[1:]), "sizes": sizes, "runs": runs,
        "skipped": skipped, "total_seconds": round(time.perf_counter() - t_start, 1),
        "note": "shared machine: other jobs ran on the same cores (see loadavg); per core = MB/s / workers; "
                "peak RSS of the tree sums the processes' RSS (shared pages counted in each)",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (args.out_name or f"curate-{socket.gethostname()}.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
