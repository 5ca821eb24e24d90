"""`train.fp8` under data parallelism: FSDP2 (dp 2, gloo, CPU) trains the recipe's FP8 model as one process does,
its tensorwise weights all-gathered in e4m3 (torchao's float8 all-gather, each weight's scale from the amax of the
full tensor), and under "+output" the fused loss's GEMMs in FP8 too. The worker lifts the CUDA check: torchao's
float8 matmuls also run on CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
pytest.importorskip("torchao", reason="train.fp8 needs torchao: pip install 'nemotron4[fp8]'")

WORKER = Path(__file__).with_name("fp8_fsdp_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("fp8_fsdp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dp2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("fp8_fsdp")
    proc = subprocess.run([sys.executable, str(WORKER), str(out)], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out / "result.pt", weights_only=False)


@pytest.mark.parametrize("mode", ["tensorwise", "tensorwise+output"])
def test_fsdp2_fp8_losses_follow_one_process(dp2: dict[str, Any], mode: str, monkeypatch) -> None:
    from nemotron4.train import fp8

    worker = _worker_module()
    monkeypatch.setattr(fp8, "check_fp8", lambda mode, device: None)
    single, built = worker.train(mode, None)
    losses, sharded = dp2[mode]
    assert built["fsdp2"] == "none" and sharded["fsdp2"] == "fully_shard"
    assert sharded["module"] == "Float8Linear" and sharded["weight"] == "WeightWithDynamicFloat8CastTensor"
    assert sharded["cast_weights"] == "autocast (fsdp2 e4m3 all-gathers for the FP8 linears)"
    assert sharded["fp8"] == built["fp8"]
    # the same e4m3 casts (weight scales from the full tensors, inputs per micro-batch = per rank), other
    # reduction orders (FSDP2's reduce-scatter, the amax all-reduce)
    assert losses == pytest.approx(single, rel=2e-5)
    off, _ = dp2["off"]
    assert all(abs(a - b) > 1e-6 for a, b in zip(losses, off, strict=True)), "FP8 did not run under FSDP2"
