"""Run untrusted Python (model-written code) in a child process with limits, for HumanEval-style scoring.

Each program runs in a fresh scratch directory (removed afterwards) under resource limits set in the child before
exec: address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU), file size (RLIMIT_FSIZE), processes (RLIMIT_NPROC), and a
wall-clock timeout after which its whole process group is killed. Network and process containment, strongest first:

- "namespaces": `unshare --net --pid --fork --kill-child --setuid U` (util-linux), when it works here (root, or
  unprivileged user namespaces): no network interface but loopback, its own PID namespace (when the program's
  first process ends, the kernel kills every process left in it), and an unprivileged uid U of its own, so
  RLIMIT_NPROC applies (the kernel does not enforce it for root) and root-owned files are out of reach.
- "setuid+socket-guard": as root without `unshare`: the child drops to uid U, and a prelude replaces
  `socket.socket` and friends so that opening a connection raises (a guard, not a wall: C extensions or ctypes can
  get around it).
- "socket-guard": neither: the prelude only, plus the limits. The code can write wherever this user can.

Every uid U is unique to one run, so a fork bomb in one program never uses up the process budget of another.
Not contained in any mode: writes to world-writable places (/tmp, /dev/shm) up to RLIMIT_FSIZE per file; for
untrusted models, run inside a container as well.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

__all__ = ["ExecResult", "Limits", "isolation_method", "run_python"]

# Unprivileged uids for sandboxed runs, one per run (outside the range distributions hand out to real users).
_UID_BASE, _UID_SPAN = 200_000, 50_000
_uids = itertools.count()
_uid_lock = threading.Lock()

# Prepended to every program: no sockets (the fallback when there is no network namespace).
_SOCKET_GUARD = """\
import socket as _s
def _no_network(*_a, **_k):
    raise OSError("network access is disabled in the sandbox")
_s.socket = _s.create_connection = _s.socketpair = _s.create_server = _s.getaddrinfo = _no_network
del _s, _no_network
"""


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    timeout_s: float = 10.0
    """Wall clock, after which the process group is killed."""
    cpu_s: int = 10
    """CPU seconds (RLIMIT_CPU), per process."""
    memory_bytes: int = 2 << 30
    """Address space (RLIMIT_AS), per process."""
    max_processes: int = 16
    """Processes of the run's uid (RLIMIT_NPROC); enforced only when the child is not root."""
    max_file_bytes: int = 16 << 20
    """Largest file the program may write (RLIMIT_FSIZE)."""


@dataclass
class ExecResult:
    """How a program ended: status is "passed" (exit 0), "failed" (non-zero exit) or "timeout"."""

    status: str
    returncode: int | None
    output: str
    """The tail of stdout and stderr together."""
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def isolation_method() -> str:
    """"namespaces", "setuid+socket-guard" or "socket-guard": what `run_python` uses on this machine (probed once)."""
    return _probe()[0]


def _interpreters() -> list[str]:
    """Pythons to run programs with: ours first; a system one when ours is unreadable by an unprivileged uid
    (e.g. a virtual environment over a Python under /root). Programs need only the standard library."""
    found = [sys.executable, getattr(sys, "_base_executable", sys.executable), shutil.which("python3") or "",
             "/usr/bin/python3"]
    return [p for p in dict.fromkeys(found) if p and os.path.exists(p)]


@functools.cache
def _probe() -> tuple[str, str]:
    """(isolation method, interpreter): the strongest method that runs a trivial program here."""
    probe_uid = _UID_BASE + _UID_SPAN
    for method in ("namespaces", "setuid+socket-guard"):
        if method == "namespaces" and not (sys.platform == "linux" and shutil.which("unshare")):
            continue
        if method == "setuid+socket-guard" and os.geteuid() != 0:
            continue
        for python in _interpreters():
            prefix = _unshare_prefix(probe_uid) if method == "namespaces" else []
            drop_to = probe_uid if method == "setuid+socket-guard" else None
            try:
                ok = subprocess.run([*prefix, python, "-I", "-c", "pass"], capture_output=True, timeout=30, cwd="/",
                                    preexec_fn=functools.partial(_limit_child, Limits(), drop_to)).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
            if ok:
                return method, python
    return "socket-guard", sys.executable


def _unshare_prefix(uid: int) -> list[str]:
    return ["unshare", "--net", "--pid", "--fork", "--kill-child", "--setuid", str(uid), "--setgid", str(uid), "--"]


def _next_uid() -> int:
    with _uid_lock:
        return _UID_BASE + next(_uids) % _UID_SPAN


def _limit_child(limits: Limits, drop_to: int | None) -> None:
    """preexec_fn: runs in the child between fork and exec. Limits are inherited by everything it starts."""
    for res, value in (
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_FSIZE, limits.max_file_bytes),
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(res, (value, value))
    if drop_to is not None:  # root without unshare: drop privileges ourselves
        os.setgroups([])
        os.setgid(drop_to)
        os.setuid(drop_to)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_python(source: str, limits: Limits | None = None) -> ExecResult:
    """Run `source` as a Python program in a scratch directory under `limits`; never raises for what the program
    does (crash, hang, fork bomb, huge output)."""
    limits = limits or Limits()
    method, python = _probe()
    uid = _next_uid()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nemotron4-sandbox-", ignore_cleanup_errors=True) as scratch:
        program = os.path.join(scratch, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(source if method == "namespaces" else _SOCKET_GUARD + source)
        prefix, drop_to = [], None
        if method == "namespaces":
            prefix = _unshare_prefix(uid)
        elif os.geteuid() == 0:
            drop_to = uid
        if prefix or drop_to is not None:
            os.chown(scratch, uid, uid)  # the program's own uid may write its scratch directory, nothing of ours
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        # -I: isolated mode (no user site, no PYTHON* variables, the script's directory not on sys.path).
        cmd = [*prefix, python, "-I", program]
        # Output goes to a file of ours, not a pipe: a program printing without end is bounded by RLIMIT_FSIZE
        # instead of filling our memory.
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=functools.partial(_limit_child, limits, drop_to))
            try:
                proc.wait(timeout=limits.timeout_s)
                status = "passed" if proc.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                status = "timeout"
            finally:
                _kill_group(proc)  # anything the program left running in its group
            log.seek(max(0, log.seek(0, os.SEEK_END) - 2000))
            text = log.read().decode("utf-8", errors="replace")
    return ExecResult(status, proc.returncode, text, time.monotonic() - start)
