"""How many torch threads to use on a CPU that may be shared.

On an idle 2-core machine two threads train about twice as fast as one; while other processes keep the cores busy,
threads that wait on each other at every parallel region make two threads several times *slower* than one. So the
demo measures instead of guessing: a short batched-matmul benchmark at each thread count, before each step that
computes. `nemotron4 train` does the same once per invocation (`choose_threads`), unless --threads or
OMP_NUM_THREADS says otherwise.
"""

from __future__ import annotations

import os
import time

import torch

__all__ = ["choose_threads", "fastest_thread_count"]


def _gflops(threads: int, size: int, seconds: float) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(8, size, size), torch.randn(8, size, size)
    torch.bmm(a, b)  # warm up this thread count's pool
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.bmm(a, b)
        n += 1
    return n * 8 * 2 * size**3 / (time.perf_counter() - t0) / 1e9


def fastest_thread_count(max_threads: int | None = None, size: int = 256, seconds: float = 0.2) -> dict[int, float]:
    """Set torch's thread count to the fastest of 1..max_threads (default: all cores) for matmuls of about the
    demo model's size; returns {threads: GFLOP/s} as measured. A count must beat the next lower one by 10%."""
    top = max_threads or os.cpu_count() or 1
    rates = {n: _gflops(n, size, seconds) for n in range(1, top + 1)}
    best = 1
    for n in range(2, top + 1):
        if rates[n] > 1.1 * rates[best]:
            best = n
    torch.set_num_threads(best)
    return rates


def choose_threads(device: str, requested: int = 0) -> str:
    """Set torch's CPU thread count for a run on `device` (train.device) and say what was chosen and why:
    `requested` (> 0) if given; else OMP_NUM_THREADS when set, or the torch default on a GPU / under torchrun;
    else the fastest count measured now (`fastest_thread_count`)."""
    if requested < 0:
        from nemotron4.errors import UserError

        raise UserError(f"--threads must be >= 0 (0: measure), got {requested}")
    if requested:
        torch.set_num_threads(requested)
        return f"torch threads: {requested} (--threads)"
    if os.environ.get("OMP_NUM_THREADS"):
        return f"torch threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})"
    gpu = device == "cuda" or device.startswith("cuda:") or (device == "auto" and torch.cuda.is_available())
    if gpu or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"torch threads: {torch.get_num_threads()} (torch default; --threads N to change)"
    rates = fastest_thread_count()
    measured = ", ".join(f"{n}: {r:.0f}" for n, r in rates.items())
    return (f"torch threads: {torch.get_num_threads()}, the fastest now (GFLOP/s by threads {measured}; "
            "--threads N to fix it)")
