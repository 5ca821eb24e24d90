"""Fault injection for the reliability tests (tests/reliability, docs/reliability.md), read from the environment.

Each hook makes a real `nemotron4 train` process fail at a chosen, deterministic point, so that a test can check
what is left behind without racing the run:

    NEMOTRON4_FAULT_SIGKILL_AT_STEP=N          SIGKILL itself right after step N (and its checkpoint, if any)
    NEMOTRON4_FAULT_SIGKILL_IN_CHECKPOINT=N    SIGKILL itself while saving the checkpoint of step N: after the DCP
                                               shards and .metadata are written, before state.json and the rename
    NEMOTRON4_FAULT_ENOSPC_IN_CHECKPOINT=N     raise OSError(ENOSPC) at the same point (a disk that fills up)
    NEMOTRON4_FAULT_SIGNAL_AT_STEP=N:SIG[:K]   send itself signal SIG (TERM, INT) K times (default 1) after step N,
                                               as torchrun / SLURM preemption or Ctrl-C would
    NEMOTRON4_FAULT_RANK=R                     fire the hooks on global rank R only (default: every rank)

Unset (the normal case), every hook is a no-op. Nothing else in the package reads these variables.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nemotron4.errors import ConfigError

__all__ = ["Faults"]

_PREFIX = "NEMOTRON4_FAULT_"


def _step(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(_PREFIX + name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{_PREFIX}{name}={value!r}: expected a step number") from None


def _signal_spec(env: Mapping[str, str]) -> tuple[int, signal.Signals, int] | None:
    value = env.get(_PREFIX + "SIGNAL_AT_STEP", "")
    if not value:
        return None
    parts = value.split(":")
    try:
        step, name = int(parts[0]), parts[1].upper().removeprefix("SIG")
        count = int(parts[2]) if len(parts) > 2 else 1
        return step, signal.Signals[f"SIG{name}"], count
    except (IndexError, KeyError, ValueError):
        raise ConfigError(f"{_PREFIX}SIGNAL_AT_STEP={value!r}: expected STEP:SIGNAL[:COUNT], e.g. 3:TERM") from None


@dataclass(frozen=True)
class Faults:
    """The fault hooks of this process (all None: no faults)."""

    sigkill_at_step: int | None = None
    sigkill_in_checkpoint: int | None = None
    enospc_in_checkpoint: int | None = None
    signal_at_step: tuple[int, signal.Signals, int] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Faults:
        env = os.environ if env is None else env
        rank = env.get(_PREFIX + "RANK", "")
        if rank and rank != env.get("RANK", "0"):
            return cls()
        return cls(_step(env, "SIGKILL_AT_STEP"), _step(env, "SIGKILL_IN_CHECKPOINT"),
                   _step(env, "ENOSPC_IN_CHECKPOINT"), _signal_spec(env))

    def after_step(self, step: int) -> None:
        """Called by the trainer at the very end of each step."""
        if self.signal_at_step is not None and self.signal_at_step[0] == step:
            for _ in range(self.signal_at_step[2]):
                os.kill(os.getpid(), self.signal_at_step[1])
        if step == self.sigkill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def in_checkpoint(self, step: int, partial: Path) -> None:
        """Called by the checkpoint manager once the tensors of step `step` are in `partial`, before it completes."""
        if step == self.sigkill_in_checkpoint:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == self.enospc_in_checkpoint:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial / "state.json"))
