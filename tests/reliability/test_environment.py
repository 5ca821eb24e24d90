"""Environment faults (full disk, a file where a directory should be, damaged caches) as one line naming the path
and the errno's meaning, exit code 1 for the environment and 2 for bad input (docs/reliability.md)."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_TOML

from nemotron4.cli import main
from nemotron4.data.npcache import load_arrays, save_arrays
from nemotron4.fsio import EnvironmentProblem, os_error
from nemotron4.train.config import MetricsSection
from nemotron4.train.metrics import MetricsLogger


def _train(run_dir: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(["train", "--config", str(TINY_TOML), "--run-dir", str(run_dir)])
    return code, capsys.readouterr().err


def test_run_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.write_text("not a directory")
    code, err = _train(run, capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"nemotron4 train: error: --run-dir {run} is a file, not a directory; move it away" in err
    assert run.read_text() == "not a directory"


def test_checkpoints_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("oops")
    code, err = _train(run, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{run}/checkpoints is a file, not the run's checkpoints directory; move it away" in err


def test_full_disk_on_a_metrics_append(tmp_path: Path) -> None:
    """/dev/full: every write fails with ENOSPC, as a full disk does."""
    logger = MetricsLogger(tmp_path, MetricsSection(progress_bar=False), 100, 0, None)
    logger.file.close()
    logger.file = open("/dev/full", "a")  # noqa: SIM115 - the logger closes it
    with pytest.raises(EnvironmentProblem, match=r"cannot append step 3 to .*metrics\.jsonl \(the checkpoints are "
                                                  r"intact; re-running resumes from the latest\): No space left on "
                                                  r"device \[ENOSPC\]; free disk space"):
        logger.log({"step": 3, "tokens": 0})
    logger.close()  # the failed flush is not raised a second time


@pytest.mark.parametrize(("code", "meaning"), [
    (errno.EROFS, "Read-only file system [EROFS]; use a writable directory"),
    (errno.ENOSPC, "No space left on device [ENOSPC]; free disk space"),
    (errno.EACCES, "Permission denied [EACCES]; fix the permissions"),
])
def test_os_errors_name_the_path_and_the_errno(code: int, meaning: str) -> None:
    """(As root, permission bits do not stop writes, so a read-only run directory is shown through the error.)"""
    e = os_error(OSError(code, "ignored", "/runs/x/config.toml"), "cannot write the run's config")
    assert str(e).startswith(f"cannot write the run's config (/runs/x/config.toml): {meaning}") and e.exit_code == 1


def test_truncated_cache_array_is_rebuilt(tmp_path: Path) -> None:
    save_arrays(tmp_path, "blend", ["index"], [np.arange(1000, dtype=np.int64)])
    path = tmp_path / "blend.index.npy"
    path.write_bytes(path.read_bytes()[:500])
    assert load_arrays(tmp_path, "blend", ["index"]) is None  # damaged: the caller rebuilds it
    path.write_bytes(b"")
    assert load_arrays(tmp_path, "blend", ["index"]) is None


@pytest.mark.parametrize("damage", ["truncated", "empty", "pickle"])
def test_damaged_safetensors_is_one_line(tmp_path: Path, damage: str) -> None:
    import torch
    from safetensors.torch import save_file

    from nemotron4.errors import UserError
    from nemotron4.fsio import open_safetensors

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(100)}, str(path))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:-50], "empty": b"", "pickle": b"\x80\x04\x95K\x01."}[damage])
    with pytest.raises(UserError, match=rf"{path} is not a readable safetensors file \(.*\); it is truncated or not "
                                        "safetensors: re-copy or re-export it"), open_safetensors(path) as f:
        f.get_tensor("w")
