"""A CUDA C++ int8 weight-only GEMV for batch-1 decode: y = act((x @ W^T) * scale), x (1, K) bf16, W (N, K) int8
in the nn.Linear layout, one bf16 scale per output row. `triton_linear.triton_linear` calls it for a
`KernelConfig(backend="cuda")`, which is the default for such calls (`triton_linear.cuda_serves`).

Each warp owns rows_per_warp rows; each lane reads 16-byte vectors of a row (`unroll` of them in flight per row,
`ld.global.nc.L1::no_allocate`) and the matching 16 values of x from global memory (through L1), turns int8 into
fp32 by the exponent trick (a byte permute into 0x4B0000xx, then subtract 2^23 + 128: two instructions instead of
the slow int-to-float unit), accumulates with fp32 FMAs, and reduces each row once with warp shuffles; the scale,
the bf16 rounding and the optional squared ReLU (of the rounded output, rounded again) come last. With programmatic
dependent launch the kernel waits (griddepcontrol.wait) before its first read of x and lets the next kernel launch.
With stages=2 each lane's next batch of weight vectors is loaded while the current one is multiplied, the first
batch before the PDL wait (the weights do not depend on the kernel before); stages=1 loads a batch, then uses it.

On an H200 it reads the 15B model's int8 weights 5-11% faster than the Triton kernel at every batch-1 shape (4.52
TB/s for the output projection; bench/cuda_gemv.py, bench/results/decode_h200_s10_cuda_gemv.json), and the int8
decode step runs 8% more tokens/s with it (250.9 against 231.9, bench/results/decode_h200_s10.json).
The kernel is compiled at first use with NVRTC and launched through the CUDA driver API (`cuLaunchKernelEx`, which
takes the PDL attribute), both from NVIDIA's cuda-bindings (`pip install 'nemotron4[cuda]'`; NVRTC itself comes
with PyTorch's CUDA wheels), imported lazily: where it is missing or cannot load, the Triton kernel serves.
"""

from __future__ import annotations

import ctypes
import functools

import torch

