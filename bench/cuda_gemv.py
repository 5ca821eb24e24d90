"""A hand-written CUDA C++ int8 weight-only GEMV (M = 1, one scale per row, bf16 in and out) against our Triton gemv
kernel (nemotron4.inference.triton_linear) at the 15B model's batch-1 decode shapes, in one process: the question
of issue 19 whether a CUDA kernel reads the int8 weights closer to HBM bandwidth than Triton does.

The CUDA kernel: each warp owns ROWS rows, each lane reads 16-byte vectors of a row (UNROLL of them in flight per
row) with x read in the same layout straight from global memory (L1), int8 -> fp32 by the exponent trick in two
instructions (byte permute into 0x4B00_00xx, subtract 2^23 + 128), fp32 FMAs, one warp-shuffle reduction per row,
the scale and the bf16 rounding at the end. It is compiled with NVRTC through CuPy (a benchmark-only dependency,
skipped with a message when absent) and launched plainly; the Triton kernel is timed plainly too (and with
programmatic dependent launch, as the decode step runs it). Each variant is a CUDA-graph replay over weight copies
(none sits in L2), and its output is checked against x @ (W * s)^T.

    python bench/cuda_gemv.py --out bench/results/decode_cuda_gemv.json
"""
import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nemotron4.inference import triton_linear as tl_  # noqa: E402

SRC = r"""
typedef unsigned int u32;
struct alignas(16) v4 { u32 x, y, z, w; };

__device__ __forceinline__ v4 ld_w(const v4* p) {
  v4 r;
#if LOADMODE == 1
  asm("ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
#elif LOADMODE == 2
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
#else
  asm("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
#endif
  return r;
}
__device__ __forceinline__ v4 ld_x(const v4* p) {
  v4 r;
  asm("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}
__device__ __forceinline__ float lo(u32 w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi(u32 w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float dq(u32 t, u32 sel) {  // one byte of t, u = w + 128, as float: 2^23 + u - (2^23 + 128)
  return __uint_as_float(__byte_perm(t, 0x4B000000u, sel)) - 8388736.0f;
}

__device__ __forceinline__ float dot4(u32 q, float a, float b, float c, float d, float acc) {
  u32 t = q ^ 0x80808080u;
  acc = fmaf(dq(t, 0x7540), a, acc);
  acc = fmaf(dq(t, 0x7541), b, acc);
  acc = fmaf(dq(t, 0x7542), c, acc);
  acc = fmaf(dq(t, 0x7543), d, acc);
  return acc;
}

extern "C" __global__ void __launch_bounds__(WARPS * 32) gemv_i8(const v4* __restrict__ W, const v4* __restrict__ X,
    const unsigned short* __restrict__ S, unsigned short* __restrict__ Y, int N, int K) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * WARPS + warp) * ROWS;
  if (row0 >= N) return;
  const int KV = K >> 4;  // 16-byte vectors of weights per row
  float acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) acc[r] = 0.f;
  for (int v = lane; v < KV; v += 32 * UNROLL) {
    v4 w[ROWS][UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int vv = v + u * 32;
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
        w[r][u] = vv < KV ? ld_w(W + (unsigned long long)(row0 + r) * KV + vv) : v4{0u, 0u, 0u, 0u};
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int vv = v + u * 32;
      if (vv < KV) {
        const v4 xa = ld_x(X + 2 * vv), xb = ld_x(X + 2 * vv + 1);
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
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    float a = acc[r];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
    if (lane == 0) {
      const float s = __uint_as_float(((u32)S[row0 + r]) << 16);
      u32 b = __float_as_uint(a * s);
      b += 0x7fffu + ((b >> 16) & 1u);
      Y[row0 + r] = (unsigned short)(b >> 16);
    }
  }
}
"""


def build(rows: int, unroll: int, load: int, warps: int):
    import cupy

    return cupy.RawKernel(SRC, "gemv_i8", options=("-std=c++17", f"-DROWS={rows}", f"-DWARPS={warps}",
                                                    f"-DUNROLL={unroll}", f"-DLOADMODE={load}"))


SHAPES = {"qkv": (8192, 6144), "wo": (6144, 6144), "w1": (24576, 6144), "w2": (6144, 24576), "output": (256000, 6144)}


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def time_cuda(kernel, grid, warps, ws, x, s, y, copies: int) -> float:
    """Seconds per launch of one CUDA variant over the weight copies (a graph replay; plain launches timed by events
    if CuPy's launches cannot be captured)."""
    import cupy

    N, K = ws[0].shape

    def call(i):
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
        kernel(grid, (32 * warps,), (np.uint64(ws[i].data_ptr()), np.uint64(x.data_ptr()), np.uint64(s.data_ptr()),
                                     np.uint64(y.data_ptr()), np.int32(N), np.int32(K)), stream=stream)
        return y

    call(0)
    torch.cuda.synchronize()
    try:
        return tl_.graph_time(call, copies)
    except Exception as e:
        print("graph capture failed:", str(e)[:200], flush=True)
        for i in range(3):
            call(i % copies)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for i in range(60):
            call(i % copies)
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / 60 / 1e3


