"""`nemotron4 prepare`: documents -> Megatron `.bin`/`.idx` token files."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="tokenize documents into Megatron .bin/.idx files",
        description="Tokenize JSONL, plain-text (one document per file) or Parquet files, or folders of them, into "
        "Megatron-LM .bin/.idx token files, each document as bos + text + eos (EOD), on all cores. Bad input "
        "(invalid UTF-8, missing field, empty document, unreadable file) is counted per file and reported. "
        "Either INPUT... --output PREFIX, or --manifest M --output-dir DIR (one file pair per source, plus "
        "held-out pairs and a sources.json for the blend).",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files or folders")
    p.add_argument("--output", help="output prefix (writes PREFIX.bin and PREFIX.idx)")
    p.add_argument("--manifest", help="corpus manifest.json instead of INPUT")
    p.add_argument("--output-dir", help="with --manifest: folder for the token files and sources.json")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model file")
    p.add_argument("--text-field", default="text", help="JSON/Parquet field holding the text (default: text)")
    p.add_argument("--workers", type=int, default=0, help="encoder processes (0: all cores)")
    p.add_argument("--engine", choices=("local", "dask"),
                   help="encode shards of the files on an engine's workers and merge them (byte-identical output): "
                        "local processes, or Dask (--scheduler ADDR: across nodes); default: this machine's pool")
    p.add_argument("--scheduler", help="with --engine dask: Dask scheduler address (tcp://host:8786)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-bos", dest="add_bos", action="store_false",
                   help="do not start documents with bos (eos separators only, like Megatron's preprocess_data "
                        "--append-eod); by default they start with bos, as evaluation prompts do")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.scheduler and args.engine != "dask":
        from nemotron4.errors import UserError

        raise UserError("--scheduler needs --engine dask")
    if args.engine:
        from nemotron4.data.engine import EngineConfig, open_engine

        with open_engine(EngineConfig(args.engine, args.workers, args.scheduler)) as engine:
            reports = _prepare(args, engine)
    else:
        reports = _prepare(args, None)
    for r in reports:
        rate = r.tokens / max(r.seconds, 1e-9)
        print(f"{r.output}: {r.documents} documents, {r.tokens} tokens ({r.dtype}), {r.bytes / 1e6:.1f} MB in "
              f"{r.seconds:.1f} s ({rate / 1e3:.0f}k tokens/s)")
        for f in r.files:
            if f.problems:
                detail = ", ".join(f"{k} {v}" for k, v in sorted(f.problems.items()))
                print(f"  {f.path}: skipped {detail}" + (f" ({f.error})" if f.error else ""))
    if args.manifest:
        print(f"blend sources: {args.output_dir}/sources.json")
    return 0


def _prepare(args: argparse.Namespace, engine) -> list:
    from nemotron4.data.prepare import prepare, prepare_manifest
    from nemotron4.data.prepare_shards import prepare_manifest_on_engine, prepare_on_engine
    from nemotron4.errors import UserError

    if args.manifest:
        if args.inputs or not args.output_dir:
            raise UserError("--manifest takes --output-dir and no INPUT arguments")
        if engine is not None:
            return prepare_manifest_on_engine(args.manifest, args.tokenizer, args.output_dir, engine,
                                              progress=not args.quiet, add_bos=args.add_bos)
        return prepare_manifest(args.manifest, args.tokenizer, args.output_dir, args.workers or None,
                                progress=not args.quiet, add_bos=args.add_bos)
    if not args.inputs or not args.output:
        raise UserError("give INPUT files/folders and --output PREFIX (or --manifest and --output-dir)")
    if engine is not None:
        return [prepare_on_engine(args.inputs, args.tokenizer, args.output, args.text_field, engine,
                                  progress=not args.quiet, add_bos=args.add_bos)]
    return [prepare(args.inputs, args.tokenizer, args.output, args.text_field, args.workers or None,
                    progress=not args.quiet, add_bos=args.add_bos)]
