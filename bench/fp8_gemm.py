"""The ceiling of `train.fp8` at a shape: each GEMM of a training step in bf16 (torch.mm) and in fp8 e4m3 with
tensorwise scales (torch._scaled_mm, what torchao's float8 runs), timed alone on the GPU.

For every linear layer of a block (q, k, v, o, MLP up, MLP down) and the output projection, the forward GEMM and
the two backward GEMMs (grad input, grad weight) at micro-batch x seq tokens; prints each one's TFLOP/s in both
formats, the GEMM time of a whole step (layers x accumulation) and what the step would take if only those GEMMs
got faster (Amdahl, no cast overhead) against a measured bf16 step time.

    python bench/fp8_gemm.py --micro 4 --bf16-step 1.366 [--out gemm.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemotron4 import ModelConfig  # noqa: E402


def bench_ms(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def gemm_pair(m: int, k: int, n: int) -> tuple[float, float]:
    """Median ms of (m x k) @ (k x n) in bf16 and in fp8 e4m3 (tensorwise scales, bf16 out); random data."""
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)  # row-major (n, k): b.t() is column-major
    bf16 = bench_ms(lambda: torch.mm(a, b.t()))
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda")
    fp8 = bench_ms(lambda: torch._scaled_mm(a8, b8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    return bf16, fp8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minitron-4b")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--bf16-step", type=float, default=0.0, help="measured bf16 step seconds (for the Amdahl line)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    cfg = ModelConfig.from_name(args.model)
    t, d, hd = args.micro * args.seq_len, cfg.dim, cfg.head_dim
    linears = {"wq": (d, cfg.n_heads * hd), "wk": (d, cfg.n_kv_heads * hd), "wv": (d, cfg.n_kv_heads * hd),
               "wo": (cfg.n_heads * hd, d), "w1": (d, cfg.ffn_dim), "w2": (cfg.ffn_dim, d)}
    rows: list[dict] = []

    def step_gemms(name: str, shapes: dict[str, tuple[int, int, int]]) -> dict[str, float]:
        total = {"bf16": 0.0, "fp8": 0.0}
        for gemm, shape in shapes.items():
            bf16, fp8 = gemm_pair(*shape)
            flop = 2 * shape[0] * shape[1] * shape[2]
            rows.append({"linear": name, "gemm": gemm, "mkn": shape, "bf16_ms": bf16, "fp8_ms": fp8})
            total["bf16"] += bf16
            total["fp8"] += fp8
            print(f"| {name} | {gemm} | {'x'.join(map(str, shape))} | {flop / bf16 / 1e9:.0f} | "
                  f"{flop / fp8 / 1e9:.0f} | {bf16 / fp8:.2f} |")
        return total

    print("| linear | GEMM | m x k x n | bf16 TFLOP/s | fp8 TFLOP/s | fp8 speedup |\n|---|---|---|---|---|---|")
    block_ms = {"bf16": 0.0, "fp8": 0.0}
    for name, (k, n) in linears.items():
        ms = step_gemms(name, {"fwd": (t, k, n), "grad in": (t, n, k), "grad w": (n, t, k)})
        block_ms = {f: block_ms[f] + ms[f] for f in ms}
    chunk, v = 4096, cfg.vocab_size  # the fused loss's chunk of tokens (nemotron4.ops.cross_entropy)
    out_ms = step_gemms("output (bf16 kept)", {"fwd": (chunk, d, v), "grad in": (chunk, v, d), "grad w": (v, chunk, d)})
    per_step = args.global_batch // args.micro * cfg.n_layers
    step_bf16, step_fp8 = block_ms["bf16"] * per_step / 1e3, block_ms["fp8"] * per_step / 1e3
    res = {"model": args.model, "micro_batch": args.micro, "seq_len": args.seq_len, "gpu": torch.cuda.get_device_name(),
           "torch": torch.__version__, "gemms": rows, "block_gemm_s_per_step_bf16": step_bf16,
           "block_gemm_s_per_step_fp8": step_fp8,
           "output_gemm_s_per_step_bf16": out_ms["bf16"] * args.global_batch * args.seq_len / chunk / 1e3,
           "output_gemm_s_per_step_fp8": out_ms["fp8"] * args.global_batch * args.seq_len / chunk / 1e3}
    print(f"block GEMMs per step: bf16 {step_bf16:.3f} s, fp8 {step_fp8:.3f} s ({step_bf16 / step_fp8:.2f}x); "
          f"output GEMMs (bf16 kept) {res['output_gemm_s_per_step_bf16']:.3f} s, in fp8 they would be "
          f"{res['output_gemm_s_per_step_fp8']:.3f} s")
    if args.bf16_step:
        ceiling = args.bf16_step / (args.bf16_step - step_bf16 + step_fp8)
        res["bf16_step_s"], res["fp8_ceiling_over_bf16"] = args.bf16_step, ceiling
        print(f"bf16 step {args.bf16_step:.3f} s: block GEMMs are {step_bf16 / args.bf16_step:.0%} of it; with only "
              f"those in fp8 and no cast overhead the step would be {ceiling:.2f}x faster")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
