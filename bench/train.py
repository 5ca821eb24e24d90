"""Training throughput on one GPU: Hugging Face `NemotronForCausalLM` against our trainer's own step, one process.

Both: the same shapes (Minitron-4B by default: dim 3072, 32 layers, 24/8 heads, ffn 9216, vocab 256000, seq 4096),
bf16 autocast over fp32 master weights, fused AdamW, gradient clipping 1.0, the same global batch of sequences
made of micro-batches with gradient accumulation. Ours runs `nemotron4.train.step.train_step` (what
`nemotron4 train` runs) with the fast paths of `nemotron4.train.fast`. Prints tokens/s, MFU (docs/paper.md convention,
989e12 peak), ours / HF and peak memory; writes JSON.

    python bench/train.py --out bench/results/train_h200.json
    python bench/train.py --peers ours --micro 4 --fp8 tensorwise,tensorwise+output --fp8-curve 100 \
        --curve-layers 2 --profile --out bench/results/train_fp8_h200.json  # FP8 against the bf16 step, same run

With `--fp8`, ours also runs with the blocks' linear layers in FP8 (`nemotron4.train.fp8`, torchao float8; with
"tensorwise+output" the fused loss's output-projection GEMMs too) for each train.fp8 recipe named (options after
colons: RECIPE:nocast turns cast_weights_once off; RECIPE:castbf16 keeps it but with bf16 copies that torchao
casts to e4m3 in every micro-batch, the rule before the e4m3 copies once per step; RECIPE:exactgrad runs torchao's
tensorwise recipe as named (no fast accumulation in the blocks' input-gradient GEMMs), RECIPE:fastwgrad adds it to
their weight-gradient GEMMs; +output modes only: :outputpercall casts the output weight to e4m3 in every
micro-batch, :fastlogits runs the fused loss's logits GEMM with fast accumulation, :chunk=N its chunks of N tokens,
and :gemms=logits+dgrad only those of its three GEMMs, logits, dgrad, wgrad, in FP8, to tell which one moves the
loss curve); `fp8_over_bf16` is the best FP8 tokens/s of the train.fp8 recipes as the trainer runs them (no options;
`fp8_over_bf16_by_recipe` has every variant)
over the best bf16 tokens/s of ours. MFU stays in the bf16-peak convention under FP8 (989e12; the FP8 peak is
twice that): it is tokens/s times the same FLOPs per token.
`--fp8-curve N` trains bf16 and each FP8 recipe N steps from the same initial weights on the same batches (a model
of `--curve-layers` layers and a `--curve-vocab` vocabulary: cheap, same block shapes).
    python bench/train.py --device cpu --model tiny --seq-len 64 --layers 2     # smoke test of this script
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemotron4 import ModelConfig  # noqa: E402
from nemotron4.flops import H100_BF16_PEAK, flops_per_token, mfu  # noqa: E402
from nemotron4.interop.hf import config_to_hf  # noqa: E402
from nemotron4.ops.cross_entropy import fp8_gemms, output_weight_e4m3_once  # noqa: E402
from nemotron4.train.config import OptimSection, TrainSection  # noqa: E402
from nemotron4.train.fast import cast_weights_context, fused_cross_entropy_loss  # noqa: E402
from nemotron4.train.fp8 import fp8_weight_cast, fp8_weights_once, output_fp8  # noqa: E402
from nemotron4.train.optim import build_optimizer  # noqa: E402
from nemotron4.train.recipe import Recipe, build_recipe, stacked  # noqa: E402
from nemotron4.train.step import autocast_context, train_step  # noqa: E402


def log(*a) -> None:
    print(*a, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hf_loss(model, batch: torch.Tensor) -> torch.Tensor:
    """HF's own loss path: full logits, upcast to fp32, cross-entropy (labels shifted by us: same targets)."""
    import torch.nn.functional as F

    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())


