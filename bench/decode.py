"""Decode and prefill on one GPU: nemotron4 (bf16, int8 weight-only) against Hugging Face `NemotronForCausalLM` and
the open int8 weight-only kernels (torchao `Int8WeightOnlyConfig`, gemlite `A16W8`), all in one process.

Every model shares the same random bf16 weights (the 15B flavour by default); the int8 variants quantize them per
output row. Every nemotron4-side variant, the peers included, runs the same decode loop (`generate_tokens` with
compile=True: one compiled Block shared by the layers, the step captured in one CUDA graph), so the linears are
the only difference. Prints tokens/s at batch 1, the fraction of the HBM roofline (bytes read per token / measured
read bandwidth), the int8 ratios to the peers, a batched table (batch 1/8/32/64, bf16 and int8, against HF's
static-cache generate), prefill TFLOP/s, and the peak memory of the int8 model with a 4096-token cache; writes
JSON. The peers are optional (benchmark only): each is skipped with a message when not installed.

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
from nemotron4.inference import generate_tokens, remove_caches, setup_caches  # noqa: E402
from nemotron4.inference.decode_form import prepare_decode  # noqa: E402
from nemotron4.inference.generation import prefill, release_decode_graphs  # noqa: E402
from nemotron4.inference.quantize import fuse_qkv  # noqa: E402
from nemotron4.interop.hf import config_to_hf, our_name  # noqa: E402

DEVICE = "cuda"
HF_COMPILE_S = {"full": 120, "layers": 45}  # rough seconds of HF's first batch size (compile + timing) on an H200


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


# --- the int8 peers: each replaces the model's nn.Linear modules (blocks and output projection) in place ---------


def torchao_int8(model: Nemotron4) -> Nemotron4:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig())
    return model


def gemlite_a16w8(model: Nemotron4) -> Nemotron4:
    import gemlite
    from gemlite.helper import A16W8

    # gemlite autotunes each shape on first use ("fast"); its prefill kernels (GEMM) run before every decode but
    # are not in the decode timing, so they keep their default config instead of costing minutes of tuning.
    gemlite.set_autotune({"GEMM": "default", "GEMM_SPLITK": "default"})
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, A16W8(device=DEVICE).from_linear(child, del_orig=False))
    return model


PEERS = {"gemlite_a16w8": ("gemlite", gemlite_a16w8), "torchao_int8wo": ("torchao", torchao_int8)}


def marginal_times(kernels: list[dict]) -> dict:
    """Each kernel's share of the wall time: its end minus the latest end of any kernel before it (0 when it ends
    inside one), from trace events ({"name", "ts", "dur", "args": {"grid"}}, microseconds). Under programmatic
    dependent launch kernels overlap, so summed durations overstate a step; the marginal times add up to the span.
    Returns {"name grid": [calls, marginal us, duration us]}."""
    out: dict = {}
    last_end = None
    for e in sorted(kernels, key=lambda e: e["ts"]):
        end = e["ts"] + e["dur"]
        share = e["dur"] if last_end is None else max(0.0, end - last_end)
        last_end = end if last_end is None else max(last_end, end)
        row = out.setdefault(f"{e['name'][:80]} {e.get('args', {}).get('grid')}", [0, 0.0, 0.0])
        row[0] += 1
        row[1] += share
        row[2] += e["dur"]
    return out


def profile_kernels(model: Nemotron4, prompt: list[int], steps: int = 16, top: int = 25) -> dict:
    """Where `steps` compiled decode steps' GPU time goes (after a warm run of the same length), per token, by
    kernel name and grid: each kernel's marginal time (`marginal_times`, which adds up to the wall time under PDL)
    and its summed duration."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    generate_tokens(model, [prompt], steps, compile=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        generate_tokens(model, [prompt], steps, compile=True)
        sync()
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_chrome_trace(f"{tmp}/trace.json")
        events = json.loads(Path(f"{tmp}/trace.json").read_text())["traceEvents"]
    shares = marginal_times([e for e in events if e.get("cat") == "kernel"])
    rows = [{"kernel": k, "calls_per_token": n / steps, "marginal_us_per_token": m / steps,
             "duration_us_per_token": d / steps} for k, (n, m, d) in shares.items()]
    rows.sort(key=lambda r: -r["marginal_us_per_token"])
    return {"steps": steps, "wall_us_per_token": sum(r["marginal_us_per_token"] for r in rows), "top": rows[:top],
            "note": "includes the prefill and the first step of one generate call, spread over the steps"}


