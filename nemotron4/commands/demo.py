"""`nemotron4 demo [--run-dir runs/demo] [--config configs/demo.toml] [--budget full|ci]`"""

from __future__ import annotations

import argparse

HELP = """Run the Nemotron-4 recipe end to end on this machine's CPU: build a corpus from local text, train a
tokenizer, prepare token files, pretrain with the 70/15/15 blend and a batch-size ramp, continue training on a
re-weighted blend plus benchmark-style translation examples, evaluate both checkpoints side by side, generate
samples, and write a loss plot and summary.{json,md}. Steps whose outputs exist are skipped; training resumes."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the whole recipe end to end on CPU (corpus -> two phases -> eval)",
                              description=HELP)
    p.add_argument("--run-dir", default="runs/demo", help="where everything goes (default runs/demo)")
    p.add_argument("--config", default=None,
                   help="demo config (default: the one installed with the package, = configs/demo.toml)")
    p.add_argument("--budget", default="full", help="full, or a [budget.NAME] table of the config, e.g. ci")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nemotron4.demo import Demo, load_demo_config

    config = args.config or Path(__file__).resolve().parents[1] / "demo" / "demo.toml"  # package data
    Demo(load_demo_config(config, args.budget), args.run_dir, args.budget).run()
    return 0
