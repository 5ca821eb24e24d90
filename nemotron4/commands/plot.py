"""`nemotron4 plot RUN_DIR [--out FILE.png]`"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot", help="plot loss, LR and batch size of a run against tokens (PNG)")
    p.add_argument("run_dir", help="a run directory (holding metrics.jsonl)")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/metrics.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nemotron4.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0