def kernel_table(models: list[Nemotron4], read_bw: float, cache_len: int) -> dict:
    """Batch-1 microbenchmarks on this GPU: every decode-linear shape of the models with its installed config
    (CUDA graphs over weight copies, so none sits in L2), and one layer's attention over a cache_len-slot KV cache
    as the model calls it (SDPA, GQA, boolean mask) against two other forms of the same maths."""
    import torch.nn.functional as F

    from nemotron4.inference.quantize import GemvLinear, Int8Linear
    from nemotron4.inference.triton_linear import chosen_config, graph_time, random_linear_case, triton_linear

    rows = []
    shapes = {(m.weight.shape[0], m.weight.shape[1], m.weight.dtype == torch.int8)
              for model in models for m in model.modules() if isinstance(m, (GemvLinear, Int8Linear))}
    g = torch.Generator(device=DEVICE).manual_seed(0)
    for N, K, int8 in sorted(shapes):
        x, ws, s = random_linear_case(1, N, K, int8, DEVICE, g)
        w = ws[0]
        t = graph_time(lambda i, x=x, ws=ws, s=s: triton_linear(x, ws[i], s), len(ws))
        nbytes = w.nbytes + (s.nbytes if s is not None else 0)
        rows.append({"N": N, "K": K, "int8": int8, "us": t * 1e6, "of_read_bw": nbytes / t / read_bw,
                     "config": chosen_config(x, w, s).__dict__})
        del ws, w
    torch.cuda.empty_cache()
    H, KVH, D = 48, 8, 128
    q = torch.randn(1, H, 1, D, device=DEVICE, dtype=torch.bfloat16)
    kv = [torch.randn(2, 1, KVH, cache_len, D, device=DEVICE, dtype=torch.bfloat16) for _ in range(32)]
    mask = torch.ones(1, 1, 1, cache_len, dtype=torch.bool, device=DEVICE)
    mask[..., cache_len // 2:] = False
    fmask = torch.zeros(1, 1, 1, cache_len, dtype=torch.bfloat16, device=DEVICE).masked_fill(~mask, float("-inf"))

    def as_model(i):
        return F.scaled_dot_product_attention(q, kv[i][0], kv[i][1], attn_mask=mask, enable_gqa=True)

    def grouped(i):  # the 6 query heads of a KV head as 6 query rows: no GQA expansion
        y = F.scaled_dot_product_attention(q.view(1, KVH, H // KVH, D), kv[i][0], kv[i][1], attn_mask=fmask)
        return y.view(1, H, 1, D)

    def manual(i):
        qg = q.view(1, KVH, H // KVH, D)
        a = (qg @ kv[i][0].transpose(-1, -2)).float() * D ** -0.5 + fmask.float()
        return (a.softmax(-1).to(q.dtype) @ kv[i][1]).view(1, H, 1, D)

    from nemotron4.inference.decode_ops import attention_splits, triton_decode_attention

    ang = torch.zeros(1, 64, device=DEVICE)  # RoPE at position 0 (the identity), so the forms compare directly
    pos = torch.tensor([cache_len - 1], device=DEVICE)
    q4 = q.transpose(1, 2)  # (B, 1, H, D), as the decode op takes it

    def ours_op(i):  # nemotron4.inference.decode_ops (split-KV partials + combine, RoPE of q fused)
        return triton_decode_attention(q4, kv[i][0], kv[i][1], mask, ang.cos(), ang.sin(), pos).view(1, 1, H, D)

    attn = {"ours_splits": attention_splits(1, KVH, cache_len)}
    ref = as_model(0)
    for name, fn in (("sdpa_gqa_bool_mask (the model's call)", as_model), ("sdpa_grouped_rows_float_mask", grouped),
                     ("matmul_softmax_matmul", manual),
                     ("ours_decode_attention", lambda i: ours_op(i).transpose(1, 2))):
        try:
            err = ((fn(0).float() - ref.float()).norm() / ref.float().norm()).item()
            attn[name] = {"us": graph_time(fn, len(kv)) * 1e6, "rel_err_vs_model_call": err}
        except Exception as e:
            attn[name] = {"error": f"{type(e).__name__}: {e}"[:200]}
    return {"linears_batch_1": rows, "attention_one_layer": {"cache_len": cache_len, **attn}}


def time_ours(model: Nemotron4, prompt: list[int], new: int, batch: int = 1, reps: int = 3) -> dict:
    """Decode tokens/s: batch x (new - 1) tokens over time(new tokens) - time(1 token), medians after a warm-up."""
    prompts = [prompt] * batch

    def run(n: int) -> list[list[int]]:
        return generate_tokens(model, prompts, n, compile=True)

    t0 = time.perf_counter()
    tokens = run(new)[0]  # compile, capture, warm up
    compile_s = time.perf_counter() - t0
    t_all = cuda_time(lambda: run(new), warmup=0, reps=reps)
    t_one = cuda_time(lambda: run(1), warmup=0, reps=reps)  # prefill + first token
    return {"tokens_per_s": batch * (new - 1) / (t_all - t_one), "end_to_end_tokens_per_s": batch * new / t_all,
            "seconds": t_all, "first_run_s": compile_s, "tokens": tokens}


def hf_generate_fn(model, prompt: list[int], batch: int, mode: str, max_new: int):
    """model.generate on a batch of the prompt. Not eager: one StaticCache of prompt + max_new slots made here and
    reused by every call (reset first), so that the n = 1 and n = max_new calls of `time_hf` see the same static
    shapes (HF's cache_implementation="static" sizes a new cache per max_new_tokens, which recompiled every layer
    for each call length)."""
    ids = torch.tensor([prompt] * batch, device=DEVICE)
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0, attention_mask=torch.ones_like(ids))
    cache = None
    if mode != "eager":
        from transformers import StaticCache

        try:
            cache = StaticCache(config=model.config, max_cache_len=len(prompt) + max_new)
        except TypeError:  # an older transformers
            cache = StaticCache(config=model.config, max_batch_size=batch, max_cache_len=len(prompt) + max_new,
                                device=DEVICE, dtype=torch.bfloat16)
        kw["past_key_values"] = cache
    if mode == "layers":
        kw["disable_compile"] = True  # the layers are compiled; no whole-forward auto-compile on top

    def run(n: int):
        if cache is not None:
            cache.reset()
        return model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)

    return run


def compile_hf_decode_layers(model) -> None:
    """Each decoder layer's one-token (decode) call through torch.compile with static shapes (dynamic=False); the
    prompt's call (prefill) stays eager, so each batch size compiles 32 decode graphs (identical but for which
    cache tensors they update: the later ones are FX-graph-cache hits), not the prefill too."""
    for layer in model.model.layers:
        eager = layer.forward
        compiled = torch.compile(eager, dynamic=False)

        def forward(hidden_states, *args, _eager=eager, _compiled=compiled, **kwargs):
            return (_compiled if hidden_states.shape[1] == 1 else _eager)(hidden_states, *args, **kwargs)

        layer.forward = forward


def time_hf(model, prompt: list[int], new: int, mode: str, batch: int = 1, reps: int = 3) -> dict:
    run = hf_generate_fn(model, prompt, batch, mode, new)
    t0 = time.perf_counter()
    tokens = run(new)[0, len(prompt):].tolist()
    first = time.perf_counter() - t0
    t_all = cuda_time(lambda: run(new), warmup=0, reps=reps)
    t_one = cuda_time(lambda: run(1), warmup=0, reps=reps)
    return {"tokens_per_s": batch * (new - 1) / (t_all - t_one), "end_to_end_tokens_per_s": batch * new / t_all,
            "seconds": t_all, "first_run_s": first, "tokens": tokens}


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
    remove_caches(model)
    return {"tokens": T, "seconds": t, "tflops": flops / t / 1e12, "flops_convention": "2N + 4*L*T*d per token"}


def free(*models) -> None:
    for m in models:
        if m is not None:
            release_decode_graphs(m)
            remove_caches(m)
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def memory_peak(model: Nemotron4, cfg: ModelConfig, kv_len: int, new: int) -> dict:
    """Peak GPU memory of generating into a kv_len-token cache (a kv_len - new token prompt, then new tokens, the
    compiled + graph path): the model's own weights and buffers plus the largest rise in allocated memory during
    the run. Other models may stay resident meanwhile: they are not counted, and the run does not touch them."""
    free(model)
    own = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    prompt = torch.randint(0, cfg.vocab_size, (kv_len - new,), generator=torch.Generator().manual_seed(2)).tolist()
    out = generate_tokens(model, [prompt], new, compile=True)[0]
    rise = torch.cuda.max_memory_allocated() - before
    free(model)
    return {"kv_cache_tokens": kv_len, "new_tokens": len(out), "weights_and_buffers_GiB": own / 2**30,
            "peak_rise_GiB": rise / 2**30, "peak_GiB": (own + rise) / 2**30, "fits_20GiB": own + rise <= 20 * 2**30,
            "note": "allocator numbers (weights + the largest rise during prefill and decode); the CUDA context "
                    "(about 0.5 GiB) comes on top"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="15b")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,8,32,64", help="batch sizes of the batched table")
    ap.add_argument("--batch-new-tokens", type=int, default=32, help="new tokens per row in the batched table")
    ap.add_argument("--prefill-len", type=int, default=4096)
    ap.add_argument("--kv-len", type=int, default=4096, help="cache length of the int8 memory measurement")
    ap.add_argument("--hf", choices=("full", "layers", "none"), default="full",
                    help="HF static-cache generate with HF's own whole-model compile and CUDA graphs (default: its "
                    "fastest path; 30-200 s of compile per batch size on an H200), with each decoder layer compiled "
                    "instead (no CUDA graphs: launch-bound, 41 tok/s at batch 1), or not at all")
    ap.add_argument("--skip", default="", help="comma list of: gemlite, torchao, batched, memory, cublas, prefill, "
                    "profile, autotune, nopdl, triton (int8 with the Triton GEMV instead of the CUDA one)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="wall-clock budget: a section that would not fit "
                    "in what is left is skipped (and says so in the JSON)")
    ap.add_argument("--tuned", help="comma list of bench/profile_decode.py --kernels JSON files: use their best "
                    "kernel configs")
    ap.add_argument("--device", default="cuda", help="cpu only to smoke-test this script with --model tiny")
    ap.add_argument("--out", default="bench/results/decode_h200.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    skip = set(filter(None, args.skip.split(",")))
    batches = [int(b) for b in args.batches.split(",") if b]
    global DEVICE
    DEVICE = args.device

    import torch._inductor.config as inductor

    inductor.triton.unique_kernel_names = True
    inductor.fx_graph_cache = True
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.tuned:
        from nemotron4.inference.triton_linear import load_tuned

        load_tuned(args.tuned.split(","))

    import transformers

    res: dict = {
        "bench": "decode", "command": " ".join(["python"] + sys.argv),
        "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "none (cpu)",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "model": args.model, "batch": 1, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "dtype": "bfloat16", "weights": "random (same tensors for all)", "skipped": {},
    }
    try:
        import triton

        res["triton"] = triton.__version__
    except ImportError:
        pass
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(res, indent=2, default=str) + "\n")

    def fits(section: str, estimate_s: float) -> bool:
        """Whether to run a section: not --skip'ped and (by its rough cost) inside the budget."""
        if section in skip:
            res["skipped"][section] = "--skip"
            return False
        left = args.budget_s - (time.perf_counter() - t_start)
        if left < estimate_s:
            res["skipped"][section] = f"budget: {left:.0f} s left, needs about {estimate_s:.0f} s"
            log(f"{section}: skipped, {res['skipped'][section]}")
            return False
        return True

    res["bandwidth"] = read_bandwidth()
    read_bw = res["bandwidth"]["read_GBps"] * 1e9
    log(f"HBM read {read_bw / 1e9:.0f} GB/s, copy {res['bandwidth']['copy_rw_GBps']:.0f} GB/s")
    cfg = ModelConfig.from_name(args.model)
    hf = hf_model(cfg)
    plain = ours_sharing(hf, cfg)
    bytes_per_token = bytes_read_per_token(plain)
    roofline = read_bw / bytes_per_token
    res.update(bytes_per_token=bytes_per_token, roofline_tokens_per_s=roofline)
    log(f"{args.model}: {plain.param_counts()['total'] / 1e9:.2f}B params, {bytes_per_token / 1e9:.2f} GB read per "
        f"token, roofline {roofline:.1f} tok/s")
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_len,), generator=g).tolist()
    with torch.no_grad():  # the same weights give the same next-token logits
        ids = torch.tensor([prompt], device=DEVICE)
        ref = hf(ids).logits[0, -1].float()
        mine = plain(ids)[0, -1].float()
    res["logits_rel_err_vs_hf"] = ((mine - ref).norm() / ref.norm()).item()
    log(f"last-position logits vs HF: rel err {res['logits_rel_err_vs_hf']:.2e}")
    del plain

    # --- batch 1: ours bf16 and int8 (the decode form: prepare_decode), the int8 peers ----------------------------
    def run_variant(key: str, model: Nemotron4, bytes_model: Nemotron4 | None = None) -> None:
        r = time_ours(model, prompt, args.new_tokens)
        r["bytes_per_token"] = bytes_read_per_token(bytes_model or model)
        r["roofline_fraction"] = r["tokens_per_s"] / (read_bw / r["bytes_per_token"])
        if key != "ours" and "tokens" in res.get("ours", {}):
            r["greedy_tokens_equal_ours_bf16"] = sum(a == b for a, b in zip(r["tokens"], res["ours"]["tokens"],
                                                                           strict=False))
        res[key] = r
        log(f"{key}: {r['tokens_per_s']:.1f} tok/s ({r['roofline_fraction']:.1%} of its roofline, first run "
            f"{r['first_run_s']:.0f} s, at {time.perf_counter() - t_start:.0f} s)")
        save()

    def tune(model: Nemotron4, key: str) -> None:
        if "autotune" in skip or DEVICE != "cuda":
            return
        from nemotron4.inference.quantize import autotune_model

        t0 = time.perf_counter()
        tuned = autotune_model(model)
        res.setdefault("autotuned", {}).update(tuned)
        log(f"{key}: autotuned {len(tuned)} shapes in {time.perf_counter() - t0:.1f} s: "
            + ", ".join(f"{k} {v['us']:.1f} us" for k, v in tuned.items()))

    ours = prepare_decode(ours_sharing(hf, cfg))  # fused QKV + the Triton GEMV on the bf16 weights
    tune(ours, "ours")
    run_variant("ours", ours)
    free(ours)
    int8 = prepare_decode(ours_sharing(hf, cfg), int8=True)
    free(int8)
    tune(int8, "ours_int8")
    run_variant("ours_int8", int8)
    free(int8)
    def run_peer(key: str) -> None:
        package, make = PEERS[key]
        if not fits(package, 90 if package == "torchao" else 60):
            res[key] = {"skipped": res["skipped"][package]}
            return
        try:
            __import__(package)
        except ImportError:
            res[key] = {"skipped": f"{package} is not installed (pip install {package})"}
            log(f"{key}: skipped, {package} is not installed")
            return
        peer = None
        try:  # the same decode loop and the same fused QKV projection: only the linears' kernels differ
            peer = make(fuse_qkv(ours_sharing(hf, cfg)))
            free()
            run_variant(key, peer, bytes_model=int8)  # roofline: the same int8 weight bytes as ours
        except Exception as e:  # report and go on: one peer failing should not lose the rest
            res[key] = {"error": f"{type(e).__name__}: {e}"[:500]}
            log(f"{key}: {res[key]['error']}")
        free(peer)
        del peer
        free()

    def ratios() -> None:
        for key, ratio in (("torchao_int8wo", "ours_int8_over_torchao"), ("gemlite_a16w8", "ours_int8_over_gemlite")):
            if "tokens_per_s" in res.get(key, {}):
                res[ratio] = res["ours_int8"]["tokens_per_s"] / res[key]["tokens_per_s"]
                log(f"{ratio}: {res[ratio]:.3f}")
            else:
                res[ratio] = None
        save()

    # the peers, then the int8 memory peak: the must-shows first, so that a tight --budget-s cuts the batched table
    # instead (torchao's first run compiles for about 70 s)
    run_peer("gemlite_a16w8")
    run_peer("torchao_int8wo")
    ratios()
    if DEVICE == "cuda" and fits("memory", 25):
        res["int8_memory"] = m = memory_peak(int8, cfg, args.kv_len, 32)
        log(f"int8 + {args.kv_len}-token cache: peak {m['peak_GiB']:.2f} GiB ({m['weights_and_buffers_GiB']:.2f} "
            f"weights and buffers + {m['peak_rise_GiB']:.2f} rise), fits 20 GiB: {m['fits_20GiB']}")
        save()

    # --- batched decode: ours bf16 and int8, then HF at the same batch sizes ---------------------------------------
    res["batched"] = {"new_tokens": args.batch_new_tokens, "prompt_len": args.prompt_len, "hf": args.hf,
                      "batch_1": f"the batch-1 runs above ({args.new_tokens} new tokens)", "rows": []}
    rows = {b: {"batch": b} for b in batches}
    res["batched"]["rows"] = list(rows.values())
    for b in batches:
        if b == 1:
            rows[b].update(bf16=res["ours"]["tokens_per_s"], int8=res["ours_int8"]["tokens_per_s"])
            continue
        if not fits(f"batched_{b}", 30):
            continue
        for name, model in (("bf16", ours), ("int8", int8)):
            try:
                rows[b][name] = time_ours(model, prompt, args.batch_new_tokens, batch=b, reps=2)["tokens_per_s"]
            except Exception as e:
                rows[b][name + "_error"] = f"{type(e).__name__}: {e}"[:300]
            free(model)
        log(f"batch {b}: ours bf16 {rows[b].get('bf16', 0):.0f} tok/s, int8 {rows[b].get('int8', 0):.0f} tok/s "
            f"(at {time.perf_counter() - t_start:.0f} s)")
        save()
    if args.hf != "none":
        dynamo = torch._dynamo.config
        # one compiled graph per decoder layer (HF's layer_idx is a constant of each) and batch size: 32 x 4 graphs;
        # past the recompile limit dynamo would quietly run the rest eagerly
        dynamo.recompile_limit = max(dynamo.recompile_limit, 1024)
        dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4096)
        if args.hf == "layers":
            # static shapes: automatic dynamic (compile()) made HF's batch-1 decode 36 tok/s on the H200 (session 4)
            compile_hf_decode_layers(hf)
        for b in batches:
            res["batched"]["hf_in_progress"] = b  # what a run cut off by a time limit was doing
            save()
            if not fits(f"hf_{b}", HF_COMPILE_S[args.hf] if b == batches[0] else HF_COMPILE_S[args.hf] // 2):
                continue
            new = args.new_tokens if b == 1 else args.batch_new_tokens
            try:
                r = time_hf(hf, prompt, new, args.hf, batch=b, reps=3 if b == 1 else 2)
            except Exception as e:  # report and go on: HF's compiled paths have crashed on this GPU before
                r = {"error": f"{type(e).__name__}: {e}"[:500]}
            if b == 1:
                if "tokens" in r:
                    r["greedy_tokens_equal_ours"] = sum(a == c for a, c in zip(r["tokens"], res["ours"]["tokens"],
                                                                               strict=False))
                res["hf"] = {**r, "mode": args.hf}
            rows[b]["hf_bf16"] = r.get("tokens_per_s")
            log(f"HF ({args.hf}) batch {b}: " + (f"{r['tokens_per_s']:.0f} tok/s" if "tokens_per_s" in r
                                                  else r["error"]) + f" (at {time.perf_counter() - t_start:.0f} s)")
            gc.collect()
            torch.cuda.empty_cache()
            save()
    for row in rows.values():
        if row.get("hf_bf16"):
            for name in ("bf16", "int8"):
                if name in row:
                    row[f"{name}_over_hf"] = row[name] / row["hf_bf16"]
    res["batched"].pop("hf_in_progress", None)
    if "tokens_per_s" in res.get("hf", {}):
        res["ratio_ours_to_hf"] = res["ours"]["tokens_per_s"] / res["hf"]["tokens_per_s"]
    save()

    from nemotron4.inference import triton_linear

    def run_switched_off(switch: str, key: str) -> None:
        """The int8 model once more with one of triton_linear's switches off: what that switch buys."""
        setattr(triton_linear, switch, False)
        try:
            run_variant(key, int8)
        finally:
            setattr(triton_linear, switch, True)
            free(int8)

    res["pdl"] = triton_linear.PDL  # False if this Triton/driver refused programmatic dependent launch
    if DEVICE == "cuda" and triton_linear.PDL and fits("nopdl", 20):  # plain launches: what PDL buys
        run_switched_off("PDL", "ours_int8_no_pdl")
    if DEVICE == "cuda":  # which kernel served each int8 batch-1 shape (an autotuned config may be either)
        from nemotron4.inference import cuda_gemv as cg
        from nemotron4.inference.quantize import Int8Linear

        why = cg.unavailable(torch.cuda.current_device())
        cuda_gemv = triton_linear.CUDA_GEMV and why is None
        res["cuda_gemv"] = {"on": cuda_gemv, "why_not": why if triton_linear.CUDA_GEMV else "NEMOTRON4_CUDA_GEMV=0",
                            "int8_batch1_configs": {
                                f"{N},{K}": triton_linear.config_for(1, N, K, True, cuda=cuda_gemv).label()
                                for N, K in sorted({tuple(m.weight.shape) for m in int8.modules()
                                                    if isinstance(m, Int8Linear)})}}
        log(f"int8 batch-1 kernels: {res['cuda_gemv']['int8_batch1_configs']}")
    else:
        cuda_gemv = False
    if DEVICE == "cuda" and cuda_gemv and fits("triton", 20):  # what the CUDA GEMV buys: Triton at every shape
        run_switched_off("CUDA_GEMV", "ours_int8_triton")

    # --- the rest, as time allows: memory, the plain (cuBLAS) bf16 model, prefill, a kernel profile ----------------
    if DEVICE == "cuda" and fits("profile", 15):
        res["int8_kernel_profile"] = prof = profile_kernels(int8, prompt, steps=args.new_tokens)
        log(f"int8 step kernels: {prof['wall_us_per_token']:.0f} us of GPU wall time per token; top (marginal): "
            + "; ".join(f"{r['kernel'][:40]} {r['marginal_us_per_token']:.0f} us x{r['calls_per_token']:.0f}"
                        for r in prof["top"][:8]))
        free(int8)
        save()
    if DEVICE == "cuda" and fits("kernels", 20):
        try:
            res["kernels"] = kernel_table([ours, int8], read_bw, args.prompt_len + args.new_tokens)
        except Exception as e:
            res["kernels"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        save()
    if fits("cublas", 35):
        plain = ours_sharing(hf, cfg)
        run_variant("ours_cublas", plain)
        free(plain)
        del plain
    if fits("prefill", 15):
        res["prefill"] = prefill_tflops(ours, cfg, args.prefill_len)
        log(f"bf16 prefill {args.prefill_len}: {res['prefill']['tflops']:.0f} TFLOP/s")


    for v in res.values():
        if isinstance(v, dict):
            v.pop("tokens", None)
    res["wall_s"] = time.perf_counter() - t_start
    res["notes"] = (
        "ours = prepare_decode (fused QKV projection, squared ReLU inside w1's kernel, every linear through the "
        "Triton GEMV (bf16) or, for int8 at batch 1, the CUDA GEMV where cuda_gemv.on (else Triton), the residual "
        "adds inside fused add + LayerNorm kernels, one split-KV decode attention kernel (+ combine) per layer "
        "with RoPE and the cache write fused, launched with programmatic dependent launch when pdl is true); "
        "ours_cublas "
        "= the plain model (cuBLAS linears). tokens_per_s = batch x "
        "(new - 1) / (time(new) - time(1 new)), median of 3 (batched rows: 2) after a warm-up run; roofline = "
        "measured HBM read bandwidth (sum over 8 GiB bf16) / bytes read per token (the peers: our int8 bytes). "
        "Peers run in our decode loop (per-block compile + one CUDA graph per step) on the same fused QKV "
        "projection with the model's own norms and attention (Inductor-compiled, SDPA), i.e. without our fused "
        "norm and attention kernels. "
        + ("HF: one StaticCache per batch size (prompt + new slots, reused by the timed calls), each decoder "
           "layer's decode call torch.compile'd with static shapes (dynamic=False), the prefill eager, no CUDA graphs "
           "(HF's whole-model compile costs minutes per batch size). " if args.hf == "layers" else "")
        + ("HF: generate with one StaticCache per batch size (prompt + new slots, reused by the timed calls), which "
           "HF's generate compiles whole with CUDA graphs (its auto-compile for static caches). "
           if args.hf == "full" else ""))
    save()
    log("\n| run (batch 1) | tokens/s | roofline | ours int8 vs it |\n|---|---|---|---|")
    for k in ("ours", "ours_cublas", "ours_int8", "ours_int8_no_pdl", "ours_int8_triton", "gemlite_a16w8",
              "torchao_int8wo", "hf"):
        r = res.get(k, {})
        if "tokens_per_s" in r:
            frac = r.get("roofline_fraction", r["tokens_per_s"] / roofline)
            vs = res["ours_int8"]["tokens_per_s"] / r["tokens_per_s"]
            log(f"| {k} | {r['tokens_per_s']:.1f} | {frac:.1%} | {vs:.2f}x |")
    log("\n| batch | ours bf16 | ours int8 | HF bf16 (static cache, compiled) | bf16 / HF | int8 / HF |\n"
        "|---|---|---|---|---|---|")

    def cell(v, fmt="{:.0f}"):
        return fmt.format(v) if isinstance(v, (int, float)) else "-"

    for row in rows.values():
        log(f"| {row['batch']} | {cell(row.get('bf16'))} | {cell(row.get('int8'))} | {cell(row.get('hf_bf16'))} | "
            f"{cell(row.get('bf16_over_hf'), '{:.2f}x')} | {cell(row.get('int8_over_hf'), '{:.2f}x')} |")
    if "linears_batch_1" in res.get("kernels", {}):
        log("\n| decode linear (batch 1) | weights | us | of read BW | config |\n|---|---|---|---|---|")
        for r in res["kernels"]["linears_batch_1"]:
            c = r["config"]
            log(f"| {r['N']} x {r['K']} | {'int8' if r['int8'] else 'bf16'} | {r['us']:.1f} | {r['of_read_bw']:.1%} "
                f"| {c['block_n']}x{c['block_k']} s{c['split_k']} w{c['num_warps']} st{c['num_stages']} "
                f"c{c['convert']} |")
        log("\n| attention, one layer, batch 1 | us |\n|---|---|")
        for name, r in res["kernels"]["attention_one_layer"].items():
            if isinstance(r, dict):
                log(f"| {name} | " + (f"{r['us']:.1f} (rel err {r['rel_err_vs_model_call']:.1e})" if "us" in r
                                      else r["error"]) + " |")
    if res["skipped"]:
        log(f"skipped: {res['skipped']}")


if __name__ == "__main__":
    main()
