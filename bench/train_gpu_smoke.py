"""GPU smoke test and throughput of the trainer (a script, not a test: run by hand on a CUDA machine).

    python bench/train_gpu_smoke.py OUT_DIR [--flavour minitron-4b] [--steps 10]

1. configs/tiny.toml on CUDA (bf16 autocast, fused AdamW): an uninterrupted run, and a run killed with SIGKILL
   at step 25 and re-run; prints whether the losses match step for step.
2. A larger flavour at seq 4096, global batch 8 = micro-batch 1 x 8 accumulation, on random tokens: prints the
   median step's tokens/s and MFU (docs/paper.md section 4 convention, 989 TFLOP/s peak).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nemotron4.data.indexed import IndexedDatasetBuilder  # noqa: E402
from nemotron4.train.metrics import read_metrics  # noqa: E402
from tests.train.conftest import TINY_TOML, run_cli, write_tiny_corpus  # noqa: E402
from tests.train.test_resume import COMPARED, train_until_killed  # noqa: E402


def tiny_on_cuda(out: Path) -> dict:
    write_tiny_corpus(out)
    toml = out / "tiny_cuda.toml"
    toml.write_text(TINY_TOML.read_text().replace('device = "cpu"', 'device = "cuda"').replace(
        'dtype = "fp32"', 'dtype = "auto"'))
    run_cli(out, "train", "--config", str(toml), "--run-dir", str(out / "ref"))
    train_until_killed(out, out / "resumed", kill_at_step=25, config=toml)
    run_cli(out, "train", "--config", str(toml), "--run-dir", str(out / "resumed"))
    want, got = read_metrics(out / "ref"), read_metrics(out / "resumed")
    same = [all(a.get(k) == b.get(k) for k in COMPARED) for a, b in zip(want, got, strict=True)]
    return {"steps": len(want), "identical_steps": sum(same), "final_loss": want[-1]["loss"],
            "final_val": want[-1]["val_loss"], "max_abs_loss_diff": max(abs(a["loss"] - b["loss"])
                                                                      for a, b in zip(want, got, strict=True))}


def throughput(out: Path, flavour: str, steps: int) -> dict:
    from nemotron4.train.trainer import Trainer
    from tests.train.conftest import tiny_job

    rng = np.random.default_rng(0)
    for name in ("web", "books", "code", "qa"):
        b = IndexedDatasetBuilder(out / "rand/data/tiny" / name, dtype=np.int32)
        for _ in range(64):
            b.add_document(rng.integers(0, 256000, 40_000))
        b.finalize()
    seq, batch = 4096, 8
    job = tiny_job(out / "rand", "--model.flavour", flavour, "--train.seq_len", str(seq), "--train.device", "cuda",
                   "--train.dtype", "auto", "--train.micro_batch_size", "1", "--phases.0.batch_size", str(batch),
                   "--phases.0.tokens", str(seq * batch * (steps + 5)), "--phases.0.warmup_tokens", "0",
                   "--phases.0.lr", "1e-4", "--checkpoint.interval", "0", "--metrics.progress_bar", "false")
    for p in job.phases:
        for s in p.blend.sources:
            s.valid_path = None
    trainer = Trainer.create(job, out / "throughput")
    trainer._start_phase()
    for _ in range(steps):
        trainer._train_one_step()
    trainer.metrics.close()
    recs = read_metrics(out / "throughput")[2:]  # drop warm-up steps
    mid = statistics.median(r["tokens_per_s"] for r in recs)
    return {"flavour": flavour, "seq_len": seq, "global_batch": batch, "micro_batch": 1,
            "tokens_per_s": mid, "mfu": statistics.median(r["mfu"] for r in recs),
            "peak_memory_gib": max(r["memory_gib"] for r in recs), "losses": [r["loss"] for r in recs],
            "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--flavour", default="minitron-4b")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip-tiny", action="store_true")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    if not args.skip_tiny:
        result["tiny_cuda_resume"] = tiny_on_cuda(out)
        print(json.dumps(result["tiny_cuda_resume"]), flush=True)
    result["throughput"] = throughput(out, args.flavour, args.steps)
    print(json.dumps(result["throughput"]), flush=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
