"""`nemotron4 info`: a model's configuration, parameter breakdown and weight memory."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="parameter breakdown and weight memory of a flavour or model directory",
        description="Print a model's configuration, its parameters split as in the Nemotron-4 report (embedding / "
        "non-embedding, per block), and the memory its weights take. Reads no weights: the model is built on "
        "the meta device.",
    )
    p.add_argument("--model", required=True, help="a flavour (tiny, minitron-4b, minitron-8b, 15b, 340b), "
                   "a Hugging Face nemotron directory, or a nemotron4 weights directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def model_info(spec: str) -> dict:
    import torch

    from nemotron4.model import Nemotron4
    from nemotron4.weights import load_config

    cfg = load_config(spec)
    with torch.device("meta"):
        model = Nemotron4(cfg)
    counts = model.param_counts()
    block = model.layers[0]
    per_block = {
        "attention": sum(p.numel() for p in block.attention.parameters()),
        "feed_forward": sum(p.numel() for p in block.feed_forward.parameters()),
        "norms": sum(p.numel() for p in (*block.attention_norm.parameters(), *block.ffn_norm.parameters())),
    }
    bf16 = 2
    return {
        "model": spec,
        "config": cfg.to_dict(),
        "params": counts,
        "params_per_block": per_block,
        "weights_bytes": {"bf16": counts["total"] * bf16, "fp32": counts["total"] * 4},
        # A batch-1 decode step reads every weight but the input embedding (only one row of it is gathered).
        "decode_bytes_per_token_bf16": (counts["total"] - model.tok_embeddings.weight.numel()) * bf16,
    }


def _fmt(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(int(n))


def _bytes(n: float, base: int = 1024) -> str:
    """12.3 GiB / 5.1 MiB / 300 KiB (base 1024), or GB / MB / kB (base 1000): no "0.00 GiB" for a small model."""
    units = ("GiB", "MiB", "KiB") if base == 1024 else ("GB", "MB", "kB")
    for unit, scale in zip(units, (base**3, base**2, base), strict=True):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def run(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cfg, params, blk = info["config"], info["params"], info["params_per_block"]
    print(f"model {args.model}")
    print("  " + "  ".join(f"{k}={v}" for k, v in cfg.items()))
    print(f"  parameters      {_fmt(params['total']):>10}  ({params['total']:,})")
    print(f"    embedding     {_fmt(params['embedding']):>10}  input embedding + untied output projection")
    print(f"    non-embedding {_fmt(params['non_embedding']):>10}  {cfg['n_layers']} blocks + final norm")
    print(f"    per block     {_fmt(sum(blk.values())):>10}  attention {_fmt(blk['attention'])}, "
          f"feed_forward {_fmt(blk['feed_forward'])}, norms {_fmt(blk['norms'])}")
    print(f"  weights         {_bytes(info['weights_bytes']['bf16']):>14} bf16   "
          f"{_bytes(info['weights_bytes']['fp32'])} fp32")
    print(f"  decode reads    {_bytes(info['decode_bytes_per_token_bf16'], 1000):>14} per token at batch 1 (bf16)")
    return 0
