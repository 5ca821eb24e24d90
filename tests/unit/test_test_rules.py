"""The rules tests/conftest.py holds the suite to."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import launches_training, nemotron4_cmd


def test_training_command_lines_are_recognised() -> None:
    assert launches_training(nemotron4_cmd("train", "--config", "x.toml"))
    assert launches_training([sys.executable, "-m", "torch.distributed.run", "--standalone", "w.py"])
    assert launches_training(nemotron4_cmd("demo", "--run-dir", "d"))
    assert not launches_training(nemotron4_cmd("eval", "--model", "tiny"))
    assert not launches_training([sys.executable, "-m", "nemotron4.cli", "--help"])


def test_an_unmarked_test_cannot_launch_training() -> None:
    with pytest.raises(pytest.fail.Exception, match="launches a training subprocess but is not marked slow"):
        subprocess.run([sys.executable, "-c", "pass", "train"], check=True)


@pytest.mark.slow
def test_a_slow_test_can() -> None:
    subprocess.run([sys.executable, "-c", "pass", "train"], check=True)
