"""The data-loss cases of docs/reliability.md, in one process: the run-directory lock, metrics.jsonl never
shortened without keeping the cut lines, `latest` missing or unreadable, and checkpoint digests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from nemotron4.checkpoint import CheckpointManager
from nemotron4.errors import UserError
from nemotron4.train.metrics import read_metrics, trim_history
from nemotron4.train.run_lock import RunDirBusy, hold_run_dir, lock_holder


def _records(n: int) -> bytes:
    return b"".join(json.dumps({"step": i, "loss": 1.0 / i}).encode() + b"\n" for i in range(1, n + 1))


# ---- one run per run directory ----------------------------------------------------------------------------------


def test_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with hold_run_dir(run):
        assert lock_holder(run)["pid"] == os.getpid()
        busy = rf"run directory {run} is in use by another trainer \(pid {os.getpid()} on host .*; wait for it to end"
        with pytest.raises(RunDirBusy, match=busy + " or stop it, or use another --run-dir"), hold_run_dir(run):
            pass
        with hold_run_dir(run, hold=False):  # ranks > 0 do not take it
            pass
    with hold_run_dir(run):  # released on exit of the block
        pass


def test_lock_is_released_on_error_and_by_a_killed_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError), hold_run_dir(run):
        raise RuntimeError("boom")
    # A holder that dies by SIGKILL leaves its pid in the file; the kernel has released the flock: taken over.
    code = ("import os, sys; from nemotron4.train.run_lock import hold_run_dir\n"
            f"with hold_run_dir({str(run)!r}): os.kill(os.getpid(), 9)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.wait(timeout=60) == -9
    assert lock_holder(run)["pid"] == proc.pid  # the stale file still names the dead process ...
    with hold_run_dir(run):  # ... whose lock the kernel released: taken over at once
        assert lock_holder(run)["pid"] == os.getpid()


# ---- metrics.jsonl ----------------------------------------------------------------------------------------------


def test_resume_cuts_only_steps_past_the_checkpoint_and_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_records(7) + b'{"step": 8, "lo')  # killed while appending step 8
    aside = trim_history(path, resume_step=4)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    assert path.read_bytes() == _records(4)
    assert aside.name.startswith("metrics.jsonl.cut-")
    assert aside.read_bytes() == _records(7)[len(_records(4)):] + b'{"step": 8, "lo'  # nothing lost
    assert not list(tmp_path.glob(".*.tmp"))


def test_fresh_start_moves_an_earlier_history_aside(tmp_path: Path) -> None:
    """A re-run of a checkpoint.enabled = false run (or one whose checkpoints are gone) starts at step 1: the
    earlier 40 lines are moved aside, not dropped."""
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_records(40))
    aside = trim_history(path, resume_step=None)
    assert path.read_bytes() == b"" and aside.read_bytes() == _records(40)
    path.write_bytes(_records(3))
    second = trim_history(path, resume_step=None)  # twice in the same second: another name
    assert second != aside and second.read_bytes() == _records(3) and aside.read_bytes() == _records(40)


def test_nothing_to_cut_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_records(4))
    inode = path.stat().st_ino
    assert trim_history(path, resume_step=4) is None and trim_history(path, resume_step=9) is None
    assert path.stat().st_ino == inode and path.read_bytes() == _records(4)
    assert not list(tmp_path.glob("metrics.jsonl.cut-*"))


# ---- latest missing or unreadable ----------------------------------------------------------------------------


def _two_checkpoints(run: Path) -> CheckpointManager:
    manager = CheckpointManager(run, keep_last=0)
    for step in (18, 20):
        manager.save(step, {"model": {"w": torch.full((3,), float(step))}}, {"trainer": {"step": step}})
    return manager


@pytest.mark.parametrize("damage", ["removed", "garbage", "names_missing", "names_torn"])
def test_unusable_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path: Path, damage: str) -> None:
    manager = _two_checkpoints(tmp_path)
    pointer = manager.dir / "latest"
    if damage == "removed":
        pointer.unlink()
    elif damage == "garbage":
        pointer.write_bytes(b"\xff\xfe\x00junk")
    elif damage == "names_missing":
        pointer.write_text("step_00000022\n")
    else:  # latest names step 20, whose state.json was torn
        (manager.dir / "step_00000020" / "state.json").write_text('{"format": "nemo')
    with pytest.warns(UserWarning, match="resuming from the newest complete checkpoint") as caught:
        found = manager.latest()
    want = "step_00000018" if damage == "names_torn" else "step_00000020"
    assert found.name == want and want in str(caught[0].message)


def test_unusable_latest_without_any_complete_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step_00000004\n")
    with pytest.raises(UserError, match="holds no complete checkpoint; remove .*latest to start the run afresh"):
        CheckpointManager(tmp_path).latest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CheckpointManager(tmp_path / "fresh").latest() is None  # a fresh run: no warning


def test_checkpoints_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").write_text("oops")
    with pytest.raises(UserError, match="checkpoints is a file, not the run's checkpoints directory"):
        CheckpointManager(tmp_path).latest()


# ---- integrity -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flipped", "truncated", "deleted", "pickle"])
def test_damaged_shard_is_refused_before_loading(tmp_path: Path, damage: str) -> None:
    path = _two_checkpoints(tmp_path).latest()
    shard = next(path.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    if damage == "flipped":
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
        what = r"has changed since it was written \(blake2b digest differs\)"
    elif damage == "truncated":
        shard.write_bytes(bytes(data[:-7]))
        what = f"has {len(data) - 7} bytes, not the {len(data)} written"
    elif damage == "deleted":
        shard.unlink()
        what = "is missing"
    else:  # a pickle of the same size in the tensor slot
        evil = b"cos\nsystem\n(S'echo pwned'\ntR."
        shard.write_bytes(evil + bytes(len(data) - len(evil)))
        what = r"has changed since it was written \(blake2b digest differs\)"
    with pytest.raises(UserError, match=rf"checkpoint .*step_00000020 is damaged: {shard.name} {what}; restore it, "
                                        r"or remove .* to resume from the previous complete checkpoint"):
        CheckpointManager.load_tensors(path, {"model": {"w": torch.empty(3)}})
    w = torch.empty(3)
    CheckpointManager.load_tensors(path.parent / "step_00000018", {"model": {"w": w}})  # the other one is fine
    assert torch.equal(w, torch.full((3,), 18.0))
