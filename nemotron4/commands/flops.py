"""`nemotron4 flops --model 15b --seq-len 4096 --batch-size 384 --gpus 768 --iter-time 0.57 [--json]`"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "flops", help="model FLOPs per token, throughput and MFU of an iteration time",
        description="MFU with the convention of docs/paper.md section 4: 6 x (non-embedding + output-projection "
        "params) + 12 x layers x seq_len x hidden FLOPs per token, over GPUs x peak.",
    )
    p.add_argument("--model", default="15b", help="model flavour (tiny, minitron-4b, minitron-8b, 15b, 340b) or "
                   "any model directory / training run that `nemotron4 info` accepts")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--batch-size", type=int, required=True, help="global batch in sequences")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--iter-time", type=float, required=True, help="seconds per optimizer step")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="per GPU (989: H100/H200 dense bf16)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nemotron4.flops import param_counts, throughput
    from nemotron4.weights import load_config

    cfg = load_config(args.model)
    t = throughput(cfg, args.seq_len, args.batch_size, args.iter_time, args.gpus, args.peak_tflops * 1e12)
    if args.json:
        print(json.dumps({"model": args.model, **param_counts(cfg), **t.as_dict()}))
        return 0
    p = param_counts(cfg)
    from nemotron4.commands.info import _fmt

    print(f"model {args.model}: {_fmt(p['non_embedding'])} non-embedding + {_fmt(p['output'])} output "
          f"projection params, seq_len {args.seq_len}")
    print(f"model FLOPs per token: {t.flops_per_token / 1e9:.3g} GFLOP (6N + 12 L T d; attention not halved)")
    print(f"tokens/s: {t.tokens_per_s:,.0f} total, {t.tokens_per_s_per_device:,.0f} per GPU")
    print(f"per GPU: {t.tflops_per_device:.1f} TFLOP/s = MFU {100 * t.mfu:.1f}% of {args.peak_tflops:g} TFLOP/s")
    if t.mfu > 1:
        print(f"warning: MFU above 100% is impossible: check --iter-time (seconds per optimizer step of the whole "
              f"--batch-size {args.batch_size}), --gpus and --peak-tflops", file=sys.stderr)
    return 0
