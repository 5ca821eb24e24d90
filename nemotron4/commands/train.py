"""`nemotron4 train --config FILE.toml --run-dir DIR [--section.key value ...]`"""

from __future__ import annotations

import argparse
import signal
import sys

from nemotron4.errors import UserError

HELP = """Train (or resume) a run. Re-running the same command on the same --run-dir resumes from its latest
checkpoint. Any config field can be overridden: --optim.eps 1e-8, --train.micro_batch_size=2,
--phases.1.lr 1e-5, --model.vocab_size 1024 (values are TOML literals: 3e-4, true, "0:8 1M:16").
Several processes: torchrun --nproc-per-node 8 -m nemotron4.cli train ... --parallel.tp 8 (docs/distributed.md);
a checkpoint resumes at any (tp, dp) layout.
SIGTERM or SIGINT (Ctrl-C) stops the run after the current step with a checkpoint, exit code 143 / 130; a second
signal stops it at once (docs/reliability.md)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="pretrain / continue-train a model", description=HELP)
    p.add_argument("--config", required=True, help="TOML run config (see configs/)")
    p.add_argument("--run-dir", required=True, help="where config.toml, metrics.jsonl and checkpoints/ go")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, every phase's token files and init_from as a run would before step 1, "
                   "print the resolved config and exit (nothing is written)")
    p.add_argument("--max-steps", type=int, default=0, metavar="N",
                   help="stop after N optimizer steps of this invocation, with a checkpoint; re-running resumes "
                        "(0: train every phase to its end)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch CPU threads (default 0: OMP_NUM_THREADS if set, else on CPU measure 1..all cores "
                        "and take the fastest, as the demo does; the choice is printed)")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from nemotron4.train.config_io import dumps_toml, job_to_dict, load_job

    if args.max_steps < 0:
        raise UserError(f"--max-steps must be >= 0, got {args.max_steps}")
    job = load_job(args.config, args.overrides)
    if args.dry_run:  # the trainer's plan and check stages (token files, init_from, layout), then the config
        from nemotron4.train.run import check_run, plan_run, token_files

        check_run(plan_run(job, args.run_dir))
        print(dumps_toml(job_to_dict(job)), end="")
        print(f"dry run: config, {len(token_files(job))} token files and the model source checked; nothing written",
              file=sys.stderr)
        return 0
    from nemotron4.train.launch import launch
    from nemotron4.train.signals import exit_code

    if args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: measure), got {args.threads}")

    out = launch(job, args.run_dir, args.max_steps, threads=args.threads)
    saved = out.checkpoint or "(none: checkpoint.enabled = false)"
    again = " Re-run the same command to continue." if job.checkpoint.enabled else ""
    if out.how == "max_steps":
        if out.primary:
            print(f"stopped after --max-steps {args.max_steps} at step {out.state.step}; checkpoint {saved}.{again}")
        return 0
    if out.how == "signal":
        if out.primary:
            print(f"stopped by {signal.Signals(out.signum).name} after step {out.state.step}; checkpoint {saved}."
                  f"{again.replace('continue', 'resume')}", file=sys.stderr)
        return exit_code(out.signum)
    if out.primary:
        print(f"done: {out.state.step} steps, {out.state.tokens:,} tokens; checkpoints in {args.run_dir}/checkpoints")
    return 0
