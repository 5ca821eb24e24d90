"""The CUDA C++ int8 weight-only GEMV of nemotron4.inference.cuda_gemv (batch 1, one scale per row, bf16 in and
out) against our Triton gemv kernel (nemotron4.inference.triton_linear) at the 15B model's batch-1 decode shapes, in
one process: whether a CUDA kernel reads the int8 weights closer to HBM bandwidth than Triton does (issue 19).

Every (rows a warp, vectors in flight, warps a block) variant asked for is compiled by NVRTC and launched through
the driver API (cuda-bindings: pip install 'nemotron4[cuda]'; skipped with a message when absent), plainly or, with
--pdl, with programmatic dependent launch as the decode step launches kernels; the Triton kernel is timed both ways.
Each variant is a CUDA-graph replay over weight copies (none sits in L2), and its output is checked against
x @ (W * s)^T.

    python bench/cuda_gemv.py --out bench/results/decode_cuda_gemv.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nemotron4.inference import triton_linear as tl_  # noqa: E402
from nemotron4.inference.triton_linear import CUDA_ROW_STEP, KernelConfig  # noqa: E402

SHAPES = {"qkv": (8192, 6144), "wo": (6144, 6144), "w1": (24576, 6144), "w2": (6144, 24576), "output": (256000, 6144)}


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def bench_shape(name: str, N: int, K: int, variants: list, pdl: bool, g: torch.Generator) -> dict:
    copies = max(2, -(-200_000_000 // (N * K)))
    ws = [torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8, generator=g) for _ in range(copies)]
    s = (torch.rand(N, device="cuda", generator=g) * 0.01 + 0.001).to(torch.bfloat16)
    x = torch.randn(1, K, device="cuda", generator=g).to(torch.bfloat16)
    ref = ((x.float() @ ws[0].float().T) * s.float()).float()

    def rel(y):
        return ((y.float() - ref).norm() / ref.norm()).item()

    tl_.PDL = pdl
    t_tr = tl_.graph_time(lambda i: tl_.triton_linear(x, ws[i], s), copies)
    row = {"shape": name, "N": N, "K": K, "pdl": pdl, "triton_us": t_tr * 1e6,
           "triton_rel_err": rel(tl_.triton_linear(x, ws[0], s)), "cuda": {}}
    for rows, unroll, warps, stages in variants:
        if N % (warps * rows):
            continue
        cfg = KernelConfig(rows * warps, unroll * CUDA_ROW_STEP, num_warps=warps, num_stages=stages, backend="cuda")
        t = tl_.graph_time(lambda i, cfg=cfg: tl_.triton_linear(x, ws[i], s, cfg), copies)
        err = rel(tl_.triton_linear(x, ws[0], s, cfg))
        row["cuda"][f"r{rows}u{unroll}w{warps}s{stages}"] = {"us": t * 1e6, "rel_err": err}
    best, stats = min(row["cuda"].items(), key=lambda kv: kv[1]["us"])
    nbytes = N * K + N * 2
    row.update(best_cuda=best, best_cuda_us=stats["us"], triton_over_best_cuda=t_tr / (stats["us"] * 1e-6),
               best_cuda_TBps=nbytes / (stats["us"] * 1e-6) / 1e12, triton_TBps=nbytes / t_tr / 1e12)
    print(f"{name} (pdl {pdl}): triton {t_tr * 1e6:.2f} us (err {row['triton_rel_err']:.1e}); best "
          f"cuda {best} {stats['us']:.2f} us (err {stats['rel_err']:.1e}) = {row['best_cuda_TBps']:.2f} TB/s; "
          + " ".join(f"{k}:{v['us']:.1f}" for k, v in sorted(row["cuda"].items())), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--rows", default="1,2", help="rows a warp owns (comma list)")
    ap.add_argument("--unroll", default="1,2,3", help="16-byte vectors in flight per row and lane (comma list)")
    ap.add_argument("--warps", default="2,4,8", help="warps a block (comma list)")
    ap.add_argument("--stages", default="1,2", help="1: load a batch of vectors, then use it; 2: load the next "
                    "while using this one, the first before the PDL wait (comma list)")
    ap.add_argument("--pdl", default="0,1", help="launch plainly (0) and/or with programmatic dependent launch (1)")
    ap.add_argument("--out", default="bench/results/decode_cuda_gemv.json")
    args = ap.parse_args()
    try:
        from nemotron4.inference.cuda_gemv import bindings

        bindings()
    except RuntimeError as e:
        sys.exit(f"bench/cuda_gemv.py: {e}")
    import triton

    res = {"bench": "cuda_gemv", "command": " ".join(["python"] + sys.argv), "gpu": torch.cuda.get_device_name(),
           "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(), "rows": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    variants = list(itertools.product(ints(args.rows), ints(args.unroll), ints(args.warps), ints(args.stages)))
    g = torch.Generator(device="cuda").manual_seed(0)
    t0 = time.perf_counter()
    for name in args.shapes.split(","):
        for pdl in ints(args.pdl):
            res["rows"].append(bench_shape(name, *SHAPES[name], variants, bool(pdl), g))
            out.write_text(json.dumps(res, indent=1) + "\n")
            torch.cuda.empty_cache()
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
