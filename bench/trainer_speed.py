"""Does bench/train.py's speed reach `nemotron4 train`? The CLI trains on a token file for a few steps, its
metrics.jsonl gives tokens/s and MFU; then, in this process, `train_step` with the same fast paths (what
bench/train.py times) runs on the same shapes. Prints both and the ratio CLI / direct step.

The CLI's number includes what a real run pays every step: reading the batch from the Megatron files, the host to
device copy, the token-range check, metrics.jsonl. Checkpoints are off (`--checkpoint.enabled false`).

    python bench/trainer_speed.py --out bench/results/trainer_speed_h200.json
    python bench/trainer_speed.py --device cpu --model tiny --seq-len 64 --steps 4 --skip 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train import build_ours, time_steps  # noqa: E402  (bench/train.py)

from nemotron4 import ModelConfig  # noqa: E402
from nemotron4.data.indexed import IndexedDatasetBuilder, optimal_dtype  # noqa: E402
from nemotron4.flops import mfu  # noqa: E402
from nemotron4.train.config import OptimSection  # noqa: E402
from nemotron4.train.metrics import read_metrics  # noqa: E402
from nemotron4.train.optim import build_optimizer  # noqa: E402


def write_tokens(prefix: Path, vocab: int, n_tokens: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(500, 8000, size=n_tokens // 500 + 1)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n_tokens) + 1]
    dtype = optimal_dtype(vocab)
    with IndexedDatasetBuilder(prefix, dtype=dtype) as builder:
        builder.add_documents(rng.integers(0, vocab, size=int(lengths.sum()), dtype=dtype), lengths)
        builder.finalize()


def write_config(path: Path, args, prefix: Path, cuda: bool) -> None:
    gbs, tokens = args.global_batch, args.global_batch * args.seq_len * (args.steps + 5)
    path.write_text(f"""[model]
flavour = "{args.model}"
max_seq_len = {max(args.seq_len, 4096)}

[train]
seq_len = {args.seq_len}
micro_batch_size = {args.micro}
device = "{args.device}"
dtype = "{'bf16' if cuda else 'fp32'}"
compile = {str(cuda).lower()}
attention_backend = "{'cudnn' if cuda else 'auto'}"
fused_loss = true
cast_weights_once = true

[checkpoint]
enabled = false

[metrics]
eval_interval = 0
progress_bar = false

[[phases]]
name = "bench"
tokens = {tokens}
batch_size = {gbs}
lr = 1e-4
warmup_tokens = {gbs * args.seq_len}
decay = "constant"

[phases.blend]
categories = {{ english = 1 }}

[[phases.blend.sources]]
name = "random"
path = "{prefix}"
category = "english"
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minitron-4b")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12, help="CLI steps (the first --skip compile and warm up)")
    ap.add_argument("--skip", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--work-dir", default="/tmp/nemotron4-trainer-speed")
    ap.add_argument("--out", default="bench/results/trainer_speed_h200.json")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    work = Path(args.work_dir)
    run_dir = work / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig.from_name(args.model, max_seq_len=max(args.seq_len, 4096))
    prefix = work / "random"
    write_tokens(prefix, cfg.vocab_size, args.global_batch * (args.seq_len + 1) * (args.steps + 6))
    config = work / "job.toml"
    write_config(config, args, prefix, cuda)

    cmd = [sys.executable, "-m", "nemotron4.cli", "train", "--config", str(config), "--run-dir", str(run_dir),
           "--max-steps", str(args.steps)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    cli_wall = time.perf_counter() - t0
    records = read_metrics(run_dir / "metrics.jsonl")[args.skip:]
    cli = {"steps_timed": len(records), "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records),
           "mfu": statistics.median(r["mfu"] for r in records), "wall_s_incl_start_and_compile": cli_wall,
           "losses": [round(r["loss"], 4) for r in records]}

    device = torch.device(args.device)
    torch.manual_seed(1234)
    ours = build_ours(cfg, argparse.Namespace(no_compile=not cuda, attention="cudnn"), device, seed=1234)
    optimizer = build_optimizer(ours.model, OptimSection(), device)
    batches = torch.randint(0, cfg.vocab_size, (args.global_batch, args.seq_len + 1), device=device)
    direct = time_steps(ours.step_model, optimizer, batches, args.micro, ours.loss_fn, device, 3,
                        len(records), ours.step_context, autocast=ours.autocast)
    direct["mfu"] = mfu(cfg, args.seq_len, direct["tokens_per_s"])
    direct["losses"] = [round(x, 4) for x in direct["losses"]]
    ratio = cli["tokens_per_s"] / direct["tokens_per_s"]

    import transformers

    res = {"bench": "trainer_speed", "command": " ".join(["python"] + sys.argv),
           "gpu": torch.cuda.get_device_name() if cuda else "none (cpu)", "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(), "model": args.model,
           "seq_len": args.seq_len, "global_batch": args.global_batch, "micro_batch": args.micro,
           "nemotron4_train": cli, "train_step_direct": direct, "cli_over_direct": ratio}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("\n| path | tokens/s | MFU |\n|---|---|---|")
    print(f"| nemotron4 train (median of {len(records)} steps) | {cli['tokens_per_s']:,.0f} | {cli['mfu']:.1%} |")
    print(f"| train_step in this process | {direct['tokens_per_s']:,.0f} | {direct['mfu']:.1%} |")
    print(f"nemotron4 train / direct step: {ratio:.3f}")


if __name__ == "__main__":
    main()
