"""The data-loss cases of docs/reliability.md in real `nemotron4 train` processes: concurrent trainers on one run
directory, SIGKILL at random moments (start-up included), `latest` removed, a checkpoint-less re-run, and a
checkpoint shard or a token file changed since the checkpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import SHORT, STEPS, TINY_TOML, assert_clean_error, assert_same_run, latest, nemotron4_cmd
from helpers import train_cli as train

from nemotron4.checkpoint import CheckpointManager
from nemotron4.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # launches `nemotron4 train` subprocesses


def _start(cwd: Path, run: Path, *overrides: str) -> subprocess.Popen:
    args = ["train", "--config", str(TINY_TOML), "--run-dir", str(run), *SHORT, *overrides]
    return subprocess.Popen(nemotron4_cmd(*args), cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _history(run: Path) -> list[bytes]:
    """Every whole line of metrics.jsonl and of the files of cut lines beside it."""
    lines = []
    for path in [run / "metrics.jsonl", *sorted(run.glob("metrics.jsonl.cut-*"))]:
        if path.exists():
            lines += [x for x in path.read_bytes().splitlines(keepends=True) if x.endswith(b"\n")]
    return lines


def _assert_consistent(run: Path) -> None:
    """metrics.jsonl: whole records of steps 1..k in order (at most a torn last line); every checkpoint complete
    (digests verified) and at a step the metrics reach; `latest` names the newest."""
    raw = (run / "metrics.jsonl").read_bytes() if (run / "metrics.jsonl").exists() else b""
    lines = raw.splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines = lines[:-1]  # torn by the kill, moved aside by the next start
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == list(range(1, len(steps) + 1)), steps
    manager = CheckpointManager(run)
    done = manager.complete()
    for ckpt in done:
        CheckpointManager.verify(ckpt)
        assert int(ckpt.name.split("_")[1]) <= len(steps)
    if (run / "checkpoints" / "latest").exists():
        assert done and latest(run) == done[-1].name


def test_concurrent_trainers_exactly_one_runs(corpus: Path, reference: Path, tmp_path: Path) -> None:
    """3 trainers started at once on one run directory, twice: one trains to the end, the others refuse at once
    naming it; the survivor's checkpoints and metrics are bitwise the uninterrupted run's."""
    for trial in range(2):
        run = tmp_path / f"run{trial}"
        procs = [_start(corpus, run) for _ in range(3)]
        ended: list[tuple[float, subprocess.Popen]] = []
        while len(ended) < 3:
            for p in procs:
                if p.poll() is not None and all(p is not q for _, q in ended):
                    ended.append((time.monotonic(), p))
            time.sleep(0.05)
        outs = {id(p): p.communicate() for p in procs}
        winners = [p for p in procs if p.returncode == 0]
        assert len(winners) == 1, [(p.returncode, outs[id(p)][1][-500:]) for p in procs]
        winner = winners[0]
        for p in procs:
            if p is not winner:
                err = outs[id(p)][1]
                assert p.returncode == 2 and "Traceback" not in err, err[-2000:]
                assert f"run directory {run} is in use by another trainer (pid {winner.pid} on host" in err, err
        assert ended[-1][1] is winner  # the others exited at once, while it was still training
        assert_same_run(reference, run)
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
            "latest", *(f"step_{s:08d}" for s in (2, 4, 6, 8))]
        assert not list(run.glob("metrics.jsonl.cut-*"))


def test_sigkill_at_random_moments_loses_nothing(corpus: Path, reference: Path, tmp_path: Path) -> None:
    """A run SIGKILLed at random moments (from start-up to the last step) over several invocations: after every
    kill metrics.jsonl and every checkpoint are whole and consistent, no record ever written is lost (it is in
    metrics.jsonl or in a metrics.jsonl.cut-* beside it), and the run finishes bitwise as the uninterrupted one."""
    rng = random.Random(21)
    run = tmp_path / "run"
    seen: list[bytes] = []
    for moment in [0.3, *(rng.uniform(0.5, 9.0) for _ in range(5))]:  # the first one during start-up
        proc = _start(corpus, run)
        time.sleep(moment)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        _assert_consistent(run)
        history = _history(run)
        assert all(line in history for line in seen), "a metrics record was lost"
        seen = history
    proc = train(corpus, run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(line in _history(run) for line in seen)
    assert_same_run(reference, run)


def test_removed_latest_resumes_from_the_newest_complete_checkpoint(corpus: Path, reference: Path,
                                                                     tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(corpus, run, faults={"SIGKILL_AT_STEP": "5"}).returncode == -signal.SIGKILL
    (run / "checkpoints" / "latest").unlink()
    proc = train(corpus, run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "latest is missing: resuming from the newest complete checkpoint, step_00000004" in proc.stderr
    assert_same_run(reference, run)  # not restarted at step 1, history whole
    cut = list(run.glob("metrics.jsonl.cut-*"))
    assert len(cut) == 1 and [json.loads(x)["step"] for x in cut[0].read_text().splitlines()] == [5]


def test_rerun_without_checkpoints_keeps_the_earlier_history(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for _ in range(2):
        proc = train(corpus, run, "--checkpoint.enabled", "false")
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["step"] for r in read_metrics(run)] == list(range(1, STEPS + 1))
    cut = list(run.glob("metrics.jsonl.cut-*"))
    assert len(cut) == 1 and [r["step"] for r in read_metrics(cut[0])] == list(range(1, STEPS + 1))
    assert "moved the records of an earlier run to metrics.jsonl.cut-" in proc.stderr


def test_changed_checkpoint_shard_or_token_file_is_refused_before_step_1(own_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(own_corpus, run, "--max-steps", "3").returncode == 0  # checkpoint at step 3 (the stop)
    before = (run / "metrics.jsonl").read_bytes()

    shard = next((run / "checkpoints" / "step_00000003").glob("*.distcp"))
    good = shard.read_bytes()
    shard.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    proc = train(own_corpus, run)
    assert_clean_error(proc, "step_00000003 is damaged: __0_0.distcp has changed since it was written")
    assert (run / "metrics.jsonl").read_bytes() == before  # no step taken, nothing cut
    shard.write_bytes(good)

    web = own_corpus / "data" / "tiny" / "web.bin"
    data = bytearray(web.read_bytes())
    data[len(data) // 2] ^= 1  # same size, same index: only the content differs
    web.write_bytes(bytes(data))
    proc = train(own_corpus, run)
    assert_clean_error(proc, "phases.0.blend.sources.0.path (source 'web')", "changed since checkpoint step_00000003",
                       "--train.trust_changed_data true")
    assert (run / "metrics.jsonl").read_bytes() == before
    proc = train(own_corpus, run, "--train.trust_changed_data", "true", "--max-steps", "1")
    assert proc.returncode == 0 and "resuming anyway (train.trust_changed_data = true)" in proc.stderr, proc.stderr
    assert read_metrics(run)[-1]["step"] == 4
