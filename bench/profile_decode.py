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
                record(f"{'int8' if int8 else 'bf16'} {cfg.label()}", t, int8, err, cfg)
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


def ops_bench() -> dict:
    """Batch-1 (and batch-64) timings of the fused decode ops against the forms they replace: one layer's attention
    (RoPE on q + SDPA over the cache with the boolean mask, as the model called it) and the residual add +
    LayerNorm1P (Inductor's compiled form), each replayed from a CUDA graph over enough copies to leave L2."""
    from nemotron4.inference.decode_ops import add_layernorm, attention_splits, triton_decode_attention
    from nemotron4.model import apply_rope

    H, KVH, D, rot = 48, 8, 128, 64
    res = {"attention": [], "layernorm": []}
    g = torch.Generator(device="cuda").manual_seed(0)
    for B, S in ((1, 256), (1, 4096), (8, 160), (64, 160)):
        pos = torch.tensor([S - 1], device="cuda")
        kv_bytes = 2 * B * KVH * S * D * 2
        copies = max(4, min(64, (256 << 20) // kv_bytes))
        kv = [torch.randn(2, B, KVH, S, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(copies)]
        q = torch.randn(B, 1, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
        mask = torch.ones(B, 1, 1, S, dtype=torch.bool, device="cuda")
        ang = torch.rand(1, rot, device="cuda", generator=g)
        cos, sin = ang.cos(), ang.sin()

        def model_call(i, q=q, kv=kv, mask=mask, cos=cos, sin=sin):
            qr = apply_rope(q, cos, sin).transpose(1, 2)
            return F.scaled_dot_product_attention(qr, kv[i][0], kv[i][1], attn_mask=mask, enable_gqa=True)

        row = {"B": B, "S": S, "kv_MB": kv_bytes / 1e6,
               "sdpa_model_call_us": graph_time(model_call, copies) * 1e6}
        for n in sorted({1, 2, 4, 8, 16, attention_splits(B, KVH, S)}):
            if n > 1 and B * KVH >= 512:
                continue
            def ours_call(i, n=n, q=q, kv=kv, mask=mask, cos=cos, sin=sin, pos=pos):
                return triton_decode_attention(q, kv[i][0], kv[i][1], mask, cos, sin, pos, n_splits=n)

            t = graph_time(ours_call, copies)
            row[f"ours_splits{n}_us"] = t * 1e6
        row["auto_splits"] = attention_splits(B, KVH, S)
        res["attention"].append(row)
        print("attention", json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)
        del kv
    from nemotron4.inference.decode_ops import torch_layernorm

    for rows in (1, 64):
        xs = [torch.randn(rows, 1, 6144, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2)]
        w, b = (torch.randn(6144, device="cuda", generator=g).to(torch.bfloat16) * 0.1 for _ in range(2))
        inductor = torch.compile(lambda x, d, w=w, b=b: (x + d, torch_layernorm(x + d, w, b, 1e-5)), dynamic=False,
                                 options={"coordinate_descent_tuning": True})
        r = {"rows": rows,
             "inductor_add_ln_us": graph_time(lambda i, f=inductor, xs=xs: f(xs[0], xs[1]), 1) * 1e6,
             "ours_add_ln_us": graph_time(lambda i, xs=xs, w=w, b=b: add_layernorm(xs[0], xs[1], w, b, 1e-5), 1) * 1e6}
        res["layernorm"].append(r)
        print("layernorm", json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
    from nemotron4.inference import triton_linear as tl_mod
    from nemotron4.inference.triton_linear import config_for, random_linear_case

    res["gemv_prefetch"] = []
    default = tl_mod.PREFETCH
    bw = read_bandwidth()["read_GBps"] * 1e9
    for N, Kd in ((8192, 6144), (6144, 6144), (24576, 6144), (6144, 24576), (256000, 6144)):
        for int8 in (True, False):
            x, ws, sc = random_linear_case(1, N, Kd, int8, "cuda", g)
            tcfg = config_for(1, N, Kd, int8)  # the Triton kernel's (PREFETCH is one of its options)
            r = {"N": N, "K": Kd, "int8": int8, "config": tcfg.__dict__}
            for pf in (True, False):
                tl_mod.PREFETCH = pf
                t = graph_time(lambda i, x=x, ws=ws, sc=sc, c=tcfg: triton_linear(x, ws[i], sc, c), len(ws))
                r[f"prefetch_{pf}_us"] = t * 1e6
                r[f"prefetch_{pf}_of_bw"] = (ws[0].nbytes + (sc.nbytes if sc is not None else 0)) / t / bw
            tl_mod.PREFETCH = default
            res["gemv_prefetch"].append(r)
            print("gemv", N, Kd, int8, {k: round(v, 3) for k, v in r.items() if k.startswith("prefetch")},
                  flush=True)
            del x, ws
            torch.cuda.empty_cache()
    return res


def fast_e2e(model_name: str, new: int, prompt_len: int = 128) -> dict:
    """The decode form end to end (bench/decode.py's protocol, shortened): bf16 prepare_decode, then the same
    model quantized to int8 in place, int8 with the GEMV prefetch flipped, and a kernel profile of the int8 step."""
    from bench.decode import profile_kernels, time_ours
    from nemotron4.inference import triton_linear as tl_mod
    from nemotron4.inference.decode_form import prepare_decode
    from nemotron4.inference.generation import release_decode_graphs
    from nemotron4.inference.quantize import autotune_model

    bw = read_bandwidth()["read_GBps"] * 1e9
    cfg = ModelConfig.from_name(model_name)
    model = build_model(cfg, device="cuda", dtype=torch.bfloat16, seed=0).eval()
    prompt = list(range(100, 100 + prompt_len))
    from bench.decode import bytes_read_per_token

    out = {"read_GBps": bw / 1e9}
    prepare_decode(model)
    autotune_model(model)
    default = tl_mod.PREFETCH
    for name in ("bf16", "int8", "int8_prefetch_flipped"):
        if name == "int8":
            release_decode_graphs(model)
            remove_caches(model)
            quantize_int8(model)
            torch.cuda.empty_cache()
            autotune_model(model)
        if name == "int8_prefetch_flipped":
            tl_mod.PREFETCH = not default
            release_decode_graphs(model)
        r = time_ours(model, prompt, new)
        r.pop("tokens")
        r["roofline_fraction"] = r["tokens_per_s"] * bytes_read_per_token(model) / bw
        out[name] = r
        print(f"{name}: {r['tokens_per_s']:.1f} tok/s, {r['roofline_fraction']:.1%} of roofline "
              f"(first run {r['first_run_s']:.0f} s)", flush=True)
    tl_mod.PREFETCH = default
    release_decode_graphs(model)
    prof = profile_kernels(model, prompt, steps=new, top=14)
    out["int8_profile"] = prof
    for r in prof["top"]:
        print(f"  {r['us_per_token']:8.1f} us x{r['calls_per_token']:5.1f}  {r['kernel'][:90]}")
    return out


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
    ap.add_argument("--ops", action="store_true", help="time the fused decode ops against what they replace")
    ap.add_argument("--fast", action="store_true", help="the decode form end to end: bf16, int8, int8 without "
                    "the GEMV prefetch, and the int8 step's kernel profile")
    args = ap.parse_args()
    if args.tuned:
        from nemotron4.inference.triton_linear import load_tuned

        load_tuned(args.tuned.split(","))
    if args.ops or args.fast:
        res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
        if args.ops:
            res["ops"] = ops_bench()
        if args.fast:
            res["fast"] = fast_e2e(args.model, args.new_tokens)
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
        return
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