SOURCE = r"""
typedef unsigned int u32;
struct alignas(16) v4 { u32 x, y, z, w; };

__device__ __forceinline__ v4 ld_w(const v4* p) {  // weights: read once, kept out of L1
  v4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}
// The same load kept before the PDL wait: ptxas moves griddepcontrol.wait above non-coherent (.nc) loads, whose
// data it may assume constant, but not above a coherent volatile one (sm_90 SASS: the LDGs, then ACQBULK).
__device__ __forceinline__ v4 ld_w_now(const v4* p) {
  v4 r;
  asm volatile("ld.global.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}
__device__ __forceinline__ float lo(u32 w) { return __uint_as_float(w << 16); }  // bf16 pair -> fp32
__device__ __forceinline__ float hi(u32 w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float dq(u32 t, u32 sel) {  // one byte of t (u = w + 128) as fp32: 2^23 + u - (2^23 + 128)
  return __uint_as_float(__byte_perm(t, 0x4B000000u, sel)) - 8388736.0f;
}
__device__ __forceinline__ float dot4(u32 q, float a, float b, float c, float d, float acc) {
  const u32 t = q ^ 0x80808080u;
  acc = fmaf(dq(t, 0x7540), a, acc);
  acc = fmaf(dq(t, 0x7541), b, acc);
  acc = fmaf(dq(t, 0x7542), c, acc);
  return fmaf(dq(t, 0x7543), d, acc);
}
__device__ __forceinline__ unsigned short to_bf16(float f) {  // round to nearest even; NaN stays NaN
  unsigned short r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}
template <bool NOW>
__device__ __forceinline__ void load_w(v4 (&w)[ROWS][UNROLL], const v4* __restrict__ W, int row0, int KV, int v) {
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    const int vv = v + u * 32;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const v4* p = W + (unsigned long long)(row0 + r) * KV + vv;
      w[r][u] = vv < KV ? (NOW ? ld_w_now(p) : ld_w(p)) : v4{0u, 0u, 0u, 0u};
    }
  }
}
// x is written by the kernel before: it is read with plain coherent loads (no .nc, no __restrict__), which neither
// the compiler nor ptxas moves above griddepcontrol.wait (tests/inference/test_cuda_gemv.py checks the SASS).
__device__ __forceinline__ void fma_x(float (&acc)[ROWS], const v4 (&w)[ROWS][UNROLL], const v4* X, int KV, int v) {
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    const int vv = v + u * 32;
    if (vv < KV) {
      const v4 xa = X[2 * vv], xb = X[2 * vv + 1];
      const float x0 = lo(xa.x), x1 = hi(xa.x), x2 = lo(xa.y), x3 = hi(xa.y), x4 = lo(xa.z), x5 = hi(xa.z),
                  x6 = lo(xa.w), x7 = hi(xa.w), x8 = lo(xb.x), x9 = hi(xb.x), x10 = lo(xb.y), x11 = hi(xb.y),
                  x12 = lo(xb.z), x13 = hi(xb.z), x14 = lo(xb.w), x15 = hi(xb.w);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        float a = acc[r];
        a = dot4(w[r][u].x, x0, x1, x2, x3, a);
        a = dot4(w[r][u].y, x4, x5, x6, x7, a);
        a = dot4(w[r][u].z, x8, x9, x10, x11, a);
        a = dot4(w[r][u].w, x12, x13, x14, x15, a);
        acc[r] = a;
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(WARPS * 32) gemv_i8(const v4* __restrict__ W, const v4* X,
    const unsigned short* __restrict__ S, unsigned short* __restrict__ Y, int N, int K) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * WARPS + warp) * ROWS;
  if (row0 >= N) return;  // (the launch covers N exactly; an exited block counts as having let the next launch)
  const int KV = K >> 4;  // 16-byte vectors of weights per row
  float acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) acc[r] = 0.f;
  v4 w[ROWS][UNROLL];
#if STAGES == 2
  load_w<true>(w, W, row0, KV, lane);  // weights do not depend on the kernel before: the first batch precedes the wait
#endif
#if USE_PDL
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
  for (int v = lane; v < KV; v += 32 * UNROLL) {
#if STAGES == 2
    v4 next[ROWS][UNROLL];  // the next batch in flight while this one is multiplied
    load_w<false>(next, W, row0, KV, v + 32 * UNROLL);
    fma_x(acc, w, X, KV, v);
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
#pragma unroll
      for (int r = 0; r < ROWS; ++r) w[r][u] = next[r][u];
#else
    load_w<false>(w, W, row0, KV, v);
    fma_x(acc, w, X, KV, v);
#endif
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    float a = acc[r];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
    if (lane == 0) {
      unsigned short y = to_bf16(a * __uint_as_float(((u32)S[row0 + r]) << 16));
#if OUT_ACT == 1
      const float h = fmaxf(__uint_as_float(((u32)y) << 16), 0.f);
      y = to_bf16(h * h);
#endif
      Y[row0 + r] = y;
    }
  }
}
"""

VECTOR = 16  # bytes of a row one lane reads at a time: K must be a multiple


def bindings():
    """cuda-bindings' driver and nvrtc modules, or a clear error."""
    try:
        from cuda.bindings import driver, nvrtc
    except ImportError as e:
        raise RuntimeError("the CUDA GEMV needs NVIDIA's cuda-bindings (pip install 'nemotron4[cuda]'); without it "
                           "the Triton kernels serve") from e
    return driver, nvrtc


def _check(result, what: str):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"cuda_gemv: {what} failed: {err!r}")
    return rest[0] if len(rest) == 1 else rest


def defines(rows: int, unroll: int, warps: int, out_act: int, use_pdl: bool, stages: int = 1) -> tuple[str, ...]:
    return (f"-DROWS={rows}", f"-DUNROLL={unroll}", f"-DWARPS={warps}", f"-DOUT_ACT={out_act}",
            f"-DUSE_PDL={int(use_pdl)}", f"-DSTAGES={stages}")


def compile_cubin(arch: str, macros: tuple[str, ...]) -> bytes:
    """The kernel compiled by NVRTC for `arch` (e.g. "sm_90"); raises with NVRTC's log on an error. Needs no GPU."""
    _, nvrtc = bindings()
    prog = _check(nvrtc.nvrtcCreateProgram(SOURCE.encode(), b"cuda_gemv.cu", 0, [], []), "nvrtcCreateProgram")
    opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17", *(m.encode() for m in macros)]
    err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    if int(err) != 0:
        size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        raise RuntimeError(f"cuda_gemv: NVRTC could not compile the kernel for {arch} ({' '.join(macros)}):\n"
                           f"{log.decode(errors='replace')}")
    size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
    cubin = b" " * size
    _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
    nvrtc.nvrtcDestroyProgram(prog)
    return cubin


