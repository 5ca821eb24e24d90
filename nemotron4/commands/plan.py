"""`nemotron4 plan --model 15b --gpus 2304 --tp 8 --batch-size 1152 --seq-len 4096 [--mfu 0.305] [--tokens 7.6T]
[--micro-batch 1] [--stages paper] [--json]`; `nemotron4 plan --predict [BENCH_JSON]` predicts step time per
layout (nemotron4.distributed.predict)."""

from __future__ import annotations

import argparse
import json

HELP = """Memory per GPU (bf16 weights and gradients sharded over tp, fp32 master + Adam moments sharded over dp,
activations per micro-batch after Korthikanti et al. 2022 with sequence parallelism) and the time to train a token
budget at a given MFU (FLOPs convention of docs/paper.md section 4). --stages paper plans the report's three stages
(Table 2: 768, 1536, 2304 GPUs), about 13 days. --predict instead predicts tokens/s per GPU and MFU of the model at
tp 8, tp 4 x dp 2, tp 2 x dp 4 and dp 8 on 8 GPUs and at the paper's Table 2 layouts, from the single-GPU MFU of a
bench result plus modeled TP / FSDP2 communication at the given link bandwidths (a prediction, not a measurement)."""

DEFAULT_BENCH = "bench/results/parallel_overhead_h200.json"
EIGHT_GPU_LAYOUTS = ((8, 1), (4, 2), (2, 4), (1, 8))


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
    p.add_argument("--fused-loss", action=argparse.BooleanOptionalAction, default=True,
                   help="nemotron4 layout: train.fused_loss (the chunked loss, vocabulary-parallel under tp; "
                        "--no-fused-loss: the full logits)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="per GPU (989: H100/H200 dense bf16)")
    p.add_argument("--predict", nargs="?", const=DEFAULT_BENCH, default=None, metavar="BENCH_JSON",
                   help=f"predict step time per layout from a bench result's single-GPU MFU (default {DEFAULT_BENCH})")
    p.add_argument("--predict-batch", type=int, default=32, help="global batch (sequences) of the 8-GPU predictions")
    p.add_argument("--nvlink-gbs", type=float, default=400.0, help="achievable NVLink GB/s per GPU (--predict)")
    p.add_argument("--ib-gbs", type=float, default=50.0, help="achievable InfiniBand GB/s per GPU (--predict)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nemotron4.config import ModelConfig
    from nemotron4.distributed.layout import check_tp
    from nemotron4.distributed.plan import Stage, params_per_gpu, parse_stages, plan_stages
    from nemotron4.flops import flops_per_token, param_counts
    from nemotron4.schedules import parse_tokens

    cfg = ModelConfig.from_name(args.model)
    if args.predict is not None:
        return predict(args, cfg)
    check_tp(cfg, args.tp, args.seq_len)
    if args.stages:
        stages = parse_stages(args.stages)
    else:
        mfu = args.mfu / 100 if args.mfu > 1 else args.mfu
        stages = [Stage(args.gpus, args.batch_size, parse_tokens(args.tokens, "--tokens"), mfu)]
    plans = plan_stages(cfg, stages, args.tp, args.seq_len, args.micro_batch, args.recompute,
                        4 if args.grad_dtype == "fp32" else 2, args.peak_tflops * 1e12, args.layout, args.fused_loss)
    days = sum(p.days for p in plans)
    if args.json:
        print(json.dumps({"model": args.model, "tp": args.tp, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                          "recompute": args.recompute, "layout": args.layout, "fused_loss": args.fused_loss,
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


def predict(args: argparse.Namespace, cfg) -> int:
    from nemotron4.distributed.plan import parse_stages
    from nemotron4.distributed.predict import Links, measured_mfu, predict_step

    single = measured_mfu(args.predict)
    links = Links(nvlink=args.nvlink_gbs * 1e9, ib=args.ib_gbs * 1e9)
    peak = args.peak_tflops * 1e12
    rows = [("8 GPUs", None, predict_step(cfg, tp, dp, args.seq_len, args.predict_batch, args.micro_batch, single,
                                          links, peak)) for tp, dp in EIGHT_GPU_LAYOUTS]
    for st in parse_stages("paper"):
        rows.append((f"Table 2, {st.gpus} GPUs", st.mfu, predict_step(cfg, 8, st.gpus // 8, args.seq_len,
                                                                        st.batch_size, args.micro_batch, single,
                                                                        links, peak)))
    if args.json:
        print(json.dumps({"prediction": True, "model": args.model, "bench": args.predict, "single_gpu_mfu": single,
                          "nvlink_gbs": args.nvlink_gbs, "ib_gbs": args.ib_gbs,
                          "rows": [{"where": w, "paper_mfu": m, **p.as_dict()} for w, m, p in rows]}))
        return 0
    print(f"PREDICTION (a model, not a measurement) for {args.model}, seq {args.seq_len}, micro-batch "
          f"{args.micro_batch}: single-GPU MFU {100 * single:.1f}% from {args.predict}; NVLink {args.nvlink_gbs:g} "
          f"GB/s, InfiniBand {args.ib_gbs:g} GB/s per GPU; TP exposed, FSDP2 overlapped with compute")
    print(f"{'where':<22} {'tp x dp':>8} {'batch':>6} {'accum':>5} {'compute s':>9} {'TP s':>7} {'FSDP s':>7} "
          f"{'step s':>7} {'tok/s/GPU':>10} {'MFU':>6} {'paper':>6}")
    for where, paper, p in rows:
        print(f"{where:<22} {f'{p.tp} x {p.dp}':>8} {p.global_batch:>6} {p.accumulation:>5} {p.compute_s:>9.3f} "
              f"{p.tp_comm_s:>7.3f} {p.fsdp_comm_s:>7.3f} {p.step_s:>7.3f} {p.tokens_per_s_per_gpu:>10,.0f} "
              f"{100 * p.mfu:>5.1f}% {f'{100 * paper:.1f}%' if paper else '':>6}")
    return 0
