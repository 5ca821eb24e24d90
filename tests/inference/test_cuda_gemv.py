"""The CUDA C++ int8 GEMV of nemotron4.inference.cuda_gemv without a GPU: NVRTC compiles every variant the configs
can ask for to sm_90 machine code (cuda-bindings and NVRTC need no GPU), and KernelConfig / triton_linear refuse a
'cuda' config where it cannot apply. Its results on a GPU: tests/gpu/test_cuda_gemv.py."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from nemotron4.inference.triton_linear import CUDA_CANDIDATES, KernelConfig, fits, triton_linear


def _nvrtc_available() -> bool:
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        return False
    try:
        from cuda.bindings import nvrtc

        err, _, _ = nvrtc.nvrtcVersion()
        return int(err) == 0
    except Exception:
        return False


needs_nvrtc = pytest.mark.skipif(not _nvrtc_available(),
                                 reason="needs cuda-bindings and NVRTC (pip install cuda-bindings nvidia-cuda-nvrtc)")


@needs_nvrtc
@pytest.mark.parametrize("cfg", CUDA_CANDIDATES, ids=lambda c: f"{c.block_n}x{c.block_k}w{c.num_warps}")
@pytest.mark.parametrize("out_act", [0, 1])
@pytest.mark.parametrize("use_pdl", [False, True])
@pytest.mark.parametrize("stages", [1, 2])
def test_nvrtc_compiles_each_candidate_for_sm90(cfg, out_act, use_pdl, stages):
    from nemotron4.inference.cuda_gemv import compile_cubin, defines
    from nemotron4.inference.triton_linear import CUDA_ROW_STEP

    cubin = compile_cubin("sm_90", defines(cfg.block_n // cfg.num_warps, cfg.block_k // CUDA_ROW_STEP,
                                           cfg.num_warps, out_act, use_pdl, stages))
    assert cubin[:4] == b"\x7fELF" and len(cubin) > 1000  # a cubin is an ELF image
    assert b"gemv_i8" in cubin


@needs_nvrtc
def test_nvrtc_reports_a_compile_error_with_its_log():
    from nemotron4.inference.cuda_gemv import compile_cubin

    with pytest.raises(RuntimeError, match="NVRTC could not compile"):
        compile_cubin("sm_90", ("-DROWS=1", "-DUNROLL=1", "-DWARPS=2", "-DOUT_ACT=0", "-DUSE_PDL=0", "-DSTAGES=1",
                                "-Dfmaf=("))


def test_cuda_configs_are_checked_where_they_cannot_apply():
    for bad in (dict(split_k=2), dict(l2_prefetch=2048), dict(block_n=3), dict(block_k=768), dict(num_stages=3)):
        with pytest.raises(ValueError, match="'cuda' config"):
            KernelConfig(**{"block_n": 2, "block_k": 1024, "num_warps": 2, "backend": "cuda", **bad})
    with pytest.raises(ValueError, match="backend"):
        KernelConfig(2, 1024, backend="cutlass")
    cfg = KernelConfig(2, 1024, num_warps=2, backend="cuda")
    assert fits(cfg, 6144) and fits(cfg, 6160) and not fits(cfg, 6150)  # 16-byte vectors, the last step partial
    w, s = torch.zeros(8, 64, dtype=torch.int8), torch.ones(8, dtype=torch.bfloat16)
    for x, w_, s_ in ((torch.zeros(2, 64, dtype=torch.bfloat16), w, s),  # two rows
                      (torch.zeros(1, 64, dtype=torch.float16), w, s),  # fp16 inputs
                      (torch.zeros(1, 64, dtype=torch.bfloat16), w.to(torch.bfloat16), None)):  # not int8
        with pytest.raises(ValueError, match="'cuda' KernelConfig serves batch 1"):
            triton_linear(x, w_, s_, cfg)