def bench_shape(name: str, N: int, K: int, kernels: dict, g: torch.Generator) -> dict:
    copies = max(2, -(-200_000_000 // (N * K)))
    ws = [torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8, generator=g) for _ in range(copies)]
    s = (torch.rand(N, device="cuda", generator=g) * 0.01 + 0.001).to(torch.bfloat16)
    x = torch.randn(1, K, device="cuda", generator=g).to(torch.bfloat16)
    ref = ((x.float() @ ws[0].float().T) * s.float()).float()

    def rel(y):
        return ((y.float() - ref).norm() / ref.norm()).item()

    t_tr = tl_.graph_time(lambda i: tl_.triton_linear(x, ws[i], s), copies)
    tl_.PDL = True
    t_tr_pdl = tl_.graph_time(lambda i: tl_.triton_linear(x, ws[i], s), copies)
    tl_.PDL = False
    row = {"shape": name, "N": N, "K": K, "triton_us": t_tr * 1e6, "triton_pdl_us": t_tr_pdl * 1e6,
           "triton_rel_err": rel(tl_.triton_linear(x, ws[0], s)), "cuda": {}}
    for (rows, unroll, load, warps), kernel in kernels.items():
        if N % (warps * rows):
            continue
        y = torch.empty(1, N, device="cuda", dtype=torch.bfloat16)
        t = time_cuda(kernel, (N // (warps * rows),), warps, ws, x, s, y, copies)
        row["cuda"][f"r{rows}u{unroll}l{load}w{warps}"] = {"us": t * 1e6, "rel_err": rel(y)}
    best, stats = min(row["cuda"].items(), key=lambda kv: kv[1]["us"])
    nbytes = N * K + N * 2
    row.update(best_cuda=best, best_cuda_us=stats["us"], triton_over_best_cuda=t_tr / (stats["us"] * 1e-6),
               best_cuda_TBps=nbytes / (stats["us"] * 1e-6) / 1e12, triton_TBps=nbytes / t_tr / 1e12)
    print(f"{name}: triton {t_tr * 1e6:.2f} us (pdl {t_tr_pdl * 1e6:.2f}, err {row['triton_rel_err']:.1e}); best "
          f"cuda {best} {stats['us']:.2f} us (err {stats['rel_err']:.1e}) = {row['best_cuda_TBps']:.2f} TB/s; "
          + " ".join(f"{k}:{v['us']:.1f}" for k, v in sorted(row["cuda"].items())), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--rows", default="1,2", help="rows a warp owns (comma list)")
    ap.add_argument("--unroll", default="1,2,3", help="16-byte vectors in flight per row and lane (comma list)")
    ap.add_argument("--loads", default="2", help="weight loads: 0 ld.global.nc, 1 .cs, 2 .nc.L1::no_allocate")
    ap.add_argument("--warps", default="2,4,8", help="warps a block (comma list)")
    ap.add_argument("--out", default="bench/results/decode_cuda_gemv.json")
    args = ap.parse_args()
    try:
        import cupy
    except ImportError:
        sys.exit("bench/cuda_gemv.py needs CuPy (pip install cupy-cuda12x or cupy-cuda13x) and a CUDA GPU")
    import triton

    t0 = time.perf_counter()
    tl_.PDL = False  # both plain launches
    res = {"bench": "cuda_gemv", "command": " ".join(["python"] + sys.argv), "gpu": torch.cuda.get_device_name(),
           "torch": torch.__version__, "triton": triton.__version__, "cupy": cupy.__version__,
           "python": platform.python_version(), "rows": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kernels = {}
    for variant in itertools.product(ints(args.rows), ints(args.unroll), ints(args.loads), ints(args.warps)):
        try:
            kernel = build(*variant)
            kernel.compile()
            kernels[variant] = kernel
        except Exception as e:
            print("build failed", variant, str(e)[:400], flush=True)
    print(f"built {len(kernels)} kernels in {time.perf_counter() - t0:.1f} s", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    for name in args.shapes.split(","):
        res["rows"].append(bench_shape(name, *SHAPES[name], kernels, g))
        out.write_text(json.dumps(res, indent=1) + "\n")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
