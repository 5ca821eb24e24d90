"""A tiny megatron-core GPTModel configured as Nemotron-4, saved by megatron-core itself (see mcore_model.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import mcore


@pytest.fixture(scope="session")
def mcore_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """megatron-core's checkpoints of one random model: plain/ (torch_dist, Megatron-LM args in common.pt),
    nemo1/ and nemo2/ (keys prefixed model. / module.), zarr/ and zarr_bf16/; logits.pt (tokens, its logits)."""
    root = tmp_path_factory.mktemp("mcore")
    mcore("save", str(root))
    return root