def time_steps(model, optimizer, batches, micro: int, loss_fn, device, warmup: int, steps: int,
               step_context=contextlib.nullcontext, profile: bool = False, autocast=None, hooks=None) -> dict:
    autocast = autocast or autocast_context(device, compute_dtype(device))  # HF's: the same bf16 autocast as ours
    gbs = batches.shape[0]
    micro_batches = list(batches.split(micro))
    losses = []

    def step() -> float:
        return train_step(model, optimizer, micro_batches, 1e-4, 1.0, autocast, loss_fn, hooks, step_context).loss

    for _ in range(warmup):
        losses.append(step())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        losses.append(step())
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    tokens = gbs * (batches.shape[1] - 1)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    out = {"micro_batch": micro, "accumulation": gbs // micro, "global_batch": gbs, "step_s": dt,
           "tokens_per_s": tokens / dt, "peak_mem_gib": peak, "losses": losses}
    if profile:
        out["gpu_ms_by_group"] = profile_step(step, device)
    return out


def profile_step(step, device: torch.device) -> dict[str, float]:
    """GPU milliseconds of one more step by kernel group (bench/profile_train.py's groups)."""
    from profile_train import group_of  # bench/ is on sys.path when this file runs as a script
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]) as prof:
        step()
        sync(device)
    groups: dict[str, float] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            groups[group_of(e.name)] = groups.get(group_of(e.name), 0.0) + e.device_time_total / 1e3
    return {g: round(ms, 2) for g, ms in sorted(groups.items(), key=lambda kv: -kv[1])}


