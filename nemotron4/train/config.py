"""The run configuration (torchtitan's JobConfig): nested dataclasses, one docstring per field.

A run is a list of phases (docs/paper.md: pretraining, then continued training), each with its token budget,
batch-size ramp, LR schedule and data blend. Loading and `--section.key value` overrides live in
`nemotron4.train.config_io`; here are the fields, their typed values (token counts, `BatchRamp`) and `validate()`,
the checks that need nothing but the config (run once, when it is loaded). What needs the model, the data or the
world size is checked by the trainer's check stage (`nemotron4.train.run.check_run`).

Fields marked `metadata=RESUME_FREE` may change when a run resumes (nemotron4.train.resume reads the marks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nemotron4.config import ModelConfig
from nemotron4.distributed.layout import ParallelSection
from nemotron4.errors import ConfigError
from nemotron4.flops import H100_BF16_PEAK
from nemotron4.schedules import DECAY_STYLES, BatchRamp, LRSchedule, parse_tokens

__all__ = [
    "RESUME_FREE", "BlendSection", "CheckpointSection", "JobConfig", "MetricsSection", "ModelSection", "OptimSection",
    "PhaseSection", "SourceSection", "TrainSection",
]

RESUME_FREE = {"resume": "free"}
"""Field metadata: this key (or this whole section) may change when a run resumes, because it does not shape the
trajectory so far (speed options, logging, checkpointing, the layout: checkpoints reshard)."""


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
    compile: bool = field(default=False, metadata=RESUME_FREE)
    """torch.compile each transformer block (and the loss's chunk work on GPU); parameter names unchanged. With
    tp > 1 or dp > 1: each block's attention and MLP, inside the TP / FSDP2 hooks (nemotron4.train.recipe)."""
    fused_loss: bool = field(default=True, metadata=RESUME_FREE)
    """Cross-entropy through the output projection chunk by chunk, never holding (tokens x vocab) logits: with a
    256k vocabulary, gigabytes less memory and (compiled, on GPU) faster. Same value and gradients. Every layout:
    under tp > 1 vocabulary-parallel (each rank its vocabulary shard of the output projection, one chunk of tokens x
    vocab / tp logits at a time); false there: DTensor's `loss_parallel` on the whole (tokens x vocab / tp) logits."""
    attention_backend: str = field(default="auto", metadata=RESUME_FREE)
    """SDPA kernel on GPU: "auto" (PyTorch's choice), "cudnn" (fastest on H100/H200), "flash", "efficient", "math"."""
    activation_checkpointing: bool = field(default=False, metadata=RESUME_FREE)
    """Recompute each block's activations in backward: less memory, about a third more compute."""
    cast_weights_once: bool = field(default=True, metadata=RESUME_FREE)
    """Under bf16, make the blocks' bf16 weight copies once per optimizer step instead of once per micro-batch and
    add their gradients straight into the fp32 masters (Megatron's main_grad). Same numbers as plain autocast,
    less memory traffic. One process, or tensor parallelism alone; with dp > 1 FSDP2 owns the parameters and
    all-gathers their bf16 copies itself (its mixed-precision policy) instead."""
    fp8: str = field(default="off", metadata=RESUME_FREE)
    """FP8 matmuls for the blocks' linear layers (torchao float8 training; CUDA, compute capability >= 8.9,
    `pip install 'nemotron4[fp8]'`): "off", "tensorwise" (one scale per tensor, fastest) or "rowwise" (one scale
    per row), or "tensorwise+output" (also the fused loss's output-projection GEMMs in FP8; needs
    `fused_loss`). A compute format only: weights, optimizer state and checkpoints stay as they are, so it may
    change across a resume. The embedding stays bf16, and the output projection too except under "+output"
    (1.306x instead of 1.19x bf16 on one H200 at Minitron-4B; its 100-step loss ends 0.59% above bf16's).
    One process or FSDP2 (dp; e4m3 all-gathers under tensorwise); refused under tensor parallelism."""
    trust_changed_data: bool = field(default=False, metadata=RESUME_FREE)
    """Resume even if the token files of the phase being resumed changed since the checkpoint (their content
    digest differs): the run then reads other samples than an uninterrupted run would. Off: such a resume is
    refused before step 1."""
    max_nonfinite_in_row: int = field(default=5, metadata=RESUME_FREE)
    """A NaN/Inf loss or gradient norm skips that update; this many in a row stops the run."""


@dataclass
class OptimSection:
    """AdamW as in the family's public recipes (docs/paper.md section 4). The LR lives in each phase."""

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
    path: str = field(default="", metadata=RESUME_FREE)
    """Megatron .bin/.idx prefix of the training tokens (may move on resume: the loader's content fingerprint still
    guards the data)."""
    category: str = ""
    """Category this source belongs to (a key of the blend's `categories`)."""
    weight: float | None = None
    """Weight within its category; unset: by size (or temperature, see `within_category`)."""
    valid_path: str | None = field(default=None, metadata=RESUME_FREE)
    """Optional .bin/.idx prefix of held-out tokens, for the per-category validation loss."""


@dataclass
class BlendSection:
    """A weighted mixture of sources (mirrors `nemotron4.data.blend.BlendConfig`)."""

    categories: dict[str, float] = field(default_factory=dict)
    """Category weights, e.g. {english = 70, multilingual = 15, code = 15} (docs/paper.md section 3); normalised."""
    sources: list[SourceSection] = field(default_factory=list)
    """The sources, each in one category."""
    within_category: str = "size"
    """How sources share their category's weight when unset: "size" or "temperature"."""
    alpha: float = 1.0
    """Temperature exponent for within_category = "temperature" (weight proportional to size ** alpha)."""


@dataclass
class PhaseSection:
    """One phase of the run: pretraining, or continued training (docs/paper.md section 5)."""

    name: str = "pretrain"
    """Unique name, shown in metrics and plots."""
    tokens: int = 0
    """Token budget of the phase, e.g. "8T" or 4096 (the last step may run over by less than one batch)."""
    batch_size: BatchRamp = field(default_factory=lambda: BatchRamp(((0, 1),)))
    """Global batch in sequences: an int, or a ramp over this phase's tokens, "0:384 200B:768 400B:1152" (Table 2),
    or a TOML list ["0:384", "200B:768"]; parsed once into a `BatchRamp`."""
    lr: float | None = field(default=None, metadata=RESUME_FREE)
    """Peak LR; unset: start from the LR the previous phase ended at (not allowed for the first phase). May change
    when a run resumes (e.g. lowered after a NaN stop): the schedule continues at the resumed step with the new
    value, and the first record after the resume names the change (`config_changed` in metrics.jsonl)."""
    min_lr: float = field(default=0.0, metadata=RESUME_FREE)
    """LR at the end of the phase (may change on resume, as lr)."""
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

    def lr_schedule(self, peak: float) -> LRSchedule:
        """This phase's schedule at peak LR `peak` (built once, when the phase starts or resumes)."""
        return LRSchedule(peak, self.min_lr, self.tokens, self.warmup_tokens, self.decay, self.decay_fraction)


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
    peak_flops: float = H100_BF16_PEAK
    """Peak dense bf16 FLOP/s per device for MFU (H100/H200 SXM: nemotron4.flops.H100_BF16_PEAK)."""


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
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection, metadata=RESUME_FREE)
    """Checkpointing."""
    metrics: MetricsSection = field(default_factory=MetricsSection, metadata=RESUME_FREE)
    """Logging."""
    parallel: ParallelSection = field(default_factory=ParallelSection, metadata=RESUME_FREE)
    """Tensor / data parallelism (multi-process runs)."""

    def validate(self) -> None:
        """Cross-field checks that need only the config, once (`load_job` runs them), with messages that name the
        key. Field types are checked on load; the model, data and world size in the trainer's check stage."""
        t = self.train
        for name in ("seq_len", "micro_batch_size", "max_nonfinite_in_row"):
            if getattr(t, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(t, name)}")
        from nemotron4.weights import check_device_name  # generate's and eval's rule (`pick_device`)

        check_device_name(t.device, "train.device =")
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
        o = self.optim
        if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        if not (math.isfinite(o.eps) and o.eps > 0):
            raise ConfigError(f"optim.eps must be a positive number, got {o.eps}")
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(o, name)) and getattr(o, name) >= 0):
                raise ConfigError(f"optim.{name} must be a number >= 0, got {getattr(o, name)}")
        self.parallel.validate()
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
            self._validate_phase(i, p)
        self.check_batches(dp_size=1)

    def check_batches(self, dp_size: int) -> None:
        """Every global batch size of every phase splits into micro-batches over `dp_size` replicas."""
        per_step = self.train.micro_batch_size * dp_size
        for i, p in enumerate(self.phases):
            for size in p.batch_size.sizes:
                if size % per_step:
                    raise ConfigError(
                        f"phases.{i}.batch_size: global batch {size} is not divisible by micro_batch_size "
                        f"({self.train.micro_batch_size}) x data-parallel size ({dp_size}) = {per_step}; "
                        "global = micro x accumulation x dp"
                    )

    def _validate_phase(self, i: int, p: PhaseSection) -> None:
        where = f"phases.{i}"
        if p.tokens <= 0:
            raise ConfigError(f"{where}.tokens must be positive, got {p.tokens}")
        if p.lr is None and i == 0:
            raise ConfigError(f"{where}.lr is required for the first phase (only later phases may inherit it)")
        if p.lr is not None and not (math.isfinite(p.lr) and p.lr > 0):
            raise ConfigError(f"{where}.lr must be a positive number, got {p.lr}")
        if not (math.isfinite(p.min_lr) and 0 <= p.min_lr <= (p.lr if p.lr is not None else math.inf)):
            raise ConfigError(f"{where}.min_lr must be in [0, lr = {p.lr}], got {p.min_lr} (the LR decays from lr "
                              "down to min_lr)")
        if p.decay not in DECAY_STYLES:
            raise ConfigError(f"{where}.decay {p.decay!r} is not one of: {', '.join(DECAY_STYLES)}")
        if not 0.0 < p.decay_fraction <= 1.0:
            raise ConfigError(f"{where}.decay_fraction must be in (0, 1], got {p.decay_fraction}")
        if p.warmup_tokens > p.tokens:
            raise ConfigError(f"{where}.warmup_tokens ({p.warmup_tokens}) exceed its tokens ({p.tokens})")
        from nemotron4.data.blend import validate_blend

        b = p.blend
        validate_blend(b.categories, b.sources, b.within_category, b.alpha, f"{where}.blend")


def tokens_field(value: Any, where: str) -> int:
    """Coercion hook for token-count fields (see config_io)."""
    return parse_tokens(value, where)


def batch_field(value: Any, where: str) -> BatchRamp:
    """Coercion hook for batch_size: any accepted ramp form, parsed once."""
    return value if isinstance(value, BatchRamp) else BatchRamp.parse(value, where)
