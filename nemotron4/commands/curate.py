"""`nemotron4 curate`: exact and near deduplication and quality filters between the sources and `prepare`."""

from __future__ import annotations

import argparse


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """--engine / --workers / --scheduler, shared by the commands that run on an `Engine`."""
    p.add_argument("--engine", choices=("local", "dask"), default="local",
                   help="local: a process pool on this machine (default); dask: a Dask cluster (--scheduler) or "
                        "a Dask LocalCluster of --workers processes")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: all cores)")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786) to run across nodes; workers must "
                                       "see the same paths")


def engine_config(args: argparse.Namespace):
    from nemotron4.data.engine import EngineConfig

    return EngineConfig(args.engine, args.workers, args.scheduler)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "curate",
        help="deduplicate (exact + MinHash/LSH) and quality-filter documents before prepare",
        description="Curate a corpus before tokenization: Gopher-style heuristic filters, an optional fastText "
        "quality classifier, exact deduplication of normalised text and near deduplication (MinHash + LSH) across "
        "every source of a category, keeping the first document of each duplicate cluster. Reads a corpus "
        "manifest (--manifest) or INPUT files/folders (JSONL, text, Parquet; one source each) and writes OUTPUT/"
        "train/<source>.jsonl, held-out and translation files copied, OUTPUT/manifest.json for `prepare "
        "--manifest`, and OUTPUT/curate_report.json (documents and bytes removed per stage and source). Settings: "
        "--config TOML ([curate] table, see nemotron4/data/curate/config.py), then the flags below.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files or folders (instead of --manifest)")
    p.add_argument("--manifest", help="corpus manifest.json")
    p.add_argument("--output", required=True, help="output corpus folder")
    p.add_argument("--config", help="TOML file with a [curate] table")
    p.add_argument("--category", help="with INPUT: the sources' category (default: english)")
    p.add_argument("--language", help="with INPUT: the sources' language (default: en)")
    p.add_argument("--text-field", help="with INPUT: JSON/Parquet text field (default: text; a manifest names its own)")
    p.add_argument("--threshold", type=float, help="near dedup Jaccard threshold (default 0.8)")
    p.add_argument("--shingle", type=int, help="words per shingle (default 5)")
    p.add_argument("--bands", type=int, help="LSH bands (give --rows too; default: chosen from the threshold and "
                                             "--num-perm, 14 x 9 at 0.8 and 128)")
    p.add_argument("--rows", type=int, help="LSH rows per band")
    p.add_argument("--num-perm", type=int, help="MinHash permutations (default 128)")
    p.add_argument("--no-exact", action="store_true", help="skip exact deduplication")
    p.add_argument("--no-near", action="store_true", help="skip near deduplication")
    p.add_argument("--no-filters", action="store_true", help="skip the heuristic filters")
    p.add_argument("--positive", action="append", help="classifier: positive example file (repeatable)")
    p.add_argument("--negative", action="append", help="classifier: negative example file (repeatable)")
    p.add_argument("--classifier-threshold", type=float, help="remove documents scored below this (default 0.5)")
    add_engine_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def load_curate_config(path: str | None, args: argparse.Namespace | None = None):
    """CurateConfig from a TOML file's [curate] table (or defaults), with command-line values on top."""
    from nemotron4.data.curate.config import CurateConfig
    from nemotron4.data.curate.filters import FILTERS
    from nemotron4.train.config_io import read_toml

    raw = read_toml(path, "curate config").get("curate", {}) if path else {}
    if args is not None:
        near = raw.setdefault("near", {})
        for key in ("threshold", "shingle", "bands", "rows", "num_perm"):
            if getattr(args, key) is not None:
                near[key] = getattr(args, key)
        if args.no_near:
            near["enabled"] = False
        if args.no_exact:
            raw["exact"] = False
        if args.no_filters:
            filters = raw.setdefault("filters", {})
            for name in FILTERS:
                filters.setdefault(name, {})["enabled"] = False
        clf = raw.setdefault("classifier", {})
        if args.positive:
            clf["positive"] = args.positive
        if args.negative:
            clf["negative"] = args.negative
        if args.classifier_threshold is not None:
            clf["threshold"] = args.classifier_threshold
    return CurateConfig.from_dict(raw)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nemotron4.data.curate.pipeline import curate, sources_from_inputs
    from nemotron4.data.engine import open_engine
    from nemotron4.data.manifest import Manifest
    from nemotron4.errors import UserError

    if bool(args.manifest) == bool(args.inputs):
        raise UserError("give either --manifest M or INPUT files/folders")
    cfg = load_curate_config(args.config, args)
    if args.manifest:
        given = [f for f in ("category", "language", "text_field") if getattr(args, f) is not None]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} goes with INPUT files; a manifest names each source's "
                            "category, language and text field")
        manifest = Manifest.load(args.manifest)
    else:
        sources = sources_from_inputs(args.inputs, args.category or "english", args.language or "en")
        manifest = Manifest(sources, [], args.text_field or "text", Path("/"))
    with open_engine(engine_config(args)) as engine:
        report = curate(manifest, args.output, cfg, engine, progress=not args.quiet)
    print(report.format())
    print(f"manifest: {Path(args.output) / 'manifest.json'}; report: {Path(args.output) / 'curate_report.json'}")
    return 0
