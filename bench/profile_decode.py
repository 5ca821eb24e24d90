"""Where a compiled decode step spends its time, and which decode-linear kernel config is fastest on this GPU.

    python bench/profile_decode.py --kernels [--out sweep.json]     # per-shape sweep of the Triton linear vs cuBLAS
    python bench/profile_decode.py [--model 15b] [--variants bf16,gemv,int8] [--profile]

--kernels times every candidate config of `nemotron4.inference.triton_linear` on the 15B model's linear shapes
(batch rows M = 1, 8, 32, 64; int8 and bf16 weights) against cuBLAS on the bf16 weight, each call replayed from a
CUDA graph over enough weight copies that none sits in L2, checks each result against torch, and prints the best
config per shape. The end-to-end mode reports decode tokens/s per variant (bf16 = cuBLAS linears, gemv = bf16
through the Triton GEMV, int8 = weight-only int8) and, with --profile, the top GPU kernels of a few steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.decode import read_bandwidth  # noqa: E402
from nemotron4 import ModelConfig, build_model  # noqa: E402
from nemotron4.inference import generate_tokens, remove_caches  # noqa: E402
from nemotron4.inference.quantize import quantize_int8, torch_weight_linear, use_triton_linears  # noqa: E402
from nemotron4.inference.triton_linear import KernelConfig, graph_time, triton_linear  # noqa: E402

SHAPES_15B = {"wq/wo": (6144, 6144), "wk/wv": (1024, 6144), "w1": (24576, 6144), "w2": (6144, 24576),
              "output": (256000, 6144)}
LINEARS_PER_TOKEN = {"wq/wo": 64, "wk/wv": 64, "w1": 32, "w2": 32, "output": 1}
K = KernelConfig
CANDIDATES = {  # (M, int8) -> configs
    (1, True): [K(8, 512), K(8, 512, convert=2), K(16, 512), K(8, 1024, num_warps=8), K(8, 512, convert=0),
                K(8, 512, split_k=2), K(4, 1024), K(16, 1024, num_warps=8, convert=2),
                # software-pipelined loads, longer K steps, fewer rows per program
                K(8, 512, num_stages=3, convert=2), K(4, 1024, num_stages=3, convert=2), K(4, 1024, convert=2),
                K(8, 512, num_stages=4, convert=2), K(4, 2048, convert=2), K(2, 2048, convert=2)],
    (1, False): [K(8, 256), K(4, 512), K(16, 256, num_warps=8), K(8, 256, split_k=2)],
    (8, True): [K(32, 256, num_stages=4), K(16, 512, num_stages=3), K(64, 128, num_stages=4),
                K(32, 256, split_k=2, num_stages=4)],
    (32, True): [K(64, 128, num_stages=4, block_m=32), K(128, 128, num_warps=8, num_stages=3, block_m=32),
                 K(32, 256, num_stages=4, block_m=32), K(32, 256, split_k=4, num_stages=4, block_m=32)],
    (64, True): [K(64, 128, num_stages=4, block_m=64), K(128, 128, num_warps=8, num_stages=3, block_m=64),
                 K(64, 256, num_warps=8, num_stages=3, block_m=64),
                 K(64, 128, split_k=4, num_warps=8, num_stages=3, block_m=64)],
}
M_SHAPES = {1: list(SHAPES_15B), 8: ["wq/wo", "w1", "w2", "wk/wv"], 32: ["wq/wo", "w1", "w2"],
            64: ["wq/wo", "w1", "w2"]}


def sweep_shape(name: str, N: int, Kd: int, bw: float, rows: list, best: dict, deadline: float,
                ms: tuple[int, ...] = (1, 8, 32, 64), first: int = 0, int8_only: bool = False) -> bool:
    """Time every candidate (from the first-th on) on one weight shape; False once the deadline has passed."""
    g = torch.Generator(device="cuda").manual_seed(N + Kd)
    w16 = torch.randn(N, Kd, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    scales = w16.float().abs().amax(1).clamp(min=1e-8) / 127
    w8 = torch.round(w16.float() / scales[:, None]).to(torch.int8)
    scales = scales.to(torch.bfloat16)
    W8 = [w8] + [w8.clone() for _ in range(max(2, min(32, -(-(400 << 20) // w8.numel()))) - 1)]
    W16 = [w16] + [w16.clone() for _ in range(max(2, min(32, -(-(400 << 20) // (2 * w8.numel())))) - 1)]
    for M in ms:
        if name not in M_SHAPES[M]:
            continue
        x = torch.randn(M, Kd, device="cuda", dtype=torch.bfloat16, generator=g)
        refs = {True: (x.double() @ w8.double().T * scales.double()).float(),
                False: (x.double() @ w16.double().T).float()}
        nbytes = {True: N * Kd + N * 2 + M * Kd * 2 + M * N * 2, False: N * Kd * 2 + M * Kd * 2 + M * N * 2}

        def record(variant, t, int8, err=None, cfg=None, M=M, nbytes=nbytes):
            gbps = nbytes[int8] / t / 1e9
            rows.append({"shape": name, "N": N, "K": Kd, "M": M, "variant": variant, "us": t * 1e6, "GBps": gbps,
                         "of_read_bw": gbps / bw, "rel_err": err, "config": None if cfg is None else cfg.__dict__})
            print(f"{name:7s} M={M:2d} {variant:52s} {t * 1e6:8.1f} us {gbps:6.0f} GB/s {gbps / bw:6.1%}"
                  + ("" if err is None else f"  err {err:.1e}"), flush=True)
            key = f"{M},{N},{Kd},{int8}"
            if cfg is not None and (key not in best or t < best[key]["us"] / 1e6):
                best[key] = {"us": t * 1e6, "config": cfg.__dict__, "of_read_bw": gbps / bw}

        record("cublas bf16", graph_time(lambda i, x=x: F.linear(x, W16[i]), len(W16)), False)
        if M > 1 and not first:
            record("torch dequant + cublas (int8)",
                   graph_time(lambda i, x=x: torch_weight_linear(x, W8[i], scales), len(W8)), True)
        for int8 in (True,) if int8_only else (True, False):
            Ws, s = (W8, scales) if int8 else (W16, None)
            for cfg in CANDIDATES.get((M, int8), [])[first:]:
                if time.perf_counter() > deadline:
                    return False
                if Kd % (cfg.block_k * cfg.split_k):
                    continue
                try:
                    y = triton_linear(x, Ws[0], s, cfg)
                    err = ((y.float() - refs[int8]).norm() / refs[int8].norm()).item()
                    t = graph_time(lambda i, x=x, Ws=Ws, s=s, cfg=cfg: triton_linear(x, Ws[i], s, cfg), len(Ws))
                except Exception as e:  # a config that does not compile here: report, go on
                    print(f"{name} M={M} {cfg}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                    continue
                if not err < 2e-2:
                    print(f"{name} M={M} {cfg}: WRONG rel err {err}", flush=True)
                    continue
                record(f"{'int8' if int8 else 'bf16'} {cfg.block_n}x{cfg.block_k} s{cfg.split_k} w{cfg.num_warps} "
                       f"st{cfg.num_stages} bm{cfg.block_m} c{cfg.convert}", t, int8, err, cfg)
    return True


def sweep(budget_s: float, shapes: list[str], ms: tuple[int, ...], first: int, int8_only: bool) -> dict:
    bw = read_bandwidth()["read_GBps"]
    print(f"HBM read {bw:.0f} GB/s", flush=True)
    rows, best = [], {}
    deadline = time.perf_counter() + budget_s
    done = True
    for name in shapes:
        N, Kd = SHAPES_15B[name]
        done = done and sweep_shape(name, N, Kd, bw, rows, best, deadline, ms, first, int8_only)
        torch.cuda.empty_cache()
        if not done:
            print("sweep: time budget spent, stopping", flush=True)
            break
    return {"read_GBps": bw, "rows": rows, "best": best, "complete": done}


def tokens_per_s(model, prompt, new, batch=1) -> float:
    prompts = [prompt] * batch

    def run(n):
        return generate_tokens(model, prompts, n, compile=True)

    run(new)
    times = {}
    for n in (1, new):
        ts = []
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(n)
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        times[n] = sorted(ts)[1]
    return batch * (new - 1) / (times[new] - times[1])


def profile(model, prompt, steps: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        generate_tokens(model, [prompt], steps, compile=True)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=80))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", action="store_true", help="sweep the Triton linear configs (no model)")
    ap.add_argument("--budget-s", type=float, default=120.0, help="--kernels: stop the sweep after this long")
    ap.add_argument("--shapes", default=",".join(SHAPES_15B), help="--kernels: comma list of " + ", ".join(SHAPES_15B))
    ap.add_argument("--rows", default="1,8,32,64", help="--kernels: comma list of batch rows M")
    ap.add_argument("--first", type=int, default=0, help="--kernels: skip the first N candidates of each list")
    ap.add_argument("--int8-only", action="store_true", help="--kernels: int8 weights only")
    ap.add_argument("--model", default="15b")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--variants", default="bf16,gemv,int8", help="comma list of: bf16, gemv, int8")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of a few decode steps")
    ap.add_argument("--tuned", help="comma list of --kernels JSON files whose best configs to use")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    if args.kernels:
        res = sweep(args.budget_s, args.shapes.split(","), tuple(int(m) for m in args.rows.split(",")), args.first,
                    args.int8_only)
        print("\n| M | N | K | weights | best config | us | of read BW |\n|---|---|---|---|---|---|---|")
        for key, b in sorted(res["best"].items()):
            print(f"| {key.replace(',', ' | ')} | {b['config']} | {b['us']:.1f} | {b['of_read_bw']:.1%} |")
        per_token = {}
        for r in res["rows"]:
            if r["M"] == 1:
                kind = "cublas bf16" if r["config"] is None else r["variant"].split()[0] + " best"
                key = (kind, r["shape"])
                per_token[key] = min(per_token.get(key, 1e9), r["us"])
        for kind in ("cublas bf16", "bf16 best", "int8 best"):
            if all((kind, s) in per_token for s in SHAPES_15B):
                us = sum(per_token[kind, s] * LINEARS_PER_TOKEN[s] for s in SHAPES_15B)
                print(f"batch-1 linears per token, {kind}: {us / 1e3:.2f} ms (<= {1e6 / us:.0f} tok/s)")
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        return
    if args.tuned:
        from nemotron4.inference.triton_linear import load_tuned

        load_tuned(args.tuned.split(","))
    cfg = ModelConfig.from_name(args.model)
    model = build_model(cfg, device="cuda", dtype=torch.bfloat16, seed=0).eval()
    prompt = list(range(100, 228))
    rows = []
    for variant in args.variants.split(","):
        remove_caches(model)
        if variant == "gemv":
            use_triton_linears(model)
        elif variant == "int8":
            quantize_int8(model)
        t0 = time.perf_counter()
        tps = tokens_per_s(model, prompt, args.new_tokens)
        rows.append({"variant": variant, "tokens_per_s": tps, "seconds_incl_compile": time.perf_counter() - t0})
        print(f"{variant}: {tps:.1f} tok/s", flush=True)
        if args.profile:
            profile(model, prompt, args.new_tokens)  # the same cache length: no recompile
    for r in rows:
        print(f"| {r['variant']} | {r['tokens_per_s']:.1f} tok/s | {r['seconds_incl_compile']:.0f} s incl. compile |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
