"""`nemotron4 data inspect`: what a token file holds."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="inspect token files")
    sub = p.add_subparsers(dest="data_command", metavar="<action>", required=True)
    i = sub.add_parser(
        "inspect",
        help="documents, tokens, dtype of a .bin/.idx pair",
        description="Summarise a Megatron .bin/.idx token file pair (validating it), and optionally show one "
        "document's tokens, or its text when --tokenizer is given.",
    )
    i.add_argument("prefix", help="token file prefix (PREFIX.bin, PREFIX.idx)")
    i.add_argument("--doc", type=int, help="show this document (0-based)")
    i.add_argument("--tokenizer", help="SentencePiece model: decode the document to text and check token ids")
    i.add_argument("--max-ids", type=int, default=64, metavar="N",
                   help="with --doc: print the first N token ids and the last few (0: all; --json always has all)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=inspect)


def inspect(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from nemotron4.data.indexed import IndexedDataset
    from nemotron4.errors import UserError

    ds = IndexedDataset(args.prefix)
    lengths = ds.sequence_lengths
    info: dict = {
        "prefix": ds.prefix, "documents": ds.num_documents, "sequences": len(ds), "tokens": ds.num_tokens,
        "dtype": np.dtype(ds.dtype).name,
        "doc_tokens": {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 1), "max": int(lengths.max())}
        if len(ds) else None,
    }
    tok = None
    if args.tokenizer:
        from nemotron4.tokenizer import Tokenizer

        tok = Tokenizer.load(args.tokenizer)
        ds.check_tokens(tok.vocab_size)
        info["tokenizer"] = {"path": args.tokenizer, "vocab_size": tok.vocab_size, "ids_in_range": True}
    if args.doc is not None:
        if not 0 <= args.doc < ds.num_documents:
            raise UserError(f"--doc {args.doc} is out of range: {ds.prefix} has {ds.num_documents} documents")
        lo, hi = ds.document_indices[args.doc], ds.document_indices[args.doc + 1]
        ids = np.concatenate([ds[i] for i in range(lo, hi)]).tolist() if hi > lo else []
        info["doc"] = {"index": args.doc, "tokens": ids}
        if tok is not None:
            info["doc"]["text"] = tok.decode(ids)
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    for k in ("prefix", "documents", "sequences", "tokens", "dtype", "doc_tokens"):
        print(f"{k:>10}: {info[k]}")
    if "doc" in info:
        ids = info["doc"]["tokens"]
        print(f"document {args.doc}: {len(ids)} tokens")
        head, tail = args.max_ids, min(16, args.max_ids)
        if args.max_ids <= 0 or len(ids) <= head + tail:
            print(ids)
        else:
            middle = f"... {len(ids) - head - tail} more (--max-ids 0: all) ..."
            print(f"{str(ids[:head])[:-1]}, {middle}, {str(ids[-tail:])[1:]}")
        if "text" in info["doc"]:
            print("---- text ----")
            print(info["doc"]["text"])
    return 0
