"""`nemotron4 plan --model 15b --gpus 2304 --tp 8 --batch-size 1152 --seq-len 4096 [--mfu 0.305] [--tokens 7.6T]
[--micro-batch 1] [--stages paper] [--json]`"""

from __future__ import annotations

import argparse
import json

HELP = """Memory per GPU (bf16 weights and gradients sharded over tp, fp32 master + Adam moments sharded over dp,
activations per micro-batch after Korthikanti et al. 2022 with sequence parallelism) and the time to train a token
budget at a given MFU (FLOPs convention of docs/paper.md section 4). --stages paper plans the report's three stages
(Table 2: 768, 1536, 2304 GPUs), about 13 days."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="memory per GPU and days to train under TP x DP", description=HELP)
    p.add_argument("--model", default="15b", help="model flavour (tiny, minitron-4b, minitron-8b, 15b, 340b)")
    p.add_argument("--gpus", type=int, default=2304)
    p.add_argument("--tp", type=int, default=8, help="tensor-parallel size (dp = gpus / tp)")
    p.add_argument("--batch-size", type=int, default=1152, help="global batch in sequences")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per forward/backward on one GPU")
    p.add_argument("--mfu", type=float, default=0.305, help="model FLOPs utilisation, fraction (0.305) or %% (30.5)")
    p.add_argument("--tokens", default="7.6T", help="token budget, e.g. 7.6T, 200B")
    p.add_argument("--stages", default=None,
                   help='"gpus:batch:tokens:mfu ..." stages instead of --gpus/--batch-size/--tokens/--mfu; '
                        '"paper" for Table 2 (768:384:200B:0.343 1536:768:200B:0.333 2304:1152:7.6T:0.305)')
    p.add_argument("--recompute", default="selective", choices=["none", "selective", "full"],
                   help="activation recomputation (selective: attention scores not stored, as with flash attention)")
    p.add_argument("--grad-dtype", default="bf16", choices=["bf16", "fp32"], help="gradient buffers (megatron layout)")
    p.add_argument("--layout", default="megatron", choices=["megatron", "nemotron4"],
                   help="memory layout: the paper's (Megatron: bf16 weights, distributed optimizer) or this "
                        "package's (fp32 masters, FSDP2 over dp; what `nemotron4 train` holds)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="per GPU (989: H100/H200 dense bf16)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nemotron4.config import ModelConfig
    from nemotron4.distributed.layout import check_tp
    from nemotron4.distributed.plan import Stage, params_per_gpu, parse_stages, plan_stages
    from nemotron4.flops import flops_per_token, param_counts
    from nemotron4.schedules import parse_tokens

    cfg = ModelConfig.from_name(args.model)
    check_tp(cfg, args.tp, args.seq_len)
    if args.stages:
        stages = parse_stages(args.stages)
    else:
        mfu = args.mfu / 100 if args.mfu > 1 else args.mfu
        stages = [Stage(args.gpus, args.batch_size, parse_tokens(args.tokens, "--tokens"), mfu)]
    plans = plan_stages(cfg, stages, args.tp, args.seq_len, args.micro_batch, args.recompute,
                        4 if args.grad_dtype == "fp32" else 2, args.peak_tflops * 1e12, args.layout)
    days = sum(p.days for p in plans)
    if args.json:
        print(json.dumps({"model": args.model, "tp": args.tp, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                          "recompute": args.recompute, "layout": args.layout,
                          "flops_per_token": flops_per_token(cfg, args.seq_len),
                          "params_per_gpu": params_per_gpu(cfg, args.tp), "total_days": days,
                          "stages": [p.as_dict() for p in plans]}))
        return 0
    n = param_counts(cfg)
    print(f"model {args.model}: {n['total'] / 1e9:.2f}B params, {params_per_gpu(cfg, args.tp) / 1e9:.3f}B per GPU at "
          f"tp {args.tp}; {flops_per_token(cfg, args.seq_len) / 1e9:.1f} GFLOP/token (6N + 12 L T d, seq "
          f"{args.seq_len}); peak {args.peak_tflops:g} TFLOP/s")
    gib = 2**30
    print(f"{'GPUs':>6} {'dp':>4} {'batch':>6} {'accum':>5} {'tokens':>8} {'MFU':>6} {'iter s':>7} {'days':>6} | "
          f"{'weights':>7} {'grads':>6} {'optim':>6} {'activ':>6} {'logits':>6} {'total GiB':>9}")
    for p in plans:
        m, st = p.memory, p.stage
        print(f"{st.gpus:>6} {p.dp:>4} {st.batch_size:>6} {p.accumulation:>5} {st.tokens / 1e9:>7.0f}B "
              f"{100 * st.mfu:>5.1f}% {p.iteration_s:>7.2f} {p.days:>6.2f} | {m.weights / gib:>7.2f} "
              f"{m.gradients / gib:>6.2f} {m.optimizer / gib:>6.2f} {m.activations / gib:>6.2f} {m.logits / gib:>6.2f} "
              f"{m.total / gib:>9.2f}")
    how = (f"{args.recompute} recompute, Korthikanti et al. 2022 with sequence parallelism"
           if args.layout == "megatron" else "nemotron4 layout: what `nemotron4 train` holds")
    print(f"total: {days:.1f} days; activations per micro-batch of {args.micro_batch} x {args.seq_len} ({how})")
    return 0
