"""Megatron-Core distributed checkpoints, read and written without megatron-core.

A distributed checkpoint directory holds `metadata.json` (`sharded_backend`: `torch_dist` or `zarr`), `common.pt`
(the non-tensor state, a torch pickle) and the tensors as *global* tensors cut into chunks:

- `torch_dist`: PyTorch DCP: a pickled `.metadata` (global shape and chunk list of every key, and where each chunk
  lies: file, byte offset, length) and `__R_I.distcp` files, each chunk a `torch.save` blob at its offset.
- `zarr`: one directory per key with a `.zarray` JSON (shape, chunk shape, dtype, `compressor: null`) and one file
  of raw C-order bytes per chunk, named by its grid index (`0.0.0`); bf16 is written as dtype `bfloat16`.

Readers take a `Storage` (a directory, or a member folder of a tar such as a `.nemo` archive, read in place) and read
any region of a tensor chunk by chunk, so memory is the region plus one chunk. The pickles are loaded only through
allow-lists: `.metadata` through the DCP-classes unpickler, `common.pt` through torch's weights-only unpickler, with
inert stand-ins for the argparse / megatron / nemo types a Megatron-LM `args` holds and a refusal of anything else.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import torch

from nemotron4.errors import UserError

METADATA_JSON = "metadata.json"
COMMON = "common.pt"


# --- where the files are --------------------------------------------------------------------------------------


class Storage:
    """Files of a checkpoint below `root`, by relative POSIX path: a directory, or a folder inside a tar."""

    label: str

    def read(self, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        raise NotImplementedError

    def size(self, rel: str) -> int | None:
        """Bytes of `rel`, or None if it does not exist."""
        raise NotImplementedError

    def children(self, rel: str = "") -> list[str]:
        """Names directly below the folder `rel`."""
        raise NotImplementedError

    def where(self, rel: str) -> str:
        return f"{self.label}/{rel}" if rel else self.label

    def exists(self, rel: str) -> bool:
        return self.size(rel) is not None

    def _read_exact(self, f: BinaryIO, rel: str, offset: int, length: int | None, total: int) -> bytes:
        if length is not None and offset + length > total:
            raise UserError(f"{self.where(rel)}: truncated: {total} bytes, but the checkpoint's index places data "
                            f"up to byte {offset + length}; the file was cut short (re-copy it)")
        f.seek(offset)
        return f.read(-1 if length is None else length)


class DirStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.label = str(root)

    def read(self, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self.root / rel
        try:
            with open(path, "rb") as f:
                return self._read_exact(f, rel, offset, length, os.fstat(f.fileno()).st_size)
        except FileNotFoundError:
            raise UserError(f"{path}: missing: the checkpoint's index refers to it (a shard was not copied?)") from None

    def size(self, rel: str) -> int | None:
        path = self.root / rel
        return path.stat().st_size if path.is_file() else None

    def children(self, rel: str = "") -> list[str]:
        path = self.root / rel
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


class TarStorage(Storage):
    """A folder inside an (uncompressed or gzip) tar, read in place: members are never extracted to disk."""

    def __init__(self, tar: tarfile.TarFile, label: str, prefix: str = "") -> None:
        self.tar = tar
        self.label = f"{label}:{prefix}" if prefix else label
        self.prefix = prefix.strip("/")
        self.members = {str(PurePosixPath(m.name)): m for m in tar.getmembers()}

    def _name(self, rel: str) -> str:
        return str(PurePosixPath(self.prefix, rel)) if self.prefix else str(PurePosixPath(rel))

    def sub(self, rel: str) -> TarStorage:
        return TarStorage(self.tar, self.label.split(":")[0], self._name(rel))

    def read(self, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        member = self.members.get(self._name(rel))
        f = self.tar.extractfile(member) if member is not None and member.isfile() else None
        if f is None:
            raise UserError(f"{self.where(rel)}: missing from the archive: the checkpoint's index refers to it")
        return self._read_exact(f, rel, offset, length, member.size)

    def size(self, rel: str) -> int | None:
        member = self.members.get(self._name(rel))
        return member.size if member is not None and member.isfile() else None

    def children(self, rel: str = "") -> list[str]:
        base = PurePosixPath(self._name(rel)) if (self.prefix or rel) else None
        out = set()
        for name in self.members:
            p = PurePosixPath(name)
            if base is None and len(p.parts) >= 1:
                out.add(p.parts[0])
            elif base is not None and p.parts[: len(base.parts)] == base.parts and len(p.parts) > len(base.parts):
                out.add(p.parts[len(base.parts)])
        return sorted(out)


def open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{path}: not a readable tar archive ({e})") from None


# --- safe loading of the two pickles --------------------------------------------------------------------------


class Opaque:
    """Inert stand-in for a class named in `common.pt` (argparse.Namespace, megatron/nemo enums and configs): it
    keeps the arguments and state it is given and runs nothing of the named class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.state = state


