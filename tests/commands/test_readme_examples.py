"""Must show 1: every shell example of README.md and of the `--help` epilogs that needs no GPU, network or 15B
weights runs, as written up to the placeholders below, on a fresh `make demo BUDGET=ci` run directory, exit 0.
Every example is either run or skipped with its reason (SKIP); a new README example fails the test until it is
one or the other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from commands.readme import bash_blocks
from nemotron4.commands.eval import _EPILOG

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "import sys; from nemotron4.cli import main; sys.exit(main())"]
REPO = Path(__file__).resolve().parents[2]

# placeholders of the examples -> what the demo run directory has
SUBST = {"path/to/hf-dir": "runs/demo/hf", "path/to/model": "runs/demo", "runs/tiny": "runs/demo",
         "runs/corpus/": "runs/demo/corpus/", "--model DIR": "--model runs/demo",
         "pretrained=DIR": "pretrained=runs/demo"}

# (a fragment of the command, why it is not run here)
SKIP = [
    ("make test", "runs the whole suite (this test is part of it)"),
    ("make demo", "is the fixture below (nemotron4 demo --budget ci)"),
    ("make install", "environment setup: this interpreter is the venv"),
    ("/data/", "full scale: needs a real corpus at /data"),
    ("--nproc-per-node", "needs several GPUs (torchrun)"),
    ("nemotron4 eval ...", "a placeholder, not a command"),
    ("path/to/15b", "needs 15B weights and a GPU"),
    ("pip install", "needs the network"),
    ("--tasks", "lm-eval tasks read their datasets from the Hugging Face hub (network)"),
    ("--suite paper", "lm-eval tasks read their datasets from the Hugging Face hub (network)"),
    ("--samples 10 --k 1,10", "164 problems x 10 samples: hours on 2 cores (the epilog's --limit 2 example runs)"),
    ("hf/minitron-4b", "needs the Minitron-4B download"),
    ("model.nemo", "needs a NeMo checkpoint (tests/interop/test_nemo_checkpoints.py builds and converts them)"),
    ("extracted-nemo", "needs a NeMo checkpoint (tests/interop/test_nemo_checkpoints.py builds and converts them)"),
    ("nemo2-ckpt", "needs a NeMo 2 checkpoint (tests/interop/test_nemo_checkpoints.py builds and converts them)"),
    ("megatron-lm-save", "needs a Megatron-LM save (tests/interop/test_megatron_*.py build and convert them)"),
    ("--multipl-e", "needs MultiPL-E's problem files and compilers (make toolchains)"),
    ("--metric spbleu", "needs the FLORES-200 files and sacrebleu's SentencePiece model (downloads)"),
]
BY_HAND = "Try it by hand (CPU, about a minute)"  # run as written by test_readme_by_hand.py


def examples() -> list[tuple[str, str]]:
    """(where, command) of every README shell example and every eval epilog example."""
    out = [(f"README: {h}", c) for h, cmds in bash_blocks() if h != BY_HAND for c in cmds]
    epilog = _EPILOG.split("examples:")[1].split("\n\n")[0].replace("\\\n", " ")
    out += [("eval --help", ln.strip()) for ln in epilog.splitlines() if ln.strip()]
    return out


def skip_reason(command: str) -> str | None:
    return next((why for frag, why in SKIP if frag in command), None)


def test_every_example_is_run_or_skipped_with_a_reason() -> None:
    cases = examples()
    assert len(cases) > 20
    for where, cmd in cases:
        assert skip_reason(cmd) or cmd.startswith(("nemotron4 ", "python -m nemotron4")), f"{where}: {cmd}"


def _argv(cmd: str) -> list[str]:
    import shlex

    for a, b in SUBST.items():
        cmd = cmd.replace(a, b)
    args = shlex.split(cmd)
    return [*CLI, *args[1:]] if args[0] == "nemotron4" else [sys.executable, *args[1:]]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("newcomer")
    (cwd / "configs").symlink_to(REPO / "configs")  # the examples run in a checkout: configs/ is there
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["demo", "--run-dir", "runs/demo", "--budget", "ci"],
                 ["convert", "runs/demo", "runs/demo/hf", "--to", "hf"]):
        proc = subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return cwd


def test_every_runnable_example_exits_0(demo_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ran, failed = [], []
    for where, cmd in examples():
        if skip_reason(cmd):
            continue
        argv = _argv(cmd)
        if "--max-new-tokens" not in cmd and "generate" in cmd:
            argv += ["--max-new-tokens", "16"]  # the interactive example: nothing is typed, so it ends at EOF
        proc = subprocess.run(argv, cwd=demo_dir, env=env, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        ran.append(cmd)
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            failed.append(f"{where}: {cmd} -> {proc.returncode}\n{proc.stderr[-800:]}")
    assert not failed, "\n\n".join(failed)
    assert any(re.search(r"nemotron4 eval .*--perplexity", c) for c in ran) and any("convert" in c for c in ran)
