"""`on_device(fn, *args)`: run a small elementwise / reduction function compiled on a GPU and eager elsewhere.

The ops of this package (and the vocab-parallel loss, the FP8 weight casts) chain several passes over large
tensors (upcast, logsumexp, exp, one-hot, amax, scaled cast); torch.compile fuses each function into a few
kernels. Shapes are static (`dynamic=False`): each new shape compiles once, which these callers see a handful of
times per run (one chunk size, one shape per weight matrix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["on_device"]

_compiled: dict[Callable, Callable] = {}


def on_device(fn: Callable, *args: Any) -> Any:
    """fn(*args), compiled (static shapes, one compiled function per `fn`) when the first argument (a tensor, or
    a list of them) is on a GPU, eager elsewhere."""
    first = args[0][0] if isinstance(args[0], list | tuple) else args[0]
    if not first.is_cuda:
        return fn(*args)
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _compiled[fn](*args)
