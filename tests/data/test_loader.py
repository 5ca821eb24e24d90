from __future__ import annotations

import numpy as np
import pytest
import torch

from nemotron4.data.loader import DataLoader
from nemotron4.errors import ConfigError, UserError


class Numbered:
    """Sample i is [i, i, ...]: the global order is visible in the batches."""

    def __init__(self, n: int, seq_len: int = 4, fingerprint: str | None = "abc") -> None:
        self.n, self.seq_len, self.fingerprint = n, seq_len, fingerprint

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return np.full(self.seq_len + 1, i, np.int64)


def _global_order(loaders: list[DataLoader], gbs_schedule: list[int]) -> list[int]:
    seen = []
    for gbs in gbs_schedule:
        for loader in loaders:  # ranks in order: rank r holds the r-th slice
            for mb in loader.next_batch(gbs):
                assert mb.dtype == torch.long and mb.shape == (loader.micro_batch_size, 5)
                seen += mb[:, 0].tolist()
    return seen


def test_shapes_and_slices() -> None:
    batches = DataLoader(Numbered(100), micro_batch_size=2, dp_rank=1, dp_size=2).next_batch(8)
    assert [b[:, 0].tolist() for b in batches] == [[4, 5], [6, 7]]


@pytest.mark.parametrize("schedule", [[8] * 6, [4, 4, 8, 8, 16, 8]])  # the second ramps the batch size
def test_dp1_and_dp2_see_the_same_global_order(schedule) -> None:
    one = _global_order([DataLoader(Numbered(200), 2)], schedule)
    two = _global_order([DataLoader(Numbered(200), 2, r, 2) for r in range(2)], schedule)
    assert one == two == list(range(sum(schedule)))


def test_resume_continues_with_the_next_sample_even_on_another_dp_size() -> None:
    a = DataLoader(Numbered(200), 2)
    a.next_batch(8)
    a.next_batch(4)
    state = a.state_dict()
    expected = [mb[:, 0].tolist() for mb in a.next_batch(8)]
    b = DataLoader(Numbered(200), 2)
    b.load_state_dict(state)
    assert [mb[:, 0].tolist() for mb in b.next_batch(8)] == expected
    ranks = [DataLoader(Numbered(200), 1, r, 4) for r in range(4)]
    for r in ranks:
        r.load_state_dict(state)
    assert _global_order(ranks, [8]) == list(range(12, 20))


def test_errors() -> None:
    with pytest.raises(ConfigError, match="multiple of micro_batch_size x dp_size = 2 x 2 = 4"):
        DataLoader(Numbered(100), 2, 0, 2).next_batch(6)
    with pytest.raises(UserError, match="has 10 samples"):
        DataLoader(Numbered(10), 2).next_batch(12)
    b = DataLoader(Numbered(10, fingerprint="other"), 2)
    with pytest.raises(UserError, match="fingerprint|dataset abc"):
        b.load_state_dict({"consumed_samples": 2, "fingerprint": "abc"})
