"""Index arrays cached on disk as .npy files, written atomically under names no other writer can share."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def load_arrays(cache_dir: str | os.PathLike, stem: str, parts: Sequence[str]) -> tuple[np.ndarray, ...] | None:
    """The cached arrays `<stem>.<part>.npy` memory-mapped, or None if any is missing or damaged (rebuild)."""
    paths = [Path(cache_dir) / f"{stem}.{part}.npy" for part in parts]
    if not all(p.exists() for p in paths):
        return None
    try:
        return tuple(np.load(p, mmap_mode="r") for p in paths)
    except (OSError, ValueError, EOFError):  # truncated or empty (EOFError: no header at all)
        return None


def save_arrays(
    cache_dir: str | os.PathLike, stem: str, parts: Sequence[str], arrays: Sequence[np.ndarray]
) -> None:
    """Write each array to a temporary file named by host, process and a random id, then rename it into place:
    ranks of several nodes building the same cache on shared storage never see (or clobber) a partial file."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    unique = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"
    for part, arr in zip(parts, arrays, strict=True):
        path = Path(cache_dir) / f"{stem}.{part}.npy"
        tmp = path.with_name(f"{path.name}.{unique}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
