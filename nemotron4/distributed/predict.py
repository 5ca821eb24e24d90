"""A step-time model for a (tp, dp) layout: measured single-GPU compute plus modeled communication. A prediction,
not a measurement (backs `nemotron4 plan --predict`).

Compute: the FLOPs of `nemotron4.flops` (6N + 12 L T d per token) at the MFU measured for one GPU's whole step in a
bench result (bench/results/parallel_overhead_h200.json: compiled blocks, fused loss, weights cast once), split
over the tp x dp GPUs of the step (TP is assumed to keep each GPU's GEMMs as efficient as the measured ones).

Communication, per GPU, ring collectives (an all-gather or reduce-scatter of a full tensor of N bytes moves
N (n - 1) / n bytes through each GPU's link), bf16 activations and parameters, fp32 gradients (this package's
FSDP2 policy):

    TP  (sequence parallel)  per layer and micro-batch: all-gather before attention and MLP, reduce-scatter after
                             each, in forward and again in backward: 8 collectives of s b h x 2 bytes, over NVLink
                             when tp <= GPUs per node; on the critical path (not overlapped)
    FSDP2 (dp > 1)           per micro-batch: all-gather of the bf16 parameters of this TP shard in forward and
                             again in backward (2 x 2 P / t bytes); per step: reduce-scatter of the fp32
                             gradients (4 P / t bytes) -- the data-parallel gradient traffic. Overlapped with
                             compute, block by block: only what exceeds the compute time is exposed
    link                     NVLink when all tp x dp ranks fit in one node, else InfiniBand (per GPU) for dp

    step = compute + TP + max(0, FSDP - compute)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from nemotron4.config import ModelConfig
from nemotron4.distributed.plan import params_per_gpu
from nemotron4.errors import UserError
from nemotron4.flops import H100_BF16_PEAK, flops_per_token, mfu

__all__ = ["Links", "Prediction", "measured_mfu", "predict_step"]


@dataclass(frozen=True)
class Links:
    """Achievable per-GPU bandwidths, bytes/s, and the GPUs one NVLink domain holds."""

    nvlink: float = 400e9  # H100/H200 NVLink 4: 450 GB/s per direction, ~400 achievable in NCCL rings
    ib: float = 50e9  # one 400 Gb/s NDR InfiniBand port per GPU
    gpus_per_node: int = 8


@dataclass(frozen=True)
class Prediction:
    tp: int
    dp: int
    global_batch: int
    micro_batch: int
    accumulation: int
    compute_s: float
    tp_comm_s: float
    fsdp_comm_s: float
    exposed_fsdp_s: float
    step_s: float
    tokens_per_s_per_gpu: float
    mfu: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def ring(nbytes: float, n: int) -> float:
    """Bytes through each GPU's link for an all-gather / reduce-scatter of `nbytes` over `n` ranks."""
    return nbytes * (n - 1) / n


def predict_step(cfg: ModelConfig, tp: int, dp: int, seq_len: int, global_batch: int, micro_batch: int,
                 single_gpu_mfu: float, links: Links = Links(), peak_flops: float = H100_BF16_PEAK) -> Prediction:
    """The modeled step of `global_batch` sequences on tp x dp GPUs (see the module docstring)."""
    if global_batch % (dp * micro_batch):
        raise UserError(f"global batch {global_batch} is not divisible by micro_batch {micro_batch} x dp {dp}")
    accumulation = global_batch // (dp * micro_batch)
    gpus = tp * dp
    tokens = global_batch * seq_len
    compute = flops_per_token(cfg, seq_len) * tokens / (gpus * peak_flops * single_gpu_mfu)
    tp_link = links.nvlink if tp <= links.gpus_per_node else links.ib
    activation = seq_len * micro_batch * cfg.dim * 2  # bf16 (s, b, h)
    tp_comm = cfg.n_layers * 8 * ring(activation, tp) / tp_link * accumulation if tp > 1 else 0.0
    dp_link = links.nvlink if gpus <= links.gpus_per_node else links.ib
    p = params_per_gpu(cfg, tp)
    fsdp_bytes = accumulation * 2 * ring(2 * p, dp) + ring(4 * p, dp) if dp > 1 else 0.0
    fsdp_comm = fsdp_bytes / dp_link
    exposed = max(0.0, fsdp_comm - compute)
    step = compute + tp_comm + exposed
    per_gpu = tokens / step / gpus
    return Prediction(tp, dp, global_batch, micro_batch, accumulation, compute, tp_comm, fsdp_comm, exposed, step,
                      per_gpu, mfu(cfg, seq_len, per_gpu, peak_flops))


def measured_mfu(path: str | Path) -> float:
    """The single-GPU MFU of a bench result: `mfu_best.single` (bench/parallel_overhead.py) or the best bf16 run of
    ours (bench/train.py)."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--predict {path}: cannot read a bench result JSON ({e}); give bench/results/*.json") from e
    if "mfu_best" in res:
        return float(res["mfu_best"]["single"])
    runs = [r["mfu"] for r in res.get("runs", []) if r.get("peer") == "ours" and r.get("fp8", "off") == "off"
            and "mfu" in r]
    if not runs:
        raise UserError(f"--predict {path}: no single-GPU MFU in it (mfu_best.single, or runs of ours with mfu)")
    return max(runs)