# Modules whose names common.pt may reference (stood in for by `Opaque`). Anything else is refused.
_COMMON_ALLOWED_PREFIXES = ("argparse.Namespace", "megatron.", "nemo.", "types.SimpleNamespace")


def load_common(storage: Storage, rel: str = COMMON) -> dict[str, Any]:
    """`common.pt` as a dict, through torch's weights-only unpickler; names outside the allow-list are refused
    before anything is unpickled (pickletools scan: nothing is executed)."""
    data = storage.read(rel)
    where = storage.where(rel)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 (any parse failure is a corrupt file)
        raise UserError(f"{where}: not a readable torch file ({type(e).__name__}: {e})") from None
    bad = [n for n in names if not n.startswith(_COMMON_ALLOWED_PREFIXES)]
    if bad:
        raise UserError(f"refusing to load {where}: it references {', '.join(bad[:3])}, which a Megatron "
                        "checkpoint never holds (a pickle can run code); nothing was executed")
    try:
        with torch.serialization.safe_globals([(Opaque, n) for n in names]):
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{where}: cannot be read safely ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a dict, found {type(obj).__name__}")
    return obj


def _load_dcp_metadata(storage: Storage, rel: str = ".metadata") -> Any:
    from nemotron4.checkpoint import _MetadataUnpickler  # the DCP-classes allow-list

    data = storage.read(rel)
    try:
        return _MetadataUnpickler(io.BytesIO(data)).load()
    except UserError as e:
        raise UserError(f"{storage.where(rel)}: {e}; nothing was executed") from None
    except Exception as e:  # noqa: BLE001 (truncated or garbled pickle)
        raise UserError(f"{storage.where(rel)}: corrupt DCP metadata ({type(e).__name__}: {e}); "
                        "the file is truncated or not a checkpoint index") from None


# --- reading --------------------------------------------------------------------------------------------------

Region = tuple[tuple[int, int], ...]  # (start, stop) per dimension


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