def markov_batches(vocab: int, steps: int, gbs: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """(steps, gbs, seq_len + 1) tokens with learnable structure: each token is a fixed random successor of the
    previous one, or (one time in five) a uniformly random token. Loss falls from ln(vocab) toward ~2.9 nats."""
    g = torch.Generator().manual_seed(seed)
    successor = torch.randperm(vocab, generator=g)
    n = steps * gbs
    out = torch.empty(n, seq_len + 1, dtype=torch.long)
    out[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    noise = torch.rand(n, seq_len, generator=g) < 0.2
    rand = torch.randint(0, vocab, (n, seq_len), generator=g)
    for t in range(seq_len):
        out[:, t + 1] = torch.where(noise[:, t], rand[:, t], successor[out[:, t]])
    return out.view(steps, gbs, seq_len + 1)


def compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def train_curve(model, loss_fn, data: torch.Tensor, micro: int, device: torch.device,
                step_context=contextlib.nullcontext, autocast=None, held_out: torch.Tensor | None = None,
                eval_every: int = 10, evals: dict | None = None) -> list[float]:
    """Train on `data` (steps, global batch, seq + 1) with the paper's optimizer (docs/paper.md), LR warmup 10
    steps to 3e-4 then constant; the per-step losses. With `held_out` (a batch), its loss without grad (the fused
    loss's evaluation path: the output projection in bf16 whatever train.fp8 says) goes into `evals` before every
    `eval_every`-th step and after the last, keyed by the number of steps taken."""
    autocast = autocast or autocast_context(device, compute_dtype(device))
    optimizer = build_optimizer(model, OptimSection(fused="true" if device.type == "cuda" else "false"), device)
    losses = []

    def evaluate(step: int) -> None:
        if held_out is not None and evals is not None:
            with torch.no_grad(), step_context(), autocast():
                evals[step] = round(loss_fn(model, held_out.to(device)).item(), 5)

    for i in range(data.shape[0]):
        if eval_every and i % eval_every == 0:
            evaluate(i)
        lr = 3e-4 * min(1.0, (i + 1) / 10)
        micro_batches = list(data[i].to(device).split(micro))
        losses.append(train_step(model, optimizer, micro_batches, lr, 1.0, autocast, loss_fn,
                                 step_context=step_context).loss)
    evaluate(data.shape[0])
    return losses


VARIANT_FLAGS = ("nocast", "castbf16", "outputpercall", "exactgrad", "fastwgrad", "fastlogits")
GEMMS_OPTION, CHUNK_OPTION = "gemms=", "chunk="


def split_variant(fp8: str) -> tuple[str, list[str]]:
    """"RECIPE[:OPTION...]" -> (the train.fp8 recipe, its bench options): nocast (cast_weights_once off), castbf16
    (bf16 copies once per step, cast to e4m3 by torchao per micro-batch), outputpercall (the fused loss casts the
    output weight to e4m3 in every micro-batch), exactgrad (no fast accumulation in the blocks' input-gradient
    GEMMs: torchao's tensorwise recipe as named), fastwgrad (fast accumulation in their weight-gradient GEMMs too),
    fastlogits (the fused loss's FP8 logits GEMM with fast accumulation), gemms=A+B (only those of the fused loss's
    GEMMs in FP8), chunk=N (its chunks of N tokens)."""
    mode, *options = fp8.split(":")
    bad = [o for o in options if o not in VARIANT_FLAGS and not o.startswith(GEMMS_OPTION)
           and not (o.startswith(CHUNK_OPTION) and o.removeprefix(CHUNK_OPTION).isdigit())]
    if bad:
        raise SystemExit(f"--fp8 {fp8}: unknown option {bad[0]!r}; options are {', '.join(VARIANT_FLAGS)}, "
                         f"{GEMMS_OPTION}A+B, {CHUNK_OPTION}N")
    if "nocast" in options and ({"castbf16", "outputpercall"} & set(options)):
        raise SystemExit(f"--fp8 {fp8}: castbf16 and outputpercall change how cast_weights_once casts; drop nocast")
    if "castbf16" in options and not fp8_weights_once(mode):
        raise SystemExit(f"--fp8 {fp8}: castbf16 applies to the tensorwise recipes (the others keep bf16 copies)")
    if "outputpercall" in options and not output_fp8(mode):
        raise SystemExit(f"--fp8 {fp8}: outputpercall applies to the +output recipes")
    return mode, options


def curve_name(fp8: str) -> str:
    """The variant as its loss curve knows it: without the options that do not change the numbers (nocast,
    outputpercall, chunk=)."""
    mode, options = split_variant(fp8)
    return ":".join([mode, *(o for o in options if o not in ("nocast", "outputpercall")
                             and not o.startswith(CHUNK_OPTION))])


@contextlib.contextmanager
def accumulation(grads: dict[str, bool]):
    """nemotron4.train.fp8's torchao config with use_fast_accum set as given for these backward GEMMs
    ("grad_input", "grad_weight"), while a recipe builds."""
    import dataclasses
    from unittest import mock

    from torchao.float8.config import Float8GemmConfig

    from nemotron4.train import fp8 as fp8_module

    named = fp8_module.float8_config

    def config(mode: str):
        return dataclasses.replace(named(mode), **{f"gemm_config_{g}": Float8GemmConfig(use_fast_accum=fast)
                                                   for g, fast in grads.items()})

    with mock.patch.object(fp8_module, "float8_config", config):
        yield


def build_ours(cfg: ModelConfig, args, device: torch.device, fp8: str = "off", weights: dict | None = None,
               seed: int = 0) -> Recipe:
    """Our model and step as `nemotron4 train` builds them in one process (the training recipe), with the
    variant's bench options (`split_variant`)."""
    mode, options = split_variant(fp8)
    train = TrainSection(compile=not args.no_compile, fused_loss=True, cast_weights_once="nocast" not in options,
                         fp8=mode, attention_backend=args.attention if device.type == "cuda" else "auto")
    grads = {g: fast for o, g, fast in (("exactgrad", "grad_input", False), ("fastwgrad", "grad_weight", True))
             if o in options}
    with accumulation(grads) if grads else contextlib.nullcontext():
        recipe = build_recipe(cfg, train, device, compute_dtype(device), seed=seed, weights=weights)
    for g, fast in grads.items():
        how = "with" if fast else "without"
        recipe.paths["fp8"] += f" (blocks' {g.replace('_', '-')} GEMMs {how} fast accumulation)"
    dtype = compute_dtype(device)
    if "castbf16" in options or "outputpercall" in options:  # split_variant: only with cast_weights_once
        recipe.step_context = cast_weights_context(  # without the e4m3 copies once per step
            recipe.model, dtype, cast=None if "castbf16" in options else fp8_weight_cast(mode, dtype))
        if "castbf16" in options:
            recipe.paths["cast_weights"] = "once per step (bf16; torchao casts them to e4m3 per micro-batch)"
        if output_fp8(mode) and "outputpercall" not in options:
            recipe.step_context = stacked(recipe.step_context, output_weight_e4m3_once)
    if "outputpercall" in options:
        recipe.paths["fp8"] += " (the output weight cast to e4m3 per micro-batch)"
    gemms_option = next((o for o in options if o.startswith(GEMMS_OPTION)), None)
    chunk = next((int(o.removeprefix(CHUNK_OPTION)) for o in options if o.startswith(CHUNK_OPTION)), None)
    if gemms_option or "fastlogits" in options or chunk:  # the fused loss: its GEMMs, accumulation, chunk size
        if not output_fp8(mode) and (gemms_option or "fastlogits" in options):
            raise SystemExit(f"--fp8 {fp8}: gemms= and fastlogits are about the output projection's GEMMs; use a "
                             "+output mode")
        kwargs = dict(recipe.loss_fn.keywords) if isinstance(recipe.loss_fn, functools.partial) else {}
        if gemms_option:
            kwargs["fp8"] = fp8_gemms(gemms_option.removeprefix(GEMMS_OPTION).split("+"))
            recipe.paths["fp8"] += f" ({'+'.join(sorted(kwargs['fp8']))} of its GEMMs)"
        if "fastlogits" in options:
            kwargs["fast_accum"] = True
            recipe.paths["fp8"] += " (its logits GEMM with fast accumulation)"
        if chunk:
            kwargs["chunk_size"] = chunk
            recipe.paths["loss"] += f" (chunks of {chunk} tokens)"
        recipe.loss_fn = functools.partial(fused_cross_entropy_loss, **kwargs)
    log(f"ours fp8 {fp8}: paths {recipe.paths}")
    recipe.model.train()
    return recipe


def fp8_loss_curves(cfg: ModelConfig, args, device: torch.device, modes: list[str]) -> dict:
    """bf16 and each FP8 recipe from the same initial weights on the same batches; per-step losses and the
    relative differences to bf16 (max after step 10, final)."""
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "n_layers": args.curve_layers or cfg.n_layers,
                                 "vocab_size": args.curve_vocab or cfg.vocab_size})
    steps, micro = args.fp8_curve, int(args.micro.split(",")[0])
    data = markov_batches(cfg.vocab_size, steps + 1, args.global_batch, args.seq_len)
    data, held_out = data[:steps], data[steps, :micro]  # a batch never trained on: the no-grad (bf16 output) loss
    initial = None  # the bf16 model's initial weights, loaded into each FP8 one
    curves: dict = {"steps": steps, "micro_batch": micro, "global_batch": args.global_batch, "seq_len": args.seq_len,
                    "n_layers": cfg.n_layers, "vocab_size": cfg.vocab_size, "data": "markov (successor 80%)"}
    for mode in ["off", *modes]:
        ours = build_ours(cfg, args, device, mode, initial)
        if initial is None:
            initial = {k: v.detach().to("cpu", copy=True) for k, v in ours.model.state_dict().items()}
        name = mode if mode != "off" else "bf16"
        evals: dict[int, float] = {}
        curves[name] = [round(x, 5) for x in train_curve(ours.step_model, ours.loss_fn, data, micro, device,
                                                         ours.step_context, ours.autocast, held_out, 10, evals)]
        curves[f"{name}_held_out"] = evals
        log(f"{name} curve: {json.dumps(curves[name])}")
        log(f"{name} held-out loss (no grad, output projection in bf16) by steps taken: {json.dumps(evals)}")
        del ours
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ref = curves["bf16"]
    log("\n| step | bf16 loss | " + " | ".join(f"{m} loss | rel diff" for m in modes) + " |")
    log("|---|---|" + "---|---|" * len(modes))
    for i in sorted({*range(0, steps, max(1, steps // 10)), steps - 1}):
        log(f"| {i + 1} | {ref[i]:.4f} | " + " | ".join(
            f"{curves[m][i]:.4f} | {abs(curves[m][i] - ref[i]) / abs(ref[i]):.2e}" for m in modes) + " |")
    for m in modes:
        rel = [abs(a - b) / abs(b) for a, b in zip(curves[m], ref, strict=True)]
        curves[f"{m}_max_rel_diff_after_10"] = max(rel[10:], default=0.0)
        curves[f"{m}_final_rel_diff"] = rel[-1]
        held = {k: abs(v - curves["bf16_held_out"][k]) / abs(curves["bf16_held_out"][k])
                for k, v in curves[f"{m}_held_out"].items()}
        curves[f"{m}_held_out_rel_diff"] = held
        log(f"{m}: max rel diff after step 10 {max(rel[10:], default=0.0):.2e}, final {rel[-1]:.2e}; held-out "
            f"(bf16 output) rel diff by steps: " + ", ".join(f"{k} {v:.2e}" for k, v in held.items()))
    return curves


def loss_curves(cfg: ModelConfig, args, device: torch.device, hf_factory) -> dict:
    """HF and ours from the same initial weights on the same batches for `args.curve` steps (the optimizer of
    docs/paper.md section 4, LR warmup 10 steps to 3e-4, then constant); per-step losses of both."""
    steps, micro = args.curve, int(args.micro.split(",")[0])
    data = markov_batches(cfg.vocab_size, steps, args.global_batch, args.seq_len)
    torch.manual_seed(0)
    hf = hf_factory()
    initial = {k: v.detach().to("cpu", copy=True) for k, v in hf.state_dict().items()}

    def train(model, loss_fn, step_context=contextlib.nullcontext, autocast=None) -> list[float]:
        return train_curve(model, loss_fn, data, micro, device, step_context, autocast)

    hf.train()
    hf_losses = train(hf, hf_loss)
    del hf
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    from nemotron4.interop.hf import our_name

    weights = {our_name(k): v for k, v in initial.items() if not k.endswith("inv_freq")}
    ours = build_ours(cfg, args, device, weights=weights)
    our_losses = train(ours.step_model, ours.loss_fn, ours.step_context, ours.autocast)
    rel = [abs(a - b) / abs(a) for a, b in zip(hf_losses, our_losses, strict=True)]
    log("\n| step | HF loss | ours loss | rel diff |")
    log("|---|---|---|---|")
    for i in range(0, steps, max(1, steps // 10)):
        log(f"| {i + 1} | {hf_losses[i]:.4f} | {our_losses[i]:.4f} | {rel[i]:.2e} |")
    log(f"| {steps} | {hf_losses[-1]:.4f} | {our_losses[-1]:.4f} | {rel[-1]:.2e} |")
    log(f"max rel diff {max(rel):.2e}, mean {sum(rel) / steps:.2e}")
    return {"steps": steps, "micro_batch": micro, "global_batch": args.global_batch, "data": "markov (successor 80%)",
            "hf": [round(x, 5) for x in hf_losses], "ours": [round(x, 5) for x in our_losses],
            "max_rel_diff": max(rel), "mean_rel_diff": sum(rel) / steps}


def same_micro_ratios(runs: list[dict], global_batch: int) -> dict[str, float]:
    """ours / HF tokens/s at each micro-batch size both ran (without OOM) at the global batch."""
    by = {(r["peer"], r["micro_batch"]): r["tokens_per_s"] for r in runs if r["global_batch"] == global_batch}
    return {str(m): by[("ours", m)] / by[("hf", m)] for (peer, m) in sorted(by) if peer == "hf" and ("ours", m) in by}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minitron-4b")
    ap.add_argument("--layers", type=int, default=None, help="override n_layers (e.g. the 15B width that fits)")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--micro", default="1,2,4", help="micro-batch sizes to time at the global batch")
    ap.add_argument("--single", action="store_true", help="also time micro-batch 1 without accumulation")
    ap.add_argument("--peers", default="hf,ours", help="which of hf, ours")
    ap.add_argument("--attention", default="cudnn", help="our SDPA backend: cudnn, flash, efficient, math, auto")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--curve", type=int, default=0,
                    help="also train HF and ours N steps from the same weights on the same data; print both losses")
    ap.add_argument("--fp8", default="",
                    help="also time ours with these train.fp8 recipes, e.g. tensorwise,rowwise; RECIPE:nocast runs "
                    "it without cast_weights_once (the trainer keeps cast-once on under FP8)")
    ap.add_argument("--fp8-micro", default=None,
                    help="micro-batch sizes for the FP8 runs (default: --micro; an empty string: no FP8 timing)")
    ap.add_argument("--fp8-curve", type=int, default=0,
                    help="also train bf16 and each --fp8 recipe N steps from the same weights on the same data")
    ap.add_argument("--curve-layers", type=int, default=0, help="layers of the --fp8-curve model (0: the model's)")
    ap.add_argument("--curve-vocab", type=int, default=0, help="vocabulary of the --fp8-curve model (0: the model's)")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, profile one more step of each run: GPU ms by kernel group")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="bench/results/train_h200.json")
    args = ap.parse_args()

    device = torch.device(args.device)
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, 64)  # bf16, each FP8 recipe and each micro-batch size compile the block
    overrides = {"max_seq_len": max(args.seq_len, 4096)}
    if args.layers:
        overrides["n_layers"] = args.layers
    cfg = ModelConfig.from_name(args.model, **overrides)
    fpt = flops_per_token(cfg, args.seq_len)
    g = torch.Generator().manual_seed(0)
    batches = torch.randint(0, cfg.vocab_size, (args.global_batch, args.seq_len + 1), generator=g).to(device)
    micros = [int(m) for m in args.micro.split(",")]

    import transformers

    res: dict = {
        "bench": "train", "command": " ".join(["python"] + sys.argv),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "none (cpu)",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "model": args.model, "config": cfg.to_dict(), "seq_len": args.seq_len, "flops_per_token": fpt,
        "mfu_convention": "6 x (non-embedding + output params) + 12 x layers x seq_len x dim per token; "
                          f"{H100_BF16_PEAK:.4g} FLOP/s peak (the bf16 peak, also for the FP8 runs)",
        "runs": [],
    }
    if args.fp8:
        from importlib.metadata import version

        res["torchao"] = version("torchao")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def record(peer: str, r: dict, fp8: str = "off") -> None:
        r["peer"], r["fp8"] = peer, fp8
        r["mfu"] = mfu(cfg, args.seq_len, r["tokens_per_s"])
        res["runs"].append(r)
        out.write_text(json.dumps(res, indent=2) + "\n")
        log(f"{peer:5s} fp8 {fp8} mb {r['micro_batch']} x acc {r['accumulation']}: {r['tokens_per_s']:,.0f} tok/s, "
            f"MFU {r['mfu']:.1%}, {r['step_s']:.3f} s/step, peak {r['peak_mem_gib']:.1f} GiB")

    def hf_factory():
        hf_cfg = transformers.NemotronConfig(**{k: v for k, v in config_to_hf(cfg, torch.float32).items()
                                                if k not in ("architectures", "model_type", "torch_dtype", "dtype")})
        with torch.device(device):
            return transformers.NemotronForCausalLM._from_config(hf_cfg, attn_implementation="sdpa",
                                                                 dtype=torch.float32)

    plans = [(args.global_batch, m) for m in micros] + ([(1, 1)] if args.single else [])
    fp8_modes = list(filter(None, args.fp8.split(",")))
    fp8_micro = args.micro if args.fp8_micro is None else args.fp8_micro  # "": no FP8 timing (curves only)
    fp8_plans = [(args.global_batch, int(m)) for m in filter(None, fp8_micro.split(","))]
    variants = [(peer, "off", plans) for peer in filter(None, args.peers.split(","))]
    variants += [("ours", mode, fp8_plans) for mode in fp8_modes if fp8_plans]
    for peer, fp8, peer_plans in variants:
        torch.manual_seed(0)
        step_context, autocast = contextlib.nullcontext, None
        if peer == "hf":
            model = hf_factory().train()
            loss_fn = hf_loss
        else:
            ours = build_ours(cfg, args, device, fp8)
            model, loss_fn, step_context, autocast = ours.step_model, ours.loss_fn, ours.step_context, ours.autocast
            res.setdefault("paths", {})[fp8] = ours.paths
            del ours
        optimizer = build_optimizer(model, OptimSection(fused="true" if device.type == "cuda" else "false"), device)
        for gbs, micro in peer_plans:
            try:
                record(peer, time_steps(model, optimizer, batches[:gbs], micro, loss_fn, device,
                                        args.warmup, args.steps, step_context, args.profile, autocast), fp8)
            except torch.OutOfMemoryError as e:
                log(f"{peer} fp8 {fp8} mb {micro}: out of memory ({str(e)[:80]})")
                res["runs"].append({"peer": peer, "fp8": fp8, "micro_batch": micro, "global_batch": gbs,
                                    "error": "OOM"})
            except Exception as e:  # a variant that fails is recorded, the others still run
                log(f"{peer} fp8 {fp8} mb {micro}: failed: {traceback.format_exc()}")
                res["runs"].append({"peer": peer, "fp8": fp8, "micro_batch": micro, "global_batch": gbs,
                                    "error": f"{type(e).__name__}: {str(e)[:300]}"})
            with contextlib.suppress(Exception):
                optimizer.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del model, optimizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    ok = [r for r in res["runs"] if "mfu" in r]
    best = {p: max((r for r in ok if r["peer"] == p and r["fp8"] == "off" and r["global_batch"] == args.global_batch),
                   key=lambda r: r["mfu"], default=None) for p in ("hf", "ours")}
    if best["hf"] and best["ours"]:
        res["ours_over_hf_best"] = best["ours"]["tokens_per_s"] / best["hf"]["tokens_per_s"]
        res["ours_over_hf_by_micro"] = same_micro_ratios([r for r in ok if r["fp8"] == "off"], args.global_batch)
    fp8_best = {m: max((r for r in ok if r["fp8"] == m and r["global_batch"] == args.global_batch),
                       key=lambda r: r["tokens_per_s"], default=None) for m in fp8_modes}
    if best["ours"] and any(fp8_best.values()):
        res["fp8_over_bf16_by_recipe"] = {m: r["tokens_per_s"] / best["ours"]["tokens_per_s"]
                                          for m, r in fp8_best.items() if r}
        ratios = res["fp8_over_bf16_by_recipe"]
        plain = {m: v for m, v in ratios.items() if ":" not in m}  # the recipes as the trainer runs them
        res["fp8_best_recipe"] = max(plain or ratios, key=(plain or ratios).get)
        res["fp8_over_bf16"] = res["fp8_over_bf16_by_recipe"][res["fp8_best_recipe"]]
        out.write_text(json.dumps(res, indent=2) + "\n")
    if args.fp8_curve and fp8_modes:
        recipes = list(dict.fromkeys(curve_name(m) for m in fp8_modes))  # same numbers with cast-once
        res["fp8_loss_curves"] = fp8_loss_curves(cfg, args, device, recipes)
        chosen = curve_name(res.get("fp8_best_recipe", recipes[0]))
        res["fp8_final_loss_rel_diff"] = res["fp8_loss_curves"][f"{chosen}_final_rel_diff"]
        res["fp8_max_loss_rel_diff_after_10"] = res["fp8_loss_curves"][f"{chosen}_max_rel_diff_after_10"]
        out.write_text(json.dumps(res, indent=2) + "\n")
    if args.curve:
        res["loss_curves"] = loss_curves(cfg, args, device, hf_factory)
        out.write_text(json.dumps(res, indent=2) + "\n")

    for r in ok:
        r["losses"] = [round(x, 4) for x in r["losses"]]
    out.write_text(json.dumps(res, indent=2) + "\n")
    log("\n| peer | fp8 | micro x acc | tokens/s | MFU (bf16 peak) | peak GiB |")
    log("|---|---|---|---|---|---|")
    for r in ok:
        log(f"| {r['peer']} | {r['fp8']} | {r['micro_batch']} x {r['accumulation']} | {r['tokens_per_s']:,.0f} | "
            f"{r['mfu']:.1%} | {r['peak_mem_gib']:.1f} |")
    profiled = [r for r in ok if r.get("gpu_ms_by_group")]
    if profiled:
        groups = list(dict.fromkeys(g for r in profiled for g in r["gpu_ms_by_group"]))
        log("\n| GPU ms of one step | " + " | ".join(groups) + " | step ms |")
        log("|---|" + "---|" * (len(groups) + 1))
        for r in profiled:
            cells = " | ".join(f"{r['gpu_ms_by_group'].get(g, 0.0):.0f}" for g in groups)
            log(f"| {r['fp8']} {r['micro_batch']} x {r['accumulation']} | {cells} | {r['step_s'] * 1e3:.0f} |")
    if "fp8_over_bf16" in res:
        log(f"FP8 / bf16, each at its best micro-batch: {res['fp8_over_bf16']:.3f} ({res['fp8_best_recipe']}); "
            + ", ".join(f"{m} {v:.3f}" for m, v in res["fp8_over_bf16_by_recipe"].items()))
    if "ours_over_hf_best" in res:
        log(f"ours / HF, each at its best micro-batch: {res['ours_over_hf_best']:.2f}")
        for m, ratio in res["ours_over_hf_by_micro"].items():
            log(f"ours / HF at micro-batch {m}: {ratio:.2f}")


if __name__ == "__main__":
    main()
