"""`nemotron4 convert`: between Hugging Face directories, nemotron4 weights, training checkpoints and Megatron-Core /
NeMo checkpoints."""

from __future__ import annotations

import argparse

from nemotron4.commands import DTYPES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert weights between Hugging Face, nemotron4 and Megatron-Core / NeMo formats",
        description="Read a model from SOURCE (a Hugging Face nemotron directory, a nemotron4 weights directory, "
        "a training run / checkpoint, a Megatron-Core distributed checkpoint (torch_dist or zarr; a Megatron-LM save "
        "directory), a NeMo 1 .nemo archive or its extracted directory, or a NeMo 2 checkpoint directory) and write "
        "it to DEST in the format --to names. Megatron / NeMo sources are read one tensor at a time and written into "
        "a temporary directory renamed to DEST at the end. Pickles (common.pt, DCP .metadata) are read only through "
        "allow-lists; pickle weight files are never loaded.",
    )
    p.add_argument("source", help="model to read")
    p.add_argument("dest", help="directory to write")
    p.add_argument("--to", choices=("hf", "nemotron4", "megatron"), required=True,
                   help="hf: config.json + safetensors that transformers loads; nemotron4: our weights directory; "
                   "megatron: a Megatron-Core torch_dist checkpoint + model_config.yaml (DEST must be new or empty)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="cast weights (default: keep the source's)")
    p.add_argument("--bos-id", type=int, default=None,
                   help="bos_token_id written to an HF config (default: the tokenizer's, else 2)")
    p.add_argument("--eos-id", type=int, default=None,
                   help="eos_token_id written to an HF config (default: the tokenizer's, else 3)")
    p.add_argument("--tokenizer", default=None,
                   help="SentencePiece model to ship with the weights (default: the one beside SOURCE, if any); "
                   "--to hf also writes tokenizer.json + tokenizer_config.json for AutoTokenizer")
    p.add_argument("--force", action="store_true", help="write into DEST even if it exists and is not empty")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from nemotron4.errors import UserError
    from nemotron4.weights import describe, load_model, save_weights

    dtype = getattr(torch, args.dtype) if args.dtype else None
    kind = describe(args.source)
    if kind == "flavour":
        raise UserError(f"{args.source} is a flavour name, not weights; convert reads a model directory")
    if kind in ("megatron", "nemo") or args.to == "megatron":
        return _run_streaming(args, kind, dtype)
    dest = Path(args.dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not args.force:
        raise UserError(f"{dest} is not an empty directory; choose a new DEST or pass --force to write into it")
    from nemotron4.weights import find_tokenizer, load_tokenizer

    model = load_model(args.source, dtype=dtype)
    tokenizer = args.tokenizer or find_tokenizer(args.source)
    if tokenizer is not None:  # checked against the model before anything is written
        tokenizer = load_tokenizer(args.source, model.cfg.vocab_size, tokenizer).path
    if args.to == "hf":
        from nemotron4.interop.hf import to_hf

        out = to_hf(model, args.dest, dtype=dtype, bos_token_id=args.bos_id, eos_token_id=args.eos_id,
                    tokenizer=tokenizer)
    else:
        out = save_weights(model, args.dest, dtype=dtype)
        if tokenizer is not None:  # keep the tokenizer beside the weights, where generate and eval look for it
            import shutil

            shutil.copyfile(tokenizer, out / "tokenizer.model")
    n = model.param_counts()["total"]
    shipped = f", tokenizer {tokenizer}" if tokenizer is not None else ", no tokenizer found (pass --tokenizer)"
    print(f"converted {args.source} ({kind}, {n:,} parameters{shipped}) -> {out} ({args.to})")
    return 0


def _run_streaming(args: argparse.Namespace, kind: str, dtype) -> int:
    """Megatron / NeMo sources (streamed tensor by tensor) and --to megatron (from any source), written into a
    temporary directory renamed to DEST at the end, with the tokenizer (--to hf: also as tokenizer.json +
    tokenizer_config.json, as the in-memory path writes it)."""
    from pathlib import Path

    from nemotron4.errors import UserError
    from nemotron4.interop import megatron
    from nemotron4.interop.hf import write_hf, write_hf_tokenizer
    from nemotron4.tokenizer import Tokenizer
    from nemotron4.weights import check_tokenizer, find_tokenizer, load_model, write_weights

    if kind in ("megatron", "nemo"):
        ckpt = megatron.open_checkpoint(args.source)
        cfg, plan, tensors = ckpt.cfg, megatron.plan(ckpt), megatron.iter_tensors(ckpt)
        tokenizer = ckpt.tokenizer_bytes()
    else:
        model = load_model(args.source, dtype=dtype)
        cfg, plan, tensors = model.cfg, None, model.named_parameters()
        found = find_tokenizer(args.source)
        tokenizer = found.read_bytes() if found is not None else None
    if args.tokenizer is not None:  # --tokenizer wins over the one shipped with the source
        tokenizer = Path(args.tokenizer).read_bytes() if Path(args.tokenizer).is_file() else None
        if tokenizer is None:
            raise UserError(f"--tokenizer {args.tokenizer}: no such file; pass a SentencePiece .model file")
    with megatron.atomic_output(args.dest) as tmp:
        sp_model = None
        if tokenizer is not None:  # kept beside the weights, where generate and eval look for it
            (tmp / "tokenizer.model").write_bytes(tokenizer)
            try:
                sp = Tokenizer.load(tmp / "tokenizer.model")
            except UserError:
                import warnings

                if args.to == "hf":
                    warnings.warn(f"the tokenizer of {args.source} is not a SentencePiece model this program "
                                  "reads: copied as tokenizer.model, but no tokenizer.json / tokenizer_config.json "
                                  "written", stacklevel=1)
            else:
                sp_model = check_tokenizer(sp, cfg.vocab_size).path  # before any tensor is written
        if args.to == "hf":
            bos, eos = write_hf_tokenizer(sp_model, tmp, args.bos_id, args.eos_id)
            write_hf(cfg, plan, tensors, tmp, dtype, bos_token_id=bos, eos_token_id=eos)
        elif args.to == "nemotron4":
            write_weights(cfg, plan, tensors, tmp, dtype)
        else:
            megatron.write_megatron(cfg, tensors, tmp, dtype)
    print(f"converted {args.source} ({kind}, {cfg.n_layers} layers, dim {cfg.dim}) -> {args.dest} ({args.to})")
    return 0
