"""The Nemotron-4 recipe in one process or many: plan, check, build, then the loop (torchtitan's split).

    trainer = Trainer.create(load_job("configs/tiny.toml"), "runs/tiny")   # plan -> check -> build (or resume)
    trainer.run()                                                           # loop over phases, steps, checkpoints

`Trainer.create` runs the three stages: `nemotron4.train.run.plan_run` resolves the plan (config, layout, the
checkpoint to resume, the model's shape, the data's fingerprints), `check_run` finds every error that needs no
allocation, and the constructor builds: the process group, the model and its step (`nemotron4.train.recipe`, one
call), the optimizer, checkpoints, metrics, and on resume the saved state. `Trainer(plan, ...)` builds a plan
already resolved and checked.

A run is a list of phases (docs/paper.md: pretraining, then continued training). Within a phase the global batch
follows the phase's ramp of consumed tokens (Table 2) and the LR its schedule (built once per phase); a step is
`nemotron4.train.step.train_step`.

Launched by torchrun with several processes, the same Trainer runs on every rank with tensor x data parallelism
(`nemotron4.distributed`, configured by the [parallel] section): the model is built sharded, each data-parallel
replica reads its slice of every global batch, and rank 0 alone writes metrics, config.toml and the checkpoint
pointer. One process takes none of those paths.

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

from nemotron4.checkpoint import CheckpointManager, get_rng_state, set_rng_state
from nemotron4.errors import ConfigError, UserError
from nemotron4.flops import throughput
from nemotron4.schedules import LRSchedule
from nemotron4.train.config import JobConfig
from nemotron4.train.config_io import job_to_dict, save_job
from nemotron4.train.data import build_eval_batches, build_phase_loader
from nemotron4.train.faults import Faults
from nemotron4.train.metrics import MetricsLogger, NullMetrics, peak_memory_gib
from nemotron4.train.optim import build_optimizer, init_optimizer_state
from nemotron4.train.recipe import build_recipe
from nemotron4.train.run import RunPlan, check_run, plan_run, token_files
from nemotron4.train.run_tokenizer import data_tokenizer, keep_tokenizer
from nemotron4.train.step import eval_loss, train_step
from nemotron4.weights import load_model

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


class Trainer:
    """A built run: the model and its step, optimizer, checkpoints, loaders and metrics, resumed from the run
    directory's latest checkpoint if any. Make one with `Trainer.create(job, run_dir)`."""

    @classmethod
    def create(cls, job: JobConfig, run_dir: str | Path, **build: Any) -> Trainer:
        """Plan, check, build. `build`: the constructor's keywords (faults, build_loader, build_eval)."""
        return cls(check_run(plan_run(job, run_dir)), **build)

    def __init__(
        self,
        plan: RunPlan,
        faults: Faults | None = None,
        build_loader: Callable[..., Any] = build_phase_loader,
        build_eval: Callable[..., dict[str, list[torch.Tensor]]] = build_eval_batches,
    ) -> None:
        """Build from a resolved and checked plan. `faults`: the reliability tests' fault injection (none by
        default); `build_loader` / `build_eval`: how a phase's loader and held-out batches are made."""
        job = plan.job
        self.plan, self.job, self.run_dir = plan, job, plan.run_dir
        self.build_loader, self.build_eval = build_loader, build_eval
        self.faults = faults or Faults()
        self.device, self.dtype, self.world_size = plan.device, plan.dtype, plan.world_size
        self.dp_size = plan.dims.dp
        self.parallel: Parallel | None = None
        self.dp_rank, self.primary = 0, True
        checkpoint_sync: dict[str, Any] = {}
        if plan.meshed:
            from nemotron4.distributed.runtime import setup_parallel

            self.parallel = p = setup_parallel(plan.dims, plan.device, job.parallel.backend,
                                                 wrap_size_one=job.parallel.force_wrap)
            self.dp_rank, self.primary = p.dp_rank, p.primary
            checkpoint_sync = {"primary": p.primary, "barrier": p.barrier}
        self.checkpoints = CheckpointManager(self.run_dir, job.checkpoint.keep_last, on_write=self.faults.in_checkpoint,
                                             **checkpoint_sync)
        self.state = TrainState()
        self.loader: Any = None
        self.schedule: LRSchedule | None = None  # the current phase's LR schedule, built when it starts / resumes
        self.stopped = False  # run() returned early because `stop` asked it to
        self._saved_step: int | None = None
        self._changed = dict(plan.changed)
        self._eval: tuple[int, dict[str, list[torch.Tensor]]] | None = None  # (phase, batches)

        if not job.checkpoint.enabled:
            warnings.warn("checkpoint.enabled = false: no checkpoints will be written and this run cannot resume",
                          stacklevel=2)
        self.checkpoints.remove_partial()  # debris of a save that died; never loaded
        torch.manual_seed(job.train.seed)
        recipe = build_recipe(plan.model_config, job.train, plan.device, plan.dtype, self.parallel, seed=job.train.seed,
                              weights=self._init_from_weights(plan))
        self.model, self.step_model, self.loss_fn = recipe.model, recipe.step_model, recipe.loss_fn
        self.autocast, self.step_context, self.hooks = recipe.autocast, recipe.step_context, recipe.hooks
        self.paths = recipe.paths
        self.optimizer = build_optimizer(self.model, job.optim, self.device)
        if plan.latest is not None:
            self._resume(plan.latest, plan.saved)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        total = sum(p.tokens for p in job.phases)
        self.metrics: MetricsLogger | NullMetrics = NullMetrics()
        if self.primary:
            save_job(job, self.run_dir / "config.toml")
            keep_tokenizer(self.run_dir, data_tokenizer(job, token_files(job)))
            self.metrics = MetricsLogger(
                self.run_dir, job.metrics, total, self.state.tokens, self.state.step if plan.latest else None
            )

    # ---- build ----------------------------------------------------------------------------------------------

    @staticmethod
    def _init_from_weights(plan: RunPlan) -> dict[str, torch.Tensor] | None:
        """model.init_from's full weights (on CPU; each rank keeps its shards) for a run that starts fresh."""
        if plan.saved is not None or not plan.job.model.init_from:
            return None
        return load_model(plan.job.model.init_from, device="cpu").float().state_dict()

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
        self.schedule = phase.lr_schedule(self.state.peak_lr)
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
        batch_size = phase.batch_size.size_at(s.phase_tokens)  # a step starting below a threshold keeps the old size
        step_tokens = batch_size * job.train.seq_len
        lr = self.schedule(s.phase_tokens + step_tokens)
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
        speed = throughput(self.model.cfg, job.train.seq_len, batch_size, dt, self.world_size, job.metrics.peak_flops)
        record: dict[str, Any] = {
            "step": s.step, "phase": phase.name, "loss": result.loss, "lr": lr, "batch_size": batch_size,
            "tokens": s.tokens, "phase_tokens": s.phase_tokens, "tokens_per_s": speed.tokens_per_s_per_device,
            "tflops": speed.tflops_per_device, "mfu": speed.mfu,
            "grad_norm": result.grad_norm, "memory_gib": peak_memory_gib(self.device), "skipped": result.skipped,
        }
        phase_done = s.phase_tokens >= phase.tokens
        interval = job.metrics.eval_interval
        if phase_done or (interval and s.step % interval == 0):
            record["val_loss"] = self.evaluate()
        if self._changed:  # the first record after a resume with a changed LR says so
            record["config_changed"], self._changed = self._changed, {}
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
        self.loader, self.schedule = None, None
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
            "data": self.plan.data_record(),  # what a resume checks the token files against
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
            phase = self.job.phases[self.state.phase]
            if f"phases.{self.state.phase}.lr" in self.plan.changed and phase.lr is not None:
                self.state.peak_lr = phase.lr  # lowered after a NaN stop, say (run.check_resumable noted it)
            self.schedule = phase.lr_schedule(self.state.peak_lr)
            self.loader = self._build_loader(self.state.phase)
            loader_state = saved["loader"]
            if self.job.train.trust_changed_data:  # the user accepted changed token files (run.check_data_unchanged)
                loader_state = {**loader_state, "fingerprint": None}
            self.loader.load_state_dict(loader_state)
