"""`nemotron4 corpus build`: the demo corpus from text already on this machine."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("corpus", help="build the demo corpus from text on this machine")
    sub = p.add_subparsers(dest="corpus_command", metavar="<action>", required=True)
    b = sub.add_parser(
        "build",
        help="collect English, multilingual and code text (no download)",
        description="Collect English prose (Python docs, /usr/share/doc, man pages), multilingual text (gettext "
        "catalogs, translated man pages; one source per language) and code (Python stdlib, C headers, scripts) "
        "into OUTPUT/train, OUTPUT/heldout (JSONL per source), OUTPUT/translation (en->xx pairs kept aside) and "
        "OUTPUT/manifest.json.",
    )
    b.add_argument("--output", required=True, help="output folder")
    b.add_argument("--max-bytes-per-source", type=int, default=2_000_000)
    b.add_argument("--max-bytes-per-category", type=int, default=20_000_000)
    b.add_argument("--max-file-bytes", type=int, default=1_000_000, help="larger files are skipped")
    b.add_argument("--max-translation-pairs", type=int, default=500, help="per language")
    b.add_argument("--python-stdlib", help="Python standard library folder (default: this interpreter's)")
    b.add_argument("--doc-root", default="/usr/share/doc")
    b.add_argument("--man-root", default="/usr/share/man")
    b.add_argument("--locale-root", default="/usr/share/locale")
    b.add_argument("--include-root", default="/usr/include")
    b.add_argument("--code-root", action="append", help="folders scanned for scripts/sources (repeatable; "
                   "default: /usr/bin /usr/sbin /usr/share /usr/lib)")
    b.set_defaults(func=build)


def build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nemotron4.data.corpus import CorpusConfig, build_corpus

    kw = {}
    if args.python_stdlib:
        kw["python_stdlib"] = Path(args.python_stdlib)
    if args.code_root:
        kw["code_roots"] = tuple(map(Path, args.code_root))
    cfg = CorpusConfig(
        output=Path(args.output), doc_root=Path(args.doc_root), man_root=Path(args.man_root),
        locale_root=Path(args.locale_root), include_root=Path(args.include_root),
        max_bytes_per_source=args.max_bytes_per_source, max_bytes_per_category=args.max_bytes_per_category,
        max_file_bytes=args.max_file_bytes, max_translation_pairs=args.max_translation_pairs, **kw,
    )
    build_corpus(cfg)
    print(f"manifest: {cfg.output / 'manifest.json'}")
    return 0
