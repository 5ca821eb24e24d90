"""The first two stages of a training run: resolve the plan, then check it, both without allocating a model, a
process group or a loader. The third stage, build, is `nemotron4.train.recipe` (the model and what a step runs)
and `nemotron4.train.trainer.Trainer` (optimizer, checkpoints, loaders, metrics).

    plan = plan_run(job, run_dir)        # device, dtype, layout, the checkpoint to resume, the model's shape, data
    check_run(plan)                      # every error findable now, each one line naming the key
    trainer = Trainer(plan, ...)         # build (Trainer.create does all three)

Every error found here is a `ConfigError` / `UserError` of one line: what, where (the config key), what to do.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nemotron4.checkpoint import CheckpointManager
from nemotron4.config import ModelConfig
from nemotron4.distributed.layout import ParallelDims, check_tp
from nemotron4.errors import ConfigError, UserError
from nemotron4.train.config import JobConfig, PhaseSection
from nemotron4.train.config_io import job_to_dict
from nemotron4.train.resume import resume_conflicts
from nemotron4.weights import load_config

__all__ = ["RunPlan", "check_run", "plan_run", "resolve_device", "resolve_dtype", "token_files"]


@dataclass
class RunPlan:
    """What a run will be, resolved from its config, its run directory and the launch, before anything is built."""

    job: JobConfig
    run_dir: Path
    device: torch.device
    dtype: torch.dtype  # compute dtype (weights and optimizer stay fp32)
    world_size: int  # processes launched (1: no process group)
    dims: ParallelDims  # (dp, tp); (1, 1) in one process
    model_config: ModelConfig  # from the checkpoint on resume, else model.init_from, else the flavour
    model_source: str  # where model_config came from, for messages
    latest: Path | None = None  # the checkpoint to resume from
    saved: dict[str, Any] | None = None  # its state.json
    data: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # token-file prefix -> content digest
    changed: dict[str, list[Any]] = field(default_factory=dict)  # resume: safe fields changed, key -> [old, new]

    def data_record(self) -> dict[str, dict[str, Any]]:
        """{config key of each token file: its content digest}, as a checkpoint records it."""
        return {where: self.data[prefix] for where, prefix in token_files(self.job, self.first_phase)
                if self.data.get(prefix) is not None}

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def meshed(self) -> bool:
        """The run takes the parallel code path: several processes, or one with parallel.force_mesh."""
        return self.distributed or self.job.parallel.force_mesh

    @property
    def first_phase(self) -> int:
        """The phase the run starts or resumes in."""
        return self.saved["trainer"]["phase"] if self.saved else 0

    @property
    def phase_started(self) -> bool:
        return bool(self.saved and self.saved["trainer"]["phase_started"])


def resolve_device(name: str, world_size: int = 1) -> torch.device:
    """train.device: "auto" is cuda when available, else cpu; under torchrun each process takes its LOCAL_RANK GPU."""
    from nemotron4.weights import pick_device

    try:
        device = pick_device(name, "train.device =")
    except UserError as e:
        raise ConfigError(str(e)) from None
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype: bf16 autocast on GPU by default; weights and optimizer stay fp32 either way."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if name == "bf16" else torch.float32


def token_files(job: JobConfig, first: int = 0) -> list[tuple[str, str]]:
    """(config key with the source's name, prefix) of every token file the phases from `first` on read."""
    out = []
    for i, phase in enumerate(job.phases[first:], start=first):
        for j, s in enumerate(phase.blend.sources):
            for key, prefix in (("path", s.path), ("valid_path", s.valid_path)):
                if prefix:
                    out.append((f"phases.{i}.blend.sources.{j}.{key} (source {s.name!r})", prefix))
    return out


def plan_run(job: JobConfig, run_dir: str | Path, world_size: int | None = None) -> RunPlan:
    """Stage 1: resolve the plan. Reads the config, the launch (WORLD_SIZE), the run directory's latest checkpoint
    state (not its tensors), the model config of the model source, and fingerprints the token files."""
    from nemotron4.data.indexed import dataset_exists
    from nemotron4.data.samples import content_digest

    run_dir = Path(run_dir)
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    device = resolve_device(job.train.device, world_size)
    if world_size > 1:
        dims = job.parallel.resolve(world_size)
    else:
        dims = ParallelDims(dp=1, tp=1)
        if job.parallel.tp > 1 or job.parallel.dp > 1:
            warnings.warn(f"parallel.tp = {job.parallel.tp}, parallel.dp = {job.parallel.dp} are ignored in a single "
                          "process; launch with torchrun for tensor / data parallelism", stacklevel=2)
    latest = CheckpointManager(run_dir).latest()
    saved = CheckpointManager.read_state(latest) if latest else None
    if saved is not None:
        model_config, source = ModelConfig.from_dict(saved["model_config"]), f"checkpoint {latest}"
    elif job.model.init_from:
        try:
            model_config, source = load_config(job.model.init_from), f"model.init_from {job.model.init_from}"
        except UserError as e:
            raise type(e)(f"model.init_from: {e}") from e
    else:
        model_config, source = job.model.model_config(), f"model.flavour {job.model.flavour!r}"
    plan = RunPlan(job, run_dir, device, resolve_dtype(job.train.dtype, device), world_size, dims, model_config,
                   source, latest, saved)
    plan.data = {prefix: content_digest(prefix) if dataset_exists(prefix) else None
                 for _, prefix in token_files(job, plan.first_phase)}
    return plan


def check_run(plan: RunPlan) -> RunPlan:
    """Stage 2: everything that can be checked before allocating, in the order a user would fix it. Returns the
    plan, so that `build(check_run(plan_run(...)))` reads in order."""
    job, cfg = plan.job, plan.model_config
    if plan.saved is not None:
        check_resumable(plan)
    if job.train.seq_len > cfg.max_seq_len:
        raise ConfigError(f"train.seq_len = {job.train.seq_len} exceeds the model's max_seq_len {cfg.max_seq_len} "
                          f"({plan.model_source}); lower train.seq_len or set model.max_seq_len")
    if job.train.fp8 != "off":
        from nemotron4.train.fp8 import check_fp8

        if plan.dims.tp > 1 or (plan.meshed and job.parallel.force_wrap):
            raise ConfigError(f"train.fp8 = {job.train.fp8!r} does not run under tensor parallelism yet (torchao's "
                              "float8 TP styles are not wired in); set parallel.tp = 1 (data parallelism is fine) or "
                              "train.fp8 = \"off\"")
        check_fp8(job.train.fp8, plan.device)
    if plan.distributed:
        check_tp(cfg, plan.dims.tp, job.train.seq_len)
        job.check_batches(plan.dims.dp)  # global batches must split over the replicas
    check_data(plan)
    check_blend_shares(plan)
    check_init_from(plan)
    return plan


def check_resumable(plan: RunPlan) -> None:
    """Refuse, naming the keys, config changes that would make the resumed run differ from its past."""
    progress = plan.saved["trainer"]
    started = progress["phase"] if progress["phase_started"] else progress["phase"] - 1
    defaults = job_to_dict(JobConfig(phases=[PhaseSection() for _ in plan.job.phases]))
    conflicts = resume_conflicts(plan.saved["config"], job_to_dict(plan.job), started, defaults)
    if conflicts:
        raise ConfigError(
            f"{plan.run_dir} holds a run with a different configuration, which cannot be resumed: "
            f"{'; '.join(conflicts[:8])}. Restore those values, or use a new --run-dir."
        )
    check_data_unchanged(plan)
    if plan.phase_started:  # the LR of the phase being resumed may change (after a NaN stop): noted in the metrics
        i = plan.first_phase
        old, new = plan.saved["config"]["phases"][i], job_to_dict(plan.job)["phases"][i]
        plan.changed = {f"phases.{i}.{k}": [old.get(k), new.get(k)] for k in ("lr", "min_lr")
                        if old.get(k) != new.get(k)}
        if plan.changed:
            warnings.warn("resuming with " + ", ".join(f"{k} = {b} (was {a})" for k, (a, b) in plan.changed.items()),
                          stacklevel=2)


def check_data_unchanged(plan: RunPlan) -> None:
    """The token files of the phase being resumed hold what they held when the checkpoint was written (their
    content digest, `nemotron4.data.samples.content_digest`); else the resumed run would read other samples than
    the order it continues. train.trust_changed_data = true turns the refusal into a warning."""
    if not plan.phase_started:
        return
    saved, now = plan.saved.get("data") or {}, plan.data_record()
    phase = f"phases.{plan.first_phase}."
    changed = [k for k in now if k.startswith(phase) and k in saved and saved[k] != now[k]]
    if not changed:
        return
    prefix = dict(token_files(plan.job, plan.first_phase))[changed[0]]
    message = (f"{changed[0]}: the content of {prefix}.bin/.idx changed since checkpoint {plan.latest.name} was "
               f"written (sizes / digest {saved[changed[0]]} -> {plan.data[prefix]})"
               f"{f' (and {len(changed) - 1} more token files)' if len(changed) > 1 else ''}")
    if not plan.job.train.trust_changed_data:
        raise ConfigError(f"{message}; restore the files the run was trained on, or pass "
                          "--train.trust_changed_data true to resume on the new content anyway")
    warnings.warn(f"{message}; resuming anyway (train.trust_changed_data = true)", stacklevel=2)


def check_data(plan: RunPlan) -> None:
    """The token files of every phase still to run: present, sound, made with a tokenizer the model's vocabulary
    can hold (the tokenizer `nemotron4 prepare` recorded beside them), and a sample of their ids in range."""
    from nemotron4.data.indexed import check_token_files
    from nemotron4.data.prepare import recorded_tokenizer_size

    vocab = plan.model_config.vocab_size
    files = token_files(plan.job, plan.first_phase)
    check_token_files(files, vocab_size=vocab)
    for where, prefix in files:
        recorded = recorded_tokenizer_size(prefix)
        if recorded is not None and recorded[1] > vocab:
            raise ConfigError(
                f"{where}: the token files were made with tokenizer {recorded[0]} ({recorded[1]} pieces), more than "
                f"the model's vocab_size {vocab} ({plan.model_source}); set model.vocab_size >= {recorded[1]} or "
                "re-run `nemotron4 prepare` with the model's tokenizer"
            )


def check_blend_shares(plan: RunPlan) -> None:
    """The sample shares of every phase still to run, for training and for each category's held-out evaluation,
    computed now from the token files' sizes as the loader and `build_eval_batches` will compute them, so that a
    zero share or zero weight on a category's only held-out source, or an empty source with an explicit weight,
    fails before step 1 and not at the first evaluation hours in."""
    from nemotron4.data.blend import BlendConfig
    from nemotron4.data.indexed import IndexedDataset
    from nemotron4.train.data import to_blend_config

    for i in range(plan.first_phase, len(plan.job.phases)):
        blend = plan.job.phases[i].blend
        cfg = to_blend_config(blend)
        sizes = [IndexedDataset(s.path).num_tokens for s in cfg.sources]
        try:
            shares = cfg.source_shares(sizes)
        except ConfigError as e:
            raise ConfigError(f"phases.{i}.blend: {e}; give the category's sources tokens or weights, or set its "
                              "share to 0") from None
        for src, share, size in zip(cfg.sources, shares, sizes, strict=True):
            if share > 0 and size == 0:  # an explicit weight on an empty source (a tiny one is sampled with repeats)
                raise ConfigError(f"phases.{i}.blend: source {src.name!r} ({src.path}) has share {share:.3g} but "
                                  "holds no tokens; give it "
                                  "weight 0 or fix its token files")
        for category in blend.categories:
            held = [s for s in blend.sources if s.valid_path and s.category == category]
            if not held:
                continue
            where = f"phases.{i}.blend: the held-out evaluation of category {category!r}"
            try:
                sub = to_blend_config(blend, category=category)
                valid = [s for s in sub.sources if s.valid_path]
                ev = BlendConfig({category: sub.categories.get(category, 0.0)}, valid, sub.within_category, sub.alpha)
                total = ev.source_shares([IndexedDataset(s.valid_path).num_tokens for s in valid]).sum()
            except ConfigError as e:
                raise ConfigError(f"{where} (sources with a valid_path: {[s.name for s in held]}) would fail: {e}; "
                                  "fix their shares / weights, or remove their valid_path") from None
            if total <= 0:
                raise ConfigError(f"{where} has nothing to sample (its held-out sources {[s.name for s in held]} "
                                  "have no share or no tokens); fix them, or remove their valid_path")


def check_init_from(plan: RunPlan) -> None:
    """Read the config of every phase's init_from that is still to come, so that a missing or unsupported source
    fails now, not at the phase switch hours later (the weights are read when the phase starts)."""
    phases = plan.job.phases
    for i in range(plan.first_phase + int(plan.phase_started), len(phases)):
        if phases[i].init_from:
            try:
                load_config(phases[i].init_from)
            except UserError as e:
                raise UserError(f"phases.{i}.init_from: {e}") from e
