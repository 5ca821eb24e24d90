"""Our own weights format, and one entry point that loads a model from anything a user may name.

A nemotron4 weights directory holds `model_config.json` (our `ModelConfig`) and `model.safetensors` (our parameter
names). It is what `nemotron4 convert` writes and what a finished training run exports.

`load_model(spec)` accepts: a flavour name (random init), a nemotron4 weights directory, a Hugging Face `nemotron`
directory, a training run / checkpoint directory (DCP, read through the trainer's checkpoint module), or a
Megatron-Core / Megatron-LM / NeMo checkpoint (`nemotron4.interop.megatron`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch

from nemotron4.config import FLAVOURS, ModelConfig
from nemotron4.errors import ConfigError, UserError
from nemotron4.fsio import open_safetensors
from nemotron4.interop.hf import save_tensors
from nemotron4.model import Nemotron4, build_model
from nemotron4.tokenizer import Tokenizer

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"


def save_weights(model: Nemotron4, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `model` as a nemotron4 weights directory (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().to("cpu", dtype or p.dtype).contiguous() for n, p in model.named_parameters()}
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_tensors(tensors, tmp, metadata={"format": "pt", "producer": "nemotron4"})
    tmp.replace(path / WEIGHTS_FILE)
    model.cfg.save(path / CONFIG_FILE)
    return path


def write_weights(cfg: ModelConfig, plan: list[tuple[str, tuple[int, ...], torch.dtype]],
                  tensors: Iterable[tuple[str, torch.Tensor]], path: str | Path,
                  dtype: torch.dtype | None = None) -> Path:
    """A nemotron4 weights directory from (our name, tensor) pairs arriving in `plan` order, one tensor at a time
    (what converting a Megatron checkpoint streams into)."""
    from nemotron4.interop.stream_write import SafetensorsWriter

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    writer = SafetensorsWriter(path / WEIGHTS_FILE, [(n, s, dtype or d) for n, s, d in plan],
                               {"format": "pt", "producer": "nemotron4"})
    for name, t in tensors:
        writer.write(name, t.to(dtype) if dtype is not None else t)
    writer.close()
    cfg.save(path / CONFIG_FILE)
    return path


def load_weights(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Nemotron4:
    """Read a nemotron4 weights directory (never unpickles)."""
    path = Path(path)
    cfg = ModelConfig.load(path / CONFIG_FILE)
    with torch.device("meta"):
        model = Nemotron4(cfg)
    expected = dict(model.named_parameters())
    state = {}
    with open_safetensors(path / WEIGHTS_FILE, device) as f:
        for name in f.keys():  # noqa: SIM118
            if name not in expected:
                raise UserError(f"{path / WEIGHTS_FILE}: unexpected tensor {name!r} for this {CONFIG_FILE}")
            t = f.get_tensor(name)
            if t.shape != expected[name].shape:
                raise UserError(f"{path / WEIGHTS_FILE}: {name!r} has shape {tuple(t.shape)}, "
                                f"{CONFIG_FILE} implies {tuple(expected[name].shape)}")
            state[name] = t.to(dtype) if dtype is not None else t
    missing = sorted(set(expected) - set(state))
    if missing:
        raise UserError(f"{path / WEIGHTS_FILE}: {len(missing)} tensors missing, e.g. {missing[:3]}")
    model.load_state_dict(state, strict=False, assign=True)
    model.init_buffers()
    return model


def describe(spec: str | Path) -> str:
    """What kind of model source `spec` is: 'flavour', 'nemotron4', 'hf', 'checkpoint', 'megatron' or 'nemo'; a clear
    error otherwise."""
    if str(spec) in FLAVOURS:
        return "flavour"
    path = Path(spec)
    if not path.exists():
        raise UserError(f"{spec}: neither a model flavour ({', '.join(FLAVOURS)}) nor an existing path")
    if (path / CONFIG_FILE).exists():
        return "nemotron4"
    if (path / "config.json").exists():
        return "hf"
    from nemotron4.interop.megatron import detect

    foreign = detect(path)
    if foreign is not None:
        return foreign
    from nemotron4.checkpoint import is_our_checkpoint

    if is_our_checkpoint(path):
        return "checkpoint"
    raise UserError(
        f"{path}: not a model directory: expected {CONFIG_FILE} (nemotron4 weights), config.json (Hugging Face), "
        "a training run / checkpoint, a Megatron-Core checkpoint (metadata.json) or a NeMo checkpoint"
    )


def load_config(spec: str | Path) -> ModelConfig:
    """The ModelConfig of a model source, without reading its weights."""
    kind = describe(spec)
    if kind == "flavour":
        return ModelConfig.from_name(str(spec))
    if kind == "nemotron4":
        return ModelConfig.load(Path(spec) / CONFIG_FILE)
    if kind == "hf":
        from nemotron4.interop.hf import read_hf_config

        return read_hf_config(spec)
    if kind in ("megatron", "nemo"):
        from nemotron4.interop.megatron import open_checkpoint

        return open_checkpoint(spec).cfg
    from nemotron4.checkpoint import CheckpointManager, find_checkpoint

    return ModelConfig.from_dict(CheckpointManager.read_state(find_checkpoint(spec))["model_config"])


def check_device_name(name: str | None, key: str = "--device") -> None:
    """The spelling half of the device rule: None, "auto", "cpu", "cuda" or "cuda:N"; otherwise a one-line
    ConfigError naming `key` (torch.device("tpu") would be a RuntimeError traceback). Looks at no device, so the
    run config's check (train.device, `JobConfig.validate`) runs it as well as `pick_device`."""
    if name is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"{key} {name}: not a device nemotron4 runs on; use cpu, cuda, cuda:N or auto "
                          "(cuda when available)")


