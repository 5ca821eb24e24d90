"""Run untrusted programs (model-written code) in child processes with limits, for HumanEval / MultiPL-E scoring.

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
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ExecResult", "Limits", "Step", "isolation_method", "run_many", "run_program", "run_python"]

# Unprivileged uids for sandboxed runs, one per run (outside the range distributions hand out to real users).
_UID_BASE, _UID_SPAN = 200_000, 50_000
_uids = itertools.count(random.SystemRandom().randrange(_UID_SPAN))  # processes running sandboxes rarely collide
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
    """How a program ended: status is "passed" (every step exited 0), "failed" (the run step exited non-zero),
    "timeout" (killed at the wall-clock limit) or "compile_error" (a build step failed or timed out)."""

    status: str
    returncode: int | None
    output: str
    """The tail of stdout, then the tail of stderr, of the last step that ran."""
    seconds: float
    stderr: str = ""
    """The first lines of that step's stderr (what a user reads to see why it failed)."""
    stage: str = "run"
    """The step that decided the status: "compile" or "run"."""
    uid: int | None = None
    """The unprivileged uid the run had (None: it ran as this user)."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def summary(self, completion: str) -> dict:
        """A JSON-able record of one sample: the completion, how it ended and why."""
        return {"completion": completion, "status": self.status, "exit_code": self.returncode, "stage": self.stage,
                "seconds": round(self.seconds, 3), "stderr": self.stderr, "output_tail": self.output[-500:]}


@dataclass(frozen=True)
class Step:
    """One command of a sandboxed run, started in the scratch directory (argv[0] looked up on PATH)."""

    argv: tuple[str, ...]
    stage: str = "run"
    """"compile": a failure is a compile error; "run": the program itself."""
    limits: Limits | None = None
    """Overrides the run's limits for this step (compilers need more time and memory than the program)."""


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


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (a run's own uid), from a child that becomes that uid: kill(-1) then reaches
    exactly those. Repeated until none is left, so that a fork bomb racing the kill loses."""
    if os.geteuid() != 0:
        return
    pid = os.fork()
    if pid == 0:  # the child: only system calls until _exit
        try:
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(1000):
                os.kill(-1, signal.SIGKILL)
        except OSError:  # ESRCH: nothing left
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


STDERR_HEAD_LINES = 20  # lines of stderr kept per sample


def run_python(source: str, limits: Limits | None = None) -> ExecResult:
    """Run `source` as a Python program in a scratch directory under `limits`; never raises for what the program
    does (crash, hang, fork bomb, huge output)."""
    method, python = _probe()
    text = source if method == "namespaces" else _SOCKET_GUARD + source
    # -I: isolated mode (no user site, no PYTHON* variables, the script's directory not on sys.path).
    return run_program({"program.py": text}, [Step((python, "-I", "program.py"))], limits,
                       env={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"})


def run_program(
    files: Mapping[str, str],
    steps: Sequence[Step],
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    """Write `files` into a fresh scratch directory and run `steps` there one after the other, each under the
    isolation of this machine (`isolation_method`) and its limits, as one unprivileged uid; stop at the first step
    that fails. Never raises for what the programs do. Outside the "namespaces" method nothing stops a non-Python
    program from opening sockets: only the Python prelude of `run_python` guards those."""
    limits = limits or Limits()
    method = _probe()[0]
    uid = _next_uid()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nemotron4-sandbox-", ignore_cleanup_errors=True) as scratch:
        for name, text in files.items():
            with open(os.path.join(scratch, name), "w", encoding="utf-8") as f:
                f.write(text)
        prefix, drop_to = [], None
        if method == "namespaces":
            prefix = _unshare_prefix(uid)
        elif os.geteuid() == 0:
            drop_to = uid
        if prefix or drop_to is not None:
            os.chown(scratch, uid, uid)  # the program's own uid may write its scratch directory, nothing of ours
            for name in files:
                os.chown(os.path.join(scratch, name), uid, uid)
        full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
                    **(env or {})}
        result = ExecResult("passed", 0, "", 0.0)
        for step in steps:
            result = _run_step(step, step.limits or limits, prefix, drop_to, scratch, full_env)
            if not result.passed:
                break
        if prefix or drop_to is not None:
            _kill_uid(uid)  # whatever escaped the process group (setsid, daemonized children)
    result.seconds = time.monotonic() - start
    result.uid = uid if prefix or drop_to is not None else None
    return result


def run_many(
    programs: Sequence[Sequence[str]],
    run: Callable[[str], ExecResult],
    *,
    workers: int | None = None,
    progress: bool = False,
    desc: str = "execute",
) -> list[list[ExecResult]]:
    """`run` every program (programs[i] are the samples of problem i) on a thread pool; results in the same shape.
    Threads suffice: each waits on its child processes."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    jobs = [(i, j, src) for i, srcs in enumerate(programs) for j, src in enumerate(srcs)]
    results: list[list[ExecResult | None]] = [[None] * len(srcs) for srcs in programs]
    workers = workers or max(2, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(jobs), desc=desc, disable=not progress) as bar:
        futures = {pool.submit(run, src): (i, j) for i, j, src in jobs}
        for fut in futures:
            i, j = futures[fut]
            results[i][j] = fut.result()
            bar.update(1)
    return results  # type: ignore[return-value]


def _run_step(step: Step, limits: Limits, prefix: list[str], drop_to: int | None, cwd: str,
              env: dict[str, str]) -> ExecResult:
    # Output goes to files of ours, not pipes: a program printing without end is bounded by RLIMIT_FSIZE
    # instead of filling our memory.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen([*prefix, *step.argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True,
                                    preexec_fn=functools.partial(_limit_child, limits, drop_to))
        except OSError as e:  # the tool itself is missing or not executable
            return ExecResult("compile_error" if step.stage == "compile" else "failed", None, str(e), 0.0,
                              stderr=str(e), stage=step.stage)
        try:
            proc.wait(timeout=limits.timeout_s)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            status = "timeout"
        finally:
            _kill_group(proc)  # anything the program left running in its group
        stdout, stderr_tail = _tail(out, 1000), _tail(err, 1000)
        err.seek(0)
        head = err.read(8000).decode("utf-8", errors="replace")
    if step.stage == "compile" and status != "passed":
        status = "compile_error"
    stderr = "\n".join(head.splitlines()[:STDERR_HEAD_LINES])
    return ExecResult(status, proc.returncode, stdout + stderr_tail, 0.0, stderr=stderr, stage=step.stage)


def _tail(f: Any, n: int) -> str:
    f.seek(max(0, f.seek(0, os.SEEK_END) - n))
    return f.read().decode("utf-8", errors="replace")
