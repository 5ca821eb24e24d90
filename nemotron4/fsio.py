"""Crash-safe file writes, one-line messages for OS errors (what failed, the path, the errno's meaning), and
safetensors opened with a damaged file reported in one line."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nemotron4.errors import UserError

__all__ = ["EnvironmentProblem", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "open_safetensors", "os_error"]


class EnvironmentProblem(UserError):
    """The machine, not the input: a full disk, a read-only or missing directory, no permission (exit code 1)."""

    exit_code = 1


_HINTS = {
    errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (quota exceeded)",
    errno.EROFS: "use a writable directory", errno.EACCES: "fix the permissions or use another directory",
    errno.EPERM: "fix the permissions or use another directory",
    errno.ENOTDIR: "a path component is a file, not a directory: move it away or choose another path",
    errno.EEXIST: "a file is in the way: move it away or choose another path",
    errno.EISDIR: "a directory is in the way: move it away or choose another path",
}


def os_error(e: OSError, what: str, todo: str | None = None) -> EnvironmentProblem:
    """One line: what failed, the path, the errno's meaning and what to do."""
    where = f" ({e.filename})" if e.filename and str(e.filename) not in what else ""
    meaning = os.strerror(e.errno) if e.errno else str(e)
    name = errno.errorcode.get(e.errno, "") if e.errno else ""
    hint = _HINTS.get(e.errno, todo or "fix the cause and re-run")
    return EnvironmentProblem(f"{what}{where}: {meaning}{f' [{name}]' if name else ''}; {hint}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` by `data` so that a crash at any moment leaves either the old or the new content, whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextmanager
def open_safetensors(file: str | Path, device: Any = "cpu") -> Iterator[Any]:
    """`safetensors.safe_open`, with a damaged file (truncated, empty, not safetensors at all, e.g. a renamed
    pickle) reported as one line naming it instead of a SafetensorError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            yield f
    except SafetensorError as e:
        raise UserError(f"{file} is not a readable safetensors file ({e}); it is truncated or not safetensors: "
                        "re-copy or re-export it") from None
