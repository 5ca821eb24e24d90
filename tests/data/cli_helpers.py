"""Run the data subcommands through argparse, as `nemotron4 <cmd>` would (only this branch's command modules)."""

from __future__ import annotations

import argparse
import importlib

MODULES = ("corpus", "tokenizer", "prepare", "data")


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nemotron4")
    sub = parser.add_subparsers(dest="command", required=True)
    for m in MODULES:
        importlib.import_module(f"nemotron4.commands.{m}").add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