def _overlap(region: Region, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> Region | None:
    out = []
    for (a, b), o, s in zip(region, offsets, sizes, strict=True):
        lo, hi = max(a, o), min(b, o + s)
        if lo >= hi:
            return None
        out.append((lo, hi))
    return tuple(out)


class Reader:
    """Tensors of one distributed checkpoint: `tensors` (key -> global shape/dtype) and `read(key, region)`."""

    backend: str
    storage: Storage
    tensors: dict[str, TensorInfo]

    def _chunks(self, key: str) -> Iterable[tuple[tuple[int, ...], tuple[int, ...], Any]]:
        raise NotImplementedError

    def _load_chunk(self, key: str, sizes: tuple[int, ...], handle: Any) -> torch.Tensor:
        raise NotImplementedError

    def read(self, key: str, region: Region | None = None) -> torch.Tensor:
        """The part `region` of the global tensor `key` (all of it by default), assembled from its chunks."""
        info = self.tensors[key]
        region = region or tuple((0, n) for n in info.shape)
        out = torch.empty([b - a for a, b in region], dtype=info.dtype)
        filled = 0
        for offsets, sizes, handle in self._chunks(key):
            part = _overlap(region, offsets, sizes)
            if part is None:
                continue
            chunk = self._load_chunk(key, sizes, handle)
            src = chunk[tuple(slice(lo - o, hi - o) for (lo, hi), o in zip(part, offsets, strict=True))]
            out[tuple(slice(lo - a, hi - a) for (lo, hi), (a, _) in zip(part, region, strict=True))] = src
            filled += src.numel()
            del chunk, src
        if filled != out.numel():
            raise UserError(f"{self.storage.label}: tensor {key!r} is incomplete: its chunks cover {filled} of the "
                            f"{out.numel()} values of region {list(region)} (a shard is missing)")
        return out


class TorchDistReader(Reader):
    backend = "torch_dist"

    def __init__(self, storage: Storage) -> None:
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        self.storage = storage
        meta = _load_dcp_metadata(storage)
        self.tensors = {}
        self._index: dict[str, list] = {}
        storage_data = getattr(meta, "storage_data", None) or {}
        by_fqn: dict[tuple[str, tuple[int, ...]], Any] = {
            (idx.fqn, tuple(idx.offset or ())): info for idx, info in storage_data.items()
        }
        for key, md in meta.state_dict_metadata.items():
            if not isinstance(md, TensorStorageMetadata):
                continue  # bytes entries (`_extra_state`, rng state): never read
            self.tensors[key] = TensorInfo(tuple(md.size), md.properties.dtype)
            chunks = []
            for c in md.chunks:
                info = by_fqn.get((key, tuple(c.offsets)))
                if info is None:
                    raise UserError(f"{storage.where('.metadata')}: chunk {list(c.offsets)} of {key!r} has no "
                                    "storage entry (corrupt index)")
                if getattr(info, "transform_descriptors", None):
                    raise UserError(f"{storage.label}: {key!r} is stored with DCP transforms "
                                    f"{info.transform_descriptors} (e.g. compression), which nemotron4 does not read")
                chunks.append((tuple(c.offsets), tuple(c.sizes), info))
            self._index[key] = chunks

    def _chunks(self, key):
        return self._index[key]

    def _load_chunk(self, key, sizes, info):
        data = self.storage.read(info.relative_path, info.offset, info.length)
        where = self.storage.where(info.relative_path)
        try:
            t = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{where}: cannot read {key!r} at byte {info.offset} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0]}); the file is corrupt or truncated") from None
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != sizes:
            raise UserError(f"{where}: {key!r} at byte {info.offset} is not a tensor of shape {list(sizes)}")
        return t


_ZARR_DTYPES = {"<f4": torch.float32, "<f2": torch.float16, "bfloat16": torch.bfloat16, "<f8": torch.float64,
                "<i8": torch.int64, "<i4": torch.int32, "|u1": torch.uint8, "|i1": torch.int8, "|b1": torch.bool}


class ZarrReader(Reader):
    backend = "zarr"

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.tensors, self._meta = {}, {}
        for name in storage.children():
            rel = f"{name}/.zarray"
            if not storage.exists(rel):
                continue
            try:
                z = json.loads(storage.read(rel))
                shape, chunks, dtype = tuple(z["shape"]), tuple(z["chunks"]), z["dtype"]
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
                raise UserError(f"{storage.where(rel)}: not a zarr array header ({e})") from None
            if dtype not in _ZARR_DTYPES:
                raise UserError(f"{storage.where(rel)}: dtype {dtype!r} is not supported "
                                f"(known: {', '.join(_ZARR_DTYPES)})")
            if z.get("compressor") is not None or z.get("filters"):
                raise UserError(f"{storage.where(rel)}: compressor {z.get('compressor')!r} / filters are not "
                                "supported (Megatron writes compressor: null)")
            if z.get("order", "C") != "C":
                raise UserError(f"{storage.where(rel)}: order {z.get('order')!r}; only C order is supported")
            self.tensors[name] = TensorInfo(shape, _ZARR_DTYPES[dtype])
            self._meta[name] = (chunks, z.get("dimension_separator", "."))

    def _chunks(self, key):
        shape = self.tensors[key].shape
        chunks, sep = self._meta[key]
        grid = [range(math.ceil(n / c)) for n, c in zip(shape, chunks, strict=True)]
        for idx in np.ndindex(*[len(g) for g in grid]):
            offsets = tuple(i * c for i, c in zip(idx, chunks, strict=True))
            sizes = tuple(min(c, n - o) for c, n, o in zip(chunks, shape, offsets, strict=True))
            yield offsets, sizes, (sep.join(str(i) for i in idx) or "0")

    def _load_chunk(self, key, sizes, name):
        info = self.tensors[key]
        chunks, _ = self._meta[key]
        rel = f"{key}/{name}"
        itemsize = torch.empty((), dtype=info.dtype).element_size()
        expected = math.prod(chunks) * itemsize
        if not self.storage.exists(rel):
            raise UserError(f"{self.storage.where(rel)}: missing chunk of {key!r} (a shard was not copied?)")
        data = self.storage.read(rel, 0, expected)
        full = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(info.dtype).view(chunks)
        return full[tuple(slice(0, s) for s in sizes)]


