"""Fixtures of the trainer tests; the functions they use are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_tiny_corpus


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory holding data/tiny (the token files configs/tiny.toml names)."""
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))
