"""FP8 matmuls for training on Hopper (`train.fp8`), through torchao's float8 training.

`apply_fp8(model, mode)` swaps every `nn.Linear` inside the transformer blocks (attention q/k/v/o, MLP up/down)
for torchao's `Float8Linear`: forward and both backward GEMMs run in fp8 (e4m3) with scales computed from each
tensor's current absolute maximum ("tensorwise": one scale per tensor; "rowwise": one per row, more accurate,
slower), accumulating in fp32 and returning bf16. "tensorwise" is torchao's recipe of that name with fast
accumulation in the input-gradient GEMM as well as the forward one (`float8_config`). The embedding (a lookup) and
the output projection stay as they are, except under "tensorwise+output": the blocks as "tensorwise", and with
the fused loss (`train.fused_loss`, the default) the output projection's three GEMMs in FP8 too, inside
`nemotron4.ops.cross_entropy` (the module stays an `nn.Linear` with its fp32 weight; the recipe passes `fp8=True`
to the fused loss: e4m3 hidden states and weight with tensorwise scales, e5m2 logits' gradient, the logits GEMM
accumulating precisely). The output projection is about a fifth of the linear FLOPs at a 256k vocabulary.

Measured on one H200 at Minitron-4B, seq 4096, global batch 8 (4 x 2), in one run
(bench/results/train_fp8_h200_s7.json): bf16 1.365 s a step, "tensorwise+output" 1.046 s (1.306x), and over 100
steps (2 layers, 256k vocabulary, same weights and data) its loss ends 0.59% above bf16's. The logits GEMM's
accumulation decides the curve: with Hopper's fast accumulation there (torchao's choice for forward GEMMs) it
ended 0.93-1.29% above in four runs, precise 0.30% (bench/results/train_fp8_h200_s7a.json); fast accumulation in
the blocks' input-gradient GEMMs costs about 0.3% of it and gains 1.3% of the step. The blocks alone in FP8: 1.19x
(bench/results/train_fp8_h200_s4.json), within 0.25% of bf16 over 100 steps (bench/results/train_fp8_h200.json).

FP8 is a compute format only: the swapped modules keep the same fp32 `weight` parameters under the same names, so
the optimizer, its state and checkpoints do not see it, and a run may turn it on or off across a resume. It
composes with the other fast paths of `nemotron4.train.fast` (convert first, then activation checkpointing, then
per-block compile, which torchao needs for speed: its amax, scale and cast kernels fuse there) and with the
fused loss. Under `cast_weights_once` (the default) the tensorwise recipes cast the blocks' weights to e4m3 once
per optimizer step (`fp8_weight_cast`: the step's copies are torchao Float8TrainingTensors, which its matmul uses
as they are) instead of torchao casting the bf16 copy again in every micro-batch; "+output" casts the output
weight once per step too (`nemotron4.ops.cross_entropy.output_weight_e4m3_once`, in the recipe's step context).
Under data parallelism (FSDP2) the conversion comes before `fully_shard` (the recipe's order), and under the
tensorwise recipes FSDP2 all-gathers e4m3 weights (torchao's `enable_fsdp_float8_all_gather`: half the bytes of
bf16; with `cast_weights_once` kept from the step's first forward to its last backward, so cast once per step
there too). Tested on CPU over gloo against one process (tests/distributed/test_fp8_fsdp.py); not yet run on
several GPUs. Under tensor parallelism it is refused: torchao's float8 TP styles are not wired in.

Needs CUDA on a GPU of compute capability 8.9 or more (Ada, Hopper) and `pip install 'nemotron4[fp8]'`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nemotron4.errors import ConfigError
from nemotron4.ops.compiled import on_device

__all__ = ["FP8_MODES", "apply_fp8", "check_fp8", "fp8_filter", "fp8_paths", "fp8_weight_cast", "fp8_weights_once",
           "output_fp8"]

FP8_MODES = ("off", "tensorwise", "rowwise", "tensorwise+output")
OUTPUT_SUFFIX = "+output"  # the output projection (fused loss) in FP8 too
MIN_CAPABILITY = (8, 9)  # fp8 tensor cores: Ada (8.9) and Hopper (9.0) onwards


def check_mode(mode: str) -> None:
    if mode not in FP8_MODES:
        raise ConfigError(f"train.fp8 must be one of: {', '.join(FP8_MODES)}; got {mode!r}")


def output_fp8(mode: str) -> bool:
    """Whether `mode` runs the output projection's GEMMs in FP8 (through the fused loss)."""
    return mode.endswith(OUTPUT_SUFFIX)