def read_backend(storage: Storage) -> str:
    try:
        meta = json.loads(storage.read(METADATA_JSON))
        return meta["sharded_backend"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserError(f"{storage.where(METADATA_JSON)}: not a Megatron-Core checkpoint metadata file ({e})") from None


def open_reader(storage: Storage) -> Reader:
    backend = read_backend(storage)
    if backend == "torch_dist":
        return TorchDistReader(storage)
    if backend == "zarr":
        return ZarrReader(storage)
    raise UserError(f"{storage.where(METADATA_JSON)}: sharded_backend {backend!r} is not supported "
                    "(torch_dist and zarr are)")


# --- writing (torch_dist) -------------------------------------------------------------------------------------


class TorchDistWriter:
    """Writes a `torch_dist` checkpoint one chunk at a time into a single `__0_0.distcp`, then the index."""

    FILE = "__0_0.distcp"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path / self.FILE, "wb")  # noqa: SIM115 (closed in close())
        self._tensors: dict[str, tuple[tuple[int, ...], torch.dtype, list]] = {}
        self._bytes: list[str] = []
        self._storage: dict = {}

    def _put(self, payload: bytes) -> tuple[int, int]:
        offset = self._f.tell()
        self._f.write(payload)
        return offset, len(payload)

    def add_chunk(self, key: str, chunk: torch.Tensor, offsets: tuple[int, ...], global_shape: tuple[int, ...]) -> None:
        from torch.distributed.checkpoint.filesystem import _StorageInfo
        from torch.distributed.checkpoint.metadata import MetadataIndex

        buf = io.BytesIO()
        torch.save(chunk.detach().contiguous().cpu(), buf)
        offset, length = self._put(buf.getvalue())
        entry = self._tensors.setdefault(key, (tuple(global_shape), chunk.dtype, []))
        entry[2].append((tuple(offsets), tuple(chunk.shape)))
        self._storage[MetadataIndex(key, torch.Size(offsets))] = _StorageInfo(self.FILE, offset, length)

    def add_bytes(self, key: str, payload: bytes) -> None:
        from torch.distributed.checkpoint.filesystem import _StorageInfo
        from torch.distributed.checkpoint.metadata import MetadataIndex

        offset, length = self._put(payload)
        self._bytes.append(key)
        self._storage[MetadataIndex(key)] = _StorageInfo(self.FILE, offset, length)

    def close(self, common: dict[str, Any] | None = None) -> None:
        from torch.distributed.checkpoint.metadata import (
            BytesStorageMetadata,
            ChunkStorageMetadata,
            Metadata,
            TensorProperties,
            TensorStorageMetadata,
        )

        self._f.close()
        sd_meta: dict[str, Any] = {
            key: TensorStorageMetadata(TensorProperties(dtype=dtype), torch.Size(shape),
                                       [ChunkStorageMetadata(torch.Size(o), torch.Size(s)) for o, s in chunks])
            for key, (shape, dtype, chunks) in self._tensors.items()
        }
        sd_meta.update({key: BytesStorageMetadata() for key in self._bytes})
        with open(self.path / ".metadata", "wb") as f:
            pickle.dump(Metadata(state_dict_metadata=sd_meta, storage_data=self._storage), f)
        torch.save(common or {}, self.path / COMMON)
        meta = {"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch",
                "common_backend_version": 1}
        (self.path / METADATA_JSON).write_text(json.dumps(meta))
