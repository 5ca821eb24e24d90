"""The run configuration (torchtitan's JobConfig): nested dataclasses, one docstring per field.

A run is a list of phases (PAPER.md sections 4-5: pretraining, then continued training), each with its token
budget, batch-size ramp, LR schedule and data blend. Loading, `--section.key value` overrides, validation and
saving live in `nemotron4.train.config_io`; everything here is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nemotron4.config import ModelConfig
from nemotron4.errors import ConfigError
from nemotron4.train.schedules import DECAY_STYLES, BatchRamp, LRSchedule, parse_tokens

__all__ = [
    "BlendSection", "CheckpointSection", "JobConfig", "MetricsSection", "ModelSection", "OptimSection",
    "ParallelSection", "PhaseSection", "SourceSection", "TrainSection",
]


@dataclass
class ModelSection:
    """Which network to train. Any `ModelConfig` field (e.g. `vocab_size = 1024`) may be set here as an override
    of the flavour; they are collected in `overrides`."""

    flavour: str = "tiny"
    """A named flavour of `nemotron4.config.FLAVOURS` (tiny, minitron-4b, minitron-8b, 15b, 340b)."""
    init_from: str | None = None
    """Start from these weights (a run directory or checkpoint of ours, or a Hugging Face directory); the shape
    then comes from there and `flavour` and overrides are ignored."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields that replace the flavour's values (written flat in the [model] table)."""

    def model_config(self) -> ModelConfig:
        """The flavour with the overrides applied (ConfigError names a bad flavour or field)."""
        return ModelConfig.from_name(self.flavour, **self.overrides)


@dataclass
class TrainSection:
    """Shapes and numerics shared by all phases."""

    seq_len: int = 4096
    """Tokens per training sequence (a sample holds seq_len + 1 tokens: inputs [:-1], targets [1:])."""
    micro_batch_size: int = 1
    """Sequences per forward/backward; gradient accumulation = global batch / (micro_batch_size x dp)."""
    seed: int = 1234
    """Seeds the weight init, the blends' shuffles (seed + phase index) and the RNGs."""
    device: str = "auto"
    """"auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"."""
    dtype: str = "auto"
    """"auto" (bf16 autocast with fp32 master weights on GPU, fp32 on CPU), "bf16" or "fp32"."""
    compile: bool = False
    """torch.compile each transformer block (and the loss's chunk work on GPU); parameter names unchanged."""
    fused_loss: bool = True
    """Cross-entropy through the output projection chunk by chunk, never holding (tokens x vocab) logits: with a
    256k vocabulary, gigabytes less memory and (compiled, on GPU) faster. Same value and gradients."""
    attention_backend: str = "auto"
    """SDPA kernel on GPU: "auto" (PyTorch's choice), "cudnn" (fastest on H100/H200), "flash", "efficient", "math"."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward: less memory, about a third more compute."""
    cast_weights_once: bool = True
    """Under bf16, make the blocks' bf16 weight copies once per optimizer step instead of once per micro-batch and
    add their gradients straight into the fp32 masters (Megatron's main_grad). Same numbers as plain autocast,
    less memory traffic. One process, or tensor parallelism alone (not with dp > 1, where FSDP2 owns the
    parameters)."""
    fp8: str = "off"
    """FP8 matmuls for the blocks' linear layers (torchao float8 training; CUDA, compute capability >= 8.9,
    `pip install 'nemotron4[fp8]'`): "off", "tensorwise" (one scale per tensor, fastest) or "rowwise" (one scale
    per row). A compute format only: weights, optimizer state and checkpoints stay as they are, so it may change
    across a resume. The embedding and output projection stay bf16. One process only for now."""
    max_nonfinite_in_row: int = 5
    """A NaN/Inf loss or gradient norm skips that update; this many in a row stops the run."""


