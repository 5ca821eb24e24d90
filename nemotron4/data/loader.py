"""Data-parallel, resumable batches over a sample-indexed dataset (e.g. `BlendedDataset`).

The global order is the dataset's order; global batch `b` is samples `[consumed, consumed + gbs)`. Rank `r` of
`dp` takes the `r`-th contiguous slice of `gbs / dp` samples and cuts it into micro-batches. Only
`consumed_samples` is state, so resuming is exact and a different data-parallel size (or a global batch size that
changes mid-run, for batch-size ramp-up) still walks the same global order (Megatron's
`MegatronPretrainingSampler` works the same way).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from nemotron4.errors import ConfigError, UserError

__all__ = ["DataLoader"]


class SampleDataset(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> np.ndarray: ...


class DataLoader:
    """This rank's micro-batches of each global batch. See the module docstring for the order."""

    def __init__(self, dataset: SampleDataset, micro_batch_size: int, dp_rank: int = 0, dp_size: int = 1) -> None:
        if micro_batch_size <= 0:
            raise ConfigError(f"micro_batch_size must be positive, got {micro_batch_size}")
        if not 0 <= dp_rank < dp_size:
            raise ConfigError(f"dp_rank {dp_rank} is not in [0, dp_size={dp_size})")
        self.dataset = dataset
        self.micro_batch_size, self.dp_rank, self.dp_size = micro_batch_size, dp_rank, dp_size
        self.consumed_samples = 0

    def next_batch(self, global_batch_size: int) -> list[torch.Tensor]:
        """This rank's micro-batches of the next global batch: `gbs / (micro_batch_size * dp_size)` LongTensors of
        shape (micro_batch_size, seq_len + 1). Advances `consumed_samples` by `global_batch_size`."""
        per_step = self.micro_batch_size * self.dp_size
        if global_batch_size <= 0 or global_batch_size % per_step:
            raise ConfigError(
                f"global batch size {global_batch_size} must be a positive multiple of micro_batch_size x dp_size "
                f"= {self.micro_batch_size} x {self.dp_size} = {per_step}"
            )
        end = self.consumed_samples + global_batch_size
        if end > len(self.dataset):
            raise UserError(
                f"the dataset has {len(self.dataset)} samples but batch [{self.consumed_samples}, {end}) was asked "
                "for; build the blend with more samples (train_tokens / seq_len)"
            )
        per_rank = global_batch_size // self.dp_size
        start = self.consumed_samples + self.dp_rank * per_rank
        rows = np.stack([self.dataset[i] for i in range(start, start + per_rank)]).astype(np.int64, copy=False)
        self.consumed_samples = end
        return list(torch.from_numpy(rows).split(self.micro_batch_size))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the samples consumed, and the dataset's fingerprint when it has one."""
        return {"consumed_samples": self.consumed_samples, "fingerprint": getattr(self.dataset, "fingerprint", None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume after `state["consumed_samples"]` samples. A different dp size or rank is fine; a dataset with
        another fingerprint (other sources, weights, seq_len or seed) is an error, since the order would differ."""
        mine, theirs = getattr(self.dataset, "fingerprint", None), state.get("fingerprint")
        if mine is not None and theirs is not None and mine != theirs:
            raise UserError(
                f"loader state was saved for dataset {theirs} but this dataset is {mine} (the blend, the token "
                "files' content, seq_len, seed or sample count changed); resume with the same data config or start "
                "the phase afresh"
            )
        self.consumed_samples = int(state["consumed_samples"])
