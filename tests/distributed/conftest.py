"""Fixtures of the distributed tests: the tiny corpus the torchrun jobs of helpers.launch_workers train on."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_tiny_corpus


@pytest.fixture(scope="session")
def dist_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("dist_corpus"), train_tokens=12_000, valid_tokens=2_000)