@dataclass
class OptimSection:
    """AdamW as in the family's public recipes (PAPER.md section 4). The LR lives in each phase."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """Adam (beta1, beta2)."""
    eps: float = 1e-5
    """Adam epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not norms, biases or other 1-D parameters)."""
    grad_clip: float = 1.0
    """Clip the global gradient L2 norm to this (0 disables)."""
    fused: str = "auto"
    """"auto" (fused AdamW on CUDA, foreach on CPU), "true" or "false"."""


@dataclass
class SourceSection:
    """One tokenized source (mirrors `nemotron4.data.blend.Source`)."""

    name: str = ""
    """Unique name, used in logs."""
    path: str = ""
    """Megatron .bin/.idx prefix of the training tokens."""
    category: str = ""
    """Category this source belongs to (a key of the blend's `categories`)."""
    weight: float | None = None
    """Weight within its category; unset: by size (or temperature, see `within_category`)."""
    valid_path: str | None = None
    """Optional .bin/.idx prefix of held-out tokens, for the per-category validation loss."""


@dataclass
class BlendSection:
    """A weighted mixture of sources (mirrors `nemotron4.data.blend.BlendConfig`)."""

    categories: dict[str, float] = field(default_factory=dict)
    """Category weights, e.g. {english = 70, multilingual = 15, code = 15} (PAPER.md section 3); normalised."""
    sources: list[SourceSection] = field(default_factory=list)
    """The sources, each in one category."""
    within_category: str = "size"
    """How sources share their category's weight when unset: "size" or "temperature"."""
    alpha: float = 1.0
    """Temperature exponent for within_category = "temperature" (weight proportional to size ** alpha)."""


@dataclass
class PhaseSection:
    """One phase of the run: pretraining, or continued training (PAPER.md section 5)."""

    name: str = "pretrain"
    """Unique name, shown in metrics and plots."""
    tokens: int = 0
    """Token budget of the phase, e.g. "8T" or 4096 (the last step may run over by less than one batch)."""
    batch_size: str = "0:1"
    """Global batch in sequences: an int, or a ramp over this phase's tokens, "0:384 200B:768 400B:1152" (Table 2),
    or a TOML list ["0:384", "200B:768"]."""
    lr: float | None = None
    """Peak LR; unset: start from the LR the previous phase ended at (not allowed for the first phase)."""
    min_lr: float = 0.0
    """LR at the end of the phase."""
    warmup_tokens: int = 0
    """Linear warmup from 0 over this many tokens."""
    decay: str = "cosine"
    """"cosine", "linear", "wsd" (warmup-stable-decay) or "constant"."""
    decay_fraction: float = 0.2
    """For "wsd": the fraction of the post-warmup tokens spent decaying."""
    init_from: str | None = None
    """Start the phase from these weights only (a run/checkpoint of ours or a Hugging Face directory), with a
    fresh optimizer."""
    reset_optimizer: bool = False
    """Start the phase with a fresh optimizer state (implied by init_from)."""
    blend: BlendSection = field(default_factory=BlendSection)
    """The data mixture of this phase."""

    def ramp(self) -> BatchRamp:
        return BatchRamp.parse(self.batch_size, f"phases.{self.name}.batch_size")

    def lr_schedule(self, peak: float) -> LRSchedule:
        return LRSchedule(peak, self.min_lr, self.tokens, self.warmup_tokens, self.decay, self.decay_fraction)


@dataclass
class ParallelSection:
    """Tensor x data parallelism under torchrun (nemotron4.distributed); ignored in a single process. The layout may
    change when resuming: checkpoints reshard on load."""

    tp: int = 1
    """Tensor-parallel size (PAPER.md section 4: 8, one DGX node); must divide n_heads, n_kv_heads, ffn_dim,
    vocab_size and train.seq_len, and the world size."""
    dp: int = 0
    """Data-parallel size; 0 derives it as world size / tp. Parameters, gradients and AdamW state shard over dp."""
    backend: str = "auto"
    """Process-group backend: "auto" (nccl on CUDA, gloo on CPU), "nccl" or "gloo"."""


@dataclass
class CheckpointSection:
    """Distributed checkpoints (DCP) under <run-dir>/checkpoints."""

    interval: int = 1000
    """Save every this many optimizer steps (0: only at the end of each phase)."""
    enabled: bool = True
    """false: write no checkpoints at all (benchmarks, smoke tests); such a run cannot resume."""
    keep_last: int = 3
    """Keep the newest N checkpoints (0 keeps all)."""


@dataclass
class MetricsSection:
    """Logging: metrics.jsonl (always), progress bar, TensorBoard, held-out loss."""

    eval_interval: int = 0
    """Held-out loss per category every this many steps (0: only at the end of each phase)."""
    eval_batches: int = 4
    """Micro-batches of held-out data per category."""
    progress_bar: bool = True
    """Show a tqdm bar on stderr."""
    tensorboard: bool = False
    """Also write TensorBoard events to <run-dir>/tb (needs the `tensorboard` package)."""
    peak_flops: float = 989e12
    """Peak dense bf16 FLOP/s per device for MFU (H100/H200 SXM, PAPER.md section 4)."""


@dataclass
class JobConfig:
    """A complete training run."""

    model: ModelSection = field(default_factory=ModelSection)
    """The network."""
    train: TrainSection = field(default_factory=TrainSection)
    """Shapes and numerics."""
    optim: OptimSection = field(default_factory=OptimSection)
    """The optimizer."""
    phases: list[PhaseSection] = field(default_factory=list)
    """Pretraining, then optional continued-training phases, run in order."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpointing."""
    metrics: MetricsSection = field(default_factory=MetricsSection)
    """Logging."""
    parallel: ParallelSection = field(default_factory=ParallelSection)
    """Tensor / data parallelism (multi-process runs)."""

    def validate(self, dp_size: int = 1) -> None:
        """Cross-field checks, once, with messages that name the key. Field types are checked on load."""
        t = self.train
        for name in ("seq_len", "micro_batch_size", "max_nonfinite_in_row"):
            if getattr(t, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(t, name)}")
        if t.dtype not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"train.dtype must be one of: auto, bf16, fp32; got {t.dtype!r}")
        from nemotron4.train.fast import ATTENTION_BACKENDS

        if t.attention_backend not in ATTENTION_BACKENDS:
            raise ConfigError(f"train.attention_backend must be one of: {', '.join(ATTENTION_BACKENDS)}; "
                              f"got {t.attention_backend!r}")
        from nemotron4.train.fp8 import check_mode

        check_mode(t.fp8)
        if self.optim.fused not in ("auto", "true", "false"):
            raise ConfigError(f"optim.fused must be one of: auto, true, false; got {self.optim.fused!r}")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas must be two numbers, got {self.optim.betas}")
        par = self.parallel
        if par.tp < 1 or par.dp < 0:
            raise ConfigError(f"parallel.tp must be >= 1 and parallel.dp >= 0 (0: derived), got {par.tp}, {par.dp}")
        if par.backend not in ("auto", "nccl", "gloo"):
            raise ConfigError(f"parallel.backend must be one of: auto, nccl, gloo; got {par.backend!r}")
        if self.checkpoint.interval < 0 or self.checkpoint.keep_last < 0:
            raise ConfigError("checkpoint.interval and checkpoint.keep_last must be >= 0")
        if self.model.init_from is None:
            self.model.model_config()  # raises on an unknown flavour or a bad override
        if not self.phases:
            raise ConfigError("no phases: add at least one [[phases]] table with tokens, batch_size, lr and blend")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"phase names must be unique, got {names}")
        for i, p in enumerate(self.phases):
            self._validate_phase(i, p, dp_size)

    def _validate_phase(self, i: int, p: PhaseSection, dp_size: int) -> None:
        where = f"phases.{i}"
        if p.tokens <= 0:
            raise ConfigError(f"{where}.tokens must be positive, got {p.tokens}")
        if p.lr is None and i == 0:
            raise ConfigError(f"{where}.lr is required for the first phase (only later phases may inherit it)")
        if p.decay not in DECAY_STYLES:
            raise ConfigError(f"{where}.decay {p.decay!r} is not one of: {', '.join(DECAY_STYLES)}")
        if not 0.0 < p.decay_fraction <= 1.0:
            raise ConfigError(f"{where}.decay_fraction must be in (0, 1], got {p.decay_fraction}")
        if p.warmup_tokens > p.tokens:
            raise ConfigError(f"{where}.warmup_tokens ({p.warmup_tokens}) exceed its tokens ({p.tokens})")
        per_step = self.train.micro_batch_size * dp_size
        for size in p.ramp().sizes:
            if size % per_step:
                raise ConfigError(
                    f"{where}.batch_size: global batch {size} is not divisible by micro_batch_size "
                    f"({self.train.micro_batch_size}) x data-parallel size ({dp_size}) = {per_step}; "
                    "global = micro x accumulation x dp"
                )
        b = p.blend
        if not b.sources:
            raise ConfigError(f"{where}.blend has no sources: add [[phases.blend.sources]] tables")
        if b.within_category not in ("size", "temperature"):
            raise ConfigError(f"{where}.blend.within_category must be size or temperature, got {b.within_category!r}")
        for s in b.sources:
            if not s.name or not s.path:
                raise ConfigError(f"{where}.blend.sources: every source needs a name and a path, got {s}")
            if s.category not in b.categories:
                raise ConfigError(
                    f"{where}.blend source {s.name!r} has category {s.category!r}, not one of the blend's "
                    f"categories: {', '.join(b.categories) or '(none)'}"
                )
        empty = [c for c in b.categories if not any(s.category == c for s in b.sources)]
        if empty:
            raise ConfigError(f"{where}.blend categories {empty} have no sources")
        self._validate_weights(where, b)

    @staticmethod
    def _validate_weights(where: str, b: BlendSection) -> None:
        """Category shares and source weights: finite, >= 0, not all zero (checked for every phase at load, so a
        bad later phase fails before the first step rather than at the phase switch)."""
        for cat, share in b.categories.items():
            if not 0 <= share < float("inf"):
                raise ConfigError(f"{where}.blend.categories.{cat} = {share}: shares must be finite and >= 0")
        if sum(b.categories.values()) <= 0:
            raise ConfigError(f"{where}.blend.categories are all zero; give at least one category a positive share")
        for j, s in enumerate(b.sources):
            if s.weight is not None and not 0 <= s.weight < float("inf"):
                raise ConfigError(f"{where}.blend.sources.{j}.weight = {s.weight} (source {s.name!r}): weights must "
                                  "be finite and >= 0, or unset (by size)")
        for cat, share in b.categories.items():
            weights = [s.weight for s in b.sources if s.category == cat]
            if share > 0 and None not in weights and sum(weights) <= 0:
                raise ConfigError(f"{where}.blend: every source weight in category {cat!r} is zero, but the category "
                                  f"has share {share}; give a source a positive weight or set the share to 0")


def tokens_field(value: Any, where: str) -> int:
    """Coercion hook for token-count fields (see config_io)."""
    return parse_tokens(value, where)


def batch_field(value: Any, where: str) -> str:
    """Coercion hook for batch_size: any accepted ramp form becomes its canonical string."""
    return str(BatchRamp.parse(value, where))