@functools.cache
def _function(device_index: int, macros: tuple[str, ...]):
    """The loaded kernel for this device (in its primary context, which torch uses) and these macros; compiled
    once. The device is made current only for this and torch's current device is restored after."""
    driver, _ = bindings()
    with torch.cuda.device(device_index):
        torch.cuda.init()
        _check(driver.cuInit(0), "cuInit")
        device = _check(driver.cuDeviceGet(device_index), "cuDeviceGet")
        context = _check(driver.cuDevicePrimaryCtxRetain(device), "cuDevicePrimaryCtxRetain")
        _check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        major, minor = torch.cuda.get_device_capability(device_index)
        cubin = compile_cubin(f"sm_{major}{minor}", macros)
        module = _check(driver.cuModuleLoadData(cubin), "cuModuleLoadData")
        return _check(driver.cuModuleGetFunction(module, b"gemv_i8"), "cuModuleGetFunction")


@functools.cache
def unavailable(device_index: int) -> str | None:
    """Why the kernel cannot run on this GPU (no cuda-bindings or NVRTC, an architecture NVRTC cannot compile for,
    a driver that will not load the cubin), or None: one small variant is compiled and loaded to find out."""
    try:
        _function(device_index, defines(1, 1, 2, 0, False, 1))
    except Exception as e:
        return f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return None


def problem(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor | None, rows_per_block: int = 1) -> str | None:
    """Why the kernel cannot compute x @ w.T * scales for these tensors, or None: x (1, K) bf16, w (N, K) int8 and
    scales (N,) bf16 on one GPU, x and w contiguous and 16-byte aligned, K a multiple of VECTOR, N of the rows a
    block."""
    N, K = w.shape
    if x.shape != (1, K) or x.dtype != torch.bfloat16:
        return f"needs x (1, {K}) bf16 (batch 1); got {tuple(x.shape)} {x.dtype}"
    if w.dtype != torch.int8 or scales is None or scales.dtype != torch.bfloat16 or scales.shape != (N,):
        return (f"needs int8 weights with (N,) bf16 scales; got {w.dtype} weights, scales "
                f"{None if scales is None else (tuple(scales.shape), scales.dtype)}")
    if K % VECTOR or N % rows_per_block:
        return f"needs K a multiple of {VECTOR} and N of {rows_per_block} rows a block; got N={N}, K={K}"
    if not (x.is_contiguous() and w.is_contiguous()) or x.data_ptr() % VECTOR or w.data_ptr() % VECTOR:
        return "needs x and w contiguous and 16-byte aligned"
    if not (x.is_cuda and w.device == x.device and scales.device == x.device):
        return f"needs x, w and scales on one GPU; got {x.device}, {w.device}, {scales.device}"
    return None


def launch(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor, rows: int, unroll: int, warps: int,
           out_act: int = 0, use_pdl: bool = False, stages: int = 1) -> torch.Tensor:
    """y (1, N) bf16 = act((x @ w.T) * scales) for x (1, K) bf16, w (N, K) int8, scales (N,) bf16 on one GPU: the
    kernel launched on the current stream, for tensors the caller has checked with `problem` (triton_linear does)."""
    N, K = w.shape
    driver, _ = bindings()
    y = torch.empty(1, N, device=x.device, dtype=torch.bfloat16)
    fn = _function(x.device.index, defines(rows, unroll, warps, out_act, use_pdl, stages))
    cfg = driver.CUlaunchConfig()
    cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = N // (rows * warps), 1, 1
    cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = 32 * warps, 1, 1
    cfg.sharedMemBytes = 0
    cfg.hStream = driver.CUstream(torch.cuda.current_stream(x.device).cuda_stream)
    if use_pdl:
        attr = driver.CUlaunchAttribute()
        attr.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attr.value.programmaticStreamSerializationAllowed = 1
        cfg.attrs, cfg.numAttrs = [attr], 1
    else:
        cfg.numAttrs = 0
    values = [ctypes.c_void_p(t.data_ptr()) for t in (w, x, scales, y)] + [ctypes.c_int(N), ctypes.c_int(K)]
    params = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
    if x.device.index == torch.cuda.current_device():
        _check(driver.cuLaunchKernelEx(cfg, fn, ctypes.addressof(params), 0), "cuLaunchKernelEx")
    else:  # the launch runs in the current context: make x's device current for it
        with torch.cuda.device(x.device):
            _check(driver.cuLaunchKernelEx(cfg, fn, ctypes.addressof(params), 0), "cuLaunchKernelEx")
    return y
