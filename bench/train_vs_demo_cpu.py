"""Does `nemotron4 train` with default settings train the demo's model as fast as the demo itself does?

One script run, on this machine: `nemotron4 demo --budget ci` (the demo picks its thread count by measuring), then
`nemotron4 train` with no option but --config / --run-dir on the config the demo wrote (RUN/config.toml: the demo's
model, blends and token files), pretraining phase only, the same number of tokens. Both without OMP_NUM_THREADS
(a user's shell). Compares the median tokens/s of the pretraining steps in each metrics.jsonl (first 2 steps
skipped: warm-up).

On a shared machine both pick their thread count by measuring at that moment, so one other process starting
between the two runs can halve one of them. The script therefore runs the pair --rounds times (demo, train, demo,
train, ...), each pair back to back, and reports each round's ratio and their median.

    python bench/train_vs_demo_cpu.py --out bench/results/train_vs_demo_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from nemotron4.cli import main; sys.exit(main())"]


def tokens_per_s(run_dir: Path, phase: str = "pretrain", skip: int = 2) -> tuple[float, int]:
    """(median tokens/s, steps counted) of `phase` in run_dir/metrics.jsonl."""
    rates = [r["tokens_per_s"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if (r := json.loads(line)).get("phase") == phase and r.get("tokens_per_s")]
    rates = rates[skip:] if len(rates) > skip + 2 else rates
    return statistics.median(rates), len(rates)


def cli(*args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    t0 = time.perf_counter()
    proc = subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"nemotron4 {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout + proc.stderr


def one_round(tmp: Path, budget: str) -> dict:
    """The demo, then `nemotron4 train` on the demo's config for the demo's pretraining tokens."""
    demo, train = tmp / "demo", tmp / "train"
    load_before = os.getloadavg()[0]
    demo_s, demo_log = cli("demo", "--run-dir", str(demo), "--budget", budget)
    demo_rate, demo_steps = tokens_per_s(demo)
    pretrain_tokens = [r for line in (demo / "metrics.jsonl").read_text().splitlines()
                       if (r := json.loads(line)).get("phase") == "pretrain"][-1]["tokens"]
    train_s, train_log = cli("train", "--config", str(demo / "config.toml"), "--run-dir", str(train),
                             "--phases.0.tokens", str(pretrain_tokens), "--metrics.progress_bar", "false")
    train_rate, train_steps = tokens_per_s(train)
    chosen = [ln for ln in train_log.splitlines() if ln.startswith("torch threads")]
    demo_threads = [ln.strip() for ln in demo_log.splitlines() if "torch threads" in ln]
    return {
        "demo_tokens_per_s": round(demo_rate, 1), "demo_steps": demo_steps, "demo_threads": demo_threads[:1],
        "train_tokens_per_s": round(train_rate, 1), "train_steps": train_steps, "train_threads": chosen,
        "ratio": round(train_rate / demo_rate, 3), "demo_wall_s": round(demo_s, 1), "train_wall_s": round(train_s, 1),
        "load_avg_1min_before": round(load_before, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    ap.add_argument("--budget", default="ci", help="demo budget (default ci)")
    ap.add_argument("--rounds", type=int, default=3, help="demo + train pairs, back to back (default 3)")
    args = ap.parse_args()
    rounds = []
    for k in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rounds.append(one_round(Path(tmp), args.budget))
        print(f"round {k + 1}: ratio {rounds[-1]['ratio']}", file=sys.stderr)
    result = {
        "command": "nice -n 10 python bench/train_vs_demo_cpu.py --out bench/results/train_vs_demo_cpu.json",
        "ratio_median": round(statistics.median(r["ratio"] for r in rounds), 3),
        "ratio_min": min(r["ratio"] for r in rounds), "rounds": rounds,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