def fp8_paths(mode: str) -> str:
    """What runs in FP8 under `mode` (the recipe's `paths["fp8"]`): "off", or the blocks' recipe and where."""
    if mode == "off":
        return "off"
    return f"{mode.removesuffix(OUTPUT_SUFFIX)}: blocks" + (" + output (fused loss)" if output_fp8(mode) else "")


def check_fp8(mode: str, device: torch.device | str) -> None:
    """Raise a one-line ConfigError where `mode` cannot run on `device` (bad name, no CUDA, a GPU older than
    compute capability 8.9, torchao missing); nothing for "off"."""
    check_mode(mode)
    if mode == "off":
        return
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ConfigError(f"train.fp8 = {mode!r} needs a CUDA GPU (the run is on {device}); set train.fp8 = \"off\"")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise ConfigError(
            f"train.fp8 = {mode!r} needs a GPU of compute capability 8.9 or more (Ada, Hopper); "
            f"{torch.cuda.get_device_name(device)} is {capability[0]}.{capability[1]}; set train.fp8 = \"off\""
        )
    _torchao_float8()


def _torchao_float8() -> Any:
    """torchao.float8, imported on first use; a ConfigError naming the extra when it is not installed."""
    torchao_log = logging.getLogger("torchao")
    level = torchao_log.level
    torchao_log.setLevel(logging.ERROR)  # it warns about optional kernel libraries (mxfp8, cutlass) we do not use
    try:
        import torchao.float8 as float8
    except ImportError as e:
        raise ConfigError(f"train.fp8 needs torchao ({e}); pip install 'nemotron4[fp8]'") from e
    finally:
        torchao_log.setLevel(level)
    return float8


def fp8_filter(module: nn.Module, fqn: str) -> bool:
    """The modules `apply_fp8` converts: the `nn.Linear`s inside `layers.*` (the blocks); not `output`."""
    return isinstance(module, nn.Linear) and fqn.startswith("layers.")


def apply_fp8(model: nn.Module, mode: str, tensor_parallel: bool = False, device: torch.device | None = None,
              fused_loss: bool = True, fsdp: bool = False) -> nn.Module:
    """Swap the blocks' linear layers of `model` for torchao's Float8Linear (in place; parameter names and values
    unchanged; `model` may be on meta, then `device` is where it will run). Call before activation checkpointing,
    compile and FSDP2; "off" returns the model as is. A "+output" mode needs the fused loss (`fused_loss`), which
    runs the output projection's FP8 GEMMs. `fsdp`: FSDP2 will shard the model (data parallelism); under tensorwise
    its all-gathers then carry the e4m3 weights (torchao's float8 all-gather: each weight's scale from the amax
    of its full tensor, one all-reduce over the shards). Under tensor parallelism it is refused."""
    check_mode(mode)
    if mode == "off":
        return model
    if output_fp8(mode) and not fused_loss:
        raise ConfigError(f"train.fp8 = {mode!r} runs the output projection in FP8 inside the fused loss; set "
                          f"train.fused_loss = true, or train.fp8 = {mode.removesuffix(OUTPUT_SUFFIX)!r}")
    if tensor_parallel:
        raise ConfigError(f"train.fp8 = {mode!r} does not run under tensor parallelism yet (torchao's float8 TP "
                          "styles are not wired in); set parallel.tp = 1 (data parallelism is fine) or train.fp8 = "
                          "\"off\"")
    check_fp8(mode, device if device is not None else next(model.parameters()).device)
    return convert(model, mode, fsdp)


def convert(model: nn.Module, mode: str, fsdp: bool = False) -> nn.Module:
    """The conversion itself, without the device check (torchao's module swap also runs on CPU, where the tests
    check which modules it selects); `fsdp` as for `apply_fp8`."""
    float8 = _torchao_float8()
    for fqn, m in model.named_modules():
        if fp8_filter(m, fqn) and (m.in_features % 16 or m.out_features % 16):
            raise ConfigError(f"train.fp8: fp8 GEMMs need dimensions divisible by 16; {fqn} is {m.in_features} -> "
                              f"{m.out_features}; set train.fp8 = \"off\"")
    config = float8_config(mode)
    if fsdp and fp8_weights_once(mode):
        config = dataclasses.replace(config, enable_fsdp_float8_all_gather=True)
    return float8.convert_to_float8_training(model, module_filter_fn=fp8_filter, config=config)


