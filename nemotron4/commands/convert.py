"""`nemotron4 convert`: between Hugging Face directories, nemotron4 weights and training checkpoints."""

from __future__ import annotations

import argparse

_DTYPES = ("bfloat16", "float16", "float32")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert weights between Hugging Face and nemotron4 formats",
        description="Read a model from SOURCE (a Hugging Face nemotron directory, a nemotron4 weights directory or "
        "a training run / checkpoint) and write it to DEST in the format --to names. Only safetensors and DCP are "
        "read: pickle files are never loaded.",
    )
    p.add_argument("source", help="model to read")
    p.add_argument("dest", help="directory to write")
    p.add_argument("--to", choices=("hf", "nemotron4"), required=True,
                   help="hf: config.json + safetensors that transformers loads; nemotron4: our weights directory")
    p.add_argument("--dtype", choices=_DTYPES, default=None, help="cast weights (default: keep the source's)")
    p.add_argument("--bos-id", type=int, default=2, help="bos_token_id written to an HF config (default 2)")
    p.add_argument("--eos-id", type=int, default=3, help="eos_token_id written to an HF config (default 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from nemotron4.weights import describe, load_model, save_weights

    dtype = getattr(torch, args.dtype) if args.dtype else None
    kind = describe(args.source)
    if kind == "flavour":
        from nemotron4.errors import UserError

        raise UserError(f"{args.source} is a flavour name, not weights; convert reads a model directory")
    model = load_model(args.source, dtype=dtype)
    if args.to == "hf":
        from nemotron4.interop.hf import to_hf

        out = to_hf(model, args.dest, dtype=dtype, bos_token_id=args.bos_id, eos_token_id=args.eos_id)
    else:
        out = save_weights(model, args.dest, dtype=dtype)
    from nemotron4.weights import find_tokenizer

    tokenizer = find_tokenizer(args.source)
    if tokenizer is not None:  # keep the tokenizer beside the weights, where generate and eval look for it
        import shutil

        shutil.copyfile(tokenizer, out / "tokenizer.model")
    n = model.param_counts()["total"]
    print(f"converted {args.source} ({kind}, {n:,} parameters) -> {out} ({args.to})")
    return 0
