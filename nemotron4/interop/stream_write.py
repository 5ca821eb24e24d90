"""Writing weights one tensor at a time: safetensors files whose header is planned from shapes before any tensor is
read, so that a converter holds one tensor in memory, not the model.

`write_weights(cfg, plan, tensors, path)` writes a nemotron4 weights directory, `write_hf(...)` a Hugging Face one
(sharded above `max_shard_bytes`); `tensors` yields (our name, tensor) in the order of `plan`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from nemotron4.config import ModelConfig
from nemotron4.errors import UserError

Plan = list[tuple[str, tuple[int, ...], torch.dtype]]  # (name, shape, dtype) in write order

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.int8: "I8", torch.bool: "BOOL"}


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
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
            size = _nbytes(shape, dtype)
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


def _cast(tensors: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
    for name, t in tensors:
        yield name, (t.to(dtype) if dtype is not None else t)


def write_weights(cfg: ModelConfig, plan: Plan, tensors: Iterable[tuple[str, torch.Tensor]], path: Path,
                  dtype: torch.dtype | None = None) -> Path:
    """A nemotron4 weights directory (model_config.json + model.safetensors), tensor by tensor."""
    from nemotron4.weights import CONFIG_FILE, WEIGHTS_FILE

    plan = [(n, s, dtype or d) for n, s, d in plan]
    writer = SafetensorsWriter(path / WEIGHTS_FILE, plan, {"format": "pt", "producer": "nemotron4"})
    for name, t in _cast(tensors, dtype):
        writer.write(name, t)
    writer.close()
    cfg.save(path / CONFIG_FILE)
    return path


def write_hf(cfg: ModelConfig, plan: Plan, tensors: Iterable[tuple[str, torch.Tensor]], path: Path,
             dtype: torch.dtype | None = None, max_shard_bytes: int = 5 * 2**30, bos_token_id: int = 2,
             eos_token_id: int = 3) -> Path:
    """A Hugging Face `nemotron` directory, tensor by tensor (same files as `interop.hf.to_hf`)."""
    from nemotron4.interop.hf import config_to_hf, hf_name

    plan = [(hf_name(n), s, dtype or d) for n, s, d in plan]
    shards: list[Plan] = [[]]
    size = total = 0
    for entry in plan:
        nbytes = _nbytes(entry[1], entry[2])
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
        total += nbytes
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
    stream = _cast(tensors, dtype)
    weight_map = {}
    for fname, shard in zip(names, shards, strict=True):
        writer = SafetensorsWriter(path / fname, shard, {"format": "pt"})
        for _ in shard:
            name, t = next(stream, (None, None))
            if name is None:
                break
            writer.write(hf_name(name), t)
        writer.close()
        weight_map.update({n: fname for n, _, _ in shard})
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    out_dtype = plan[-1][2]
    (path / "config.json").write_text(json.dumps(config_to_hf(cfg, out_dtype, bos_token_id, eos_token_id), indent=2)
                                      + "\n")
    gen = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return path
