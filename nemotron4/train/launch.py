"""What `nemotron4 train` does, as a function that returns what happened: signals handled (finish the step,
checkpoint), plan -> check -> build, the loop, an optional step budget for this invocation, and the process group
left however it ends. The command only turns the `Outcome` into a message and an exit code."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from nemotron4.distributed.runtime import process_group
from nemotron4.train.config import JobConfig
from nemotron4.train.faults import Faults
from nemotron4.train.run_lock import hold_run_dir
from nemotron4.train.signals import GracefulShutdown
from nemotron4.train.trainer import Trainer, TrainState

__all__ = ["Outcome", "launch"]


@dataclass(frozen=True)
class Outcome:
    """How a `launch` ended."""

    state: TrainState
    how: str  # "done" (every phase finished), "max_steps" (--max-steps reached), "signal" (SIGTERM / SIGINT)
    signum: int | None  # the signal for how == "signal" (on another rank under torchrun: SIGTERM)
    checkpoint: Path | None  # the latest checkpoint (None with checkpoint.enabled = false)
    primary: bool  # this process prints (rank 0)


def launch(job: JobConfig, run_dir: str | Path, max_steps: int = 0, threads: int | None = None) -> Outcome:
    """Train (or resume) the run in `run_dir`; stop after `max_steps` optimizer steps of this call (0: none).
    threads: CPU threads (`choose_threads`: 0 measures), set and printed once the run is checked and built; None:
    leave torch's setting. Fault injection for the reliability tests comes from the environment
    (NEMOTRON4_FAULT_*, no-ops unset)."""
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun rank 0 holds the run directory's lock
    with GracefulShutdown() as stop, process_group(), hold_run_dir(run_dir, hold=rank0):
        trainer = Trainer.create(job, run_dir, faults=Faults.from_env())
        if threads is not None:
            from nemotron4.train.threads import choose_threads

            chosen = choose_threads(job.train.device, threads)
            if trainer.primary:
                print(chosen, flush=True)
        first = trainer.state.step

        def budget_spent() -> bool:
            return bool(max_steps) and trainer.state.step - first >= max_steps

        state = trainer.run(stop=lambda: stop.requested() or budget_spent())
    latest = trainer.checkpoints.latest() if job.checkpoint.enabled else None
    if not trainer.stopped:
        return Outcome(state, "done", None, latest, trainer.primary)
    if stop.signum is None and budget_spent():
        return Outcome(state, "max_steps", None, latest, trainer.primary)
    # by a signal here or, under torchrun, on another rank (then exit as for SIGTERM)
    return Outcome(state, "signal", stop.signum or signal.SIGTERM, latest, trainer.primary)
