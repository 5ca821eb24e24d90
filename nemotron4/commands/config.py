"""`nemotron4 config init`: a training config from prepared token files, so that no TOML is written by hand."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """Write a two-phase training config (pretraining on 90% of the tokens, then continued training on the
rest with the LR decaying to 0) whose blends name every token file of a token manifest, grouped by category with
the paper's shares (english 70, multilingual 15, code 15, renormalised over the categories present) unless
--shares says otherwise. The model's vocabulary is set to the tokenizer's.

example:
  nemotron4 prepare --manifest runs/corpus/manifest.json --tokenizer runs/tok/tokenizer.model --output-dir runs/tokens
  nemotron4 config init --manifest runs/tokens/sources.json --model tiny --output runs/my.toml
  nemotron4 train --config runs/my.toml --run-dir runs/my"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("config", help="write a training config from prepared token files",
                              description="Training configs. " + HELP.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="config_command", required=True, metavar="{init}")
    q = sub.add_parser("init", help="a two-phase config from a token manifest", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--manifest", required=True, help="sources.json written by `nemotron4 prepare --manifest` "
                   "(or its directory)")
    q.add_argument("--model", required=True, help="model flavour (nemotron4 info lists them), e.g. tiny, 15b")
    q.add_argument("--output", required=True, help="TOML file to write")
    q.add_argument("--shares", default=None, help="category shares, e.g. english=70,multilingual=15,code=15")
    q.add_argument("--tokens", type=int, default=0, help="tokens to train in all (default: every token once)")
    q.add_argument("--seq-len", type=int, default=0, help="sequence length (default: min(1024, model's max))")
    q.add_argument("--batch-size", type=int, default=8, help="sequences per optimizer step (default 8)")
    q.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    q.add_argument("--force", action="store_true", help="overwrite an existing --output")
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nemotron4.config import FLAVOURS
    from nemotron4.errors import UserError
    from nemotron4.train.config_init import init_config, parse_shares
    from nemotron4.train.config_io import dumps_toml

    if args.model not in FLAVOURS:
        raise UserError(f"--model {args.model!r}: not a flavour; choose one of {', '.join(FLAVOURS)}")
    out = Path(args.output)
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it")
    raw = init_config(Path(args.manifest), args.model, parse_shares(args.shares) if args.shares else None,
                      args.tokens, args.seq_len, args.batch_size, args.lr)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Written by `nemotron4 config init --manifest {args.manifest} --model {args.model}`.\n"
              f"#   nemotron4 train --config {out} --run-dir runs/NAME\n")
    out.write_text(header + dumps_toml(raw))
    cats = ", ".join(f"{c} {w:g}" for c, w in raw["phases"][0]["blend"]["categories"].items())
    n = len(raw["phases"][0]["blend"]["sources"])
    print(f"wrote {out}: {args.model}, {n} sources ({cats}), "
          f"{raw['phases'][0]['tokens']:,} + {raw['phases'][1]['tokens']:,} tokens")
    return 0
