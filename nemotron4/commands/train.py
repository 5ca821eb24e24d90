"""`nemotron4 train --config FILE.toml --run-dir DIR [--section.key value ...]`"""

from __future__ import annotations

import argparse

HELP = """Train (or resume) a run. Re-running the same command on the same --run-dir resumes from its latest
checkpoint. Any config field can be overridden: --optim.eps 1e-8, --train.micro_batch_size=2,
--phases.1.lr 1e-5, --model.vocab_size 1024 (values are TOML literals: 3e-4, true, "0:8 1M:16").
Several processes: torchrun --nproc-per-node 8 -m nemotron4.cli train ... --parallel.tp 8 (docs/distributed.md);
a checkpoint resumes at any (tp, dp) layout."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="pretrain / continue-train a model", description=HELP)
    p.add_argument("--config", required=True, help="TOML run config (see configs/)")
    p.add_argument("--run-dir", required=True, help="where config.toml, metrics.jsonl and checkpoints/ go")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, then exit")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from nemotron4.train.config_io import dumps_toml, job_to_dict, load_job

    job = load_job(args.config, args.overrides)
    if args.dry_run:
        print(dumps_toml(job_to_dict(job)), end="")
        return 0
    from nemotron4.train.trainer import Trainer

    trainer = Trainer(job, args.run_dir)
    try:
        state = trainer.run()
    finally:
        if trainer.parallel is not None:
            from nemotron4.distributed.runtime import shutdown

            shutdown()
    if trainer.primary:
        print(f"done: {state.step} steps, {state.tokens:,} tokens; checkpoints in {args.run_dir}/checkpoints")
    return 0
