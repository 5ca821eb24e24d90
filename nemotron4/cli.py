"""`nemotron4` command line: dispatch only. Each subcommand lives in nemotron4/commands/<name>.py and provides
`add_parser(subparsers)`, which registers its parser(s) with `set_defaults(func=...)`. Command modules import
heavy dependencies inside their functions, so `--help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order of `nemotron4 --help`.
COMMANDS: tuple[str, ...] = (
    "nemotron4.commands.info",
    "nemotron4.commands.convert",
    "nemotron4.commands.corpus",
    "nemotron4.commands.curate",
    "nemotron4.commands.tokenizer",
    "nemotron4.commands.prepare",
    "nemotron4.commands.data",
    "nemotron4.commands.config",
    "nemotron4.commands.train",
    "nemotron4.commands.flops",
    "nemotron4.commands.plan",
    "nemotron4.commands.plot",
    "nemotron4.commands.demo",
    "nemotron4.commands.generate",
    "nemotron4.commands.eval",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemotron4", description="Nemotron-4: model, data, training, evaluation and inference."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from nemotron4.errors import UserError

    parser = build_parser()
    # Commands that set `accepts_overrides` (train) receive unknown `--section.key value` pairs as args.overrides.
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "accepts_overrides", False):
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"nemotron4 {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # 2: bad input; 1: the environment (nemotron4.fsio.EnvironmentProblem)
    except BrokenPipeError:  # `nemotron4 data inspect ... | head`: the reader left; stop quietly, as cat does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except OSError as e:  # not caught nearer its cause: still one line naming the path and the errno's meaning
        from nemotron4.fsio import os_error

        print(f"nemotron4 {args.command}: error: {os_error(e, 'input/output failed')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
