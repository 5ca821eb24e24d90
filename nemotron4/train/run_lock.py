"""One run per run directory: an exclusive lock held for the life of a training run.

`run_dir/.lock` is locked with `fcntl.flock` (the kernel releases it when the process ends, however it ends, so a
lock is never left behind by a crash) and holds the holder's pid, host and start time, so that a second trainer on
the same directory refuses at once with one line naming the holder. A lock file whose process is gone is simply
taken over (the flock is free); its old pid/host are then only reported as a note. Under torchrun, rank 0 holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nemotron4.errors import UserError
from nemotron4.fsio import EnvironmentProblem, os_error

__all__ = ["RunDirBusy", "hold_run_dir", "lock_holder"]

LOCK_NAME = ".lock"


class RunDirBusy(UserError):
    """Another live process holds the run directory."""


def lock_holder(run_dir: str | Path) -> dict | None:
    """What the lock file says about its (last) holder, or None."""
    try:
        return json.loads((Path(run_dir) / LOCK_NAME).read_text() or "null")
    except (OSError, ValueError):
        return None


@contextmanager
def hold_run_dir(run_dir: str | Path, hold: bool = True) -> Iterator[None]:
    """Hold `run_dir`'s lock inside the block (creating the directory); a no-op when `hold` is False (ranks > 0)."""
    if not hold:
        yield
        return
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    if run_dir.exists() and not run_dir.is_dir():
        raise EnvironmentProblem(f"--run-dir {run_dir} is a file, not a directory; move it away or choose another "
                                 "--run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise os_error(e, f"cannot create the run directory's lock {path}", "use a writable --run-dir") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = lock_holder(run_dir) or {}
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h["since"])) if "since" in h else "?"
            raise RunDirBusy(
                f"run directory {run_dir} is in use by another trainer (pid {h.get('pid', '?')} on host "
                f"{h.get('host', '?')}, since {since}); wait for it to end or stop it, or use another --run-dir"
            ) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        yield
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race with a new holder)
