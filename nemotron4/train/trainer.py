"""The Nemotron-4 recipe in one process: build, step, loop (torchtitan's split).

    trainer = Trainer(load_job("configs/tiny.toml"), "runs/tiny")   # build (or resume from the run directory)
    trainer.run()                                                    # loop over phases, steps, checkpoints

A run is a list of phases (PAPER.md sections 4-5). Within a phase the global batch follows the phase's ramp of
consumed tokens (Table 2) and the LR its schedule; a step is `nemotron4.train.step.train_step`.

Launched by torchrun with several processes, the same Trainer runs on every rank with tensor x data parallelism
(`nemotron4.distributed`, configured by the [parallel] section): the model is built sharded, each data-parallel
replica reads its slice of every global batch, and rank 0 alone writes metrics, config.toml and the checkpoint
pointer. One process takes none of those paths.

Everything a run reads is checked before its first step (config, every phase's token files and init_from weights);
`run(stop=...)` ends early, with a checkpoint at the step it stopped, when asked (SIGTERM: nemotron4.train.signals).
Failure modes and the tests that show them: docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nemotron4.config import ModelConfig
from nemotron4.errors import ConfigError, UserError
from nemotron4.model import Nemotron4, build_model
from nemotron4.train.checkpoint import CheckpointManager, get_rng_state, set_rng_state
from nemotron4.train.config import JobConfig, PhaseSection
from nemotron4.train.config_io import job_to_dict, save_job
from nemotron4.train.data import build_eval_batches, build_phase_loader, check_token_files
from nemotron4.train.fast import (
    apply_activation_checkpointing,
    cast_weights_context,
    compile_block_parts,
    compile_blocks,
    fused_cross_entropy_loss,
    set_attention_backend,
)
from nemotron4.train.faults import Faults
from nemotron4.train.flops import flops_per_token
from nemotron4.train.fp8 import apply_fp8
from nemotron4.train.metrics import MetricsLogger, NullMetrics, peak_memory_gib
from nemotron4.train.optim import build_optimizer, init_optimizer_state
from nemotron4.train.resume import resume_conflicts
from nemotron4.train.step import autocast_context, cross_entropy_loss, eval_loss, train_step
from nemotron4.weights import load_config, load_model

if TYPE_CHECKING:
    from nemotron4.distributed.runtime import Parallel

__all__ = ["NonFiniteLossError", "TrainState", "Trainer"]


class NonFiniteLossError(UserError):
    """Too many NaN/Inf losses in a row; the last checkpoint is still good."""


@dataclass
class TrainState:
    """Progress of a run; saved in every checkpoint."""

    step: int = 0  # optimizer steps taken (skipped non-finite steps count: their data was consumed)
    tokens: int = 0  # tokens consumed by all phases
    phase: int = 0  # index into JobConfig.phases
    phase_tokens: int = 0  # tokens consumed in the current phase
    phase_started: bool = False  # the current phase's loader exists (and its init_from/reset has been applied)
    peak_lr: float | None = None  # the current phase's resolved peak LR
    last_lr: float | None = None  # LR of the last step (a later phase with lr unset starts from it)
    nonfinite_in_row: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r} but CUDA is not available; use cpu or auto")
    return device


def _setup_parallel(job: JobConfig, device: torch.device) -> Parallel | None:
    """nemotron4.distributed's `Parallel` under a multi-process torchrun launch, else None (imports nothing)."""
    from nemotron4.distributed.mesh import launched_by_torchrun

    if not launched_by_torchrun():
        if job.parallel.tp > 1 or job.parallel.dp > 1:
            warnings.warn(f"parallel.tp = {job.parallel.tp}, parallel.dp = {job.parallel.dp} are ignored in a single "
                          "process; launch with torchrun for tensor / data parallelism", stacklevel=3)
        return None
    from nemotron4.distributed.runtime import setup_parallel

    return setup_parallel(job.parallel, device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype: bf16 autocast on GPU by default; weights and optimizer stay fp32 either way."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if name == "bf16" else torch.float32


class Trainer:
    """Builds everything from a JobConfig and a run directory, resuming from its latest checkpoint if any."""

    def __init__(
        self,
        job: JobConfig,
        run_dir: str | Path,
        build_loader: Callable[..., Any] = build_phase_loader,
        build_eval: Callable[..., dict[str, list[torch.Tensor]]] = build_eval_batches,
    ) -> None:
        self.job, self.run_dir = job, Path(run_dir)
        self.build_loader, self.build_eval = build_loader, build_eval
        self.device = resolve_device(job.train.device)
        self.parallel = _setup_parallel(job, self.device)  # None in one process
        self.dp_rank, self.dp_size, self.world_size, self.primary = 0, 1, 1, True
        self.loss_fn: Callable[..., torch.Tensor] = cross_entropy_loss
        checkpoint_sync: dict[str, Any] = {}
        if self.parallel is not None:
            p = self.parallel
            self.device = p.device
            self.dp_rank, self.dp_size, self.world_size, self.primary = (
                p.dp_rank, p.dims.dp, p.dims.world_size, p.primary
            )
            job.validate(self.dp_size)  # global batches must split over the replicas
            from nemotron4.distributed.step import local_loss

            self.loss_fn = local_loss(cross_entropy_loss)
            checkpoint_sync = {"primary": p.primary, "barrier": p.barrier}
        self.dtype = resolve_dtype(job.train.dtype, self.device)
        self.autocast = autocast_context(self.device, self.dtype)
        if self.parallel is None and job.train.fused_loss:
            # Under tp/dp the loss goes through loss_parallel (the fused loss reads the full output weight).
            self.loss_fn = fused_cross_entropy_loss
        self.faults = Faults.from_env()  # no-ops unless a reliability test set NEMOTRON4_FAULT_*
        self.checkpoints = CheckpointManager(self.run_dir, job.checkpoint.keep_last, faults=self.faults,
                                             **checkpoint_sync)
        self.state = TrainState()
        self.loader: Any = None
        self.stopped = False  # run() returned early because `stop` asked it to
        self._saved_step: int | None = None
        self._eval: tuple[int, dict[str, list[torch.Tensor]]] | None = None  # (phase, batches)

        if not job.checkpoint.enabled:
            warnings.warn("checkpoint.enabled = false: no checkpoints will be written and this run cannot resume",
                          stacklevel=2)
        self.checkpoints.remove_partial()  # debris of a save that died; never loaded
        latest = self.checkpoints.latest()
        saved = CheckpointManager.read_state(latest) if latest else None
        if saved is not None:
            self._check_resumable(saved)
        remaining = saved["trainer"]["phase"] if saved else 0
        if build_loader is build_phase_loader:  # tests may inject loaders without token files
            check_token_files(job.phases[remaining:], first=remaining)
        self._check_init_from(remaining, started=bool(saved and saved["trainer"]["phase_started"]))
        torch.manual_seed(job.train.seed)
        self.model = self._build_model(ModelConfig.from_dict(saved["model_config"]) if saved else None)
        if job.train.seq_len > self.model.cfg.max_seq_len:
            raise ConfigError(f"train.seq_len {job.train.seq_len} exceeds the model's max_seq_len "
                              f"{self.model.cfg.max_seq_len}")
        self.step_model = self._apply_fast_paths(self.model)
        self.step_context = cast_weights_context(self.model, self.dtype, self.dp_size, job.train.cast_weights_once)
        self.hooks = self.parallel.step_hooks(self.model) if self.parallel is not None else None
        self.optimizer = build_optimizer(self.model, job.optim, self.device)
        self.flops_per_token = flops_per_token(self.model.cfg, job.train.seq_len)
        if latest is not None:
            self._resume(latest, saved)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        total = sum(p.tokens for p in job.phases)
        self.metrics: MetricsLogger | NullMetrics = NullMetrics()
        if self.primary:
            save_job(job, self.run_dir / "config.toml")
            self.metrics = MetricsLogger(
                self.run_dir, job.metrics, total, self.state.tokens, self.state.step if latest else None
            )

    # ---- build ----------------------------------------------------------------------------------------------

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        """Refuse, naming the keys, config changes that would make the resumed run differ from its past."""
        progress = saved["trainer"]
        started = progress["phase"] if progress["phase_started"] else progress["phase"] - 1
        defaults = job_to_dict(JobConfig(phases=[PhaseSection() for _ in self.job.phases]))
        conflicts = resume_conflicts(saved["config"], job_to_dict(self.job), started, defaults)
        if conflicts:
            raise ConfigError(
                f"{self.run_dir} holds a run with a different configuration, which cannot be resumed: "
                f"{'; '.join(conflicts[:8])}. Restore those values, or use a new --run-dir."
            )

    def _check_init_from(self, first: int, started: bool) -> None:
        """Read the config of every phase's init_from that is still to come, so that a missing or unsupported
        source fails now, not at the phase switch hours later (the weights are read when the phase starts)."""
        for i in range(first + int(started), len(self.job.phases)):
            spec = self.job.phases[i].init_from
            if spec:
                try:
                    load_config(spec)
                except UserError as e:
                    raise UserError(f"phases.{i}.init_from: {e}") from e

    def _build_model(self, cfg: ModelConfig | None) -> Nemotron4:
        """From the checkpoint's shape on resume, else from init_from weights, else a fresh init of the flavour."""
        seq_len, seed = self.job.train.seq_len, self.job.train.seed
        if cfg is None and self.job.model.init_from:
            if self.parallel is None:
                return load_model(self.job.model.init_from, device=self.device).float()
            model = load_model(self.job.model.init_from, device="cpu").float()  # full, then each rank's shards
            return self.parallel.build_model(model.cfg, seq_len, weights=model.state_dict(),
                                             compute_dtype=self.dtype)
        cfg = cfg or self.job.model.model_config()
        if self.parallel is not None:
            return self.parallel.build_model(cfg, seq_len, seed=seed, compute_dtype=self.dtype)
        return build_model(cfg, device=self.device, seed=seed)

    def _apply_fast_paths(self, model: Nemotron4) -> Nemotron4:
        """Speed options of nemotron4.train.fast, in torchtitan's order: checkpointing, then compile."""
        train = self.job.train
        set_attention_backend(train.attention_backend)
        apply_fp8(model, train.fp8, parallel=self.parallel is not None)  # before checkpointing and compile
        if self.parallel is not None:  # inside the TP / FSDP2 hooks of the already parallelized model
            if train.activation_checkpointing:
                apply_activation_checkpointing(model)
            if train.compile:
                compile_block_parts(model)
            return model
        if train.activation_checkpointing:
            apply_activation_checkpointing(model)
        if train.compile:
            compile_blocks(model)
        return model

    def _start_phase(self) -> None:
        """Apply the phase's init_from / reset_optimizer, resolve its peak LR, and build its loader."""
        i, phase = self.state.phase, self.job.phases[self.state.phase]
        if phase.init_from:
            source = load_model(phase.init_from, device=self.device if self.parallel is None else "cpu")
            try:
                if self.parallel is None:
                    self.model.load_state_dict(source.state_dict())
                else:
                    from nemotron4.distributed.runtime import load_full_weights

                    load_full_weights(self.model, source.state_dict(), self.device)
            except (RuntimeError, UserError) as e:
                raise UserError(f"phases.{i}.init_from {phase.init_from}: weights do not fit the model: {e}") from e
        if phase.init_from or phase.reset_optimizer:
            self.optimizer = build_optimizer(self.model, self.job.optim, self.device)
        self.state.peak_lr = phase.lr if phase.lr is not None else self.state.last_lr
        if self.state.peak_lr is None:
            raise ConfigError(f"phases.{i}.lr is unset and no earlier phase ran to inherit its final LR from")
        self.loader = self._build_loader(i)
        self.state.phase_started = True

    def _build_loader(self, i: int) -> Any:
        t = self.job.train
        return self._node_leader_first(lambda: self.build_loader(
            self.job.phases[i], t.seq_len, t.micro_batch_size, t.seed + i, cache_dir=self.run_dir / "cache",
            dp_rank=self.dp_rank, dp_size=self.dp_size))

    def _node_leader_first(self, build: Callable[[], Any]) -> Any:
        """Under torchrun, local rank 0 of each node builds the sample indices (writing the cache under the run
        directory) while the other ranks wait, then they load them memory-mapped: one build per node, not one
        per GPU (at 8T tokens an index build takes minutes and gigabytes). Without a shared run directory across
        nodes each node still builds once; on a shared one their identical writes are atomic renames."""
        if self.parallel is None:
            return build()
        leader = int(os.environ.get("LOCAL_RANK", "0")) == 0
        result = build() if leader else None
        self.parallel.barrier()
        return result if leader else build()

    # ---- loop -----------------------------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool] | None = None) -> TrainState:
        """Train every remaining phase to its token budget; checkpoint at intervals and at each phase end.

        `stop` is polled after every step (under torchrun the ranks agree: all stop if any asks); once it returns
        True the run checkpoints that step, sets `self.stopped` and returns. Re-running resumes from there."""
        try:
            while self.state.phase < len(self.job.phases):
                if not self.state.phase_started:
                    self._start_phase()
                phase = self.job.phases[self.state.phase]
                while self.state.phase_tokens < phase.tokens:
                    self._train_one_step()
                    if self._stop_requested(stop):
                        self._stop(phase.tokens)
                        return self.state
                self._finish_phase()
        finally:
            self.metrics.close()
        return self.state

    def _stop_requested(self, stop: Callable[[], bool] | None) -> bool:
        if stop is None:
            return False
        if self.parallel is not None:
            return self.parallel.any_rank(stop())  # one tiny all-reduce a step, only when stoppable
        return stop()

    def _stop(self, phase_tokens: int) -> None:
        """Checkpoint the step just taken (unless its interval checkpoint already did) and mark the run stopped."""
        if self.state.phase_tokens >= phase_tokens:
            self._finish_phase()  # the phase is done: move on and checkpoint, as an uninterrupted run would
        elif self._saved_step != self.state.step:
            self.save()
        self.stopped = self.state.phase < len(self.job.phases)

    def _train_one_step(self) -> None:
        s, job = self.state, self.job
        phase = job.phases[s.phase]
        t0 = time.perf_counter()
        batch_size = phase.ramp().size_at(s.phase_tokens)  # a step starting below a threshold keeps the old size
        step_tokens = batch_size * job.train.seq_len
        lr = phase.lr_schedule(s.peak_lr)(s.phase_tokens + step_tokens)
        micro = self.loader.next_batch(batch_size)
        self._check_token_range(micro, phase.name)
        micro = [b.to(self.device, non_blocking=True) for b in micro]
        result = train_step(
            self.step_model, self.optimizer, micro, lr, job.optim.grad_clip, self.autocast, self.loss_fn, self.hooks,
            self.step_context,
        )
        dt = time.perf_counter() - t0
        s.step += 1
        s.tokens += step_tokens
        s.phase_tokens += step_tokens
        s.last_lr = lr
        s.nonfinite_in_row = s.nonfinite_in_row + 1 if result.skipped else 0
        tokens_per_s = step_tokens / dt / self.world_size  # per device, as MFU needs
        record: dict[str, Any] = {
            "step": s.step, "phase": phase.name, "loss": result.loss, "lr": lr, "batch_size": batch_size,
            "tokens": s.tokens, "phase_tokens": s.phase_tokens, "tokens_per_s": tokens_per_s,
            "tflops": self.flops_per_token * tokens_per_s / 1e12,
            "mfu": self.flops_per_token * tokens_per_s / job.metrics.peak_flops,
            "grad_norm": result.grad_norm, "memory_gib": peak_memory_gib(self.device), "skipped": result.skipped,
        }
        phase_done = s.phase_tokens >= phase.tokens
        interval = job.metrics.eval_interval
        if phase_done or (interval and s.step % interval == 0):
            record["val_loss"] = self.evaluate()
        self.metrics.log(record)
        if result.skipped:
            self._on_nonfinite(result.loss, result.grad_norm)
        if job.checkpoint.interval and s.step % job.checkpoint.interval == 0 and not phase_done:
            self.save()
        self.faults.after_step(s.step)

    def _check_token_range(self, micro: list[torch.Tensor], phase: str) -> None:
        """Token ids must index the embedding: catches token files made with another tokenizer before the model
        (on GPU: a device-side assert) does. On the CPU batch, a few microseconds a step; scanning whole
        trillion-token files at start-up would take hours."""
        low, high = min(int(b.min()) for b in micro), max(int(b.max()) for b in micro)
        vocab = self.model.cfg.vocab_size
        if low < 0 or high >= vocab:
            sources = ", ".join(src.path for src in self.job.phases[self.state.phase].blend.sources)
            raise UserError(
                f"phase {phase!r}, step {self.state.step + 1}: token id {high if high >= vocab else low} is outside "
                f"the model's vocabulary [0, {vocab}). The token files ({sources}) were made with a tokenizer "
                "that does not match model.vocab_size: re-run `nemotron4 prepare` with the model's tokenizer, or "
                "set the vocabulary size to the tokenizer's (`nemotron4 data inspect PREFIX` shows the ids)."
            )

    def _on_nonfinite(self, loss: float, grad_norm: float) -> None:
        s, limit = self.state, self.job.train.max_nonfinite_in_row
        self.metrics.write(f"step {s.step}: loss {loss}, grad norm {grad_norm}: update skipped "
                           f"({s.nonfinite_in_row} in a row, limit {limit})")
        if s.nonfinite_in_row >= limit:
            latest = self.checkpoints.latest()
            raise NonFiniteLossError(
                f"stopping: {s.nonfinite_in_row} non-finite losses or gradient norms in a row (step {s.step}); "
                f"the last good checkpoint is {latest or '(none yet)'}. Lower the LR or check the data, then re-run "
                "(it resumes from there), or raise train.max_nonfinite_in_row."
            )

    def _finish_phase(self) -> None:
        """Move to the next phase and checkpoint: a finished phase is always a usable checkpoint."""
        s = self.state
        s.phase += 1
        s.phase_tokens, s.phase_started, s.peak_lr = 0, False, None
        self.loader = None
        self.save()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out loss per category of the current phase (categories whose sources have a valid_path)."""
        if self._eval is None or self._eval[0] != self.state.phase:
            t, m = self.job.train, self.job.metrics
            batches = self._node_leader_first(lambda: self.build_eval(
                self.job.phases[self.state.phase], t.seq_len, t.micro_batch_size, m.eval_batches, t.seed,
                cache_dir=self.run_dir / "cache"))
            self._eval = (self.state.phase, batches)
        return {cat: eval_loss(self.step_model, [b.to(self.device) for b in batches], self.autocast, self.loss_fn,
                               self.hooks)
                for cat, batches in self._eval[1].items()}

    # ---- checkpoint -----------------------------------------------------------------------------------------

    def _tensors(self) -> dict[str, Any]:
        """Everything tensor-valued in a checkpoint, keyed by parameter name (not optimizer index)."""
        names = {p: n for n, p in self.model.named_parameters()}
        optim = {names[p]: st for p, st in self.optimizer.state.items() if st}
        rng, _ = get_rng_state()
        return {"model": self.model.state_dict(), "optim": optim, "rng": rng}

    def save(self) -> Path | None:
        """Checkpoint the current step (None, and nothing written, when checkpoint.enabled is false)."""
        if not self.job.checkpoint.enabled:
            return None
        tensors = self._tensors()
        _, rng_scalars = get_rng_state()
        state = {
            "trainer": dataclasses.asdict(self.state),
            "loader": self.loader.state_dict() if self.loader is not None else None,
            "rng": rng_scalars,
            "model_config": self.model.cfg.to_dict(),
            "config": job_to_dict(self.job),
        }
        path = self.checkpoints.save(self.state.step, tensors, state)
        self._saved_step = self.state.step
        return path

    def _resume(self, path: Path, saved: dict[str, Any]) -> None:
        init_optimizer_state(self.optimizer)  # DCP loads in place, so AdamW's lazy state must exist
        tensors = self._tensors()
        CheckpointManager.load_tensors(path, tensors)
        set_rng_state(tensors["rng"], saved["rng"])
        self.state = TrainState(**saved["trainer"])
        if self.state.phase_started:
            self.loader = self._build_loader(self.state.phase)
            self.loader.load_state_dict(saved["loader"])
