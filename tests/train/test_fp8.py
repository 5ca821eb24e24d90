"""`train.fp8` on CPU: which modules the conversion selects, that a checkpoint written with FP8 on resumes with it
off (and back) with the same weights, and the one-line refusals where FP8 cannot run. torchao's float8 module swap
and its matmuls also run on CPU, which is what lets these tests train through the Trainer with the device check
lifted; the compiled GPU step against bf16 is tests/gpu/test_fp8_gpu.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_job
from torch import nn

from nemotron4 import ModelConfig, build_model
from nemotron4.checkpoint import load_model_from_checkpoint
from nemotron4.errors import ConfigError
from nemotron4.train import fp8
from nemotron4.train.fast import apply_activation_checkpointing, fused_cross_entropy_loss
from nemotron4.train.step import cross_entropy_loss
from nemotron4.train.trainer import Trainer

from .test_checkpoint import SHORT

pytest.importorskip("torchao", reason="train.fp8 needs torchao: pip install 'nemotron4[fp8]'")
from torchao.float8.float8_linear import Float8Linear  # noqa: E402

BLOCK_LINEARS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1", "feed_forward.w2")


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise", "tensorwise+output"])
def test_conversion_selects_exactly_the_blocks_linears(recipe: str) -> None:
    model = build_model(ModelConfig.from_name("tiny"), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {n: id(p) for n, p in model.named_parameters()}
    fp8.convert(model, recipe)
    converted = {n for n, m in model.named_modules() if isinstance(m, Float8Linear)}
    assert converted == {f"layers.{i}.{name}" for i in range(model.cfg.n_layers) for name in BLOCK_LINEARS}
    assert type(model.output) is nn.Linear and type(model.tok_embeddings) is nn.Embedding
    # A compute format only: the same parameter objects (the optimizer's) under the same names, same values.
    assert {n: id(p) for n, p in model.named_parameters()} == params
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(m.weight.dtype == torch.float32 for n, m in model.named_modules() if n in converted)
    # fast accumulation: torchao's default in the forward GEMM; under tensorwise also in the input-gradient GEMM
    # (measured: no change to the loss curve, bench/results/train_fp8_h200_s7.json); never in the weight gradient's
    configs = {(m.config.gemm_config_output.use_fast_accum, m.config.gemm_config_grad_input.use_fast_accum,
                m.config.gemm_config_grad_weight.use_fast_accum) for n, m in model.named_modules() if n in converted}
    assert configs == {(True, recipe != "rowwise", False)}


def test_fp8_forward_and_backward_run_on_cpu_close_to_fp32() -> None:
    """The swapped modules really compute in fp8 (the loss moves, a little) and give finite gradients."""
    model = build_model(ModelConfig.from_name("tiny"), seed=0)
    batch = torch.randint(0, 512, (2, 33), generator=torch.Generator().manual_seed(0))
    ref = cross_entropy_loss(model, batch).item()
    loss = cross_entropy_loss(fp8.convert(model, "tensorwise"), batch)
    loss.backward()
    assert loss.item() != ref and loss.item() == pytest.approx(ref, rel=1e-2)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_fp8_composes_with_activation_checkpointing_and_the_fused_loss() -> None:
    """Converted first, then checkpointed (the trainer's order): the recomputed fp8 forward gives the same loss and
    gradients as the converted model alone, through the fused loss (which reads the untouched output weight)."""
    batch = torch.randint(0, 512, (2, 33), generator=torch.Generator().manual_seed(1))

    def loss_and_grads(model):
        loss = fused_cross_entropy_loss(model, batch, chunk_size=16)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    ref = loss_and_grads(fp8.convert(build_model(ModelConfig.from_name("tiny"), seed=0), "tensorwise"))
    got = loss_and_grads(apply_activation_checkpointing(
        fp8.convert(build_model(ModelConfig.from_name("tiny"), seed=0), "tensorwise")))
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    for name, g in ref[1].items():
        torch.testing.assert_close(got[1][name], g, rtol=1e-6, atol=1e-7, msg=name)


def test_tensorwise_weights_cast_to_e4m3_once_per_step_as_torchao_casts_them(monkeypatch) -> None:
    """Under cast_weights_once a tensorwise recipe gives each block's Float8Linear its e4m3 weight once per step
    (`fp8_weight_cast`): torchao's matmul then casts no weight in any micro-batch (forward, the checkpointed
    recomputation, backward), and the losses and fp32 gradients are exactly those of torchao casting the fp32
    master in every call. The masters are back in place after the step."""
    import contextlib

    import torchao.float8.float8_linear as ao_linear
    from torchao.float8.float8_training_tensor import Float8TrainingTensor, GemmInputRole

    from nemotron4.train.fast import CastWeightsOnce

    calls = []
    original = ao_linear.hp_tensor_to_float8_dynamic

    def counting(*args, **kwargs):
        calls.append(kwargs.get("gemm_input_role"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ao_linear, "hp_tensor_to_float8_dynamic", counting)
    micro = list(torch.randint(0, 512, (4, 33), generator=torch.Generator().manual_seed(2)).split(2))

    def step(model, context):
        calls.clear()
        types = set()
        with context():
            types |= {type(m.weight) for m in model.modules() if isinstance(m, Float8Linear)}
            losses = []
            for b in micro:
                loss = fused_cross_entropy_loss(model, b, chunk_size=16)
                (loss / len(micro)).backward()
                losses.append(loss.detach())
        weight_casts = sum(role is GemmInputRole.WEIGHT for role in calls)
        return torch.stack(losses), {n: p.grad for n, p in model.named_parameters()}, types, weight_casts

    def model():
        return apply_activation_checkpointing(fp8.convert(build_model(ModelConfig.from_name("tiny"), seed=0),
                                                          "tensorwise"))

    ref_loss, ref_grads, ref_types, ref_casts = step(model(), contextlib.nullcontext)
    ours = model()
    masters = {n: p for n, p in ours.named_parameters()}
    cast = fp8.fp8_weight_cast("tensorwise", torch.float32)
    loss, grads, types, casts = step(ours, CastWeightsOnce(ours, torch.float32, cast))
    assert ref_types == {nn.Parameter} and types == {Float8TrainingTensor}
    assert ref_casts == 3 * 2 * 6 * ours.cfg.n_layers and casts == 0  # fwd, recompute, bwd; 2 micro-batches
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=0, atol=0, msg=name)
    assert {n: p for n, p in ours.named_parameters()} == masters
    copies = cast([(m, m.weight) for m in ours.layers[0].modules() if isinstance(m, Float8Linear)])
    assert {c._data.dtype for c in copies} == {torch.float8_e4m3fn} and {c.dtype for c in copies} == {torch.float32}
    assert fp8.fp8_weight_cast("tensorwise+output", torch.bfloat16) is not None
    assert fp8.fp8_weight_cast("rowwise", torch.bfloat16) is None and fp8.fp8_weight_cast("off", torch.bfloat16) is None


def test_refused_without_cuda_with_one_line() -> None:
    with pytest.raises(ConfigError, match=r"train.fp8 = 'tensorwise' needs a CUDA GPU \(the run is on cpu\)") as e:
        fp8.check_fp8("tensorwise", "cpu")
    assert "\n" not in str(e.value)
    fp8.check_fp8("off", "cpu")  # nothing to check


def test_refused_on_pre_hopper_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(ConfigError, match=r"compute capability 8.9 or more .*A100-SXM4-80GB is 8.0"):
        fp8.check_fp8("rowwise", "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    fp8.check_fp8("rowwise", "cuda")  # Hopper with torchao installed: accepted


def test_refused_without_torchao(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(sys.modules, "torchao.float8", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"needs torchao .*pip install 'nemotron4\[fp8\]'"):
        fp8.check_fp8("tensorwise", "cuda")


def test_bad_name_uneven_dims_and_parallel_are_refused(corpus_dir: Path) -> None:
    modes = r"off, tensorwise, rowwise, tensorwise\+output"
    with pytest.raises(ConfigError, match=rf"train.fp8 must be one of: {modes}; got 'e4m3'"):
        tiny_job(corpus_dir, "--train.fp8", "e4m3").validate()
    model = build_model(ModelConfig.from_name("tiny", ffn_dim=200), seed=0)
    with pytest.raises(ConfigError, match=r"divisible by 16; layers.0.feed_forward.w1 is 64 -> 200"):
        fp8.convert(model, "tensorwise")
    with pytest.raises(ConfigError, match=r"does not run under tensor parallelism yet .*set parallel.tp = 1"):
        fp8.apply_fp8(model, "tensorwise", tensor_parallel=True)


def test_trainer_refuses_fp8_on_cpu_before_the_first_step(corpus_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        Trainer.create(tiny_job(corpus_dir, *SHORT, "--train.fp8", "tensorwise"), tmp_path / "run")


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _moments(optimizer: torch.optim.Optimizer) -> dict[tuple[int, str], torch.Tensor]:
    return {(i, k): v.clone() for i, state in optimizer.state_dict()["state"].items() for k, v in state.items()
            if k in ("exp_avg", "exp_avg_sq")}


def test_checkpoint_with_fp8_on_resumes_with_fp8_off_and_back(corpus_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp8, "check_fp8", lambda mode, device: None)  # torchao's fp8 runs on CPU too
    run = tmp_path / "run"

    def trainer(mode: str) -> Trainer:
        return Trainer.create(tiny_job(corpus_dir, *SHORT, "--train.fp8", mode), run)

    on = trainer("tensorwise")
    assert any(isinstance(m, Float8Linear) for m in on.model.modules())
    on.run(stop=lambda: on.state.step >= 4)
    stopped, moments = _weights(on.model), _moments(on.optimizer)

    off = trainer("off")  # train.fp8 may change across a resume
    assert off.state.step == 4 and not any(isinstance(m, Float8Linear) for m in off.model.modules())
    got = _weights(off.model)
    assert got.keys() == stopped.keys() and all(torch.equal(got[k], v) for k, v in stopped.items())
    assert _moments(off.optimizer).keys() == moments.keys()
    assert all(torch.equal(_moments(off.optimizer)[k], v) for k, v in moments.items())
    off.run(stop=lambda: off.state.step >= 6)
    stopped = _weights(off.model)

    back = trainer("tensorwise")
    assert back.state.step == 6 and any(isinstance(m, Float8Linear) for m in back.model.modules())
    assert all(torch.equal(_weights(back.model)[k], v) for k, v in stopped.items())
    back.run()
    assert back.state.step == 10
    saved = load_model_from_checkpoint(run)  # a plain model reads what the FP8 run wrote
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in _weights(back.model).items())


def test_recipe_runs_the_output_projection_in_fp8_only_under_plus_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which modules run in FP8: the blocks' linears (Float8Linear, above) and, only under "tensorwise+output",
    the output projection's GEMMs through the fused loss (the module stays an nn.Linear with its fp32 weight);
    "+output" without the fused loss is refused with one line."""
    import functools

    from nemotron4.train.config import TrainSection
    from nemotron4.train.recipe import build_recipe

    monkeypatch.setattr(fp8, "check_fp8", lambda mode, device: None)
    cfg, cpu = ModelConfig.from_name("tiny"), torch.device("cpu")
    blocks = build_recipe(cfg, TrainSection(fp8="tensorwise"), cpu, torch.float32, seed=0)
    assert blocks.loss_fn is fused_cross_entropy_loss and blocks.paths["fp8"] == "tensorwise: blocks"
    recipe = build_recipe(cfg, TrainSection(fp8="tensorwise+output"), cpu, torch.float32, seed=0)
    assert isinstance(recipe.loss_fn, functools.partial) and recipe.loss_fn.func is fused_cross_entropy_loss
    assert recipe.loss_fn.keywords == {"fp8": True}
    assert recipe.paths["fp8"] == "tensorwise: blocks + output (fused loss)"
    converted = {n for n, m in recipe.model.named_modules() if isinstance(m, Float8Linear)}
    assert converted == {f"layers.{i}.{name}" for i in range(cfg.n_layers) for name in BLOCK_LINEARS}
    assert type(recipe.model.output) is nn.Linear and recipe.model.output.weight.dtype == torch.float32
    with pytest.raises(ConfigError, match=r"inside the fused loss; set train.fused_loss = true, or train.fp8 = "
                                          r"'tensorwise'$") as e:
        build_recipe(cfg, TrainSection(fp8="tensorwise+output", fused_loss=False), cpu, torch.float32, seed=0)
    assert "\n" not in str(e.value)
    off = build_recipe(cfg, TrainSection(), cpu, torch.float32, seed=0)
    assert off.loss_fn is fused_cross_entropy_loss and off.paths["fp8"] == "off"
    batch = torch.randint(0, cfg.vocab_size, (2, 33), generator=torch.Generator().manual_seed(0))
    losses = {}
    for name, r in (("off", off), ("blocks", blocks), ("output", recipe)):
        losses[name] = r.loss_fn(r.step_model, batch)
        losses[name].backward()
    assert losses["output"].item() != losses["blocks"].item()  # the output GEMMs ran in fp8
    assert losses["output"].item() == pytest.approx(losses["off"].item(), rel=2e-2)
    assert torch.isfinite(recipe.model.output.weight.grad).all()
    # Under a low-precision compute dtype the recipe's step context gives the FP8 linears e4m3 copies per step
    low = build_recipe(cfg, TrainSection(fp8="tensorwise"), cpu, torch.bfloat16, seed=0)
    assert low.paths["cast_weights"] == "once per step (e4m3 for the FP8 linears)"
    with low.step_context():
        types = {type(m.weight).__name__ for m in low.model.modules() if isinstance(m, Float8Linear)}
    assert types == {"Float8TrainingTensor"}
    from nemotron4.ops import cross_entropy

    plus = build_recipe(cfg, TrainSection(fp8="tensorwise+output"), cpu, torch.bfloat16, seed=0)
    with plus.step_context():  # and the output weight's e4m3 cast once per step (kept for the step only)
        assert cross_entropy._weight_casts == {}
        assert {type(m.weight).__name__ for m in plus.model.modules() if isinstance(m, Float8Linear)} == types
    assert cross_entropy._weight_casts is None
    with low.step_context():
        assert cross_entropy._weight_casts is None  # "tensorwise": the output stays bf16
    rowwise = build_recipe(cfg, TrainSection(fp8="rowwise"), cpu, torch.bfloat16, seed=0)
    assert rowwise.paths["cast_weights"] == "once per step"
    with rowwise.step_context():
        assert {m.weight.dtype for m in rowwise.model.modules() if isinstance(m, Float8Linear)} == {torch.bfloat16}
