"""Benchmark: `prepare` throughput against raw SentencePiece encoding of the same text on the same cores.

Peer: `SentencePieceProcessor.encode(texts, num_threads=cores)` on texts already in memory (SentencePiece's own
C++ thread pool; no reading, parsing or writing). Us: `nemotron4.data.prepare.prepare` on the JSONL file (read,
JSON parse, encode in a process pool, EOD, write .bin/.idx). Ratio = our tokens/s / peer tokens/s; target >= 0.8.

    python bench/prepare.py [--mb 20] [--vocab 8000] [--repeats 3]

Text comes from `corpus build` on this machine (no download); results go to bench/results/prepare-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm

import nemotron4
from nemotron4.data.corpus import CorpusConfig, build_corpus
from nemotron4.data.manifest import Manifest, iter_jsonl_texts, tokenizer_sample
from nemotron4.data.prepare import prepare
from nemotron4.tokenizer import TokenizerConfig, train_tokenizer


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=20.0, help="MB of text to encode")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for each side")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        budget = int(args.mb * 1e6)
        manifest = build_corpus(CorpusConfig(output=tmp / "corpus", max_bytes_per_source=max(budget // 20, 100_000),
                                             max_bytes_per_category=budget), log=lambda s: None)
        tok = train_tokenizer(tokenizer_sample(manifest, 10_000_000), tmp / "tok.model",
                              TokenizerConfig(vocab_size=args.vocab))
        texts = [t for s in Manifest.load(tmp / "corpus" / "manifest.json").sources
                 for t in iter_jsonl_texts(manifest.path(s.train))]
        with open(tmp / "all.jsonl", "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        nbytes = sum(len(t.encode()) for t in texts)

        sp = spm.SentencePieceProcessor(model_file=str(tmp / "tok.model"))
        peer_times, ours_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ids = sp.encode(texts, num_threads=cores)
            peer_times.append(time.perf_counter() - t0)
            peer_tokens = sum(map(len, ids)) + len(ids)  # + one EOD per document, as prepare writes
            del ids
            t0 = time.perf_counter()
            report = prepare([tmp / "all.jsonl"], tmp / "tok.model", tmp / "out", workers=cores, progress=False)
            ours_times.append(time.perf_counter() - t0)
        assert report.tokens == peer_tokens, (report.tokens, peer_tokens)
        peer, ours = min(peer_times), min(ours_times)
        result = {
            "benchmark": "prepare_vs_sentencepiece",
            "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "machine": {"host": socket.gethostname(), "cpu": _cpu_model(), "cores": cores,
                        "platform": platform.platform()},
            "versions": {"python": platform.python_version(), "nemotron4": nemotron4.__version__,
                         "sentencepiece": spm.__version__, "numpy": np.__version__},
            "data": {"documents": len(texts), "bytes": nbytes, "tokens": report.tokens, "vocab_size": tok.vocab_size},
            "peer_sentencepiece": {"seconds": round(peer, 3), "tokens_per_s": round(report.tokens / peer),
                                   "all_seconds": [round(t, 3) for t in peer_times]},
            "ours_prepare": {"seconds": round(ours, 3), "tokens_per_s": round(report.tokens / ours),
                             "all_seconds": [round(t, 3) for t in ours_times], "workers": cores},
            "ratio": round(peer / ours, 3),
            "ratio_median": round(float(np.median(peer_times) / np.median(ours_times)), 3),
            "target": 0.8,
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"prepare-{socket.gethostname()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"prepare / sentencepiece throughput ratio: {result['ratio']:.3f} best-of-{args.repeats}, "
          f"{result['ratio_median']:.3f} median (target >= 0.8); wrote {path}")


if __name__ == "__main__":
    main()
