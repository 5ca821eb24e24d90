"""Triton kernels for decode-time linears y = (x @ W^T) * scale, W in the nn.Linear layout (out, in).

W is int8 (weight-only quantized, one scale per output row, applied in the epilogue) or bf16/fp16 (no scale). Two
kernels, both reading W once and in 16-byte vectors along K (contiguous rows):

- `gemv`: M = 1. Each program owns BLOCK_N output rows and a K range (split-K); it accumulates BLOCK_N x BLOCK_K
  products elementwise in fp32 registers and reduces once at the end, so the loop is loads, conversions and FMAs.
  int8 -> fp32 by the exponent trick (int32(w) + 0x4B000080 read as fp32 is 2^23 + 128 + w, exact), which is
  integer adds instead of the slow int-to-float conversion unit.
- `small_m`: 2 <= M <= 64 (batched decode). tl.dot on BLOCK_M (16..64) x BLOCK_N x BLOCK_K tiles; W dequantised
  to the activation dtype in registers.

Split-K > 1 writes fp32 partials (SPLIT_K, M, N) that are summed afterwards. Triton is imported lazily: the CPU
path (nemotron4.inference.quantize) never needs it; under TRITON_INTERPRET=1 the kernels run on CPU for tests.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

L2_PREFETCH_CHUNK = 2048  # bytes of each row one prefetch step covers (a power of 2: one tl.arange of lines)
CUDA_ROW_STEP = 512  # bytes of a row one warp of the CUDA kernel reads per vector step (32 lanes x 16 bytes)


@dataclass(frozen=True)
class KernelConfig:
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 1
    block_m: int = 16  # small_m only
    convert: int = 1  # gemv only, int8: 0 = plain cast, 1 = exponent trick, 2 = the trick in PTX (GPU only)
    l2_prefetch: int = 0  # gemv only (GPU only): bytes of each row prefetched into L2 before the PDL wait
    # "cuda": batch 1, int8, bf16 only: nemotron4.inference.cuda_gemv's CUDA C++ kernel (needs cuda-bindings), with
    # block_n rows a block, num_warps warps (block_n / num_warps rows a warp) and block_k = 512 x the 16-byte
    # vectors each lane keeps in flight per row; num_stages=2 loads the next batch while multiplying this one (the
    # first before the PDL wait)
    backend: str = "triton"

    def __post_init__(self) -> None:
        pf = self.l2_prefetch
        lines = pf // 128
        if pf < 0 or pf % 128 or (pf < L2_PREFETCH_CHUNK and lines & (lines - 1)) or (
                pf > L2_PREFETCH_CHUNK and pf % L2_PREFETCH_CHUNK):
            raise ValueError(f"KernelConfig: l2_prefetch={pf} must be 0, 128 bytes times a power of 2 up to "
                             f"{L2_PREFETCH_CHUNK}, or a multiple of {L2_PREFETCH_CHUNK}")
        if self.backend not in ("triton", "cuda"):
            raise ValueError(f"KernelConfig: backend={self.backend!r} must be 'triton' or 'cuda'")
        if self.backend == "cuda" and (self.split_k != 1 or self.l2_prefetch or self.block_n % self.num_warps
                                       or self.block_k % CUDA_ROW_STEP or self.num_stages not in (1, 2)):
            raise ValueError(f"KernelConfig: a 'cuda' config needs split_k=1, l2_prefetch=0, num_stages 1 or 2, "
                             f"block_n a multiple of num_warps and block_k of {CUDA_ROW_STEP}; got {self}")

    def label(self) -> str:
        """This config in a few characters: rows x K step, split, warps, stages, rows per tl.dot tile, conversion,
        L2 prefetch, and the backend when it is not Triton."""
        return (f"{self.block_n}x{self.block_k} s{self.split_k} w{self.num_warps} st{self.num_stages} "
                f"bm{self.block_m} c{self.convert}" + (f" pf{self.l2_prefetch}" if self.l2_prefetch else "")
                + (f" {self.backend}" if self.backend != "triton" else ""))


# Programmatic dependent launch (Hopper and later): a kernel's grid is launched while the kernel before it in the
# stream is still running, and waits (griddepcontrol.wait, before its first load) for that kernel's results, so the
# launch latency between a decode step's small kernels overlaps work. Set False to launch plainly; `launch` turns it
# off by itself if this Triton or driver refuses it.
PDL = True
# gemv: load each program's next weight tile one step ahead, the first before the PDL wait (weights do not depend
# on the kernel before). Off: on the H200 (session 5, bench/profile_decode.py --ops) it made the int8 kernels read
# 41-53% of the bandwidth instead of 68-97% and the bf16 ones 0-10% slower; int8 decode fell from 216 to 126 tok/s.
# NEMOTRON4_PREFETCH=1 turns it on.
PREFETCH = os.environ.get("NEMOTRON4_PREFETCH", "0") == "1"


def pdl_enabled(device: torch.device) -> bool:
    if not (PDL and os.environ.get("NEMOTRON4_PDL", "1") != "0" and device.type == "cuda"
            and os.environ.get("TRITON_INTERPRET", "0") != "1" and torch.cuda.get_device_capability(device)[0] >= 9):
        return False
    from nemotron4.inference._pdl import HAS_PDL  # the kernels' waits exist (else they are no-ops: no PDL)

    return HAS_PDL


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    from nemotron4.inference._pdl import gdc_launch_dependents, gdc_wait

    @triton.jit
    def gemv_kernel(x_ptr, w_ptr, s_ptr, y_ptr, N, K, stride_wn, K_SPLIT: tl.constexpr,
                    HAS_SCALE: tl.constexpr, CONVERT: tl.constexpr, PARTIAL: tl.constexpr, EVEN_N: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr, OUT_ACT: tl.constexpr,
                    PREFETCH: tl.constexpr = False, L2_PREFETCH: tl.constexpr = 0, L2_CHUNK: tl.constexpr = 2048):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        k0 = pid_k * K_SPLIT
        rows = offs_n if EVEN_N else tl.minimum(offs_n, N - 1)  # clamp instead of masking: loads stay vectors
        w_ptrs = w_ptr + rows.to(tl.int64)[:, None] * stride_wn + (k0 + offs_k)[None, :]
        x_ptrs = x_ptr + k0 + offs_k
        if L2_PREFETCH > 0:  # ask L2 for the start of each row (one prefetch per 128-byte line) while the kernel
            # before finishes: the weights do not depend on it, and nothing waits on these (no registers held)
            for c in tl.static_range(0, L2_PREFETCH, L2_CHUNK):
                lines = (w_ptr + rows.to(tl.int64)[:, None] * stride_wn + k0 + c
                         + (tl.arange(0, L2_CHUNK // 128) * 128)[None, :])
                tl.inline_asm_elementwise("mov.b32 $0, 0; prefetch.global.L2 [$1];", "=r,l", [lines],
                                          dtype=tl.int32, is_pure=False, pack=1)
        if PREFETCH:  # the first weight tile does not depend on the kernel before: load it before the wait
            w_next = tl.load(w_ptrs, eviction_policy="evict_first")
        if USE_PDL:  # wait for the kernel before (x, and the memory y may reuse); let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for i in range(0, K_SPLIT, BLOCK_K):
            if PREFETCH:
                w = w_next
                if i + BLOCK_K < K_SPLIT:
                    w_next = tl.load(w_ptrs + BLOCK_K, eviction_policy="evict_first")
            else:
                w = tl.load(w_ptrs, eviction_policy="evict_first")
            x = tl.load(x_ptrs, eviction_policy="evict_last").to(tl.float32)
            if CONVERT == 1:
                wf = (w.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0
            elif CONVERT == 2:  # the same trick on 4 packed bytes: one xor, then one byte permute per element
                wf = tl.inline_asm_elementwise(
                    "{ .reg .b32 t; xor.b32 t, $4, 0x80808080; prmt.b32 $0, t, 0x4B000000, 0x7540; "
                    "prmt.b32 $1, t, 0x4B000000, 0x7541; prmt.b32 $2, t, 0x4B000000, 0x7542; "
                    "prmt.b32 $3, t, 0x4B000000, 0x7543; }",
                    "=r,=r,=r,=r,r", [w], dtype=tl.float32, is_pure=True, pack=4) - 8388736.0
            else:
                wf = w.to(tl.float32)
            acc += wf * x[None, :]
            w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K
        y = tl.sum(acc, axis=1)
        if HAS_SCALE:
            y = y * tl.load(s_ptr + rows).to(tl.float32)
        n_mask = offs_n < N
        if PARTIAL:
            tl.store(y_ptr + pid_k * N + offs_n, y, mask=n_mask)
        else:
            y = y.to(y_ptr.dtype.element_ty)
            if OUT_ACT == 1:  # squared ReLU of the rounded output, rounded again: the unfused relu().square()
                yr = tl.maximum(y.to(tl.float32), 0.0)
                y = (yr * yr).to(y_ptr.dtype.element_ty)
            tl.store(y_ptr + offs_n, y, mask=n_mask)

    @triton.jit
    def small_m_kernel(x_ptr, w_ptr, s_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym, K_SPLIT: tl.constexpr,
                       HAS_SCALE: tl.constexpr, PARTIAL: tl.constexpr, EVEN_N: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr,
                       OUT_ACT: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        pid_m = tl.program_id(2)
        if USE_PDL:
            gdc_wait()
            gdc_launch_dependents()
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        k0 = pid_k * K_SPLIT
        rows = offs_n if EVEN_N else tl.minimum(offs_n, N - 1)
        m_mask = offs_m < M
        x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + (k0 + offs_k)[None, :]
        w_ptrs = w_ptr + rows.to(tl.int64)[None, :] * stride_wn + (k0 + offs_k)[:, None]  # (BLOCK_K, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for _ in range(0, K_SPLIT, BLOCK_K):
            x = tl.load(x_ptrs, mask=m_mask[:, None], other=0.0)
            w = tl.load(w_ptrs, eviction_policy="evict_first")
            acc = tl.dot(x, w.to(x.dtype), acc)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        if HAS_SCALE:
            acc = acc * tl.load(s_ptr + rows).to(tl.float32)[None, :]
        mask = m_mask[:, None] & (offs_n < N)[None, :]
        if PARTIAL:
            tl.store(y_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask)
        else:
            y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
            y = acc.to(y_ptr.dtype.element_ty)
            if OUT_ACT == 1:
                yr = tl.maximum(y.to(tl.float32), 0.0)
                y = (yr * yr).to(y_ptr.dtype.element_ty)
            tl.store(y_ptrs, y, mask=mask)

    return gemv_kernel, small_m_kernel


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def default_config(M: int, N: int, K: int, int8: bool) -> KernelConfig:
    """A config for this shape: the winners of bench/profile_decode.py --kernels and of bench/decode.py's autotune
    on an H200 at the 15B model's shapes (bench/results/decode_kernels_h200.json, decode_h200_s8.json), generalised
    by size."""
    if M == 1:
        if not int8:
            return KernelConfig(block_n=8, block_k=256) if N * K >= 1 << 24 else KernelConfig(block_n=4, block_k=512)
        pf = 2048 if K >= 2048 else 0
        if N * K < 1 << 24 or K > 3 * N:  # few rows or long rows: 2 rows per program, long K steps
            block_k = next((b for b in (2048, 1024, 512) if K % b == 0), 256)
            return KernelConfig(block_n=4096 // block_k, block_k=block_k, convert=2,
                                l2_prefetch=pf if K > 3 * N else 0)
        if N >= 16 * K:  # the output projection
            return KernelConfig(block_n=8, block_k=512, convert=2, l2_prefetch=pf)
        return KernelConfig(block_n=4, block_k=1024, convert=2, l2_prefetch=pf)
    wide = N >= 4 * K  # many rows: wide tiles
    if M <= 16:
        if N * K < 1 << 24 or K > 3 * N:
            return KernelConfig(block_n=32, block_k=256, split_k=2, num_stages=4, block_m=16)
        return KernelConfig(block_n=64 if wide else 32, block_k=128 if wide else 256, num_stages=4, block_m=16)
    if M <= 32:
        return KernelConfig(block_n=64 if wide else 32, block_k=128 if wide else 256, num_stages=4, block_m=32)
    return KernelConfig(block_n=128 if wide else 64, block_k=128 if wide else 256, num_warps=8, num_stages=3,
                        block_m=64)


# Per (M, N, K, int8) overrides, filled by a tuning run (bench/profile_decode.py) or by callers.
CONFIGS: dict[tuple[int, int, int, bool], KernelConfig] = {}


def load_configs(best: dict[str, dict]) -> None:
    """Install tuned configs: {"M,N,K,int8": {"config": KernelConfig fields}} (bench/profile_decode.py --kernels)."""
    for key, entry in best.items():
        m, n, k, int8 = key.split(",")
        CONFIGS[int(m), int(n), int(k), int8 == "True"] = KernelConfig(**entry["config"])


def load_tuned(paths: list[str]) -> None:
    """Install the best config per shape over one or more bench/profile_decode.py --kernels JSON files."""
    import json
    from pathlib import Path

    merged: dict[str, dict] = {}
    for path in paths:
        for key, entry in json.loads(Path(path).read_text())["best"].items():
            if key not in merged or entry["us"] < merged[key]["us"]:
                merged[key] = entry
    load_configs(merged)


# The CUDA C++ GEMV (nemotron4.inference.cuda_gemv) is the default for batch-1 int8 decode wherever it can serve
# (`cuda_serves`): in the 15B decode step on an H200 it gave 8% more tokens/s than the Triton kernel in the same run
# (250.9 against 231.9, bench/results/decode_h200_s10.json), with per-shape configs chosen in that step. Read at
# import: NEMOTRON4_CUDA_GEMV=0 keeps Triton.
CUDA_GEMV = os.environ.get("NEMOTRON4_CUDA_GEMV", "1") != "0"


def cuda_default_config(N: int, K: int) -> KernelConfig | None:
    """The CUDA GEMV's config for a batch-1 int8 (N, K) linear, or None where it cannot serve: the winners in the
    real 15B decode step (decode_h200_s10_insitu2.json, one shape changed at a time), generalised by size."""
    from nemotron4.inference.cuda_gemv import VECTOR

    if K % VECTOR:
        return None
    if N >= 16 * K:  # the output projection: 2 rows a warp, one vector in flight
        cfg = KernelConfig(4, 512, num_warps=2, backend="cuda")
    elif K > 3 * N:  # long rows (w2): 1 row a warp, 2 vectors in flight, the next pair loaded while using these
        cfg = KernelConfig(2, 1024, num_warps=2, num_stages=2, backend="cuda")
    elif N * K < 1 << 26:  # the small projections: qkv (more rows than K) and wo
        cfg = (KernelConfig(4, 1024, num_warps=2, num_stages=2, backend="cuda") if N > K
               else KernelConfig(4, 512, num_warps=2, backend="cuda"))
    else:  # w1
        cfg = KernelConfig(2, 1024, num_warps=2, backend="cuda")
    return cfg if N % cfg.block_n == 0 else None


def config_for(M: int, N: int, K: int, int8: bool, cuda: bool = False) -> KernelConfig:
    """The installed override for this shape, else the default; cuda: whether the CUDA GEMV may serve the call
    (`cuda_serves`). An installed 'cuda' config applies only where it may; elsewhere the Triton default serves."""
    cfg = CONFIGS.get((M, N, K, int8))
    if cfg is not None and (cfg.backend != "cuda" or (cuda and N % cfg.block_n == 0)):
        return cfg
    return (cuda_default_config(N, K) if cuda and M == 1 and int8 else None) or default_config(M, N, K, int8)


def cuda_serves(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor | None) -> bool:
    """Whether the CUDA GEMV may take this call (`CUDA_GEMV`, `cuda_gemv.problem` finds nothing, and the kernel
    compiles and loads on this GPU; if it does not, a warning says why, once, and Triton serves)."""
    if not (CUDA_GEMV and x.is_cuda):
        return False
    from nemotron4.inference import cuda_gemv

    if cuda_gemv.problem(x, w, scales) is not None:
        return False
    why = cuda_gemv.unavailable(x.device.index)
    if why is None:
        return True
    _say_triton_serves(why)
    return False


@functools.cache
def _say_triton_serves(why: str) -> None:  # once a process for each reason
    import warnings

    warnings.warn(f"nemotron4: int8 batch-1 decode runs the Triton GEMV: the CUDA GEMV cannot run here ({why}). "
                  "pip install 'nemotron4[cuda]' for it (8% more tokens/s on an H200), or set NEMOTRON4_CUDA_GEMV=0 "
                  "to choose Triton quietly", stacklevel=4)


def chosen_config(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor | None) -> KernelConfig:
    """The config `triton_linear(x, w, scales)` runs for x (M, K) when given none."""
    return config_for(x.shape[0], w.shape[0], w.shape[1], w.dtype == torch.int8, cuda_serves(x, w, scales))


def fits(cfg: KernelConfig, K: int) -> bool:
    if cfg.backend == "cuda":  # the CUDA kernel steps through a row in 16-byte vectors, the last step partial
        from nemotron4.inference.cuda_gemv import VECTOR

        return K % VECTOR == 0
    return K % (cfg.block_k * cfg.split_k) == 0 and cfg.l2_prefetch <= K // cfg.split_k


# An elementwise function of a linear's output, applied in the kernels' epilogues (Triton's and the CUDA GEMV's
# OUT_ACT macro); `apply_out_act` is the same in torch.
OUT_ACT_NONE, OUT_ACT_SQUARED_RELU = 0, 1
OUT_ACTS = {"none": OUT_ACT_NONE, "squared_relu": OUT_ACT_SQUARED_RELU}


def apply_out_act(y: torch.Tensor, out_act: int) -> torch.Tensor:
    """The epilogue's function in torch: y, or (OUT_ACT_SQUARED_RELU) the squared ReLU of the model's FeedForward."""
    if out_act not in OUT_ACTS.values():
        raise ValueError(f"unknown out_act {out_act}; one of {OUT_ACTS}")
    return torch.relu(y).square() if out_act == OUT_ACT_SQUARED_RELU else y


def triton_linear(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor | None,
                  cfg: KernelConfig | None = None, out_act: int = 0) -> torch.Tensor:
    """y = act((x @ w.T) * scales) for x (M, K) with M <= 64, w (N, K) int8 or floating, scales (N,) or None;
    act per OUT_ACTS (0: none; 1: relu(y)^2 of y rounded to x's dtype, rounded again), in the kernel's epilogue
    (after the split-K sum when there are partials)."""
    if out_act not in OUT_ACTS.values():
        raise ValueError(f"triton_linear: unknown out_act {out_act}; one of {OUT_ACTS}")
    M, K = x.shape
    N = w.shape[0]
    int8 = w.dtype == torch.int8
    cfg = cfg or chosen_config(x, w, scales)
    if not fits(cfg, K):
        if cfg.backend == "cuda":
            raise ValueError(f"triton_linear: K={K} is not a multiple of the CUDA kernel's 16-byte vector")
        raise ValueError(f"triton_linear: K={K} is not a multiple of block_k*split_k={cfg.block_k * cfg.split_k}"
                         f" or is shorter than l2_prefetch*split_k={cfg.l2_prefetch * cfg.split_k}")
    if cfg.backend == "cuda":
        from nemotron4.inference import cuda_gemv

        x = x.contiguous()
        why = cuda_gemv.problem(x, w, scales, cfg.block_n)
        if why:
            raise ValueError(f"triton_linear: a 'cuda' KernelConfig cannot serve this call: it {why}")
        return cuda_gemv.launch(x, w, scales, rows=cfg.block_n // cfg.num_warps,
                                unroll=cfg.block_k // CUDA_ROW_STEP, warps=cfg.num_warps, out_act=out_act,
                                use_pdl=pdl_enabled(x.device), stages=cfg.num_stages)
    gemv_kernel, small_m_kernel = _kernels()
    x = x.contiguous()
    partial = cfg.split_k > 1
    y = (torch.empty(cfg.split_k, M, N, device=x.device, dtype=torch.float32) if partial
         else torch.empty(M, N, device=x.device, dtype=x.dtype))
    s = scales if scales is not None else w  # a dummy pointer when there is no scale
    k_split = K // cfg.split_k
    if M == 1:
        grid = (_cdiv(N, cfg.block_n), cfg.split_k)
        launch(gemv_kernel, grid, x.device, x, w, s, y, N, K, w.stride(0), k_split, HAS_SCALE=scales is not None,
                CONVERT=cfg.convert if int8 else 0, PARTIAL=partial, EVEN_N=N % cfg.block_n == 0,
                BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                OUT_ACT=out_act, PREFETCH=PREFETCH, L2_PREFETCH=cfg.l2_prefetch,
                L2_CHUNK=min(cfg.l2_prefetch, L2_PREFETCH_CHUNK) or L2_PREFETCH_CHUNK)
    else:
        grid = (_cdiv(N, cfg.block_n), cfg.split_k, _cdiv(M, cfg.block_m))
        launch(small_m_kernel, grid, x.device, x, w, s, y, M, N, K, x.stride(0), w.stride(0), N, k_split,
                HAS_SCALE=scales is not None, PARTIAL=partial, EVEN_N=N % cfg.block_n == 0, BLOCK_M=cfg.block_m,
                BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                OUT_ACT=out_act)
    if not partial:
        return y
    return apply_out_act(y.sum(0).to(x.dtype), out_act)


def launch(kernel, grid, device: torch.device, *args, **kwargs) -> None:
    """Launch with programmatic dependent launch where it is on; a Triton that refuses it (an unknown launch
    option, no griddepcontrol) turns PDL off for the process and the kernel launches plainly."""
    global PDL
    if not pdl_enabled(device):
        kernel[grid](*args, **kwargs, USE_PDL=False)
        return
    try:
        kernel[grid](*args, **kwargs, USE_PDL=True, launch_pdl=True)
        return
    except Exception as e:
        if torch.cuda.is_current_stream_capturing():
            raise
        pdl_error = e
    kernel[grid](*args, **kwargs, USE_PDL=False)  # raises if the config itself is the problem
    import warnings

    warnings.warn(f"triton_linear: programmatic dependent launch refused ({type(pdl_error).__name__}: "
                  f"{str(pdl_error)[:200]}); launching without it", stacklevel=2)
    PDL = False


# Candidates for `autotune` at batch 1 (the winners' neighbourhood in bench/results/decode_kernels_h200.json and
# decode_h200_s8.json), the best three also with an L2 prefetch of each row's first 2 KB before the PDL wait (it won
# at 4 of the 15B model's 5 int8 shapes in s8) and two with 4 KB (slower in the real decode step in s9:
# decode_h200_s9_sweep.json).
TUNE_CANDIDATES = {
    True: [KernelConfig(8, 512, convert=2), KernelConfig(4, 1024, convert=2),
           KernelConfig(4, 1024, num_stages=3, convert=2), KernelConfig(2, 2048, convert=2),
           KernelConfig(4, 2048, convert=2), KernelConfig(8, 512, convert=2, l2_prefetch=2048),
           KernelConfig(4, 1024, convert=2, l2_prefetch=2048), KernelConfig(2, 2048, convert=2, l2_prefetch=2048),
           KernelConfig(8, 512, convert=2, l2_prefetch=4096), KernelConfig(4, 1024, convert=2, l2_prefetch=4096)],
    False: [KernelConfig(8, 256), KernelConfig(4, 512), KernelConfig(8, 512)],
}


# CUDA C++ kernel configs (nemotron4.inference.cuda_gemv): those `cuda_default_config` uses and their neighbours in
# the s10 sweeps (decode_h200_s10_cuda_gemv.json, decode_h200_s10_insitu2.json). `autotune` at batch 1 times them
# beside TUNE_CANDIDATES where the CUDA GEMV serves.
CUDA_CANDIDATES = [KernelConfig(2, 1024, num_warps=2, backend="cuda"),
                   KernelConfig(2, 1024, num_warps=2, num_stages=2, backend="cuda"),
                   KernelConfig(4, 512, num_warps=2, backend="cuda"),
                   KernelConfig(4, 1024, num_warps=2, backend="cuda"),
                   KernelConfig(4, 1024, num_warps=2, num_stages=2, backend="cuda")]


def graph_time(fn, copies: int, reps: int = 5) -> float:
    """Seconds per fn(i) call, i cycling over `copies` weight copies (so that none sits in L2), replayed from one
    CUDA graph; the median of `reps` replays."""
    calls = max(copies, 16)
    fn(0)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(i % copies)
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / calls)
    return sorted(times)[len(times) // 2]


def random_linear_case(M: int, N: int, K: int, int8: bool, device: str | torch.device,
                       generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
    """Random bf16 input (M, K), copies of one random (N, K) weight (int8 with bf16 per-row scales, or bf16) that
    together span ~400 MB (at most 16), so that timing replays read each weight from HBM, not L2; and the scales
    (None for bf16)."""
    x = torch.randn(M, K, device=device, dtype=torch.bfloat16, generator=generator)
    if int8:
        w = torch.randint(-127, 128, (N, K), device=device, dtype=torch.int8, generator=generator)
        s = torch.rand(N, device=device, generator=generator).to(torch.bfloat16) * 0.01
    else:
        w, s = torch.randn(N, K, device=device, dtype=torch.bfloat16, generator=generator), None
    copies = [w] + [w.clone() for _ in range(max(1, min(16, -(-(400 << 20) // w.nbytes))) - 1)]
    return x, copies, s


def autotune(M: int, N: int, K: int, int8: bool, candidates: list[KernelConfig] | None = None,
             device: str = "cuda") -> dict[KernelConfig, float]:
    """Time the candidate configs (TUNE_CANDIDATES, with CUDA_CANDIDATES where the CUDA GEMV serves) on random
    weights of this shape (CUDA graphs over ~400 MB of weight copies), install the fastest in CONFIGS (kept for the
    process: a shape is tuned once) and return seconds per config."""
    key = (M, N, K, int8)
    g = torch.Generator(device=device).manual_seed(N * 31 + K)
    x, copies, s = random_linear_case(M, N, K, int8, device, g)
    if candidates is None:
        candidates = TUNE_CANDIDATES[int8] + (CUDA_CANDIDATES if cuda_serves(x, copies[0], s) else [])
    candidates = [c for c in candidates if fits(c, K) and (c.backend != "cuda" or N % c.block_n == 0)]
    times = {}
    for cfg in candidates:
        try:
            times[cfg] = graph_time(lambda i, cfg=cfg: triton_linear(x, copies[i], s, cfg), len(copies))
        except Exception:  # a config that does not compile on this GPU is not a candidate
            continue
    if times:
        CONFIGS[key] = min(times, key=times.get)
    return times
