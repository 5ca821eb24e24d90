"""Run under torchrun by the tests: `nemotron4 train` (through the CLI, as a user would launch it), then write this
rank's optimizer-state bytes, counted from the AdamW state tensors it actually holds, to <run-dir>/optim/rank<r>.json.

    torchrun --standalone --nproc-per-node 4 tests/distributed/worker.py --config C --run-dir D [--k v ...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from nemotron4.distributed.runtime import shutdown
from nemotron4.train.config_io import load_job
from nemotron4.train.fast import is_compiled
from nemotron4.train.trainer import Trainer


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of the state tensors this rank stores (its local shards for DTensors): all of them, and the Adam
    moments alone (without the per-parameter scalar `step` counters, which every rank keeps)."""
    total = moments = 0
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                local = value.to_local() if isinstance(value, DTensor) else value
                total += local.numel() * local.element_size()
                moments += local.numel() * local.element_size() if key in ("exp_avg", "exp_avg_sq") else 0
    return {"bytes": total, "moment_bytes": moments}


def fsdp_param_dtype(model: torch.nn.Module) -> str | None:
    """The dtype FSDP2 all-gathers and computes the first block in (None without FSDP2). Private API: a test aid."""
    from torch.distributed.fsdp import FSDPModule

    block = model.layers[0]
    if not isinstance(block, FSDPModule):
        return None
    return str(block._get_fsdp_state()._fsdp_param_group.mp_policy.param_dtype)


def main(argv: list[str]) -> None:
    config, run_dir, overrides = argv[1], Path(argv[3]), argv[4:]
    assert argv[0] == "--config" and argv[2] == "--run-dir", argv
    trainer = Trainer.create(load_job(config, overrides), run_dir)
    try:
        trainer.run()
        rank = int(os.environ.get("RANK", "0"))
        out = run_dir / "optim"
        out.mkdir(exist_ok=True)
        record = {"rank": rank, "dp": trainer.dp_size, "world": trainer.world_size,
                  "fsdp_param_dtype": fsdp_param_dtype(trainer.model),
                  "compiled_blocks": is_compiled(trainer.model.layers[0]),  # compile_blocks
                  "checkpointed": "forward" in vars(trainer.model.layers[0]),  # apply_activation_checkpointing
                  "paths": trainer.paths,  # which fast path the training recipe gave each train.* field
                  "step_context": getattr(trainer.step_context, "__name__", type(trainer.step_context).__name__),
                  **optimizer_state_bytes(trainer.optimizer)}
        (out / f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
