"""Writing weights one tensor at a time: safetensors files whose header is planned from shapes before any tensor is
read, so that a converter holds one tensor in memory, not the model.

Used by `interop.hf.write_hf` (a Hugging Face directory) and `weights.write_weights` (ours); both take (our name,
tensor) pairs arriving in the order of a `plan`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nemotron4.errors import UserError

Plan = list[tuple[str, tuple[int, ...], torch.dtype]]  # (name, shape, dtype) in write order

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.int8: "I8", torch.bool: "BOOL"}


def nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    n = torch.empty((), dtype=dtype).element_size()
    for s in shape:
        n *= s
    return n


class SafetensorsWriter:
    """A safetensors file written in `plan` order: header first (offsets from the shapes), then each tensor's bytes
    as it arrives."""

    def __init__(self, path: Path, plan: Plan, metadata: dict[str, str] | None = None) -> None:
        header: dict = {"__metadata__": metadata} if metadata else {}
        offset = 0
        for name, shape, dtype in plan:
            size = nbytes(shape, dtype)
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._f = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._f.write(len(raw).to_bytes(8, "little") + raw)
        self._todo = iter(plan)
        self.path = path

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = next(self._todo, None)
        got = (name, tuple(tensor.shape), tensor.dtype)
        if expected is None or (expected[0], tuple(expected[1]), expected[2]) != got:
            raise UserError(f"{self.path}: writing {got}, planned {expected} (internal order error)")
        t = tensor.detach().to("cpu").contiguous()
        if t.numel():
            self._f.write(memoryview(t.view(-1).view(torch.uint8).numpy()))

    def close(self) -> None:
        left = next(self._todo, None)
        self._f.close()
        if left is not None:
            raise UserError(f"{self.path}: tensor {left[0]!r} was never written (the source ended early)")