def float8_config(mode: str) -> Any:
    """torchao's `Float8LinearConfig` for the blocks under `mode`: its named recipe, and for "tensorwise" with fast
    accumulation in the input-gradient GEMM as in the forward one (torchao's recipe keeps it for the forward only;
    module docstring for the measurement). bench/train.py's variants start from it."""
    float8 = _torchao_float8()
    config = float8.Float8LinearConfig.from_recipe_name(mode.removesuffix(OUTPUT_SUFFIX))
    if mode.removesuffix(OUTPUT_SUFFIX) == "tensorwise":
        from torchao.float8.config import Float8GemmConfig

        config = dataclasses.replace(config, gemm_config_grad_input=Float8GemmConfig(use_fast_accum=True))
    return config


def fp8_weights_once(mode: str) -> bool:
    """Whether `mode` casts the blocks' weights to e4m3 once per step (under cast_weights_once): the tensorwise
    recipes."""
    return mode.removesuffix(OUTPUT_SUFFIX) == "tensorwise"


def fp8_weight_cast(mode: str, dtype: torch.dtype) -> Callable | None:
    """`CastWeightsOnce`'s `cast` (nemotron4.train.fast) under `mode`: None where the blocks' weights keep their
    `dtype` copies ("off", "rowwise"). Under the tensorwise recipes each block's Float8Linear weights become
    torchao Float8TrainingTensors (e4m3, one scale per tensor from the fp32 master's absolute maximum: torchao's own
    `tensor_to_scale` and `to_fp8_saturated`), once per optimizer step. torchao's matmul takes an already-cast
    weight as it is, so the amax pass and the scaled cast no longer run in every micro-batch's forward, again in
    its recomputation under activation checkpointing, and in its backward (for the input-gradient GEMM); only the
    backward's transposed copy of the e4m3 weight remains per micro-batch. The copies report `dtype` (torchao's
    orig_dtype), so the weight gradients arrive in it as before. Rowwise scales the weight along a different axis
    for each GEMM, hence no single copy there."""
    if not fp8_weights_once(mode):
        return None
    _torchao_float8()
    from torchao.float8.config import ScalingGranularity, ScalingType
    from torchao.float8.float8_linear import Float8Linear
    from torchao.float8.float8_training_tensor import Float8TrainingTensor, GemmInputRole

    def tensorwise(module: nn.Module) -> bool:  # every cast of its weight: dynamic, one scale per tensor
        if not isinstance(module, Float8Linear):
            return False
        c = module.config
        return all(cc.scaling_type is ScalingType.DYNAMIC and cc.scaling_granularity is ScalingGranularity.TENSORWISE
                   for cc in (c.cast_config_weight, c.cast_config_weight_for_grad_input))

    def cast(pairs: list[tuple[nn.Module, torch.Tensor]]) -> list[torch.Tensor]:
        out = [master.detach().to(dtype) if not tensorwise(m) else None for m, master in pairs]
        fp8 = [i for i, copy in enumerate(out) if copy is None]
        if fp8:
            c = pairs[fp8[0]][0].config
            bits = on_device(_tensorwise_e4m3, [pairs[i][1].detach() for i in fp8],
                             c.cast_config_weight.target_dtype, c.round_scales_to_power_of_2)
            for i, (data, scale) in zip(fp8, bits, strict=True):
                out[i] = Float8TrainingTensor(data, scale, dtype, pairs[i][0].linear_mm_config,
                                              gemm_input_role=GemmInputRole.WEIGHT)
        return out

    return cast


def _tensorwise_e4m3(weights: list[torch.Tensor], fp8_dtype: torch.dtype,
                     round_to_power_of_2: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each weight's (fp8 data, scale) as torchao's dynamic tensorwise cast makes them (one compiled call a block)."""
    from torchao.float8.float8_utils import tensor_to_scale, to_fp8_saturated

    out = []
    for w in weights:
        scale = tensor_to_scale(w, fp8_dtype, round_scales_to_power_of_2=round_to_power_of_2)
        out.append((to_fp8_saturated(w.to(torch.float32) * scale, fp8_dtype), scale))
    return out