def pick_device(name: str | None, key: str = "--device") -> torch.device:
    """The device `name` names (`check_device_name`); None / "auto": cuda when available, else cpu. A one-line
    error naming `key` when it asks for CUDA that this torch build or machine lacks (the rule of train, generate
    and eval)."""
    check_device_name(name, key)
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise UserError(f"{key} {name}: {why}; use cpu (or auto: cuda when available)")
    return device


TOKENIZER_FILE = "tokenizer.model"
DIGEST_SUFFIX = ".sha256"  # RUN/tokenizer.model.sha256: the digest a training run recorded for its tokenizer


def tokenizer_digest(path: str | Path) -> str:
    """SHA-256 of a tokenizer file (hex)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _verified(path: Path) -> Path:
    """`path`, after checking it against the digest file beside it when there is one."""
    sidecar = path.with_name(path.name + DIGEST_SUFFIX)
    if sidecar.is_file() and sidecar.read_text().strip() != tokenizer_digest(path):
        raise UserError(f"{path} does not match the digest recorded in {sidecar} when the run was trained: the "
                        "file was replaced; restore the run's tokenizer or pass the right one with --tokenizer")
    return path


def find_tokenizer(spec: str | Path) -> Path | None:
    """The SentencePiece model shipped with a model source, if any: `tokenizer.model` in its directory or in its
    `tokenizer/` subdirectory (our weights, an HF directory, a training run), or in the run directory above a
    checkpoint (`RUN/checkpoints/step_N`). The one search rule of generate, eval, the lm-eval backend and convert."""
    path = Path(spec)
    if not path.is_dir():
        return None
    dirs = [path, path / "tokenizer"]
    from nemotron4.checkpoint import is_our_checkpoint

    if path.parent.name == "checkpoints" and is_our_checkpoint(path):
        dirs += [path.parent.parent, path.parent.parent / "tokenizer"]
    for d in dirs:
        if (d / TOKENIZER_FILE).is_file():
            return _verified(d / TOKENIZER_FILE)
    return None


def load_tokenizer(spec: str | Path, vocab_size: int, tokenizer: str | Path | None = None,
                   refuse_smaller: bool = False) -> Tokenizer:
    """The tokenizer for the model `spec` with `vocab_size` embeddings: `tokenizer` if given, else the one
    `find_tokenizer` finds; a clear error when there is none or when it does not fit the model (`check_tokenizer`)."""
    path = tokenizer or find_tokenizer(spec)
    if path is None:
        raise UserError(f"{spec}: no {TOKENIZER_FILE} beside the model; pass the SentencePiece model with "
                        "--tokenizer FILE (lm-eval model_args: tokenizer=FILE)")
    return check_tokenizer(Tokenizer.load(path), vocab_size, refuse_smaller)


VOCAB_PADDING = 1024  # Megatron pads the vocabulary to a multiple of 128 x tp (tp <= 8): 1024 covers every case


def check_tokenizer(tok: Tokenizer, vocab_size: int, refuse_smaller: bool = False) -> Tokenizer:
    """`tok` unless it has more pieces than a model with `vocab_size` embeddings can take (then a UserError). A
    vocabulary larger than the tokenizer's size padded to a multiple of `VOCAB_PADDING` means the tokenizer is most
    likely another model's: a warning says so (perplexity and lm-eval still run), or with `refuse_smaller` (generate:
    the model would sample ids the tokenizer cannot decode) a UserError."""
    if tok.vocab_size > vocab_size:
        raise UserError(f"tokenizer {tok.path} has {tok.vocab_size} pieces but the model's vocabulary is "
                        f"{vocab_size}: they do not belong together; pass the model's own tokenizer (--tokenizer)")
    if vocab_size > -(-tok.vocab_size // VOCAB_PADDING) * VOCAB_PADDING:
        what = (f"tokenizer {tok.path} has {tok.vocab_size} pieces but the model's vocabulary is {vocab_size} (more "
                "than padding): it is most likely not the tokenizer this model was trained with")
        if refuse_smaller:
            raise UserError(f"{what}, and the model would generate ids it cannot decode; pass the model's own "
                            "tokenizer (--tokenizer)")
        import warnings

        warnings.warn(f"{what}, and the results will be meaningless; pass the model's own tokenizer (--tokenizer)",
                      stacklevel=2)
    return tok


def load_model(
    spec: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0
) -> Nemotron4:
    """A model from a flavour name (randomly initialised with `seed`), our weights, an HF directory, a
    training run / checkpoint, or a Megatron-Core / NeMo checkpoint."""
    kind = describe(spec)
    if kind == "flavour":
        if str(device) == "meta":
            with torch.device("meta"):
                return Nemotron4(ModelConfig.from_name(str(spec)))
        return build_model(ModelConfig.from_name(str(spec)), device=device, dtype=dtype or torch.float32, seed=seed)
    if kind == "nemotron4":
        return load_weights(spec, device, dtype)
    if kind == "hf":
        from nemotron4.interop.hf import from_hf

        return from_hf(spec, device, dtype)
    if kind in ("megatron", "nemo"):
        from nemotron4.interop.megatron import load, open_checkpoint

        return load(open_checkpoint(spec), device, dtype)
    from nemotron4.checkpoint import load_model_from_checkpoint

    return load_model_from_checkpoint(spec, device=device, dtype=dtype)
