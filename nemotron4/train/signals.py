"""Graceful shutdown on SIGTERM / SIGINT: finish the current step, checkpoint, exit; a second signal exits at once.

    with GracefulShutdown() as shutdown:
        trainer.run(stop=shutdown.requested)      # polled after every step
    if shutdown.signum is not None: ...           # exit with 128 + signum (143 for SIGTERM, 130 for SIGINT)

torchrun forwards the SIGTERM it receives (SLURM preemption, `scancel`, a spot reclaim) to every worker, and
Ctrl-C reaches every process of the terminal's group, so each rank sees the signal, though not necessarily before
the same step: the trainer all-reduces the flag so all ranks stop after the same step.

Handlers are installed only in the main thread (Python allows no other) and the previous ones are restored on
exit, so library users calling `Trainer.run` from their own code keep their own handling.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType

__all__ = ["GracefulShutdown", "exit_code"]


def exit_code(signum: int) -> int:
    """The shell's convention for a process stopped by a signal: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + signum


class GracefulShutdown:
    """Context manager: the first SIGTERM / SIGINT sets `signum`; a second one restores the default action and
    re-sends itself, which ends the process at once (a checkpoint being written then is left as a temp directory,
    which is never loaded)."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[signal.Signals, object] = {}

    def requested(self) -> bool:
        """True once a signal has arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: die now, the way the signal would without us
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"received {signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> GracefulShutdown:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
