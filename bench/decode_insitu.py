"""Kernel choices timed in the real decode step, not in isolation: tokens/s of the compiled, graph-captured batch-1
step of one model (random weights) for each variant of a JSON list, all in one process, printing a table and the
ratio of each to the first.

Isolated kernel timings (`triton_linear.autotune`) cannot see what a kernel does to its neighbours: an L2 prefetch
before the PDL wait that overlaps a small kernel before it, programs made resident early, a kernel that holds SM
resources while the next waits. Session 9 chose the decode defaults this way (bench/results/decode_h200_s9_sweep.json).

A variant is {"label": str, "configs": {"N,K": {KernelConfig fields}}, "decode_ops": {name: value}}: kernel configs
for batch-1 linear shapes of the model's precision (out, in), and module constants of
nemotron4.inference.decode_ops (EARLY_LAUNCH, ATTN_WARPS, ATTN_TARGET_PROGRAMS, LN_MAX_WARPS). What a variant leaves
out stays as the defaults.

    python bench/decode_insitu.py --int8 --variants '[{"label": "defaults"},
        {"label": "attn 8 warps", "decode_ops": {"ATTN_WARPS": 8}},
        {"label": "cuda w1", "configs": {"24576,6144": {"block_n": 2, "block_k": 1024, "num_warps": 2,
                                                          "backend": "cuda"}}}]'
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemotron4 import ModelConfig, build_model  # noqa: E402
from nemotron4.inference import decode_ops, generate_tokens  # noqa: E402
from nemotron4.inference import triton_linear as tl_  # noqa: E402
from nemotron4.inference.decode_form import prepare_decode  # noqa: E402
from nemotron4.inference.generation import release_decode_graphs  # noqa: E402

DECODE_OPS = ("EARLY_LAUNCH", "ATTN_WARPS", "ATTN_TARGET_PROGRAMS", "LN_MAX_WARPS")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def tokens_per_s(model, prompt: list[int], new: int, reps: int, device: str) -> float:
    """(new - 1) / (time(new tokens) - time(1 token)), medians of reps, after a warm-up (capture) run."""
    release_decode_graphs(model)
    generate_tokens(model, [prompt], new, compile=True)

    def t(n: int) -> float:
        times = []
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            generate_tokens(model, [prompt], n, compile=True)
            sync(device)
            times.append(time.perf_counter() - t0)
        return sorted(times)[reps // 2]

    return (new - 1) / (t(new) - t(1))


def apply(variant: dict, int8: bool) -> tuple[dict, dict]:
    """Install a variant; returns what it replaced (configs, decode_ops constants) for `restore`."""
    unknown = set(variant) - {"label", "configs", "decode_ops"}
    bad_ops = set(variant.get("decode_ops", {})) - set(DECODE_OPS)
    if unknown or bad_ops:
        raise SystemExit(f"decode_insitu: variant {variant.get('label')!r}: unknown keys {sorted(unknown | bad_ops)}; "
                         f"a variant has label, configs and decode_ops ({', '.join(DECODE_OPS)})")
    old_cfg, old_ops = {}, {}
    for shape, fields in variant.get("configs", {}).items():
        N, K = (int(v) for v in shape.split(","))
        key = (1, N, K, int8)
        old_cfg[key] = tl_.CONFIGS.get(key)
        tl_.CONFIGS[key] = tl_.KernelConfig(**fields)
    for name, value in variant.get("decode_ops", {}).items():
        old_ops[name] = getattr(decode_ops, name)
        setattr(decode_ops, name, value)
    return old_cfg, old_ops


def restore(old_cfg: dict, old_ops: dict) -> None:
    for key, cfg in old_cfg.items():
        if cfg is None:
            tl_.CONFIGS.pop(key, None)
        else:
            tl_.CONFIGS[key] = cfg
    for name, value in old_ops.items():
        setattr(decode_ops, name, value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="15b")
    ap.add_argument("--int8", action="store_true", help="int8 weight-only (default: bf16)")
    ap.add_argument("--variants", default='[{"label": "defaults"}]', help="a JSON list of variants, or @FILE")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda", help="cpu only to smoke-test this script with --model tiny")
    ap.add_argument("--out", default="bench/results/decode_insitu.json")
    args = ap.parse_args()
    text = Path(args.variants[1:]).read_text() if args.variants.startswith("@") else args.variants
    try:
        variants = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"decode_insitu: --variants is not valid JSON ({e})") from None
    if not isinstance(variants, list) or not variants or not all(isinstance(v, dict) for v in variants):
        raise SystemExit("decode_insitu: --variants must be a non-empty JSON list of objects")
    cfg = ModelConfig.from_name(args.model)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_len,), generator=g).tolist()
    model = build_model(cfg, device=args.device, dtype=torch.bfloat16, seed=0).eval()
    prepare_decode(model, int8=args.int8)
    res = {"bench": "decode_insitu", "command": " ".join(["python"] + sys.argv),
           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "none (cpu)", "torch": torch.__version__,
           "python": platform.python_version(), "model": args.model, "int8": args.int8, "rows": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, variant in enumerate(variants):
        label = variant.get("label", f"variant {i}")
        saved = apply(variant, args.int8)
        try:
            tps = tokens_per_s(model, prompt, args.new_tokens, args.reps, args.device)
        finally:
            restore(*saved)
        ratio = tps / res["rows"][0]["tokens_per_s"] if res["rows"] else 1.0
        res["rows"].append({"label": label, "tokens_per_s": tps, "us_per_token": 1e6 / tps, "over_first": ratio,
                            "variant": variant})
        print(f"{label:40s} {tps:8.1f} tok/s {1e6 / tps:8.0f} us/token  {ratio:6.3f}x", flush=True)
        out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
