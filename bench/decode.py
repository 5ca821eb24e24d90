"""Batch-1 decode and prefill on one GPU: nemotron4 against Hugging Face `NemotronForCausalLM`, in one process.

Both models share the same random bf16 weights (the 15B flavour by default). Prints tokens/s, the ratio to HF,
the fraction of the HBM roofline (bytes read per token / measured read bandwidth), prefill TFLOP/s at 4096 tokens
and int8 weight-only decode tokens/s; writes the results as JSON.

    python bench/decode.py --out bench/results/decode_h200.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemotron4 import ModelConfig, Nemotron4  # noqa: E402
from nemotron4.inference import generate_tokens, quantize_int8, remove_caches, setup_caches  # noqa: E402
from nemotron4.inference.generation import compiled_decode, prefill  # noqa: E402
from nemotron4.interop.hf import config_to_hf, our_name  # noqa: E402

DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def log(*a) -> None:
    print(*a, flush=True)


def cuda_time(fn, warmup: int = 1, reps: int = 3) -> float:
    """Median seconds of fn() over reps, after warmup calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def read_bandwidth() -> dict:
    """HBM ceilings: a pure read (sum of 8 GiB of random bf16) and a device-to-device copy (read + write)."""
    x = torch.randn(2**32 if DEVICE == "cuda" else 2**24, device=DEVICE, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    t_read = cuda_time(lambda: x.sum(dtype=torch.float32), warmup=2, reps=10)
    t_copy = cuda_time(lambda: y.copy_(x), warmup=2, reps=10)
    return {"read_GBps": nbytes / t_read / 1e9, "copy_rw_GBps": 2 * nbytes / t_copy / 1e9}


def bytes_read_per_token(model: Nemotron4) -> int:
    """Weights a batch-1 decode step reads: every parameter and quantized buffer but the input embedding (one
    row of it is gathered) and the rotary tables; the KV cache (a few MB here) is left out."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return sum(t.numel() * t.element_size() for n, t in tensors
               if not n.startswith(("tok_embeddings.", "rope_")) and "kv_cache" not in n)


def hf_model(cfg: ModelConfig):
    import transformers

    hf_cfg = transformers.NemotronConfig(**{k: v for k, v in config_to_hf(cfg, torch.bfloat16).items()
                                            if k not in ("architectures", "model_type", "torch_dtype", "dtype")})
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = transformers.NemotronForCausalLM._from_config(hf_cfg, dtype=torch.bfloat16)
    return model.eval()


def ours_sharing(hf, cfg: ModelConfig) -> Nemotron4:
    """Our model on the very same weight tensors (no copy)."""
    with torch.device("meta"):
        model = Nemotron4(cfg)
    state = {our_name(k): v for k, v in hf.state_dict().items() if not k.endswith("inv_freq")}
    model.load_state_dict(state, strict=True, assign=True)
    model.init_buffers()
    return model.eval()


def time_ours(model: Nemotron4, prompt: list[int], new: int, compile: bool) -> dict:
    def run(n: int) -> list[int]:
        return generate_tokens(model, [prompt], n, compile=compile)[0]

    run(new)  # compile + warm up (CUDA graphs are recorded on the first calls)
    run(new)
    t_all = cuda_time(lambda: run(new), warmup=0, reps=3)
    t_one = cuda_time(lambda: run(1), warmup=1, reps=3)  # prefill + first token
    decode = (new - 1) / (t_all - t_one)
    return {"tokens_per_s": decode, "end_to_end_tokens_per_s": new / t_all, "seconds": t_all, "tokens": run(new)}


def time_hf(model, prompt: list[int], new: int, mode: str) -> dict:
    ids = torch.tensor([prompt], device=DEVICE)
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0,
              attention_mask=torch.ones_like(ids))
    if mode != "eager":
        kw["cache_implementation"] = "static"

    def run(n: int):
        return model.generate(ids, **{**kw, "max_new_tokens": n, "min_new_tokens": n})

    run(new)
    run(new)
    t_all = cuda_time(lambda: run(new), warmup=0, reps=3)
    t_one = cuda_time(lambda: run(1), warmup=1, reps=3)
    return {"tokens_per_s": (new - 1) / (t_all - t_one), "end_to_end_tokens_per_s": new / t_all,
            "seconds": t_all, "tokens": run(new)[0, len(prompt):].tolist()}


def prefill_tflops(model: Nemotron4, cfg: ModelConfig, T: int) -> dict:
    """Forward over T tokens from position 0 (cache filled, causal SDPA). FLOPs: a third of the docs/paper.md
    section 4 training convention, i.e. 2 x (non-embedding + output params) + 4 x layers x T x dim per token."""
    counts = model.param_counts()
    n = counts["non_embedding"] + model.output.weight.numel()
    flops = T * (2 * n + 4 * cfg.n_layers * T * cfg.dim)
    tokens = torch.randint(0, cfg.vocab_size, (1, T), device=DEVICE)
    setup_caches(model, 1, T)
    with torch.no_grad():
        t = cuda_time(lambda: prefill(model, tokens), warmup=2, reps=5)
    return {"tokens": T, "seconds": t, "tflops": flops / t / 1e12, "flops_convention": "2N + 4*L*T*d per token"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="15b")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prefill-len", type=int, default=4096)
    ap.add_argument("--skip", default="", help="comma list of: hf_eager, hf_compile, int8, prefill")
    ap.add_argument("--device", default="cuda", help="cpu only to smoke-test this script with --model tiny")
    ap.add_argument("--out", default="bench/results/decode_h200.json")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    global DEVICE
    DEVICE = args.device

    import torch._inductor.config as inductor

    inductor.coordinate_descent_tuning = True
    inductor.triton.unique_kernel_names = True
    inductor.fx_graph_cache = True
    torch.backends.cuda.matmul.allow_tf32 = True

    import transformers

    res: dict = {
        "bench": "decode", "command": " ".join(["python"] + sys.argv),
        "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "none (cpu)",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "model": args.model, "batch": 1, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "dtype": "bfloat16", "weights": "random (same tensors for both)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(res, indent=2) + "\n")

    res["bandwidth"] = read_bandwidth()
    log(f"HBM read {res['bandwidth']['read_GBps']:.0f} GB/s, copy {res['bandwidth']['copy_rw_GBps']:.0f} GB/s")
    cfg = ModelConfig.from_name(args.model)
    hf = hf_model(cfg)
    ours = ours_sharing(hf, cfg)
    counts = ours.param_counts()
    bytes_per_token = bytes_read_per_token(ours)
    roofline = res["bandwidth"]["read_GBps"] * 1e9 / bytes_per_token
    res.update(bytes_per_token=bytes_per_token, roofline_tokens_per_s=roofline)
    log(f"{args.model}: {counts['total'] / 1e9:.2f}B params, {bytes_per_token / 1e9:.2f} GB read per token, "
        f"roofline {roofline:.1f} tok/s")
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_len,), generator=g).tolist()

    # correctness: the same weights give the same next-token logits
    with torch.no_grad():
        ids = torch.tensor([prompt], device=DEVICE)
        ref = hf(ids).logits[0, -1].float()
        mine = ours(ids)[0, -1].float()
    res["logits_rel_err_vs_hf"] = ((mine - ref).norm() / ref.norm()).item()
    log(f"last-position logits vs HF: rel err {res['logits_rel_err_vs_hf']:.2e}")

    t0 = time.perf_counter()
    res["ours"] = time_ours(ours, prompt, args.new_tokens, compile=True)
    res["ours"]["compile_and_run_s"] = time.perf_counter() - t0
    res["ours"]["roofline_fraction"] = res["ours"]["tokens_per_s"] / roofline
    log(f"ours compiled: {res['ours']['tokens_per_s']:.1f} tok/s ({res['ours']['roofline_fraction']:.1%} roofline)")
    save()
    if "prefill" not in skip:
        res["prefill"] = prefill_tflops(ours, cfg, args.prefill_len)
        log(f"prefill {args.prefill_len}: {res['prefill']['tflops']:.0f} TFLOP/s")
        save()
    remove_caches(ours)

    for mode in ("eager", "compile"):
        if f"hf_{mode}" in skip:
            continue
        if mode == "compile":
            hf.forward = torch.compile(hf.forward, mode="default")
        t0 = time.perf_counter()
        try:
            r = time_hf(hf, prompt, args.new_tokens, mode)
        except Exception as e:  # report and go on: HF's compiled paths have crashed on this GPU before
            r = {"error": f"{type(e).__name__}: {e}"[:500]}
        r["wall_s"] = time.perf_counter() - t0
        res[f"hf_{mode}"] = r
        if "tokens_per_s" in r:
            same = sum(a == b for a, b in zip(r["tokens"], res["ours"]["tokens"], strict=False))
            r["greedy_tokens_equal_ours"] = same
            log(f"HF {mode}: {r['tokens_per_s']:.1f} tok/s; greedy tokens equal to ours: {same}/{args.new_tokens}")
        else:
            log(f"HF {mode}: {r['error']}")
        save()
    hf_best = max((res[k]["tokens_per_s"] for k in ("hf_eager", "hf_compile") if "tokens_per_s" in res.get(k, {})),
                  default=None)
    if hf_best:
        res["ratio_ours_to_best_hf"] = res["ours"]["tokens_per_s"] / hf_best
    del hf
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()

    if "int8" not in skip:
        quantize_int8(ours)
        gc.collect()
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()
        compiled_decode.cache_clear()
        r = time_ours(ours, prompt, args.new_tokens, compile=True)
        remove_caches(ours)
        int8_bytes = bytes_read_per_token(ours)
        r["bytes_per_token"] = int8_bytes
        r["roofline_fraction"] = r["tokens_per_s"] / (res["bandwidth"]["read_GBps"] * 1e9 / int8_bytes)
        r["greedy_tokens_equal_bf16"] = sum(a == b for a, b in zip(r["tokens"], res["ours"]["tokens"], strict=False))
        res["ours_int8"] = r
        log(f"ours int8: {r['tokens_per_s']:.1f} tok/s ({r['roofline_fraction']:.1%} of its roofline)")
        save()

    for k in ("ours", "hf_eager", "hf_compile", "ours_int8"):
        if isinstance(res.get(k), dict):
            res[k].pop("tokens", None)
    save()
    log("\n| run | tokens/s | vs best HF | roofline |")
    log("|---|---|---|---|")
    for k in ("ours", "ours_int8", "hf_eager", "hf_compile"):
        r = res.get(k, {})
        if "tokens_per_s" in r:
            ratio = r["tokens_per_s"] / hf_best if hf_best else float("nan")
            frac = r.get("roofline_fraction", r["tokens_per_s"] / roofline)
            log(f"| {k} | {r['tokens_per_s']:.1f} | {ratio:.2f}x | {frac:.1%} |")
    if "prefill" in res:
        log(f"prefill {args.prefill_len} tokens: {res['prefill']['tflops']:.0f} TFLOP/s")


if __name__ == "__main__":
    main()
