"""Session-wide test settings. Tests build their models, tokenizers and corpora themselves; nothing is downloaded.
Shared functions live in tests/helpers.py; the conftest.py files hold fixtures only."""

from __future__ import annotations

import subprocess

import pytest
import torch
from helpers import launches_training

_RUNNING: list[pytest.Item] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _RUNNING.append(item)
    try:
        return (yield)
    finally:
        _RUNNING.pop()


def pytest_configure(config: pytest.Config) -> None:
    """Every test that launches a training subprocess (also through a fixture it uses) must be marked `slow`:
    a training subprocess started on behalf of an unmarked test fails it."""
    original = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        item = _RUNNING[-1] if _RUNNING else None
        if item is not None and item.get_closest_marker("slow") is None and launches_training(args):
            pytest.fail(f"{item.nodeid} launches a training subprocess but is not marked slow", pytrace=False)
        original(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = guarded


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
