"""The CUDA C++ int8 GEMV of nemotron4.inference.cuda_gemv without a GPU: NVRTC compiles every variant the configs
can ask for to sm_90 machine code (cuda-bindings and NVRTC need no GPU), and KernelConfig / triton_linear refuse a
'cuda' config where it cannot apply. Its results on a GPU: tests/gpu/test_cuda_gemv.py."""

from __future__ import annotations

import importlib.util
import shutil

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
@pytest.mark.parametrize("cfg", CUDA_CANDIDATES, ids=lambda c: c.label().replace(" ", "_"))
@pytest.mark.parametrize("out_act", [0, 1])
@pytest.mark.parametrize("use_pdl", [False, True])
def test_nvrtc_compiles_each_candidate_for_sm90(cfg, out_act, use_pdl):
    from nemotron4.inference.cuda_gemv import compile_cubin, defines
    from nemotron4.inference.triton_linear import CUDA_ROW_STEP

    cubin = compile_cubin("sm_90", defines(cfg.block_n // cfg.num_warps, cfg.block_k // CUDA_ROW_STEP,
                                           cfg.num_warps, out_act, use_pdl, cfg.num_stages))
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
    x = torch.zeros(1, 64, dtype=torch.bfloat16)
    for args, why in (((torch.zeros(2, 64, dtype=torch.bfloat16), w, s), "batch 1"),
                      ((x.half(), w, s), "batch 1"),  # fp16 inputs
                      ((x, w.to(torch.bfloat16), s), "int8 weights"),
                      ((x, w, None), "int8 weights"),  # no scales
                      ((x, w, s.float()), "int8 weights"),  # fp32 scales
                      ((x, w, s[:4]), "int8 weights"),  # scales of another N
                      ((x, torch.zeros(7, 64, dtype=torch.int8), s[:7]), "N of 2 rows a block"),
                      ((torch.zeros(1, 65, dtype=torch.bfloat16)[:, 1:], w, s), "16-byte aligned"),  # offset view
                      ((x, w, s), "on one GPU")):  # everything else right, but on CPU
        with pytest.raises(ValueError, match=f"'cuda' KernelConfig cannot serve this call: it needs .*{why}"):
            triton_linear(*args, cfg)
    with pytest.raises(ValueError, match="K=72 is not a multiple of the CUDA kernel's 16-byte vector"):
        triton_linear(torch.zeros(1, 72, dtype=torch.bfloat16), torch.zeros(8, 72, dtype=torch.int8), s, cfg)


@needs_nvrtc
def test_the_kernel_orders_its_loads_around_the_pdl_wait():
    """In the sm_90 machine code of every default config with PDL: x is loaded (coherent loads, LDG.E.128) and y
    stored only after griddepcontrol.wait (ACQBULK), since the kernel before writes x and may still read y's memory;
    with num_stages=2 the first weight vectors are loaded before it (.NA loads), which is the point of stages=2; and
    nothing spills to local memory."""
    import re
    import subprocess
    import tempfile
    from pathlib import Path

    from nemotron4.inference.cuda_gemv import compile_cubin, defines
    from nemotron4.inference.triton_linear import CUDA_ROW_STEP

    tool = shutil.which("cuobjdump")
    if tool is None and importlib.util.find_spec("triton") is not None:
        import triton

        tool = str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    if tool is None or not Path(tool).exists():
        pytest.skip("needs cuobjdump (CUDA's, or the copy Triton ships) to read the machine code")
    for cfg in CUDA_CANDIDATES:
        macros = defines(cfg.block_n // cfg.num_warps, cfg.block_k // CUDA_ROW_STEP, cfg.num_warps, 1, True,
                         cfg.num_stages)
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compile_cubin("sm_90", macros))
            f.flush()
            sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
            usage = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        ops = [line.split("*/")[1].split(";")[0].strip() for line in sass.splitlines()
               if re.match(r"\s*/\*[0-9a-f]{4}\*/", line)]
        wait = [i for i, op in enumerate(ops) if "ACQBULK" in op]
        assert len(wait) == 1, (cfg, wait)
        x_loads = [i for i, op in enumerate(ops) if re.search(r"LDG\.E\.128\b", op)]
        early_w = [i for i, op in enumerate(ops) if "LDG.E.NA" in op and i < wait[0]]
        stores = [i for i, op in enumerate(ops) if "STG" in op]
        assert x_loads and min(x_loads) > wait[0], (cfg, wait, x_loads)
        assert stores and min(stores) > wait[0], (cfg, wait, stores)
        assert (len(early_w) > 0) == (cfg.num_stages == 2), (cfg, early_w)
        assert "LOCAL:0" in usage.replace(" ", ""), usage


def test_cuda_defaults_cover_the_15b_int8_shapes_and_step_aside_where_they_cannot_serve(monkeypatch):
    from nemotron4.inference import triton_linear as tl_

    for N, K in ((8192, 6144), (6144, 6144), (24576, 6144), (6144, 24576), (256000, 6144)):
        cfg = tl_.cuda_default_config(N, K)
        assert cfg is not None and cfg.backend == "cuda" and fits(cfg, K) and N % cfg.block_n == 0, (N, K, cfg)
        assert cfg in CUDA_CANDIDATES  # so the compile and machine-code tests cover it
        assert tl_.config_for(1, N, K, True, cuda=True) == cfg
        assert tl_.config_for(1, N, K, True).backend == "triton"  # not asked: the Triton default
        assert tl_.config_for(2, N, K, True, cuda=True).backend == "triton"  # batch 2
        assert tl_.config_for(1, N, K, False, cuda=True).backend == "triton"  # bf16 weights
    assert tl_.cuda_default_config(6144, 6152) is None  # K not a multiple of the 16-byte vector
    assert tl_.cuda_default_config(5, 6144) is None  # N not a multiple of the rows of a block
    override = KernelConfig(8, 512, convert=2)
    monkeypatch.setitem(tl_.CONFIGS, (1, 8192, 6144, True), override)
    assert tl_.config_for(1, 8192, 6144, True, cuda=True) == override  # an installed config wins
    # on CPU tensors the CUDA GEMV never serves, so the call keeps the Triton default
    x, w, s = torch.zeros(1, 6144, dtype=torch.bfloat16), torch.zeros(6144, 6144, dtype=torch.int8), torch.ones(6144)
    assert not tl_.cuda_serves(x, w, s.to(torch.bfloat16))
    assert tl_.chosen_config(x, w, s.to(torch.bfloat16)) == tl_.default_config(1, 6144, 6144, True)
    monkeypatch.setattr(tl_, "CUDA_GEMV", False)
    assert not tl_.cuda_serves(x, w, s.to(torch.bfloat16))
