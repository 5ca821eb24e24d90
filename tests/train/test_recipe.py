"""The training recipe (nemotron4.train.recipe): one build for every layout, reporting which fast paths ran; the
one-rank mesh (parallel.force_mesh) gives the single-process numbers through the parallel code path (CPU, gloo)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from nemotron4 import ModelConfig, build_model
from nemotron4.distributed.layout import ParallelDims
from nemotron4.distributed.runtime import setup_parallel, shutdown
from nemotron4.train.config import TrainSection
from nemotron4.train.fast import CastWeightsOnce, fused_cross_entropy_loss
from nemotron4.train.recipe import build_recipe, recipe_paths
from nemotron4.train.step import cross_entropy_loss

CFG = ModelConfig.from_name("tiny")
CPU = torch.device("cpu")


def grads_of(recipe, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    recipe.model.zero_grad(set_to_none=True)
    hooks = recipe.hooks.micro_batch(True) if recipe.hooks is not None else contextlib.nullcontext()
    with recipe.step_context(), recipe.autocast(), hooks:
        loss = recipe.loss_fn(recipe.step_model, batch)
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in recipe.model.named_parameters()}


@pytest.fixture(scope="module")
def one_rank():
    parallel = setup_parallel(ParallelDims(dp=1, tp=1), CPU, "gloo")
    yield parallel
    shutdown()


def test_single_process_recipe_is_the_plain_model_and_reports_its_paths() -> None:
    recipe = build_recipe(CFG, TrainSection(fused_loss=True, activation_checkpointing=True), CPU, torch.float32,
                          seed=5)
    plain = build_model(CFG, seed=5)
    assert recipe.model.state_dict().keys() == plain.state_dict().keys()
    for name, value in plain.state_dict().items():
        assert torch.equal(recipe.model.state_dict()[name], value), name  # the same init, bitwise
    assert recipe.loss_fn is fused_cross_entropy_loss and recipe.hooks is None
    assert recipe.paths["loss"] == "fused" and recipe.paths["activation_checkpointing"] == "blocks"
    assert recipe.paths["layout"] == "tp1 x dp1 single process" and recipe.paths["compile"] == "off"
    assert "forward" in vars(recipe.model.layers[0])  # checkpointed
    plain_recipe = build_recipe(CFG, TrainSection(fused_loss=False), CPU, torch.float32, seed=5)
    assert plain_recipe.loss_fn is cross_entropy_loss and plain_recipe.paths["loss"] == "full logits"


def test_paths_per_layout() -> None:
    train = TrainSection(compile=True, fused_loss=True, cast_weights_once=True)
    one = recipe_paths(train, torch.bfloat16, 1, 1, meshed=True)
    assert (one["compile"], one["loss"], one["cast_weights"], one["fsdp2"], one["tensor_parallel"]) == (
        "blocks", "fused", "once per step", "none", "none")
    dp = recipe_paths(train, torch.bfloat16, 1, 2, meshed=True)
    assert (dp["compile"], dp["loss"], dp["cast_weights"], dp["fsdp2"]) == (
        "blocks", "fused", "fsdp2 bf16 all-gather once per step", "fully_shard")
    wrapped = recipe_paths(train, torch.bfloat16, 1, 1, meshed=True, wrapped=True)
    assert (wrapped["layout"], wrapped["compile"], wrapped["loss"], wrapped["cast_weights"], wrapped["fsdp2"],
            wrapped["tensor_parallel"]) == ("tp1 x dp1 mesh wrapped", "blocks", "fused (local shard)",
                                            "fsdp2 bf16 all-gather once per step", "fully_shard", "dtensor")
    assert recipe_paths(TrainSection(fused_loss=False), torch.float32, 1, 1, True, True)["loss"] == \
        "vocab-parallel (loss_parallel)"
    tp = recipe_paths(TrainSection(fused_loss=False), torch.float32, 2, 1, meshed=True)
    assert (tp["loss"], tp["cast_weights"], tp["tensor_parallel"]) == (
        "vocab-parallel (loss_parallel)", "autocast", "dtensor")
    assert recipe_paths(train, torch.float32, 2, 1)["loss"] == "vocab-parallel fused"  # distributed/vocab_loss.py
    assert recipe_paths(train, torch.float32, 2, 2)["loss"] == "vocab-parallel fused"


def test_one_rank_mesh_equals_single_process(one_rank) -> None:
    """The parallel code path on a one-rank mesh: plain parameters (no DTensor, no FSDP2), the same fast paths
    (fused loss, bf16 weights cast once per step), the same loss and gradients as one process."""
    train = TrainSection(fused_loss=True, cast_weights_once=True, dtype="bf16")
    batch = torch.randint(0, CFG.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    single = build_recipe(CFG, train, CPU, torch.bfloat16, seed=3)
    meshed = build_recipe(CFG, train, CPU, torch.bfloat16, one_rank, seed=3)
    assert meshed.hooks is not None and single.hooks is None
    assert isinstance(meshed.step_context, CastWeightsOnce)
    assert {k: v for k, v in meshed.paths.items() if k != "layout"} == \
        {k: v for k, v in single.paths.items() if k != "layout"}
    assert meshed.paths["layout"] == "tp1 x dp1 mesh"
    assert not any(type(p).__name__ == "DTensor" for p in meshed.model.parameters())
    loss_a, grads_a = grads_of(single, batch)
    loss_b, grads_b = grads_of(meshed, batch)
    assert torch.equal(loss_a, loss_b)
    for name, g in grads_a.items():
        assert torch.equal(grads_b[name], g), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wrapped_one_rank_mesh_follows_single_process(one_rank, dtype: torch.dtype) -> None:
    """parallel.force_wrap: the TP plan on the size-1 tp dimension (DTensor parameters) and FSDP2 on the size-1 dp
    one, with the fused loss on the whole local shards and FSDP2's bf16 all-gather kept for the step (one cast per
    step): over two steps of two micro-batches the losses follow one process (fp32: to reduction order; bf16:
    FSDP2's embedding is bf16 where autocast keeps it fp32)."""
    import dataclasses

    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from nemotron4.train.step import train_step

    train = TrainSection(fused_loss=True, cast_weights_once=True, dtype="bf16" if dtype == torch.bfloat16 else "fp32")
    wrapped = dataclasses.replace(one_rank, wrap_size_one=True)
    batches = torch.randint(0, CFG.vocab_size, (2, 4, 17), generator=torch.Generator().manual_seed(1))
    curves = []
    for parallel in (None, wrapped):
        recipe = build_recipe(CFG, train, CPU, dtype, parallel, seed=3)
        optimizer = torch.optim.AdamW(recipe.model.parameters(), lr=1e-3)
        curves.append([train_step(recipe.step_model, optimizer, list(b.split(2)), 1e-3, 1.0, recipe.autocast,
                                  recipe.loss_fn, recipe.hooks, recipe.step_context) for b in batches])
    assert isinstance(recipe.model, FSDPModule) and isinstance(recipe.model.layers[0].attention.wq.weight, DTensor)
    assert recipe.paths["loss"] == "fused (local shard)" and recipe.hooks.keep_unsharded == (dtype != torch.float32)
    rel = 1e-5 if dtype == torch.float32 else 5e-4
    for a, b in zip(*curves, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=rel) and b.grad_norm == pytest.approx(a.grad_norm, rel=10 * rel)


def test_init_from_weights_load_on_any_layout(one_rank) -> None:
    source = build_model(CFG, seed=9).state_dict()
    for parallel in (None, one_rank):
        recipe = build_recipe(CFG, TrainSection(), CPU, torch.float32, parallel, weights=source)
        for name, value in source.items():
            assert torch.equal(recipe.model.state_dict()[name], value), name


def test_fp8_conversion_on_meta_keeps_names_and_init() -> None:
    """The recipe converts to fp8 on `meta`, before materialising: the swapped modules keep the parameter names, and
    the init after it is the single-process one (the device check itself needs a GPU; this is torchao's swap)."""
    pytest.importorskip("torchao", reason="torchao (the fp8 extra) not installed")
    from nemotron4.distributed.parallelize import init_weights_sharded
    from nemotron4.model import Nemotron4
    from nemotron4.train.fp8 import convert

    with torch.device("meta"):
        model = Nemotron4(CFG)
    convert(model, "tensorwise")
    assert type(model.layers[0].attention.wq).__name__ == "Float8Linear"
    model.to_empty(device=CPU)
    init_weights_sharded(model, 0, CPU)
    plain = build_model(CFG, seed=0).state_dict()
    assert list(model.state_dict()) == list(plain)
    for name, value in plain.items():
        assert torch.equal(model.state_dict()[name], value), name
