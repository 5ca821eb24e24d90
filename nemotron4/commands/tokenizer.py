"""`nemotron4 tokenizer train`: a SentencePiece BPE tokenizer from the corpus manifest (or files)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tokenizer", help="train a SentencePiece BPE tokenizer")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="<action>", required=True)
    t = sub.add_parser(
        "train",
        help="train on a sample of the corpus",
        description="Train a SentencePiece BPE tokenizer (byte fallback, split digits, whitespace preserved) on a "
        "sample of the sources in a corpus manifest (multilingual sources upsampled), or of given files.",
    )
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="corpus manifest.json (from `nemotron4 corpus build`)")
    src.add_argument("--input", nargs="+", help="JSONL / text / Parquet files or folders instead of a manifest")
    t.add_argument("--text-field", default="text", help="JSON/Parquet field holding the text (with --input)")
    t.add_argument("--output", required=True, help="where to write the model, e.g. runs/tok/tokenizer.model")
    t.add_argument("--vocab-size", type=int, default=256000, help="vocabulary size (paper: 256000; demo: ~4000)")
    t.add_argument("--non-english-upsample", type=float, default=2.0,
                   help="weight of multilingual sources in the sample relative to their size (default 2)")
    t.add_argument("--sample-bytes", type=int, default=200_000_000, help="bytes of text in the training sample")
    t.add_argument("--input-sentence-size", type=int, default=2_000_000, help="most chunks SentencePiece keeps")
    t.add_argument("--character-coverage", type=float, default=0.9999,
                   help="fraction of characters that get their own piece; the rest go through byte fallback. "
                   "Small vocabularies over many scripts need less, e.g. 0.995 (default 0.9999)")
    t.add_argument("--seed", type=int, default=0, help="seed of the document sample (default 0)")
    t.add_argument("--threads", type=int, default=0, help="trainer threads (0: all cores)")
    t.set_defaults(func=train)


def train(args: argparse.Namespace) -> int:
    import time

    from nemotron4.data.manifest import Manifest, tokenizer_sample
    from nemotron4.data.readers import expand_inputs, parse_batch, read_batches
    from nemotron4.tokenizer import TokenizerConfig, train_tokenizer

    cfg = TokenizerConfig(
        vocab_size=args.vocab_size, non_english_upsample=args.non_english_upsample, sample_bytes=args.sample_bytes,
        input_sentence_size=args.input_sentence_size, seed=args.seed, num_threads=args.threads,
        character_coverage=args.character_coverage,
    )
    if args.manifest:
        docs = tokenizer_sample(Manifest.load(args.manifest), cfg.sample_bytes, cfg.non_english_upsample, cfg.seed)
    else:
        files = expand_inputs(args.input)
        docs = (t for b in read_batches(files, args.text_field) for t in parse_batch(b)[0])
    t0 = time.perf_counter()
    tok = train_tokenizer(docs, args.output, cfg)
    print(f"wrote {args.output}: vocab {tok.vocab_size}, bos {tok.bos_id}, eos {tok.eos_id}, pad {tok.pad_id} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0
